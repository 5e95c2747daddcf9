/* check_bench.c — the pure parts of llmlimit-bench: histogram, 429 classification, options,
 * request bytes, stats accounting and the report (text and JSON). */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/hist.h"
#include "bench/options.h"
#include "bench/report.h"
#include "bench/request.h"
#include "bench/stats.h"

Suite *bench_suite(void);

/* ---- histogram ---- */

static struct bench_hist *h;

static void hist_setup(void)
{
	h = malloc(sizeof(*h));
	ck_assert_ptr_nonnull(h);
	bench_hist_init(h);
}

static void hist_teardown(void)
{
	free(h);
}

START_TEST(test_hist_buckets_cover_values)
{
	uint64_t v, lo, width, prev_end = 0;
	uint32_t i;

	/* Buckets tile the range without gaps or overlaps. */
	for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
		bench_hist__range(i, &lo, &width);
		ck_assert_uint_eq(lo, prev_end);
		ck_assert_uint_eq(bench_hist__index(lo), i);
		ck_assert_uint_eq(bench_hist__index(lo + width - 1), i);
		/* Relative width at most 1/128 once past the exact region. */
		if (lo >= 2 * BENCH_HIST_SUB)
			ck_assert_uint_le(width * BENCH_HIST_SUB, lo);
		prev_end = lo + width;
	}
	ck_assert_uint_eq(prev_end, BENCH_HIST_MAX_NS + 1);
	/* Every value lands in the bucket that contains it. */
	for (v = 1; v < (UINT64_C(1) << 40); v = v * 3 + 7) {
		i = bench_hist__index(v);
		bench_hist__range(i, &lo, &width);
		if (v <= BENCH_HIST_MAX_NS)
			ck_assert(lo <= v && v < lo + width);
		else
			ck_assert_uint_eq(i, BENCH_HIST_BUCKETS - 1);
	}
}
END_TEST

START_TEST(test_hist_percentiles_within_half_percent)
{
	static const double qs[] = { 1, 10, 50, 90, 95, 99, 99.9 };
	uint64_t i, got, want;
	size_t k;

	/* 1 µs .. 100 ms in 1 µs steps: percentile q is exactly q% of 100 ms. */
	for (i = 1; i <= 100000; i++)
		bench_hist_record(h, i * 1000);
	ck_assert_uint_eq(h->count, 100000);
	ck_assert_uint_eq(h->min_ns, 1000);
	ck_assert_uint_eq(h->max_ns, 100000000);
	for (k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
		want = (uint64_t)(qs[k] * 1000.0) * 1000;
		got = bench_hist_percentile(h, qs[k]);
		ck_assert_msg(got >= want - want / 200 && got <= want + want / 200,
			      "p%g: got %llu want %llu", qs[k], (unsigned long long)got,
			      (unsigned long long)want);
	}
	ck_assert_uint_eq(bench_hist_percentile(h, 100), 100000000);
	ck_assert(bench_hist_mean(h) > 50000499.0 && bench_hist_mean(h) < 50000501.0);
}
END_TEST

START_TEST(test_hist_small_exact_and_clamped)
{
	ck_assert_uint_eq(bench_hist_percentile(h, 50), 0);
	ck_assert(bench_hist_mean(h) == 0.0);
	bench_hist_record(h, 37);
	bench_hist_record(h, 37);
	bench_hist_record(h, 200);
	/* Values below 256 ns have their own buckets: exact. */
	ck_assert_uint_eq(bench_hist_percentile(h, 50), 37);
	ck_assert_uint_eq(bench_hist_percentile(h, 66.6), 37);
	ck_assert_uint_eq(bench_hist_percentile(h, 67), 200);
	/* One sample in a wide bucket: the answer is clamped to the exact min/max. */
	bench_hist_init(h);
	bench_hist_record(h, 123456789);
	ck_assert_uint_eq(bench_hist_percentile(h, 50), 123456789);
	ck_assert_uint_eq(bench_hist_percentile(h, 99.9), 123456789);
}
END_TEST

START_TEST(test_hist_saturates_and_merges)
{
	struct bench_hist *o = malloc(sizeof(*o));

	ck_assert_ptr_nonnull(o);
	bench_hist_init(o);
	bench_hist_record(h, UINT64_C(100) * 1000000000); /* 100 s: past the range */
	ck_assert_uint_eq(h->saturated, 1);
	ck_assert_uint_eq(h->max_ns, UINT64_C(100) * 1000000000);
	ck_assert_uint_eq(bench_hist_percentile(h, 100), UINT64_C(100) * 1000000000);
	bench_hist_record(o, 5000);
	bench_hist_record(o, 7000);
	bench_hist_merge(o, h);
	ck_assert_uint_eq(o->count, 3);
	ck_assert_uint_eq(o->min_ns, 5000);
	ck_assert_uint_eq(o->max_ns, UINT64_C(100) * 1000000000);
	ck_assert_uint_eq(o->saturated, 1);
	/* 7000 ns sits in a 32 ns wide bucket [6976, 7008): the midpoint is reported. */
	ck_assert_uint_eq(bench_hist_percentile(o, 50), 6976 + 15);
	free(o);
}
END_TEST

/* ---- 429 classification ---- */

#define CLASSIFY(s) bench_classify_429((s), strlen(s))

START_TEST(test_classify_429)
{
	ck_assert_int_eq(CLASSIFY("{\"error\":{\"message\":\"Rate limit reached for gpt-4o-mini on "
				  "requests per min (RPM): Limit 3, Used 3, Requested 1.\","
				  "\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}"),
			 BENCH_LIMIT_RPM);
	ck_assert_int_eq(CLASSIFY("{\"error\":{\"message\":\"Rate limit reached on input tokens "
				  "per min (TPM): Limit 10000\",\"type\":\"tokens\"}}"),
			 BENCH_LIMIT_INPUT_TPM);
	ck_assert_int_eq(CLASSIFY("Rate limit reached on OUTPUT TOKENS PER MIN"),
			 BENCH_LIMIT_OUTPUT_TPM);
	/* "Request too large" names a tokens limit too, and wins: it can never fit. */
	ck_assert_int_eq(CLASSIFY("{\"error\":{\"message\":\"Request too large for gpt-4o-mini on "
				  "input tokens per min (TPM): Limit 100, Requested 5000.\"}}"),
			 BENCH_LIMIT_TOO_LARGE);
	/* No phrase: the error type decides. */
	ck_assert_int_eq(CLASSIFY("{\"error\":{\"message\":\"slow down\","
				  "\"type\": \"input_tokens\"}}"),
			 BENCH_LIMIT_INPUT_TPM);
	ck_assert_int_eq(CLASSIFY("{\"error\":{\"type\":\"output_tokens\"}}"),
			 BENCH_LIMIT_OUTPUT_TPM);
	ck_assert_int_eq(CLASSIFY("{\"error\":{\"type\":\"requests\"}}"), BENCH_LIMIT_RPM);
	ck_assert_int_eq(CLASSIFY("{\"error\":{\"type\":\"requestsX\"}}"), BENCH_LIMIT_OTHER);
	ck_assert_int_eq(CLASSIFY("{\"error\":{\"type\":\"tokens\"}}"), BENCH_LIMIT_OTHER);
	ck_assert_int_eq(CLASSIFY("{\"error\":{\"type\""), BENCH_LIMIT_OTHER);
	ck_assert_int_eq(CLASSIFY("Too Many Requests"), BENCH_LIMIT_OTHER);
	ck_assert_int_eq(bench_classify_429(NULL, 0), BENCH_LIMIT_OTHER);
	/* Only len bytes count: the phrase past the end is not seen. */
	ck_assert_int_eq(bench_classify_429("requests per min", 10), BENCH_LIMIT_OTHER);
}
END_TEST

/* ---- options ---- */

#define ARGV(...) ((char *[]){ "llmlimit-bench", __VA_ARGS__, NULL })
#define ARGC(...) ((int)(sizeof((char *[]){ "llmlimit-bench", __VA_ARGS__ }) / sizeof(char *)))
#define PARSE(o, ...) bench_opts_parse((o), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), err, sizeof(err))

START_TEST(test_opts_full)
{
	struct bench_opts o;
	char err[256];

	ck_assert_int_eq(PARSE(&o, "--nodes", "http://127.0.0.1:8000", "http://h2:8001/",
			       "--api-keys", "k1,k2", "k3", "--concurrent=9", "--duration", "2.5",
			       "--rate", "1500.5", "--requests", "100", "--prompt-tokens", "107",
			       "--max-tokens", "50", "--endpoint", "completions", "--stream",
			       "--json", "/tmp/x.json", "--timeout-ms", "250", "--pipeline", "4",
			       "--retries", "0", "--quiet", "--model", "m1"),
			 0);
	ck_assert_uint_eq(o.nnodes, 2);
	ck_assert_str_eq(o.nodes[0].host, "127.0.0.1");
	ck_assert_uint_eq(o.nodes[0].port, 8000);
	ck_assert_str_eq(o.nodes[0].hosthdr, "127.0.0.1:8000");
	ck_assert_str_eq(o.nodes[1].host, "h2");
	ck_assert_str_eq(o.nodes[1].text, "http://h2:8001/");
	ck_assert_uint_eq(o.nkeys_listed, 3);
	ck_assert_str_eq(o.keys[0], "k1");
	ck_assert_str_eq(o.keys[2], "k3");
	ck_assert_uint_eq(o.key_lens[1], 2);
	ck_assert_uint_eq(bench_opts_nkeys(&o), 3);
	ck_assert_uint_eq(o.concurrent, 9);
	ck_assert(o.duration_s == 2.5);
	ck_assert(o.rate == 1500.5);
	ck_assert_uint_eq(o.max_requests, 100);
	ck_assert_uint_eq(o.prompt_tokens, 107);
	ck_assert_uint_eq(o.max_tokens, 50);
	ck_assert_int_eq(o.endpoint, BENCH_EP_COMPLETIONS);
	ck_assert(o.stream && o.quiet && !o.help);
	ck_assert_str_eq(o.json_path, "/tmp/x.json");
	ck_assert_uint_eq(o.timeout_ms, 250);
	ck_assert_uint_eq(o.pipeline, 4);
	ck_assert_uint_eq(o.retries, 0);
	ck_assert_str_eq(o.model, "m1");
	bench_opts_close(&o);
}
END_TEST

START_TEST(test_opts_defaults_and_forms)
{
	struct bench_opts o;
	char err[256];

	ck_assert_int_eq(PARSE(&o, "--nodes=http://[::1]:9000,localhost"), 0);
	ck_assert_uint_eq(o.nnodes, 2);
	ck_assert_str_eq(o.nodes[0].host, "::1");
	ck_assert_str_eq(o.nodes[0].hosthdr, "[::1]:9000");
	ck_assert_str_eq(o.nodes[1].host, "localhost");
	ck_assert_uint_eq(o.nodes[1].port, 80);
	ck_assert_str_eq(o.nodes[1].hosthdr, "localhost:80");
	ck_assert_uint_eq(o.concurrent, 64);
	ck_assert_uint_eq(o.pipeline, 1);
	ck_assert(o.duration_s == 10);
	ck_assert(o.rate == 0);
	ck_assert_uint_eq(o.timeout_ms, 10000);
	ck_assert_uint_eq(o.retries, 3);
	ck_assert_int_eq(o.endpoint, BENCH_EP_CHAT);
	ck_assert_str_eq(o.model, "gpt-4o-mini");
	ck_assert_uint_eq(bench_opts_nkeys(&o), 0);
	ck_assert_ptr_null(o.json_path);
	bench_opts_close(&o);

	/* --requests alone: no time limit. Generated keys get the default prefix. */
	ck_assert_int_eq(PARSE(&o, "--nodes", "127.0.0.1:1", "--requests", "5", "--key-count",
			       "1000000", "--endpoint", "embeddings"),
			 0);
	ck_assert(o.duration_s == 0);
	ck_assert_uint_eq(bench_opts_nkeys(&o), 1000000);
	ck_assert_str_eq(o.key_prefix, "bench_key_");
	ck_assert_str_eq(o.model, "text-embedding-3-small");
	bench_opts_close(&o);

	/* --help skips validation. */
	ck_assert_int_eq(PARSE(&o, "--help"), 0);
	ck_assert(o.help);
	bench_opts_close(&o);
}
END_TEST

START_TEST(test_opts_errors)
{
	struct bench_opts o;
	char err[256];

#define BAD(needle, ...)                                                               \
	do {                                                                           \
		err[0] = '\0';                                                         \
		ck_assert_int_eq(PARSE(&o, __VA_ARGS__), -EINVAL);                     \
		ck_assert_msg(strstr(err, needle), "error '%s' lacks '%s'", err, needle); \
		ck_assert_ptr_null(o.nodes);                                           \
	} while (0)

	BAD("--nodes", "--concurrent", "4");
	BAD("only http://", "--nodes", "https://a:1");
	BAD("no path", "--nodes", "http://a:1/v1");
	BAD("HOST:PORT", "--nodes", "http://a:0");
	BAD("HOST:PORT", "--nodes", "http://a:99999");
	BAD("HOST:PORT", "--nodes", "http://::1:80");
	BAD("at least one value", "--nodes", "--concurrent", "2");
	BAD("mutually exclusive", "--nodes", "a:1", "--api-keys", "k", "--key-count", "3");
	BAD("--key-prefix needs", "--nodes", "a:1", "--key-prefix", "p");
	BAD("at least the number", "--nodes", "a:1", "b:2", "c:3", "--concurrent", "2");
	BAD("--stream applies", "--nodes", "a:1", "--stream", "--endpoint", "embeddings");
	BAD("--concurrent", "--nodes", "a:1", "--concurrent", "0");
	BAD("--concurrent", "--nodes", "a:1", "--concurrent", "-3");
	BAD("--duration", "--nodes", "a:1", "--duration", "0");
	BAD("--duration", "--nodes", "a:1", "--duration", "1s");
	BAD("--duration", "--nodes", "a:1", "--duration", "nan");
	BAD("--rate", "--nodes", "a:1", "--rate", "-1");
	BAD("--pipeline", "--nodes", "a:1", "--pipeline", "0");
	BAD("--endpoint", "--nodes", "a:1", "--endpoint", "chats");
	BAD("needs a value", "--nodes", "a:1", "--rate");
	BAD("takes no value", "--nodes", "a:1", "--stream=yes");
	BAD("unknown option", "--nodes", "a:1", "--bogus");
	BAD("unexpected argument", "a:1");
	BAD("printable ASCII", "--nodes", "a:1", "--api-keys", "bad\r\nkey");
#undef BAD
}
END_TEST

/* ---- request bytes ---- */

START_TEST(test_request_chat_bytes)
{
	struct bench_opts o;
	struct bench_tmpl t;
	struct buf out;
	char err[256];
	const char *body, *content, *end;

	ck_assert_int_eq(PARSE(&o, "--nodes", "http://n1:8080", "--api-keys", "sk-a", "sk-bb",
			       "--prompt-tokens", "107", "--max-tokens", "9"),
			 0);
	ck_assert_uint_eq(bench_prompt_bytes(&o), 400);
	ck_assert_int_eq(bench_tmpl_build(&t, &o, &o.nodes[0]), 0);
	buf_init(&out);
	ck_assert_int_eq(bench_tmpl_append(&t, 1, &out), 0);
	ck_assert_msg(!strncmp(out.data, "POST /v1/chat/completions HTTP/1.1\r\nHost: n1:8080\r\n"
					 "Authorization: Bearer sk-bb\r\nContent-Type: "
					 "application/json\r\nContent-Length: ",
			       strlen("POST /v1/chat/completions HTTP/1.1\r\nHost: n1:8080\r\n"
				      "Authorization: Bearer sk-bb\r\nContent-Type: "
				      "application/json\r\nContent-Length: ")),
		      "%s", out.data);
	body = strstr(out.data, "\r\n\r\n") + 4;
	ck_assert_int_eq(atoi(strstr(out.data, "Content-Length: ") + 16), (int)strlen(body));
	/* The one message's content has (107 - 7) * 4 bytes: the server estimates 107. */
	content = strstr(body, "\"content\":\"") + 11;
	end = strchr(content, '"');
	ck_assert_int_eq((int)(end - content), 400);
	ck_assert_ptr_nonnull(strstr(body, ",\"max_tokens\":9}"));
	ck_assert_ptr_null(strstr(body, "stream"));
	/* A second request appends the same bytes but for the key. */
	ck_assert_int_eq(bench_tmpl_append(&t, 0, &out), 0);
	ck_assert_ptr_nonnull(strstr(out.data + 10, "POST /v1/chat/completions HTTP/1.1\r\nHost: "
						   "n1:8080\r\nAuthorization: Bearer sk-a\r\n"));
	buf_close(&out);
	bench_tmpl_close(&t);
	bench_opts_close(&o);
}
END_TEST

START_TEST(test_request_generated_keys_and_get)
{
	struct bench_opts o;
	struct bench_tmpl t;
	struct buf out;
	char err[256], name[8];

	ck_assert_int_eq(PARSE(&o, "--nodes", "h:1", "--key-count", "1000000", "--key-prefix",
			       "user-", "--endpoint", "models", "--prompt-tokens", "3"),
			 0);
	ck_assert_uint_eq(bench_key_name(&o, 999999, name, sizeof(name)), 11);
	ck_assert_str_eq(name, "user-99"); /* truncated to the buffer */
	ck_assert_int_eq(bench_tmpl_build(&t, &o, &o.nodes[0]), 0);
	buf_init(&out);
	ck_assert_int_eq(bench_tmpl_append(&t, 42, &out), 0);
	ck_assert_str_eq(out.data, "GET /v1/models HTTP/1.1\r\nHost: h:1\r\n"
				   "Authorization: Bearer user-42\r\n\r\n");
	buf_close(&out);
	bench_tmpl_close(&t);
	bench_opts_close(&o);

	/* Without keys there is no Authorization header; short chat prompts are empty. */
	ck_assert_int_eq(PARSE(&o, "--nodes", "h:1", "--prompt-tokens", "5", "--stream"), 0);
	ck_assert_uint_eq(bench_prompt_bytes(&o), 0);
	ck_assert_uint_eq(bench_key_name(&o, 0, name, sizeof(name)), 0);
	ck_assert_int_eq(bench_tmpl_build(&t, &o, &o.nodes[0]), 0);
	buf_init(&out);
	ck_assert_int_eq(bench_tmpl_append(&t, 0, &out), 0);
	ck_assert_ptr_null(strstr(out.data, "Authorization"));
	ck_assert_ptr_nonnull(strstr(out.data, "\"content\":\"\"}],\"stream\":true}"));
	buf_close(&out);
	bench_tmpl_close(&t);
	bench_opts_close(&o);
}
END_TEST

/* ---- stats and report ---- */

static const char body_rpm[] = "{\"error\":{\"message\":\"... on requests per min (RPM)\"}}";
static const char body_in[] = "{\"error\":{\"message\":\"... on input tokens per min\"}}";

static struct bench_stats *sample_stats(const struct bench_opts *o)
{
	struct bench_stats *s;
	int i;

	ck_assert_int_eq(bench_stats_new(&s, o->nnodes, bench_opts_nkeys(o)), 0);
	for (i = 0; i < 24; i++)
		bench_stats_response(s, 0, 0, 200, NULL, 0, 1000000);
	for (i = 0; i < 11874; i++)
		bench_stats_response(s, 1, 0, 429, body_in, sizeof(body_in) - 1, 2000000);
	for (i = 0; i < 51; i++)
		bench_stats_response(s, 1, 1, 201, NULL, 0, 3000000);
	bench_stats_response(s, 1, 1, 429, body_rpm, sizeof(body_rpm) - 1, 500000);
	bench_stats_response(s, 0, 1, 503, NULL, 0, 700000);
	bench_stats_failure(s, 0, 1, BENCH_XERR_TIMEOUT);
	bench_stats_conn_error(s, 0, BENCH_XERR_TIMEOUT);
	bench_stats_conn_error(s, 1, BENCH_XERR_REFUSED);
	s->retried = 2;
	/* The engine counts these: two 503s from node 0 retried, the final one above. */
	s->nodes[0].retried = 2;
	s->nodes[0].unavailable = 3;
	s->unavailable = 3;
	s->issued = s->requests;
	s->send_ns = 30000000000ull;
	s->elapsed_ns = 30000000000ull;
	return s;
}

START_TEST(test_stats_accounting)
{
	struct bench_opts o;
	struct bench_stats *s;
	char err[256];

	ck_assert_int_eq(PARSE(&o, "--nodes", "a:1", "b:2", "--api-keys", "k1", "k2"), 0);
	s = sample_stats(&o);
	ck_assert_uint_eq(s->requests, 24 + 11874 + 51 + 1 + 1 + 1);
	ck_assert_uint_eq(s->ok, 75);
	ck_assert_uint_eq(s->limited_total, 11875);
	ck_assert_uint_eq(s->limited[BENCH_LIMIT_INPUT_TPM], 11874);
	ck_assert_uint_eq(s->limited[BENCH_LIMIT_RPM], 1);
	ck_assert_uint_eq(s->http_errors, 1);
	ck_assert_uint_eq(s->status[503], 1);
	ck_assert_uint_eq(s->transport_errors, 1);
	ck_assert_uint_eq(s->requests, s->ok + s->limited_total + s->http_errors +
					       s->transport_errors);
	ck_assert_uint_eq(s->key_requests[0], 11898);
	ck_assert_uint_eq(s->key_ok[0], 24);
	ck_assert_uint_eq(s->key_requests[1], 54);
	ck_assert_uint_eq(s->nodes[0].requests, 26);
	ck_assert_uint_eq(s->nodes[1].limited, 11875);
	ck_assert_uint_eq(s->nodes[1].conn_err_kind[BENCH_XERR_REFUSED], 1);
	ck_assert_uint_eq(s->lat.count, s->requests - 1); /* the failure has no latency */
	ck_assert_uint_eq(s->lat_ok.count, 75);
	ck_assert_uint_eq(s->lat_limited.count, 11875);
	bench_stats_free(s);
	bench_opts_close(&o);
}
END_TEST

START_TEST(test_report_text)
{
	struct bench_opts o;
	struct bench_stats *s;
	char err[256], *text = NULL;
	size_t len = 0;
	FILE *f;

	ck_assert_int_eq(PARSE(&o, "--nodes", "http://a:1", "http://b:2", "--api-keys",
			       "test_key_1", "test_key_2", "--rate", "2000"),
			 0);
	s = sample_stats(&o);
	f = open_memstream(&text, &len);
	ck_assert_ptr_nonnull(f);
	bench_report_text(f, &o, s);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(text, "\nTotal Requests: 11,952\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nSuccessful Requests: 75 (0.63%)\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nRate Limited (429): 11,875 (99.36%)\n"));
	ck_assert_ptr_nonnull(strstr(text, "\n  Requests (RPM): 1\n"));
	ck_assert_ptr_nonnull(strstr(text, "\n  Input TPM: 11,874\n"));
	ck_assert_ptr_nonnull(strstr(text, "\n  HTTP 503: 1\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nTransport Errors: 1 (0.01%) (timeout 1)\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nP50 Response Time: 2.0"));
	ck_assert_ptr_nonnull(strstr(text, "\nMax Response Time: 3.000ms\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nThroughput: 398.40 req/s (target 2,000.00 req/s)\n"));
	ck_assert_ptr_nonnull(strstr(text, "\ntest_key_1: 0.20% success rate (24/11,898)\n"));
	ck_assert_ptr_nonnull(strstr(text, "\ntest_key_2: 94.44% success rate (51/54)\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nhttp://b:2: 11,926 requests, 51 ok"));
	ck_assert_ptr_nonnull(strstr(text, "1 connection errors refused=1\n"));
	ck_assert_ptr_nonnull(strstr(text, ", 2 retried, 3 unavailable (503), 1 connection errors"
					   " timeout=1\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nUnavailable (503, retried or final): 3\n"));
	free(text);
	bench_stats_free(s);
	bench_opts_close(&o);
}
END_TEST

START_TEST(test_report_json)
{
	struct bench_opts o;
	struct bench_stats *s;
	json_error_t jerr;
	struct buf b;
	json_t *root, *keys, *node;
	char err[256];

	ck_assert_int_eq(PARSE(&o, "--nodes", "http://a:1", "http://b:2", "--api-keys",
			       "test_key_1", "te\"st", "--stream"),
			 0);
	s = sample_stats(&o);
	buf_init(&b);
	ck_assert_int_eq(bench_report_json(&b, &o, s), 0);
	root = json_loadb(b.data, b.len, 0, &jerr);
	ck_assert_msg(root != NULL, "invalid JSON: %s", jerr.text);
	ck_assert_int_eq(json_integer_value(json_object_get(root, "total_requests")), 11952);
	ck_assert_int_eq(json_integer_value(json_object_get(root, "successful_requests")), 75);
	ck_assert_int_eq(json_integer_value(json_object_get(
				 json_object_get(root, "rate_limited"), "input_tokens")),
			 11874);
	ck_assert_int_eq(json_integer_value(json_object_get(
				 json_object_get(root, "status_counts"), "503")),
			 1);
	ck_assert_int_eq(json_integer_value(json_object_get(
				 json_object_get(root, "transport_errors"), "timeout")),
			 1);
	ck_assert(json_real_value(json_object_get(json_object_get(root, "latency_ms"), "max")) ==
		  3.0);
	ck_assert_ptr_nonnull(json_object_get(root, "ttfb_ms"));
	ck_assert_ptr_null(json_object_get(root, "send_lag_ms")); /* closed loop */
	keys = json_object_get(root, "keys");
	ck_assert_int_eq(json_array_size(keys), 2);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(keys, 1), "key")),
			 "te\"st");
	ck_assert_int_eq(json_array_size(json_object_get(root, "nodes")), 2);
	/* Added fields; the kinds keep their order, "unavailable" last. */
	ck_assert_int_eq(json_integer_value(json_object_get(root, "unavailable")), 3);
	node = json_array_get(json_object_get(root, "nodes"), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(node, "unavailable")), 3);
	ck_assert_int_eq(json_integer_value(json_object_get(node, "retried")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(node, "connection_errors")), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(
				 node, "connection_errors_by_kind"), "unavailable")),
			 0);
	ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(
				 json_object_get(root, "nodes"), 1), "unavailable")),
			 0);
	ck_assert_ptr_nonnull(strstr(b.data, ",\"protocol\":0,\"other\":0,\"unavailable\":0}"));
	json_decref(root);
	buf_close(&b);
	bench_stats_free(s);
	bench_opts_close(&o);
}
END_TEST

START_TEST(test_report_many_keys_summary)
{
	struct bench_opts o;
	struct bench_stats *s;
	uint64_t worst[3];
	char err[256], *text = NULL;
	size_t len = 0, lines = 0;
	const char *p;
	FILE *f;
	uint64_t k;

	ck_assert_int_eq(PARSE(&o, "--nodes", "a:1", "--key-count", "1000", "--key-report-max",
			       "10"),
			 0);
	ck_assert_int_eq(bench_stats_new(&s, 1, 1000), 0);
	/* Key k gets 10 requests of which k % 11 succeed (capped at 10); key 500 none at all. */
	for (k = 0; k < 1000; k++) {
		uint64_t i, ok = k % 11 > 10 ? 10 : k % 11;

		if (k == 500)
			continue;
		for (i = 0; i < 10; i++)
			bench_stats_response(s, 0, k, i < ok ? 200 : 429, NULL, 0, 1000);
	}
	/* Worst first: 0 successes; ties broken by more requests, then the lower index. */
	bench_stats_response(s, 0, 11, 429, NULL, 0, 1000);
	ck_assert_uint_eq(bench_report__worst_keys(s, worst, 3), 3);
	ck_assert_uint_eq(worst[0], 11);
	ck_assert_uint_eq(worst[1], 0);
	ck_assert_uint_eq(worst[2], 22);
	f = open_memstream(&text, &len);
	ck_assert_ptr_nonnull(f);
	bench_report_text(f, &o, s);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(text, "\nPer key: 1,000 keys, 999 got requests\n"));
	ck_assert_ptr_nonnull(strstr(text, "keys always admitted, 91 never\n"));
	ck_assert_ptr_nonnull(strstr(text, "\n10 keys with the lowest success rate:\n"
					   "bench_key_11: 0.00% success rate (0/11)\n"
					   "bench_key_0: 0.00% success rate (0/10)\n"));
	for (p = text; (p = strstr(p, "success rate (")); p++)
		lines++;
	ck_assert_uint_eq(lines, 10);
	free(text);
	bench_stats_free(s);
	bench_opts_close(&o);
}
END_TEST

START_TEST(test_fmt_count)
{
	char out[32];

	ck_assert_str_eq(bench_fmt_count(0, out), "0");
	ck_assert_str_eq(bench_fmt_count(999, out), "999");
	ck_assert_str_eq(bench_fmt_count(1000, out), "1,000");
	ck_assert_str_eq(bench_fmt_count(11898, out), "11,898");
	ck_assert_str_eq(bench_fmt_count(UINT64_MAX, out), "18,446,744,073,709,551,615");
}
END_TEST

Suite *bench_suite(void)
{
	Suite *s = suite_create("bench");
	TCase *tc = tcase_create("hist");

	tcase_add_checked_fixture(tc, hist_setup, hist_teardown);
	tcase_add_test(tc, test_hist_buckets_cover_values);
	tcase_add_test(tc, test_hist_percentiles_within_half_percent);
	tcase_add_test(tc, test_hist_small_exact_and_clamped);
	tcase_add_test(tc, test_hist_saturates_and_merges);
	suite_add_tcase(s, tc);

	tc = tcase_create("classify");
	tcase_add_test(tc, test_classify_429);
	suite_add_tcase(s, tc);

	tc = tcase_create("options");
	tcase_add_test(tc, test_opts_full);
	tcase_add_test(tc, test_opts_defaults_and_forms);
	tcase_add_test(tc, test_opts_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("request");
	tcase_add_test(tc, test_request_chat_bytes);
	tcase_add_test(tc, test_request_generated_keys_and_get);
	suite_add_tcase(s, tc);

	tc = tcase_create("report");
	tcase_add_test(tc, test_stats_accounting);
	tcase_add_test(tc, test_report_text);
	tcase_add_test(tc, test_report_json);
	tcase_add_test(tc, test_report_many_keys_summary);
	tcase_add_test(tc, test_fmt_count);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(bench_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
