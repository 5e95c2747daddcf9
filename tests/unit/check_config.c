#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "node/config.h"
#include "util/log.h"

static const char *env_none(const char *name)
{
	(void)name;
	return NULL;
}

static const char *env_some(const char *name)
{
	if (strcmp(name, "LLMLIMIT_LISTEN") == 0)
		return "0.0.0.0:9000";
	if (strcmp(name, "LLMLIMIT_MAX_KEYS") == 0)
		return "77";
	return NULL;
}

static const char *env_bad(const char *name)
{
	return strcmp(name, "LLMLIMIT_READ_TIMEOUT_MS") == 0 ? "soon" : NULL;
}

#define ARGV(...) ((char *const[]){"llmlimitd", __VA_ARGS__})
#define ARGC(...) ((int)(sizeof((char *const[]){"llmlimitd", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(env, ...) config_parse_args(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), env, &c, err, sizeof(err))

START_TEST(test_defaults)
{
	struct config c;
	char err[256];
	char *const argv[] = {"llmlimitd"};

	ck_assert_int_eq(config_parse_args(1, argv, env_none, &c, err, sizeof(err)), 0);
	ck_assert_str_eq(c.listen_host, "127.0.0.1");
	ck_assert_uint_eq(c.listen_port, 8000);
	ck_assert_ptr_null(c.keys_path);
	ck_assert_uint_eq(c.http.max_body_bytes, 1024 * 1024);
	ck_assert_uint_eq(c.http.max_header_bytes, 16 * 1024);
	ck_assert_uint_eq(c.http.max_connections, 10000);
	ck_assert_uint_eq(c.max_keys, 2000000);
	ck_assert_int_eq(c.log_level, LOG_INFO);
	ck_assert(!c.help);
}
END_TEST

START_TEST(test_flags_both_forms)
{
	struct config c;
	char err[256];

	ck_assert_int_eq(PARSE(env_none, "--listen", "[::1]:8080", "--keys=/tmp/k.json",
			       "--max-body-bytes", "2048", "--read-timeout-ms=500",
			       "--log-level", "debug", "--admission-log", "/tmp/a.log"), 0);
	ck_assert_str_eq(c.listen_host, "::1");
	ck_assert_uint_eq(c.listen_port, 8080);
	ck_assert_str_eq(c.keys_path, "/tmp/k.json");
	ck_assert_uint_eq(c.http.max_body_bytes, 2048);
	ck_assert_uint_eq(c.http.read_timeout_ms, 500);
	ck_assert_int_eq(c.log_level, LOG_DEBUG);
	ck_assert_str_eq(c.admission_log, "/tmp/a.log");
}
END_TEST

START_TEST(test_env_and_flag_precedence)
{
	struct config c;
	char err[256];

	ck_assert_int_eq(PARSE(env_some, "--max-keys", "5"), 0);
	ck_assert_str_eq(c.listen_host, "0.0.0.0");
	ck_assert_uint_eq(c.listen_port, 9000);
	ck_assert_uint_eq(c.max_keys, 5);  /* the flag wins over LLMLIMIT_MAX_KEYS=77 */
}
END_TEST

START_TEST(test_errors_name_the_option)
{
	struct config c;
	char err[256];

	ck_assert_int_lt(PARSE(env_none, "--bogus"), 0);
	ck_assert_ptr_nonnull(strstr(err, "--bogus"));
	ck_assert_int_lt(PARSE(env_none, "--max-keys", "-1"), 0);
	ck_assert_ptr_nonnull(strstr(err, "--max-keys"));
	ck_assert_int_lt(PARSE(env_none, "--max-keys=0"), 0);
	ck_assert_ptr_nonnull(strstr(err, "--max-keys"));
	ck_assert_int_lt(PARSE(env_none, "--listen", "localhost"), 0);
	ck_assert_ptr_nonnull(strstr(err, "HOST:PORT"));
	ck_assert_int_lt(PARSE(env_none, "--listen", "h:70000"), 0);
	ck_assert_int_lt(PARSE(env_none, "--keys"), 0);
	ck_assert_ptr_nonnull(strstr(err, "needs a value"));
	ck_assert_int_lt(PARSE(env_none, "--help=yes"), 0);
	ck_assert_int_lt(PARSE(env_none, "stray"), 0);
	ck_assert_int_lt(PARSE(env_none, "--log-level", "loud"), 0);
	ck_assert_int_lt(PARSE(env_none, "--max-body-bytes", "99999999999999999999999"), 0);
	ck_assert_int_lt(PARSE(env_bad, "--help"), 0);
	ck_assert_ptr_nonnull(strstr(err, "LLMLIMIT_READ_TIMEOUT_MS"));
}
END_TEST

START_TEST(test_help_and_usage_cover_every_flag)
{
	static const char *const flags[] = {"--listen", "--keys", "--max-keys", "--max-body-bytes",
		"--max-header-bytes", "--max-headers", "--read-timeout-ms", "--idle-timeout-ms",
		"--max-connections", "--max-pipeline", "--admission-log", "--shutdown-grace-ms",
		"--log-level", "--help", "--version", "--node-id", "--peer-listen", "--advertise",
		"--seeds", "--cluster-key-file", "--owner-failure", "--peer-timeout-ms",
		"--peer-batch-max", "--replicas", "--replicate-interval-ms", "--gossip-probe-interval-ms",
		"--gossip-probe-timeout-ms", "--gossip-suspicion-mult", "--gossip-push-pull-interval-ms",
		"keygen", "healthcheck"};
	struct config c;
	char err[256];
	size_t i;

	ck_assert_int_eq(PARSE(env_none, "-h"), 0);
	ck_assert(c.help);
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		ck_assert_msg(strstr(config_usage, flags[i]), "usage lacks %s", flags[i]);
}
END_TEST

START_TEST(test_cluster_flags)
{
	struct config c;
	char err[256];

	ck_assert_int_eq(PARSE(env_none, "--node-id", "n1", "--peer-listen", "0.0.0.0:7946",
			       "--advertise", "node1.svc:7946", "--seeds", "a:1,b:2",
			       "--cluster-key-file", "/k", "--owner-failure", "deny",
			       "--peer-timeout-ms", "100"), 0);
	ck_assert_str_eq(c.node_id, "n1");
	ck_assert_str_eq(c.peer_host, "0.0.0.0");
	ck_assert_uint_eq(c.peer_port, 7946);
	ck_assert_str_eq(c.advertise_host, "node1.svc");
	ck_assert_uint_eq(c.advertise_port, 7946);
	ck_assert_str_eq(c.listen_host, "127.0.0.1");  /* other HOST:PORT fields untouched */
	ck_assert_uint_eq(c.listen_port, 8000);
	ck_assert_str_eq(c.seeds, "a:1,b:2");
	ck_assert_int_eq(c.owner_failure, 1);
	ck_assert_uint_eq(c.peer_timeout_ms, 100);
	ck_assert_int_lt(PARSE(env_none, "--owner-failure", "maybe"), 0);
	ck_assert_ptr_nonnull(strstr(err, "local, deny or allow"));
	ck_assert_int_eq(PARSE(env_none, "--listen", "0.0.0.0:1"), 0);
	ck_assert_uint_eq(c.peer_port, 0);  /* no cluster unless asked */
}
END_TEST

START_TEST(test_cluster_keys)
{
	static const char two[] = "# rotation: new key first\n"
		"00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\r\n"
		"\n  ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff  \n";
	uint8_t keys[4][32];
	char err[256];
	size_t n;

	ck_assert_int_eq(config_parse_cluster_keys(two, strlen(two), keys, 4, &n, err, sizeof(err)), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(keys[0][0], 0x00);
	ck_assert_uint_eq(keys[0][31], 0xff);
	ck_assert_uint_eq(keys[0][10], 0xaa);
	ck_assert_uint_eq(keys[1][5], 0xff);
	/* raw 32 bytes */
	ck_assert_int_eq(config_parse_cluster_keys("\x01\x02zzzzzzzzzzzzzzzzzzzzzzzzzzzzz\xff", 32, keys, 4,
						   &n, err, sizeof(err)), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(keys[0][0], 1);
	ck_assert_int_lt(config_parse_cluster_keys("abc\n", 4, keys, 4, &n, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "line 1"));
	ck_assert_int_lt(config_parse_cluster_keys("# only\n\n", 8, keys, 4, &n, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "no key"));
	ck_assert_int_lt(config_parse_cluster_keys(
		"#\n00112233445566778899aabbccddeeff00112233445566778899aabbccddeexx\n", 67, keys, 4,
		&n, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "line 2"));
	ck_assert_ptr_nonnull(strstr(err, "column 63"));
	ck_assert_int_lt(config_parse_cluster_keys(two, strlen(two), keys, 1, &n, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "more than 1"));
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("args");

	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_flags_both_forms);
	tcase_add_test(tc, test_env_and_flag_precedence);
	tcase_add_test(tc, test_errors_name_the_option);
	tcase_add_test(tc, test_help_and_usage_cover_every_flag);
	tcase_add_test(tc, test_cluster_flags);
	tcase_add_test(tc, test_cluster_keys);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
