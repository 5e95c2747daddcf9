/* keys.c — the keys file: parse with jansson, validate everything, then flatten into an
 * immutable table (tiers resolved into each key) with an open-addressing hash index.
 *
 * Semantic errors name the line of the offending member. jansson does not keep positions for
 * values, so a small scanner (find_line) walks the original text along the member path; it only
 * runs on the error path, on text jansson has already accepted. */
#include "http/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "window/table.h"

#define KEYS_FILE_MAX (64u << 20)
#define KEYS_MAX_TOKENS_MAX 1000000u

const char keys_example_json[] =
	"{\n"
	"  \"tiers\": {\n"
	"    \"default\": {\"rpm\": 1000, \"input_tpm\": 10000, \"output_tpm\": 5000,"
	" \"default_max_tokens\": 256},\n"
	"    \"small\": {\"rpm\": 60, \"input_tpm\": 2000, \"output_tpm\": 1000,"
	" \"default_max_tokens\": 64}\n"
	"  },\n"
	"  \"keys\": {\n"
	"    \"test_key_1\": {\"tier\": \"default\"},\n"
	"    \"test_key_2\": {\"tier\": \"default\"},\n"
	"    \"test_key_3\": {\"tier\": \"default\"},\n"
	"    \"test_key_4\": {\"tier\": \"default\"},\n"
	"    \"test_key_5\": {\"tier\": \"default\"}\n"
	"  },\n"
	"  \"unknown_keys\": \"reject\"\n"
	"}\n";

struct keys_entry {
	char *name;   /* owned, NUL-terminated */
	size_t name_len;
	uint64_t hash;
	struct keys_limits limits;
};

struct keys_config {
	struct keys_entry *keys;
	size_t nkeys;
	uint32_t *slots;  /* index + 1 into keys; 0 is empty. Power-of-two sized. */
	size_t nslots;
	char **tier_names;  /* owned; keys_limits.tier points into these */
	struct keys_limits *tiers;
	size_t ntiers;
	const struct keys_limits *unknown;  /* the default tier when unknown_keys is "default" */
};

static const char *const dim_field[WINDOW_DIMS] = { "rpm", "input_tpm", "output_tpm" };

/* ---- locating a member path in the text, for error messages ---- */

struct scan {
	const char *p, *end;
	unsigned line;
};

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) {
		if (*s->p == '\n')
			s->line++;
		s->p++;
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static unsigned read_u4(const char *p)
{
	unsigned v = 0;
	int i;

	for (i = 0; i < 4; i++)
		v = v << 4 | (unsigned)(hexval(p[i]) < 0 ? 0 : hexval(p[i]));
	return v;
}

/* Consumes the string at s->p (which is '"') and tells whether its decoded bytes equal want.
 * The text is already known to be valid JSON, so escapes are well formed. */
static bool string_eq(struct scan *s, const char *want)
{
	size_t wlen = want ? strlen(want) : 0, at = 0;
	bool eq = want != NULL;

	s->p++;
	while (s->p < s->end && *s->p != '"') {
		char tmp[4];
		size_t n = 1;

		if (*s->p != '\\') {
			tmp[0] = *s->p++;
		} else if (s->end - s->p >= 6 && s->p[1] == 'u') {
			unsigned cp = read_u4(s->p + 2);

			s->p += 6;
			if (cp >= 0xd800 && cp < 0xdc00 && s->end - s->p >= 6 && s->p[0] == '\\' &&
			    s->p[1] == 'u') {
				cp = 0x10000 + ((cp - 0xd800) << 10) + (read_u4(s->p + 2) - 0xdc00);
				s->p += 6;
			}
			if (cp < 0x80) {
				tmp[0] = (char)cp;
			} else if (cp < 0x800) {
				tmp[0] = (char)(0xc0 | cp >> 6);
				tmp[1] = (char)(0x80 | (cp & 0x3f));
				n = 2;
			} else if (cp < 0x10000) {
				tmp[0] = (char)(0xe0 | cp >> 12);
				tmp[1] = (char)(0x80 | (cp >> 6 & 0x3f));
				tmp[2] = (char)(0x80 | (cp & 0x3f));
				n = 3;
			} else {
				tmp[0] = (char)(0xf0 | cp >> 18);
				tmp[1] = (char)(0x80 | (cp >> 12 & 0x3f));
				tmp[2] = (char)(0x80 | (cp >> 6 & 0x3f));
				tmp[3] = (char)(0x80 | (cp & 0x3f));
				n = 4;
			}
		} else if (s->end - s->p >= 2) {
			const char *esc = strchr("b\bf\fn\nr\rt\t", s->p[1]);

			tmp[0] = esc && s->p[1] ? esc[1] : s->p[1];
			s->p += 2;
		} else {
			s->p++;
			continue;
		}
		if (eq && (at + n > wlen || memcmp(want + at, tmp, n) != 0))
			eq = false;
		at += n;
	}
	if (s->p < s->end)
		s->p++;
	return eq && at == wlen;
}

/* Skips one value (scalar, string, object or array), counting newlines. */
static void skip_value(struct scan *s)
{
	int depth = 0;

	do {
		skip_ws(s);
		if (s->p >= s->end)
			return;
		switch (*s->p) {
		case '"':
			(void)string_eq(s, NULL);
			break;
		case '{':
		case '[':
			depth++;
			s->p++;
			break;
		case '}':
		case ']':
			depth--;
			s->p++;
			break;
		case ',':
		case ':':
			s->p++;
			break;
		default:
			/* A scalar; advancing at least once guarantees progress. */
			do
				s->p++;
			while (s->p < s->end && !strchr(" \t\r\n,:{}[]\"", *s->p));
		}
	} while (depth > 0);
}

/* The 1-based line of the member at `path` (npath names, descending through objects), or the
 * line of the deepest member found when the path goes missing part way. */
static unsigned find_line(const char *text, size_t len, const char *const *path, size_t npath)
{
	struct scan s = { text, text + len, 1 };
	unsigned found = 1;
	size_t i;

	for (i = 0; i < npath; i++) {
		skip_ws(&s);
		if (s.p >= s.end || *s.p != '{')
			return found;
		s.p++;
		for (;;) {
			unsigned line;
			bool eq;

			skip_ws(&s);
			if (s.p >= s.end || *s.p != '"')
				return found;
			line = s.line;
			eq = string_eq(&s, path[i]);
			skip_ws(&s);
			if (s.p < s.end && *s.p == ':')
				s.p++;
			if (eq) {
				found = line;
				break;
			}
			skip_value(&s);
			skip_ws(&s);
			if (s.p >= s.end || *s.p != ',')
				return found;
			s.p++;
		}
	}
	return found;
}

/* ---- validation ---- */

struct ctx {
	const char *text;
	size_t len;
	char *errbuf;
	size_t errlen;
};

/* Writes "keys file line N: a.b.c: <message>" and returns -EINVAL. */
__attribute__((format(printf, 4, 5)))
static int fail(const struct ctx *c, const char *const *path, size_t npath, const char *fmt, ...)
{
	char msg[256];
	size_t at;
	va_list ap;
	size_t i;

	if (!c->errbuf || c->errlen == 0)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	at = (size_t)snprintf(c->errbuf, c->errlen, "keys file line %u: ",
			      find_line(c->text, c->len, path, npath));
	for (i = 0; i < npath && at < c->errlen; i++)
		at += (size_t)snprintf(c->errbuf + at, c->errlen - at, "%s%.64s", i ? "." : "",
				       path[i]);
	if (at < c->errlen)
		snprintf(c->errbuf + at, c->errlen - at, "%s%s", npath ? ": " : "", msg);
	return -EINVAL;
}

/* out = path[0..depth) + name; depth <= 2. */
static void extend(const char **out, const char *const *path, size_t depth, const char *name)
{
	size_t i;

	for (i = 0; i < depth; i++)
		out[i] = path[i];
	out[depth] = name;
}

/* Reads an optional limit member into *out. Absent: *out untouched, returns 0. */
static int read_limit(const struct ctx *c, json_t *obj, const char *const *path, size_t depth,
		      const char *field, uint64_t max, bool allow_null, uint64_t *out)
{
	const char *p[4];
	json_t *v = json_object_get(obj, field);

	extend(p, path, depth, field);

	if (!v)
		return 0;
	if (json_is_null(v) && allow_null) {
		*out = WINDOW_UNLIMITED;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    (uint64_t)json_integer_value(v) > max)
		return fail(c, p, depth + 1, "must be a positive integer <= %llu%s",
			    (unsigned long long)max, allow_null ? " or null" : "");
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* Checks that obj has only known members; names the first unknown one. */
static int only_fields(const struct ctx *c, json_t *obj, const char *const *path, size_t depth,
		       const char *const *allowed)
{
	const char *name;
	json_t *v;

	json_object_foreach(obj, name, v) {
		const char *const *a;
		const char *p[4];

		extend(p, path, depth, name);
		for (a = allowed; *a; a++)
			if (strcmp(*a, name) == 0)
				break;
		if (!*a)
			return fail(c, p, depth + 1, "unknown field");
	}
	return 0;
}

/* Reads rpm/input_tpm/output_tpm/default_max_tokens of a tier or key object over *lim. */
static int read_limits(const struct ctx *c, json_t *obj, const char *const *path, size_t depth,
		       struct keys_limits *lim)
{
	int err, d;

	for (d = 0; d < WINDOW_DIMS; d++)
		if ((err = read_limit(c, obj, path, depth, dim_field[d], WINDOW_LIMIT_MAX, true,
				      &lim->limit[d])) < 0)
			return err;
	return read_limit(c, obj, path, depth, "default_max_tokens", KEYS_MAX_TOKENS_MAX, false,
			  &lim->default_max_tokens);
}

static const char *const limit_fields[] = { "rpm", "input_tpm", "output_tpm",
					    "default_max_tokens", NULL };
static const char *const key_fields[] = { "tier", "rpm", "input_tpm", "output_tpm",
					  "default_max_tokens", NULL };
static const char *const top_fields[] = { "tiers", "keys", "unknown_keys", NULL };

static int parse_tiers(const struct ctx *c, json_t *tiers, struct keys_config *k)
{
	const char *name;
	json_t *t;
	int err, d;

	k->ntiers = json_object_size(tiers);
	if (k->ntiers == 0)
		return 0;
	k->tiers = calloc(k->ntiers, sizeof(*k->tiers));
	k->tier_names = calloc(k->ntiers, sizeof(*k->tier_names));
	if (!k->tiers || !k->tier_names)
		return -ENOMEM;
	k->ntiers = 0;
	json_object_foreach(tiers, name, t) {
		const char *path[3] = { "tiers", name, NULL };
		struct keys_limits *lim = &k->tiers[k->ntiers];

		if (!(k->tier_names[k->ntiers] = strdup(name)))
			return -ENOMEM;
		k->ntiers++;
		if (!json_is_object(t))
			return fail(c, path, 2, "must be an object");
		if ((err = only_fields(c, t, path, 2, limit_fields)) < 0)
			return err;
		for (d = 0; d < WINDOW_DIMS; d++) {
			const char *p[3] = { "tiers", name, dim_field[d] };

			if (!json_object_get(t, dim_field[d]))
				return fail(c, p, 2, "missing %s (use null for no limit)",
					    dim_field[d]);
		}
		lim->default_max_tokens = KEYS_DEFAULT_MAX_TOKENS;
		lim->tier = k->tier_names[k->ntiers - 1];
		if ((err = read_limits(c, t, path, 2, lim)) < 0)
			return err;
	}
	return 0;
}

static const struct keys_limits *find_tier(const struct keys_config *k, const char *name)
{
	size_t i;

	for (i = 0; i < k->ntiers; i++)
		if (strcmp(k->tier_names[i], name) == 0)
			return &k->tiers[i];
	return NULL;
}

/* FNV-1a. The table is built from the trusted keys file, so lookups of attacker-chosen keys
 * cannot lengthen its probe sequences; a keyed hash buys nothing here. */
static uint64_t key_hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h;
}

static int parse_key(const struct ctx *c, const char *name, json_t *v, struct keys_config *k,
		     struct keys_entry *e)
{
	const char *path[3] = { "keys", name, NULL };
	const struct keys_limits *base = NULL;
	json_t *tier;
	size_t i;
	int err, d;

	e->name_len = strlen(name);
	if (e->name_len == 0 || e->name_len > WINDOW_KEY_MAX)
		return fail(c, path, 2, "a key must be 1 to %u bytes long", WINDOW_KEY_MAX);
	for (i = 0; i < e->name_len; i++)
		if ((unsigned char)name[i] <= 0x20 || name[i] == 0x7f)
			return fail(c, path, 2,
				    "a key may not contain spaces or control characters");
	if (!json_is_object(v))
		return fail(c, path, 2, "must be an object");
	if ((err = only_fields(c, v, path, 2, key_fields)) < 0)
		return err;
	tier = json_object_get(v, "tier");
	if (tier) {
		const char *p[3] = { "keys", name, "tier" };

		if (!json_is_string(tier))
			return fail(c, p, 3, "must be a string naming a tier");
		if (!(base = find_tier(k, json_string_value(tier))))
			return fail(c, p, 3, "no tier named \"%.64s\"", json_string_value(tier));
	} else {
		base = find_tier(k, "default");
	}
	if (base) {
		e->limits = *base;
	} else {
		/* No tier to start from: the key must give every limit itself. */
		for (d = 0; d < WINDOW_DIMS; d++)
			if (!json_object_get(v, dim_field[d]))
				return fail(c, path, 2,
					    "missing %s (name a tier, define a \"default\" tier, "
					    "or give all three limits)",
					    dim_field[d]);
		e->limits.default_max_tokens = KEYS_DEFAULT_MAX_TOKENS;
		e->limits.tier = "";
	}
	if ((err = read_limits(c, v, path, 2, &e->limits)) < 0)
		return err;
	if (!(e->name = strdup(name)))
		return -ENOMEM;
	e->hash = key_hash(name, e->name_len);
	return 0;
}

static int build_index(struct keys_config *k)
{
	size_t i, nslots = 8;

	while (nslots < k->nkeys * 2)
		nslots *= 2;
	if (!(k->slots = calloc(nslots, sizeof(*k->slots))))
		return -ENOMEM;
	k->nslots = nslots;
	for (i = 0; i < k->nkeys; i++) {
		size_t s = k->keys[i].hash & (nslots - 1);

		while (k->slots[s])
			s = (s + 1) & (nslots - 1);
		k->slots[s] = (uint32_t)(i + 1);
	}
	return 0;
}

static int parse_root(const struct ctx *c, json_t *root, struct keys_config *k)
{
	const char *top[3] = { NULL, NULL, NULL };
	json_t *tiers, *keys, *unknown, *v;
	const char *name;
	int err;

	if (!json_is_object(root))
		return fail(c, top, 0, "the keys file must be a JSON object");
	if ((err = only_fields(c, root, top, 0, top_fields)) < 0)
		return err;
	tiers = json_object_get(root, "tiers");
	top[0] = "tiers";
	if (tiers && !json_is_object(tiers))
		return fail(c, top, 1, "must be an object of tiers");
	if (tiers && (err = parse_tiers(c, tiers, k)) < 0)
		return err;
	keys = json_object_get(root, "keys");
	top[0] = "keys";
	if (!keys)
		return fail(c, top, 0, "missing \"keys\" (an object of API keys)");
	if (!json_is_object(keys))
		return fail(c, top, 1, "must be an object of API keys");
	if (json_object_size(keys) >= UINT32_MAX / 2)
		return fail(c, top, 1, "too many keys");
	if (json_object_size(keys) &&
	    !(k->keys = calloc(json_object_size(keys), sizeof(*k->keys))))
		return -ENOMEM;
	json_object_foreach(keys, name, v) {
		if ((err = parse_key(c, name, v, k, &k->keys[k->nkeys])) < 0)
			return err;
		k->nkeys++;
	}
	unknown = json_object_get(root, "unknown_keys");
	top[0] = "unknown_keys";
	if (unknown && (!json_is_string(unknown) ||
			(strcmp(json_string_value(unknown), "reject") != 0 &&
			 strcmp(json_string_value(unknown), "default") != 0)))
		return fail(c, top, 1, "must be \"reject\" or \"default\"");
	if (unknown && strcmp(json_string_value(unknown), "default") == 0 &&
	    !(k->unknown = find_tier(k, "default")))
		return fail(c, top, 1, "\"default\" needs a tier named \"default\"");
	return build_index(k);
}

int keys_parse(const char *text, size_t len, struct keys_config **out, char *errbuf,
	       size_t errlen)
{
	struct ctx c = { text, len, errbuf, errlen };
	struct keys_config *k;
	json_error_t jerr;
	json_t *root;
	int err;

	/* A duplicate key or tier is almost certainly a mistake in a hand-edited file. */
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root) {
		if (json_error_code(&jerr) == json_error_out_of_memory)
			return -ENOMEM;
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "keys file line %d column %d: %s", jerr.line,
				 jerr.column, jerr.text);
		return -EINVAL;
	}
	if (!(k = calloc(1, sizeof(*k)))) {
		err = -ENOMEM;
		goto out_decref;
	}
	if ((err = parse_root(&c, root, k)) < 0) {
		keys_free(k);
		goto out_decref;
	}
	*out = k;
out_decref:
	json_decref(root);
	return err;
}

int keys_load_file(const char *path, struct keys_config **out, char *errbuf, size_t errlen)
{
	struct stat st;
	char *text;
	size_t got = 0;
	int fd, err;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		err = -errno;
		goto out_msg;
	}
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > KEYS_FILE_MAX) {
		err = S_ISREG(st.st_mode) ? -EFBIG : -EINVAL;
		goto out_close;
	}
	if (!(text = malloc((size_t)st.st_size + 1))) {
		err = -ENOMEM;
		goto out_close;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, text + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	err = keys_parse(text, got, out, errbuf, errlen);
	free(text);
	return err;
out_close:
	close(fd);
out_msg:
	if (errbuf && errlen)
		snprintf(errbuf, errlen, "keys file %s: %s", path,
			 err == -EFBIG ? "larger than 64 MiB" :
			 err == -EINVAL ? "not a regular file" : strerror(-err));
	return err;
}

void keys_free(struct keys_config *k)
{
	size_t i;

	if (!k)
		return;
	for (i = 0; i < k->nkeys; i++)
		free(k->keys[i].name);
	for (i = 0; i < k->ntiers; i++)
		free(k->tier_names[i]);
	free(k->keys);
	free(k->slots);
	free(k->tier_names);
	free(k->tiers);
	free(k);
}

int keys_lookup(const struct keys_config *k, const char *key, size_t key_len,
		const struct keys_limits **out)
{
	uint64_t h = key_hash(key, key_len);
	size_t s = h & (k->nslots - 1);
	uint32_t i;

	while ((i = k->slots[s]) != 0) {
		const struct keys_entry *e = &k->keys[i - 1];

		if (e->hash == h && e->name_len == key_len && memcmp(e->name, key, key_len) == 0) {
			*out = &e->limits;
			return 0;
		}
		s = (s + 1) & (k->nslots - 1);
	}
	if (!k->unknown)
		return -ENOENT;
	*out = k->unknown;
	return 0;
}

size_t keys_count(const struct keys_config *k)
{
	return k->nkeys;
}
