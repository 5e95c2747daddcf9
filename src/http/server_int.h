/* server_int.h — the HTTP server's private structures, shared by server.c (connections, I/O,
 * timers), server_parse.c (llhttp callbacks, the per-request arena) and server_resp.c (response
 * serialization). Not part of the module's interface: only these three files include it. */
#ifndef LLMLIMIT_HTTP_SERVER_INT_H
#define LLMLIMIT_HTTP_SERVER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

#include "http/server.h"
#include "util/buf.h"

struct metrics_counter;
struct metrics_gauge;

/* Why a connection was refused or a request rejected: the reason label of
 * llmlimit_http_rejected_total. */
enum http_rej {
	HTTP_REJ_MAX_CONNECTIONS,
	HTTP_REJ_HEADER_TOO_LARGE,
	HTTP_REJ_BODY_TOO_LARGE,
	HTTP_REJ_BAD_REQUEST,
	HTTP_REJ_READ_TIMEOUT,
	HTTP_REJ_IDLE_TIMEOUT,
	HTTP_REJ__COUNT
};

enum http_ex_state {
	HTTP_EX_PARSING,    /* conn->cur: bytes still arriving */
	HTTP_EX_APP,        /* handed to the handler, unanswered */
	HTTP_EX_ANSWERED,   /* answered ahead of its turn: the response waits in resp */
};

/* One request/response slot. The struct and the request's bytes (target, headers, body and the
 * header array) share one allocation: the arena follows the struct. While parsing, everything
 * in the arena is addressed by offset, because growing the arena may move the block. */
struct http_exchange {
	struct http_conn *conn;      /* NULL once orphaned */
	struct http_exchange *next;  /* the connection's queue, in request order */
	struct http_request req;
	uint64_t start_ns;
	void *data;                  /* the application's slot */
	struct buf resp;             /* a serialized response waiting for its turn */
	size_t size;                 /* bytes allocated, struct included */
	size_t used;                 /* arena bytes in use */
	uint8_t state;               /* enum http_ex_state */
	bool close_after;            /* the connection closes once this response is out */
	bool is_head;                /* HEAD: the response carries no body */
	char arena[];
};

/* A header while its request is being parsed: offsets into the exchange's arena. */
struct http_hdr_off {
	uint32_t name_off, name_len;
	uint32_t value_off, value_len;
};

struct http_conn {
	uv_tcp_t tcp;                /* tcp.data = this; freed in its close callback */
	uv_write_t wreq;
	uv_shutdown_t sreq;
	llhttp_t parser;             /* parser.data = this */
	struct http_server *srv;     /* borrowed */
	struct http_conn *prev, *next;            /* srv->conns */
	struct http_conn *work_prev, *work_next;  /* srv->work, while scheduled */

	struct http_exchange *cur;   /* the request being parsed, or NULL */
	struct http_exchange *ready; /* just completed by the parser, not yet dispatched */
	struct http_exchange *head, *tail;  /* handed out or answered, in request order */
	uint32_t nqueued;

	struct buf out;              /* serialized responses not yet given to the kernel */
	struct buf wbuf;             /* what wreq is writing (its head may have gone already) */
	struct buf pending;          /* received but not parsed yet: parsing is paused */

	/* Per-request parse state, reset at each message start. */
	struct http_hdr_off *hv;
	uint32_t nhv, hv_cap;
	uint32_t url_off, url_len;
	size_t body_off, body_len;
	size_t hdr_bytes;            /* request line + headers (+ trailers) so far */
	uint8_t hstate;              /* 0: none, 1: in a name, 2: in a value */
	bool headers_done;
	bool keep_alive;

	/* A limit or protocol violation found inside a callback, answered after llhttp returns. */
	int err_status;
	enum http_rej err_reason;
	const char *err_msg;

	uint64_t msg_start_ms;       /* uv_now() at the current request's first byte */
	uint64_t active_ms;          /* last time the connection became idle or made progress */
	uint64_t linger_until_ms;
	unsigned in_process;         /* > 0 while the parser loop runs for this connection */

	bool in_msg;                 /* a request has started and is not complete */
	bool reading;
	bool writing;                /* wreq in flight */
	bool bp;                     /* reads paused: too much unsent output */
	bool no_more;                /* parse no further requests */
	bool want_close;             /* the response ending the connection is in the output */
	bool eof;                    /* the client half-closed */
	bool shutting;               /* sreq in flight */
	bool lingering;              /* final response sent; draining input until EOF/deadline */
	bool closing;                /* uv_close() called */
	bool scheduled;              /* on srv->work */
	bool rejected;               /* over max_connections: gets 503 and closes */
	bool counted;                /* counted in srv->nconns */
};

struct http_server {
	uv_loop_t *loop;             /* borrowed */
	struct http_server_limits lim;
	http_handler_cb handler;
	void *app;

	uv_tcp_t listener;
	uv_timer_t sweep;            /* periodic: deadlines, the Date header */
	uv_timer_t grace;            /* shutdown deadline */
	uv_idle_t idle;              /* runs srv->work without blocking the loop */
	unsigned open_handles;       /* the embedded handles above not yet closed */
	bool listener_open;
	bool shutting;
	bool freeing;
	bool done_called;
	bool accept_retry;           /* an accept failed for lack of memory */
	void (*on_done)(void *arg);
	void *done_arg;

	struct http_conn *conns;     /* every connection, accepted or rejected */
	struct http_conn *work;      /* connections with deferred work (flush, resume) */
	size_t nconns;               /* accepted and open: what max_connections limits */
	size_t nrejecting;           /* rejected, still writing their 503 */

	struct http_exchange *freelist;  /* blocks of HTTP__EX_BLOCK bytes */
	size_t nfree;

	char date[40];               /* "Date: ...\r\n", refreshed by the sweep */
	size_t date_len;
	int64_t date_sec;

	struct metrics_gauge *g_conns;
	struct metrics_counter *c_accepted;
	struct metrics_counter *c_rejected[HTTP_REJ__COUNT];

	char rbuf[64 * 1024];        /* shared read buffer: parsing consumes it within read_cb */
};

#define HTTP__EX_BLOCK 4096u

/* server.c */
void http__count_reject(struct http_server *s, enum http_rej why);
/* Calls on_done or frees the server once the last connection and handle are closed. */
void http__server_check(struct http_server *s);
struct http_exchange *http__ex_new(struct http_server *s);
/* Grows ex's arena to hold `extra` more bytes; may move the block. 0 or -ENOMEM. */
int http__ex_reserve(struct http_exchange **ex, size_t extra);
void http__ex_release(struct http_server *s, struct http_exchange *ex);

/* server_conn.c */
/* The listener's connection callback: accepts, or refuses with 503 over max_connections. */
void http__on_connection(uv_stream_t *server, int status);
/* Closes at once; exchanges still with the application become orphans. */
void http__conn_close(struct http_conn *c);
/* Brings a connection up to date: parse waiting input, write, close when done, (un)pause. */
void http__conn_settle(struct http_conn *c);
/* Enforces the read, idle, write-stall and lingering deadlines at `now` (uv_now()). */
void http__conn_sweep(struct http_conn *c, uint64_t now);

/* server_parse.c */
extern const llhttp_settings_t http__parser_settings;
/* Ready for a new request: clears the per-request state (keeps allocations). */
void http__parse_reset(struct http_conn *c);

/* server_resp.c */
/* Appends the serialized response. minor: the request's HTTP minor version; head: HEAD request
 * (no body); close: "Connection: close" (otherwise keep-alive). 0 or -ENOMEM. */
int http__serialize(struct buf *out, const struct http_response *r, unsigned minor, bool head,
		    bool close, const char *date, size_t date_len);
/* Appends a complete error response (OpenAI error body, Connection: close). */
int http__serialize_error(struct buf *out, int status, const char *message, unsigned minor,
			  const char *date, size_t date_len);

#endif
