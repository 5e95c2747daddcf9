/* check_util.c — unit tests for src/util: the growable buffer and its JSON escaping, the number
 * parsers and duration formatters, and the Prometheus registry. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <wchar.h>

#include "util/buf.h"
#include "util/metrics.h"
#include "util/num.h"

#define FFFD "\xef\xbf\xbd"

/* ---------------------------------------------------------------- buf */

static struct buf b;

static void buf_setup(void)
{
	buf_init(&b);
}

static void buf_teardown(void)
{
	buf_close(&b);
}

/* The buffer must always be NUL-terminated at len and have room for the terminator. */
static void assert_buf_sane(const struct buf *x)
{
	ck_assert_uint_lt(x->len, x->cap);
	ck_assert_int_eq(x->data[x->len], '\0');
	ck_assert_uint_eq(strlen(x->data), x->len);
}

START_TEST(test_buf_init_empty)
{
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_uint_eq(b.cap, 0);
	/* Appending nothing (even from a NULL pointer) is allowed and yields "". */
	ck_assert_int_eq(buf_append(&b, NULL, 0), 0);
	ck_assert_uint_eq(b.len, 0);
	assert_buf_sane(&b);
	buf_close(&b);
	ck_assert_ptr_null(b.data);
	buf_close(NULL);
}
END_TEST

START_TEST(test_buf_append_growth)
{
	char expect[5000];
	size_t i;

	for (i = 0; i < sizeof(expect) - 1; i++) {
		char c = (char)('a' + i % 26);

		expect[i] = c;
		ck_assert_int_eq(buf_append(&b, &c, 1), 0);
		assert_buf_sane(&b);
	}
	expect[i] = '\0';
	ck_assert_uint_eq(b.len, sizeof(expect) - 1);
	ck_assert_str_eq(b.data, expect);
	/* Growth is geometric from 256, so the capacity is a power of two. */
	ck_assert_uint_eq(b.cap & (b.cap - 1), 0);
	ck_assert_uint_ge(b.cap, 256);

	/* One big append past the current capacity. */
	buf_reset(&b);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_str_eq(b.data, "");
	ck_assert_int_eq(buf_puts(&b, "x"), 0);
	ck_assert_int_eq(buf_append(&b, expect, sizeof(expect) - 1), 0);
	ck_assert_uint_eq(b.len, sizeof(expect));
	ck_assert_int_eq(b.data[0], 'x');
	ck_assert_int_eq(memcmp(b.data + 1, expect, sizeof(expect) - 1), 0);
	assert_buf_sane(&b);
}
END_TEST

START_TEST(test_buf_reserve_overflow)
{
	char dummy = 'z';

	ck_assert_int_eq(buf_puts(&b, "keep"), 0);
	/* Sizes that cannot be allocated fail before touching the source or the buffer. */
	ck_assert_int_eq(buf_reserve(&b, SIZE_MAX), -ENOMEM);
	ck_assert_int_eq(buf_reserve(&b, SIZE_MAX / 2), -ENOMEM);
	ck_assert_int_eq(buf_append(&b, &dummy, SIZE_MAX - 3), -ENOMEM);
	ck_assert_int_eq(buf_put_json_str(&b, &dummy, SIZE_MAX / 4), -ENOMEM);
	ck_assert_str_eq(b.data, "keep");
	ck_assert_uint_eq(b.len, 4);
	ck_assert_int_eq(buf_reserve(&b, 10000), 0);
	ck_assert_uint_ge(b.cap, 10005);
	ck_assert_str_eq(b.data, "keep");
}
END_TEST

START_TEST(test_buf_printf_growth)
{
	char big[300];
	size_t i;

	/* First printf into an unallocated buffer. */
	ck_assert_int_eq(buf_printf(&b, "%d-%s", 42, "x"), 0);
	ck_assert_str_eq(b.data, "42-x");
	ck_assert_uint_eq(b.cap, 256);

	/* Fill to exactly cap - 1 bytes: that still fits with the terminator. */
	memset(big, 'a', sizeof(big));
	big[251] = '\0';
	ck_assert_int_eq(buf_printf(&b, "%s", big), 0);
	ck_assert_uint_eq(b.len, 255);
	ck_assert_uint_eq(b.cap, 256);
	assert_buf_sane(&b);

	/* One more byte crosses the initial capacity. */
	ck_assert_int_eq(buf_printf(&b, "%c", 'Z'), 0);
	ck_assert_uint_eq(b.len, 256);
	ck_assert_uint_eq(b.cap, 512);
	ck_assert_int_eq(b.data[255], 'Z');
	assert_buf_sane(&b);

	/* A long formatted string across the boundary must be written whole, not truncated. */
	buf_reset(&b);
	ck_assert_int_eq(buf_printf(&b, "%s", "head:"), 0);
	memset(big, 'q', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	for (i = 0; i < 4; i++)
		ck_assert_int_eq(buf_printf(&b, "%s|%zu|", big, i), 0);
	ck_assert_uint_eq(b.len, 5 + 4 * (299 + 3));
	ck_assert_int_eq(strncmp(b.data, "head:qqq", 8), 0);
	ck_assert_int_eq(memcmp(b.data + b.len - 3, "|3|", 3), 0);
	ck_assert_int_eq(memcmp(b.data + 5 + 299, "|0|", 3), 0);
	assert_buf_sane(&b);
}
END_TEST

START_TEST(test_buf_printf_error_leaves_buffer)
{
	static const wchar_t bad[] = { 0x100, 0 };
	int err;

	/* In the C locale a wide character outside ASCII cannot be converted, so vsnprintf fails
	 * after having written "xyz" past len. The contract says the buffer is unchanged. */
	ck_assert_int_eq(buf_puts(&b, "abc"), 0);
	err = buf_printf(&b, "xyz%ls", bad);
	ck_assert_int_eq(err, -EINVAL);
	ck_assert_uint_eq(b.len, 3);
	ck_assert_str_eq(b.data, "abc");
	ck_assert_int_eq(buf_puts(&b, "d"), 0);
	ck_assert_str_eq(b.data, "abcd");

	/* The same on a buffer with no storage yet. */
	buf_close(&b);
	ck_assert_int_eq(buf_printf(&b, "%ls", bad), -EINVAL);
	ck_assert_uint_eq(b.len, 0);
}
END_TEST

START_TEST(test_buf_put_u64)
{
	ck_assert_int_eq(buf_put_u64(&b, 0), 0);
	ck_assert_int_eq(buf_puts(&b, " "), 0);
	ck_assert_int_eq(buf_put_u64(&b, 7), 0);
	ck_assert_int_eq(buf_puts(&b, " "), 0);
	ck_assert_int_eq(buf_put_u64(&b, 1000000), 0);
	ck_assert_int_eq(buf_puts(&b, " "), 0);
	ck_assert_int_eq(buf_put_u64(&b, UINT64_MAX), 0);
	ck_assert_str_eq(b.data, "0 7 1000000 18446744073709551615");
}
END_TEST

START_TEST(test_buf_consume)
{
	ck_assert_int_eq(buf_puts(&b, "hello world"), 0);
	buf_consume(&b, 6);
	ck_assert_str_eq(b.data, "world");
	ck_assert_uint_eq(b.len, 5);
	buf_consume(&b, 0);
	ck_assert_str_eq(b.data, "world");
	buf_consume(&b, 5);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_str_eq(b.data, "");
	/* Consuming from a never-allocated buffer is harmless. */
	buf_close(&b);
	buf_consume(&b, 0);
	ck_assert_uint_eq(b.len, 0);
}
END_TEST

/* Escapes exactly n bytes taken from an exact-size heap copy, so ASan flags any read past the
 * end, and compares the result (quotes included) with expect. */
static void check_json(const char *in, size_t n, const char *expect)
{
	char *copy = malloc(n ? n : 1);
	struct buf out;

	ck_assert_ptr_nonnull(copy);
	memcpy(copy, in, n);
	buf_init(&out);
	ck_assert_int_eq(buf_put_json_str(&out, copy, n), 0);
	ck_assert_msg(out.len == strlen(expect) && memcmp(out.data, expect, out.len) == 0,
		      "json escape: got [%s], want [%s]", out.data, expect);
	ck_assert_int_eq(out.data[out.len], '\0');
	buf_close(&out);
	free(copy);
}

#define JSON(lit, expect) check_json((lit), sizeof(lit) - 1, (expect))

START_TEST(test_json_ascii_and_escapes)
{
	JSON("", "\"\"");
	JSON("hello", "\"hello\"");
	JSON("say \"hi\"", "\"say \\\"hi\\\"\"");
	JSON("C:\\dir\\", "\"C:\\\\dir\\\\\"");
	JSON("a/b", "\"a/b\"");
	JSON("\n\r\t", "\"\\n\\r\\t\"");
	JSON("\x01\x08\x0c\x1f", "\"\\u0001\\u0008\\u000c\\u001f\"");
	JSON("a\0b", "\"a\\u0000b\"");
	JSON("\x7f~ ", "\"\x7f~ \"");
	JSON("x\"\\\ny", "\"x\\\"\\\\\\ny\"");
}
END_TEST

START_TEST(test_json_valid_utf8_passthrough)
{
	JSON("caf\xc3\xa9", "\"caf\xc3\xa9\"");                    /* U+00E9 */
	JSON("\xc2\x80", "\"\xc2\x80\"");                          /* U+0080, smallest 2-byte */
	JSON("\xdf\xbf", "\"\xdf\xbf\"");                          /* U+07FF */
	JSON("\xe0\xa0\x80", "\"\xe0\xa0\x80\"");                  /* U+0800, smallest 3-byte */
	JSON("\xe2\x82\xac 5", "\"\xe2\x82\xac 5\"");              /* euro sign */
	JSON("\xed\x9f\xbf", "\"\xed\x9f\xbf\"");                  /* U+D7FF, below surrogates */
	JSON("\xee\x80\x80", "\"\xee\x80\x80\"");                  /* U+E000, above surrogates */
	JSON("\xef\xbf\xbf", "\"\xef\xbf\xbf\"");                  /* U+FFFF */
	JSON("\xf0\x90\x80\x80", "\"\xf0\x90\x80\x80\"");          /* U+10000 */
	JSON("\xf0\x9f\x98\x80!", "\"\xf0\x9f\x98\x80!\"");        /* emoji */
	JSON("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");          /* U+10FFFF, the last */
	JSON("\xe6\x97\xa5\xe6\x9c\xac\"\n", "\"\xe6\x97\xa5\xe6\x9c\xac\\\"\\n\"");
}
END_TEST

START_TEST(test_json_invalid_utf8)
{
	/* Each byte that does not start a valid sequence becomes one U+FFFD. */
	JSON("\x80", "\"" FFFD "\"");                              /* lone continuation */
	JSON("a\xbf" "b", "\"a" FFFD "b\"");
	JSON("\xfe\xff", "\"" FFFD FFFD "\"");
	JSON("\xf5\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");  /* lead byte above U+10FFFF */
	JSON("\xc3\x28", "\"" FFFD "(\"");                         /* bad continuation */
	JSON("\xe2\x28\xa1", "\"" FFFD "(" FFFD "\"");
	JSON("\xf0\x9f\x98\x41", "\"" FFFD FFFD FFFD "A\"");
}
END_TEST

START_TEST(test_json_overlong)
{
	JSON("\xc0\x80", "\"" FFFD FFFD "\"");                     /* overlong NUL */
	JSON("\xc1\xbf", "\"" FFFD FFFD "\"");                     /* overlong U+007F */
	JSON("\xc0\xaf", "\"" FFFD FFFD "\"");                     /* overlong '/' */
	JSON("\xe0\x80\xaf", "\"" FFFD FFFD FFFD "\"");
	JSON("\xe0\x9f\xbf", "\"" FFFD FFFD FFFD "\"");            /* overlong U+07FF */
	JSON("\xf0\x80\x80\xaf", "\"" FFFD FFFD FFFD FFFD "\"");
	JSON("\xf0\x8f\xbf\xbf", "\"" FFFD FFFD FFFD FFFD "\"");   /* overlong U+FFFF */
}
END_TEST

START_TEST(test_json_surrogates_and_range)
{
	JSON("\xed\xa0\x80", "\"" FFFD FFFD FFFD "\"");            /* U+D800 */
	JSON("\xed\xbf\xbf", "\"" FFFD FFFD FFFD "\"");            /* U+DFFF */
	/* A CESU-8 pair is two surrogates, not a code point. */
	JSON("\xed\xa0\xbd\xed\xb8\x80", "\"" FFFD FFFD FFFD FFFD FFFD FFFD "\"");
	JSON("\xf4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");   /* U+110000 */
}
END_TEST

START_TEST(test_json_truncated)
{
	JSON("a\xc3", "\"a" FFFD "\"");
	JSON("\xe2\x82", "\"" FFFD FFFD "\"");
	JSON("\xf0\x9f\x98", "\"" FFFD FFFD FFFD "\"");
	JSON("\xe2\x82x", "\"" FFFD FFFD "x\"");
	JSON("ok\xf0", "\"ok" FFFD "\"");
}
END_TEST

START_TEST(test_json_at_page_end)
{
	long page = sysconf(_SC_PAGESIZE);
	static const char tail[] = "ab\"\xf0\x9f\x98";
	const size_t n = sizeof(tail) - 1;
	char *mem;

	/* The input ends where an unmapped page begins, so reading one byte too far faults. */
	mem = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		   0);
	ck_assert_ptr_ne(mem, MAP_FAILED);
	ck_assert_int_eq(mprotect(mem + page, (size_t)page, PROT_NONE), 0);
	memcpy(mem + page - n, tail, n);
	ck_assert_int_eq(buf_put_json_str(&b, mem + page - n, n), 0);
	ck_assert_str_eq(b.data, "\"ab\\\"" FFFD FFFD FFFD "\"");
	/* A valid sequence ending exactly at the page end. */
	memcpy(mem + page - 4, "\xf0\x9f\x98\x80", 4);
	buf_reset(&b);
	ck_assert_int_eq(buf_put_json_str(&b, mem + page - 4, 4), 0);
	ck_assert_str_eq(b.data, "\"\xf0\x9f\x98\x80\"");
	munmap(mem, (size_t)page * 2);
}
END_TEST

START_TEST(test_json_appends)
{
	ck_assert_int_eq(buf_puts(&b, "{\"k\":"), 0);
	ck_assert_int_eq(buf_put_json_str(&b, "v\n", 2), 0);
	ck_assert_int_eq(buf_puts(&b, "}"), 0);
	ck_assert_str_eq(b.data, "{\"k\":\"v\\n\"}");
	/* Escaping a NULL pointer with length 0 is an empty string. */
	buf_reset(&b);
	ck_assert_int_eq(buf_put_json_str(&b, NULL, 0), 0);
	ck_assert_str_eq(b.data, "\"\"");
}
END_TEST

START_TEST(test_json_plain)
{
	/* Every position and length of the special byte around the 8-byte steps, from an
	 * exact-size heap copy so ASan sees any read past the end. */
	static const char specials[] = { '"', '\\', 0x00, 0x1f, (char)0x80, (char)0xc3,
					 (char)0xff };
	size_t n, pos, k;

	ck_assert_uint_eq(buf_json_plain("", 0), 0);
	for (n = 1; n <= 40; n++) {
		char *s = malloc(n);

		ck_assert_ptr_nonnull(s);
		memset(s, 'a', n);
		s[0] = ' ';
		s[n - 1] = 0x7f;
		ck_assert_uint_eq(buf_json_plain(s, n), n);
		for (pos = 0; pos < n; pos++) {
			for (k = 0; k < sizeof(specials); k++) {
				memset(s, '~', n);
				s[pos] = specials[k];
				/* A second special later must not hide the first. */
				if (pos + 3 < n)
					s[pos + 3] = 0x01;
				ck_assert_msg(buf_json_plain(s, n) == pos,
					      "n %zu pos %zu byte 0x%02x", n, pos,
					      (unsigned char)specials[k]);
			}
		}
		free(s);
	}
}
END_TEST

START_TEST(test_utf8_len)
{
	ck_assert_uint_eq(buf_utf8_len("a", 1), 1);
	ck_assert_uint_eq(buf_utf8_len("\xc3\xa9", 2), 2);
	ck_assert_uint_eq(buf_utf8_len("\xe2\x82\xac", 3), 3);
	ck_assert_uint_eq(buf_utf8_len("\xf0\x9f\x98\x80", 4), 4);
	ck_assert_uint_eq(buf_utf8_len("\xc3", 1), 0);          /* truncated */
	ck_assert_uint_eq(buf_utf8_len("\xc0\xaf", 2), 0);      /* overlong */
	ck_assert_uint_eq(buf_utf8_len("\xed\xa0\x80", 3), 0);  /* a surrogate */
	ck_assert_uint_eq(buf_utf8_len("\xf4\x90\x80\x80", 4), 0);  /* past U+10FFFF */
	ck_assert_uint_eq(buf_utf8_len("\x80", 1), 0);
	ck_assert_uint_eq(buf_utf8_len("\xc3(", 2), 0);
}
END_TEST

static Suite *buf_suite(void)
{
	Suite *s = suite_create("buf");
	TCase *tc = tcase_create("buf");

	tcase_add_checked_fixture(tc, buf_setup, buf_teardown);
	tcase_add_test(tc, test_buf_init_empty);
	tcase_add_test(tc, test_buf_append_growth);
	tcase_add_test(tc, test_buf_reserve_overflow);
	tcase_add_test(tc, test_buf_printf_growth);
	tcase_add_test(tc, test_buf_printf_error_leaves_buffer);
	tcase_add_test(tc, test_buf_put_u64);
	tcase_add_test(tc, test_buf_consume);
	suite_add_tcase(s, tc);

	tc = tcase_create("json");
	tcase_add_checked_fixture(tc, buf_setup, buf_teardown);
	tcase_add_test(tc, test_json_ascii_and_escapes);
	tcase_add_test(tc, test_json_valid_utf8_passthrough);
	tcase_add_test(tc, test_json_invalid_utf8);
	tcase_add_test(tc, test_json_overlong);
	tcase_add_test(tc, test_json_surrogates_and_range);
	tcase_add_test(tc, test_json_truncated);
	tcase_add_test(tc, test_json_at_page_end);
	tcase_add_test(tc, test_json_appends);
	tcase_add_test(tc, test_json_plain);
	tcase_add_test(tc, test_utf8_len);
	suite_add_tcase(s, tc);
	return s;
}

/* ---------------------------------------------------------------- num */

struct u64_case {
	const char *s;
	uint64_t max;
	int err;
	uint64_t want;
};

START_TEST(test_parse_u64)
{
	static const struct u64_case cases[] = {
		{ "0", UINT64_MAX, 0, 0 },
		{ "123", UINT64_MAX, 0, 123 },
		{ "007", UINT64_MAX, 0, 7 },
		{ "18446744073709551615", UINT64_MAX, 0, UINT64_MAX },
		{ "18446744073709551616", UINT64_MAX, -ERANGE, 0 },
		{ "18446744073709551620", UINT64_MAX, -ERANGE, 0 },
		{ "99999999999999999999999", UINT64_MAX, -ERANGE, 0 },
		{ "100", 100, 0, 100 },
		{ "101", 100, -ERANGE, 0 },
		{ "0", 0, 0, 0 },
		{ "1", 0, -ERANGE, 0 },
		{ "65536", 65535, -ERANGE, 0 },
		{ "", UINT64_MAX, -EINVAL, 0 },
		{ "+1", UINT64_MAX, -EINVAL, 0 },
		{ "-1", UINT64_MAX, -EINVAL, 0 },
		{ " 1", UINT64_MAX, -EINVAL, 0 },
		{ "1 ", UINT64_MAX, -EINVAL, 0 },
		{ "1a", UINT64_MAX, -EINVAL, 0 },
		{ "a1", UINT64_MAX, -EINVAL, 0 },
		{ "0x10", UINT64_MAX, -EINVAL, 0 },
		{ "1.5", UINT64_MAX, -EINVAL, 0 },
		{ "1,000", UINT64_MAX, -EINVAL, 0 },
		{ "\xef\xbc\x91", UINT64_MAX, -EINVAL, 0 }, /* fullwidth digit one */
	};
	uint64_t v;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct u64_case *c = &cases[i];
		int err;

		v = 0xdeadbeef;
		err = num_parse_u64(c->s, strlen(c->s), c->max, &v);
		ck_assert_msg(err == c->err, "[%s] max %llu: got %d, want %d", c->s,
			      (unsigned long long)c->max, err, c->err);
		/* The output is written on success only. */
		ck_assert_uint_eq(v, c->err ? 0xdeadbeef : c->want);
	}
	/* Only the first n bytes count: the caller passes a slice. */
	ck_assert_int_eq(num_parse_u64("4567xyz", 2, UINT64_MAX, &v), 0);
	ck_assert_uint_eq(v, 45);
	ck_assert_int_eq(num_parse_u64("12", 0, UINT64_MAX, &v), -EINVAL);
	/* An embedded NUL inside the slice is not a digit. */
	ck_assert_int_eq(num_parse_u64("1\0002", 3, UINT64_MAX, &v), -EINVAL);
}
END_TEST

static int hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	memset(host, 'X', hostlen);
	*port = 4242;
	return num_parse_hostport(s, host, hostlen, port);
}

START_TEST(test_hostport_valid)
{
	static const struct {
		const char *in, *host;
		uint16_t port;
	} cases[] = {
		{ "127.0.0.1:8080", "127.0.0.1", 8080 },
		{ "localhost:1", "localhost", 1 },
		{ "node-1.example.com:65535", "node-1.example.com", 65535 },
		{ "[::1]:9000", "::1", 9000 },
		{ "[fe80::1%eth0]:80", "fe80::1%eth0", 80 },
		/* Port 0 means "pick an ephemeral port" to a listener, so it parses. */
		{ "0.0.0.0:0", "0.0.0.0", 0 },
	};
	char host[64];
	uint16_t port;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_msg(hostport(cases[i].in, host, sizeof(host), &port) == 0,
			      "rejected [%s]", cases[i].in);
		ck_assert_str_eq(host, cases[i].host);
		ck_assert_uint_eq(port, cases[i].port);
	}
}
END_TEST

START_TEST(test_hostport_invalid)
{
	static const char *const bad[] = {
		"",            "localhost",   "localhost:",  ":80",         "host:65536",
		"host:99999",  "host:-1",     "host:+80",    "host: 80",    "host:80 ",
		"host:80x",    "::1:80",      "::1",         "fe80::1:443", "[::1]",
		"[::1]:",      "[::1]80",     "[::1:80",     "[]:80",       "[::1]:65536",
		"a:b:80",
	};
	char host[64];
	uint16_t port;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(hostport(bad[i], host, sizeof(host), &port) == -EINVAL,
			      "accepted [%s]", bad[i]);
		ck_assert_uint_eq(port, 4242);
	}
}
END_TEST

START_TEST(test_hostport_host_length)
{
	char host[8];
	uint16_t port;

	/* hostlen includes the NUL: 7 characters fit in 8 bytes, 8 do not. */
	ck_assert_int_eq(hostport("abcdefg:1", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "abcdefg");
	ck_assert_int_eq(hostport("abcdefgh:1", host, sizeof(host), &port), -EINVAL);
	ck_assert_uint_eq(port, 4242);
	ck_assert_int_eq(hostport("[1:2:3:4]:1", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "1:2:3:4");
	ck_assert_int_eq(hostport("[1:2:3:45]:1", host, sizeof(host), &port), -EINVAL);
	ck_assert_int_eq(hostport("a:1", host, 0, &port), -EINVAL);
}
END_TEST

struct dur_case {
	uint64_t ms;
	const char *want;
};

START_TEST(test_go_duration)
{
	/* Expected strings are what Go's time.Duration(ms * time.Millisecond).String() prints. */
	static const struct dur_case cases[] = {
		{ 0, "0s" },          { 1, "1ms" },               { 120, "120ms" },
		{ 999, "999ms" },     { 1000, "1s" },             { 1001, "1.001s" },
		{ 1050, "1.05s" },    { 1500, "1.5s" },           { 59999, "59.999s" },
		{ 60000, "1m0s" },    { 61001, "1m1.001s" },      { 90500, "1m30.5s" },
		{ 360000, "6m0s" },   { 3599999, "59m59.999s" },  { 3600000, "1h0m0s" },
		{ 3723000, "1h2m3s" }, { 3600010, "1h0m0.01s" },  { 86400000, "24h0m0s" },
	};
	char out[64];
	size_t i, n;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(out, 'X', sizeof(out));
		n = num_format_go_duration(cases[i].ms, out, sizeof(out));
		ck_assert_msg(strcmp(out, cases[i].want) == 0, "%llu ms: got [%s], want [%s]",
			      (unsigned long long)cases[i].ms, out, cases[i].want);
		ck_assert_uint_eq(n, strlen(cases[i].want));
	}
}
END_TEST

START_TEST(test_go_duration_truncates)
{
	char out[8];

	memset(out, 'X', sizeof(out));
	ck_assert_uint_eq(num_format_go_duration(3723000, out, 4), 3);
	ck_assert_str_eq(out, "1h2");
	ck_assert_int_eq(out[4], 'X');
	ck_assert_uint_eq(num_format_go_duration(0, out, 1), 0);
	ck_assert_str_eq(out, "");
	out[0] = 'X';
	ck_assert_uint_eq(num_format_go_duration(1500, out, 0), 0);
	ck_assert_int_eq(out[0], 'X');
}
END_TEST

START_TEST(test_format_seconds)
{
	static const struct dur_case cases[] = {
		{ 0, "0" },         { 5, "0.005" },   { 50, "0.05" },   { 500, "0.5" },
		{ 1000, "1" },      { 1200, "1.2" },  { 1230, "1.23" }, { 1234, "1.234" },
		{ 1005, "1.005" },  { 61001, "61.001" },
		{ UINT64_MAX, "18446744073709551.615" },
	};
	char out[64];
	size_t i, n;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = num_format_seconds(cases[i].ms, out, sizeof(out));
		ck_assert_msg(strcmp(out, cases[i].want) == 0, "%llu ms: got [%s], want [%s]",
			      (unsigned long long)cases[i].ms, out, cases[i].want);
		ck_assert_uint_eq(n, strlen(cases[i].want));
	}
	/* Truncation reports what was written, and a zero-size buffer is left alone. */
	ck_assert_uint_eq(num_format_seconds(1234, out, 3), 2);
	ck_assert_str_eq(out, "1.");
	out[0] = 'X';
	ck_assert_uint_eq(num_format_seconds(1234, out, 0), 0);
	ck_assert_int_eq(out[0], 'X');
}
END_TEST

START_TEST(test_format_u64)
{
	char out[NUM_U64_DIGITS_MAX + 1], want[32];
	uint64_t p = 1;
	int i;

	/* Around every power of ten, where the digit count changes. */
	for (i = 0; i < 20; i++, p *= 10) {
		uint64_t v[3] = { p - 1, p, p + 1 };
		int k;

		for (k = 0; k < 3; k++) {
			size_t n = num_format_u64(v[k], out);

			out[n] = '\0';
			snprintf(want, sizeof(want), "%llu", (unsigned long long)v[k]);
			ck_assert_str_eq(out, want);
		}
	}
	ck_assert_uint_eq(num_format_u64(UINT64_MAX, out), 20);
	out[20] = '\0';
	ck_assert_str_eq(out, "18446744073709551615");
}
END_TEST

static Suite *num_suite(void)
{
	Suite *s = suite_create("num");
	TCase *tc = tcase_create("parse");

	tcase_add_test(tc, test_parse_u64);
	tcase_add_test(tc, test_hostport_valid);
	tcase_add_test(tc, test_hostport_invalid);
	tcase_add_test(tc, test_hostport_host_length);
	suite_add_tcase(s, tc);

	tc = tcase_create("format");
	tcase_add_test(tc, test_go_duration);
	tcase_add_test(tc, test_go_duration_truncates);
	tcase_add_test(tc, test_format_seconds);
	tcase_add_test(tc, test_format_u64);
	suite_add_tcase(s, tc);
	return s;
}

/* ---------------------------------------------------------------- metrics */

static struct metrics *m;
static struct buf out;

static void metrics_setup(void)
{
	ck_assert_int_eq(metrics_new(&m), 0);
	ck_assert_ptr_nonnull(m);
	buf_init(&out);
}

static void metrics_teardown(void)
{
	metrics_free(m);
	m = NULL;
	buf_close(&out);
}

static const char *render(void)
{
	buf_reset(&out);
	ck_assert_int_eq(metrics_render(m, &out), 0);
	return out.len ? out.data : "";
}

START_TEST(test_metrics_render_exact)
{
	static const double bounds[] = { 0.25, 1, 2.5 };
	struct metrics_counter *c;
	struct metrics_gauge *g;
	struct metrics_histogram *h;

	c = metrics_counter(m, "llm_requests_total", "Requests by endpoint and status.",
			    "endpoint=\"chat\",status=\"200\"");
	g = metrics_gauge(m, "llm_keys", "Keys in the table.", "");
	h = metrics_histogram(m, "llm_latency_seconds", "Request latency.", "", bounds, 3);
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(g);
	ck_assert_ptr_nonnull(h);
	metrics_counter_add(c, 3);
	metrics_counter_add(c, 2);
	ck_assert_uint_eq(metrics_counter_value(c), 5);
	metrics_gauge_set(g, 10);
	metrics_gauge_add(g, -2.5);
	metrics_histogram_observe(h, 0.25); /* on a bound: le is inclusive */
	metrics_histogram_observe(h, 0.5);
	metrics_histogram_observe(h, 2);
	metrics_histogram_observe(h, 10);
	metrics_histogram_observe(h, -1);
	ck_assert_str_eq(render(),
			 "# HELP llm_requests_total Requests by endpoint and status.\n"
			 "# TYPE llm_requests_total counter\n"
			 "llm_requests_total{endpoint=\"chat\",status=\"200\"} 5\n"
			 "# HELP llm_keys Keys in the table.\n"
			 "# TYPE llm_keys gauge\n"
			 "llm_keys 7.5\n"
			 "# HELP llm_latency_seconds Request latency.\n"
			 "# TYPE llm_latency_seconds histogram\n"
			 "llm_latency_seconds_bucket{le=\"0.25\"} 2\n"
			 "llm_latency_seconds_bucket{le=\"1\"} 3\n"
			 "llm_latency_seconds_bucket{le=\"2.5\"} 4\n"
			 "llm_latency_seconds_bucket{le=\"+Inf\"} 5\n"
			 "llm_latency_seconds_sum 11.75\n"
			 "llm_latency_seconds_count 5\n");
}
END_TEST

START_TEST(test_metrics_histogram_labels)
{
	static const double bounds[] = { 0.005, 0.1 };
	struct metrics_histogram *h;

	h = metrics_histogram(m, "lat", "", "route=\"a\"", bounds, 2);
	ck_assert_ptr_nonnull(h);
	metrics_histogram_observe(h, 0.004);
	metrics_histogram_observe(h, 0.1);
	/* 0.004 + 0.1 is not 0.104 in binary; the sum keeps the digits that round-trip. */
	ck_assert_str_eq(render(), "# TYPE lat histogram\n"
				   "lat_bucket{route=\"a\",le=\"0.005\"} 1\n"
				   "lat_bucket{route=\"a\",le=\"0.1\"} 2\n"
				   "lat_bucket{route=\"a\",le=\"+Inf\"} 2\n"
				   "lat_sum{route=\"a\"} 0.10400000000000001\n"
				   "lat_count{route=\"a\"} 2\n");
}
END_TEST

START_TEST(test_metrics_family_grouping)
{
	struct metrics_counter *a1, *a2, *a3;
	struct metrics_gauge *bg;

	/* Series of one family created interleaved with another still render together, under
	 * a single HELP/TYPE, in creation order; the first help wins. */
	a1 = metrics_counter(m, "a_total", "First help.", "x=\"1\"");
	bg = metrics_gauge(m, "b", "B.", "");
	a2 = metrics_counter(m, "a_total", "Ignored help.", "x=\"2\"");
	a3 = metrics_counter(m, "a_total", NULL, "");
	metrics_counter_add(a1, 1);
	metrics_counter_add(a2, 2);
	metrics_counter_add(a3, 3);
	metrics_gauge_set(bg, 4);
	ck_assert_str_eq(render(), "# HELP a_total First help.\n"
				   "# TYPE a_total counter\n"
				   "a_total{x=\"1\"} 1\n"
				   "a_total{x=\"2\"} 2\n"
				   "a_total 3\n"
				   "# HELP b B.\n"
				   "# TYPE b gauge\n"
				   "b 4\n");
}
END_TEST

START_TEST(test_metrics_find_or_create)
{
	static const double bounds[] = { 1, 2 };
	static const double other[] = { 1, 3 };
	struct metrics_counter *c;
	struct metrics_histogram *h;

	c = metrics_counter(m, "c_total", "C.", "k=\"v\"");
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_eq(metrics_counter(m, "c_total", "C.", "k=\"v\""), c);
	ck_assert_ptr_eq(metrics_counter(m, "c_total", "other help", "k=\"v\""), c);
	ck_assert_ptr_ne(metrics_counter(m, "c_total", "C.", "k=\"w\""), c);
	ck_assert_ptr_ne(metrics_counter(m, "c_total", "C.", ""), c);
	/* NULL labels mean no labels. */
	ck_assert_ptr_eq(metrics_counter(m, "c_total", "C.", NULL),
			 metrics_counter(m, "c_total", "C.", ""));
	/* Name and labels are not simply concatenated. */
	ck_assert_ptr_ne(metrics_counter(m, "c_totalk", "C.", "=\"v\""), c);

	h = metrics_histogram(m, "h", "H.", "", bounds, 2);
	ck_assert_ptr_nonnull(h);
	ck_assert_ptr_eq(metrics_histogram(m, "h", "H.", "", bounds, 2), h);
	/* A copy of the bounds is as good as the same array. */
	{
		double copy[2] = { 1, 2 };

		ck_assert_ptr_eq(metrics_histogram(m, "h", "H.", "", copy, 2), h);
	}
	/* The same series with other bounds is a caller bug: no series. */
	ck_assert_ptr_null(metrics_histogram(m, "h", "H.", "", other, 2));
	ck_assert_ptr_null(metrics_histogram(m, "h", "H.", "", bounds, 1));
}
END_TEST

START_TEST(test_metrics_type_conflict)
{
	static const double bounds[] = { 1 };

	ck_assert_ptr_nonnull(metrics_counter(m, "x", "X.", "a=\"1\""));
	/* Same series, other type. */
	ck_assert_ptr_null(metrics_gauge(m, "x", "X.", "a=\"1\""));
	ck_assert_ptr_null(metrics_histogram(m, "x", "X.", "a=\"1\"", bounds, 1));
	/* Same family, new series, other type. */
	ck_assert_ptr_null(metrics_gauge(m, "x", "X.", "a=\"2\""));
	ck_assert_ptr_null(metrics_histogram(m, "x", "X.", "", bounds, 1));
	/* The failed calls created nothing. */
	ck_assert_str_eq(render(), "# HELP x X.\n# TYPE x counter\nx{a=\"1\"} 0\n");
}
END_TEST

START_TEST(test_metrics_histogram_bounds)
{
	static const double desc[] = { 2, 1 };
	static const double dup[] = { 1, 1 };
	static const double inf_last[] = { 1, INFINITY };
	static const double inf_first[] = { INFINITY, 1 };
	const double with_nan[] = { 1, NAN };
	struct metrics_histogram *h, *z;

	ck_assert_ptr_null(metrics_histogram(m, "h", "", "", desc, 2));
	ck_assert_ptr_null(metrics_histogram(m, "h", "", "", dup, 2));
	ck_assert_ptr_null(metrics_histogram(m, "h", "", "", with_nan, 2));
	ck_assert_ptr_null(metrics_histogram(m, "h", "", "", inf_first, 2));
	ck_assert_ptr_null(metrics_histogram(m, "h", "", "", NULL, 2));
	ck_assert_str_eq(render(), "");

	/* A trailing +Inf is the implied bucket and is not repeated. */
	h = metrics_histogram(m, "h", "", "", inf_last, 2);
	ck_assert_ptr_nonnull(h);
	ck_assert_ptr_eq(metrics_histogram(m, "h", "", "", inf_last, 1), h);
	/* No bounds at all: only +Inf. */
	z = metrics_histogram(m, "z", "", "", NULL, 0);
	ck_assert_ptr_nonnull(z);
	metrics_histogram_observe(h, 1);
	metrics_histogram_observe(h, 1.5);
	metrics_histogram_observe(z, 3);
	ck_assert_str_eq(render(), "# TYPE h histogram\n"
				   "h_bucket{le=\"1\"} 1\n"
				   "h_bucket{le=\"+Inf\"} 2\n"
				   "h_sum 2.5\n"
				   "h_count 2\n"
				   "# TYPE z histogram\n"
				   "z_bucket{le=\"+Inf\"} 1\n"
				   "z_sum 3\n"
				   "z_count 1\n");
}
END_TEST

START_TEST(test_metrics_histogram_buckets_search)
{
	double bounds[32];
	struct metrics_histogram *h;
	const char *text;
	char line[64];
	size_t i;

	/* 32 bounds 1..32; observing k + 0.5 for k in 0..32 puts one value in every bucket. */
	for (i = 0; i < 32; i++)
		bounds[i] = (double)(i + 1);
	h = metrics_histogram(m, "h", "", "", bounds, 32);
	ck_assert_ptr_nonnull(h);
	for (i = 0; i <= 32; i++)
		metrics_histogram_observe(h, (double)i + 0.5);
	text = render();
	for (i = 0; i < 32; i++) {
		snprintf(line, sizeof(line), "\nh_bucket{le=\"%zu\"} %zu\n", i + 1, i + 1);
		ck_assert_msg(strstr(text, line), "missing [%s]", line + 1);
	}
	ck_assert_ptr_nonnull(strstr(text, "\nh_bucket{le=\"+Inf\"} 33\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nh_sum 544.5\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nh_count 33\n"));
}
END_TEST

START_TEST(test_metrics_histogram_nan)
{
	static const double bounds[] = { 1 };
	struct metrics_histogram *h = metrics_histogram(m, "h", "", "", bounds, 1);

	metrics_histogram_observe(h, NAN);
	metrics_histogram_observe(h, INFINITY);
	metrics_histogram_observe(h, -INFINITY);
	ck_assert_str_eq(render(), "# TYPE h histogram\n"
				   "h_bucket{le=\"1\"} 1\n"
				   "h_bucket{le=\"+Inf\"} 3\n"
				   "h_sum NaN\n"
				   "h_count 3\n");
}
END_TEST

struct fmt_case {
	double v;
	const char *want;
};

START_TEST(test_metrics_double_format)
{
	static const struct fmt_case cases[] = {
		{ 0, "0" },           { -0.0, "0" },       { 1, "1" },         { -3, "-3" },
		{ 1000000, "1000000" }, { 0.1, "0.1" },    { 0.005, "0.005" }, { 2.5, "2.5" },
		{ -2.5, "-2.5" },     { 1e-7, "1e-07" },   { 1e20, "1e+20" },  { 1e300, "1e+300" },
		{ 123456.789, "123456.789" },      { 1.0 / 3, "0.3333333333333333" },
		{ 0.1 + 0.2, "0.30000000000000004" }, { 5e-324, "5e-324" },
		{ 9007199254740993.0, "9007199254740992" }, /* 2^53 + 1 rounds to 2^53 */
		{ INFINITY, "+Inf" }, { -INFINITY, "-Inf" }, { NAN, "NaN" },
	};
	struct metrics_gauge *g = metrics_gauge(m, "g", "", "");
	char want[128];
	size_t i;

	ck_assert_ptr_nonnull(g);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		metrics_gauge_set(g, cases[i].v);
		snprintf(want, sizeof(want), "# TYPE g gauge\ng %s\n", cases[i].want);
		ck_assert_str_eq(render(), want);
		/* Whatever is printed reads back as the same value. */
		if (isfinite(cases[i].v))
			ck_assert(strtod(cases[i].want, NULL) == cases[i].v);
	}
}
END_TEST

START_TEST(test_metrics_help_escaping)
{
	ck_assert_ptr_nonnull(metrics_gauge(m, "g", "two\nlines, a \\ and \"quotes\"", ""));
	ck_assert_str_eq(render(), "# HELP g two\\nlines, a \\\\ and \"quotes\"\n"
				   "# TYPE g gauge\n"
				   "g 0\n");
}
END_TEST

START_TEST(test_metrics_counter_u64)
{
	struct metrics_counter *c = metrics_counter(m, "big_total", "", "");

	metrics_counter_add(c, UINT64_MAX - 1);
	metrics_counter_add(c, 1);
	ck_assert_uint_eq(metrics_counter_value(c), UINT64_MAX);
	ck_assert_str_eq(render(), "# TYPE big_total counter\nbig_total 18446744073709551615\n");
}
END_TEST

START_TEST(test_metrics_render_appends)
{
	metrics_counter_add(metrics_counter(m, "n_total", "", ""), 1);
	ck_assert_int_eq(buf_puts(&out, "prefix\n"), 0);
	ck_assert_int_eq(metrics_render(m, &out), 0);
	ck_assert_str_eq(out.data, "prefix\n# TYPE n_total counter\nn_total 1\n");
	/* An empty registry renders nothing. */
	metrics_free(m);
	ck_assert_int_eq(metrics_new(&m), 0);
	ck_assert_str_eq(render(), "");
}
END_TEST

START_TEST(test_metrics_many_series)
{
	enum { N = 3000 };
	struct metrics_counter **cs = calloc(N, sizeof(*cs));
	char labels[64], name[32];
	size_t i;

	/* Enough series and families to grow both indexes several times; every pointer stays
	 * valid and every lookup finds its own series. */
	ck_assert_ptr_nonnull(cs);
	for (i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "fam%zu_total", i % 7);
		snprintf(labels, sizeof(labels), "key=\"k%zu\"", i);
		cs[i] = metrics_counter(m, name, "", labels);
		ck_assert_ptr_nonnull(cs[i]);
		metrics_counter_add(cs[i], i);
	}
	for (i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "fam%zu_total", i % 7);
		snprintf(labels, sizeof(labels), "key=\"k%zu\"", i);
		ck_assert_ptr_eq(metrics_counter(m, name, "", labels), cs[i]);
		ck_assert_uint_eq(metrics_counter_value(cs[i]), i);
	}
	render();
	/* Seven families, each grouped: its TYPE line appears once, before all its series. */
	for (i = 0; i < 7; i++) {
		char type[64];
		const char *t;

		snprintf(type, sizeof(type), "# TYPE fam%zu_total counter\n", i);
		t = strstr(out.data, type);
		ck_assert_ptr_nonnull(t);
		ck_assert_ptr_null(strstr(t + 1, type));
	}
	ck_assert_ptr_nonnull(strstr(out.data, "\nfam0_total{key=\"k0\"} 0\n"
					       "fam0_total{key=\"k7\"} 7\n"));
	ck_assert_ptr_nonnull(strstr(out.data, "\nfam3_total{key=\"k2999\"} 2999\n"));
	free(cs);
}
END_TEST

START_TEST(test_metrics_null_safety)
{
	static const double bounds[] = { 1 };
	struct buf o;

	ck_assert_int_eq(metrics_new(NULL), -EINVAL);
	metrics_free(NULL);
	ck_assert_ptr_null(metrics_counter(NULL, "c", "", ""));
	ck_assert_ptr_null(metrics_gauge(NULL, "g", "", ""));
	ck_assert_ptr_null(metrics_histogram(NULL, "h", "", "", bounds, 1));
	ck_assert_ptr_null(metrics_counter(m, NULL, "", ""));
	ck_assert_ptr_null(metrics_gauge(m, "", "", ""));
	metrics_counter_add(NULL, 1);
	metrics_gauge_set(NULL, 1);
	metrics_gauge_add(NULL, 1);
	metrics_histogram_observe(NULL, 1);
	ck_assert_uint_eq(metrics_counter_value(NULL), 0);
	ck_assert_int_eq(metrics_render(m, NULL), -EINVAL);
	buf_init(&o);
	ck_assert_int_eq(metrics_render(NULL, &o), 0);
	ck_assert_uint_eq(o.len, 0);
	buf_close(&o);
	ck_assert_str_eq(render(), "");
}
END_TEST

static Suite *metrics_suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("metrics");

	tcase_add_checked_fixture(tc, metrics_setup, metrics_teardown);
	tcase_add_test(tc, test_metrics_render_exact);
	tcase_add_test(tc, test_metrics_histogram_labels);
	tcase_add_test(tc, test_metrics_family_grouping);
	tcase_add_test(tc, test_metrics_find_or_create);
	tcase_add_test(tc, test_metrics_type_conflict);
	tcase_add_test(tc, test_metrics_histogram_bounds);
	tcase_add_test(tc, test_metrics_histogram_buckets_search);
	tcase_add_test(tc, test_metrics_histogram_nan);
	tcase_add_test(tc, test_metrics_double_format);
	tcase_add_test(tc, test_metrics_help_escaping);
	tcase_add_test(tc, test_metrics_counter_u64);
	tcase_add_test(tc, test_metrics_render_appends);
	tcase_add_test(tc, test_metrics_many_series);
	tcase_add_test(tc, test_metrics_null_safety);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(buf_suite());
	int failed;

	srunner_add_suite(sr, num_suite());
	srunner_add_suite(sr, metrics_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
