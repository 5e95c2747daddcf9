#include "bench/options.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util/num.h"

enum opt_id {
	OPT_NODES, OPT_API_KEYS, OPT_KEY_COUNT, OPT_KEY_PREFIX, OPT_CONCURRENT, OPT_PIPELINE,
	OPT_DURATION, OPT_REQUESTS, OPT_RATE, OPT_PROMPT_TOKENS, OPT_MAX_TOKENS, OPT_ENDPOINT,
	OPT_MODEL, OPT_STREAM, OPT_JSON, OPT_TIMEOUT_MS, OPT_RETRIES, OPT_KEY_REPORT_MAX, OPT_QUIET,
	OPT_HELP,
};

enum opt_arity { ARG_NONE, ARG_ONE, ARG_LIST };

struct opt_def {
	const char *name;
	enum opt_id id;
	enum opt_arity arity;
};

static const struct opt_def opt_defs[] = {
	{ "nodes", OPT_NODES, ARG_LIST },
	{ "api-keys", OPT_API_KEYS, ARG_LIST },
	{ "key-count", OPT_KEY_COUNT, ARG_ONE },
	{ "key-prefix", OPT_KEY_PREFIX, ARG_ONE },
	{ "concurrent", OPT_CONCURRENT, ARG_ONE },
	{ "pipeline", OPT_PIPELINE, ARG_ONE },
	{ "duration", OPT_DURATION, ARG_ONE },
	{ "requests", OPT_REQUESTS, ARG_ONE },
	{ "rate", OPT_RATE, ARG_ONE },
	{ "prompt-tokens", OPT_PROMPT_TOKENS, ARG_ONE },
	{ "max-tokens", OPT_MAX_TOKENS, ARG_ONE },
	{ "endpoint", OPT_ENDPOINT, ARG_ONE },
	{ "model", OPT_MODEL, ARG_ONE },
	{ "stream", OPT_STREAM, ARG_NONE },
	{ "json", OPT_JSON, ARG_ONE },
	{ "timeout-ms", OPT_TIMEOUT_MS, ARG_ONE },
	{ "retries", OPT_RETRIES, ARG_ONE },
	{ "key-report-max", OPT_KEY_REPORT_MAX, ARG_ONE },
	{ "quiet", OPT_QUIET, ARG_NONE },
	{ "help", OPT_HELP, ARG_NONE },
};

static const char *const endpoint_names[] = { "chat", "completions", "embeddings", "models" };
static const char *const endpoint_paths[] = { "/v1/chat/completions", "/v1/completions",
					      "/v1/embeddings", "/v1/models" };

const char *bench_endpoint_name(enum bench_endpoint ep)
{
	return endpoint_names[ep];
}

const char *bench_endpoint_path(enum bench_endpoint ep)
{
	return endpoint_paths[ep];
}

void bench_opts_usage(FILE *f)
{
	fputs(
"Usage: llmlimit-bench --nodes URL... [options]\n"
"\n"
"Load generator for llmlimitd (any OpenAI-compatible HTTP/1.1 server). Keeps --concurrent\n"
"keep-alive connections spread over the nodes, sends requests round-robin over nodes and keys,\n"
"and prints totals, the 429 split by which limit was hit, latency percentiles, throughput,\n"
"per-node and per-key results.\n"
"\n"
"Targets:\n"
"  --nodes URL...         http://host:port of each node (one or more; also comma-separated)\n"
"  --api-keys K...        keys sent as 'Authorization: Bearer K', round-robin per request\n"
"  --key-count N          generate N keys PREFIX0..PREFIX{N-1} instead of --api-keys\n"
"                         (at most 10,000,000)\n"
"  --key-prefix P         prefix of generated keys (default: bench_key_)\n"
"\n"
"Load:\n"
"  --concurrent N         connections, spread evenly over the nodes (default: 64)\n"
"  --pipeline P           requests in flight per connection (default: 1)\n"
"  --duration S           seconds to send for, fractions allowed (default: 10, or unlimited\n"
"                         when --requests is given)\n"
"  --requests N           stop after N requests (whichever of --duration/--requests is first)\n"
"  --rate R               open loop: R requests/s in total, each scheduled at t0 + i/R and its\n"
"                         latency measured from that intended time, so server stalls show up\n"
"                         as latency (no coordinated omission). Requests due while every\n"
"                         connection is busy wait in a queue; one that waited longer than\n"
"                         --timeout-ms is dropped and reported instead of sent. Sends are\n"
"                         paced to the µs by polling, which keeps a core busy at high R.\n"
"                         0 (default): closed loop, concurrent x pipeline requests kept in\n"
"                         flight, each replaced when it finishes; latency from the actual\n"
"                         send\n"
"  --timeout-ms MS        per-attempt timeout: a request without a response by then is retried\n"
"                         (see --retries) and its connection closed; also the longest a retry\n"
"                         waits for a free connection (default: 10000)\n"
"  --retries N            times a request is retried, at once and on another node when one is\n"
"                         up, after its connection failed (refused, reset, closed), it timed\n"
"                         out, or it got a 503 (node joining or leaving its cluster). Out of\n"
"                         retries it fails as its last attempt did; a last 503 is its\n"
"                         response (default: 3)\n"
"\n"
"Requests:\n"
"  --endpoint E           chat | completions | embeddings | models (default: chat)\n"
"  --model NAME           model field (default: gpt-4o-mini; text-embedding-3-small for\n"
"                         embeddings)\n"
"  --prompt-tokens T      prompt size in the server's estimate: for chat the one user message\n"
"                         has (T-7)*4 bytes (estimate 4 + ceil(bytes/4) + 3); for completions\n"
"                         and embeddings the prompt/input has T*4 bytes (default: 32)\n"
"  --max-tokens M         max_tokens field; 0 leaves it out (default: 0)\n"
"  --stream               stream: true (chat and completions); also reports time to first byte\n"
"\n"
"Output:\n"
"  --json FILE            also write the report as JSON to FILE ('-' for stdout)\n"
"  --key-report-max N     list every key when there are at most N keys, else a summary and\n"
"                         the 10 keys with the lowest success rate (default: 100)\n"
"  --quiet                print nothing but errors (use with --json)\n"
"  --help                 this text\n"
"\n"
"Exit status: 0 when the run completed (429s and errors included), 1 when no request could be\n"
"sent at all, 2 on bad options. SIGINT/SIGTERM stop sending, wait for requests in flight\n"
"and their retries (each attempt at most --timeout-ms) and print the report; a second signal\n"
"stops at once.\n",
	      f);
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t v;

	if (num_parse_u64(s, strlen(s), max, &v) < 0 || v < min)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

/* A finite non-negative decimal ("2", "0.5", "1e3"); strtod is libc's, validated strictly. */
static int parse_nonneg_double(const char *s, double *out)
{
	char *end;
	double v;

	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !isfinite(v) || v < 0)
		return -EINVAL;
	*out = v;
	return 0;
}

/* A key goes into a header line: printable ASCII without spaces, so it cannot split the line. */
static bool header_token_ok(const char *s)
{
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return false;
	return true;
}

static bool has_scheme(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i + 3 <= n; i++)
		if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/')
			return true;
	return false;
}

static int parse_url(const char *s, size_t n, struct bench_url *u, char *err, size_t errlen)
{
	char hp[300];
	const char *p = s, *end = s + n, *slash;
	size_t hl;

	if (n >= 7 && !strncmp(s, "http://", 7))
		p += 7;
	else if (has_scheme(s, n))
		return fail(err, errlen, "--nodes: '%.*s': only http:// URLs are supported",
			    (int)n, s);
	slash = memchr(p, '/', (size_t)(end - p));
	if (slash && slash + 1 != end)
		return fail(err, errlen, "--nodes: '%.*s': a node URL has no path", (int)n, s);
	hl = (size_t)((slash ? slash : end) - p);
	if (hl == 0 || hl + 4 > sizeof(hp))
		return fail(err, errlen, "--nodes: '%.*s': bad host", (int)n, s);
	memcpy(hp, p, hl);
	hp[hl] = '\0';
	/* No port: HTTP's default, written out so num_parse_hostport sees one form. */
	if (hp[0] == '[' ? hp[hl - 1] == ']' : !strchr(hp, ':')) {
		memcpy(hp + hl, ":80", 4);
		hl += 3;
	}
	if (num_parse_hostport(hp, u->host, sizeof(u->host), &u->port) < 0 || u->port == 0 ||
	    !header_token_ok(hp))
		return fail(err, errlen, "--nodes: '%.*s': expected http://HOST:PORT", (int)n, s);
	memcpy(u->hosthdr, hp, hl + 1);
	u->text = strndup(s, n);
	if (!u->text)
		return fail(err, errlen, "out of memory");
	return 0;
}

static int add_node(struct bench_opts *o, const char *s, size_t n, char *err, size_t errlen)
{
	struct bench_url *nodes = realloc(o->nodes, (o->nnodes + 1) * sizeof(*nodes));

	if (!nodes)
		return fail(err, errlen, "out of memory");
	o->nodes = nodes;
	memset(&nodes[o->nnodes], 0, sizeof(nodes[0]));
	if (parse_url(s, n, &nodes[o->nnodes], err, errlen) < 0)
		return -EINVAL;
	o->nnodes++;
	return 0;
}

static int add_key(struct bench_opts *o, const char *s, size_t n, char *err, size_t errlen)
{
	char **keys;
	size_t *lens;
	char *k;

	k = strndup(s, n);
	if (!k)
		return fail(err, errlen, "out of memory");
	if (!header_token_ok(k)) {
		free(k);
		return fail(err, errlen, "--api-keys: keys must be printable ASCII without spaces");
	}
	keys = realloc(o->keys, (o->nkeys_listed + 1) * sizeof(*keys));
	if (keys)
		o->keys = keys;
	lens = realloc(o->key_lens, (o->nkeys_listed + 1) * sizeof(*lens));
	if (lens)
		o->key_lens = lens;
	if (!keys || !lens) {
		free(k);
		return fail(err, errlen, "out of memory");
	}
	o->keys[o->nkeys_listed] = k;
	o->key_lens[o->nkeys_listed] = n;
	o->nkeys_listed++;
	return 0;
}

/* Splits one list argument at commas; empty items are skipped. */
static int add_list(struct bench_opts *o, enum opt_id id, const char *v, char *err, size_t errlen)
{
	const char *p = v, *comma;
	size_t n;
	int rc;

	for (;;) {
		comma = strchr(p, ',');
		n = comma ? (size_t)(comma - p) : strlen(p);
		if (n) {
			rc = id == OPT_NODES ? add_node(o, p, n, err, errlen)
					     : add_key(o, p, n, err, errlen);
			if (rc < 0)
				return rc;
		}
		if (!comma)
			return 0;
		p = comma + 1;
	}
}

static int replace_str(char **dst, const char *v, char *err, size_t errlen)
{
	char *s = strdup(v);

	if (!s)
		return fail(err, errlen, "out of memory");
	free(*dst);
	*dst = s;
	return 0;
}

static int set_one(struct bench_opts *o, const struct opt_def *d, const char *v, bool *dur_set,
		   char *err, size_t errlen)
{
	uint64_t u;
	size_t i;

	switch (d->id) {
	case OPT_KEY_COUNT:
		if (num_parse_u64(v, strlen(v), BENCH_MAX_KEY_COUNT, &u) < 0 || u == 0)
			return fail(err, errlen, "--key-count: expected 1..%u",
				    BENCH_MAX_KEY_COUNT);
		o->key_count = u;
		return 0;
	case OPT_KEY_PREFIX:
		if (!header_token_ok(v))
			return fail(err, errlen, "--key-prefix: printable ASCII without spaces");
		return replace_str(&o->key_prefix, v, err, errlen);
	case OPT_CONCURRENT:
		if (parse_u32(v, 1, BENCH_MAX_CONCURRENT, &o->concurrent) < 0)
			return fail(err, errlen, "--concurrent: expected 1..%u",
				    BENCH_MAX_CONCURRENT);
		return 0;
	case OPT_PIPELINE:
		if (parse_u32(v, 1, BENCH_MAX_PIPELINE, &o->pipeline) < 0)
			return fail(err, errlen, "--pipeline: expected 1..%u", BENCH_MAX_PIPELINE);
		return 0;
	case OPT_DURATION:
		if (parse_nonneg_double(v, &o->duration_s) < 0 || o->duration_s <= 0 ||
		    o->duration_s > 1e7)
			return fail(err, errlen,
				    "--duration: expected seconds > 0, e.g. 10 or 2.5");
		*dur_set = true;
		return 0;
	case OPT_REQUESTS:
		if (num_parse_u64(v, strlen(v), UINT64_MAX / 2, &u) < 0 || u == 0)
			return fail(err, errlen, "--requests: expected a count >= 1");
		o->max_requests = u;
		return 0;
	case OPT_RATE:
		if (parse_nonneg_double(v, &o->rate) < 0 || o->rate > 1e9)
			return fail(err, errlen,
				    "--rate: expected requests/s >= 0 (0: closed loop)");
		return 0;
	case OPT_PROMPT_TOKENS:
		if (parse_u32(v, 0, BENCH_MAX_PROMPT_TOKENS, &o->prompt_tokens) < 0)
			return fail(err, errlen, "--prompt-tokens: expected 0..%u",
				    BENCH_MAX_PROMPT_TOKENS);
		return 0;
	case OPT_MAX_TOKENS:
		if (parse_u32(v, 0, UINT32_MAX, &o->max_tokens) < 0)
			return fail(err, errlen, "--max-tokens: expected a count >= 0");
		return 0;
	case OPT_ENDPOINT:
		for (i = 0; i < sizeof(endpoint_names) / sizeof(endpoint_names[0]); i++) {
			if (!strcmp(v, endpoint_names[i])) {
				o->endpoint = (enum bench_endpoint)i;
				return 0;
			}
		}
		return fail(err, errlen,
			    "--endpoint: expected chat, completions, embeddings or models");
	case OPT_MODEL:
		if (!*v)
			return fail(err, errlen, "--model: empty");
		return replace_str(&o->model, v, err, errlen);
	case OPT_JSON:
		if (!*v)
			return fail(err, errlen, "--json: empty file name");
		return replace_str(&o->json_path, v, err, errlen);
	case OPT_TIMEOUT_MS:
		if (parse_u32(v, 1, 3600000, &o->timeout_ms) < 0)
			return fail(err, errlen, "--timeout-ms: expected 1..3600000");
		return 0;
	case OPT_RETRIES:
		if (parse_u32(v, 0, 100, &o->retries) < 0)
			return fail(err, errlen, "--retries: expected 0..100");
		return 0;
	case OPT_KEY_REPORT_MAX:
		if (parse_u32(v, 0, BENCH_MAX_KEY_COUNT, &o->key_report_max) < 0)
			return fail(err, errlen, "--key-report-max: expected 0..%u",
				    BENCH_MAX_KEY_COUNT);
		return 0;
	default:
		return fail(err, errlen, "internal: --%s takes no value", d->name);
	}
}

static const struct opt_def *find_opt(const char *name, size_t n)
{
	size_t i;

	for (i = 0; i < sizeof(opt_defs) / sizeof(opt_defs[0]); i++)
		if (strlen(opt_defs[i].name) == n && !memcmp(opt_defs[i].name, name, n))
			return &opt_defs[i];
	return NULL;
}

static void set_defaults(struct bench_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->concurrent = 64;
	o->pipeline = 1;
	o->prompt_tokens = 32;
	o->endpoint = BENCH_EP_CHAT;
	o->timeout_ms = 10000;
	o->retries = 3;
	o->key_report_max = 100;
}

static int validate(struct bench_opts *o, bool dur_set, char *err, size_t errlen)
{
	if (o->nnodes == 0)
		return fail(err, errlen, "--nodes: at least one node URL is required");
	if (o->key_count && o->nkeys_listed)
		return fail(err, errlen, "--api-keys and --key-count are mutually exclusive");
	if (o->key_prefix && !o->key_count)
		return fail(err, errlen, "--key-prefix needs --key-count");
	if (o->concurrent < o->nnodes)
		return fail(err, errlen,
			    "--concurrent (%u) must be at least the number of nodes (%zu)",
			    o->concurrent, o->nnodes);
	if (o->stream && o->endpoint != BENCH_EP_CHAT && o->endpoint != BENCH_EP_COMPLETIONS)
		return fail(err, errlen, "--stream applies to the chat and completions endpoints");
	if (!dur_set)
		o->duration_s = o->max_requests ? 0 : 10;
	if (o->key_count && !o->key_prefix &&
	    replace_str(&o->key_prefix, "bench_key_", err, errlen))
		return -ENOMEM;
	if (!o->model && replace_str(&o->model, o->endpoint == BENCH_EP_EMBEDDINGS ?
				     "text-embedding-3-small" : "gpt-4o-mini", err, errlen))
		return -ENOMEM;
	return 0;
}

int bench_opts_parse(struct bench_opts *o, int argc, char **argv, char *err, size_t errlen)
{
	const struct opt_def *d;
	const char *arg, *eq, *v;
	bool dur_set = false;
	int i, rc = -EINVAL;

	set_defaults(o);
	for (i = 1; i < argc; i++) {
		arg = argv[i];
		if (strncmp(arg, "--", 2) || !arg[2]) {
			fail(err, errlen, "unexpected argument '%s' (see --help)", arg);
			goto out_close;
		}
		arg += 2;
		eq = strchr(arg, '=');
		d = find_opt(arg, eq ? (size_t)(eq - arg) : strlen(arg));
		if (!d) {
			fail(err, errlen, "unknown option '%s' (see --help)", argv[i]);
			goto out_close;
		}
		if (d->arity == ARG_NONE) {
			if (eq) {
				fail(err, errlen, "--%s takes no value", d->name);
				goto out_close;
			}
			if (d->id == OPT_STREAM)
				o->stream = true;
			else if (d->id == OPT_QUIET)
				o->quiet = true;
			else
				o->help = true;
			continue;
		}
		if (d->arity == ARG_LIST) {
			bool any = false;

			if (eq) {
				if ((rc = add_list(o, d->id, eq + 1, err, errlen)) < 0)
					goto out_close;
				any = true;
			}
			while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) {
				if ((rc = add_list(o, d->id, argv[++i], err, errlen)) < 0)
					goto out_close;
				any = true;
			}
			if (!any) {
				fail(err, errlen, "--%s needs at least one value", d->name);
				goto out_close;
			}
			continue;
		}
		if (eq) {
			v = eq + 1;
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			fail(err, errlen, "--%s needs a value", d->name);
			goto out_close;
		}
		if ((rc = set_one(o, d, v, &dur_set, err, errlen)) < 0)
			goto out_close;
	}
	if (o->help)
		return 0;
	if ((rc = validate(o, dur_set, err, errlen)) < 0)
		goto out_close;
	return 0;
out_close:
	bench_opts_close(o);
	return rc < 0 ? rc : -EINVAL;
}

void bench_opts_close(struct bench_opts *o)
{
	size_t i;

	for (i = 0; i < o->nnodes; i++)
		free(o->nodes[i].text);
	free(o->nodes);
	for (i = 0; i < o->nkeys_listed; i++)
		free(o->keys[i]);
	free(o->keys);
	free(o->key_lens);
	free(o->key_prefix);
	free(o->json_path);
	free(o->model);
	memset(o, 0, sizeof(*o));
}
