/* check_table.c — the key table: SipHash vectors, lookup under forced collisions, growth,
 * oldest-first expiry with a budget, the size cap, argument errors and reconciliation of
 * expired keys. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/siphash.h"
#include "window/table.h"

#define U WINDOW_UNLIMITED

static const uint8_t seed[16] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
static const uint64_t rpm10[WINDOW_DIMS] = { 10, U, U };
static const uint64_t one[WINDOW_DIMS] = { 1, 0, 0 };

static struct window_table *tab;

static void setup(void)
{
	ck_assert_int_eq(window_table_new(&tab, 0, seed), 0);
}

static void teardown(void)
{
	window_table_free(tab);
	tab = NULL;
}

/* Admits one request for the NUL-terminated `key` under 10 RPM; returns the error code. */
static int hit(struct window_table *t, const char *key, uint64_t now)
{
	struct window_verdict v;
	int err = window_table_admit(t, key, strlen(key), rpm10, one, now, &v);

	if (!err)
		ck_assert(v.allowed);
	return err;
}

static uint64_t requests(struct window_table *t, const char *key, uint64_t now)
{
	uint64_t used[WINDOW_DIMS];

	window_table_usage(t, key, strlen(key), now, used);
	return used[WINDOW_REQUESTS];
}

/* The reference vectors (SipHash paper, appendix A / the reference implementation's
 * vectors.h): key 00..0f, message 00 01 .. (len-1) for len 0..63. */
static const uint64_t sip_vectors[64] = {
	0x726fdb47dd0e0e31ull, 0x74f839c593dc67fdull, 0x0d6c8009d9a94f5aull, 0x85676696d7fb7e2dull,
	0xcf2794e0277187b7ull, 0x18765564cd99a68dull, 0xcbc9466e58fee3ceull, 0xab0200f58b01d137ull,
	0x93f5f5799a932462ull, 0x9e0082df0ba9e4b0ull, 0x7a5dbbc594ddb9f3ull, 0xf4b32f46226bada7ull,
	0x751e8fbc860ee5fbull, 0x14ea5627c0843d90ull, 0xf723ca908e7af2eeull, 0xa129ca6149be45e5ull,
	0x3f2acc7f57c29bdbull, 0x699ae9f52cbe4794ull, 0x4bc1b3f0968dd39cull, 0xbb6dc91da77961bdull,
	0xbed65cf21aa2ee98ull, 0xd0f2cbb02e3b67c7ull, 0x93536795e3a33e88ull, 0xa80c038ccd5ccec8ull,
	0xb8ad50c6f649af94ull, 0xbce192de8a85b8eaull, 0x17d835b85bbb15f3ull, 0x2f2e6163076bcfadull,
	0xde4daaaca71dc9a5ull, 0xa6a2506687956571ull, 0xad87a3535c49ef28ull, 0x32d892fad841c342ull,
	0x7127512f72f27cceull, 0xa7f32346f95978e3ull, 0x12e0b01abb051238ull, 0x15e034d40fa197aeull,
	0x314dffbe0815a3b4ull, 0x027990f029623981ull, 0xcadcd4e59ef40c4dull, 0x9abfd8766a33735cull,
	0x0e3ea96b5304a7d0ull, 0xad0c42d6fc585992ull, 0x187306c89bc215a9ull, 0xd4a60abcf3792b95ull,
	0xf935451de4f21df2ull, 0xa9538f0419755787ull, 0xdb9acddff56ca510ull, 0xd06c98cd5c0975ebull,
	0xe612a3cb9ecba951ull, 0xc766e62cfcadaf96ull, 0xee64435a9752fe72ull, 0xa192d576b245165aull,
	0x0a8787bf8ecb74b2ull, 0x81b3e73d20b49b6full, 0x7fa8220ba3b2eceaull, 0x245731c13ca42499ull,
	0xb78dbfaf3a8d83bdull, 0xea1ad565322a1a0bull, 0x60e61c23a3795013ull, 0x6606d7e446282b93ull,
	0x6ca4ecb15c5f91e1ull, 0x9f626da15c9625f3ull, 0xe51b38608ef25f57ull, 0x958a324ceb064572ull,
};

START_TEST(test_siphash_vectors)
{
	uint8_t msg[64 + 1];
	size_t len;

	for (len = 0; len < 64; len++)
		msg[len] = (uint8_t)len;
	for (len = 0; len < 64; len++) {
		ck_assert_msg(siphash24(seed, msg, len) == sip_vectors[len], "len %zu", len);
		/* Unaligned input gives the same answer. */
		memmove(msg + 1, msg, 64);
		ck_assert(siphash24(seed, msg + 1, len) == sip_vectors[len]);
		memmove(msg, msg + 1, 64);
	}
	ck_assert(siphash24(seed, NULL, 0) == sip_vectors[0]);
}
END_TEST

START_TEST(test_create_and_lookup)
{
	static const char nul_key[] = { 'k', 0, 'x' };
	struct window_verdict v;
	uint64_t used[WINDOW_DIMS];
	int i;

	ck_assert_uint_eq(window_table_size(tab), 0);
	ck_assert_uint_eq(requests(tab, "alpha", 0), 0);
	ck_assert_uint_eq(window_table_size(tab), 0);  /* usage does not create */
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(hit(tab, "alpha", 100), 0);
	ck_assert_int_eq(hit(tab, "alphab", 100), 0);
	ck_assert_int_eq(hit(tab, "alph", 100), 0);
	ck_assert_uint_eq(window_table_size(tab), 3);
	ck_assert_uint_eq(requests(tab, "alpha", 100), 3);
	ck_assert_uint_eq(requests(tab, "alphab", 100), 1);
	ck_assert_uint_eq(requests(tab, "alph", 100), 1);

	/* Keys are bytes, not strings. */
	ck_assert_int_eq(window_table_admit(tab, nul_key, 3, rpm10, one, 100, &v), 0);
	ck_assert_int_eq(window_table_admit(tab, nul_key, 2, rpm10, one, 100, &v), 0);
	ck_assert_int_eq(window_table_admit(tab, nul_key, 3, rpm10, one, 100, &v), 0);
	ck_assert_uint_eq(v.used[WINDOW_REQUESTS], 1);
	window_table_usage(tab, nul_key, 1, 100, used);
	ck_assert_uint_eq(used[WINDOW_REQUESTS], 0);
	ck_assert_uint_eq(window_table_size(tab), 5);

	/* The verdict is the window's, limits and all. */
	for (i = 0; i < 7; i++)
		ck_assert_int_eq(hit(tab, "alpha", 200), 0);
	ck_assert_int_eq(window_table_admit(tab, "alpha", 5, rpm10, one, 300, &v), 0);
	ck_assert(!v.allowed);
	ck_assert_int_eq(v.denied_dim, WINDOW_REQUESTS);
	ck_assert_uint_eq(v.retry_after_ms, 61000 - 300);
	ck_assert_uint_eq(v.remaining[WINDOW_REQUESTS], 0);
}
END_TEST

/* Finds `n` keys whose hash agrees in the low `bits` bits, so they share a home slot in every
 * table of up to 2^bits slots. Names go into names[i] (16 bytes each). */
static void colliding_keys(char (*names)[16], int n, unsigned bits)
{
	uint64_t mask = ((uint64_t)1 << bits) - 1, want = 0;
	unsigned long c;
	int found = 0;

	for (c = 0; found < n; c++) {
		char name[16];
		uint64_t h;

		snprintf(name, sizeof(name), "k%lu", c);
		h = siphash24(seed, name, strlen(name)) & mask;
		if (found == 0)
			want = h;
		if (h == want)
			memcpy(names[found++], name, sizeof(name));
		ck_assert_uint_lt(c, 100000000ul);
	}
}

/* Twelve keys with one home slot in the 16-slot table: one long probe run, then deletions from
 * inside it, at its head and in a row (backward shifting) must keep every survivor reachable. */
START_TEST(test_forced_collisions)
{
	char names[12][16];
	int i;

	colliding_keys(names, 12, 4);
	for (i = 0; i < 12; i++)
		ck_assert_int_eq(hit(tab, names[i], 0), 0);
	ck_assert_uint_eq(window_table_size(tab), 12);
	for (i = 0; i < 12; i++)
		ck_assert_uint_eq(requests(tab, names[i], 0), 1);
	/* Charge keys 1, 4, 7, 10 again later, so the others are the oldest and expire first. */
	for (i = 1; i < 12; i += 3)
		ck_assert_int_eq(hit(tab, names[i], 30000), 0);
	ck_assert_uint_eq(window_table_expire(tab, 61000, 100), 8);
	ck_assert_uint_eq(window_table_size(tab), 4);
	for (i = 0; i < 12; i++)
		ck_assert_uint_eq(requests(tab, names[i], 61000), (i % 3 == 1 ? 1 : 0));
	/* And the holes can be filled again. */
	for (i = 0; i < 12; i++)
		if (i % 3 != 1)
			ck_assert_int_eq(hit(tab, names[i], 61000), 0);
	for (i = 0; i < 12; i++)
		ck_assert_uint_eq(requests(tab, names[i], 61000), 1);
	ck_assert_uint_eq(window_table_size(tab), 12);
}
END_TEST

/* 300 keys on one home slot across several growths (16 .. 512 slots). */
START_TEST(test_collisions_through_growth)
{
	static char names[300][16];
	int i;

	colliding_keys(names, 300, 10);
	for (i = 0; i < 300; i++) {
		ck_assert_int_eq(hit(tab, names[i], (uint64_t)i * 100), 0);
		ck_assert_int_eq(hit(tab, names[i / 2], (uint64_t)i * 100), 0);
	}
	ck_assert_uint_eq(window_table_size(tab), 300);
	for (i = 0; i < 300; i++)
		ck_assert_uint_eq(requests(tab, names[i], 30000), i < 150 ? 3 : 1);
	ck_assert_uint_eq(window_table_expire(tab, 30000 + 61000, 1000), 300);
	ck_assert_uint_eq(window_table_size(tab), 0);
}
END_TEST

START_TEST(test_growth)
{
	char key[32];
	int i;

	for (i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "sk-test-%d", i);
		ck_assert_int_eq(hit(tab, key, 0), 0);
		ck_assert_uint_eq(window_table_size(tab), (size_t)i + 1);
	}
	for (i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "sk-test-%d", i);
		ck_assert_uint_eq(requests(tab, key, 0), 1);
	}
	ck_assert_uint_eq(requests(tab, "sk-test-20000", 0), 0);
}
END_TEST

/* Keys expire in order of last charge, at most `budget` per call, and only once idle. */
START_TEST(test_expire_oldest_first)
{
	char key[8];
	int i;

	for (i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		ck_assert_int_eq(hit(tab, key, (uint64_t)i * 1000), 0);
	}
	/* k0 charged again: now the newest. */
	ck_assert_int_eq(hit(tab, "k0", 10500), 0);
	/* At 65.5 s the buckets 0..4 are gone: k1..k4 are idle, k5 (bucket 5) is not. */
	ck_assert_uint_eq(window_table_expire(tab, 65500, 0), 0);
	ck_assert_uint_eq(window_table_expire(tab, 65500, 3), 3);
	ck_assert_uint_eq(requests(tab, "k1", 65500), 0);
	ck_assert_uint_eq(requests(tab, "k4", 1), 1);  /* still there (seen from the past) */
	ck_assert_uint_eq(requests(tab, "k3", 1), 0);  /* freed */
	ck_assert_uint_eq(window_table_size(tab), 7);
	ck_assert_uint_eq(window_table_expire(tab, 65500, 100), 1);
	ck_assert_uint_eq(window_table_size(tab), 6);
	ck_assert_uint_eq(requests(tab, "k5", 65500), 1);
	ck_assert_uint_eq(requests(tab, "k0", 65500), 1);
	/* Everything goes in the end, k0 (bucket 10) last. */
	ck_assert_uint_eq(window_table_expire(tab, 70000, 100), 5);
	ck_assert_uint_eq(requests(tab, "k0", 70000), 1);
	ck_assert_uint_eq(window_table_expire(tab, 70999, 100), 0);
	ck_assert_uint_eq(window_table_expire(tab, 71000, 100), 1);
	ck_assert_uint_eq(window_table_size(tab), 0);
}
END_TEST

/* Expiry looks only at the oldest key: a busy oldest key stops it (that is what makes it
 * O(freed)), even if a newer key was emptied by refunds; that one goes in its turn. */
START_TEST(test_expire_stops_at_busy_oldest)
{
	static const uint64_t lim[WINDOW_DIMS] = { U, U, 100 };
	static const uint64_t amt[WINDOW_DIMS] = { 0, 0, 50 };
	static const int64_t refund[WINDOW_DIMS] = { 0, 0, -50 };
	struct window_verdict v;

	ck_assert_int_eq(window_table_admit(tab, "busy", 4, lim, amt, 0, &v), 0);
	ck_assert_int_eq(window_table_admit(tab, "gone", 4, lim, amt, 1000, &v), 0);
	ck_assert_int_eq(window_table_adjust(tab, "gone", 4, v.bucket, refund, 2000), 0);
	ck_assert_uint_eq(window_table_expire(tab, 2000, 10), 0);
	ck_assert_uint_eq(window_table_size(tab), 2);
	ck_assert_uint_eq(window_table_expire(tab, 61000, 10), 2);
}
END_TEST

START_TEST(test_idle_keys_freed)
{
	char key[32];
	int i;

	for (i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		ck_assert_int_eq(hit(tab, key, (uint64_t)i * 10), 0);
	}
	/* At 100 s, keys charged before 40 s (bucket 39 and older) are idle: 4000 of them. The
	 * usage probes look from the past so that only presence decides the answer. */
	ck_assert_uint_eq(window_table_expire(tab, 100000, SIZE_MAX), 4000);
	ck_assert_uint_eq(window_table_size(tab), 1000);
	ck_assert_uint_eq(requests(tab, "key-3999", 40000), 0);
	ck_assert_uint_eq(requests(tab, "key-4000", 40000), 1);
	ck_assert_uint_eq(window_table_expire(tab, 200000, SIZE_MAX), 1000);
	ck_assert_uint_eq(window_table_size(tab), 0);
	/* The table still works after shrinking. */
	for (i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "again-%d", i);
		ck_assert_int_eq(hit(tab, key, 200000), 0);
	}
	ck_assert_uint_eq(window_table_size(tab), 100);
}
END_TEST

START_TEST(test_enospc)
{
	static const uint64_t too_many[WINDOW_DIMS] = { 11, 0, 0 };
	struct window_table *t;
	struct window_verdict v;

	ck_assert_int_eq(window_table_new(&t, 3, seed), 0);
	ck_assert_int_eq(hit(t, "a", 0), 0);
	ck_assert_int_eq(hit(t, "b", 1000), 0);
	ck_assert_int_eq(hit(t, "c", 2000), 0);
	/* Full of busy keys. */
	ck_assert_int_eq(window_table_admit(t, "d", 1, rpm10, one, 3000, &v), -ENOSPC);
	ck_assert(!v.allowed);
	ck_assert_uint_eq(window_table_size(t), 3);
	/* Known keys carry on. */
	ck_assert_int_eq(hit(t, "a", 3000), 0);
	/* A request that is denied anyway gets its verdict, and no key. */
	ck_assert_int_eq(window_table_admit(t, "d", 1, rpm10, too_many, 3000, &v), 0);
	ck_assert(!v.allowed);
	ck_assert(v.never_fits);
	/* At 62 s "b" (bucket 1) is the oldest by last charge and idle: it makes room. */
	ck_assert_int_eq(window_table_admit(t, "d", 1, rpm10, one, 62000, &v), 0);
	ck_assert(v.allowed);
	ck_assert_uint_eq(window_table_size(t), 3);
	ck_assert_uint_eq(requests(t, "b", 2000), 0);
	ck_assert_uint_eq(requests(t, "a", 62000), 1);
	ck_assert_uint_eq(requests(t, "d", 62000), 1);
	/* The order is now c (last charged at 2 s), a (3 s), d: c is idle at 63 s and goes, then
	 * a is the oldest and busy until 64 s. */
	ck_assert_int_eq(window_table_admit(t, "e", 1, rpm10, one, 63000, &v), 0);
	ck_assert_uint_eq(requests(t, "c", 2000), 0);
	ck_assert_int_eq(window_table_admit(t, "f", 1, rpm10, one, 63000, &v), -ENOSPC);
	window_table_free(t);
}
END_TEST

START_TEST(test_denied_request_creates_no_key)
{
	static const uint64_t lim[WINDOW_DIMS] = { 10, 100, 100 };
	static const uint64_t amt[WINDOW_DIMS] = { 1, 101, 0 };
	struct window_verdict v;

	ck_assert_int_eq(window_table_admit(tab, "new", 3, lim, amt, 0, &v), 0);
	ck_assert(!v.allowed);
	ck_assert_int_eq(v.denied_dim, WINDOW_INPUT);
	ck_assert_uint_eq(window_table_size(tab), 0);
}
END_TEST

START_TEST(test_einval)
{
	static const int64_t delta[WINDOW_DIMS] = { 1, 1, 1 };
	char big[WINDOW_KEY_MAX + 1];
	struct window_verdict v;
	uint64_t used[WINDOW_DIMS] = { 7, 7, 7 };

	memset(big, 'x', sizeof(big));
	ck_assert_int_eq(window_table_admit(tab, big, 0, rpm10, one, 0, &v), -EINVAL);
	ck_assert(!v.allowed);
	ck_assert_int_eq(window_table_admit(tab, big, sizeof(big), rpm10, one, 0, &v), -EINVAL);
	ck_assert_int_eq(window_table_adjust(tab, big, 0, 0, delta, 0), -EINVAL);
	ck_assert_int_eq(window_table_adjust(tab, big, sizeof(big), 0, delta, 0), -EINVAL);
	window_table_usage(tab, big, sizeof(big), 0, used);
	ck_assert_uint_eq(used[0] | used[1] | used[2], 0);
	ck_assert_uint_eq(window_table_size(tab), 0);
	ck_assert_int_eq(window_table_admit(tab, big, WINDOW_KEY_MAX, rpm10, one, 0, &v), 0);
	ck_assert(v.allowed);
	ck_assert_int_eq(window_table_admit(tab, big, 1, rpm10, one, 0, &v), 0);
	ck_assert_uint_eq(window_table_size(tab), 2);
}
END_TEST

START_TEST(test_adjust)
{
	static const uint64_t lim[WINDOW_DIMS] = { 10, 1000, 1000 };
	static const uint64_t amt[WINDOW_DIMS] = { 1, 100, 500 };
	static const int64_t refund[WINDOW_DIMS] = { 0, 0, -400 };
	static const int64_t extra[WINDOW_DIMS] = { 0, 0, 30 };
	struct window_verdict v;
	uint64_t used[WINDOW_DIMS];

	ck_assert_int_eq(window_table_admit(tab, "key", 3, lim, amt, 1000, &v), 0);
	ck_assert_int_eq(window_table_adjust(tab, "key", 3, v.bucket, refund, 2000), 0);
	window_table_usage(tab, "key", 3, 2000, used);
	ck_assert_uint_eq(used[WINDOW_OUTPUT], 100);
	ck_assert_uint_eq(used[WINDOW_INPUT], 100);
	/* Expired and freed: a refund finds nothing... */
	ck_assert_uint_eq(window_table_expire(tab, 62000, 10), 1);
	ck_assert_int_eq(window_table_adjust(tab, "key", 3, v.bucket, refund, 62000), -ENOENT);
	ck_assert_uint_eq(window_table_size(tab), 0);
	/* ...but work beyond the reservation is still charged, to a new key. */
	ck_assert_int_eq(window_table_adjust(tab, "key", 3, v.bucket, extra, 62000), 0);
	ck_assert_uint_eq(window_table_size(tab), 1);
	window_table_usage(tab, "key", 3, 62000, used);
	ck_assert_uint_eq(used[WINDOW_OUTPUT], 30);
	ck_assert_uint_eq(used[WINDOW_REQUESTS], 0);
	/* An extra charge makes the key the newest. */
	ck_assert_int_eq(window_table_admit(tab, "other", 5, lim, amt, 63000, &v), 0);
	ck_assert_int_eq(window_table_adjust(tab, "key", 3, v.bucket, extra, 64000), 0);
	ck_assert_uint_eq(window_table_expire(tab, 124500, 10), 1);
	ck_assert_uint_eq(requests(tab, "other", 63000), 0);
	window_table_usage(tab, "key", 3, 124500, used);
	ck_assert_uint_eq(used[WINDOW_OUTPUT], 30);
}
END_TEST

/* Reconciling an expired key when the table is full: the extra charge needs a slot. */
START_TEST(test_adjust_enospc)
{
	static const int64_t extra[WINDOW_DIMS] = { 0, 0, 30 };
	struct window_table *t;

	ck_assert_int_eq(window_table_new(&t, 1, seed), 0);
	ck_assert_int_eq(hit(t, "a", 0), 0);
	ck_assert_int_eq(window_table_adjust(t, "b", 1, 0, extra, 1000), -ENOSPC);
	ck_assert_int_eq(window_table_adjust(t, "b", 1, 0, extra, 61000), 0);
	ck_assert_uint_eq(window_table_size(t), 1);
	window_table_free(t);
}
END_TEST

/* 100k keys in and out, in waves, so growth, shrinking and expiry interleave (run under ASan
 * for the leak and use-after-free checks). */
START_TEST(test_100k_keys)
{
	char key[32];
	size_t freed = 0;
	int i;

	for (i = 0; i < 100000; i++) {
		snprintf(key, sizeof(key), "user-%d-%x", i, (unsigned)i * 2654435761u);
		ck_assert_int_eq(hit(tab, key, (uint64_t)i / 2), 0);
		if (i % 1000 == 999)
			freed += window_table_expire(tab, (uint64_t)i / 2, 64);
	}
	ck_assert_uint_eq(freed, 0);  /* nothing was idle yet */
	ck_assert_uint_eq(window_table_size(tab), 100000);
	for (i = 0; i < 100000; i += 997) {
		snprintf(key, sizeof(key), "user-%d-%x", i, (unsigned)i * 2654435761u);
		ck_assert_uint_eq(requests(tab, key, 50000), 1);
	}
	while (window_table_size(tab)) {
		size_t n = window_table_expire(tab, 200000, 4096);

		ck_assert_uint_gt(n, 0);
		freed += n;
	}
	ck_assert_uint_eq(freed, 100000);
}
END_TEST

/* ---- Randomized comparison with a model: one standalone window per key, a presence flag and
 * the sequence number of its last charge. ---- */

#define NKEYS 64

struct model {
	struct window w[NKEYS];
	bool present[NKEYS];
	uint64_t seq[NKEYS];  /* last charge */
	uint64_t next_seq;
	size_t size, max_keys;
};

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t rnd_below(uint64_t n)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ull % n;
}

static int model_oldest(const struct model *m)
{
	int k, best = -1;

	for (k = 0; k < NKEYS; k++)
		if (m->present[k] && (best < 0 || m->seq[k] < m->seq[best]))
			best = k;
	return best;
}

static size_t model_expire(struct model *m, uint64_t now, size_t budget)
{
	size_t n = 0;
	int k;

	while (n < budget && (k = model_oldest(m)) >= 0 && window_idle(&m->w[k], now)) {
		m->present[k] = false;
		m->size--;
		n++;
	}
	return n;
}

/* Makes key k present with window *w, as the table's insert() promises. */
static int model_insert(struct model *m, int k, const struct window *w, uint64_t now)
{
	if (m->max_keys && m->size >= m->max_keys && !model_expire(m, now, 1))
		return -ENOSPC;
	m->w[k] = *w;
	m->present[k] = true;
	m->seq[k] = m->next_seq++;
	m->size++;
	return 0;
}

START_TEST(test_random_against_model)
{
	static const uint64_t lim[WINDOW_DIMS] = { 5, 100, U };
	static char names[NKEYS][16];
	static struct model m;
	struct window_verdict got, want;
	uint64_t amt[WINDOW_DIMS], used[WINDOW_DIMS], mused[WINDOW_DIMS], now = 0;
	int64_t delta[WINDOW_DIMS];
	struct window_table *t;
	struct window fresh;
	int op, k, err, merr;
	uint32_t ticket;
	size_t budget;

	colliding_keys(names, NKEYS, 4);
	memset(&m, 0, sizeof(m));
	m.max_keys = 40;
	ck_assert_int_eq(window_table_new(&t, m.max_keys, seed), 0);
	for (op = 0; op < 20000; op++) {
		now += rnd_below(200) ? rnd_below(400) : 60000;
		k = (int)rnd_below(NKEYS);
		switch (rnd_below(8)) {
		case 0:
			budget = rnd_below(6);
			if (window_table_expire(t, now, budget) != model_expire(&m, now, budget))
				ck_abort_msg("expire differs at op %d", op);
			break;
		case 1:
			delta[0] = (int64_t)rnd_below(3) - 1;
			delta[1] = (int64_t)rnd_below(41) - 30;
			delta[2] = 0;
			ticket = (uint32_t)(now / 1000 - rnd_below(3));
			err = window_table_adjust(t, names[k], strlen(names[k]), ticket, delta, now);
			if (m.present[k]) {
				window_adjust(&m.w[k], ticket, delta, now);
				if (delta[0] > 0 || delta[1] > 0)
					m.seq[k] = m.next_seq++;
				merr = 0;
			} else if (delta[0] > 0 || delta[1] > 0) {
				window_init(&fresh, now);
				delta[0] = delta[0] > 0 ? delta[0] : 0;
				delta[1] = delta[1] > 0 ? delta[1] : 0;
				window_adjust(&fresh, ticket, delta, now);
				merr = model_insert(&m, k, &fresh, now);
			} else {
				merr = -ENOENT;
			}
			if (err != merr)
				ck_abort_msg("adjust: %d, model %d at op %d", err, merr, op);
			break;
		default:
			amt[0] = 1;
			amt[1] = rnd_below(30) ? rnd_below(40) : 101;
			amt[2] = rnd_below(1000);
			err = window_table_admit(t, names[k], strlen(names[k]), lim, amt, now, &got);
			if (m.present[k]) {
				window_admit(&m.w[k], lim, amt, now, &want);
				if (want.allowed)
					m.seq[k] = m.next_seq++;
				merr = 0;
			} else {
				window_init(&fresh, now);
				window_admit(&fresh, lim, amt, now, &want);
				merr = want.allowed ? model_insert(&m, k, &fresh, now) : 0;
			}
			if (err != merr)
				ck_abort_msg("admit: %d, model %d at op %d", err, merr, op);
			if (!err && (got.allowed != want.allowed ||
				     got.used[1] != want.used[1] || got.reset_ms[0] != want.reset_ms[0] ||
				     got.retry_after_ms != want.retry_after_ms))
				ck_abort_msg("verdict differs at op %d", op);
			break;
		}
		if (window_table_size(t) != m.size)
			ck_abort_msg("size %zu, model %zu at op %d", window_table_size(t), m.size, op);
		k = (int)rnd_below(NKEYS);
		window_table_usage(t, names[k], strlen(names[k]), now, used);
		if (m.present[k])
			window_usage(&m.w[k], now, mused);
		else
			memset(mused, 0, sizeof(mused));
		if (memcmp(used, mused, sizeof(used)))
			ck_abort_msg("usage differs at op %d", op);
	}
	window_table_free(t);
}
END_TEST

/* ---- export / import / gap / scan (replication and handoff) ---- */

/* Admits `n` requests of one unit each on `key` under 10 RPM at now. */
static void hits(struct window_table *t, const char *key, int n, uint64_t now)
{
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(hit(t, key, now), 0);
}

START_TEST(test_export_import_across_clocks)
{
	struct window_table *b;
	struct window_state st;
	struct window_verdict v;

	ck_assert_int_eq(window_table_new(&b, 0, seed), 0);
	hits(tab, "k", 5, 100500);
	hits(tab, "k", 3, 130200);
	ck_assert_int_eq(window_table_export(tab, "k", 1, 130500, &st), 0);
	ck_assert_uint_eq(st.head, 130);
	/* Node b's clock is unrelated: buckets are matched by age. */
	ck_assert_int_eq(window_table_import(b, "k", 1, &st, 5000700, WINDOW_IMPORT_MAX), 0);
	ck_assert_uint_eq(requests(b, "k", 5000700), 8);
	/* The 5 were 30 s old at export: they land in b's bucket 4970 and stop counting at
	 * (4970 + 61) s; the 3 were 0 s old and stay until (5000 + 61) s. */
	ck_assert_uint_eq(requests(b, "k", 5030999), 8);
	ck_assert_uint_eq(requests(b, "k", 5031000), 3);
	ck_assert_uint_eq(requests(b, "k", 5061000), 0);
	/* The imported usage is enforced: 2 more fit under 10, the third does not. */
	hits(b, "k", 2, 5000800);
	ck_assert_int_eq(window_table_admit(b, "k", 1, rpm10, one, 5000800, &v), 0);
	ck_assert(!v.allowed);
	window_table_free(b);
}
END_TEST

START_TEST(test_import_max_is_idempotent)
{
	struct window_table *b;
	struct window_state older, newer;

	ck_assert_int_eq(window_table_new(&b, 0, seed), 0);
	hits(tab, "k", 2, 10000);
	ck_assert_int_eq(window_table_export(tab, "k", 1, 10100, &older), 0);
	hits(tab, "k", 3, 10200);
	ck_assert_int_eq(window_table_export(tab, "k", 1, 10300, &newer), 0);
	/* Duplicated and reordered full states: the copy is the newest state, never a sum. */
	ck_assert_int_eq(window_table_import(b, "k", 1, &newer, 700, WINDOW_IMPORT_MAX), 0);
	ck_assert_int_eq(window_table_import(b, "k", 1, &older, 710, WINDOW_IMPORT_MAX), 0);
	ck_assert_int_eq(window_table_import(b, "k", 1, &newer, 720, WINDOW_IMPORT_MAX), 0);
	ck_assert_uint_eq(requests(b, "k", 730), 5);
	/* ADD sums instead. */
	ck_assert_int_eq(window_table_import(b, "k", 1, &older, 740, WINDOW_IMPORT_ADD), 0);
	ck_assert_uint_eq(requests(b, "k", 750), 7);
	ck_assert_int_eq(window_table_import(b, "k", 1, &older, 740, 7), -EINVAL);
	window_table_free(b);
}
END_TEST

START_TEST(test_export_ages_and_errors)
{
	struct window_state st;
	uint32_t sum = 0;

	ck_assert_int_eq(window_table_export(tab, "nope", 4, 0, &st), -ENOENT);
	ck_assert_int_eq(window_table_export(tab, "", 0, 0, &st), -EINVAL);
	hits(tab, "k", 4, 1000);
	ck_assert_int_eq(window_table_export(tab, "k", 1, 1000 + 61000, &st), 0);
	for (unsigned s = 0; s < WINDOW_SLOTS; s++)
		sum += st.count[s][0] + st.count[s][1] + st.count[s][2];
	ck_assert_uint_eq(sum, 0);
	/* An empty state for an unknown key creates nothing. */
	ck_assert_int_eq(window_table_import(tab, "other", 5, &st, 70000, WINDOW_IMPORT_MAX), 0);
	ck_assert_uint_eq(window_table_size(tab), 1);
}
END_TEST

START_TEST(test_charge_gap)
{
	struct window_table *b;
	struct window_state st;
	uint64_t charged[WINDOW_DIMS];

	ck_assert_int_eq(window_table_new(&b, 0, seed), 0);
	hits(tab, "k", 6, 20100);
	hits(tab, "k", 4, 21100);
	ck_assert_int_eq(window_table_export(tab, "k", 1, 21200, &st), 0);
	ck_assert_int_eq(window_table_import(b, "k", 1, &st, 900, WINDOW_IMPORT_MAX), 0);
	/* Rate: the larger newest bucket, 6/s; 500 ms of it is 3 requests. */
	ck_assert_int_eq(window_table_charge_gap(b, "k", 1, 500, 950, charged), 1);
	ck_assert_uint_eq(charged[WINDOW_REQUESTS], 3);
	ck_assert_uint_eq(requests(b, "k", 960), 13);
	/* Once per import. */
	ck_assert_int_eq(window_table_charge_gap(b, "k", 1, 500, 970, NULL), 0);
	ck_assert_uint_eq(requests(b, "k", 980), 13);
	/* A key that was never imported has no gap. */
	ck_assert_int_eq(window_table_charge_gap(tab, "k", 1, 500, 21300, NULL), 0);
	ck_assert_int_eq(window_table_charge_gap(b, "zz", 2, 500, 990, NULL), 0);
	window_table_free(b);
}
END_TEST

static void count_visit(void *arg, const uint8_t *key, size_t key_len)
{
	unsigned *seen = arg;
	unsigned i;

	ck_assert_uint_eq(key_len, 6);
	ck_assert_int_eq(sscanf((const char *)key, "k%05u", &i), 1);
	if (i < 100)
		seen[i]++;
}

START_TEST(test_scan_survives_growth)
{
	struct window_table_cursor cur = { 0, 0 };
	unsigned seen[100] = { 0 };
	char key[16];
	bool done;
	int calls = 0;

	for (unsigned i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "k%05u", i);
		ck_assert_int_eq(hit(tab, key, 0), 0);
	}
	done = window_table_scan(tab, &cur, 7, count_visit, seen);
	ck_assert(!done);
	/* Growth between calls restarts the walk: nothing present throughout is missed. */
	for (unsigned i = 100; i < 2000; i++) {
		snprintf(key, sizeof(key), "k%05u", i);
		ck_assert_int_eq(hit(tab, key, 0), 0);
	}
	while (!done && calls++ < 100000)
		done = window_table_scan(tab, &cur, 7, count_visit, seen);
	ck_assert(done);
	for (unsigned i = 0; i < 100; i++)
		ck_assert_uint_ge(seen[i], 1);
}
END_TEST

Suite *table_suite(void);

Suite *table_suite(void)
{
	Suite *s = suite_create("table");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_siphash_vectors);
	tcase_add_test(tc, test_create_and_lookup);
	tcase_add_test(tc, test_forced_collisions);
	tcase_add_test(tc, test_collisions_through_growth);
	tcase_add_test(tc, test_growth);
	tcase_add_test(tc, test_expire_oldest_first);
	tcase_add_test(tc, test_expire_stops_at_busy_oldest);
	tcase_add_test(tc, test_idle_keys_freed);
	tcase_add_test(tc, test_enospc);
	tcase_add_test(tc, test_denied_request_creates_no_key);
	tcase_add_test(tc, test_einval);
	tcase_add_test(tc, test_adjust);
	tcase_add_test(tc, test_adjust_enospc);
	tcase_add_test(tc, test_100k_keys);
	tcase_add_test(tc, test_random_against_model);
	tcase_add_test(tc, test_export_import_across_clocks);
	tcase_add_test(tc, test_import_max_is_idempotent);
	tcase_add_test(tc, test_export_ages_and_errors);
	tcase_add_test(tc, test_charge_gap);
	tcase_add_test(tc, test_scan_survives_growth);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(table_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
