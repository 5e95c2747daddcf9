/* server.c — the client-facing HTTP/1.x server: listening, the exchange API, deferred work,
 * the sweep timer and shutdown. Connections (read and write paths, response ordering) live in
 * server_conn.c, parsing in server_parse.c and response serialization in server_resp.c.
 *
 * Choices worth knowing (see also server.h):
 * - Zero in a limit field means the HTTP_DEFAULT_* value.
 * - One shared 64 KiB read buffer per server: parsing consumes it inside the read callback, and
 *   only bytes that cannot be parsed yet (pipeline full, output backpressure) are copied into a
 *   per-connection buffer, while reading stays paused.
 * - Completed requests pause llhttp and are dispatched after llhttp_execute() returns, so a
 *   handler that answers (or closes) synchronously never runs inside llhttp's stack.
 * - Responses answered inside the read path go out in one write at the end of it; responses
 *   answered from elsewhere are flushed from an idle handle, so a burst of answers in one loop
 *   turn still becomes one write per connection.
 * - One periodic sweep timer checks every connection's deadlines (read, idle, write stall,
 *   lingering close): timeouts are accurate to the sweep period (at most 250 ms).
 * - A write that makes no progress for idle_timeout_ms closes the connection. No deadline runs
 *   while requests are with the application: answering them is its job.
 * - EOF from the client while one of its requests is with the application is a hang-up: the
 *   connection closes and the exchange is cancelled. With everything answered, EOF only means
 *   that the pending output is written before closing.
 * - A connection that must close after a response (error, Connection: close) is shut down for
 *   writing and its input drained for up to 2 s (LINGER_MS), so the client reads the response
 *   instead of a reset caused by unread input.
 * - Writes go through write(2): the process must ignore SIGPIPE (llmlimitd's main does). */
#include "http/server_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http/errors.h"
#include "util/log.h"
#include "util/metrics.h"

enum {
	SWEEP_MAX_MS = 250,
	SWEEP_MIN_MS = 20,
	BACKLOG = 4096,
	EX_FREE_MAX = 1024,          /* exchange blocks kept for reuse */
};

#define HEADER_BYTES_MAX ((size_t)64 << 20)  /* arena offsets of headers are 32-bit */

static const char *const rej_labels[HTTP_REJ__COUNT] = {
	[HTTP_REJ_MAX_CONNECTIONS] = "reason=\"max_connections\"",
	[HTTP_REJ_HEADER_TOO_LARGE] = "reason=\"header_too_large\"",
	[HTTP_REJ_BODY_TOO_LARGE] = "reason=\"body_too_large\"",
	[HTTP_REJ_BAD_REQUEST] = "reason=\"bad_request\"",
	[HTTP_REJ_READ_TIMEOUT] = "reason=\"read_timeout\"",
	[HTTP_REJ_IDLE_TIMEOUT] = "reason=\"idle_timeout\"",
};

void http_server_limits_default(struct http_server_limits *l)
{
	l->max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
	l->max_body_bytes = HTTP_DEFAULT_MAX_BODY_BYTES;
	l->max_headers = HTTP_DEFAULT_MAX_HEADERS;
	l->idle_timeout_ms = HTTP_DEFAULT_IDLE_TIMEOUT_MS;
	l->read_timeout_ms = HTTP_DEFAULT_READ_TIMEOUT_MS;
	l->max_connections = HTTP_DEFAULT_MAX_CONNECTIONS;
	l->max_pipeline = HTTP_DEFAULT_MAX_PIPELINE;
}

/* ---- exchanges ---------------------------------------------------------------------------- */

struct http_exchange *http__ex_new(struct http_server *s)
{
	struct http_exchange *ex = s->freelist;

	if (ex) {
		s->freelist = ex->next;
		s->nfree--;
	} else if (!(ex = malloc(HTTP__EX_BLOCK))) {
		return NULL;
	}
	memset(ex, 0, offsetof(struct http_exchange, arena));
	ex->size = HTTP__EX_BLOCK;
	buf_init(&ex->resp);
	return ex;
}

int http__ex_reserve(struct http_exchange **pex, size_t extra)
{
	struct http_exchange *ex = *pex;
	size_t base = offsetof(struct http_exchange, arena) + ex->used;
	size_t size = ex->size;

	if (extra <= ex->size - base)
		return 0;
	if (extra > SIZE_MAX / 4 - base)
		return -ENOMEM;
	while (size < base + extra)
		size *= 2;
	if (!(ex = realloc(ex, size)))
		return -ENOMEM;
	ex->size = size;
	*pex = ex;
	return 0;
}

/* s == NULL: an orphan, whose server may be gone. */
void http__ex_release(struct http_server *s, struct http_exchange *ex)
{
	buf_close(&ex->resp);
	if (s && !s->freeing && ex->size == HTTP__EX_BLOCK && s->nfree < EX_FREE_MAX) {
		ex->next = s->freelist;
		s->freelist = ex;
		s->nfree++;
		return;
	}
	free(ex);
}

const struct http_request *http_exchange_request(const struct http_exchange *ex)
{
	return &ex->req;
}

bool http_exchange_cancelled(const struct http_exchange *ex)
{
	return ex->conn == NULL;
}

uint64_t http_exchange_start_ns(const struct http_exchange *ex)
{
	return ex->start_ns;
}

void *http_exchange_data(const struct http_exchange *ex)
{
	return ex->data;
}

void http_exchange_set_data(struct http_exchange *ex, void *data)
{
	ex->data = data;
}

const struct http_header *http_request_header(const struct http_request *req, const char *name)
{
	size_t len = strlen(name), i;

	for (i = 0; i < req->nheaders; i++)
		if (req->headers[i].name_len == len &&
		    strncasecmp(req->headers[i].name, name, len) == 0)
			return &req->headers[i];
	return NULL;
}

/* ---- small helpers ------------------------------------------------------------------------ */

void http__count_reject(struct http_server *s, enum http_rej why)
{
	metrics_counter_add(s->c_rejected[why], 1);
}

static void refresh_date(struct http_server *s)
{
	time_t now = time(NULL);
	struct tm tm;

	if ((int64_t)now == s->date_sec)
		return;
	gmtime_r(&now, &tm);
	s->date_len = strftime(s->date, sizeof(s->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n",
			       &tm);
	s->date_sec = now;
}

/* ---- timers ------------------------------------------------------------------------------- */

static void on_sweep(uv_timer_t *t)
{
	struct http_server *s = t->data;
	uint64_t now = uv_now(s->loop);
	struct http_conn *c;

	refresh_date(s);
	if (s->accept_retry && s->listener_open && !s->shutting && !s->freeing) {
		s->accept_retry = false;
		http__on_connection((uv_stream_t *)&s->listener, 0);
	}
	/* Closing only marks a connection; it leaves the list in its close callback. */
	for (c = s->conns; c; c = c->next)
		if (!c->closing)
			http__conn_sweep(c, now);
}

/* ---- server lifecycle --------------------------------------------------------------------- */

static void server_free_now(struct http_server *s)
{
	struct http_exchange *ex;

	while ((ex = s->freelist)) {
		s->freelist = ex->next;
		free(ex);
	}
	free(s);
}

void http__server_check(struct http_server *s)
{
	if (s->freeing) {
		if (s->open_handles == 0 && !s->conns)
			server_free_now(s);
		return;
	}
	if (s->shutting && !s->done_called && !s->listener_open && !s->conns) {
		s->done_called = true;
		uv_timer_stop(&s->grace);
		if (s->on_done)
			s->on_done(s->done_arg);
	}
}

static void on_handle_closed(uv_handle_t *h)
{
	struct http_server *s = h->data;

	if (h == (uv_handle_t *)&s->listener)
		s->listener_open = false;
	s->open_handles--;
	http__server_check(s);
}

int http_server_new(struct http_server **out, struct uv_loop_s *loop,
		    const struct http_server_limits *limits, http_handler_cb handler, void *app,
		    struct metrics *metrics)
{
	struct http_server_limits def;
	struct http_server *s;
	uint32_t sweep_ms;
	int i;

	*out = NULL;
	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	http_server_limits_default(&def);
	s->lim = *limits;
#define DEFAULT_IF_ZERO(f) if (!s->lim.f) s->lim.f = def.f
	DEFAULT_IF_ZERO(max_header_bytes);
	DEFAULT_IF_ZERO(max_body_bytes);
	DEFAULT_IF_ZERO(max_headers);
	DEFAULT_IF_ZERO(idle_timeout_ms);
	DEFAULT_IF_ZERO(read_timeout_ms);
	DEFAULT_IF_ZERO(max_connections);
	DEFAULT_IF_ZERO(max_pipeline);
#undef DEFAULT_IF_ZERO
	if (s->lim.max_header_bytes > HEADER_BYTES_MAX)
		s->lim.max_header_bytes = HEADER_BYTES_MAX;
	s->loop = loop;
	s->handler = handler;
	s->app = app;
	s->date_sec = -1;
	refresh_date(s);
	if (metrics) {
		s->g_conns = metrics_gauge(metrics, "llmlimit_http_connections",
					   "Open client connections", "");
		s->c_accepted = metrics_counter(metrics, "llmlimit_http_connections_total",
						"Client connections accepted", "");
		for (i = 0; i < HTTP_REJ__COUNT; i++)
			s->c_rejected[i] = metrics_counter(
				metrics, "llmlimit_http_rejected_total",
				"Connections and requests refused by the HTTP server, by reason",
				rej_labels[i]);
	}
	uv_timer_init(loop, &s->sweep);
	uv_timer_init(loop, &s->grace);
	uv_idle_init(loop, &s->idle);
	s->sweep.data = s->grace.data = s->idle.data = s;
	s->open_handles = 3;
	sweep_ms = s->lim.read_timeout_ms < s->lim.idle_timeout_ms ? s->lim.read_timeout_ms
								   : s->lim.idle_timeout_ms;
	sweep_ms /= 4;
	sweep_ms = sweep_ms < SWEEP_MIN_MS ? SWEEP_MIN_MS
		   : sweep_ms > SWEEP_MAX_MS ? SWEEP_MAX_MS : sweep_ms;
	uv_timer_start(&s->sweep, on_sweep, sweep_ms, sweep_ms);
	/* Timeouts alone must not keep the loop alive once everything else is gone. */
	uv_unref((uv_handle_t *)&s->sweep);
	*out = s;
	return 0;
}

int http_server_listen(struct http_server *s, const char *host, uint16_t port)
{
	struct sockaddr_storage ss;
	int err;

	if (s->listener_open || s->shutting || s->freeing)
		return UV_EALREADY;
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) < 0 &&
	    (err = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)) < 0)
		return err;
	if ((err = uv_tcp_init(s->loop, &s->listener)) < 0)
		return err;
	s->listener.data = s;
	s->listener_open = true;
	s->open_handles++;
	if ((err = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0)) < 0 ||
	    (err = uv_listen((uv_stream_t *)&s->listener, BACKLOG, http__on_connection)) < 0) {
		uv_close((uv_handle_t *)&s->listener, on_handle_closed);
		return err;
	}
	return 0;
}

uint16_t http_server_port(const struct http_server *s)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (!s->listener_open ||
	    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

size_t http_server_connections(const struct http_server *s)
{
	return s->nconns;
}

static void on_grace(uv_timer_t *t)
{
	struct http_server *s = t->data;
	struct http_conn *c;

	log_info("msg=\"shutdown grace period over\" connections=%zu", s->nconns);
	for (c = s->conns; c; c = c->next)
		http__conn_close(c);
}

void http_server_shutdown(struct http_server *s, uint32_t grace_ms, void (*on_done)(void *arg),
			  void *arg)
{
	struct http_conn *c, *next;

	if (s->shutting || s->freeing)
		return;
	s->shutting = true;
	s->on_done = on_done;
	s->done_arg = arg;
	if (s->listener_open && !uv_is_closing((uv_handle_t *)&s->listener))
		uv_close((uv_handle_t *)&s->listener, on_handle_closed);
	for (c = s->conns; c; c = next) {
		next = c->next;
		if (c->closing)
			continue;
		/* A request being received may finish; nothing after it is read. */
		if (!c->in_msg) {
			c->no_more = true;
			buf_reset(&c->pending);
		}
		http__conn_settle(c);
	}
	if (grace_ms)
		uv_timer_start(&s->grace, on_grace, grace_ms, 0);
	else
		on_grace(&s->grace);
	http__server_check(s);
}

void http_server_free(struct http_server *s)
{
	struct http_conn *c;

	if (!s)
		return;
	s->freeing = true;
	for (c = s->conns; c; c = c->next)
		http__conn_close(c);
	if (s->listener_open && !uv_is_closing((uv_handle_t *)&s->listener))
		uv_close((uv_handle_t *)&s->listener, on_handle_closed);
	uv_close((uv_handle_t *)&s->sweep, on_handle_closed);
	uv_close((uv_handle_t *)&s->grace, on_handle_closed);
	uv_close((uv_handle_t *)&s->idle, on_handle_closed);
}
