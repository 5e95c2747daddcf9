/* api.c — routing, auth, admission and the answers of every endpoint.
 *
 * Order of checks: route (404) -> method (405) -> auth (401) -> body (400) -> admission (429,
 * 503) -> the mock backend (200). Responses are built into two buffers the api reuses for every
 * response (http_exchange_respond copies them), and admission contexts are reused too, so a
 * plain chat request allocates only the copy of its model name (openai.h's fast path; other
 * bodies also get jansson's tree). */
#include "http/api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "http/errors.h"
#include "http/mock.h"
#include "http/openai.h"
#include "http/ratelimit.h"
#include "peer/admit.h"
#include "util/metrics.h"

enum api_ep {
	EP_CHAT, EP_COMPLETIONS, EP_EMBEDDINGS, EP_MODELS, EP_HEALTHZ, EP_METRICS, EP_READYZ,
	EP_CLUSTER, EP_OTHER, EP_COUNT
};

static const char *const ep_label[EP_COUNT] = {
	"chat_completions", "completions", "embeddings", "models", "healthz", "metrics", "readyz",
	"cluster", "other"
};

/* Statuses whose request counters are cached; others are looked up by name when they occur. */
static const int cached_status[] = { 200, 400, 401, 404, 405, 413, 429, 499, 500, 503 };
#define NSTATUS (sizeof(cached_status) / sizeof(cached_status[0]))

static const double duration_bounds[] = { 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3,
					  10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1 };

#define JSON_TYPE "application/json"
#define HELP_RATELIMITED "Requests refused with 429, by the limit that refused them"
#define HELP_TOKENS "Tokens of admitted requests (output: as produced)"

struct api {
	struct api_deps deps;
	struct buf body;  /* the response being built; reused */
	struct buf hdr;   /* its extra header lines; reused */
	uint64_t id_base;  /* random per process: ids differ between nodes and restarts */
	uint64_t id_seq;
	/* Series are created on first use and cached. */
	struct metrics_counter *requests[EP_COUNT][NSTATUS];
	struct metrics_histogram *duration[EP_COUNT];
	struct metrics_counter *ratelimited[WINDOW_DIMS];
	struct metrics_counter *tokens_in, *tokens_out;
	struct api_call *spare;  /* finished calls kept for reuse, linked by next */
	size_t nspare;
};

/* One request between admit_check() and its callback. Owned by the api until the callback. */
struct api_call {
	struct api *api;
	struct http_exchange *ex;
	enum api_ep ep;
	struct openai_request req;   /* owns the parsed body */
	struct admit_request areq;   /* the key and what was charged */
	uint64_t cap;                /* output tokens per choice */
	uint32_t choices;
	struct api_call *next;       /* api->spare */
};

/* Finished calls kept for reuse: calloc bypasses glibc's per-thread cache, and a call is
 * allocated for every request. */
#define SPARE_CALLS_MAX 256

int api_new(struct api **out, const struct api_deps *deps)
{
	struct api *a = calloc(1, sizeof(*a));
	size_t d;

	if (!a)
		return -ENOMEM;
	a->deps = *deps;
	buf_init(&a->body);
	buf_init(&a->hdr);
	/* Response ids only need to differ between nodes and restarts, not to be secret. */
	if (getrandom(&a->id_base, sizeof(a->id_base), GRND_NONBLOCK) != sizeof(a->id_base))
		a->id_base = uv_hrtime() ^ ((uint64_t)getpid() << 32);
	if (a->deps.metrics) {
		for (d = 0; d < WINDOW_DIMS; d++) {
			char labels[48];

			snprintf(labels, sizeof(labels), "limit=\"%s\"",
				 ratelimit_dim_label((int)d));
			a->ratelimited[d] = metrics_counter(a->deps.metrics,
							    "llmlimit_ratelimited_total",
							    HELP_RATELIMITED, labels);
		}
		a->tokens_in = metrics_counter(a->deps.metrics, "llmlimit_tokens_total",
					       HELP_TOKENS, "kind=\"input\"");
		a->tokens_out = metrics_counter(a->deps.metrics, "llmlimit_tokens_total",
						HELP_TOKENS, "kind=\"output\"");
	}
	*out = a;
	return 0;
}

/* Every admit_check() callback must have run first: a pending call points at the api. main.c
 * frees the admitter (which fails the checks still waiting for a peer with -ECANCELED) before
 * the api. */
void api_free(struct api *a)
{
	struct api_call *c;

	if (!a)
		return;
	while ((c = a->spare)) {
		a->spare = c->next;
		free(c);
	}
	buf_close(&a->body);
	buf_close(&a->hdr);
	free(a);
}

void api_set_keys(struct api *a, const struct keys_config *keys)
{
	a->deps.keys = keys;
}

/* ---- responses ---- */

static struct metrics_counter *requests_counter(struct api *a, enum api_ep ep, int status)
{
	struct metrics_counter *c;
	char labels[64];
	size_t i;

	if (!a->deps.metrics)
		return NULL;
	for (i = 0; i < NSTATUS; i++)
		if (cached_status[i] == status)
			break;
	if (i < NSTATUS && a->requests[ep][i])
		return a->requests[ep][i];
	snprintf(labels, sizeof(labels), "endpoint=\"%s\",status=\"%d\"", ep_label[ep], status);
	c = metrics_counter(a->deps.metrics, "llmlimit_http_requests_total",
			    "HTTP requests answered, by endpoint and status", labels);
	if (i < NSTATUS)
		a->requests[ep][i] = c;
	return c;
}

static void count(struct api *a, struct http_exchange *ex, enum api_ep ep, int status)
{
	double secs = (double)(uv_hrtime() - http_exchange_start_ns(ex)) / 1e9;

	metrics_counter_add(requests_counter(a, ep, status), 1);
	if (a->deps.metrics && !a->duration[ep]) {
		char labels[48];

		snprintf(labels, sizeof(labels), "endpoint=\"%s\"", ep_label[ep]);
		a->duration[ep] = metrics_histogram(a->deps.metrics,
						    "llmlimit_request_duration_seconds",
						    "From the request's last byte to its answer",
						    labels, duration_bounds,
						    sizeof(duration_bounds) /
						    sizeof(duration_bounds[0]));
	}
	metrics_histogram_observe(a->duration[ep], secs);
}

/* Sends what a->body and a->hdr hold, counts it and frees the exchange. */
static void answer(struct api *a, struct http_exchange *ex, enum api_ep ep, int status,
		   const char *content_type, bool sse)
{
	struct http_response resp = {
		.status = status,
		.content_type = content_type,
		.headers = a->hdr.len ? a->hdr.data : NULL,
		.headers_len = a->hdr.len,
		.body = a->body.data,
		.body_len = a->body.len,
		.sse = sse,
	};

	count(a, ex, ep, status);
	http_exchange_respond(ex, &resp);
}

static void reset(struct api *a)
{
	buf_reset(&a->body);
	buf_reset(&a->hdr);
}

/* An OpenAI error answer. hdr may already hold header lines (e.g. Allow). */
static void send_error(struct api *a, struct http_exchange *ex, enum api_ep ep, int status,
		       const char *msg, const char *type, const char *param, const char *code)
{
	buf_reset(&a->body);
	if (http_error_body(&a->body, msg, type, param, code) < 0) {
		/* Out of memory: an empty 500 still frees the exchange. */
		reset(a);
		status = 500;
	}
	answer(a, ex, ep, status, a->body.len ? JSON_TYPE : NULL, false);
}

static void send_oom(struct api *a, struct http_exchange *ex, enum api_ep ep)
{
	reset(a);
	send_error(a, ex, ep, 500, "The server ran out of memory while answering this request.",
		   "server_error", NULL, NULL);
}

/* ---- routing and auth ---- */

static enum api_ep route(const struct http_request *r, enum http_method_id *method)
{
	static const struct {
		const char *path;
		enum api_ep ep;
		enum http_method_id m;
	} routes[] = {
		{ "/v1/chat/completions", EP_CHAT, HTTP_M_POST },
		{ "/v1/completions", EP_COMPLETIONS, HTTP_M_POST },
		{ "/v1/embeddings", EP_EMBEDDINGS, HTTP_M_POST },
		{ "/v1/models", EP_MODELS, HTTP_M_GET },
		{ "/healthz", EP_HEALTHZ, HTTP_M_GET },
		{ "/metrics", EP_METRICS, HTTP_M_GET },
		{ "/readyz", EP_READYZ, HTTP_M_GET },
		{ "/cluster", EP_CLUSTER, HTTP_M_GET },
	};
	size_t i;

	for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (strcmp(r->path, routes[i].path) == 0)
			break;
	/* /v1/models/{id}: ids may hold '/' (e.g. "org/model"), so everything after is the id. */
	if (i == sizeof(routes) / sizeof(routes[0]) && r->path_len > 11 &&
	    memcmp(r->path, "/v1/models/", 11) == 0)
		i = 3;
	if (i == sizeof(routes) / sizeof(routes[0]))
		return EP_OTHER;
	*method = routes[i].m;
	return routes[i].ep;
}

/* The bearer token of the Authorization header; false when there is none. */
static bool bearer(const struct http_request *r, const char **key, size_t *len)
{
	const struct http_header *h = http_request_header(r, "authorization");
	size_t i = 6;

	if (!h || h->value_len < 7 || strncasecmp(h->value, "bearer", 6) != 0 ||
	    (h->value[6] != ' ' && h->value[6] != '\t'))
		return false;
	while (i < h->value_len && (h->value[i] == ' ' || h->value[i] == '\t'))
		i++;
	*key = h->value + i;
	*len = h->value_len - i;
	return *len > 0;
}

/* Keys in the keys file are printable without spaces; anything else cannot be one. It also
 * keeps the admission log one line per record. */
static bool key_shape_ok(const char *key, size_t len)
{
	size_t i;

	if (len > WINDOW_KEY_MAX)
		return false;
	for (i = 0; i < len; i++)
		if ((unsigned char)key[i] <= 0x20 || key[i] == 0x7f)
			return false;
	return true;
}

static void send_bad_key(struct api *a, struct http_exchange *ex, enum api_ep ep,
			 const char *key, size_t len)
{
	char msg[200], shown[16];

	/* Show only the ends of the key, as OpenAI does ("sk-ab***yz"). */
	if (len > 8 && len <= WINDOW_KEY_MAX)
		snprintf(shown, sizeof(shown), "%.5s***%.2s", key, key + len - 2);
	else
		snprintf(shown, sizeof(shown), "***");
	snprintf(msg, sizeof(msg), "Incorrect API key provided: %s. Use a key listed in the "
		 "llmlimit keys file.", shown);
	send_error(a, ex, ep, 401, msg, "invalid_request_error", NULL, "invalid_api_key");
}

static struct api_call *call_new(struct api *a)
{
	struct api_call *c = a->spare;

	if (!c)
		return calloc(1, sizeof(*c));
	a->spare = c->next;
	a->nspare--;
	memset(c, 0, sizeof(*c));
	return c;
}

static void call_free(struct api *a, struct api_call *c)
{
	if (a->nspare >= SPARE_CALLS_MAX) {
		free(c);
		return;
	}
	c->next = a->spare;
	a->spare = c;
	a->nspare++;
}

/* ---- after the decision ---- */

static void log_admission(struct api *a, const struct api_call *c, uint32_t bucket)
{
	if (!a->deps.admission_log)
		return;
	fprintf(a->deps.admission_log, "A %" PRIu64 " %.*s %" PRIu64 " %" PRIu64 " %" PRIu64
		" %" PRIu32 "\n", a->deps.now_ms ? a->deps.now_ms(a->deps.now_arg) : 0,
		(int)c->areq.key_len, c->areq.key, c->areq.amount[WINDOW_REQUESTS],
		c->areq.amount[WINDOW_INPUT], c->areq.amount[WINDOW_OUTPUT], bucket);
}

/* Hands back reserved output tokens the request did not use (delta < 0) or charges extra. */
static void reconcile(struct api *a, const struct api_call *c, uint32_t bucket, int64_t delta)
{
	int64_t d[WINDOW_DIMS] = { 0, 0, delta };

	if (delta == 0)
		return;
	admit_adjust(a->deps.admit, c->areq.key, c->areq.key_len, bucket, d);
	if (a->deps.admission_log)
		fprintf(a->deps.admission_log, "J %" PRIu64 " %.*s %" PRIu32 " %" PRId64 "\n",
			a->deps.now_ms ? a->deps.now_ms(a->deps.now_arg) : 0,
			(int)c->areq.key_len, c->areq.key, bucket, delta);
}

/* Runs the mock backend into a->body; *produced = output tokens. */
static int generate(struct api *a, struct api_call *c, uint64_t *produced)
{
	const struct openai_request *q = &c->req;
	struct mock_call mc = {
		.model = q->model,
		.model_len = q->model_len,
		.created = (uint64_t)time(NULL),
		.prompt_tokens = q->input_tokens,
		.cap = c->cap,
		.choices = c->choices,
		.stream = q->stream,
		.include_usage = q->include_usage,
	};
	const struct http_request *r;

	mc.id = a->id_base + a->id_seq++;
	*produced = 0;
	switch (c->ep) {
	case EP_CHAT:
		return mock_chat(&a->body, &mc, produced);
	case EP_COMPLETIONS:
		return mock_completions(&a->body, &mc, produced);
	case EP_EMBEDDINGS:
		return mock_embeddings(&a->body, q->input, q->model, q->model_len, q->dimensions,
				       q->base64, q->input_tokens);
	default:
		r = http_exchange_request(c->ex);
		if (r->path_len > 11)
			return mock_model(&a->body, r->path + 11, r->path_len - 11);
		return mock_models(&a->body);
	}
}

static void serve(struct api *a, struct api_call *c, const struct window_verdict *v)
{
	uint64_t reserved = c->areq.amount[WINDOW_OUTPUT], produced;
	struct window_verdict shown = *v;
	bool charged = c->ep != EP_MODELS;
	int err;

	reset(a);
	err = generate(a, c, &produced);
	if (charged) {
		log_admission(a, c, v->bucket);
		/* On failure the backend produced nothing: the whole reservation goes back. */
		reconcile(a, c, v->bucket, (int64_t)(err ? 0 : produced) - (int64_t)reserved);
		metrics_counter_add(a->tokens_in, c->areq.amount[WINDOW_INPUT]);
		metrics_counter_add(a->tokens_out, err ? 0 : produced);
	}
	if (err) {
		send_oom(a, c->ex, c->ep);
		return;
	}
	if (produced < reserved)
		ratelimit_refund(&shown, reserved - produced);
	if (ratelimit_headers(&a->hdr, &shown) < 0 ||
	    (c->req.stream && buf_puts(&a->hdr, "cache-control: no-cache\r\n") < 0)) {
		send_oom(a, c->ex, c->ep);
		return;
	}
	answer(a, c->ex, c->ep, 200, c->req.stream ? "text/event-stream" : JSON_TYPE,
	       c->req.stream);
}

static void on_decision(void *ctx, int err, const struct window_verdict *v)
{
	struct api_call *c = ctx;
	struct api *a = c->api;

	if (http_exchange_cancelled(c->ex)) {
		struct http_response gone = { .status = 499 };

		/* The client left: nothing runs, so an admitted request gives its output
		 * reservation back at once. */
		if (!err && v->allowed && c->ep != EP_MODELS) {
			log_admission(a, c, v->bucket);
			reconcile(a, c, v->bucket, -(int64_t)c->areq.amount[WINDOW_OUTPUT]);
			metrics_counter_add(a->tokens_in, c->areq.amount[WINDOW_INPUT]);
		}
		count(a, c->ex, c->ep, 499);
		http_exchange_respond(c->ex, &gone);
	} else if (err) {
		reset(a);
		(void)buf_puts(&a->hdr, "retry-after: 1\r\n");
		send_error(a, c->ex, c->ep, 503, err == -ENOSPC ?
			   "The rate limiter is tracking too many active API keys right now. "
			   "Please retry shortly." : err == -EAGAIN ?
			   "This rate limiter node is joining its cluster and cannot decide yet. "
			   "Please retry shortly, or on another node." :
			   "The rate limiter could not reach the node deciding for this API key. "
			   "Please retry shortly.", "server_error", NULL,
			   err == -EAGAIN ? "cluster_joining" : NULL);
	} else if (v->allowed || c->ep == EP_MODELS) {
		/* Listing models charges nothing: the check only fetched the headers. */
		serve(a, c, v);
	} else {
		reset(a);
		metrics_counter_add(a->ratelimited[v->denied_dim >= 0 &&
						   v->denied_dim < WINDOW_DIMS ?
						   v->denied_dim : 0], 1);
		if (ratelimit_denied(&a->hdr, &a->body, v, c->areq.amount, c->req.model,
				     c->req.model_len) < 0)
			send_oom(a, c->ex, c->ep);
		else
			answer(a, c->ex, c->ep, 429, JSON_TYPE, false);
	}
	openai_request_close(&c->req);
	call_free(a, c);
}

/* ---- the handler ---- */

static void handle_ops(struct api *a, struct http_exchange *ex, enum api_ep ep)
{
	reset(a);
	if (ep == EP_HEALTHZ) {
		if (buf_puts(&a->body, "{\"status\":\"ok\"}\n") < 0)
			send_oom(a, ex, ep);
		else
			answer(a, ex, ep, 200, JSON_TYPE, false);
		return;
	}
	if (ep == EP_READYZ) {
		bool ready = !a->deps.ready || a->deps.ready(a->deps.ops_arg);

		if (buf_puts(&a->body, ready ? "{\"status\":\"ready\"}\n" :
			     "{\"status\":\"joining\"}\n") < 0)
			send_oom(a, ex, ep);
		else
			answer(a, ex, ep, ready ? 200 : 503, JSON_TYPE, false);
		return;
	}
	if (ep == EP_CLUSTER) {
		const struct http_request *r = http_exchange_request(ex);

		if (!a->deps.cluster_json)
			send_error(a, ex, ep, 404, "This node runs alone: start it with --peer-listen "
				   "to form a cluster.", "invalid_request_error", NULL, NULL);
		else if (a->deps.cluster_json(a->deps.ops_arg, r->query, r->query_len, &a->body) < 0)
			send_oom(a, ex, ep);
		else
			answer(a, ex, ep, 200, JSON_TYPE, false);
		return;
	}
	if (a->deps.collect)
		a->deps.collect(a->deps.collect_arg);
	if (a->deps.metrics && metrics_render(a->deps.metrics, &a->body) < 0)
		send_oom(a, ex, ep);
	else
		answer(a, ex, ep, 200, "text/plain; version=0.0.4; charset=utf-8", false);
}

/* Parses the body of a POST endpoint into c->req; answers 400/500 itself and returns false. */
static bool parse_body(struct api *a, struct api_call *c, const struct http_request *r)
{
	static const enum openai_endpoint which[] = { OPENAI_CHAT, OPENAI_COMPLETIONS,
						      OPENAI_EMBEDDINGS };
	struct openai_error oe;
	int err;

	err = openai_parse(which[c->ep], r->body, r->body_len, &c->req, &oe);
	if (err == -EINVAL) {
		reset(a);
		send_error(a, c->ex, c->ep, 400, oe.message, "invalid_request_error",
			   oe.param[0] ? oe.param : NULL, oe.code);
	} else if (err < 0) {
		send_oom(a, c->ex, c->ep);
	}
	return err == 0;
}

/* Answers the request's route, method and auth errors (and the ops endpoints) itself; true
 * when it goes on to admission, with the key (in the request) and its limits. */
static bool admissible(struct api *a, struct http_exchange *ex, enum api_ep ep,
		       enum http_method_id method, const char **key, size_t *key_len,
		       const struct keys_limits **lim)
{
	const struct http_request *r = http_exchange_request(ex);
	char msg[320];

	if (ep == EP_OTHER) {
		snprintf(msg, sizeof(msg), "Invalid URL (%s %.200s)", r->method_name, r->path);
		send_error(a, ex, ep, 404, msg, "invalid_request_error", NULL, NULL);
	} else if (r->method != method) {
		snprintf(msg, sizeof(msg), "Invalid method for URL (%s %.200s): use %s.",
			 r->method_name, r->path, method == HTTP_M_POST ? "POST" : "GET");
		(void)buf_puts(&a->hdr, method == HTTP_M_POST ? "allow: POST\r\n" :
				"allow: GET\r\n");
		send_error(a, ex, ep, 405, msg, "invalid_request_error", NULL, NULL);
	} else if (ep == EP_HEALTHZ || ep == EP_METRICS || ep == EP_READYZ || ep == EP_CLUSTER) {
		handle_ops(a, ex, ep);
	} else if (!bearer(r, key, key_len)) {
		send_error(a, ex, ep, 401, "You didn't provide an API key. You need to provide "
			   "your API key in an Authorization header using Bearer auth (i.e. "
			   "Authorization: Bearer YOUR_KEY).", "invalid_request_error", NULL, NULL);
	} else if (!key_shape_ok(*key, *key_len) ||
		   keys_lookup(a->deps.keys, *key, *key_len, lim) < 0) {
		send_bad_key(a, ex, ep, *key, *key_len);
	} else {
		return true;
	}
	return false;
}

void api_handle(void *app, struct http_exchange *ex)
{
	struct api *a = app;
	const struct http_request *r = http_exchange_request(ex);
	enum http_method_id method = HTTP_M_OTHER;
	enum api_ep ep = route(r, &method);
	const struct keys_limits *lim;
	struct api_call *c;
	const char *key;
	size_t key_len;

	reset(a);
	if (!admissible(a, ex, ep, method, &key, &key_len, &lim))
		return;
	if (!(c = call_new(a))) {
		send_oom(a, ex, ep);
		return;
	}
	c->api = a;
	c->ex = ex;
	c->ep = ep;
	if (ep != EP_MODELS && !parse_body(a, c, r)) {
		call_free(a, c);
		return;
	}
	memcpy(c->areq.key, key, key_len);
	c->areq.key_len = (uint16_t)key_len;
	memcpy(c->areq.limit, lim->limit, sizeof(c->areq.limit));
	if (ep != EP_MODELS) {
		c->cap = openai_output_cap(&c->req, lim->default_max_tokens);
		c->choices = openai_choices(&c->req);
		c->areq.amount[WINDOW_REQUESTS] = 1;
		c->areq.amount[WINDOW_INPUT] = c->req.input_tokens;
		c->areq.amount[WINDOW_OUTPUT] = c->cap * c->choices;
	}
	admit_check(a->deps.admit, &c->areq, on_decision, c);
}
