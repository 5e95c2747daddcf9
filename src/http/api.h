/* api.h — the application behind the HTTP server: routing, auth, the OpenAI endpoints on the
 * mock backend, admission through admit_check(), rate-limit headers and error bodies, and the
 * operational endpoints (/healthz, /metrics). Loop thread only. */
#ifndef LLMLIMIT_HTTP_API_H
#define LLMLIMIT_HTTP_API_H

#include <stdbool.h>
#include <stdio.h>

#include "util/buf.h"

#include "http/keys.h"
#include "http/server.h"

struct admit;
struct metrics;

struct api_deps {
	const struct keys_config *keys;  /* borrowed; replaced by api_set_keys */
	struct admit *admit;             /* borrowed */
	struct metrics *metrics;         /* borrowed */
	/* Called before /metrics renders, so the owner can refresh gauges. May be NULL. */
	void (*collect)(void *arg);
	void *collect_arg;
	/* When non-NULL, one line per admission and per reconciliation, for audits and the
	 * exactness tests (see docs/OPERATIONS.md). Borrowed. */
	FILE *admission_log;
	/* GET /readyz: true once the node can serve (joined its cluster). NULL: always ready. */
	bool (*ready)(void *arg);
	/* GET /cluster[?query]: appends the cluster view as JSON. NULL: 404 (single node). */
	int (*cluster_json)(void *arg, const char *query, size_t query_len, struct buf *out);
	void *ops_arg;
	/* Monotonic milliseconds for the admission log (the same clock as the windows). */
	uint64_t (*now_ms)(void *arg);
	void *now_arg;
};

struct api;

__attribute__((warn_unused_result))
int api_new(struct api **out, const struct api_deps *deps);
void api_free(struct api *a);  /* NULL-safe */

/* Swaps in a reloaded keys file. Requests already admitted keep what they copied; the caller
 * may free the previous configuration as soon as this returns. */
void api_set_keys(struct api *a, const struct keys_config *keys);

/* The http_handler_cb to give http_server_new(), with app = the struct api. */
void api_handle(void *app, struct http_exchange *ex);

#endif
