/* options.h — llmlimit-bench's command line. Pure: parsing and validation only (no name
 * resolution, no I/O except bench_opts_usage). */
#ifndef LLMLIMIT_BENCH_OPTIONS_H
#define LLMLIMIT_BENCH_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum bench_endpoint {
	BENCH_EP_CHAT = 0,
	BENCH_EP_COMPLETIONS,
	BENCH_EP_EMBEDDINGS,
	BENCH_EP_MODELS,
};

struct bench_url {
	char *text;      /* owned: the URL as given, for the report */
	char host[256];  /* without brackets; a name or an address literal */
	char hosthdr[300]; /* the Host header value: "host:port", brackets kept for IPv6 */
	uint16_t port;
};

#define BENCH_MAX_CONCURRENT 100000u
#define BENCH_MAX_PIPELINE 1024u
#define BENCH_MAX_KEY_COUNT 10000000u
#define BENCH_MAX_PROMPT_TOKENS 10000000u

struct bench_opts {
	struct bench_url *nodes;   /* owned, nnodes >= 1 after a successful parse */
	size_t nnodes;
	char **keys;               /* owned; the listed keys (--api-keys) */
	size_t *key_lens;          /* owned, parallel to keys */
	size_t nkeys_listed;
	uint64_t key_count;        /* --key-count: generated keys prefix0..prefix{N-1} */
	char *key_prefix;          /* owned */
	uint32_t concurrent;       /* connections, spread over the nodes */
	uint32_t pipeline;         /* requests in flight per connection */
	double duration_s;         /* 0: unlimited (only with max_requests) */
	uint64_t max_requests;     /* 0: no cap */
	double rate;               /* requests/s over all connections; 0: closed loop */
	uint32_t prompt_tokens;
	uint32_t max_tokens;       /* 0: not sent */
	enum bench_endpoint endpoint;
	bool stream;
	bool quiet;
	bool help;                 /* --help was given; nothing else is validated */
	char *json_path;           /* owned; NULL: no JSON */
	char *model;               /* owned */
	uint32_t timeout_ms;
	uint32_t retries;          /* retries of a request after a transport failure */
	uint32_t key_report_max;   /* list every key when there are at most this many */
};

/* Parses argv[1..argc) into o (which it initialises). Accepts "--flag value", "--flag=value"
 * and, for --nodes and --api-keys, several values (until the next "--" argument) and
 * comma-separated lists. Returns 0, or -EINVAL with a one-line message in err. On failure o
 * holds nothing to free; on success free it with bench_opts_close(). */
__attribute__((warn_unused_result))
int bench_opts_parse(struct bench_opts *o, int argc, char **argv, char *err, size_t errlen);

/* Frees what parse allocated. Safe on a zeroed struct. */
void bench_opts_close(struct bench_opts *o);

/* Writes the --help text. */
void bench_opts_usage(FILE *f);

/* Number of distinct keys requests cycle through (0: no Authorization header). */
static inline uint64_t bench_opts_nkeys(const struct bench_opts *o)
{
	return o->key_count ? o->key_count : (uint64_t)o->nkeys_listed;
}

/* The endpoint's name on the command line ("chat"...) and its request path. */
const char *bench_endpoint_name(enum bench_endpoint ep);
const char *bench_endpoint_path(enum bench_endpoint ep);

#endif
