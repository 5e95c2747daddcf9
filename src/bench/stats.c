#include "bench/stats.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int bench_stats_new(struct bench_stats **out, size_t nnodes, uint64_t nkeys)
{
	struct bench_stats *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->nnodes = nnodes;
	s->nodes = calloc(nnodes ? nnodes : 1, sizeof(*s->nodes));
	if (!s->nodes)
		goto out_free;
	s->nkeys = nkeys;
	if (nkeys) {
		if (nkeys > SIZE_MAX / sizeof(uint64_t))
			goto out_free;
		s->key_requests = calloc((size_t)nkeys, sizeof(uint64_t));
		s->key_ok = calloc((size_t)nkeys, sizeof(uint64_t));
		if (!s->key_requests || !s->key_ok)
			goto out_free;
	}
	bench_hist_init(&s->lat);
	bench_hist_init(&s->lat_ok);
	bench_hist_init(&s->lat_limited);
	bench_hist_init(&s->ttfb);
	bench_hist_init(&s->lag);
	*out = s;
	return 0;
out_free:
	bench_stats_free(s);
	return -ENOMEM;
}

void bench_stats_free(struct bench_stats *s)
{
	if (!s)
		return;
	free(s->nodes);
	free(s->key_requests);
	free(s->key_ok);
	free(s);
}

void bench_stats_response(struct bench_stats *s, size_t node, uint64_t key, int status,
			  const char *body, size_t body_len, uint64_t latency_ns)
{
	struct bench_node_stats *n = &s->nodes[node];
	bool key_ok = key < s->nkeys;

	s->requests++;
	n->requests++;
	s->status[status > 0 && status < BENCH_STATUS_MAX ? status : 0]++;
	if (key_ok)
		s->key_requests[key]++;
	bench_hist_record(&s->lat, latency_ns);
	if (status >= 200 && status < 300) {
		s->ok++;
		n->ok++;
		if (key_ok)
			s->key_ok[key]++;
		bench_hist_record(&s->lat_ok, latency_ns);
	} else if (status == 429) {
		s->limited[bench_classify_429(body, body ? body_len : 0)]++;
		s->limited_total++;
		n->limited++;
		bench_hist_record(&s->lat_limited, latency_ns);
	} else {
		s->http_errors++;
		n->http_errors++;
	}
}

void bench_stats_failure(struct bench_stats *s, size_t node, uint64_t key, enum bench_xerr kind)
{
	s->requests++;
	s->nodes[node].requests++;
	s->nodes[node].transport_errors++;
	s->xerr[kind]++;
	s->transport_errors++;
	if (key < s->nkeys)
		s->key_requests[key]++;
}

void bench_stats_conn_error(struct bench_stats *s, size_t node, enum bench_xerr kind)
{
	s->connection_errors++;
	s->nodes[node].connection_errors++;
	s->nodes[node].conn_err_kind[kind]++;
}

/* Case-insensitive search for an ASCII needle; the bodies are small, so a plain scan is fine. */
static const char *ci_find(const char *h, size_t n, const char *needle)
{
	size_t m = strlen(needle), i, j;

	if (m > n)
		return NULL;
	for (i = 0; i + m <= n; i++) {
		for (j = 0; j < m; j++) {
			char a = h[i + j], b = needle[j];

			if (a >= 'A' && a <= 'Z')
				a = (char)(a - 'A' + 'a');
			if (a != b)
				break;
		}
		if (j == m)
			return h + i;
	}
	return NULL;
}

static bool value_is(const char *p, const char *end, const char *word)
{
	size_t n = strlen(word);

	return (size_t)(end - p) > n && !memcmp(p, word, n) && p[n] == '"';
}

enum bench_limit bench_classify_429(const char *body, size_t len)
{
	const char *p, *end = body + len;

	if (!body || !len)
		return BENCH_LIMIT_OTHER;
	if (ci_find(body, len, "request too large"))
		return BENCH_LIMIT_TOO_LARGE;
	if (ci_find(body, len, "input tokens per min"))
		return BENCH_LIMIT_INPUT_TPM;
	if (ci_find(body, len, "output tokens per min"))
		return BENCH_LIMIT_OUTPUT_TPM;
	if (ci_find(body, len, "requests per min"))
		return BENCH_LIMIT_RPM;
	p = ci_find(body, len, "\"type\"");
	if (!p)
		return BENCH_LIMIT_OTHER;
	for (p += 6; p < end && (*p == ' ' || *p == ':' || *p == '\t'); p++)
		;
	if (p >= end || *p++ != '"')
		return BENCH_LIMIT_OTHER;
	if (value_is(p, end, "requests"))
		return BENCH_LIMIT_RPM;
	if (value_is(p, end, "input_tokens"))
		return BENCH_LIMIT_INPUT_TPM;
	if (value_is(p, end, "output_tokens"))
		return BENCH_LIMIT_OUTPUT_TPM;
	return BENCH_LIMIT_OTHER;
}

const char *bench_limit_name(enum bench_limit l)
{
	static const char *const names[] = { "requests", "input_tokens", "output_tokens",
					     "never_fits", "other" };

	return (unsigned)l < BENCH_LIMIT_N ? names[l] : "other";
}

const char *bench_xerr_name(enum bench_xerr x)
{
	static const char *const names[] = { "timeout", "refused", "reset", "closed", "protocol",
					     "other", "unavailable" };

	return (unsigned)x < BENCH_XERR_N ? names[x] : "other";
}
