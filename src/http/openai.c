#include "http/openai.h"

#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"

uint64_t openai__ceil4(size_t bytes)
{
	return ((uint64_t)bytes + 3) / 4;
}

static uint64_t string_tokens(const json_t *s)
{
	return json_is_string(s) ? openai__ceil4(json_string_length(s)) : 0;
}

uint64_t openai_estimate_prompt(const json_t *prompt)
{
	uint64_t sum = 0;
	const json_t *v;
	size_t i;

	if (json_is_string(prompt))
		return string_tokens(prompt);
	json_array_foreach(prompt, i, v) {
		if (json_is_string(v))
			sum += string_tokens(v);
		else if (json_is_integer(v))
			sum++;
		else if (json_is_array(v))
			sum += json_array_size(v);
	}
	return sum;
}

static uint64_t content_tokens(const json_t *content)
{
	uint64_t sum = 0;
	const json_t *part;
	size_t i;

	if (json_is_string(content))
		return string_tokens(content);
	json_array_foreach(content, i, part) {
		const json_t *type = json_object_get(part, "type");

		if (json_is_string(json_object_get(part, "text")))
			sum += string_tokens(json_object_get(part, "text"));
		else if (json_is_string(type) && strcmp(json_string_value(type), "image_url") == 0)
			sum += OPENAI_IMAGE_TOKENS;
	}
	return sum;
}

uint64_t openai_estimate_chat(const json_t *messages)
{
	uint64_t sum = 3;
	const json_t *m;
	size_t i;

	json_array_foreach(messages, i, m) {
		if (!json_is_object(m))
			continue;
		sum += 4 + content_tokens(json_object_get(m, "content"));
		sum += string_tokens(json_object_get(m, "name"));
	}
	return sum;
}

uint64_t openai_output_cap(const struct openai_request *r, uint64_t tier_default)
{
	if (r->endpoint == OPENAI_EMBEDDINGS)
		return 0;
	if (r->max_tokens)
		return r->max_tokens;
	return r->endpoint == OPENAI_COMPLETIONS ? OPENAI_COMPLETIONS_MAX_TOKENS : tier_default;
}

uint32_t openai_choices(const struct openai_request *r)
{
	return r->endpoint == OPENAI_EMBEDDINGS ? 0 : r->n * r->nprompts;
}

/* ---- validation ---- */

__attribute__((format(printf, 4, 5)))
static int bad(struct openai_error *e, const char *param, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
	e->code = code;
	return -EINVAL;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a decimal number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

static int bad_type(struct openai_error *e, const char *param, const char *want, const json_t *v)
{
	return bad(e, param, "invalid_type",
		   "Invalid type for '%s': expected %s, but got %s instead.", param, want,
		   type_name(v));
}

static int missing(struct openai_error *e, const char *param)
{
	return bad(e, param, "missing_required_parameter", "Missing required parameter: '%s'.",
		   param);
}

/* An optional member: NULL when absent or JSON null. */
static json_t *opt(const json_t *obj, const char *name)
{
	json_t *v = json_object_get(obj, name);

	return json_is_null(v) ? NULL : v;
}

static int opt_int(const json_t *obj, const char *name, json_int_t min, json_int_t max,
		   uint64_t *out, struct openai_error *e)
{
	json_t *v = opt(obj, name);
	json_int_t x;

	if (!v)
		return 0;
	if (!json_is_integer(v))
		return bad_type(e, name, "an integer", v);
	x = json_integer_value(v);
	if (x < min)
		return bad(e, name, "integer_below_min_value",
			   "Invalid '%s': integer below minimum value. Expected a value >= %lld, "
			   "but got %lld instead.", name, (long long)min, (long long)x);
	if (x > max)
		return bad(e, name, "integer_above_max_value",
			   "Invalid '%s': integer above maximum value. Expected a value <= %lld, "
			   "but got %lld instead.", name, (long long)max, (long long)x);
	*out = (uint64_t)x;
	return 0;
}

static int opt_number(const json_t *obj, const char *name, double min, double max,
		      struct openai_error *e)
{
	json_t *v = opt(obj, name);
	double x;

	if (!v)
		return 0;
	if (!json_is_number(v))
		return bad_type(e, name, "a number", v);
	x = json_number_value(v);
	if (x < min)
		return bad(e, name, "decimal_below_min_value",
			   "Invalid '%s': decimal below minimum value. Expected a value >= %g, but "
			   "got %g instead.", name, min, x);
	if (x > max)
		return bad(e, name, "decimal_above_max_value",
			   "Invalid '%s': decimal above maximum value. Expected a value <= %g, but "
			   "got %g instead.", name, max, x);
	return 0;
}

static int opt_bool(const json_t *obj, const char *name, bool *out, struct openai_error *e)
{
	json_t *v = opt(obj, name);

	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return bad_type(e, name, "a boolean", v);
	*out = json_is_true(v);
	return 0;
}

const char *const openai__roles[] = { "system", "developer", "user", "assistant", "tool",
				      "function", NULL };

/* Formats a param path into p (64 bytes). Only error paths call it. */
__attribute__((format(printf, 2, 3)))
static const char *at(char *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p, 64, fmt, ap);
	va_end(ap);
	return p;
}

static int check_content(const json_t *content, size_t m, struct openai_error *e)
{
	const json_t *part, *type, *text;
	char p[64];
	size_t i;

	if (json_is_string(content) || json_is_null(content))
		return 0;
	if (!json_is_array(content))
		return bad_type(e, at(p, "messages[%zu].content", m),
				"one of a string or array of objects", content);
	json_array_foreach(content, i, part) {
		if (!json_is_object(part))
			return bad_type(e, at(p, "messages[%zu].content[%zu]", m, i), "an object",
					part);
		type = json_object_get(part, "type");
		if (!type)
			return missing(e, at(p, "messages[%zu].content[%zu].type", m, i));
		if (!json_is_string(type))
			return bad_type(e, at(p, "messages[%zu].content[%zu].type", m, i),
					"a string", type);
		text = json_object_get(part, "text");
		if (strcmp(json_string_value(type), "text") == 0 && !json_is_string(text)) {
			at(p, "messages[%zu].content[%zu].text", m, i);
			return text ? bad_type(e, p, "a string", text) : missing(e, p);
		}
	}
	return 0;
}

static int check_message(const json_t *m, size_t i, struct openai_error *e)
{
	const char *const *r;
	const json_t *role, *content, *name;
	char p[64];

	if (!json_is_object(m))
		return bad_type(e, at(p, "messages[%zu]", i), "an object", m);
	role = json_object_get(m, "role");
	if (!role)
		return missing(e, at(p, "messages[%zu].role", i));
	if (!json_is_string(role))
		return bad_type(e, at(p, "messages[%zu].role", i), "a string", role);
	for (r = openai__roles; *r; r++)
		if (strcmp(*r, json_string_value(role)) == 0)
			break;
	if (!*r)
		return bad(e, at(p, "messages[%zu].role", i), "invalid_value",
			   "Invalid value: '%.64s'. Supported values are: 'system', 'assistant', "
			   "'user', 'function', 'tool', and 'developer'.", json_string_value(role));
	content = json_object_get(m, "content");
	/* An assistant turn that only calls tools has no content. */
	if (!content && strcmp(*r, "assistant") != 0)
		return missing(e, at(p, "messages[%zu].content", i));
	if (content && check_content(content, i, e) < 0)
		return -EINVAL;
	name = json_object_get(m, "name");
	if (name && !json_is_null(name) && !json_is_string(name))
		return bad_type(e, at(p, "messages[%zu].name", i), "a string", name);
	return 0;
}

static int check_messages(const json_t *root, struct openai_error *e)
{
	const json_t *msgs = json_object_get(root, "messages"), *m;
	size_t i;

	if (!msgs || json_is_null(msgs))
		return missing(e, "messages");
	if (!json_is_array(msgs))
		return bad_type(e, "messages", "an array", msgs);
	if (json_array_size(msgs) == 0)
		return bad(e, "messages", "empty_array",
			   "Invalid 'messages': empty array. Expected an array with minimum length "
			   "1, but got an empty array instead.");
	json_array_foreach(msgs, i, m)
		if (check_message(m, i, e) < 0)
			return -EINVAL;
	return 0;
}

/* Validates a completions `prompt` or embeddings `input` and counts its prompts. Embeddings
 * refuse empty strings and empty token lists, as OpenAI does. */
static int check_inputs(const json_t *v, const char *param, bool embeddings, uint32_t *count,
			struct openai_error *e)
{
	static const char want[] = "one of a string, an array of strings, an array of integers "
				   "or an array of arrays of integers";
	const json_t *first, *el, *tok;
	char p[64];
	size_t i, j;

	if (!v)
		return missing(e, param);
	if (json_is_string(v)) {
		if (embeddings && json_string_length(v) == 0)
			return bad(e, param, "empty_string",
				   "Invalid '%s': empty string. Expected a string with minimum "
				   "length 1, but got an empty string instead.", param);
		*count = 1;
		return 0;
	}
	if (!json_is_array(v))
		return bad_type(e, param, want, v);
	if (json_array_size(v) == 0)
		return bad(e, param, "empty_array",
			   "Invalid '%s': empty array. Expected an array with minimum length 1, "
			   "but got an empty array instead.", param);
	if (json_array_size(v) > OPENAI_INPUTS_MAX)
		return bad(e, param, "array_above_max_length",
			   "Invalid '%s': array too long. Expected an array with maximum length "
			   "%u, but got an array with length %zu instead.", param,
			   OPENAI_INPUTS_MAX, json_array_size(v));
	first = json_array_get(v, 0);
	json_array_foreach(v, i, el) {
		if (json_typeof(el) != json_typeof(first) ||
		    !(json_is_string(el) || json_is_integer(el) || json_is_array(el)))
			return bad_type(e, at(p, "%s[%zu]", param, i),
					json_is_array(first) ? "an array of integers" :
					json_is_string(first) ? "a string" : "an integer", el);
		if (json_is_integer(el) && json_integer_value(el) < 0)
			return bad(e, at(p, "%s[%zu]", param, i), "invalid_value",
				   "Invalid '%s': token ids must be >= 0.", p);
		if (embeddings && ((json_is_string(el) && json_string_length(el) == 0) ||
				   (json_is_array(el) && json_array_size(el) == 0)))
			return bad(e, at(p, "%s[%zu]", param, i), "invalid_value",
				   "Invalid '%s': must not be empty.", p);
		json_array_foreach(el, j, tok)
			if (!json_is_integer(tok) || json_integer_value(tok) < 0)
				return bad_type(e, at(p, "%s[%zu][%zu]", param, i, j),
						"a token id (an integer >= 0)", tok);
	}
	*count = json_is_integer(first) ? 1 : (uint32_t)json_array_size(v);
	return 0;
}

static int check_model(const json_t *root, struct openai_request *r, struct openai_error *e)
{
	const json_t *model = opt(root, "model");

	if (!model)
		return missing(e, "model");
	if (!json_is_string(model))
		return bad_type(e, "model", "a string", model);
	if (json_string_length(model) == 0)
		return bad(e, "model", "empty_string",
			   "Invalid 'model': empty string. Expected a string with minimum "
			   "length 1, but got an empty string instead.");
	r->model = json_string_value(model);
	r->model_len = json_string_length(model);
	return 0;
}

/* The fields chat and completions share: sampling, n, max tokens, stream. */
static int check_generation(const json_t *root, struct openai_request *r,
			    struct openai_error *e)
{
	const json_t *so;
	uint64_t n = 1, mt = 0;

	if (opt_int(root, "max_tokens", 1, OPENAI_MAX_TOKENS_MAX, &mt, e) < 0)
		return -EINVAL;
	r->max_tokens = mt;
	if (r->endpoint == OPENAI_CHAT &&
	    opt_int(root, "max_completion_tokens", 1, OPENAI_MAX_TOKENS_MAX, &r->max_tokens, e) < 0)
		return -EINVAL;
	if (opt_int(root, "n", 1, OPENAI_N_MAX, &n, e) < 0)
		return -EINVAL;
	r->n = (uint32_t)n;
	if (opt_number(root, "temperature", 0, 2, e) < 0 || opt_number(root, "top_p", 0, 1, e) < 0)
		return -EINVAL;
	if (opt_bool(root, "stream", &r->stream, e) < 0)
		return -EINVAL;
	so = opt(root, "stream_options");
	if (so && !r->stream)
		return bad(e, "stream_options", "invalid_value",
			   "The 'stream_options' parameter is only allowed when 'stream' is "
			   "enabled.");
	if (so && !json_is_object(so))
		return bad_type(e, "stream_options", "an object", so);
	if (so && opt_bool(so, "include_usage", &r->include_usage, e) < 0)
		return bad_type(e, "stream_options.include_usage", "a boolean",
				json_object_get(so, "include_usage"));
	return 0;
}

static int check_embeddings(const json_t *root, struct openai_request *r,
			    struct openai_error *e)
{
	const json_t *fmt = opt(root, "encoding_format");
	uint64_t dims = OPENAI_EMBEDDING_DIMS;

	r->input = opt(root, "input");
	if (check_inputs(r->input, "input", true, &r->nprompts, e) < 0)
		return -EINVAL;
	if (opt_int(root, "dimensions", 1, OPENAI_EMBEDDING_DIMS_MAX, &dims, e) < 0)
		return -EINVAL;
	r->dimensions = (uint32_t)dims;
	if (fmt && !json_is_string(fmt))
		return bad_type(e, "encoding_format", "a string", fmt);
	if (fmt && strcmp(json_string_value(fmt), "base64") == 0)
		r->base64 = true;
	else if (fmt && strcmp(json_string_value(fmt), "float") != 0)
		return bad(e, "encoding_format", "invalid_value",
			   "Invalid value: '%.64s'. Supported values are: 'float' and 'base64'.",
			   json_string_value(fmt));
	r->input_tokens = openai_estimate_prompt(r->input);
	return 0;
}

static int check_root(const json_t *root, struct openai_request *r, struct openai_error *e)
{
	if (check_model(root, r, e) < 0)
		return -EINVAL;
	if (r->endpoint == OPENAI_EMBEDDINGS)
		return check_embeddings(root, r, e);
	r->nprompts = 1;
	if (r->endpoint == OPENAI_CHAT && check_messages(root, e) < 0)
		return -EINVAL;
	if (r->endpoint == OPENAI_COMPLETIONS) {
		r->input = opt(root, "prompt");
		if (check_inputs(r->input, "prompt", false, &r->nprompts, e) < 0)
			return -EINVAL;
	}
	if (check_generation(root, r, e) < 0)
		return -EINVAL;
	if ((uint64_t)r->n * r->nprompts > OPENAI_N_MAX)
		return bad(e, "n", "invalid_value",
			   "Invalid 'n': n times the number of prompts (%u x %u) must be <= %u.",
			   r->n, r->nprompts, OPENAI_N_MAX);
	r->input_tokens = r->endpoint == OPENAI_CHAT ?
		openai_estimate_chat(json_object_get(root, "messages")) :
		openai_estimate_prompt(r->input);
	return 0;
}

int openai__parse_json(enum openai_endpoint endpoint, const char *body, size_t len,
		       struct openai_request *out, struct openai_error *err)
{
	json_error_t jerr;
	json_t *root;

	memset(out, 0, sizeof(*out));
	out->endpoint = endpoint;
	out->n = 1;
	root = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!root) {
		if (json_error_code(&jerr) == json_error_out_of_memory)
			return -ENOMEM;
		return bad(err, NULL, NULL,
			   "We could not parse the JSON body of your request: %s at line %d "
			   "column %d (byte %d). The API expects a JSON payload, but what was sent "
			   "was not valid JSON.", jerr.text, jerr.line, jerr.column, jerr.position);
	}
	out->root = root;
	if (!json_is_object(root)) {
		bad(err, NULL, "invalid_type",
		    "The body of your request must be a JSON object, but it is %s.",
		    type_name(root));
		goto out_close;
	}
	if (check_root(root, out, err) < 0)
		goto out_close;
	return 0;
out_close:
	openai_request_close(out);
	return -EINVAL;
}

void openai_request_close(struct openai_request *r)
{
	if (!r)
		return;
	json_decref(r->root);
	free(r->model_copy);
	memset(r, 0, sizeof(*r));
}

int openai_parse(enum openai_endpoint endpoint, const char *body, size_t len,
		 struct openai_request *out, struct openai_error *err)
{
	int rc;

	if (endpoint == OPENAI_CHAT && (rc = openai__parse_fast_chat(body, len, out)) != -EAGAIN)
		return rc;
	return openai__parse_json(endpoint, body, len, out, err);
}
