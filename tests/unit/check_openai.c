/* check_openai.c — the OpenAI request model (validation, token estimates), the mock backend's
 * responses and SSE framing, and the rate-limit headers and 429 bodies. */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/mock.h"
#include "http/openai.h"
#include "http/ratelimit.h"

/* ---- helpers ---- */

static json_t *load(const char *text, size_t len)
{
	json_error_t e;
	json_t *v = json_loadb(text, len, 0, &e);

	ck_assert_msg(v != NULL, "not JSON (%s): %.*s", e.text, (int)len, text);
	return v;
}

static struct openai_request parse_ok(enum openai_endpoint ep, const char *body)
{
	struct openai_request r;
	struct openai_error e;
	int rc = openai_parse(ep, body, strlen(body), &r, &e);

	ck_assert_msg(rc == 0, "refused (%s, param %s): %s", e.message, e.param, body);
	return r;
}

static uint64_t chat_tokens(const char *messages)
{
	json_t *m = load(messages, strlen(messages));
	uint64_t n = openai_estimate_chat(m);

	json_decref(m);
	return n;
}

static uint64_t prompt_tokens(const char *prompt)
{
	json_t *p = json_loads(prompt, JSON_DECODE_ANY, NULL);
	uint64_t n;

	ck_assert_ptr_nonnull(p);
	n = openai_estimate_prompt(p);
	json_decref(p);
	return n;
}

static size_t count_words(const char *s)
{
	size_t n = 0;
	int in = 0;

	for (; *s; s++) {
		if (*s == ' ')
			in = 0;
		else if (!in++)
			n++;
	}
	return n;
}

/* ---- token estimates ---- */

START_TEST(test_estimate_chat)
{
	/* 3 priming + 4 per message + ceil(bytes / 4). */
	ck_assert_uint_eq(chat_tokens("[{\"role\":\"user\",\"content\":\"hello\"}]"), 3 + 4 + 2);
	ck_assert_uint_eq(chat_tokens("[{\"role\":\"user\",\"content\":\"\"}]"), 7);
	ck_assert_uint_eq(chat_tokens("[{\"role\":\"assistant\",\"content\":null}]"), 7);
	ck_assert_uint_eq(chat_tokens("[{\"role\":\"user\",\"content\":\"abcd\"}]"), 8);
	ck_assert_uint_eq(chat_tokens("[{\"role\":\"user\",\"content\":\"h\\u00e9llo\"}]"), 9);
	ck_assert_uint_eq(chat_tokens("[{\"role\":\"user\",\"content\":\"abcd\",\"name\":\"bob\"}]"),
			  9);
	ck_assert_uint_eq(chat_tokens("[{\"role\":\"system\",\"content\":\"be brief\"},"
				      "{\"role\":\"user\",\"content\":\"hi there, you\"}]"),
			  3 + 4 + 2 + 4 + 4);
	ck_assert_uint_eq(chat_tokens("[{\"role\":\"user\",\"content\":["
				      "{\"type\":\"text\",\"text\":\"abcdefghi\"},"
				      "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}},"
				      "{\"type\":\"input_audio\",\"input_audio\":{}}]}]"),
			  3 + 4 + 3 + 85);
	ck_assert_uint_eq(chat_tokens("[]"), 3);
}
END_TEST

START_TEST(test_estimate_prompt)
{
	ck_assert_uint_eq(prompt_tokens("\"\""), 0);
	ck_assert_uint_eq(prompt_tokens("\"abcd\""), 1);
	ck_assert_uint_eq(prompt_tokens("\"abcde\""), 2);
	ck_assert_uint_eq(prompt_tokens("[\"ab\", \"abcde\", \"\"]"), 3);
	ck_assert_uint_eq(prompt_tokens("[1, 2, 3]"), 3);
	ck_assert_uint_eq(prompt_tokens("[[1, 2], [3], []]"), 3);
}
END_TEST

START_TEST(test_parse_values)
{
	struct openai_request r;

	r = parse_ok(OPENAI_CHAT, "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
		     "\"content\":\"hello\"}],\"max_tokens\":50,\"max_completion_tokens\":20,\"n\":3,"
		     "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
		     "\"temperature\":1.5,\"top_p\":0,\"tools\":[],\"whatever\":{\"x\":1}}");
	ck_assert_uint_eq(r.model_len, 6);
	ck_assert_str_eq(r.model, "gpt-4o");
	ck_assert_uint_eq(r.max_tokens, 20);
	ck_assert_uint_eq(r.n, 3);
	ck_assert(r.stream && r.include_usage);
	ck_assert_uint_eq(r.input_tokens, 9);
	ck_assert_uint_eq(openai_output_cap(&r, 256), 20);
	ck_assert_uint_eq(openai_choices(&r), 3);
	openai_request_close(&r);

	/* Nulls mean absent; the tier default fills in. */
	r = parse_ok(OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
		     "\"x\"}],\"max_tokens\":null,\"n\":null,\"stream\":null,\"stream_options\":null,"
		     "\"temperature\":null}");
	ck_assert_uint_eq(openai_output_cap(&r, 77), 77);
	ck_assert_uint_eq(openai_choices(&r), 1);
	ck_assert(!r.stream);
	openai_request_close(&r);

	/* Completions default to 16 tokens whatever the tier says; each prompt gets n choices. */
	r = parse_ok(OPENAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"abcd\",\"abcdefgh\"],"
		     "\"n\":2}");
	ck_assert_uint_eq(openai_output_cap(&r, 256), OPENAI_COMPLETIONS_MAX_TOKENS);
	ck_assert_uint_eq(openai_choices(&r), 4);
	ck_assert_uint_eq(r.input_tokens, 3);
	openai_request_close(&r);

	r = parse_ok(OPENAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,2,3],\"max_tokens\":5}");
	ck_assert_uint_eq(openai_choices(&r), 1);
	ck_assert_uint_eq(openai_output_cap(&r, 256), 5);
	ck_assert_uint_eq(r.input_tokens, 3);
	openai_request_close(&r);

	r = parse_ok(OPENAI_EMBEDDINGS, "{\"model\":\"e\",\"input\":[\"abcde\",\"x\"],"
		     "\"dimensions\":8,\"encoding_format\":\"base64\"}");
	ck_assert_uint_eq(r.nprompts, 2);
	ck_assert_uint_eq(r.dimensions, 8);
	ck_assert(r.base64);
	ck_assert_uint_eq(r.input_tokens, 3);
	ck_assert_uint_eq(openai_output_cap(&r, 256), 0);
	ck_assert_uint_eq(openai_choices(&r), 0);
	openai_request_close(&r);

	r = parse_ok(OPENAI_EMBEDDINGS, "{\"model\":\"e\",\"input\":\"hi\"}");
	ck_assert_uint_eq(r.dimensions, OPENAI_EMBEDDING_DIMS);
	ck_assert(!r.base64);
	openai_request_close(&r);

	/* An assistant turn with only tool calls has no content. */
	r = parse_ok(OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\","
		     "\"tool_calls\":[]},{\"role\":\"tool\",\"content\":\"r\",\"name\":null}]}");
	openai_request_close(&r);
	openai_request_close(NULL);
}
END_TEST

/* ---- validation ---- */

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

struct bad_case {
	enum openai_endpoint ep;
	const char *body;
	const char *param;  /* "" for null */
	const char *code;   /* NULL for null */
	const char *msg;    /* substring */
};

static const struct bad_case bad_cases[] = {
	{ OPENAI_CHAT, "{\"model\": \"m\",\n \"messages\": [,]}", "", NULL,
	  "We could not parse the JSON body of your request: " },
	{ OPENAI_CHAT, "{\"model\": \"m\",\n \"messages\": [,]}", "", NULL, "at line 2 column 15 (byte 30)" },
	{ OPENAI_CHAT, "", "", NULL, "could not parse" },
	{ OPENAI_CHAT, "[1]", "", "invalid_type", "must be a JSON object, but it is an array" },
	{ OPENAI_CHAT, "\"x\"", "", "invalid_type", "must be a JSON object" },
	{ OPENAI_CHAT, "{" MSGS "}", "model", "missing_required_parameter",
	  "Missing required parameter: 'model'." },
	{ OPENAI_CHAT, "{\"model\":null," MSGS "}", "model", "missing_required_parameter", "" },
	{ OPENAI_CHAT, "{\"model\":5," MSGS "}", "model", "invalid_type",
	  "Invalid type for 'model': expected a string, but got an integer instead." },
	{ OPENAI_CHAT, "{\"model\":\"\"," MSGS "}", "model", "empty_string", "empty string" },
	{ OPENAI_CHAT, "{\"model\":\"m\"}", "messages", "missing_required_parameter", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":\"hi\"}", "messages", "invalid_type",
	  "expected an array, but got a string" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[]}", "messages", "empty_array", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[5]}", "messages[0]", "invalid_type", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
	  "{\"content\":\"x\"}]}", "messages[1].role", "missing_required_parameter", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":7,\"content\":\"x\"}]}",
	  "messages[0].role", "invalid_type", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}",
	  "messages[0].role", "invalid_value", "Invalid value: 'bot'. Supported values are:" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}",
	  "messages[0].content", "invalid_type",
	  "expected one of a string or array of objects, but got an integer" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":{}}]}",
	  "messages[0].content", "invalid_type", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}",
	  "messages[0].content", "missing_required_parameter", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[3]}]}",
	  "messages[0].content[0]", "invalid_type", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
	  "[{\"text\":\"a\"}]}]}", "messages[0].content[0].type", "missing_required_parameter", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
	  "[{\"type\":\"text\"}]}]}", "messages[0].content[0].text", "missing_required_parameter",
	  "" },
	{ OPENAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\","
	  "\"name\":1}]}", "messages[0].name", "invalid_type", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"max_tokens\":0}", "max_tokens",
	  "integer_below_min_value",
	  "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 "
	  "instead." },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"max_tokens\":1000001}", "max_tokens",
	  "integer_above_max_value", "Expected a value <= 1000000, but got 1000001 instead." },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"max_tokens\":\"5\"}", "max_tokens",
	  "invalid_type", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"max_tokens\":5.0}", "max_tokens",
	  "invalid_type", "got a decimal number" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"max_completion_tokens\":-1}",
	  "max_completion_tokens", "integer_below_min_value", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"n\":0}", "n", "integer_below_min_value", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"n\":129}", "n", "integer_above_max_value",
	  "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"stream\":\"yes\"}", "stream", "invalid_type",
	  "expected a boolean" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"stream_options\":{}}", "stream_options",
	  "invalid_value", "only allowed when 'stream' is enabled" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"stream\":false,\"stream_options\":{}}",
	  "stream_options", "invalid_value", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"stream\":true,\"stream_options\":5}",
	  "stream_options", "invalid_type", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"stream\":true,\"stream_options\":"
	  "{\"include_usage\":1}}", "stream_options.include_usage", "invalid_type", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"temperature\":2.5}", "temperature",
	  "decimal_above_max_value", "Expected a value <= 2, but got 2.5 instead." },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"temperature\":\"hot\"}", "temperature",
	  "invalid_type", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"top_p\":-0.1}", "top_p",
	  "decimal_below_min_value", "" },
	{ OPENAI_CHAT, "{\"model\":\"m\"," MSGS ",\"top_p\":1.01}", "top_p",
	  "decimal_above_max_value", "" },
	{ OPENAI_COMPLETIONS, "{\"model\":\"m\"}", "prompt", "missing_required_parameter", "" },
	{ OPENAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":5}", "prompt", "invalid_type", "" },
	{ OPENAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[]}", "prompt", "empty_array", "" },
	{ OPENAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"a\",1]}", "prompt[1]",
	  "invalid_type", "" },
	{ OPENAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[[1,\"a\"]]}", "prompt[0][1]",
	  "invalid_type", "" },
	{ OPENAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[-1]}", "prompt[0]", "invalid_value",
	  "" },
	{ OPENAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens",
	  "integer_below_min_value", "" },
	{ OPENAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\",\"c\"],\"n\":50}", "n",
	  "invalid_value", "(50 x 3) must be <= 128" },
	{ OPENAI_EMBEDDINGS, "{\"model\":\"m\"}", "input", "missing_required_parameter", "" },
	{ OPENAI_EMBEDDINGS, "{\"input\":\"x\"}", "model", "missing_required_parameter", "" },
	{ OPENAI_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"\"}", "input", "empty_string", "" },
	{ OPENAI_EMBEDDINGS, "{\"model\":\"m\",\"input\":[]}", "input", "empty_array", "" },
	{ OPENAI_EMBEDDINGS, "{\"model\":\"m\",\"input\":[\"a\",\"\"]}", "input[1]",
	  "invalid_value", "" },
	{ OPENAI_EMBEDDINGS, "{\"model\":\"m\",\"input\":[[]]}", "input[0]", "invalid_value", "" },
	{ OPENAI_EMBEDDINGS, "{\"model\":\"m\",\"input\":{}}", "input", "invalid_type", "" },
	{ OPENAI_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"x\",\"dimensions\":0}", "dimensions",
	  "integer_below_min_value", "" },
	{ OPENAI_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"x\",\"dimensions\":3073}", "dimensions",
	  "integer_above_max_value", "" },
	{ OPENAI_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"x\",\"encoding_format\":\"hex\"}",
	  "encoding_format", "invalid_value", "Supported values are: 'float' and 'base64'." },
};

START_TEST(test_validation)
{
	const struct bad_case *c = &bad_cases[_i];
	struct openai_request r;
	struct openai_error e;

	memset(&e, 0x55, sizeof(e));
	ck_assert_int_eq(openai_parse(c->ep, c->body, strlen(c->body), &r, &e), -EINVAL);
	ck_assert_ptr_null(r.root);
	ck_assert_msg(strcmp(e.param, c->param) == 0, "%s: param [%s], want [%s]", c->body,
		      e.param, c->param);
	if (c->code)
		ck_assert_msg(e.code && strcmp(e.code, c->code) == 0, "%s: code [%s], want [%s]",
			      c->body, e.code ? e.code : "null", c->code);
	else
		ck_assert_msg(e.code == NULL, "%s: code [%s], want null", c->body, e.code);
	ck_assert_msg(strstr(e.message, c->msg) != NULL, "%s: message [%s] lacks [%s]", c->body,
		      e.message, c->msg);
}
END_TEST

START_TEST(test_validation_array_limit)
{
	struct openai_request r;
	struct openai_error e;
	char *body = malloc(16 * (OPENAI_INPUTS_MAX + 2));
	size_t len = (size_t)sprintf(body, "{\"model\":\"m\",\"input\":[");
	unsigned i;

	for (i = 0; i <= OPENAI_INPUTS_MAX; i++)
		len += (size_t)sprintf(body + len, "%s\"w\"", i ? "," : "");
	strcpy(body + len, "]}");
	ck_assert_int_eq(openai_parse(OPENAI_EMBEDDINGS, body, strlen(body), &r, &e), -EINVAL);
	ck_assert_str_eq(e.param, "input");
	ck_assert_str_eq(e.code, "array_above_max_length");
	/* One fewer fits. */
	strcpy(body + len - 4, "]}");
	ck_assert_int_eq(openai_parse(OPENAI_EMBEDDINGS, body, strlen(body), &r, &e), 0);
	ck_assert_uint_eq(r.nprompts, OPENAI_INPUTS_MAX);
	openai_request_close(&r);
	free(body);
}
END_TEST

/* ---- mock backend ---- */

START_TEST(test_choice_tokens)
{
	static const struct { uint64_t prompt, cap, want; bool length; } cases[] = {
		{ 9, 256, 5, false },   /* ceil(9 / 2) */
		{ 0, 16, 1, false },    /* at least one */
		{ 1, 16, 1, false },
		{ 32, 16, 16, false },  /* exactly the cap: it did not cut anything */
		{ 33, 16, 16, true },
		{ 100, 16, 16, true },
		{ 100, 1, 1, true },
		{ 20000, 1000000, MOCK_MAX_CHOICE_TOKENS, true },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool length = !cases[i].length;

		ck_assert_uint_eq(mock_choice_tokens(cases[i].prompt, cases[i].cap, &length),
				  cases[i].want);
		ck_assert_int_eq(length, cases[i].length);
	}
}
END_TEST

static struct mock_call call(uint64_t prompt, uint64_t cap, uint32_t choices, bool stream,
			     bool usage)
{
	struct mock_call c = {
		.model = "gpt-\"4o\"", .model_len = 8, .id = 0xabcdef, .created = 1700000000,
		.prompt_tokens = prompt, .cap = cap, .choices = choices, .stream = stream,
		.include_usage = usage,
	};

	return c;
}

START_TEST(test_mock_chat)
{
	struct mock_call c = call(9, 256, 2, false, false);
	struct buf b;
	uint64_t produced = 0;
	json_t *v, *ch, *u;
	size_t i;

	buf_init(&b);
	ck_assert_int_eq(mock_chat(&b, &c, &produced), 0);
	ck_assert_uint_eq(produced, 10);
	v = load(b.data, b.len);
	ck_assert_str_eq(json_string_value(json_object_get(v, "id")), "chatcmpl-0000000000abcdef");
	ck_assert_str_eq(json_string_value(json_object_get(v, "object")), "chat.completion");
	ck_assert_int_eq(json_integer_value(json_object_get(v, "created")), 1700000000);
	ck_assert_str_eq(json_string_value(json_object_get(v, "model")), "gpt-\"4o\"");
	ck_assert_str_eq(json_string_value(json_object_get(v, "system_fingerprint")),
			 MOCK_FINGERPRINT);
	ch = json_object_get(v, "choices");
	ck_assert_uint_eq(json_array_size(ch), 2);
	for (i = 0; i < 2; i++) {
		json_t *x = json_array_get(ch, i), *m = json_object_get(x, "message");

		ck_assert_int_eq(json_integer_value(json_object_get(x, "index")), (json_int_t)i);
		ck_assert_str_eq(json_string_value(json_object_get(m, "role")), "assistant");
		ck_assert_uint_eq(count_words(json_string_value(json_object_get(m, "content"))), 5);
		ck_assert(json_is_null(json_object_get(m, "refusal")));
		ck_assert(json_is_null(json_object_get(x, "logprobs")));
		ck_assert_str_eq(json_string_value(json_object_get(x, "finish_reason")), "stop");
	}
	u = json_object_get(v, "usage");
	ck_assert_int_eq(json_integer_value(json_object_get(u, "prompt_tokens")), 9);
	ck_assert_int_eq(json_integer_value(json_object_get(u, "completion_tokens")), 10);
	ck_assert_int_eq(json_integer_value(json_object_get(u, "total_tokens")), 19);
	json_decref(v);

	/* The cap binds: "length", and exactly cap words. */
	buf_reset(&b);
	c = call(100, 7, 1, false, false);
	ck_assert_int_eq(mock_chat(&b, &c, &produced), 0);
	ck_assert_uint_eq(produced, 7);
	v = load(b.data, b.len);
	ch = json_array_get(json_object_get(v, "choices"), 0);
	ck_assert_str_eq(json_string_value(json_object_get(ch, "finish_reason")), "length");
	ck_assert_uint_eq(count_words(json_string_value(
		json_object_get(json_object_get(ch, "message"), "content"))), 7);
	json_decref(v);
	buf_close(&b);
}
END_TEST

START_TEST(test_mock_completions)
{
	struct mock_call c = call(3, 16, 1, false, false);
	struct buf b;
	uint64_t produced = 0;
	json_t *v, *ch;

	buf_init(&b);
	ck_assert_int_eq(mock_completions(&b, &c, &produced), 0);
	ck_assert_uint_eq(produced, 2);
	v = load(b.data, b.len);
	ck_assert_str_eq(json_string_value(json_object_get(v, "id")), "cmpl-0000000000abcdef");
	ck_assert_str_eq(json_string_value(json_object_get(v, "object")), "text_completion");
	ch = json_array_get(json_object_get(v, "choices"), 0);
	ck_assert_uint_eq(count_words(json_string_value(json_object_get(ch, "text"))), 2);
	ck_assert_str_eq(json_string_value(json_object_get(ch, "finish_reason")), "stop");
	ck_assert(json_is_null(json_object_get(ch, "logprobs")));
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(v, "usage"),
							    "total_tokens")), 5);
	json_decref(v);
	buf_close(&b);
}
END_TEST

/* Splits an SSE body into its events' JSON (or "[DONE]"), checking the framing. */
static size_t sse_events(const struct buf *b, json_t **ev, size_t max, bool *done)
{
	const char *p = b->data, *end = b->data + b->len;
	size_t n = 0;

	*done = false;
	while (p < end) {
		const char *sep = strstr(p, "\n\n");

		ck_assert_msg(sep != NULL, "event without its blank line: %s", p);
		ck_assert_msg(strncmp(p, "data: ", 6) == 0, "event without data: %.40s", p);
		ck_assert_msg(!*done, "an event after [DONE]");
		ck_assert_ptr_null(memchr(p, '\n', (size_t)(sep - p)));
		if ((size_t)(sep - p) == 12 && memcmp(p + 6, "[DONE]", 6) == 0) {
			*done = true;
		} else {
			ck_assert_uint_lt(n, max);
			ev[n++] = load(p + 6, (size_t)(sep - p - 6));
		}
		p = sep + 2;
	}
	return n;
}

static json_t *choice0(json_t *ev)
{
	ck_assert_uint_eq(json_array_size(json_object_get(ev, "choices")), 1);
	return json_array_get(json_object_get(ev, "choices"), 0);
}

static void check_chat_stream(bool usage)
{
	/* 40 prompt tokens -> 20 words -> content chunks of 8, 8 and 4 words. */
	struct mock_call c = call(40, 256, 1, true, usage);
	json_t *ev[16], *x, *d;
	struct buf b, whole;
	uint64_t produced;
	size_t n, i;
	bool done;
	char text[512] = "";

	buf_init(&b);
	ck_assert_int_eq(mock_chat(&b, &c, &produced), 0);
	ck_assert_uint_eq(produced, 20);
	n = sse_events(&b, ev, 16, &done);
	ck_assert(done);
	ck_assert_uint_eq(n, 1 + 3 + 1 + (usage ? 1 : 0));
	for (i = 0; i < n; i++) {
		ck_assert_str_eq(json_string_value(json_object_get(ev[i], "object")),
				 "chat.completion.chunk");
		ck_assert_str_eq(json_string_value(json_object_get(ev[i], "id")),
				 "chatcmpl-0000000000abcdef");
		ck_assert_str_eq(json_string_value(json_object_get(ev[i], "model")), "gpt-\"4o\"");
		if (!usage)
			ck_assert_ptr_null(json_object_get(ev[i], "usage"));
		else if (i + 1 < n)
			ck_assert(json_is_null(json_object_get(ev[i], "usage")));
	}
	/* The role chunk. */
	x = choice0(ev[0]);
	d = json_object_get(x, "delta");
	ck_assert_str_eq(json_string_value(json_object_get(d, "role")), "assistant");
	ck_assert_str_eq(json_string_value(json_object_get(d, "content")), "");
	ck_assert(json_is_null(json_object_get(x, "finish_reason")));
	/* Content chunks: 8, 8, 4 words that concatenate to the non-streamed content. */
	for (i = 1; i <= 3; i++) {
		x = choice0(ev[i]);
		d = json_object_get(x, "delta");
		ck_assert_ptr_null(json_object_get(d, "role"));
		ck_assert_uint_eq(count_words(json_string_value(json_object_get(d, "content"))),
				  i < 3 ? 8 : 4);
		ck_assert(json_is_null(json_object_get(x, "finish_reason")));
		strcat(text, json_string_value(json_object_get(d, "content")));
	}
	/* The finish chunk. */
	x = choice0(ev[4]);
	ck_assert_uint_eq(json_object_size(json_object_get(x, "delta")), 0);
	ck_assert_str_eq(json_string_value(json_object_get(x, "finish_reason")), "stop");
	if (usage) {
		json_t *u = json_object_get(ev[5], "usage");

		ck_assert_uint_eq(json_array_size(json_object_get(ev[5], "choices")), 0);
		ck_assert(json_is_array(json_object_get(ev[5], "choices")));
		ck_assert_int_eq(json_integer_value(json_object_get(u, "prompt_tokens")), 40);
		ck_assert_int_eq(json_integer_value(json_object_get(u, "completion_tokens")), 20);
		ck_assert_int_eq(json_integer_value(json_object_get(u, "total_tokens")), 60);
	}
	/* The same request unstreamed says the same thing. */
	buf_init(&whole);
	c.stream = false;
	ck_assert_int_eq(mock_chat(&whole, &c, &produced), 0);
	x = load(whole.data, whole.len);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
		json_array_get(json_object_get(x, "choices"), 0), "message"), "content")), text);
	json_decref(x);
	for (i = 0; i < n; i++)
		json_decref(ev[i]);
	buf_close(&whole);
	buf_close(&b);
}

START_TEST(test_sse_chat)
{
	check_chat_stream(false);
}
END_TEST

START_TEST(test_sse_chat_usage)
{
	check_chat_stream(true);
}
END_TEST

/* n = 2 and a cap: each choice streams role, content, finish in turn. */
START_TEST(test_sse_chat_choices)
{
	struct mock_call c = call(100, 3, 2, true, true);
	json_t *ev[16];
	struct buf b;
	uint64_t produced;
	size_t n, i;
	bool done;

	buf_init(&b);
	ck_assert_int_eq(mock_chat(&b, &c, &produced), 0);
	ck_assert_uint_eq(produced, 6);
	n = sse_events(&b, ev, 16, &done);
	ck_assert(done);
	ck_assert_uint_eq(n, 2 * 3 + 1);
	for (i = 0; i < 6; i++) {
		json_t *x = choice0(ev[i]);

		ck_assert_int_eq(json_integer_value(json_object_get(x, "index")), (json_int_t)(i / 3));
		if (i % 3 == 2)
			ck_assert_str_eq(json_string_value(json_object_get(x, "finish_reason")),
					 "length");
		else
			ck_assert(json_is_null(json_object_get(x, "finish_reason")));
	}
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(ev[6], "usage"),
							    "completion_tokens")), 6);
	for (i = 0; i < n; i++)
		json_decref(ev[i]);
	buf_close(&b);
}
END_TEST

START_TEST(test_sse_completions)
{
	struct mock_call c = call(20, 16, 1, true, true);
	json_t *ev[16], *x;
	struct buf b;
	uint64_t produced;
	size_t n, i;
	bool done;

	buf_init(&b);
	ck_assert_int_eq(mock_completions(&b, &c, &produced), 0);
	ck_assert_uint_eq(produced, 10);
	n = sse_events(&b, ev, 16, &done);
	ck_assert(done);
	/* No role chunk: 8 + 2 words, the finish chunk, the usage chunk. */
	ck_assert_uint_eq(n, 4);
	for (i = 0; i < n; i++)
		ck_assert_str_eq(json_string_value(json_object_get(ev[i], "object")),
				 "text_completion");
	ck_assert_uint_eq(count_words(json_string_value(json_object_get(choice0(ev[0]), "text"))),
			  8);
	ck_assert_uint_eq(count_words(json_string_value(json_object_get(choice0(ev[1]), "text"))),
			  2);
	x = choice0(ev[2]);
	ck_assert_str_eq(json_string_value(json_object_get(x, "text")), "");
	ck_assert_str_eq(json_string_value(json_object_get(x, "finish_reason")), "stop");
	ck_assert_uint_eq(json_array_size(json_object_get(ev[3], "choices")), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(ev[3], "usage"),
							    "total_tokens")), 30);
	for (i = 0; i < n; i++)
		json_decref(ev[i]);
	buf_close(&b);
}
END_TEST

/* Degenerate calls still frame correctly: no tokens, no choices. */
START_TEST(test_sse_degenerate)
{
	struct mock_call c = call(10, 0, 1, true, false);
	json_t *ev[4];
	struct buf b;
	uint64_t produced = 7;
	size_t n;
	bool done;

	buf_init(&b);
	ck_assert_int_eq(mock_completions(&b, &c, &produced), 0);
	ck_assert_uint_eq(produced, 0);
	n = sse_events(&b, ev, 4, &done);
	ck_assert(done);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(json_string_value(json_object_get(choice0(ev[0]), "finish_reason")),
			 "length");
	json_decref(ev[0]);
	buf_reset(&b);
	c.choices = 0;
	ck_assert_int_eq(mock_chat(&b, &c, &produced), 0);
	ck_assert_str_eq(b.data, "data: [DONE]\n\n");
	buf_reset(&b);
	c.include_usage = true;
	ck_assert_int_eq(mock_chat(&b, &c, &produced), 0);
	n = sse_events(&b, ev, 4, &done);
	ck_assert(done);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(json_array_size(json_object_get(ev[0], "choices")), 0);
	json_decref(ev[0]);
	buf_close(&b);
}
END_TEST

static int b64val(char ch)
{
	const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = strchr(t, ch);

	return p && ch ? (int)(p - t) : -1;
}

static size_t b64decode(const char *s, unsigned char *out)
{
	size_t n = 0, len = strlen(s), i;

	ck_assert_uint_eq(len % 4, 0);
	for (i = 0; i < len; i += 4) {
		uint32_t v = 0;
		int k, pad = 0;

		for (k = 0; k < 4; k++) {
			int x = s[i + k] == '=' ? (pad++, 0) : b64val(s[i + k]);

			ck_assert_int_ge(x, 0);
			v = v << 6 | (uint32_t)x;
		}
		out[n++] = (unsigned char)(v >> 16);
		if (pad < 2)
			out[n++] = (unsigned char)(v >> 8);
		if (pad < 1)
			out[n++] = (unsigned char)v;
	}
	return n;
}

START_TEST(test_mock_embeddings)
{
	json_t *in = json_loads("[\"hello\", \"world\", \"hello\"]", 0, NULL), *v, *d;
	json_t *vec[3];
	unsigned char raw[4 * 64];
	struct buf b;
	size_t i, j;

	buf_init(&b);
	ck_assert_int_eq(mock_embeddings(&b, in, "emb", 3, 64, false, 4), 0);
	v = load(b.data, b.len);
	ck_assert_str_eq(json_string_value(json_object_get(v, "object")), "list");
	ck_assert_str_eq(json_string_value(json_object_get(v, "model")), "emb");
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(v, "usage"),
							    "prompt_tokens")), 4);
	d = json_object_get(v, "data");
	ck_assert_uint_eq(json_array_size(d), 3);
	for (i = 0; i < 3; i++) {
		double norm = 0;

		ck_assert_str_eq(json_string_value(json_object_get(json_array_get(d, i), "object")),
				 "embedding");
		ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(d, i), "index")),
				 (json_int_t)i);
		vec[i] = json_object_get(json_array_get(d, i), "embedding");
		ck_assert_uint_eq(json_array_size(vec[i]), 64);
		for (j = 0; j < 64; j++)
			norm += json_number_value(json_array_get(vec[i], j)) *
				json_number_value(json_array_get(vec[i], j));
		ck_assert_double_eq_tol(norm, 1.0, 1e-4);
	}
	/* Same input, same vector; different input, different vector. */
	ck_assert(json_equal(vec[0], vec[2]));
	ck_assert(!json_equal(vec[0], vec[1]));

	/* base64 carries the same values as float32. */
	buf_reset(&b);
	ck_assert_int_eq(mock_embeddings(&b, in, "emb", 3, 64, true, 4), 0);
	{
		json_t *w = load(b.data, b.len);
		const char *s = json_string_value(json_object_get(json_array_get(
			json_object_get(w, "data"), 1), "embedding"));

		ck_assert_ptr_nonnull(s);
		ck_assert_uint_eq(b64decode(s, raw), sizeof(raw));
		for (j = 0; j < 64; j++) {
			uint32_t bits = (uint32_t)raw[4 * j] | (uint32_t)raw[4 * j + 1] << 8 |
					(uint32_t)raw[4 * j + 2] << 16 | (uint32_t)raw[4 * j + 3] << 24;
			float f;

			memcpy(&f, &bits, sizeof(f));
			ck_assert_float_eq(f, (float)json_number_value(json_array_get(vec[1], j)));
		}
		json_decref(w);
	}
	json_decref(v);
	json_decref(in);

	/* A token list is one input; odd dimensions pad base64 correctly. */
	in = json_loads("[1, 2, 3]", 0, NULL);
	buf_reset(&b);
	ck_assert_int_eq(mock_embeddings(&b, in, "emb", 3, 1, false, 3), 0);
	v = load(b.data, b.len);
	d = json_object_get(v, "data");
	ck_assert_uint_eq(json_array_size(d), 1);
	ck_assert_double_eq_tol(json_number_value(json_array_get(json_object_get(
		json_array_get(d, 0), "embedding"), 0)) *
		json_number_value(json_array_get(json_object_get(json_array_get(d, 0),
								 "embedding"), 0)), 1.0, 1e-6);
	json_decref(v);
	buf_reset(&b);
	ck_assert_int_eq(mock_embeddings(&b, in, "emb", 3, 3, true, 3), 0);
	v = load(b.data, b.len);
	ck_assert_uint_eq(strlen(json_string_value(json_object_get(json_array_get(
		json_object_get(v, "data"), 0), "embedding"))), 16);
	json_decref(v);
	json_decref(in);
	buf_close(&b);
}
END_TEST

START_TEST(test_mock_models)
{
	struct buf b;
	json_t *v;

	buf_init(&b);
	ck_assert_int_eq(mock_models(&b), 0);
	v = load(b.data, b.len);
	ck_assert_str_eq(json_string_value(json_object_get(v, "object")), "list");
	ck_assert_uint_gt(json_array_size(json_object_get(v, "data")), 0);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(
		json_object_get(v, "data"), 0), "object")), "model");
	json_decref(v);
	buf_reset(&b);
	ck_assert_int_eq(mock_model(&b, "org/my-model", 12), 0);
	v = load(b.data, b.len);
	ck_assert_str_eq(json_string_value(json_object_get(v, "id")), "org/my-model");
	ck_assert_str_eq(json_string_value(json_object_get(v, "owned_by")), "llmlimit");
	json_decref(v);
	buf_close(&b);
}
END_TEST

/* ---- rate-limit headers and 429s ---- */

static void assert_prefix(const char *s, const char *prefix)
{
	ck_assert_msg(strncmp(s, prefix, strlen(prefix)) == 0, "[%s] does not start with [%s]", s,
		      prefix);
}

static struct window_verdict verdict(uint64_t l0, uint64_t l1, uint64_t l2, uint64_t r0,
				     uint64_t r1, uint64_t r2)
{
	struct window_verdict v;

	memset(&v, 0, sizeof(v));
	v.allowed = true;
	v.denied_dim = -1;
	v.limit[0] = l0, v.limit[1] = l1, v.limit[2] = l2;
	v.remaining[0] = r0, v.remaining[1] = r1, v.remaining[2] = r2;
	return v;
}

START_TEST(test_token_dim)
{
	struct window_verdict v = verdict(100, 1000, 500, 99, 500, 100);

	ck_assert_int_eq(ratelimit_token_dim(&v), WINDOW_OUTPUT);  /* 0.2 < 0.5 */
	v.remaining[WINDOW_OUTPUT] = 400;
	ck_assert_int_eq(ratelimit_token_dim(&v), WINDOW_INPUT);   /* 0.5 < 0.8 */
	v.remaining[WINDOW_OUTPUT] = 250;
	ck_assert_int_eq(ratelimit_token_dim(&v), WINDOW_INPUT);   /* a tie goes to input */
	v.remaining[WINDOW_OUTPUT] = 249;
	ck_assert_int_eq(ratelimit_token_dim(&v), WINDOW_OUTPUT);
	v.limit[WINDOW_INPUT] = WINDOW_UNLIMITED;
	ck_assert_int_eq(ratelimit_token_dim(&v), WINDOW_OUTPUT);
	v.limit[WINDOW_OUTPUT] = WINDOW_UNLIMITED;
	ck_assert_int_eq(ratelimit_token_dim(&v), -1);
	v.limit[WINDOW_INPUT] = 10;
	ck_assert_int_eq(ratelimit_token_dim(&v), WINDOW_INPUT);
	/* Near WINDOW_LIMIT_MAX the comparison must not overflow. */
	v = verdict(1, WINDOW_LIMIT_MAX, WINDOW_LIMIT_MAX - 1, 1, WINDOW_LIMIT_MAX - 1,
		    WINDOW_LIMIT_MAX - 1);
	ck_assert_int_eq(ratelimit_token_dim(&v), WINDOW_INPUT);
}
END_TEST

START_TEST(test_headers)
{
	struct window_verdict v = verdict(100, 1000, 500, 99, 900, 50);
	struct buf b;

	v.reset_ms[0] = 1500, v.reset_ms[1] = 60000, v.reset_ms[2] = 250;
	buf_init(&b);
	ck_assert_int_eq(ratelimit_headers(&b, &v), 0);
	ck_assert_str_eq(b.data,
			 "x-ratelimit-limit-requests: 100\r\n"
			 "x-ratelimit-remaining-requests: 99\r\n"
			 "x-ratelimit-reset-requests: 1.5s\r\n"
			 "x-ratelimit-limit-tokens: 500\r\n"
			 "x-ratelimit-remaining-tokens: 50\r\n"
			 "x-ratelimit-reset-tokens: 250ms\r\n"
			 "x-ratelimit-limit-input-tokens: 1000\r\n"
			 "x-ratelimit-remaining-input-tokens: 900\r\n"
			 "x-ratelimit-reset-input-tokens: 1m0s\r\n"
			 "x-ratelimit-limit-output-tokens: 500\r\n"
			 "x-ratelimit-remaining-output-tokens: 50\r\n"
			 "x-ratelimit-reset-output-tokens: 250ms\r\n");

	/* Unlimited dimensions are left out. */
	buf_reset(&b);
	v.limit[WINDOW_REQUESTS] = WINDOW_UNLIMITED;
	v.limit[WINDOW_OUTPUT] = WINDOW_UNLIMITED;
	v.reset_ms[1] = 6 * 60000;
	ck_assert_int_eq(ratelimit_headers(&b, &v), 0);
	ck_assert_str_eq(b.data,
			 "x-ratelimit-limit-tokens: 1000\r\n"
			 "x-ratelimit-remaining-tokens: 900\r\n"
			 "x-ratelimit-reset-tokens: 6m0s\r\n"
			 "x-ratelimit-limit-input-tokens: 1000\r\n"
			 "x-ratelimit-remaining-input-tokens: 900\r\n"
			 "x-ratelimit-reset-input-tokens: 6m0s\r\n");
	buf_reset(&b);
	v.limit[WINDOW_INPUT] = WINDOW_UNLIMITED;
	ck_assert_int_eq(ratelimit_headers(&b, &v), 0);
	ck_assert_uint_eq(b.len, 0);
	buf_close(&b);
}
END_TEST

START_TEST(test_refund)
{
	struct window_verdict v = verdict(10, 100, 500, 9, 90, 100);

	ratelimit_refund(&v, 150);
	ck_assert_uint_eq(v.remaining[WINDOW_OUTPUT], 250);
	ratelimit_refund(&v, 1000);
	ck_assert_uint_eq(v.remaining[WINDOW_OUTPUT], 500);  /* never above the limit */
	ck_assert_uint_eq(v.remaining[WINDOW_INPUT], 90);
	v.limit[WINDOW_OUTPUT] = WINDOW_UNLIMITED;
	v.remaining[WINDOW_OUTPUT] = WINDOW_UNLIMITED;
	ratelimit_refund(&v, 5);
	ck_assert_uint_eq(v.remaining[WINDOW_OUTPUT], WINDOW_UNLIMITED);
}
END_TEST

static void check_error(const struct buf *body, const char *message, const char *type)
{
	json_t *v = load(body->data, body->len), *e = json_object_get(v, "error");

	ck_assert_str_eq(json_string_value(json_object_get(e, "message")), message);
	ck_assert_str_eq(json_string_value(json_object_get(e, "type")), type);
	ck_assert(json_is_null(json_object_get(e, "param")));
	ck_assert_str_eq(json_string_value(json_object_get(e, "code")), "rate_limit_exceeded");
	json_decref(v);
}

START_TEST(test_denied_requests)
{
	struct window_verdict v = verdict(100, 10000, 5000, 0, 9000, 4000);
	const uint64_t amount[WINDOW_DIMS] = { 1, 20, 256 };
	struct buf h, b;

	v.allowed = false;
	v.denied_dim = WINDOW_REQUESTS;
	v.used[0] = 100;
	v.retry_after_ms = 1200;
	v.reset_ms[0] = 59000, v.reset_ms[1] = 30000, v.reset_ms[2] = 30000;
	buf_init(&h);
	buf_init(&b);
	ck_assert_int_eq(ratelimit_denied(&h, &b, &v, amount, "gpt-4o", 6), 0);
	assert_prefix(h.data, "retry-after: 2\r\nretry-after-ms: 1200\r\n"
		      "x-ratelimit-limit-requests: 100\r\n"
		      "x-ratelimit-remaining-requests: 0\r\n"
		      "x-ratelimit-reset-requests: 59s\r\n");
	check_error(&b, "Rate limit reached for gpt-4o in organization llmlimit on requests per "
		    "min (RPM): Limit 100, Used 100, Requested 1. Please try again in 1.2s.",
		    "requests");
	buf_close(&h);
	buf_close(&b);
}
END_TEST

START_TEST(test_denied_tokens)
{
	struct window_verdict v = verdict(100, 10000, 5000, 50, 9000, 100);
	const uint64_t amount[WINDOW_DIMS] = { 1, 20, 256 };
	struct buf h, b;

	v.allowed = false;
	v.denied_dim = WINDOW_OUTPUT;
	v.used[2] = 4900;
	v.retry_after_ms = 350;
	buf_init(&h);
	buf_init(&b);
	ck_assert_int_eq(ratelimit_denied(&h, &b, &v, amount, "m", 1), 0);
	assert_prefix(h.data, "retry-after: 1\r\nretry-after-ms: 350\r\n");
	ck_assert_ptr_nonnull(strstr(h.data, "x-ratelimit-remaining-tokens: 100\r\n"));
	check_error(&b, "Rate limit reached for m in organization llmlimit on output tokens per min "
		    "(TPM): Limit 5000, Used 4900, Requested 256. Please try again in 350ms.",
		    "tokens");

	buf_reset(&h);
	buf_reset(&b);
	v.denied_dim = WINDOW_INPUT;
	v.used[1] = 9990;
	v.retry_after_ms = 360000;
	ck_assert_int_eq(ratelimit_denied(&h, &b, &v, amount, "m", 1), 0);
	assert_prefix(h.data, "retry-after: 360\r\nretry-after-ms: 360000\r\n");
	check_error(&b, "Rate limit reached for m in organization llmlimit on input tokens per min "
		    "(TPM): Limit 10000, Used 9990, Requested 20. Please try again in 6m0s.",
		    "tokens");
	buf_close(&h);
	buf_close(&b);
}
END_TEST

START_TEST(test_denied_never_fits)
{
	struct window_verdict v = verdict(60, 2000, 1000, 60, 2000, 1000);
	const uint64_t amount[WINDOW_DIMS] = { 1, 5000, 16 };
	struct buf h, b;

	v.allowed = false;
	v.denied_dim = WINDOW_INPUT;
	v.never_fits = true;
	buf_init(&h);
	buf_init(&b);
	ck_assert_int_eq(ratelimit_denied(&h, &b, &v, amount, "gpt-4o", 6), 0);
	ck_assert_ptr_null(strstr(h.data, "retry-after"));
	ck_assert_ptr_nonnull(strstr(h.data, "x-ratelimit-limit-input-tokens: 2000\r\n"));
	check_error(&b, "Request too large for gpt-4o in organization llmlimit on input tokens per "
		    "min (TPM): Limit 2000, Requested 5000. The input or output tokens must be "
		    "reduced in order to run successfully.", "tokens");
	buf_close(&h);
	buf_close(&b);
	ck_assert_str_eq(ratelimit_dim_label(WINDOW_OUTPUT), "output_tokens");
	ck_assert_str_eq(ratelimit_dim_label(-1), "unknown");
}
END_TEST

/* ---- the fast path for chat bodies ---- */

/* Both halves of openai_parse on one body: when the fast path accepts, the jansson path must
 * accept too, with the same result; when it gives up, it must leave *out zeroed. Returns the
 * fast path's code. */
static int fast_vs_json(const char *body, size_t len)
{
	struct openai_request f, j, zero;
	struct openai_error e;
	int rf = openai__parse_fast_chat(body, len, &f);
	int rj = openai__parse_json(OPENAI_CHAT, body, len, &j, &e);

	memset(&zero, 0, sizeof(zero));
	ck_assert_msg(rf == 0 || rf == -EAGAIN, "fast path: %d", rf);
	if (rf == -EAGAIN) {
		ck_assert_msg(memcmp(&f, &zero, sizeof(f)) == 0, "not zeroed: %.*s", (int)len,
			      body);
	} else {
		ck_assert_msg(rj == 0, "fast path accepted what jansson refuses (%s): %.*s",
			      e.message, (int)len, body);
		ck_assert_ptr_null(f.root);
		ck_assert_ptr_null(f.input);
		ck_assert_uint_eq(f.model_len, j.model_len);
		ck_assert_msg(memcmp(f.model, j.model, j.model_len + 1) == 0, "model: %.*s",
			      (int)len, body);
		ck_assert_uint_eq(f.max_tokens, j.max_tokens);
		ck_assert_uint_eq(f.n, j.n);
		ck_assert_uint_eq(f.nprompts, j.nprompts);
		ck_assert_int_eq(f.stream, j.stream);
		ck_assert_int_eq(f.include_usage, j.include_usage);
		ck_assert_msg(f.input_tokens == j.input_tokens, "tokens %llu vs %llu: %.*s",
			      (unsigned long long)f.input_tokens,
			      (unsigned long long)j.input_tokens, (int)len, body);
		ck_assert_uint_eq(f.dimensions, j.dimensions);
		ck_assert_int_eq(f.base64, j.base64);
	}
	openai_request_close(&f);
	openai_request_close(&j);
	return rf;
}

/* Plain bodies, as clients send them: the fast path takes every one. */
static const char *const fast_bodies[] = {
	"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"lorem ipsum "
	"dolor sit amet consectetur adipiscing elit sed do lorem\"}],\"max_tokens\":50}",
	"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],"
	"\"max_tokens\":50,\"max_completion_tokens\":20,\"n\":3,\"stream\":true,"
	"\"stream_options\":{\"include_usage\":true},\"temperature\":1.5,\"top_p\":0,"
	"\"tools\":[],\"whatever\":{\"x\":1}}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":null,"
	"\"n\":null,\"stream\":null,\"stream_options\":null,\"temperature\":null}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[]},"
	"{\"role\":\"tool\",\"content\":\"r\",\"name\":null}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
	"{\"role\":\"user\",\"content\":\"hi there, you\",\"name\":\"bob\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
	"\"text\":\"abcdefghi\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}},"
	"{\"type\":\"input_audio\",\"input_audio\":{}}]}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo \\ud83d\\ude00"
	" \\n\\t\\\" caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \\u0000 \\u20ac\"}]}",
	" {\n \"messages\" : [ { \"content\" : \"a\" , \"role\" : \"developer\" } ] ,\r\n"
	" \"model\" : \"x\" , \"top_p\": 0.5e0, \"temperature\": 2,"
	" \"logit_bias\": {\"1\": -100, \"2\": 1.5E+2},"
	" \"seed\": -123456789012345678 } \n",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"function\",\"content\":null,\"name\":\"f\"}],"
	"\"stream\":false,\"user\":\"u\",\"metadata\":{\"a\":[1,[2,[3,{\"b\":null}]]],\"c\":true,"
	"\"d\":false,\"e\":-0.0}}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
	"\"text\":5},{\"type\":\"text\",\"text\":\"\"}]}],\"temperature\":0.7}",
};

START_TEST(test_fast_path_taken)
{
	size_t i;

	for (i = 0; i < sizeof(fast_bodies) / sizeof(fast_bodies[0]); i++)
		ck_assert_msg(fast_vs_json(fast_bodies[i], strlen(fast_bodies[i])) == 0,
			      "fast path gave up: %s", fast_bodies[i]);
}
END_TEST

/* Bodies the fast path leaves to jansson: openai_parse still answers them (accepting the valid
 * ones, with jansson's message for the others). */
static const char *const slow_bodies[] = {
	/* jansson accepts these, but the fast path cannot tell cheaply */
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	"\"mod\\u0065l\":\"y\"}",
	"{\"model\":\"g\\u0070t\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"us\\u0065r\",\"content\":\"x\"}]}",
	"{\"model\":\"m\",\"model\":\"n\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"content\":\"yy\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":"
	"1234567890123456789}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"deep\":"
	"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]"
	"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
	/* jansson refuses these */
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]} x",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\\udc00\\ud800\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc0\xaf\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\\x\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\tb\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"t\":1e999}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"t\":01}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"t\":1.}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"t\":truex}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"k\\u0000\":1}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]",
	/* valid JSON, refused by validation */
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2.0}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":1.5}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	"\"stream_options\":{}}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}",
	"{\"model\":\"\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	"[1]",
};

START_TEST(test_fast_path_gives_up)
{
	const char *body = slow_bodies[_i];
	struct openai_request r;
	struct openai_error e;
	json_error_t je;
	json_t *v = json_loadb(body, strlen(body), JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
	int rc;

	ck_assert_int_eq(fast_vs_json(body, strlen(body)), -EAGAIN);
	rc = openai_parse(OPENAI_CHAT, body, strlen(body), &r, &e);
	if (!v)
		ck_assert_msg(rc == -EINVAL && strstr(e.message, je.text), "%s: [%s]", body,
			      rc ? e.message : "accepted");
	else if (rc == 0)
		ck_assert_ptr_nonnull(r.root);
	openai_request_close(&r);
	json_decref(v);
}
END_TEST

/* Random edits of the plain bodies (bytes, deletions, insertions of tricky tokens), as a cheap
 * differential fuzzer with a fixed seed. */
START_TEST(test_fast_path_mutations)
{
	static const char *const tokens[] = {
		"\\u00e9", "\\ud83d\\ude00", "\\ud800", "\\udc00", "\\u0000", "\\", "\"", "1e999",
		"-0", "0.5", "01", "1.", "-", "123456789012345678", "1234567890123456789", "null",
		"true", "false", "truex", "\xc3", "\xc3\xa9", "\xed\xa0\x80", "\x01", "\x7f", "{}",
		"[]", "[", "]", "{", "}", ",", ":", " ", "\"model\":\"z\",", "\"messages\":[],",
		"\"max_tokens\":1000000,", "\"max_tokens\":1000001,", "\"n\":128,", "\"n\":129,",
		"\"stream\":true,", "\"stream_options\":{},", "\"role\":\"user\",",
		"\"role\":\"assistant\",", "\"content\":null,", "\"content\":[],",
		"\"name\":\"n\",",
		"\"type\":\"text\",", "\"text\":1,", "\"temperature\":2.0000001,",
		"\"include_usage\":true,",
	};
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	size_t nfast = 0, i;
	char buf[1024];

	for (i = 0; i < 20000; i++) {
		const char *base = fast_bodies[i % (sizeof(fast_bodies) / sizeof(fast_bodies[0]))];
		size_t len = strlen(base), k, nedits;

		memcpy(buf, base, len);
		for (nedits = 1 + i % 3, k = 0; k < nedits; k++) {
			size_t pos, n;
			const char *t;

			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			pos = (size_t)(seed >> 33) % (len + 1);
			switch ((seed >> 20) % 3) {
			case 0:
				if (pos < len)
					buf[pos] = (char)(seed >> 40);
				break;
			case 1:
				n = pos + 4 > len ? len - pos : 4;
				memmove(buf + pos, buf + pos + n, len - pos - n);
				len -= n;
				break;
			default:
				t = tokens[(seed >> 45) % (sizeof(tokens) / sizeof(tokens[0]))];
				n = strlen(t);
				if (len + n > sizeof(buf))
					break;
				memmove(buf + pos + n, buf + pos, len - pos);
				memcpy(buf + pos, t, n);
				len += n;
			}
		}
		nfast += fast_vs_json(buf, len) == 0;
	}
	/* The edits leave a good share of bodies valid: the comparison is not vacuous. */
	ck_assert_uint_gt(nfast, 1000);
}
END_TEST

static Suite *openai_suite(void)
{
	Suite *s = suite_create("openai");
	TCase *tc = tcase_create("request");

	tcase_add_test(tc, test_estimate_chat);
	tcase_add_test(tc, test_estimate_prompt);
	tcase_add_test(tc, test_parse_values);
	tcase_add_loop_test(tc, test_validation, 0,
			    (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
	tcase_add_test(tc, test_validation_array_limit);
	suite_add_tcase(s, tc);
	tc = tcase_create("fast");
	tcase_add_test(tc, test_fast_path_taken);
	tcase_add_loop_test(tc, test_fast_path_gives_up, 0,
			    (int)(sizeof(slow_bodies) / sizeof(slow_bodies[0])));
	tcase_add_test(tc, test_fast_path_mutations);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *mock_suite(void)
{
	Suite *s = suite_create("mock");
	TCase *tc = tcase_create("mock");

	tcase_add_test(tc, test_choice_tokens);
	tcase_add_test(tc, test_mock_chat);
	tcase_add_test(tc, test_mock_completions);
	tcase_add_test(tc, test_sse_chat);
	tcase_add_test(tc, test_sse_chat_usage);
	tcase_add_test(tc, test_sse_chat_choices);
	tcase_add_test(tc, test_sse_completions);
	tcase_add_test(tc, test_sse_degenerate);
	tcase_add_test(tc, test_mock_embeddings);
	tcase_add_test(tc, test_mock_models);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *ratelimit_suite(void)
{
	Suite *s = suite_create("ratelimit");
	TCase *tc = tcase_create("ratelimit");

	tcase_add_test(tc, test_token_dim);
	tcase_add_test(tc, test_headers);
	tcase_add_test(tc, test_refund);
	tcase_add_test(tc, test_denied_requests);
	tcase_add_test(tc, test_denied_tokens);
	tcase_add_test(tc, test_denied_never_fits);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(openai_suite());
	int failed;

	srunner_add_suite(sr, mock_suite());
	srunner_add_suite(sr, ratelimit_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
