/* server.h — the client-facing HTTP/1.x server: libuv + llhttp.
 *
 * Owns listening, connections, parsing, limits and timeouts, and the order of responses. It
 * knows nothing of OpenAI or rate limits: each complete request becomes an http_exchange handed
 * to the application's handler, which answers it (now or later) with http_exchange_respond().
 *
 * Pipelining: requests on one connection are handed to the handler in order and may be
 * answered in any order; responses are written in request order. Reading pauses while
 * max_pipeline requests are unanswered on a connection.
 *
 * Lifetime: every exchange handed to the handler gets exactly one http_exchange_respond() call.
 * If the client went away first, http_exchange_cancelled() turns true and respond() only frees
 * the exchange. Loop thread only, everything here. */
#ifndef LLMLIMIT_HTTP_SERVER_H
#define LLMLIMIT_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;
struct metrics;

struct http_server_limits {
	size_t max_header_bytes;   /* request line + headers; beyond: 431. Default 16 KiB */
	size_t max_body_bytes;     /* decoded body; beyond: 413. Default 1 MiB */
	uint32_t max_headers;      /* header count; beyond: 431. Default 100 */
	uint32_t idle_timeout_ms;  /* keep-alive connection with no request in progress. 60 s */
	uint32_t read_timeout_ms;  /* from a request's first byte to its last: else 408. 30 s */
	uint32_t max_connections;  /* beyond: the new connection gets 503 and is closed. 10000 */
	uint32_t max_pipeline;     /* unanswered requests per connection before reads pause. 64 */
};

#define HTTP_DEFAULT_MAX_HEADER_BYTES (16u * 1024)
#define HTTP_DEFAULT_MAX_BODY_BYTES (1024u * 1024)
#define HTTP_DEFAULT_MAX_HEADERS 100u
#define HTTP_DEFAULT_IDLE_TIMEOUT_MS 60000u
#define HTTP_DEFAULT_READ_TIMEOUT_MS 30000u
#define HTTP_DEFAULT_MAX_CONNECTIONS 10000u
#define HTTP_DEFAULT_MAX_PIPELINE 64u

/* Fills the documented defaults (the HTTP_DEFAULT_* values). */
void http_server_limits_default(struct http_server_limits *l);

enum http_method_id {
	HTTP_M_OTHER = 0, HTTP_M_GET, HTTP_M_HEAD, HTTP_M_POST, HTTP_M_PUT, HTTP_M_DELETE,
	HTTP_M_OPTIONS, HTTP_M_PATCH
};

struct http_header {
	const char *name;   /* as received; compare case-insensitively */
	size_t name_len;
	const char *value;  /* leading/trailing whitespace trimmed */
	size_t value_len;
};

/* A parsed request. Every pointer stays valid until the exchange is freed by respond(). */
struct http_request {
	enum http_method_id method;
	const char *method_name;      /* NUL-terminated, e.g. "POST" */
	const char *path;             /* the target up to '?' (not percent-decoded), NUL-terminated */
	size_t path_len;
	const char *query;            /* after '?', NUL-terminated, "" when none */
	size_t query_len;
	unsigned http_major, http_minor;
	const struct http_header *headers;
	size_t nheaders;
	const char *body;             /* de-chunked, NUL-terminated (the NUL is not counted) */
	size_t body_len;
	bool keep_alive;              /* what the client asked for */
};

/* The value of the first header named `name` (case-insensitive), or NULL. */
const struct http_header *http_request_header(const struct http_request *req, const char *name);

struct http_response {
	int status;
	const char *content_type;   /* NULL: no Content-Type */
	const char *headers;        /* extra header lines, each ending in "\r\n"; may be NULL */
	size_t headers_len;
	const char *body;
	size_t body_len;
	/* body is a series of SSE events ("...\n\n"): sent with Transfer-Encoding: chunked, one
	 * chunk per event, on HTTP/1.1; close-delimited on HTTP/1.0. */
	bool sse;
	bool close;                 /* close the connection after this response */
};

struct http_exchange;

/* The request; valid until respond(). */
const struct http_request *http_exchange_request(const struct http_exchange *ex);
/* True once the client's connection has gone away. */
bool http_exchange_cancelled(const struct http_exchange *ex);
/* uv_hrtime() when the request's last byte arrived, for latency metrics. */
uint64_t http_exchange_start_ns(const struct http_exchange *ex);
/* The application's per-exchange slot, NULL until set. */
void *http_exchange_data(const struct http_exchange *ex);
void http_exchange_set_data(struct http_exchange *ex, void *data);
/* Sends resp (copied: the caller keeps ownership of its buffers) and frees the exchange. */
void http_exchange_respond(struct http_exchange *ex, const struct http_response *resp);

typedef void (*http_handler_cb)(void *app, struct http_exchange *ex);

struct http_server;

/* Borrows loop and metrics (may be NULL). 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int http_server_new(struct http_server **out, struct uv_loop_s *loop,
		    const struct http_server_limits *limits, http_handler_cb handler, void *app,
		    struct metrics *metrics);
/* Binds and listens on host:port (port 0: ephemeral). 0 or a negative libuv error. */
__attribute__((warn_unused_result))
int http_server_listen(struct http_server *s, const char *host, uint16_t port);
/* The bound port (useful after port 0). */
uint16_t http_server_port(const struct http_server *s);
/* Current number of open client connections. */
size_t http_server_connections(const struct http_server *s);
/* Stops accepting, lets answered responses flush and closes idle connections; connections
 * with requests in progress close after their last response. on_done runs once no connection
 * is left (or after `grace_ms`, when the rest are closed). */
void http_server_shutdown(struct http_server *s, uint32_t grace_ms, void (*on_done)(void *arg),
			  void *arg);
/* Closes everything; the server must be shut down or the loop stopped. Runs the close callbacks
 * on the next loop turn; NULL-safe. */
void http_server_free(struct http_server *s);

#endif
