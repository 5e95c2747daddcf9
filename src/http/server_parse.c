/* server_parse.c — the llhttp callbacks: build each request in its exchange's arena, enforce
 * the header and body limits as bytes arrive, and hand the finished request to server.c.
 *
 * Callbacks never dispatch or write: a limit violation is recorded in the connection and turned
 * into an error response once llhttp_execute() returns, and a complete request pauses the
 * parser (HPE_PAUSED) so server.c dispatches it outside llhttp's stack. */
#include "http/server_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BODY_PREALLOC_MAX ((uint64_t)64 * 1024)

static const char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* Records why the request is refused; llhttp then stops with an error. */
static int refuse(struct http_conn *c, int status, enum http_rej why, const char *msg)
{
	c->err_status = status;
	c->err_reason = why;
	c->err_msg = msg;
	llhttp_set_error_reason(&c->parser, msg);
	return -1;
}

static int out_of_memory(struct http_conn *c)
{
	return refuse(c, -ENOMEM, HTTP_REJ_BAD_REQUEST, "out of memory");
}

static int arena_put(struct http_conn *c, const char *p, size_t n)
{
	struct http_exchange *ex = c->cur;

	if (n > ex->size - offsetof(struct http_exchange, arena) - ex->used) {
		if (http__ex_reserve(&c->cur, n) < 0)
			return -ENOMEM;
		ex = c->cur;
	}
	memcpy(ex->arena + ex->used, p, n);
	ex->used += n;
	return 0;
}

/* Counts request-line and header bytes; false once over the limit. */
static bool count_header_bytes(struct http_conn *c, size_t n)
{
	c->hdr_bytes += n;
	return c->hdr_bytes <= c->srv->lim.max_header_bytes;
}

static int header_too_large(struct http_conn *c)
{
	return refuse(c, 431, HTTP_REJ_HEADER_TOO_LARGE, "Request header fields too large");
}

void http__parse_reset(struct http_conn *c)
{
	c->nhv = 0;
	c->url_off = 0;
	c->url_len = 0;
	c->body_off = 0;
	c->body_len = 0;
	c->hdr_bytes = 0;
	c->hstate = 0;
	c->headers_done = false;
	c->keep_alive = false;
}

static int on_message_begin(llhttp_t *p)
{
	struct http_conn *c = p->data;

	http__parse_reset(c);
	c->cur = http__ex_new(c->srv);
	if (!c->cur)
		return out_of_memory(c);
	c->cur->conn = c;
	c->cur->state = HTTP_EX_PARSING;
	c->in_msg = true;
	c->msg_start_ms = uv_now(c->srv->loop);
	return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;

	(void)at;
	return count_header_bytes(c, n + 1) ? 0 : header_too_large(c);
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;

	if (!count_header_bytes(c, n))
		return header_too_large(c);
	if (c->url_len == 0)
		c->url_off = (uint32_t)c->cur->used;
	if (arena_put(c, at, n) < 0)
		return out_of_memory(c);
	c->url_len += (uint32_t)n;
	return 0;
}

static int on_url_complete(llhttp_t *p)
{
	struct http_conn *c = p->data;

	/* " HTTP/1.1\r\n" */
	if (!count_header_bytes(c, 11))
		return header_too_large(c);
	return arena_put(c, "", 1) < 0 ? out_of_memory(c) : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;
	struct http_hdr_off *h;

	/* ": " and CRLF of each header count towards the limit too. */
	if (!count_header_bytes(c, n + (c->hstate != 1 ? 4 : 0)))
		return header_too_large(c);
	/* Trailers of a chunked body are counted, then ignored. */
	if (c->headers_done) {
		c->hstate = 1;
		return 0;
	}
	if (c->hstate != 1) {
		if (c->nhv >= c->srv->lim.max_headers)
			return refuse(c, 431, HTTP_REJ_HEADER_TOO_LARGE, "Too many header fields");
		if (c->nhv == c->hv_cap) {
			uint32_t cap = c->hv_cap ? c->hv_cap * 2 : 16;
			void *nv = realloc(c->hv, cap * sizeof(*c->hv));

			if (!nv)
				return out_of_memory(c);
			c->hv = nv;
			c->hv_cap = cap;
		}
		h = &c->hv[c->nhv++];
		memset(h, 0, sizeof(*h));
		h->name_off = (uint32_t)c->cur->used;
		c->hstate = 1;
	}
	if (arena_put(c, at, n) < 0)
		return out_of_memory(c);
	c->hv[c->nhv - 1].name_len += (uint32_t)n;
	return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct http_conn *c = p->data;

	c->hstate = 2;
	if (c->headers_done)
		return 0;
	if (arena_put(c, "", 1) < 0)
		return out_of_memory(c);
	c->hv[c->nhv - 1].value_off = (uint32_t)c->cur->used;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;

	if (!count_header_bytes(c, n))
		return header_too_large(c);
	if (c->headers_done)
		return 0;
	if (arena_put(c, at, n) < 0)
		return out_of_memory(c);
	c->hv[c->nhv - 1].value_len += (uint32_t)n;
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	struct http_conn *c = p->data;
	struct http_hdr_off *h;
	const char *v;

	c->hstate = 0;
	if (c->headers_done)
		return 0;
	if (arena_put(c, "", 1) < 0)
		return out_of_memory(c);
	h = &c->hv[c->nhv - 1];
	v = c->cur->arena + h->value_off;
	while (h->value_len && (v[0] == ' ' || v[0] == '\t')) {
		v++;
		h->value_off++;
		h->value_len--;
	}
	while (h->value_len && (v[h->value_len - 1] == ' ' || v[h->value_len - 1] == '\t'))
		h->value_len--;
	c->cur->arena[h->value_off + h->value_len] = '\0';
	return 0;
}

static const struct http_hdr_off *find_header(const struct http_conn *c, const char *name,
					      const struct http_hdr_off *after)
{
	const struct http_hdr_off *h = after ? after + 1 : c->hv;
	size_t len = strlen(name);

	for (; h < c->hv + c->nhv; h++)
		if (h->name_len == len &&
		    strncasecmp(c->cur->arena + h->name_off, name, len) == 0)
			return h;
	return NULL;
}

/* llhttp accepts any coding list that ends in chunked; we only implement chunked itself, and
 * RFC 9112 6.1 answers an unknown transfer coding with 501. */
static bool transfer_encoding_ok(const struct http_conn *c)
{
	const struct http_hdr_off *h = NULL;

	while ((h = find_header(c, "transfer-encoding", h)))
		if (strcasecmp(c->cur->arena + h->value_off, "chunked") != 0)
			return false;
	return true;
}

/* Expect: 100-continue gets its interim response only when no earlier response is still owed,
 * so that it cannot overtake one; otherwise the client sends the body after its own timeout. */
static int handle_expect(struct http_conn *c, const llhttp_t *p)
{
	const struct http_hdr_off *h = find_header(c, "expect", NULL);
	bool has_body = (p->flags & F_CHUNKED) || p->content_length > 0;

	if (!h)
		return 0;
	if (strcasecmp(c->cur->arena + h->value_off, "100-continue") != 0)
		return refuse(c, 417, HTTP_REJ_BAD_REQUEST,
			      "Unsupported Expect header: only 100-continue is supported");
	if (p->http_minor >= 1 && has_body && !c->head &&
	    buf_append(&c->out, continue_100, sizeof(continue_100) - 1) < 0)
		return out_of_memory(c);
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct http_conn *c = p->data;
	int err;

	c->headers_done = true;
	if (p->http_major != 1)
		return refuse(c, 505, HTTP_REJ_BAD_REQUEST, "HTTP version not supported");
	/* Upgrades (CONNECT, WebSocket) are not served: the request is answered as plain HTTP and
	 * the connection closes, since llhttp would treat what follows as another protocol. */
	c->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
	if ((p->flags & F_TRANSFER_ENCODING) && !transfer_encoding_ok(c))
		return refuse(c, 501, HTTP_REJ_BAD_REQUEST,
			      "Unsupported Transfer-Encoding: only chunked is supported");
	/* A declared length over the limit is refused before any of the body is read. */
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->lim.max_body_bytes)
		return refuse(c, 413, HTTP_REJ_BODY_TOO_LARGE, "Request body too large");
	if ((err = handle_expect(c, p)) != 0)
		return err;
	c->body_off = c->cur->used;
	/* Room for a declared body up front, but not for more than a typical one: a client that
	 * declares a large body and sends nothing should not cost that much memory. */
	if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED) &&
	    http__ex_reserve(&c->cur, (size_t)(p->content_length < BODY_PREALLOC_MAX
					      ? p->content_length + 1 : BODY_PREALLOC_MAX)) < 0)
		return out_of_memory(c);
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;

	if (n > c->srv->lim.max_body_bytes - c->body_len)
		return refuse(c, 413, HTTP_REJ_BODY_TOO_LARGE, "Request body too large");
	if (arena_put(c, at, n) < 0)
		return out_of_memory(c);
	c->body_len += n;
	return 0;
}

static enum http_method_id method_id(uint8_t m)
{
	switch (m) {
	case HTTP_GET: return HTTP_M_GET;
	case HTTP_HEAD: return HTTP_M_HEAD;
	case HTTP_POST: return HTTP_M_POST;
	case HTTP_PUT: return HTTP_M_PUT;
	case HTTP_DELETE: return HTTP_M_DELETE;
	case HTTP_OPTIONS: return HTTP_M_OPTIONS;
	case HTTP_PATCH: return HTTP_M_PATCH;
	default: return HTTP_M_OTHER;
	}
}

/* Splits the target into path and query. An absolute-form target (RFC 9112 3.2.2) is reduced
 * to its path, so the application sees the same path either way. */
static void split_target(struct http_request *req, char *url, size_t len)
{
	char *path = url, *end = url + len, *q;

	if ((len >= 7 && strncasecmp(url, "http://", 7) == 0) ||
	    (len >= 8 && strncasecmp(url, "https://", 8) == 0)) {
		path = (char *)memchr(url, ':', len) + 3;
		while (path < end && *path != '/' && *path != '?')
			path++;
	}
	q = memchr(path, '?', (size_t)(end - path));
	if (q) {
		*q = '\0';
		req->query = q + 1;
		req->query_len = (size_t)(end - q - 1);
		end = q;
	} else {
		req->query = end;  /* the target's NUL */
		req->query_len = 0;
	}
	if (path == end) {
		req->path = "/";
		req->path_len = 1;
	} else {
		req->path = path;
		req->path_len = (size_t)(end - path);
	}
}

/* Lays out the header array and turns offsets into the pointers of struct http_request. */
static int finalize(struct http_conn *c)
{
	const llhttp_t *p = &c->parser;
	struct http_exchange *ex;
	struct http_request *req;
	struct http_header *hdrs;
	size_t base, pad, i;

	if (arena_put(c, "", 1) < 0)  /* the body's NUL */
		return -ENOMEM;
	ex = c->cur;
	base = offsetof(struct http_exchange, arena) + ex->used;
	pad = (_Alignof(struct http_header) - base % _Alignof(struct http_header)) %
	      _Alignof(struct http_header);
	if (http__ex_reserve(&c->cur, pad + c->nhv * sizeof(*hdrs)) < 0)
		return -ENOMEM;
	ex = c->cur;
	ex->used += pad;
	hdrs = (struct http_header *)(void *)(ex->arena + ex->used);
	ex->used += c->nhv * sizeof(*hdrs);
	for (i = 0; i < c->nhv; i++) {
		hdrs[i].name = ex->arena + c->hv[i].name_off;
		hdrs[i].name_len = c->hv[i].name_len;
		hdrs[i].value = ex->arena + c->hv[i].value_off;
		hdrs[i].value_len = c->hv[i].value_len;
	}
	req = &ex->req;
	req->method = method_id(p->method);
	req->method_name = llhttp_method_name((llhttp_method_t)p->method);
	split_target(req, ex->arena + c->url_off, c->url_len);
	req->http_major = p->http_major;
	req->http_minor = p->http_minor;
	req->headers = hdrs;
	req->nheaders = c->nhv;
	req->body = ex->arena + c->body_off;
	req->body_len = c->body_len;
	req->keep_alive = c->keep_alive;
	ex->is_head = p->method == HTTP_HEAD;
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct http_conn *c = p->data;

	if (finalize(c) < 0)
		return out_of_memory(c);
	c->ready = c->cur;
	c->cur = NULL;
	c->in_msg = false;
	return HPE_PAUSED;
}

const llhttp_settings_t http__parser_settings = {
	.on_message_begin = on_message_begin,
	.on_method = on_method,
	.on_url = on_url,
	.on_url_complete = on_url_complete,
	.on_header_field = on_header_field,
	.on_header_field_complete = on_header_field_complete,
	.on_header_value = on_header_value,
	.on_header_value_complete = on_header_value_complete,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};
