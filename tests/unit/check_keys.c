/* check_keys.c — the keys file: parsing, validation messages with line numbers, lookup. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/keys.h"
#include "window/table.h"

static struct keys_config *parse_ok(const char *text)
{
	struct keys_config *k = NULL;
	char err[256] = "";
	int rc = keys_parse(text, strlen(text), &k, err, sizeof(err));

	ck_assert_msg(rc == 0, "parse failed (%d): %s\n%s", rc, err, text);
	ck_assert_ptr_nonnull(k);
	return k;
}

static void parse_fails(const char *text, const char *want)
{
	struct keys_config *k = NULL;
	char err[256] = "";
	int rc = keys_parse(text, strlen(text), &k, err, sizeof(err));

	ck_assert_msg(rc == -EINVAL, "want -EINVAL, got %d for\n%s", rc, text);
	ck_assert_ptr_null(k);
	ck_assert_msg(strstr(err, want) != NULL, "error [%s] lacks [%s]", err, want);
}

static const struct keys_limits *lookup(const struct keys_config *k, const char *key)
{
	const struct keys_limits *lim = NULL;

	ck_assert_int_eq(keys_lookup(k, key, strlen(key), &lim), 0);
	ck_assert_ptr_nonnull(lim);
	return lim;
}

static void assert_limits(const struct keys_limits *l, uint64_t rpm, uint64_t in, uint64_t out,
			  uint64_t dmt, const char *tier)
{
	ck_assert_uint_eq(l->limit[WINDOW_REQUESTS], rpm);
	ck_assert_uint_eq(l->limit[WINDOW_INPUT], in);
	ck_assert_uint_eq(l->limit[WINDOW_OUTPUT], out);
	ck_assert_uint_eq(l->default_max_tokens, dmt);
	ck_assert_str_eq(l->tier, tier);
}

START_TEST(test_example)
{
	struct keys_config *k = parse_ok(keys_example_json);
	const struct keys_limits *lim;
	int i;

	ck_assert_uint_eq(keys_count(k), 5);
	for (i = 1; i <= 5; i++) {
		char name[32];

		snprintf(name, sizeof(name), "test_key_%d", i);
		assert_limits(lookup(k, name), 1000, 10000, 5000, 256, "default");
	}
	ck_assert_int_eq(keys_lookup(k, "test_key_6", 10, &lim), -ENOENT);
	/* The length is what counts, not a NUL: a prefix of a key is not the key. */
	ck_assert_int_eq(keys_lookup(k, "test_key_1", 9, &lim), -ENOENT);
	keys_free(k);
}
END_TEST

/* The built-in example and cluster/keys.example.json must stay the same text. */
START_TEST(test_example_matches_file)
{
	char path[4096], *text;
	const char *cut = strstr(__FILE__, "tests/unit/check_keys.c");
	FILE *f;
	long n;

	ck_assert_msg(cut != NULL, "cannot derive the source tree from %s", __FILE__);
	snprintf(path, sizeof(path), "%.*scluster/keys.example.json", (int)(cut - __FILE__),
		 __FILE__);
	f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	text = calloc(1, (size_t)n + 1);
	ck_assert_uint_eq(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	ck_assert_str_eq(text, keys_example_json);
	free(text);
}
END_TEST

START_TEST(test_null_limits_and_defaults)
{
	struct keys_config *k = parse_ok(
		"{\"tiers\": {\"free\": {\"rpm\": null, \"input_tpm\": 100, \"output_tpm\": null}},\n"
		" \"keys\": {\"a\": {\"tier\": \"free\"}}}");

	assert_limits(lookup(k, "a"), WINDOW_UNLIMITED, 100, WINDOW_UNLIMITED,
		      KEYS_DEFAULT_MAX_TOKENS, "free");
	keys_free(k);
}
END_TEST

START_TEST(test_overrides)
{
	struct keys_config *k = parse_ok(
		"{\"tiers\": {\n"
		"  \"default\": {\"rpm\": 1000, \"input_tpm\": 10000, \"output_tpm\": 5000},\n"
		"  \"small\": {\"rpm\": 60, \"input_tpm\": 2000, \"output_tpm\": 1000,"
		" \"default_max_tokens\": 64}},\n"
		" \"keys\": {\n"
		"  \"plain\": {},\n"
		"  \"s1\": {\"tier\": \"small\", \"rpm\": 120, \"output_tpm\": null},\n"
		"  \"d1\": {\"input_tpm\": 7, \"default_max_tokens\": 9}\n"
		" }}");

	assert_limits(lookup(k, "plain"), 1000, 10000, 5000, 256, "default");
	assert_limits(lookup(k, "s1"), 120, 2000, WINDOW_UNLIMITED, 64, "small");
	assert_limits(lookup(k, "d1"), 1000, 7, 5000, 9, "default");
	keys_free(k);
}
END_TEST

START_TEST(test_key_without_tier)
{
	struct keys_config *k = parse_ok(
		"{\"keys\": {\"k\": {\"rpm\": 60, \"input_tpm\": 2000, \"output_tpm\": null}}}");

	assert_limits(lookup(k, "k"), 60, 2000, WINDOW_UNLIMITED, 256, "");
	keys_free(k);
}
END_TEST

START_TEST(test_unknown_keys)
{
#define UNKNOWN_KEYS_TEXT                                                                  \
	"{\"tiers\": {\"default\": {\"rpm\": 5, \"input_tpm\": 6, \"output_tpm\": 7}},\n"     \
	" \"keys\": {\"known\": {\"rpm\": 1}},\n"                                             \
	" \"unknown_keys\": \"%s\"}"
	struct keys_config *k;
	const struct keys_limits *lim;
	char buf[512];

	snprintf(buf, sizeof(buf), UNKNOWN_KEYS_TEXT, "default");
	k = parse_ok(buf);
	assert_limits(lookup(k, "anything at all"), 5, 6, 7, 256, "default");
	assert_limits(lookup(k, "known"), 1, 6, 7, 256, "default");
	keys_free(k);

	snprintf(buf, sizeof(buf), UNKNOWN_KEYS_TEXT, "reject");
	k = parse_ok(buf);
	ck_assert_int_eq(keys_lookup(k, "other", 5, &lim), -ENOENT);
	keys_free(k);

	k = parse_ok("{\"keys\": {}, \"unknown_keys\": \"reject\"}");
	ck_assert_uint_eq(keys_count(k), 0);
	ck_assert_int_eq(keys_lookup(k, "x", 1, &lim), -ENOENT);
	keys_free(k);
}
END_TEST

START_TEST(test_many_keys)
{
	struct buf_like { char *p; size_t len, cap; } b = { NULL, 0, 0 };
	struct keys_config *k;
	const struct keys_limits *lim;
	char name[32];
	int i;

	b.cap = 64 * 5000;
	b.p = malloc(b.cap);
	b.len += (size_t)sprintf(b.p, "{\"keys\": {");
	for (i = 0; i < 5000; i++)
		b.len += (size_t)sprintf(b.p + b.len, "%s\"key-%d\": {\"rpm\": %d, \"input_tpm\": 1,"
					 " \"output_tpm\": 1}", i ? "," : "", i, i + 1);
	strcpy(b.p + b.len, "}}");
	k = parse_ok(b.p);
	ck_assert_uint_eq(keys_count(k), 5000);
	for (i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "key-%d", i);
		ck_assert_uint_eq(lookup(k, name)->limit[WINDOW_REQUESTS], (uint64_t)i + 1);
	}
	ck_assert_int_eq(keys_lookup(k, "key-5000", 8, &lim), -ENOENT);
	keys_free(k);
	free(b.p);
}
END_TEST

/* Every rejection names the line of the offending member and the field path. */
START_TEST(test_invalid)
{
	static const struct { const char *text, *want; } cases[] = {
		{ "{\n  \"keys\": {,}\n}", "keys file line 2 column" },
		{ "", "keys file line 1" },
		{ "[1, 2]", "keys file line 1: the keys file must be a JSON object" },
		{ "{\n\"keys\": {},\n\"tierz\": {}\n}", "keys file line 3: tierz: unknown field" },
		{ "{\"tiers\": []}", "keys file line 1: tiers: must be an object" },
		{ "{\"tiers\": {}}", "keys file line 1: missing \"keys\"" },
		{ "{\n\"keys\": 5}", "keys file line 2: keys: must be an object" },
		{ "{\"tiers\": {\n\"default\":\n {\"rpm\": 1, \"input_tpm\": 2}}, \"keys\": {}}",
		  "keys file line 2: tiers.default: missing output_tpm" },
		{ "{\n\"tiers\": {\n\"t\": 7}, \"keys\": {}}", "keys file line 3: tiers.t: must be" },
		{ "{\"tiers\": {\"t\": {\"rpm\": 1, \"input_tpm\": 2, \"output_tpm\": 3,\n"
		  "\"burst\": 1}}, \"keys\": {}}", "keys file line 2: tiers.t.burst: unknown field" },
		{ "{\n"
		  "  \"tiers\": {\n"
		  "    \"default\": {\"rpm\": 10, \"input_tpm\": 10, \"output_tpm\": 10}\n"
		  "  },\n"
		  "  \"keys\": {\n"
		  "    \"k1\": {\"tier\": \"default\"},\n"
		  "    \"k2\": {\"tier\": \"default\", \"rpm\": -5}\n"
		  "  }\n"
		  "}",
		  "keys file line 7: keys.k2.rpm: must be a positive integer <= 4000000000 or null" },
		{ "{\"keys\": {\"k\": {\"rpm\": 0, \"input_tpm\": 1, \"output_tpm\": 1}}}",
		  "line 1: keys.k.rpm: must be a positive integer" },
		{ "{\"keys\": {\"k\": {\"rpm\": 1.5, \"input_tpm\": 1, \"output_tpm\": 1}}}",
		  "keys.k.rpm: must be a positive integer" },
		{ "{\"keys\": {\"k\": {\"rpm\": \"10\", \"input_tpm\": 1, \"output_tpm\": 1}}}",
		  "keys.k.rpm: must be a positive integer" },
		{ "{\"keys\": {\"k\": {\"rpm\": 1, \"input_tpm\": 4000000001, \"output_tpm\": 1}}}",
		  "keys.k.input_tpm: must be a positive integer <= 4000000000" },
		{ "{\"keys\": {\"k\": {\"rpm\": 1, \"input_tpm\": 1, \"output_tpm\": 1,\n\n"
		  "\"default_max_tokens\": null}}}",
		  "keys file line 3: keys.k.default_max_tokens: must be a positive integer <= 1000000" },
		{ "{\"keys\": {\"k\": {\"rpm\": 1, \"input_tpm\": 1, \"output_tpm\": 1,"
		  "\"default_max_tokens\": 1000001}}}", "keys.k.default_max_tokens: must be" },
		{ "{\"tiers\": {\"default\": {\"rpm\": 1, \"input_tpm\": 1, \"output_tpm\": 1}},\n"
		  "\"keys\": {\n\"k\": {\n\"tier\": \"gold\"}}}",
		  "keys file line 4: keys.k.tier: no tier named \"gold\"" },
		{ "{\"keys\": {\"k\": {\"tier\": 3}}}", "keys.k.tier: must be a string" },
		{ "{\"keys\": {\"k\": {\"rpm\": 1, \"input_tpm\": 1, \"output_tpm\": 1,\n"
		  "\"rmp\": 4}}}", "keys file line 2: keys.k.rmp: unknown field" },
		{ "{\"keys\": {\n\"k\": \"default\"}}", "keys file line 2: keys.k: must be an object" },
		{ "{\"keys\": {\n\n\"k\": {\"rpm\": 1, \"input_tpm\": 1}}}",
		  "keys file line 3: keys.k: missing output_tpm (name a tier" },
		{ "{\"keys\": {}, \"unknown_keys\": \"allow\"}",
		  "unknown_keys: must be \"reject\" or \"default\"" },
		{ "{\"keys\": {},\n \"unknown_keys\": \"default\"}",
		  "keys file line 2: unknown_keys: \"default\" needs a tier named \"default\"" },
		{ "{\"keys\": {\"a\": {}, \"a\": {}}}", "duplicate object key" },
		{ "{\"keys\": {\"has space\": {}}}", "keys.has space: a key may not contain" },
		{ "{\"keys\": {\"\": {}}}", "keys file line 1: keys.: a key must be 1 to 256" },
		/* The scanner decodes escapes in names: "k\u0032" is k2, on line 3. */
		{ "{\"keys\": {\n\"k1\": {\"rpm\": 1, \"input_tpm\": 1, \"output_tpm\": 1},\n"
		  "\"k\\u0032\": {\"rpm\": 1, \"input_tpm\": 1, \"output_tpm\": -1}}}",
		  "keys file line 3: keys.k2.output_tpm: must be" },
		/* A nested value before the offending member is skipped with its newlines. */
		{ "{\"tiers\": {\"x\": {\"rpm\": 1,\n\"input_tpm\": 1,\n\"output_tpm\": 1}},\n"
		  "\"keys\": {\"y\": {\"tier\": \"x\", \"rpm\": [\n1]}}}",
		  "keys file line 4: keys.y.rpm: must be" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		parse_fails(cases[i].text, cases[i].want);
}
END_TEST

START_TEST(test_key_too_long)
{
	char text[1024], key[WINDOW_KEY_MAX + 2];
	struct keys_config *k;

	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	snprintf(text, sizeof(text), "{\"keys\": {\"%s\": {}}}", key);
	parse_fails(text, "a key must be 1 to 256 bytes long");
	key[WINDOW_KEY_MAX] = '\0';
	snprintf(text, sizeof(text),
		 "{\"keys\": {\"%s\": {\"rpm\": 1, \"input_tpm\": 1, \"output_tpm\": 1}}}", key);
	k = parse_ok(text);
	ck_assert_uint_eq(lookup(k, key)->limit[WINDOW_REQUESTS], 1);
	keys_free(k);
}
END_TEST

START_TEST(test_load_file)
{
	char path[] = "/tmp/check_keys_XXXXXX", err[256] = "";
	struct keys_config *k = NULL;
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, keys_example_json, strlen(keys_example_json)),
			 (int)strlen(keys_example_json));
	close(fd);
	ck_assert_int_eq(keys_load_file(path, &k, err, sizeof(err)), 0);
	ck_assert_uint_eq(keys_count(k), 5);
	keys_free(k);
	unlink(path);
	k = NULL;
	ck_assert_int_eq(keys_load_file(path, &k, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_null(k);
	ck_assert_msg(strstr(err, path) != NULL, "error [%s] does not name the file", err);
	ck_assert_int_eq(keys_load_file("/tmp", &k, err, sizeof(err)), -EINVAL);
	keys_free(NULL);
}
END_TEST

static Suite *keys_suite(void)
{
	Suite *s = suite_create("keys");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_example);
	tcase_add_test(tc, test_example_matches_file);
	tcase_add_test(tc, test_null_limits_and_defaults);
	tcase_add_test(tc, test_overrides);
	tcase_add_test(tc, test_key_without_tier);
	tcase_add_test(tc, test_unknown_keys);
	tcase_add_test(tc, test_many_keys);
	tcase_add_test(tc, test_invalid);
	tcase_add_test(tc, test_key_too_long);
	tcase_add_test(tc, test_load_file);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(keys_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
