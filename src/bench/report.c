#include "bench/report.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "bench/request.h"

#define WORST_KEYS 10

char *bench_fmt_count(uint64_t v, char *out)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v), i, j = 0;

	for (i = 0; i < n; i++) {
		if (i && (n - i) % 3 == 0)
			out[j++] = ',';
		out[j++] = tmp[i];
	}
	out[j] = '\0';
	return out;
}

/* "1,418.42": a rate with two decimals and thousands separators; out has 32 bytes. */
static char *fmt_rate(double v, char *out)
{
	uint64_t cents = (uint64_t)(v * 100 + 0.5);

	bench_fmt_count(cents / 100, out);
	snprintf(out + strlen(out), 8, ".%02u", (unsigned)(cents % 100));
	return out;
}

static double pct(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static double secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

static double throughput(const struct bench_stats *s)
{
	return s->elapsed_ns ? (double)s->requests / secs(s->elapsed_ns) : 0.0;
}

/* True when a's success rate is worse than b's (see bench_report__worst_keys). */
static bool key_worse(const struct bench_stats *s, uint64_t a, uint64_t b)
{
	/* Cross-multiplied to compare ok_a/req_a with ok_b/req_b exactly. */
	unsigned __int128 ra = (unsigned __int128)s->key_ok[a] * s->key_requests[b];
	unsigned __int128 rb = (unsigned __int128)s->key_ok[b] * s->key_requests[a];

	if (ra != rb)
		return ra < rb;
	if (s->key_requests[a] != s->key_requests[b])
		return s->key_requests[a] > s->key_requests[b];
	return a < b;
}

size_t bench_report__worst_keys(const struct bench_stats *s, uint64_t *idx, size_t max)
{
	size_t n = 0, j;
	uint64_t k;

	for (k = 0; k < s->nkeys; k++) {
		if (!s->key_requests[k])
			continue;
		if (n == max && (max == 0 || !key_worse(s, k, idx[n - 1])))
			continue;
		j = n < max ? n++ : n - 1;
		while (j > 0 && key_worse(s, k, idx[j - 1])) {
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = k;
	}
	return n;
}

static void text_key_line(FILE *f, const struct bench_opts *o, const struct bench_stats *s,
			  uint64_t k)
{
	char name[256], a[32], b[32];

	bench_key_name(o, k, name, sizeof(name));
	fprintf(f, "%s: %.2f%% success rate (%s/%s)\n", name, pct(s->key_ok[k], s->key_requests[k]),
		bench_fmt_count(s->key_ok[k], a), bench_fmt_count(s->key_requests[k], b));
}

static void text_keys(FILE *f, const struct bench_opts *o, const struct bench_stats *s)
{
	uint64_t worst[WORST_KEYS], k, used = 0, always = 0, never = 0;
	double rate, min = 100.0, max = 0.0, sum = 0.0;
	char a[32], b[32], c[32], d[32];
	size_t n, i;

	if (!s->nkeys)
		return;
	if (s->nkeys <= o->key_report_max) {
		fputs("\nPer key:\n", f);
		for (k = 0; k < s->nkeys; k++)
			text_key_line(f, o, s, k);
		return;
	}
	for (k = 0; k < s->nkeys; k++) {
		if (!s->key_requests[k])
			continue;
		used++;
		rate = pct(s->key_ok[k], s->key_requests[k]);
		sum += rate;
		min = rate < min ? rate : min;
		max = rate > max ? rate : max;
		always += s->key_ok[k] == s->key_requests[k];
		never += s->key_ok[k] == 0;
	}
	fprintf(f, "\nPer key: %s keys, %s got requests\n", bench_fmt_count(s->nkeys, a),
		bench_fmt_count(used, b));
	if (!used)
		return;
	fprintf(f, "Key success rate: min %.2f%%, mean %.2f%%, max %.2f%%; %s keys always "
		"admitted, %s never\n", min, sum / (double)used, max, bench_fmt_count(always, c),
		bench_fmt_count(never, d));
	n = bench_report__worst_keys(s, worst, WORST_KEYS);
	fprintf(f, "%zu keys with the lowest success rate:\n", n);
	for (i = 0; i < n; i++)
		text_key_line(f, o, s, worst[i]);
}

static void text_latency(FILE *f, const char *what, const struct bench_hist *h)
{
	fprintf(f, "%s: p50 %.3fms, p99 %.3fms, max %.3fms (%" PRIu64 " samples)\n", what,
		ms(bench_hist_percentile(h, 50)), ms(bench_hist_percentile(h, 99)),
		ms(h->max_ns), h->count);
}

static void text_nodes(FILE *f, const struct bench_opts *o, const struct bench_stats *s)
{
	char a[32], b[32], c[32], d[32], e[32], g[32], h[32], u[32];
	const struct bench_node_stats *n;
	size_t i;
	int x;

	fputs("\nPer node:\n", f);
	for (i = 0; i < s->nnodes; i++) {
		n = &s->nodes[i];
		fprintf(f, "%s: %s requests, %s ok (%.2f%%), %s rate limited, %s HTTP errors, "
			"%s transport errors, %s retried, %s unavailable (503), "
			"%s connection errors",
			o->nodes[i].text, bench_fmt_count(n->requests, a),
			bench_fmt_count(n->ok, b), pct(n->ok, n->requests),
			bench_fmt_count(n->limited, c), bench_fmt_count(n->http_errors, d),
			bench_fmt_count(n->transport_errors, e), bench_fmt_count(n->retried, g),
			bench_fmt_count(n->unavailable, u),
			bench_fmt_count(n->connection_errors, h));
		for (x = 0; x < BENCH_XERR_N; x++)
			if (n->conn_err_kind[x])
				fprintf(f, " %s=%" PRIu64, bench_xerr_name((enum bench_xerr)x),
					n->conn_err_kind[x]);
		fputc('\n', f);
	}
}

static void text_errors(FILE *f, const struct bench_stats *s)
{
	char a[32];
	int i;

	fprintf(f, "Other HTTP Errors: %s (%.2f%%)\n", bench_fmt_count(s->http_errors, a),
		pct(s->http_errors, s->requests));
	for (i = 0; i < BENCH_STATUS_MAX; i++) {
		if (!s->status[i] || (i >= 200 && i < 300) || i == 429)
			continue;
		if (i == 0)
			fprintf(f, "  HTTP (out of range): %s\n", bench_fmt_count(s->status[i], a));
		else
			fprintf(f, "  HTTP %d: %s\n", i, bench_fmt_count(s->status[i], a));
	}
	fprintf(f, "Transport Errors: %s (%.2f%%)", bench_fmt_count(s->transport_errors, a),
		pct(s->transport_errors, s->requests));
	if (s->transport_errors) {
		const char *sep = " (";

		for (i = 0; i < BENCH_XERR_N; i++) {
			if (!s->xerr[i])
				continue;
			fprintf(f, "%s%s %s", sep, bench_xerr_name((enum bench_xerr)i),
				bench_fmt_count(s->xerr[i], a));
			sep = ", ";
		}
		fputc(')', f);
	}
	fputc('\n', f);
}

void bench_report_text(FILE *f, const struct bench_opts *o, const struct bench_stats *s)
{
	static const char *const limit_labels[] = { "Requests (RPM)", "Input TPM", "Output TPM",
						    "Never fits (Request too large)",
						    "Unclassified 429" };
	char a[32], b[32], c[32];
	const struct bench_hist *h = &s->lat;
	int i;

	fprintf(f, "llmlimit-bench: %zu node%s, %u connections (pipeline %u), %s, %s key%s\n",
		o->nnodes, o->nnodes == 1 ? "" : "s", o->concurrent, o->pipeline,
		o->rate > 0 ? "open loop" : "closed loop", bench_fmt_count(s->nkeys, a),
		s->nkeys == 1 ? "" : "s");
	if (o->max_tokens)
		snprintf(b, sizeof(b), "max_tokens %u", o->max_tokens);
	else
		snprintf(b, sizeof(b), "no max_tokens");
	fprintf(f, "%s %s, prompt ~%u tokens (%zu bytes), %s%s%s\n",
		o->endpoint == BENCH_EP_MODELS ? "GET" : "POST", bench_endpoint_path(o->endpoint),
		o->prompt_tokens, bench_prompt_bytes(o), b, o->stream ? ", stream" : "",
		s->interrupted ? "; INTERRUPTED (stopped early)" : "");
	fputc('\n', f);
	fprintf(f, "Total Requests: %s\n", bench_fmt_count(s->requests, a));
	fprintf(f, "Successful Requests: %s (%.2f%%)\n", bench_fmt_count(s->ok, a),
		pct(s->ok, s->requests));
	fprintf(f, "Failed Requests: %s (%.2f%%)\n", bench_fmt_count(s->requests - s->ok, a),
		pct(s->requests - s->ok, s->requests));
	fprintf(f, "Rate Limited (429): %s (%.2f%%)\n", bench_fmt_count(s->limited_total, a),
		pct(s->limited_total, s->requests));
	for (i = 0; i < BENCH_LIMIT_N; i++)
		if (i != BENCH_LIMIT_OTHER || s->limited[i])
			fprintf(f, "  %s: %s\n", limit_labels[i],
				bench_fmt_count(s->limited[i], a));
	text_errors(f, s);
	fprintf(f, "Average Response Time: %.3fms\n", bench_hist_mean(h) / 1e6);
	fprintf(f, "P50 Response Time: %.3fms\n", ms(bench_hist_percentile(h, 50)));
	fprintf(f, "P95 Response Time: %.3fms\n", ms(bench_hist_percentile(h, 95)));
	fprintf(f, "P99 Response Time: %.3fms\n", ms(bench_hist_percentile(h, 99)));
	fprintf(f, "P999 Response Time: %.3fms\n", ms(bench_hist_percentile(h, 99.9)));
	fprintf(f, "Max Response Time: %.3fms\n", ms(h->max_ns));
	if (o->rate > 0)
		fprintf(f, "Throughput: %s req/s (target %s req/s)\n", fmt_rate(throughput(s), a),
			fmt_rate(o->rate, b));
	else
		fprintf(f, "Throughput: %s req/s (closed loop)\n", fmt_rate(throughput(s), a));
	fprintf(f, "Duration: %.2f s sending, %.2f s until the last response\n", secs(s->send_ns),
		secs(s->elapsed_ns));
	fprintf(f, "Retries: %s\n", bench_fmt_count(s->retried, a));
	fprintf(f, "Unavailable (503, retried or final): %s\n", bench_fmt_count(s->unavailable, a));
	fprintf(f, "Connection Errors: %s\n", bench_fmt_count(s->connection_errors, a));
	if (o->rate > 0) {
		fprintf(f, "Open loop: %s sent, %s dropped (waited > --timeout-ms for a free "
			"connection), %s unsent at stop\n",
			bench_fmt_count(s->issued, a), bench_fmt_count(s->dropped, b),
			bench_fmt_count(s->unsent, c));
		text_latency(f, "Send lag (actual - intended)", &s->lag);
	}
	if (s->abandoned)
		fprintf(f, "Abandoned in flight at the second signal: %s\n",
			bench_fmt_count(s->abandoned, a));
	if (s->lat_ok.count && s->lat_limited.count) {
		text_latency(f, "2xx latency", &s->lat_ok);
		text_latency(f, "429 latency", &s->lat_limited);
	}
	if (o->stream)
		text_latency(f, "Time to first byte", &s->ttfb);
	text_nodes(f, o, s);
	text_keys(f, o, s);
}

static int json_hist(struct buf *b, const char *name, const struct bench_hist *h)
{
	return buf_printf(b, ",\"%s\":{\"count\":%" PRIu64 ",\"avg\":%.4f,\"min\":%.4f,"
			  "\"p50\":%.4f,\"p90\":%.4f,\"p95\":%.4f,\"p99\":%.4f,\"p999\":%.4f,"
			  "\"max\":%.4f}",
			  name, h->count, bench_hist_mean(h) / 1e6, h->count ? ms(h->min_ns) : 0.0,
			  ms(bench_hist_percentile(h, 50)), ms(bench_hist_percentile(h, 90)),
			  ms(bench_hist_percentile(h, 95)), ms(bench_hist_percentile(h, 99)),
			  ms(bench_hist_percentile(h, 99.9)), ms(h->max_ns));
}

static int json_key(struct buf *b, const struct bench_opts *o, const struct bench_stats *s,
		    uint64_t k, bool first)
{
	char name[256];
	size_t n = bench_key_name(o, k, name, sizeof(name));
	int err = 0;

	err |= buf_puts(b, first ? "{\"key\":" : ",{\"key\":");
	err |= buf_put_json_str(b, name, n < sizeof(name) ? n : sizeof(name) - 1);
	err |= buf_printf(b, ",\"requests\":%" PRIu64 ",\"successful\":%" PRIu64
			  ",\"success_rate\":%.4f}", s->key_requests[k], s->key_ok[k],
			  pct(s->key_ok[k], s->key_requests[k]));
	return err;
}

static int json_keys(struct buf *b, const struct bench_opts *o, const struct bench_stats *s)
{
	uint64_t worst[WORST_KEYS], k, used = 0, always = 0, never = 0;
	size_t n, i;
	int err = 0;

	err |= buf_printf(b, ",\"key_count\":%" PRIu64, s->nkeys);
	if (s->nkeys <= o->key_report_max) {
		err |= buf_puts(b, ",\"keys\":[");
		for (k = 0; k < s->nkeys; k++)
			err |= json_key(b, o, s, k, k == 0);
		return err | buf_puts(b, "]");
	}
	for (k = 0; k < s->nkeys; k++) {
		if (!s->key_requests[k])
			continue;
		used++;
		always += s->key_ok[k] == s->key_requests[k];
		never += s->key_ok[k] == 0;
	}
	err |= buf_printf(b, ",\"keys_summary\":{\"used\":%" PRIu64 ",\"always_admitted\":%" PRIu64
			  ",\"never_admitted\":%" PRIu64 ",\"lowest\":[", used, always, never);
	n = bench_report__worst_keys(s, worst, WORST_KEYS);
	for (i = 0; i < n; i++)
		err |= json_key(b, o, s, worst[i], i == 0);
	return err | buf_puts(b, "]}");
}

static int json_nodes(struct buf *b, const struct bench_opts *o, const struct bench_stats *s)
{
	const struct bench_node_stats *n;
	int err = buf_puts(b, ",\"nodes\":[");
	size_t i;
	int x;

	for (i = 0; i < s->nnodes; i++) {
		n = &s->nodes[i];
		err |= buf_puts(b, i ? ",{\"url\":" : "{\"url\":");
		err |= buf_put_json_str(b, o->nodes[i].text, strlen(o->nodes[i].text));
		err |= buf_printf(b, ",\"sent\":%" PRIu64 ",\"requests\":%" PRIu64
				  ",\"successful\":%" PRIu64 ",\"rate_limited\":%" PRIu64
				  ",\"http_errors\":%" PRIu64 ",\"transport_errors\":%" PRIu64
				  ",\"retried\":%" PRIu64 ",\"unavailable\":%" PRIu64
				  ",\"connection_errors\":%" PRIu64
				  ",\"connection_errors_by_kind\":{",
				  n->sent, n->requests, n->ok, n->limited, n->http_errors,
				  n->transport_errors, n->retried, n->unavailable,
				  n->connection_errors);
		for (x = 0; x < BENCH_XERR_N; x++)
			err |= buf_printf(b, "%s\"%s\":%" PRIu64, x ? "," : "",
					  bench_xerr_name((enum bench_xerr)x), n->conn_err_kind[x]);
		err |= buf_puts(b, "}}");
	}
	return err | buf_puts(b, "]");
}

static int json_config(struct buf *b, const struct bench_opts *o)
{
	int err = buf_puts(b, "{\"config\":{\"nodes\":[");
	size_t i;

	for (i = 0; i < o->nnodes; i++) {
		if (i)
			err |= buf_puts(b, ",");
		err |= buf_put_json_str(b, o->nodes[i].text, strlen(o->nodes[i].text));
	}
	err |= buf_printf(b, "],\"concurrent\":%u,\"pipeline\":%u,\"rate\":%.3f,"
			  "\"duration_s\":%.3f,\"max_requests\":%" PRIu64
			  ",\"endpoint\":\"%s\",\"model\":",
			  o->concurrent, o->pipeline, o->rate, o->duration_s, o->max_requests,
			  bench_endpoint_name(o->endpoint));
	err |= buf_put_json_str(b, o->model ? o->model : "", o->model ? strlen(o->model) : 0);
	err |= buf_printf(b, ",\"prompt_tokens\":%u,\"prompt_bytes\":%zu,\"max_tokens\":%u,"
			  "\"stream\":%s,\"timeout_ms\":%u,\"retries\":%u}",
			  o->prompt_tokens, bench_prompt_bytes(o), o->max_tokens,
			  o->stream ? "true" : "false", o->timeout_ms, o->retries);
	return err;
}

int bench_report_json(struct buf *b, const struct bench_opts *o, const struct bench_stats *s)
{
	const char *sep = "";
	int err = json_config(b, o), i;

	err |= buf_printf(b, ",\"total_requests\":%" PRIu64 ",\"successful_requests\":%" PRIu64
			  ",\"failed_requests\":%" PRIu64 ",\"success_rate\":%.4f"
			  ",\"rate_limited\":{\"total\":%" PRIu64,
			  s->requests, s->ok, s->requests - s->ok, pct(s->ok, s->requests),
			  s->limited_total);
	for (i = 0; i < BENCH_LIMIT_N; i++)
		err |= buf_printf(b, ",\"%s\":%" PRIu64, bench_limit_name((enum bench_limit)i),
				  s->limited[i]);
	err |= buf_printf(b, "},\"http_errors\":%" PRIu64 ",\"status_counts\":{", s->http_errors);
	for (i = 0; i < BENCH_STATUS_MAX; i++) {
		if (!s->status[i])
			continue;
		err |= buf_printf(b, "%s\"%d\":%" PRIu64, sep, i, s->status[i]);
		sep = ",";
	}
	err |= buf_printf(b, "},\"transport_errors\":{\"total\":%" PRIu64, s->transport_errors);
	for (i = 0; i < BENCH_XERR_N; i++)
		err |= buf_printf(b, ",\"%s\":%" PRIu64, bench_xerr_name((enum bench_xerr)i),
				  s->xerr[i]);
	err |= buf_printf(b, "},\"retried\":%" PRIu64 ",\"unavailable\":%" PRIu64
			  ",\"connection_errors\":%" PRIu64
			  ",\"issued\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"unsent\":%" PRIu64
			  ",\"abandoned\":%" PRIu64 ",\"interrupted\":%s"
			  ",\"throughput_rps\":%.3f,\"target_rps\":%.3f"
			  ",\"send_duration_s\":%.6f,\"elapsed_s\":%.6f",
			  s->retried, s->unavailable, s->connection_errors, s->issued, s->dropped,
			  s->unsent, s->abandoned, s->interrupted ? "true" : "false", throughput(s),
			  o->rate, secs(s->send_ns), secs(s->elapsed_ns));
	err |= json_hist(b, "latency_ms", &s->lat);
	err |= json_hist(b, "latency_2xx_ms", &s->lat_ok);
	err |= json_hist(b, "latency_429_ms", &s->lat_limited);
	if (o->stream)
		err |= json_hist(b, "ttfb_ms", &s->ttfb);
	if (o->rate > 0)
		err |= json_hist(b, "send_lag_ms", &s->lag);
	err |= json_nodes(b, o, s);
	err |= json_keys(b, o, s);
	err |= buf_puts(b, "}\n");
	return err ? -ENOMEM : 0;
}
