/* stats.h — what a benchmark run counts, and how a response is classified. Pure: the caller
 * passes every time in. */
#ifndef LLMLIMIT_BENCH_STATS_H
#define LLMLIMIT_BENCH_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bench/hist.h"

/* Which limit a 429 reports. */
enum bench_limit {
	BENCH_LIMIT_RPM = 0,     /* "requests per min" */
	BENCH_LIMIT_INPUT_TPM,   /* "input tokens per min" */
	BENCH_LIMIT_OUTPUT_TPM,  /* "output tokens per min" */
	BENCH_LIMIT_TOO_LARGE,   /* "Request too large": can never fit the limit */
	BENCH_LIMIT_OTHER,       /* a 429 whose body names none of these */
	BENCH_LIMIT_N
};

/* Why a request got no HTTP response, or why an attempt was retried. */
enum bench_xerr {
	BENCH_XERR_TIMEOUT = 0,  /* --timeout-ms passed (or the connect took that long) */
	BENCH_XERR_REFUSED,      /* connect refused */
	BENCH_XERR_RESET,        /* connection reset / broken pipe */
	BENCH_XERR_CLOSED,       /* the server closed the connection with the request unanswered */
	BENCH_XERR_PROTOCOL,     /* unparseable response */
	BENCH_XERR_OTHER,
	/* A 503 (a node joining its cluster or shutting down): only ever an attempt's outcome,
	 * retried; a final 503 is a response. Never a transport or connection error. */
	BENCH_XERR_UNAVAILABLE,
	BENCH_XERR_N
};

struct bench_node_stats {
	uint64_t sent;              /* attempts written to this node, retries included */
	uint64_t requests;          /* requests that ended here: a response or a final failure */
	uint64_t ok;
	uint64_t limited;
	uint64_t http_errors;       /* neither 2xx nor 429 */
	uint64_t transport_errors;  /* final failures without a response */
	uint64_t retried;           /* requests that failed (or got a 503) here and were resent */
	uint64_t unavailable;       /* 503 responses from here, retried or final */
	uint64_t connection_errors; /* failed connects and connections lost, by kind below */
	uint64_t conn_err_kind[BENCH_XERR_N];
};

#define BENCH_STATUS_MAX 600

struct bench_stats {
	uint64_t requests;          /* finished: ok + limited_total + http_errors + transport */
	uint64_t ok;                /* 2xx */
	uint64_t limited[BENCH_LIMIT_N];
	uint64_t limited_total;
	uint64_t http_errors;
	uint64_t status[BENCH_STATUS_MAX]; /* responses by status; [0] holds out-of-range ones */
	uint64_t xerr[BENCH_XERR_N];
	uint64_t transport_errors;
	uint64_t retried;
	uint64_t unavailable;       /* 503 responses, retried or final (final ones: in status) */
	uint64_t connection_errors;
	uint64_t issued;            /* distinct requests sent at least once */
	uint64_t dropped;           /* open loop: waited --timeout-ms for a connection, not sent */
	uint64_t unsent;            /* open loop: due but still queued when sending stopped */
	uint64_t abandoned;         /* in flight when a second signal ended the run */
	struct bench_hist lat;      /* every response */
	struct bench_hist lat_ok;   /* 2xx responses */
	struct bench_hist lat_limited; /* 429 responses */
	struct bench_hist ttfb;     /* time to the response headers (recorded with --stream) */
	struct bench_hist lag;      /* open loop: actual minus intended send time */
	size_t nnodes;
	struct bench_node_stats *nodes;  /* owned, nnodes entries */
	uint64_t nkeys;
	uint64_t *key_requests;     /* owned, nkeys entries (NULL when nkeys == 0) */
	uint64_t *key_ok;
	uint64_t send_ns;           /* from the first send to the end of sending */
	uint64_t elapsed_ns;        /* from the first send to the last completion */
	bool interrupted;           /* stopped early by a signal */
};

/* Allocates zeroed stats for nnodes nodes and nkeys keys. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int bench_stats_new(struct bench_stats **out, size_t nnodes, uint64_t nkeys);
void bench_stats_free(struct bench_stats *s); /* NULL-safe */

/* Counts a response with `status` for key index `key` (ignored without keys) that ended on
 * `node`; body (may be NULL) is what was kept of it, for classifying 429s. */
void bench_stats_response(struct bench_stats *s, size_t node, uint64_t key, int status,
			  const char *body, size_t body_len, uint64_t latency_ns);

/* Counts a request that finally failed without a response. */
void bench_stats_failure(struct bench_stats *s, size_t node, uint64_t key, enum bench_xerr kind);

/* Counts a lost or failed connection to `node`. */
void bench_stats_conn_error(struct bench_stats *s, size_t node, enum bench_xerr kind);

/* Which limit a 429 body names. Looks (case-insensitively) for "Request too large", "input
 * tokens per min", "output tokens per min", "requests per min", in that order, then at the
 * error's "type" ("requests", "input_tokens", "output_tokens"). */
enum bench_limit bench_classify_429(const char *body, size_t len);

/* Stable snake_case names for the JSON report ("requests", "input_tokens"... / "timeout"...,
 * "unavailable"). */
const char *bench_limit_name(enum bench_limit l);
const char *bench_xerr_name(enum bench_xerr x);

#endif
