/* server_conn.c — one client connection: the read path (parse, dispatch), response ordering,
 * the write path (coalescing, backpressure), closing (graceful or not) and its deadlines.
 * The design notes are at the top of server.c. */
#include "http/server_int.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/metrics.h"

enum {
	LINGER_MS = 2000,            /* draining input after the last response */
	KEEP_BUF_MAX = 64 * 1024,    /* an idle connection keeps buffers up to this size */
	REJECTING_MAX = 1024,        /* 503s in flight; beyond, refused connections just close */
};

#define OUT_HIGH ((size_t)4 << 20)   /* unsent output that pauses reading */
#define OUT_LOW ((size_t)1 << 20)    /* ... and resumes it */

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void conn_unschedule(struct http_conn *c);

/* ---- small helpers ------------------------------------------------------------------------ */

static size_t unsent(const struct http_conn *c)
{
	return c->out.len + (c->writing ? c->wbuf.len : 0);
}

static void shrink(struct buf *b)
{
	if (b->len == 0 && b->cap > KEEP_BUF_MAX)
		buf_close(b);
}

static void swap_bufs(struct buf *a, struct buf *b)
{
	struct buf t = *a;

	*a = *b;
	*b = t;
}

static void queue_push(struct http_conn *c, struct http_exchange *ex)
{
	ex->next = NULL;
	if (c->tail)
		c->tail->next = ex;
	else
		c->head = ex;
	c->tail = ex;
	c->nqueued++;
}

static void queue_pop(struct http_conn *c)
{
	c->head = c->head->next;
	if (!c->head)
		c->tail = NULL;
	c->nqueued--;
}

static void on_idle(uv_idle_t *h)
{
	struct http_server *s = h->data;
	struct http_conn *c;

	while ((c = s->work)) {
		conn_unschedule(c);
		http__conn_settle(c);
	}
	uv_idle_stop(&s->idle);
}

static void conn_schedule(struct http_conn *c)
{
	struct http_server *s = c->srv;

	if (c->scheduled || c->closing)
		return;
	c->scheduled = true;
	c->work_prev = NULL;
	c->work_next = s->work;
	if (s->work)
		s->work->work_prev = c;
	s->work = c;
	if (!uv_is_active((uv_handle_t *)&s->idle))
		uv_idle_start(&s->idle, on_idle);
}

static void conn_unschedule(struct http_conn *c)
{
	if (!c->scheduled)
		return;
	if (c->work_prev)
		c->work_prev->work_next = c->work_next;
	else
		c->srv->work = c->work_next;
	if (c->work_next)
		c->work_next->work_prev = c->work_prev;
	c->scheduled = false;
}

/* ---- response ordering -------------------------------------------------------------------- */

/* Empties the queue: exchanges with the application become orphans (respond() frees them),
 * answered ones are dropped. Used when nothing more will be written. */
static void conn_drop_queue(struct http_conn *c)
{
	struct http_exchange *ex, *next;

	for (ex = c->head; ex; ex = next) {
		next = ex->next;
		if (ex->state == HTTP_EX_APP) {
			ex->conn = NULL;
			ex->next = NULL;
		} else {
			http__ex_release(c->srv, ex);
		}
	}
	c->head = c->tail = NULL;
	c->nqueued = 0;
}

/* The response just moved to the output ends the connection: what follows is never sent. */
static void conn_last_response(struct http_conn *c)
{
	c->want_close = true;
	c->no_more = true;
	buf_reset(&c->pending);
	conn_drop_queue(c);
}

/* Moves answered responses at the head of the queue, in order, into the output buffer. */
static void conn_pump(struct http_conn *c)
{
	struct http_exchange *ex;

	while (!c->want_close && (ex = c->head) && ex->state == HTTP_EX_ANSWERED) {
		if (c->out.len == 0) {
			swap_bufs(&c->out, &ex->resp);
		} else if (buf_append(&c->out, ex->resp.data, ex->resp.len) < 0) {
			http__conn_close(c);
			return;
		}
		queue_pop(c);
		if (ex->close_after)
			conn_last_response(c);
		http__ex_release(c->srv, ex);
	}
}

void http_exchange_respond(struct http_exchange *ex, const struct http_response *resp)
{
	struct http_conn *c = ex->conn;
	struct http_server *s;
	bool close;
	int err;

	if (!c) {
		http__ex_release(NULL, ex);
		return;
	}
	assert(ex->state == HTTP_EX_APP);
	s = c->srv;
	/* During shutdown, the last response owed on a connection says it closes. */
	close = resp->close || !ex->req.keep_alive || (resp->sse && ex->req.http_minor == 0) ||
		(s->shutting && !ex->next && !c->in_msg);
	ex->close_after = close;
	if (close) {
		c->no_more = true;
		buf_reset(&c->pending);
	}
	if (ex == c->head) {
		err = http__serialize(&c->out, resp, ex->req.http_minor, ex->is_head, close,
				      s->date, s->date_len);
		queue_pop(c);
		if (close)
			conn_last_response(c);
		http__ex_release(s, ex);
		conn_pump(c);
	} else {
		err = http__serialize(&ex->resp, resp, ex->req.http_minor, ex->is_head, close,
				      s->date, s->date_len);
		ex->state = HTTP_EX_ANSWERED;
	}
	if (err < 0) {
		log_warn("msg=\"cannot serialize response\" err=%d", err);
		http__conn_close(c);
		return;
	}
	if (!c->in_process)
		conn_schedule(c);
}

/* Queues an error response after those already owed, and ends the connection after it. */
static void conn_fail(struct http_conn *c, int status, enum http_rej why, const char *msg)
{
	struct http_server *s = c->srv;
	struct http_exchange *ex;
	unsigned minor = c->parser.http_major == 1 ? c->parser.http_minor : 1;

	http__count_reject(s, why);
	log_debug("msg=\"request rejected\" status=%d reason=\"%s\"", status, msg);
	if (c->cur) {
		http__ex_release(s, c->cur);
		c->cur = NULL;
	}
	c->in_msg = false;
	c->no_more = true;
	buf_reset(&c->pending);
	if (!(ex = http__ex_new(s))) {
		http__conn_close(c);
		return;
	}
	ex->conn = c;
	ex->state = HTTP_EX_ANSWERED;
	ex->close_after = true;
	queue_push(c, ex);
	if (http__serialize_error(&ex->resp, status, msg, minor, s->date, s->date_len) < 0) {
		http__conn_close(c);
		return;
	}
	conn_pump(c);
}

/* Turns an llhttp error (or a limit found by a callback) into its error response. */
static void conn_parse_error(struct http_conn *c, llhttp_errno_t err)
{
	const struct http_server_limits *l = &c->srv->lim;
	char msg[256];

	if (c->err_status == -ENOMEM) {
		log_warn("msg=\"out of memory parsing a request\"");
		http__conn_close(c);
		return;
	}
	switch (c->err_status) {
	case 0:
		if (err == HPE_PAUSED_H2_UPGRADE)
			snprintf(msg, sizeof(msg), "HTTP/2 is not supported: use HTTP/1.1");
		else
			snprintf(msg, sizeof(msg), "Malformed HTTP request: %s (%s)",
				 llhttp_get_error_reason(&c->parser), llhttp_errno_name(err));
		conn_fail(c, 400, HTTP_REJ_BAD_REQUEST, msg);
		return;
	case 413:
		snprintf(msg, sizeof(msg), "%s: the limit is %zu bytes", c->err_msg,
			 l->max_body_bytes);
		break;
	case 431:
		snprintf(msg, sizeof(msg), "%s: the limits are %zu bytes and %u header fields",
			 c->err_msg, l->max_header_bytes, l->max_headers);
		break;
	default:
		snprintf(msg, sizeof(msg), "%s", c->err_msg);
	}
	conn_fail(c, c->err_status, c->err_reason, msg);
}

/* ---- the read path ------------------------------------------------------------------------ */

static bool conn_can_parse(const struct http_conn *c)
{
	return !c->closing && !c->no_more && !c->bp && c->nqueued < c->srv->lim.max_pipeline;
}

static void conn_dispatch(struct http_conn *c)
{
	struct http_server *s = c->srv;
	struct http_exchange *ex = c->ready;

	c->ready = NULL;
	ex->state = HTTP_EX_APP;
	ex->start_ns = uv_hrtime();
	queue_push(c, ex);
	if (!ex->req.keep_alive || s->shutting)
		c->no_more = true;
	c->active_ms = uv_now(s->loop);
	s->handler(s->app, ex);
}

/* Parses and dispatches requests from data while allowed; returns the bytes consumed. */
static size_t conn_parse(struct http_conn *c, const char *data, size_t len)
{
	const char *p = data, *end = data + len;
	llhttp_errno_t err;

	c->in_process++;
	while (p < end && conn_can_parse(c)) {
		err = llhttp_execute(&c->parser, p, (size_t)(end - p));
		if (err == HPE_OK) {
			p = end;
		} else if (err == HPE_PAUSED && c->ready) {
			p = llhttp_get_error_pos(&c->parser);
			llhttp_resume(&c->parser);
			conn_dispatch(c);
		} else {
			conn_parse_error(c, err);
			p = end;
		}
	}
	c->in_process--;
	return (size_t)(p - data);
}

static void conn_parse_pending(struct http_conn *c)
{
	size_t n = conn_parse(c, c->pending.data, c->pending.len);

	if (c->closing)
		return;
	if (c->no_more)
		buf_reset(&c->pending);
	else
		buf_consume(&c->pending, n);
	shrink(&c->pending);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct http_conn *c = h->data;

	(void)hint;
	*buf = uv_buf_init(c->srv->rbuf, sizeof(c->srv->rbuf));
}

static void conn_update_reading(struct http_conn *c)
{
	bool want;

	if (c->closing)
		return;
	if (c->eof)
		want = false;
	else if (c->lingering || c->shutting)
		want = true;
	else if (c->no_more)
		/* Input is discarded now, but reading still notices a client that hangs up
		 * while its requests are with the application. */
		want = c->head && !c->want_close;
	else
		want = !c->bp && !c->pending.len && c->nqueued < c->srv->lim.max_pipeline;
	if (want == c->reading)
		return;
	if (want && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
		http__conn_close(c);
		return;
	}
	if (!want)
		uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = want;
}

static bool conn_has_unanswered(const struct http_conn *c)
{
	const struct http_exchange *ex;

	for (ex = c->head; ex; ex = ex->next)
		if (ex->state == HTTP_EX_APP)
			return true;
	return false;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct http_conn *c = stream->data;
	size_t used;

	if (c->closing || nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF || c->lingering || c->shutting) {
			http__conn_close(c);
			return;
		}
		/* The client is done sending. If a request of its is still with the application,
		 * it gave up waiting (nginx and Go read EOF the same way): cancel. Otherwise
		 * finish writing what is answered, and drop a request cut short. */
		c->eof = true;
		if (conn_has_unanswered(c)) {
			http__conn_close(c);
			return;
		}
		if (c->cur) {
			http__ex_release(c->srv, c->cur);
			c->cur = NULL;
		}
		c->in_msg = false;
		http__conn_settle(c);
		return;
	}
	/* After the last request (or a refusal), input is read only to be discarded. */
	if (c->no_more || c->lingering || c->shutting)
		return;
	used = conn_parse(c, buf->base, (size_t)nread);
	if (!c->closing && !c->no_more && used < (size_t)nread &&
	    buf_append(&c->pending, buf->base + used, (size_t)nread - used) < 0) {
		http__conn_close(c);
		return;
	}
	http__conn_settle(c);
}

/* ---- the write path ----------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
	struct http_conn *c = req->data;

	c->writing = false;
	buf_reset(&c->wbuf);
	if (c->closing)
		return;
	if (status < 0) {
		http__conn_close(c);
		return;
	}
	shrink(&c->wbuf);
	c->active_ms = uv_now(c->srv->loop);
	if (c->bp && unsent(c) < OUT_LOW)
		c->bp = false;
	http__conn_settle(c);
}

/* Hands the output buffer to the kernel: uv_try_write() first, uv_write() for the rest. */
static void conn_flush(struct http_conn *c)
{
	uv_buf_t b;
	int n;

	if (c->closing || c->writing || c->out.len == 0)
		return;
	b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (n == UV_EAGAIN || n == UV_ENOSYS)
		n = 0;
	if (n < 0) {
		http__conn_close(c);
		return;
	}
	c->active_ms = uv_now(c->srv->loop);
	if ((size_t)n == c->out.len) {
		buf_reset(&c->out);
		shrink(&c->out);
		return;
	}
	/* The unsent tail stays in wbuf until on_write; new responses gather in out meanwhile. */
	swap_bufs(&c->out, &c->wbuf);
	b = uv_buf_init(c->wbuf.data + n, (unsigned)(c->wbuf.len - (size_t)n));
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
		http__conn_close(c);
		return;
	}
	c->writing = true;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct http_conn *c = req->data;

	c->shutting = false;
	if (c->closing)
		return;
	if (status < 0 || c->eof) {
		http__conn_close(c);
		return;
	}
	c->lingering = true;
	c->linger_until_ms = uv_now(c->srv->loop) + LINGER_MS;
	conn_update_reading(c);
}

/* Ends the connection after its last response: FIN first, then drain input until EOF. */
static void conn_finish(struct http_conn *c)
{
	if (c->eof) {
		http__conn_close(c);
		return;
	}
	c->sreq.data = c;
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
		http__conn_close(c);
		return;
	}
	c->shutting = true;
}

/* Closes the connection once nothing more will be sent on it. */
static void conn_maybe_done(struct http_conn *c)
{
	if (c->closing || c->shutting || c->lingering || c->writing || c->out.len)
		return;
	if (c->want_close) {
		conn_finish(c);
		return;
	}
	if (c->head)
		return;
	if (c->eof || (c->srv->shutting && !c->in_msg))
		http__conn_close(c);
}

/* Brings a connection up to date after anything happened to it: parse what waits, write what
 * is ready, close if done, and read only when more input can be handled. */
void http__conn_settle(struct http_conn *c)
{
	if (c->closing)
		return;
	if (c->pending.len && !c->in_process && conn_can_parse(c))
		conn_parse_pending(c);
	conn_flush(c);
	if (!c->closing && unsent(c) > OUT_HIGH)
		c->bp = true;
	conn_maybe_done(c);
	conn_update_reading(c);
}

/* ---- connection lifecycle ----------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
	struct http_conn *c = h->data;
	struct http_server *s = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->counted) {
		s->nconns--;
		/* When freeing, the metrics registry may be gone already. */
		if (!s->freeing)
			metrics_gauge_set(s->g_conns, (double)s->nconns);
	}
	if (c->rejected)
		s->nrejecting--;
	buf_close(&c->out);
	buf_close(&c->wbuf);
	buf_close(&c->pending);
	free(c->hv);
	free(c);
	http__server_check(s);
}

/* Closes at once. Exchanges still with the application are orphaned: respond() frees them. */
void http__conn_close(struct http_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	conn_unschedule(c);
	conn_drop_queue(c);
	if (c->cur)
		http__ex_release(c->srv, c->cur);
	if (c->ready)
		http__ex_release(c->srv, c->ready);
	c->cur = c->ready = NULL;
	c->in_msg = false;
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Over max_connections: the client gets a 503 with a reason instead of a silent backlog. */
static void conn_reject(struct http_conn *c)
{
	struct http_server *s = c->srv;
	char msg[128];

	http__count_reject(s, HTTP_REJ_MAX_CONNECTIONS);
	c->rejected = true;
	s->nrejecting++;
	c->no_more = true;
	c->want_close = true;
	snprintf(msg, sizeof(msg), "Too many connections: this server accepts at most %u",
		 s->lim.max_connections);
	if (http__serialize_error(&c->out, 503, msg, 1, s->date, s->date_len) < 0 ||
	    s->nrejecting > REJECTING_MAX) {
		/* Still try once, without waiting: a refusal must never tie up resources. */
		uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);

		if (c->out.len)
			(void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		http__conn_close(c);
		return;
	}
	http__conn_settle(c);
}

void http__on_connection(uv_stream_t *server, int status)
{
	struct http_server *s = server->data;
	struct http_conn *c;

	if (status < 0) {
		log_warn("msg=\"accept failed\" err=\"%s\"", uv_strerror(status));
		return;
	}
	if (!(c = calloc(1, sizeof(*c)))) {
		/* libuv holds the accepted socket and stops watching the listener until it is
		 * taken: the sweep retries. */
		log_error("msg=\"out of memory accepting a connection\"");
		s->accept_retry = true;
		return;
	}
	uv_tcp_init(s->loop, &c->tcp);
	c->tcp.data = c;
	c->srv = s;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
		http__conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	c->active_ms = uv_now(s->loop);
	if (s->nconns >= s->lim.max_connections) {
		conn_reject(c);
		return;
	}
	c->counted = true;
	s->nconns++;
	metrics_gauge_set(s->g_conns, (double)s->nconns);
	metrics_counter_add(s->c_accepted, 1);
	llhttp_init(&c->parser, HTTP_REQUEST, &http__parser_settings);
	c->parser.data = c;
	conn_update_reading(c);
}

/* ---- deadlines ----------------------------------------------------------------------------- */

void http__conn_sweep(struct http_conn *c, uint64_t now)
{
	const struct http_server_limits *l = &c->srv->lim;

	if (c->lingering) {
		if (now >= c->linger_until_ms)
			http__conn_close(c);
	} else if (c->writing || c->shutting) {
		/* No write progress: the client stopped reading. */
		if (now - c->active_ms >= l->idle_timeout_ms)
			http__conn_close(c);
	} else if (c->in_msg && !c->bp) {
		if (now - c->msg_start_ms >= l->read_timeout_ms) {
			conn_fail(c, 408, HTTP_REJ_READ_TIMEOUT,
				  "Request timeout: the request was not received in time");
			http__conn_settle(c);
		}
	} else if (!c->head && !c->in_msg && !c->out.len && !c->pending.len) {
		if (now - c->active_ms >= l->idle_timeout_ms) {
			if (c->counted)
				http__count_reject(c->srv, HTTP_REJ_IDLE_TIMEOUT);
			http__conn_close(c);
		}
	}
}
