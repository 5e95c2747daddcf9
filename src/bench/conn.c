/* conn.c — one keep-alive connection of the bench: connect, write, parse responses, fail and
 * reconnect. */
#include <errno.h>
#include <string.h>

#include "bench/engine.h"

static void conn_connect(struct bench_conn *c);

enum bench_xerr bench__map_err(int uv_err)
{
	switch (uv_err) {
	case UV_ECONNREFUSED:
		return BENCH_XERR_REFUSED;
	case UV_ECONNRESET:
	case UV_EPIPE:
	case UV_ECONNABORTED:
		return BENCH_XERR_RESET;
	case UV_ETIMEDOUT:
		return BENCH_XERR_TIMEOUT;
	case UV_EOF:
		return BENCH_XERR_CLOSED;
	default:
		return BENCH_XERR_OTHER;
	}
}

static void ready_add(struct bench_conn *c)
{
	struct bench_node *n = &c->eng->nodes[c->node];

	if (c->ready || c->state != BENCH_CONN_OPEN || c->count >= c->eng->o->pipeline ||
	    c->eng->phase == BENCH_PH_DONE)
		return;
	c->ready = true;
	c->ready_next = NULL;
	c->ready_prev = n->ready_tail;
	if (n->ready_tail)
		n->ready_tail->ready_next = c;
	else
		n->ready_head = c;
	n->ready_tail = c;
}

void bench__ready_remove(struct bench_conn *c)
{
	struct bench_node *n = &c->eng->nodes[c->node];

	if (!c->ready)
		return;
	if (c->ready_prev)
		c->ready_prev->ready_next = c->ready_next;
	else
		n->ready_head = c->ready_next;
	if (c->ready_next)
		c->ready_next->ready_prev = c->ready_prev;
	else
		n->ready_tail = c->ready_prev;
	c->ready = false;
}

int bench__conn_push(struct bench_conn *c, const struct bench_slot *s)
{
	struct bench_engine *e = c->eng;
	uint32_t at = c->head + c->count;

	if (bench_tmpl_append(&e->nodes[c->node].tmpl, s->key, &c->out) < 0)
		return -ENOMEM;
	if (at >= e->o->pipeline)
		at -= e->o->pipeline;
	c->ring[at] = *s;
	c->count++;
	e->inflight++;
	e->st->nodes[c->node].sent++;
	if (c->count >= e->o->pipeline) {
		bench__ready_remove(c);
	} else if (c->ready) {
		/* Rotate so the next request goes to another connection of this node: spreading
		 * a pipelined load keeps the queues short. */
		bench__ready_remove(c);
		ready_add(c);
	}
	if (!c->dirty) {
		c->dirty = true;
		c->dirty_next = e->dirty_head;
		e->dirty_head = c;
	}
	return 0;
}

static void on_write(uv_write_t *req, int status)
{
	struct bench_conn *c = req->data;

	c->writing = false;
	buf_reset(&c->wbuf);
	if (status < 0) {
		if (c->state == BENCH_CONN_OPEN)
			bench__conn_fail(c, bench__map_err(status));
		return;
	}
	bench__conn_flush(c);
}

void bench__conn_flush(struct bench_conn *c)
{
	struct buf tmp;
	uv_buf_t b;
	int n;

	if (c->state != BENCH_CONN_OPEN || c->writing || !c->out.len)
		return;
	b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (n >= 0 && (size_t)n == c->out.len) {
		buf_reset(&c->out);
		return;
	}
	if (n < 0 && n != UV_EAGAIN) {
		bench__conn_fail(c, bench__map_err(n));
		return;
	}
	if (n < 0)
		n = 0;
	/* The rest goes out through uv_write, which owns wbuf until on_write; requests made
	 * meanwhile collect in the (swapped-in, empty) out. */
	tmp = c->wbuf;
	c->wbuf = c->out;
	c->out = tmp;
	b = uv_buf_init(c->wbuf.data + n, (unsigned)(c->wbuf.len - (size_t)n));
	n = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (n < 0) {
		buf_reset(&c->wbuf);
		bench__conn_fail(c, bench__map_err(n));
		return;
	}
	c->writing = true;
}

static int on_headers_complete(llhttp_t *p)
{
	struct bench_conn *c = p->data;
	struct bench_engine *e = c->eng;

	c->status = p->status_code;
	c->keep_body = c->status == 429;
	c->body_len = 0;
	/* A 503 that will be retried is no first byte of the request's answer. */
	if (e->o->stream && c->count && c->status >= 200 &&
	    (c->status != 503 || c->ring[c->head].attempts > e->o->retries) &&
	    e->now_read > c->ring[c->head].start_ns)
		bench_hist_record(&e->st->ttfb, e->now_read - c->ring[c->head].start_ns);
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct bench_conn *c = p->data;
	size_t room = BENCH_BODY_KEEP - c->body_len;

	if (c->keep_body && room) {
		if (len > room)
			len = room;
		memcpy(c->body + c->body_len, at, len);
		c->body_len = (uint16_t)(c->body_len + len);
	}
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct bench_conn *c = p->data;
	struct bench_engine *e = c->eng;
	struct bench_slot *s;
	uint64_t lat;

	/* Interim responses (100 Continue) precede the real one. */
	if (c->status < 200)
		return 0;
	if (!c->count) {
		c->unexpected = true;
		return -1;
	}
	s = &c->ring[c->head];
	if (++c->head == e->o->pipeline)
		c->head = 0;
	c->count--;
	e->inflight--;
	if (c->status == 503) {
		e->st->unavailable++;
		e->st->nodes[s->node].unavailable++;
	}
	/* Like the OpenAI SDKs, a 503 (a node joining or leaving its cluster) is retried on
	 * another node while retries remain; the connection is fine and stays in use. */
	if (c->status != 503 || !bench__retry(e, s, BENCH_XERR_UNAVAILABLE)) {
		lat = e->now_read > s->start_ns ? e->now_read - s->start_ns : 0;
		bench_stats_response(e->st, s->node, s->key, c->status, c->body, c->body_len,
				     lat);
		e->last_done = e->now_read;
	}
	if (!llhttp_should_keep_alive(p))
		c->peer_closing = true;
	else
		ready_add(c);
	return 0;
}

void bench__settings_init(llhttp_settings_t *s)
{
	llhttp_settings_init(s);
	s->on_headers_complete = on_headers_complete;
	s->on_body = on_body;
	s->on_message_complete = on_message_complete;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct bench_conn *c = h->data;

	(void)suggested;
	/* One buffer for every connection: a read is parsed before the next one starts, and
	 * the parser copies what it keeps. */
	*buf = uv_buf_init(c->eng->rbuf, sizeof(c->eng->rbuf));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct bench_conn *c = st->data;
	llhttp_errno_t rc;

	if (nread > 0) {
		c->eng->now_read = uv_hrtime();
		rc = llhttp_execute(&c->parser, buf->base, (size_t)nread);
		/* Data after a "Connection: close" response is an error for llhttp; the server
		 * is closing either way. */
		if (c->peer_closing)
			bench__conn_fail(c, BENCH_XERR_CLOSED);
		else if (rc != HPE_OK)
			bench__conn_fail(c, BENCH_XERR_PROTOCOL);
		return;
	}
	if (nread == 0)
		return;
	if (nread == UV_EOF) {
		/* A body delimited by the close ends here. */
		c->eng->now_read = uv_hrtime();
		rc = llhttp_finish(&c->parser);
		bench__conn_fail(c, rc == HPE_OK || c->peer_closing ? BENCH_XERR_CLOSED
								     : BENCH_XERR_PROTOCOL);
		return;
	}
	bench__conn_fail(c, bench__map_err((int)nread));
}

static void on_connect(uv_connect_t *req, int status)
{
	struct bench_conn *c = req->data;
	struct bench_engine *e = c->eng;
	int err;

	if (c->state != BENCH_CONN_CONNECTING)
		return; /* cancelled by a close */
	if (status < 0) {
		c->fails++;
		e->last_conn_err = status;
		bench__conn_fail(c, bench__map_err(status));
		return;
	}
	c->state = BENCH_CONN_OPEN;
	c->fails = 0;
	c->peer_closing = false;
	c->unexpected = false;
	e->nodes[c->node].open++;
	uv_tcp_nodelay(&c->tcp, 1);
	llhttp_init(&c->parser, HTTP_RESPONSE, &e->settings);
	c->parser.data = c;
	if ((err = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) < 0) {
		bench__conn_fail(c, bench__map_err(err));
		return;
	}
	ready_add(c);
	if (!c->resolved)
		bench__conn_resolved(e, c);
}

static void conn_connect(struct bench_conn *c)
{
	struct bench_engine *e = c->eng;
	int err;

	c->state = BENCH_CONN_CONNECTING;
	c->connect_ns = uv_hrtime();
	c->creq.data = c;
	err = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&e->nodes[c->node].addr,
			     on_connect);
	if (err < 0) {
		c->fails++;
		e->last_conn_err = err;
		bench__conn_fail(c, bench__map_err(err));
	}
}

static void on_backoff(uv_timer_t *t)
{
	conn_connect(t->data);
}

static void on_tcp_closed(uv_handle_t *h)
{
	struct bench_conn *c = h->data;
	struct bench_engine *e = c->eng;
	uint64_t delay;

	c->state = BENCH_CONN_IDLE;
	if (e->phase == BENCH_PH_DONE)
		return;
	uv_tcp_init(&e->loop, &c->tcp);
	c->tcp.data = c;
	/* Reconnect at once after losing an open connection; back off while connects fail so
	 * a dead node costs little: 10 ms doubling up to 1 s. */
	delay = c->fails ? UINT64_C(10) << (c->fails < 8 ? c->fails - 1 : 7) : 0;
	if (delay > 1000)
		delay = 1000;
	uv_timer_start(&c->backoff, on_backoff, delay, 0);
}

void bench__conn_fail(struct bench_conn *c, enum bench_xerr kind)
{
	struct bench_engine *e = c->eng;
	uint32_t i, at;
	struct bench_slot s;

	if (c->state != BENCH_CONN_OPEN && c->state != BENCH_CONN_CONNECTING)
		return;
	bench_stats_conn_error(e->st, c->node, kind);
	if (c->state == BENCH_CONN_OPEN)
		e->nodes[c->node].open--;
	bench__ready_remove(c);
	c->state = BENCH_CONN_CLOSING;
	for (i = 0; i < c->count; i++) {
		at = c->head + i;
		if (at >= e->o->pipeline)
			at -= e->o->pipeline;
		s = c->ring[at];
		e->inflight--;
		bench__requeue(e, &s, kind);
	}
	c->head = 0;
	c->count = 0;
	buf_reset(&c->out);
	uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
	if (!c->resolved)
		bench__conn_resolved(e, c);
}

int bench__conn_init(struct bench_engine *e, struct bench_conn *c, uint32_t id, uint32_t node)
{
	int err;

	c->eng = e;
	c->id = id;
	c->node = node;
	c->ring = e->slots + (size_t)id * e->o->pipeline;
	buf_init(&c->out);
	buf_init(&c->wbuf);
	if ((err = uv_tcp_init(&e->loop, &c->tcp)) < 0)
		return err;
	c->tcp.data = c;
	c->wreq.data = c;
	if ((err = uv_timer_init(&e->loop, &c->backoff)) < 0) {
		uv_close((uv_handle_t *)&c->tcp, NULL);
		return err;
	}
	c->backoff.data = c;
	c->state = BENCH_CONN_IDLE;
	conn_connect(c);
	return 0;
}

void bench__conn_shutdown(struct bench_conn *c)
{
	bench__ready_remove(c);
	if (c->state == BENCH_CONN_OPEN)
		c->eng->nodes[c->node].open--;
	c->count = 0;
	c->state = BENCH_CONN_CLOSING;
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
	if (!uv_is_closing((uv_handle_t *)&c->backoff))
		uv_close((uv_handle_t *)&c->backoff, NULL);
}
