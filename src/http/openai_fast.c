/* The fast path for chat completions: a one-pass scanner that validates and extracts a chat
 * body without building a jansson tree. It accepts a body only when jansson's path would accept
 * it with the same result; anything else (errors included) goes to openai__parse_json(), which
 * writes every error message. Split from openai.c to keep each file to one job. */
#include "http/openai.h"

#include <errno.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"

/* ---- the fast path for chat ----
 *
 * jansson reads its input through a per-byte stream callback and builds a tree of small
 * allocations (about 30 for a one-message chat body): with the tree freed again, that was two
 * thirds of a request's CPU time. A chat body is therefore first read by the scanner below,
 * which validates and extracts in one pass over the bytes. It is conservative: it accepts a body
 * only when the jansson path would accept it with the same result, and gives up otherwise: on any
 * JSON or validation error, on escapes in keys and in the strings it compares (model, role,
 * type), on a member it reads given twice, on an integer of 19 digits or more, on nesting deeper
 * than FAST_DEPTH. Giving up costs only the scan: the jansson path then runs from scratch and
 * writes the exact error message.
 *
 * What jansson accepts with JSON_DECODE_ANY | JSON_ALLOW_NUL (its load.c): RFC 8259 JSON whose
 * bytes are valid UTF-8 throughout; integers within long long and reals that do not overflow;
 * "\u0000" in strings but not in keys; surrogate escapes only in valid pairs; depth up to 2048.
 * A key given twice is accepted and the last value wins. */

#define FAST_DEPTH 64u    /* nested objects and arrays the scanner follows */
#define FAST_INT_DIGITS 18 /* always fits a long long */

struct scan {
	const char *p, *end;
	unsigned depth;
};

/* A string token: its raw bytes between the quotes and its length once unescaped. */
struct fstr {
	const char *raw;
	size_t raw_len;
	size_t len;
	bool esc;
};

typedef bool (*member_cb)(struct scan *s, const char *key, size_t key_len, void *ctx);
typedef bool (*elem_cb)(struct scan *s, void *ctx);

static bool skip_value(struct scan *s);

static void ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
		s->p++;
}

/* The next byte, or 0 at the end (a NUL in the input is refused wherever it appears). */
static char peek(const struct scan *s)
{
	return s->p < s->end ? *s->p : '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
		return (c | 0x20) - 'a' + 10;
	return -1;
}

/* The code unit of the "\uXXXX" at p (6 bytes available), or -1. */
static long u_escape(const char *p)
{
	long v = 0;
	int i, h;

	if (p[0] != '\\' || p[1] != 'u')
		return -1;
	for (i = 2; i < 6; i++) {
		if ((h = hexval(p[i])) < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/* A string at s->p (on its opening quote), validated as jansson does. */
static bool scan_string(struct scan *s, struct fstr *out)
{
	const char *p = s->p + 1, *end = s->end;
	size_t saved = 0, n;  /* bytes escapes save: raw length - unescaped length */
	long u, u2;

	out->raw = p;
	out->esc = false;
	for (;;) {
		p += buf_json_plain(p, (size_t)(end - p));
		if (p >= end)
			return false;
		if (*p == '"') {
			break;
		} else if ((unsigned char)*p >= 0x80) {
			if (!(n = buf_utf8_len(p, (size_t)(end - p))))
				return false;
			p += n;
		} else if (*p != '\\' || end - p < 2) {
			return false;  /* a control character, or the input ends */
		} else if (p[1] != 'u') {
			if (p[1] == '\0' || !strchr("\"\\/bfnrt", p[1]))
				return false;
			out->esc = true;
			p += 2;
			saved++;
		} else {
			out->esc = true;
			if (end - p < 6 || (u = u_escape(p)) < 0 || (u >= 0xdc00 && u <= 0xdfff))
				return false;
			p += 6;
			if (u >= 0xd800 && u <= 0xdbff) {
				/* A pair: 12 bytes for 4. */
				if (end - p < 6 || (u2 = u_escape(p)) < 0xdc00 || u2 > 0xdfff)
					return false;
				p += 6;
				saved += 8;
			} else {
				saved += u < 0x80 ? 5 : u < 0x800 ? 4 : 3;
			}
		}
	}
	out->raw_len = (size_t)(p - out->raw);
	out->len = out->raw_len - saved;
	s->p = p + 1;
	return true;
}

/* A number at s->p: integer or real, and its value as a double. */
static bool scan_number(struct scan *s, bool *is_int, double *value)
{
	const char *p = s->p, *end = s->end, *digits;
	bool neg = p < end && *p == '-';
	uint64_t u = 0;  /* wraps past FAST_INT_DIGITS digits, and is then not used */
	char tmp[64], *tail;

	p += neg;
	digits = p;
	if (p < end && *p == '0')
		p++;
	else if (p < end && *p >= '1' && *p <= '9')
		while (p < end && *p >= '0' && *p <= '9')
			u = u * 10 + (uint64_t)(*p++ - '0');
	else
		return false;
	*is_int = p == end || (*p != '.' && *p != 'e' && *p != 'E');
	if (*is_int) {
		if (p - digits > FAST_INT_DIGITS)
			return false;
		/* As jansson's json_int_t: "-0" is 0. */
		*value = (double)(neg ? -(long long)u : (long long)u);
		s->p = p;
		return true;
	}
	if (*p == '.') {
		if (++p == end || *p < '0' || *p > '9')
			return false;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || *p < '0' || *p > '9')
			return false;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	/* jansson refuses a real that overflows a double. strtod must read every byte: in a
	 * locale whose decimal point is not '.', it would not, and the scanner gives up. */
	if ((size_t)(p - s->p) >= sizeof(tmp))
		return false;
	memcpy(tmp, s->p, (size_t)(p - s->p));
	tmp[p - s->p] = '\0';
	*value = strtod(tmp, &tail);
	if (tail != tmp + (p - s->p) || *value > DBL_MAX || *value < -DBL_MAX)
		return false;
	s->p = p;
	return true;
}

static bool scan_word(struct scan *s, const char *w, size_t n)
{
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
		return false;
	s->p += n;
	return true;
}

/* An object at s->p: each member's value goes to cb (or is skipped when cb is NULL), which must
 * consume it. Keys with escapes are refused: one might spell a member the caller looks for. */
static bool scan_object(struct scan *s, member_cb cb, void *ctx)
{
	struct fstr k;

	if (peek(s) != '{' || ++s->depth > FAST_DEPTH)
		return false;
	s->p++;
	ws(s);
	if (peek(s) == '}') {
		s->p++;
		s->depth--;
		return true;
	}
	for (;;) {
		if (peek(s) != '"' || !scan_string(s, &k) || k.esc)
			return false;
		ws(s);
		if (peek(s) != ':')
			return false;
		s->p++;
		ws(s);
		if (!(cb ? cb(s, k.raw, k.raw_len, ctx) : skip_value(s)))
			return false;
		ws(s);
		if (peek(s) == '}')
			break;
		if (peek(s) != ',')
			return false;
		s->p++;
		ws(s);
	}
	s->p++;
	s->depth--;
	return true;
}

/* An array at s->p; each element goes to cb (or is skipped), which must consume it. */
static bool scan_array(struct scan *s, elem_cb cb, void *ctx, size_t *count)
{
	size_t n = 0;

	if (peek(s) != '[' || ++s->depth > FAST_DEPTH)
		return false;
	s->p++;
	ws(s);
	if (peek(s) != ']') {
		for (;;) {
			if (!(cb ? cb(s, ctx) : skip_value(s)))
				return false;
			n++;
			ws(s);
			if (peek(s) == ']')
				break;
			if (peek(s) != ',')
				return false;
			s->p++;
			ws(s);
		}
	}
	s->p++;
	s->depth--;
	if (count)
		*count = n;
	return true;
}

static bool skip_value(struct scan *s)
{
	struct fstr str;
	double d;
	bool i;

	switch (peek(s)) {
	case '{': return scan_object(s, NULL, NULL);
	case '[': return scan_array(s, NULL, NULL, NULL);
	case '"': return scan_string(s, &str);
	case 't': return scan_word(s, "true", 4);
	case 'f': return scan_word(s, "false", 5);
	case 'n': return scan_word(s, "null", 4);
	default: return scan_number(s, &i, &d);
	}
}

static bool scan_null(struct scan *s)
{
	return peek(s) == 'n' && scan_word(s, "null", 4);
}

/* An optional integer in [min, max]; null leaves *out alone. */
static bool fast_int(struct scan *s, double min, double max, uint64_t *out)
{
	bool is_int;
	double v;

	if (scan_null(s))
		return true;
	if (!scan_number(s, &is_int, &v) || !is_int || v < min || v > max)
		return false;
	*out = (uint64_t)v;
	return true;
}

/* An optional number in [min, max]. */
static bool fast_number(struct scan *s, double min, double max)
{
	bool is_int;
	double v;

	if (scan_null(s))
		return true;
	return scan_number(s, &is_int, &v) && v >= min && v <= max;
}

/* An optional boolean; null leaves *out alone. */
static bool fast_bool(struct scan *s, bool *out)
{
	if (scan_null(s))
		return true;
	if (scan_word(s, "true", 4)) {
		*out = true;
		return true;
	}
	*out = false;
	return scan_word(s, "false", 5);
}

struct field {
	const char *name;
	size_t len;
};

#define FIELD(x) { x, sizeof(x) - 1 }

static int field_index(const struct field *f, size_t n, const char *key, size_t len)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (f[i].len == len && memcmp(f[i].name, key, len) == 0)
			return (int)i;
	return -1;
}

/* Marks member f seen; false when it was already (the last one would win: give up). */
static bool first_time(unsigned *seen, int f)
{
	if (*seen & (1u << f))
		return false;
	*seen |= 1u << f;
	return true;
}

static bool str_is(const struct fstr *v, const char *w)
{
	return v->raw_len == strlen(w) && memcmp(v->raw, w, v->raw_len) == 0;
}

enum { P_TYPE, P_TEXT };
static const struct field part_fields[] = { FIELD("type"), FIELD("text") };

struct fast_part {
	unsigned seen;
	struct fstr type;
	bool text_is_str;
	size_t text_len;
};

static bool part_member(struct scan *s, const char *key, size_t len, void *ctx)
{
	struct fast_part *fp = ctx;
	int f = field_index(part_fields, 2, key, len);
	struct fstr v;

	if (f < 0)
		return skip_value(s);
	if (!first_time(&fp->seen, f))
		return false;
	if (f == P_TYPE)
		return peek(s) == '"' && scan_string(s, &fp->type) && !fp->type.esc;
	if (peek(s) != '"')
		return skip_value(s);
	fp->text_is_str = true;
	if (!scan_string(s, &v))
		return false;
	fp->text_len = v.len;
	return true;
}

/* One element of an array `content` (check_content, content_tokens). */
static bool content_part(struct scan *s, void *ctx)
{
	uint64_t *tokens = ctx;
	struct fast_part fp = { 0 };

	if (!scan_object(s, part_member, &fp) || !(fp.seen & (1u << P_TYPE)))
		return false;
	if (str_is(&fp.type, "text") && !fp.text_is_str)
		return false;
	if (fp.text_is_str)
		*tokens += openai__ceil4(fp.text_len);
	else if (str_is(&fp.type, "image_url"))
		*tokens += OPENAI_IMAGE_TOKENS;
	return true;
}

enum { M_ROLE, M_CONTENT, M_NAME };
static const struct field message_fields[] = { FIELD("role"), FIELD("content"), FIELD("name") };

struct fast_message {
	unsigned seen;
	struct fstr role;
	uint64_t tokens;  /* content and name */
};

static bool message_member(struct scan *s, const char *key, size_t len, void *ctx)
{
	struct fast_message *m = ctx;
	int f = field_index(message_fields, 3, key, len);
	struct fstr v;

	if (f < 0)
		return skip_value(s);
	if (!first_time(&m->seen, f))
		return false;
	if (f == M_ROLE)
		return peek(s) == '"' && scan_string(s, &m->role) && !m->role.esc;
	if (scan_null(s))
		return true;
	if (f == M_CONTENT && peek(s) == '[')
		return scan_array(s, content_part, &m->tokens, NULL);
	if (peek(s) != '"' || !scan_string(s, &v))
		return false;
	m->tokens += openai__ceil4(v.len);
	return true;
}

/* One element of `messages` (check_message, openai_estimate_chat). */
static bool message(struct scan *s, void *ctx)
{
	uint64_t *tokens = ctx;
	struct fast_message m = { 0 };
	const char *const *r;

	if (!scan_object(s, message_member, &m) || !(m.seen & (1u << M_ROLE)))
		return false;
	for (r = openai__roles; *r; r++)
		if (str_is(&m.role, *r))
			break;
	if (!*r || (!(m.seen & (1u << M_CONTENT)) && strcmp(*r, "assistant") != 0))
		return false;
	*tokens += 4 + m.tokens;
	return true;
}

enum {
	C_MODEL, C_MESSAGES, C_MAX_TOKENS, C_MAX_COMPLETION_TOKENS, C_N, C_TEMPERATURE, C_TOP_P,
	C_STREAM, C_STREAM_OPTIONS, C__COUNT
};
static const struct field chat_fields[C__COUNT] = {
	FIELD("model"), FIELD("messages"), FIELD("max_tokens"), FIELD("max_completion_tokens"),
	FIELD("n"), FIELD("temperature"), FIELD("top_p"), FIELD("stream"),
	FIELD("stream_options"),
};

struct fast_chat {
	struct openai_request *r;
	unsigned seen;
	struct fstr model;
	uint64_t tokens;
	uint64_t max_tokens, max_completion_tokens, n;
	bool stream_options;  /* given, and not null */
	unsigned so_seen;
};

static bool stream_options_member(struct scan *s, const char *key, size_t len, void *ctx)
{
	struct fast_chat *c = ctx;

	if (len != 13 || memcmp(key, "include_usage", 13) != 0)
		return skip_value(s);
	return first_time(&c->so_seen, 0) && fast_bool(s, &c->r->include_usage);
}

static bool chat_member(struct scan *s, const char *key, size_t len, void *ctx)
{
	struct fast_chat *c = ctx;
	int f = field_index(chat_fields, C__COUNT, key, len);
	size_t count;

	if (f < 0)
		return skip_value(s);
	if (!first_time(&c->seen, f))
		return false;
	switch (f) {
	case C_MODEL:
		return peek(s) == '"' && scan_string(s, &c->model) && !c->model.esc &&
		       c->model.len > 0;
	case C_MESSAGES:
		return scan_array(s, message, &c->tokens, &count) && count > 0;
	case C_MAX_TOKENS:
		return fast_int(s, 1, OPENAI_MAX_TOKENS_MAX, &c->max_tokens);
	case C_MAX_COMPLETION_TOKENS:
		return fast_int(s, 1, OPENAI_MAX_TOKENS_MAX, &c->max_completion_tokens);
	case C_N:
		return fast_int(s, 1, OPENAI_N_MAX, &c->n);
	case C_TEMPERATURE:
		return fast_number(s, 0, 2);
	case C_TOP_P:
		return fast_number(s, 0, 1);
	case C_STREAM:
		return fast_bool(s, &c->r->stream);
	default:
		if (scan_null(s))
			return true;
		c->stream_options = true;
		return scan_object(s, stream_options_member, c);
	}
}

int openai__parse_fast_chat(const char *body, size_t len, struct openai_request *out)
{
	struct scan s = { body, body + len, 0 };
	struct fast_chat c = { .r = out, .tokens = 3, .n = 1 };
	int err = -EAGAIN;

	memset(out, 0, sizeof(*out));
	out->endpoint = OPENAI_CHAT;
	ws(&s);
	if (!scan_object(&s, chat_member, &c))
		goto out_clear;
	ws(&s);
	if (s.p != s.end || !(c.seen & (1u << C_MODEL)) || !(c.seen & (1u << C_MESSAGES)) ||
	    (c.stream_options && !out->stream))
		goto out_clear;
	err = -ENOMEM;
	if (!(out->model_copy = malloc(c.model.len + 1)))
		goto out_clear;
	memcpy(out->model_copy, c.model.raw, c.model.len);
	out->model_copy[c.model.len] = '\0';
	out->model = out->model_copy;
	out->model_len = c.model.len;
	out->max_tokens = c.max_completion_tokens ? c.max_completion_tokens : c.max_tokens;
	out->n = (uint32_t)c.n;
	out->nprompts = 1;
	out->input_tokens = c.tokens;
	return 0;
out_clear:
	memset(out, 0, sizeof(*out));
	return err;
}

