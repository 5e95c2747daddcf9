#include "http/mock.h"

#include <errno.h>
#include <string.h>

#include "http/openai.h"

struct word {
	const char *s;
	size_t len;
};

#define WORD_LIST(X)                                                                             \
	X("the") X("quick") X("brown") X("fox") X("jumps") X("over") X("a") X("lazy") X("dog")   \
	X("while") X("rate") X("limits") X("keep") X("every") X("token") X("within") X("its")    \
	X("sliding") X("window") X("so") X("no") X("key") X("ever") X("takes") X("more")         \
	X("than") X("share") X("of") X("minute") X("budget") X("and") X("then")
#define W(x) { x, sizeof(x) - 1 },
static const struct word words[] = { WORD_LIST(W) };
#undef W
/* The words in order, each followed by a space: the content of choice j is a run of this text
 * read cyclically, so it is copied in a few pieces rather than word by word. */
#define SPACED(x) x " "
static const char cycle[] = WORD_LIST(SPACED);
#undef SPACED
#define NWORDS (sizeof(words) / sizeof(words[0]))
#define WORD_MAX 8 /* longest word above */

/* Models GET /v1/models advertises; created is a fixed date so the list is stable. */
static const char *const models[] = { "gpt-4o-mini", "gpt-4o", "gpt-4.1-mini",
				      "gpt-3.5-turbo-instruct", "text-embedding-3-small",
				      "llmlimit-mock" };
#define MODEL_CREATED 1735689600

uint64_t mock_choice_tokens(uint64_t prompt_tokens, uint64_t cap, bool *length)
{
	uint64_t want = prompt_tokens / 2 + (prompt_tokens & 1);
	uint64_t bound = cap < MOCK_MAX_CHOICE_TOKENS ? cap : MOCK_MAX_CHOICE_TOKENS;

	if (want < 1)
		want = 1;
	*length = want > bound;
	return *length ? bound : want;
}

/* Appends `count` words of choice `choice` starting at word index `first`, space separated
 * (with a leading space when first > 0, so streamed pieces concatenate to the whole). */
static int put_words(struct buf *out, uint32_t choice, uint64_t first, uint64_t count)
{
	size_t w = (size_t)((first + choice) % NWORDS), off = 0, i, n;
	char *p;

	if (count > SIZE_MAX / (WORD_MAX + 2) || buf_reserve(out, count * (WORD_MAX + 1)) < 0)
		return -ENOMEM;
	if (count == 0)
		return 0;
	for (i = 0; i < w; i++)
		off += words[i].len + 1;
	p = out->data + out->len;
	if (first > 0)
		*p++ = ' ';
	/* Words w.. up to the end of the list (or the last one wanted), with their spaces. */
	while (count) {
		size_t take = count < NWORDS - w ? (size_t)count : NWORDS - w;

		if (take == NWORDS) {
			n = sizeof(cycle) - 1;
		} else {
			for (n = 0, i = w; i < w + take; i++)
				n += words[i].len + 1;
		}
		memcpy(p, cycle + off, n);
		p += n;
		count -= take;
		w = 0;
		off = 0;
	}
	out->len = (size_t)(p - 1 - out->data);  /* without the last word's space */
	out->data[out->len] = '\0';
	return 0;
}

/* Appends bytes already in out (at off, len) again, e.g. a repeated event prefix. */
static int put_again(struct buf *out, size_t off, size_t len)
{
	if (buf_reserve(out, len) < 0)
		return -ENOMEM;
	memcpy(out->data + out->len, out->data + off, len);
	out->len += len;
	out->data[out->len] = '\0';
	return 0;
}

static int put_usage(struct buf *out, uint64_t prompt, uint64_t completion, bool details)
{
	int err = 0;

	err |= buf_puts(out, "{\"prompt_tokens\":");
	err |= buf_put_u64(out, prompt);
	err |= buf_puts(out, ",\"completion_tokens\":");
	err |= buf_put_u64(out, completion);
	err |= buf_puts(out, ",\"total_tokens\":");
	err |= buf_put_u64(out, prompt + completion);
	if (details)
		err |= buf_puts(out, ",\"prompt_tokens_details\":{\"cached_tokens\":0,"
				"\"audio_tokens\":0},\"completion_tokens_details\":{"
				"\"reasoning_tokens\":0,\"audio_tokens\":0,"
				"\"accepted_prediction_tokens\":0,"
				"\"rejected_prediction_tokens\":0}");
	err |= buf_puts(out, "}");
	return err;
}

/* The members every response and chunk starts with, up to and including `"choices":[`. */
static int put_head(struct buf *out, const struct mock_call *c, bool chat, const char *object)
{
	static const char hex[] = "0123456789abcdef";
	char id[16];
	int err = 0, i;

	for (i = 0; i < 16; i++)
		id[i] = hex[(c->id >> (60 - 4 * i)) & 15];
	err |= buf_puts(out, chat ? "{\"id\":\"chatcmpl-" : "{\"id\":\"cmpl-");
	err |= buf_append(out, id, sizeof(id));
	err |= buf_puts(out, "\",\"object\":\"");
	err |= buf_puts(out, object);
	err |= buf_puts(out, "\",\"created\":");
	err |= buf_put_u64(out, c->created);
	err |= buf_puts(out, ",\"model\":");
	err |= buf_put_json_str(out, c->model, c->model_len);
	err |= buf_puts(out, ",\"system_fingerprint\":\"" MOCK_FINGERPRINT "\",\"choices\":[");
	return err;
}

/* Ends a choice: `,"logprobs":null,"finish_reason":"<finish>"}`. */
static int put_finish(struct buf *out, const char *finish)
{
	int err = buf_puts(out, ",\"logprobs\":null,\"finish_reason\":\"");

	err |= buf_puts(out, finish);
	err |= buf_puts(out, "\"}");
	return err;
}

static int put_whole(struct buf *out, const struct mock_call *c, bool chat, uint64_t per,
		     const char *finish)
{
	uint32_t j;
	int err = put_head(out, c, chat, chat ? "chat.completion" : "text_completion");

	for (j = 0; j < c->choices; j++) {
		err |= buf_puts(out, j ? ",{" : "{");
		if (chat) {
			err |= buf_puts(out, "\"index\":");
			err |= buf_put_u64(out, j);
			err |= buf_puts(out, ",\"message\":{\"role\":\"assistant\",\"content\":\"");
			err |= put_words(out, j, 0, per);
			err |= buf_puts(out, "\",\"refusal\":null}");
		} else {
			err |= buf_puts(out, "\"text\":\"");
			err |= put_words(out, j, 0, per);
			err |= buf_puts(out, "\",\"index\":");
			err |= buf_put_u64(out, j);
		}
		err |= put_finish(out, finish);
	}
	err |= buf_puts(out, "],\"usage\":");
	err |= put_usage(out, c->prompt_tokens, per * c->choices, chat);
	err |= buf_puts(out, chat ? ",\"service_tier\":\"default\"}\n" : "}\n");
	return err;
}

/* A stream's events all start with the same "data: {...,\"choices\":[" head: it is written
 * once and copied for every later event. */
struct stream {
	struct buf *out;
	size_t off, len;  /* the first head, in out */
	bool fresh;       /* that head still waits for its event */
	const char *tail; /* closes an event */
};

static int event_start(struct stream *s)
{
	if (s->fresh) {
		s->fresh = false;
		return 0;
	}
	return put_again(s->out, s->off, s->len);
}

static int put_stream(struct buf *out, const struct mock_call *c, bool chat, uint64_t per,
		      const char *finish)
{
	struct stream s = { out, out->len, 0, true,
			    c->include_usage ? "],\"usage\":null}\n\n" : "]}\n\n" };
	uint64_t k, n;
	uint32_t j;
	int err = buf_puts(out, "data: ");

	err |= put_head(out, c, chat, chat ? "chat.completion.chunk" : "text_completion");
	s.len = out->len - s.off;
	for (j = 0; j < c->choices && !err; j++) {
		if (chat) {
			err |= event_start(&s);
			err |= buf_puts(out, "{\"index\":");
			err |= buf_put_u64(out, j);
			err |= buf_puts(out, ",\"delta\":{\"role\":\"assistant\",\"content\":\"\","
					"\"refusal\":null},\"logprobs\":null,"
					"\"finish_reason\":null}");
			err |= buf_puts(out, s.tail);
		}
		for (k = 0; k < per; k += n) {
			n = per - k < MOCK_STREAM_WORDS ? per - k : MOCK_STREAM_WORDS;
			err |= event_start(&s);
			if (chat) {
				err |= buf_puts(out, "{\"index\":");
				err |= buf_put_u64(out, j);
				err |= buf_puts(out, ",\"delta\":{\"content\":\"");
				err |= put_words(out, j, k, n);
				err |= buf_puts(out, "\"}");
			} else {
				err |= buf_puts(out, "{\"text\":\"");
				err |= put_words(out, j, k, n);
				err |= buf_puts(out, "\",\"index\":");
				err |= buf_put_u64(out, j);
			}
			err |= buf_puts(out, ",\"logprobs\":null,\"finish_reason\":null}");
			err |= buf_puts(out, s.tail);
		}
		err |= event_start(&s);
		err |= buf_puts(out, chat ? "{\"index\":" : "{\"text\":\"\",\"index\":");
		err |= buf_put_u64(out, j);
		if (chat)
			err |= buf_puts(out, ",\"delta\":{}");
		err |= put_finish(out, finish);
		err |= buf_puts(out, s.tail);
	}
	if (c->include_usage) {
		err |= event_start(&s);
		err |= buf_puts(out, "],\"usage\":");
		err |= put_usage(out, c->prompt_tokens, per * c->choices, chat);
		err |= buf_puts(out, "}\n\n");
	}
	if (s.fresh && !err)
		out->len = s.off;  /* no event used the head */
	err |= buf_puts(out, "data: [DONE]\n\n");
	return err;
}

static int generate(struct buf *out, const struct mock_call *c, bool chat,
		    uint64_t *completion_tokens)
{
	bool length;
	uint64_t per = mock_choice_tokens(c->prompt_tokens, c->cap, &length);
	const char *finish = length ? "length" : "stop";
	int err;

	err = c->stream ? put_stream(out, c, chat, per, finish) : put_whole(out, c, chat, per,
									   finish);
	if (err)
		return -ENOMEM;
	*completion_tokens = per * c->choices;
	return 0;
}

int mock_chat(struct buf *out, const struct mock_call *c, uint64_t *completion_tokens)
{
	return generate(out, c, true, completion_tokens);
}

int mock_completions(struct buf *out, const struct mock_call *c, uint64_t *completion_tokens)
{
	return generate(out, c, false, completion_tokens);
}

/* ---- embeddings ---- */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

/* The seed of one input: its string bytes, or its token ids as 8-byte little-endian words. */
static uint64_t input_seed(const json_t *item)
{
	uint64_t h = 1469598103934665603ull;
	const json_t *t;
	size_t i;

	if (json_is_string(item))
		return fnv1a(h, json_string_value(item), json_string_length(item));
	json_array_foreach(item, i, t) {
		uint64_t v = (uint64_t)json_integer_value(t);
		unsigned char le[8];
		int b;

		for (b = 0; b < 8; b++)
			le[b] = (unsigned char)(v >> (8 * b));
		h = fnv1a(h, le, sizeof(le));
	}
	return h;
}

static double unit(uint64_t *s)
{
	return (double)(splitmix64(s) >> 11) * 0x1p-52 - 1.0;  /* [-1, 1) */
}

/* sqrt by Newton's method, so the pure library needs no libm. Starting at or above the root,
 * the iterates fall monotonically onto it. */
static double root(double x)
{
	double r = x > 1 ? x : 1;
	int i;

	for (i = 0; i < 64 && r * r - x > 1e-12 * x; i++)
		r = (r + x / r) / 2;
	return r;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put_b64(char *p, const unsigned char *in, size_t n)
{
	size_t i;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*p++ = b64[v >> 18];
		*p++ = b64[v >> 12 & 63];
		*p++ = b64[v >> 6 & 63];
		*p++ = b64[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);

		*p++ = b64[v >> 18];
		*p++ = b64[v >> 12 & 63];
		*p++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
		*p++ = '=';
	}
}

/* Appends one vector: the quantised values as JSON numbers ("-0.012345") or base64. */
static int put_vector(struct buf *out, uint64_t seed, uint32_t dims, bool base64)
{
	unsigned char raw[OPENAI_EMBEDDING_DIMS_MAX * 4];
	double norm = 0;
	uint64_t s = seed;
	uint32_t i;
	char *p;

	for (i = 0; i < dims; i++) {
		double x = unit(&s);

		norm += x * x;
	}
	norm = norm > 0 ? root(norm) : 1;
	if (buf_reserve(out, (size_t)dims * 10 + 8) < 0)
		return -ENOMEM;
	p = out->data + out->len;
	*p++ = base64 ? '"' : '[';
	s = seed;
	for (i = 0; i < dims; i++) {
		double x = unit(&s) / norm * 1e6;
		long q = (long)(x < 0 ? x - 0.5 : x + 0.5);
		unsigned long a = (unsigned long)(q < 0 ? -q : q);

		if (base64) {
			float f = (float)((double)q / 1e6);
			uint32_t bits;

			memcpy(&bits, &f, sizeof(bits));
			raw[4 * i] = (unsigned char)bits;
			raw[4 * i + 1] = (unsigned char)(bits >> 8);
			raw[4 * i + 2] = (unsigned char)(bits >> 16);
			raw[4 * i + 3] = (unsigned char)(bits >> 24);
			continue;
		}
		if (i)
			*p++ = ',';
		if (q < 0)
			*p++ = '-';
		*p++ = (char)('0' + a / 1000000);
		*p++ = '.';
		for (unsigned long d = 100000; d; d /= 10)
			*p++ = (char)('0' + a / d % 10);
	}
	if (base64) {
		put_b64(p, raw, (size_t)dims * 4);
		p += ((size_t)dims * 4 + 2) / 3 * 4;
	}
	*p++ = base64 ? '"' : ']';
	out->len = (size_t)(p - out->data);
	out->data[out->len] = '\0';
	return 0;
}

int mock_embeddings(struct buf *out, const json_t *input, const char *model, size_t model_len,
		    uint32_t dims, bool base64, uint64_t prompt_tokens)
{
	/* A string or a single token list is one input; otherwise each element is one. */
	bool single = json_is_string(input) || json_is_integer(json_array_get(input, 0));
	size_t i, n = single ? 1 : json_array_size(input);
	int err = buf_puts(out, "{\"object\":\"list\",\"data\":[");

	if (dims > OPENAI_EMBEDDING_DIMS_MAX)
		return -EINVAL;
	for (i = 0; i < n && !err; i++) {
		const json_t *item = single ? input : json_array_get(input, i);

		err |= buf_puts(out, i ? ",{\"object\":\"embedding\",\"index\":" :
				"{\"object\":\"embedding\",\"index\":");
		err |= buf_put_u64(out, i);
		err |= buf_puts(out, ",\"embedding\":");
		err |= put_vector(out, input_seed(item), dims, base64);
		err |= buf_puts(out, "}");
	}
	err |= buf_puts(out, "],\"model\":");
	err |= buf_put_json_str(out, model, model_len);
	err |= buf_puts(out, ",\"usage\":{\"prompt_tokens\":");
	err |= buf_put_u64(out, prompt_tokens);
	err |= buf_puts(out, ",\"total_tokens\":");
	err |= buf_put_u64(out, prompt_tokens);
	err |= buf_puts(out, "}}\n");
	return err ? -ENOMEM : 0;
}

/* ---- models ---- */

static int put_model(struct buf *out, const char *id, size_t id_len)
{
	int err = buf_puts(out, "{\"id\":");

	err |= buf_put_json_str(out, id, id_len);
	err |= buf_printf(out, ",\"object\":\"model\",\"created\":%d,\"owned_by\":\"llmlimit\"}",
			  MODEL_CREATED);
	return err;
}

int mock_models(struct buf *out)
{
	size_t i;
	int err = buf_puts(out, "{\"object\":\"list\",\"data\":[");

	for (i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
		if (i)
			err |= buf_puts(out, ",");
		err |= put_model(out, models[i], strlen(models[i]));
	}
	err |= buf_puts(out, "]}\n");
	return err ? -ENOMEM : 0;
}

int mock_model(struct buf *out, const char *id, size_t id_len)
{
	int err = put_model(out, id, id_len);

	err |= buf_puts(out, "\n");
	return err ? -ENOMEM : 0;
}
