/* server_resp.c — HTTP/1.x response serialization for the server. Pure: no I/O. */
#include "http/server_int.h"

#include <errno.h>
#include <string.h>

#include "http/errors.h"

static int put_hex(struct buf *out, size_t v)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[2 * sizeof(size_t)];
	char *p = tmp + sizeof(tmp);

	do {
		*--p = digits[v & 15];
		v >>= 4;
	} while (v);
	return buf_append(out, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* One chunk per SSE event: the body is cut after every "\n\n" (the delimiter stays in its
 * chunk), and a tail without a delimiter becomes a last chunk of its own. */
static int put_sse_chunks(struct buf *out, const char *body, size_t len)
{
	const char *p = body, *end = body + len;
	int err = 0;

	while (p < end && !err) {
		const char *q = p;
		size_t n;

		for (;;) {
			q = memchr(q, '\n', (size_t)(end - q));
			if (!q || q + 1 >= end) {
				q = end;
				break;
			}
			if (q[1] == '\n') {
				q += 2;
				break;
			}
			q++;
		}
		n = (size_t)(q - p);
		err |= put_hex(out, n);
		err |= buf_append(out, "\r\n", 2);
		err |= buf_append(out, p, n);
		err |= buf_append(out, "\r\n", 2);
		p = q;
	}
	err |= buf_append(out, "0\r\n\r\n", 5);
	return err ? -ENOMEM : 0;
}

int http__serialize(struct buf *out, const struct http_response *r, unsigned minor, bool head,
		    bool close, const char *date, size_t date_len)
{
	bool no_body = (r->status >= 100 && r->status < 200) || r->status == 204 ||
		       r->status == 304;
	bool chunked = r->sse && minor >= 1 && !no_body;
	bool until_close = r->sse && minor == 0 && !no_body;
	const char *reason = http_status_reason(r->status);
	size_t extra = 128 + strlen(reason) + date_len + r->headers_len + (head ? 0 : r->body_len);
	int err;

	/* One reservation up front makes the appends below copies, not reallocations. */
	if (r->content_type)
		extra += strlen(r->content_type);
	if ((err = buf_reserve(out, extra)) < 0)
		return err;
	err = buf_append(out, minor >= 1 ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
	err |= buf_put_u64(out, (uint64_t)(r->status > 0 ? r->status : 500));
	err |= buf_append(out, " ", 1);
	err |= buf_puts(out, reason);
	err |= buf_append(out, "\r\n", 2);
	err |= buf_append(out, date, date_len);
	if (r->content_type) {
		err |= buf_append(out, "Content-Type: ", 14);
		err |= buf_puts(out, r->content_type);
		err |= buf_append(out, "\r\n", 2);
	}
	if (chunked) {
		err |= buf_append(out, "Transfer-Encoding: chunked\r\n", 28);
	} else if (!no_body && !until_close) {
		err |= buf_append(out, "Content-Length: ", 16);
		err |= buf_put_u64(out, r->body_len);
		err |= buf_append(out, "\r\n", 2);
	}
	if (close || until_close)
		err |= buf_append(out, "Connection: close\r\n", 19);
	else
		err |= buf_append(out, "Connection: keep-alive\r\n", 24);
	if (r->headers_len)
		err |= buf_append(out, r->headers, r->headers_len);
	err |= buf_append(out, "\r\n", 2);
	if (err)
		return -ENOMEM;
	if (head || no_body)
		return 0;
	if (chunked)
		return put_sse_chunks(out, r->body, r->body_len);
	return buf_append(out, r->body, r->body_len);
}

int http__serialize_error(struct buf *out, int status, const char *message, unsigned minor,
			  const char *date, size_t date_len)
{
	struct http_response r;
	struct buf body;
	int err;

	buf_init(&body);
	if ((err = http_error_body(&body, message, http_error_type(status), NULL, NULL)) < 0)
		goto out;
	memset(&r, 0, sizeof(r));
	r.status = status;
	r.content_type = "application/json";
	r.body = body.data;
	r.body_len = body.len;
	r.close = true;
	err = http__serialize(out, &r, minor, false, true, date, date_len);
out:
	buf_close(&body);
	return err;
}
