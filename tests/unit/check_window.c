/* check_window.c — the sliding window: bucket edges, retry/reset maths, reconciliation,
 * atomic admission, unlimited dimensions, saturation, and a randomized comparison against a
 * brute-force model. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "window/window.h"

#define U WINDOW_UNLIMITED

static struct window win;

static void setup(void)
{
	window_init(&win, 0);
}

/* Admits (r, i, o) against limits (lr, li, lo) on `w` at `now`. */
static struct window_verdict admit(struct window *w, uint64_t now, uint64_t lr, uint64_t li,
				   uint64_t lo, uint64_t r, uint64_t i, uint64_t o)
{
	const uint64_t limit[WINDOW_DIMS] = { lr, li, lo };
	const uint64_t amount[WINDOW_DIMS] = { r, i, o };
	struct window_verdict v;

	memset(&v, 0xa5, sizeof(v));  /* every field must be written */
	window_admit(w, limit, amount, now, &v);
	return v;
}

static void adjust(struct window *w, uint32_t bucket, uint64_t now, int64_t r, int64_t i,
		   int64_t o)
{
	const int64_t delta[WINDOW_DIMS] = { r, i, o };

	window_adjust(w, bucket, delta, now);
}

static uint64_t usage(const struct window *w, uint64_t now, unsigned d)
{
	uint64_t used[WINDOW_DIMS];

	window_usage(w, now, used);
	return used[d];
}

/* One request per minute: is a request admitted at `now` (on a copy, so nothing changes)? */
static bool fits_rpm1(uint64_t now)
{
	struct window copy = win;

	return admit(&copy, now, 1, U, U, 1, 0, 0).allowed;
}

/* A charge at t is counted through t + 60000 and gone at (bucket + 61) s, for t anywhere in
 * its bucket: the start, the middle and the last millisecond. */
START_TEST(test_edge_of_the_window)
{
	static const uint64_t at[] = { 5000, 5500, 5999 };
	uint64_t t = at[_i];
	struct window_verdict v;

	v = admit(&win, t, 1, U, U, 1, 0, 0);
	ck_assert(v.allowed);
	ck_assert_uint_eq(v.bucket, 5);
	ck_assert_uint_eq(v.reset_ms[WINDOW_REQUESTS], 66000 - t);
	ck_assert(!fits_rpm1(t + 1));
	ck_assert(!fits_rpm1(t + 59999));
	ck_assert(!fits_rpm1(t + 60000));
	ck_assert(!fits_rpm1(65999));
	ck_assert_uint_eq(usage(&win, 65999, WINDOW_REQUESTS), 1);
	ck_assert(fits_rpm1(66000));
	ck_assert_uint_eq(usage(&win, 66000, WINDOW_REQUESTS), 0);
	ck_assert(!window_idle(&win, 65999));
	ck_assert(window_idle(&win, 66000));

	v = admit(&win, t + 60000, 1, U, U, 1, 0, 0);
	ck_assert(!v.allowed);
	ck_assert_uint_eq(v.retry_after_ms, 66000 - (t + 60000));
	ck_assert_uint_eq(v.reset_ms[WINDOW_REQUESTS], 66000 - (t + 60000));
}
END_TEST

/* 999 ms and 1000 ms fall in different buckets and expire a second apart. */
START_TEST(test_bucket_boundaries)
{
	struct window_verdict v;

	ck_assert_uint_eq(admit(&win, 999, 2, U, U, 1, 0, 0).bucket, 0);
	ck_assert_uint_eq(admit(&win, 1000, 2, U, U, 1, 0, 0).bucket, 1);
	ck_assert(!admit(&win, 60999, 2, U, U, 1, 0, 0).allowed);
	ck_assert_uint_eq(usage(&win, 60999, WINDOW_REQUESTS), 2);
	ck_assert_uint_eq(usage(&win, 61000, WINDOW_REQUESTS), 1);
	ck_assert_uint_eq(usage(&win, 61999, WINDOW_REQUESTS), 1);
	ck_assert_uint_eq(usage(&win, 62000, WINDOW_REQUESTS), 0);
	v = admit(&win, 61000, 2, U, U, 1, 0, 0);
	ck_assert(v.allowed);
	ck_assert_uint_eq(v.used[WINDOW_REQUESTS], 1);
	ck_assert_uint_eq(v.remaining[WINDOW_REQUESTS], 0);
	/* Usage after the charge: bucket 1 (gone at 62 s) and bucket 61 (gone at 122 s). */
	ck_assert_uint_eq(v.reset_ms[WINDOW_REQUESTS], 122000 - 61000);
}
END_TEST

/* retry_after is the first bucket expiry after which every dimension fits. */
START_TEST(test_retry_after_exact)
{
	struct window_verdict v;
	struct window copy;

	/* Input usage: 30 in bucket 0, 40 in bucket 10, 30 in bucket 20: 100 of 100. */
	ck_assert(admit(&win, 0, U, 100, U, 1, 30, 0).allowed);
	ck_assert(admit(&win, 10500, U, 100, U, 1, 40, 0).allowed);
	ck_assert(admit(&win, 20999, U, 100, U, 1, 30, 0).allowed);

	copy = win;
	v = admit(&copy, 30000, U, 100, U, 1, 30, 0);
	ck_assert(!v.allowed);
	ck_assert(!v.never_fits);
	ck_assert_int_eq(v.denied_dim, WINDOW_INPUT);
	ck_assert_uint_eq(v.used[WINDOW_INPUT], 100);
	ck_assert_uint_eq(v.remaining[WINDOW_INPUT], 0);
	ck_assert_uint_eq(v.retry_after_ms, 61000 - 30000);

	/* 31 needs bucket 10 gone too. */
	v = admit(&copy, 30000, U, 100, U, 1, 31, 0);
	ck_assert_uint_eq(v.retry_after_ms, 71000 - 30000);
	ck_assert(!admit(&copy, 70999, U, 100, U, 1, 31, 0).allowed);
	ck_assert(admit(&copy, 71000, U, 100, U, 1, 31, 0).allowed);

	/* 71 needs all three buckets gone. */
	copy = win;
	v = admit(&copy, 30000, U, 100, U, 1, 71, 0);
	ck_assert_uint_eq(v.retry_after_ms, 81000 - 30000);

	/* Several dimensions: the answer is the latest of them. Requests: 3 of 3 used. */
	copy = win;
	v = admit(&copy, 30000, 3, 100, U, 1, 30, 0);
	ck_assert_int_eq(v.denied_dim, WINDOW_REQUESTS);
	ck_assert_uint_eq(v.retry_after_ms, 61000 - 30000);
	v = admit(&copy, 30000, 3, 100, U, 1, 50, 0);
	ck_assert_uint_eq(v.retry_after_ms, 71000 - 30000);
	v = admit(&copy, 30000, 2, 100, U, 1, 0, 0);
	ck_assert_uint_eq(v.retry_after_ms, 71000 - 30000);

	/* Asked again later, less time is left. */
	v = admit(&copy, 60999, U, 100, U, 1, 30, 0);
	ck_assert_uint_eq(v.retry_after_ms, 1);
}
END_TEST

START_TEST(test_reset_times)
{
	struct window_verdict v;

	/* Requests in buckets 0 and 10; input only in bucket 0; no output at all. */
	ck_assert(admit(&win, 200, 10, 100, 100, 1, 5, 0).allowed);
	ck_assert(admit(&win, 10200, 10, 100, 100, 1, 0, 0).allowed);
	v = admit(&win, 30000, 10, 100, 100, 20, 0, 0);  /* denied: never fits */
	ck_assert(!v.allowed);
	ck_assert(v.never_fits);
	ck_assert_uint_eq(v.reset_ms[WINDOW_REQUESTS], 71000 - 30000);
	ck_assert_uint_eq(v.reset_ms[WINDOW_INPUT], 61000 - 30000);
	ck_assert_uint_eq(v.reset_ms[WINDOW_OUTPUT], 0);

	/* Allowed: reset counts the charge just made. */
	v = admit(&win, 30500, 10, 100, 100, 1, 0, 7);
	ck_assert(v.allowed);
	ck_assert_uint_eq(v.reset_ms[WINDOW_REQUESTS], 91000 - 30500);
	ck_assert_uint_eq(v.reset_ms[WINDOW_INPUT], 61000 - 30500);
	ck_assert_uint_eq(v.reset_ms[WINDOW_OUTPUT], 91000 - 30500);
	ck_assert_uint_eq(v.remaining[WINDOW_OUTPUT], 93);
	ck_assert_uint_eq(v.used[WINDOW_OUTPUT], 0);

	/* An empty window resets now. */
	v = admit(&win, 500000, 10, 100, 100, 0, 0, 0);
	ck_assert(v.allowed);
	ck_assert_uint_eq(v.reset_ms[WINDOW_REQUESTS], 0);
	ck_assert_uint_eq(v.reset_ms[WINDOW_INPUT], 0);
	ck_assert_uint_eq(v.reset_ms[WINDOW_OUTPUT], 0);
}
END_TEST

START_TEST(test_refunds)
{
	struct window_verdict v;
	uint32_t t1, t2;

	t1 = admit(&win, 1200, U, U, 1000, 1, 0, 500).bucket;
	t2 = admit(&win, 2200, U, U, 1000, 1, 0, 300).bucket;
	ck_assert_uint_eq(t1, 1);
	ck_assert_uint_eq(t2, 2);
	adjust(&win, t1, 3000, 0, 0, -200);
	ck_assert_uint_eq(usage(&win, 3000, WINDOW_OUTPUT), 600);
	/* A refund comes out of its own bucket only, never below zero. */
	adjust(&win, t1, 3000, 0, 0, -1000);
	ck_assert_uint_eq(usage(&win, 3000, WINDOW_OUTPUT), 300);
	adjust(&win, t2, 3000, 0, 0, INT64_MIN);
	ck_assert_uint_eq(usage(&win, 3000, WINDOW_OUTPUT), 0);
	ck_assert_uint_eq(usage(&win, 3000, WINDOW_REQUESTS), 2);
	/* The refunded capacity is available again at once. */
	v = admit(&win, 3000, U, U, 1000, 1, 0, 1000);
	ck_assert(v.allowed);
}
END_TEST

/* A ticket is honoured while its bucket counts (up to 61 s - 1 ms after its start) and ignored
 * afterwards, so a late refund never eats charges that came later. */
START_TEST(test_refund_to_expired_bucket_ignored)
{
	uint32_t t1, t2;

	t1 = admit(&win, 1000, U, U, 1000, 1, 0, 100).bucket;
	adjust(&win, t1, 61999, 0, 0, -10);
	ck_assert_uint_eq(usage(&win, 61999, WINDOW_OUTPUT), 90);
	t2 = admit(&win, 62000, U, U, 1000, 1, 0, 100).bucket;
	ck_assert_uint_eq(t2, 62);
	ck_assert_uint_eq(t1 % WINDOW_SLOTS, t2 % WINDOW_SLOTS);  /* the same ring slot */
	adjust(&win, t1, 62000, 0, 0, -50);
	ck_assert_uint_eq(usage(&win, 62000, WINDOW_OUTPUT), 100);
	/* A ticket from the future is ignored too. */
	adjust(&win, t2 + 5, 62000, 0, 0, -50);
	ck_assert_uint_eq(usage(&win, 62000, WINDOW_OUTPUT), 100);
}
END_TEST

/* Work beyond the reservation is charged to the current bucket, even past the limit. */
START_TEST(test_positive_adjust)
{
	struct window_verdict v;
	uint32_t t;

	t = admit(&win, 1000, 10, U, 100, 1, 0, 90).bucket;
	adjust(&win, t, 5500, 0, 0, 50);
	ck_assert_uint_eq(usage(&win, 5500, WINDOW_OUTPUT), 140);
	v = admit(&win, 6000, 10, U, 100, 1, 0, 0);
	ck_assert(!v.allowed);
	ck_assert_int_eq(v.denied_dim, WINDOW_OUTPUT);
	ck_assert_uint_eq(v.remaining[WINDOW_OUTPUT], 0);
	/* Bucket 1 (90) expires at 62 s, leaving 50 of 100: it fits then; bucket 5 goes at 66 s. */
	ck_assert_uint_eq(v.retry_after_ms, 62000 - 6000);
	ck_assert_uint_eq(v.reset_ms[WINDOW_OUTPUT], 66000 - 6000);
	ck_assert_uint_eq(usage(&win, 62000, WINDOW_OUTPUT), 50);
	/* Requests were not touched by either call. */
	ck_assert_uint_eq(usage(&win, 6000, WINDOW_REQUESTS), 1);
}
END_TEST

/* One dimension failing charges none; denied_dim names the first that fails. */
START_TEST(test_atomic_three_dimensions)
{
	struct window_verdict v;
	unsigned d;

	ck_assert(admit(&win, 0, 10, 100, 100, 1, 95, 10).allowed);
	v = admit(&win, 100, 10, 100, 100, 1, 10, 1);
	ck_assert(!v.allowed);
	ck_assert(!v.never_fits);
	ck_assert_int_eq(v.denied_dim, WINDOW_INPUT);
	ck_assert_uint_eq(v.used[WINDOW_REQUESTS], 1);
	ck_assert_uint_eq(v.remaining[WINDOW_REQUESTS], 9);
	ck_assert_uint_eq(v.remaining[WINDOW_INPUT], 5);
	ck_assert_uint_eq(v.remaining[WINDOW_OUTPUT], 90);
	ck_assert_uint_eq(usage(&win, 100, WINDOW_REQUESTS), 1);
	ck_assert_uint_eq(usage(&win, 100, WINDOW_INPUT), 95);
	ck_assert_uint_eq(usage(&win, 100, WINDOW_OUTPUT), 10);

	/* Requests and output both fail: the first in enum order is reported. */
	v = admit(&win, 100, 1, 100, 100, 1, 0, 91);
	ck_assert_int_eq(v.denied_dim, WINDOW_REQUESTS);
	v = admit(&win, 100, 10, 100, 100, 1, 0, 91);
	ck_assert_int_eq(v.denied_dim, WINDOW_OUTPUT);

	/* Exactly at the limit in every dimension fits. */
	v = admit(&win, 100, 10, 100, 100, 9, 5, 90);
	ck_assert(v.allowed);
	ck_assert_int_eq(v.denied_dim, -1);
	for (d = 0; d < WINDOW_DIMS; d++)
		ck_assert_uint_eq(v.remaining[d], 0);
	ck_assert_uint_eq(v.retry_after_ms, 0);
}
END_TEST

START_TEST(test_never_fits)
{
	struct window_verdict v;

	ck_assert(admit(&win, 0, 1, 100, 100, 1, 0, 0).allowed);
	/* Requests do not fit now, and input can never fit: the request is hopeless. */
	v = admit(&win, 10, 1, 100, 100, 1, 101, 0);
	ck_assert(!v.allowed);
	ck_assert(v.never_fits);
	ck_assert_int_eq(v.denied_dim, WINDOW_INPUT);
	ck_assert_uint_eq(v.retry_after_ms, 0);
	ck_assert_uint_eq(v.remaining[WINDOW_INPUT], 100);
	/* Huge amounts do not overflow the arithmetic. */
	v = admit(&win, 10, 10, 100, 100, 1, UINT64_MAX, UINT64_MAX);
	ck_assert(v.never_fits);
	ck_assert_int_eq(v.denied_dim, WINDOW_INPUT);
	ck_assert_uint_eq(usage(&win, 10, WINDOW_REQUESTS), 1);
	ck_assert_uint_eq(usage(&win, 10, WINDOW_INPUT), 0);
	/* The whole limit is fine. */
	ck_assert(admit(&win, 10, 10, 100, 100, 1, 100, 0).allowed);
}
END_TEST

START_TEST(test_unlimited)
{
	struct window_verdict v;
	int i;

	for (i = 0; i < 1000; i++) {
		v = admit(&win, (uint64_t)i, U, 1000000, U, 1, 1000, 1000000);
		ck_assert(v.allowed);
	}
	ck_assert_uint_eq(v.limit[WINDOW_REQUESTS], U);
	ck_assert_uint_eq(v.remaining[WINDOW_REQUESTS], U);
	ck_assert_uint_eq(v.remaining[WINDOW_OUTPUT], U);
	ck_assert_uint_eq(v.remaining[WINDOW_INPUT], 0);
	ck_assert_uint_eq(v.used[WINDOW_REQUESTS], 999);
	ck_assert_uint_eq(v.reset_ms[WINDOW_OUTPUT], 61000 - 999);
	ck_assert_uint_eq(usage(&win, 999, WINDOW_REQUESTS), 1000);
	ck_assert_uint_eq(usage(&win, 999, WINDOW_OUTPUT), 1000000000ull);
	v = admit(&win, 1000, U, 1000000, U, 1, 1, 0);
	ck_assert(!v.allowed);
	ck_assert_int_eq(v.denied_dim, WINDOW_INPUT);
	ck_assert_uint_eq(v.remaining[WINDOW_REQUESTS], U);
}
END_TEST

/* Buckets are 32-bit and saturate instead of wrapping; usage sums them in 64 bits. */
START_TEST(test_u32_saturation)
{
	ck_assert(admit(&win, 0, U, U, U, 0, UINT64_MAX, 3000000000u).allowed);
	ck_assert_uint_eq(usage(&win, 0, WINDOW_INPUT), UINT32_MAX);
	ck_assert(admit(&win, 1, U, U, U, 0, 1, 3000000000u).allowed);
	ck_assert_uint_eq(usage(&win, 1, WINDOW_INPUT), UINT32_MAX);
	ck_assert_uint_eq(usage(&win, 1, WINDOW_OUTPUT), UINT32_MAX);
	adjust(&win, 0, 2, 0, INT64_MAX, INT64_MAX);
	ck_assert_uint_eq(usage(&win, 2, WINDOW_OUTPUT), UINT32_MAX);
	ck_assert(admit(&win, 1000, U, U, U, 0, UINT64_MAX, 0).allowed);
	adjust(&win, 1, 1000, INT64_MAX, 0, 0);
	ck_assert_uint_eq(usage(&win, 1000, WINDOW_INPUT), 2ull * UINT32_MAX);
	ck_assert_uint_eq(usage(&win, 1000, WINDOW_REQUESTS), UINT32_MAX);
	/* A limited dimension over a saturated history is still denied, not wrapped. */
	ck_assert(!admit(&win, 1000, U, WINDOW_LIMIT_MAX, U, 0, 1, 0).allowed);
}
END_TEST

START_TEST(test_idle)
{
	uint32_t t;

	ck_assert(window_idle(&win, 0));
	/* An allowed zero-cost request leaves nothing counted. */
	ck_assert(admit(&win, 0, 5, 5, 5, 0, 0, 0).allowed);
	ck_assert(window_idle(&win, 0));
	t = admit(&win, 30000, 5, 5, 5, 0, 0, 2).bucket;
	ck_assert(!window_idle(&win, 30000));
	ck_assert(!window_idle(&win, 90999));
	ck_assert(window_idle(&win, 91000));
	/* Refunded to nothing: idle at once. */
	adjust(&win, t, 31000, 0, 0, -2);
	ck_assert(window_idle(&win, 31000));
}
END_TEST

/* Creation near the clock's origin, long jumps and a clock that steps back. */
START_TEST(test_time_jumps)
{
	struct window_verdict v;

	ck_assert(admit(&win, 0, 2, U, U, 1, 0, 0).allowed);
	v = admit(&win, 0, 2, U, U, 2, 0, 0);
	ck_assert_uint_eq(v.retry_after_ms, 61000);
	/* Days later everything has gone. */
	v = admit(&win, 86400000ull * 30, 2, U, U, 2, 0, 0);
	ck_assert(v.allowed);
	ck_assert_uint_eq(v.used[WINDOW_REQUESTS], 0);
	/* 60.5 s later (a partial ring advance) the charge still counts. */
	v = admit(&win, 86400000ull * 30 + 60500, 2, U, U, 1, 0, 0);
	ck_assert(!v.allowed);
	ck_assert_uint_eq(v.retry_after_ms, 500);
	/* A call from the past is treated as now: it does not un-count anything. */
	v = admit(&win, 86400000ull * 30 - 5000, 2, U, U, 1, 0, 0);
	ck_assert(!v.allowed);
	ck_assert_uint_eq(usage(&win, 86400000ull * 30 + 60999, WINDOW_REQUESTS), 2);
	ck_assert_uint_eq(usage(&win, 86400000ull * 30 + 61000, WINDOW_REQUESTS), 0);
}
END_TEST

/* ---- Randomized comparison ---- */

/* Check records every passing ck_assert (a write to its side channel), which would dominate
 * these loops of a few hundred thousand checks: they test quietly and fail loudly. */
#define REQUIRE(cond)                                                                     \
	do {                                                                              \
		if (!(cond))                                                              \
			ck_abort_msg("%s", #cond);                                        \
	} while (0)

static uint64_t rng;

static uint64_t rnd(void)
{
	/* xorshift64*: reproducible from the fixed seed. */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ull;
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* The reference: every charge and refund kept as an event in its bucket, and the rule applied
 * literally: bucket b counts at time T iff T < (b + 61) * 1000. */
struct ref_event {
	uint32_t bucket;
	int64_t amount[WINDOW_DIMS];
};

struct ref {
	struct ref_event *ev;
	size_t n, cap;
};

static bool ref_counts(uint32_t bucket, uint64_t t)
{
	return t < ((uint64_t)bucket + 61) * 1000;
}

static uint64_t ref_usage(const struct ref *r, uint64_t t, unsigned d)
{
	int64_t sum = 0;
	size_t i;

	for (i = 0; i < r->n; i++)
		if (ref_counts(r->ev[i].bucket, t))
			sum += r->ev[i].amount[d];
	REQUIRE(sum >= 0);
	return (uint64_t)sum;
}

static void ref_push(struct ref *r, uint32_t bucket, const int64_t amount[WINDOW_DIMS])
{
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 64;
		r->ev = realloc(r->ev, r->cap * sizeof(*r->ev));
		ck_assert_ptr_nonnull(r->ev);
	}
	r->ev[r->n].bucket = bucket;
	memcpy(r->ev[r->n].amount, amount, sizeof(r->ev[r->n].amount));
	r->n++;
}

/* Time only moves forward, so events that stopped counting never count again. */
static void ref_prune(struct ref *r, uint64_t t)
{
	size_t i, k = 0;

	for (i = 0; i < r->n; i++)
		if (ref_counts(r->ev[i].bucket, t))
			r->ev[k++] = r->ev[i];
	r->n = k;
}

/* prof[k][d] is the usage of d at t for k = 0, and at the start of second t / 1000 + k for
 * k = 1..61 (usage only changes on whole seconds, and by then all of it has gone). */
static void ref_profile(const struct ref *r, uint64_t t, int64_t prof[62][WINDOW_DIMS])
{
	uint64_t c = t / 1000, last;
	size_t i;
	unsigned d, k;

	memset(prof, 0, 62 * sizeof(prof[0]));
	for (i = 0; i < r->n; i++) {
		if (!ref_counts(r->ev[i].bucket, t))
			continue;
		/* Counted at second s iff s < bucket + 61. */
		last = r->ev[i].bucket + 61 - c - 1;
		REQUIRE(last <= 60);
		for (d = 0; d < WINDOW_DIMS; d++) {
			prof[0][d] += r->ev[i].amount[d];
			prof[last + 1][d] -= r->ev[i].amount[d];
		}
	}
	for (k = 1; k < 62; k++)
		for (d = 0; d < WINDOW_DIMS; d++)
			prof[k][d] += prof[k - 1][d];
	for (k = 0; k < 62; k++)
		for (d = 0; d < WINDOW_DIMS; d++)
			REQUIRE(prof[k][d] >= 0);
	for (d = 0; d < WINDOW_DIMS; d++)
		REQUIRE(prof[61][d] == 0);
}

static bool ref_fits(const int64_t used[WINDOW_DIMS], const uint64_t limit[WINDOW_DIMS],
		     const uint64_t amount[WINDOW_DIMS])
{
	unsigned d;

	for (d = 0; d < WINDOW_DIMS; d++)
		if (limit[d] != U && (uint64_t)used[d] + amount[d] > limit[d])
			return false;
	return true;
}

/* The reference verdict, computed from the definitions in window.h. */
static void ref_admit(struct ref *r, uint64_t t, const uint64_t limit[WINDOW_DIMS],
		      const uint64_t amount[WINDOW_DIMS], struct window_verdict *v)
{
	int64_t prof[62][WINDOW_DIMS], charge[WINDOW_DIMS];
	uint64_t after;
	unsigned d, k;

	memset(v, 0, sizeof(*v));
	v->denied_dim = -1;
	ref_profile(r, t, prof);
	for (d = 0; d < WINDOW_DIMS; d++) {
		v->limit[d] = limit[d];
		v->used[d] = (uint64_t)prof[0][d];
	}
	for (d = 0; d < WINDOW_DIMS; d++)
		if (limit[d] != U && amount[d] > limit[d] && v->denied_dim < 0) {
			v->denied_dim = (int)d;
			v->never_fits = true;
		}
	for (d = 0; d < WINDOW_DIMS && v->denied_dim < 0; d++)
		if (limit[d] != U && v->used[d] + amount[d] > limit[d])
			v->denied_dim = (int)d;
	v->allowed = v->denied_dim < 0;
	if (v->allowed) {
		v->bucket = (uint32_t)(t / 1000);
		for (d = 0; d < WINDOW_DIMS; d++)
			charge[d] = (int64_t)amount[d];
		ref_push(r, v->bucket, charge);
		ref_profile(r, t, prof);
	} else if (!v->never_fits) {
		for (k = 1; !ref_fits(prof[k], limit, amount); k++)
			REQUIRE(k < 61);
		v->retry_after_ms = (t / 1000 + k) * 1000 - t;
	}
	for (d = 0; d < WINDOW_DIMS; d++) {
		after = (uint64_t)prof[0][d];
		v->remaining[d] = limit[d] == U ? U : after >= limit[d] ? 0 : limit[d] - after;
		if (!after)
			continue;
		for (k = 1; prof[k][d]; k++)
			;
		v->reset_ms[d] = (t / 1000 + k) * 1000 - t;
	}
}

static void ref_adjust(struct ref *r, uint32_t bucket, uint64_t t, const int64_t delta[3])
{
	int64_t ev[WINDOW_DIMS], have;
	size_t i;
	unsigned d;

	for (d = 0; d < WINDOW_DIMS; d++) {
		ev[d] = 0;
		if (delta[d] > 0 || !ref_counts(bucket, t) || bucket > t / 1000)
			continue;
		for (have = 0, i = 0; i < r->n; i++)
			if (r->ev[i].bucket == bucket)
				have += r->ev[i].amount[d];
		ev[d] = -delta[d] > have ? -have : delta[d];
	}
	ref_push(r, bucket, ev);
	for (d = 0; d < WINDOW_DIMS; d++)
		ev[d] = delta[d] > 0 ? delta[d] : 0;
	ref_push(r, (uint32_t)(t / 1000), ev);
}

static void assert_same(const struct window_verdict *a, const struct window_verdict *b,
			uint64_t t)
{
	bool same = a->allowed == b->allowed && a->denied_dim == b->denied_dim &&
		    a->never_fits == b->never_fits && a->retry_after_ms == b->retry_after_ms &&
		    (!a->allowed || a->bucket == b->bucket);
	unsigned d;

	for (d = 0; d < WINDOW_DIMS; d++)
		same = same && a->limit[d] == b->limit[d] && a->used[d] == b->used[d] &&
		       a->remaining[d] == b->remaining[d] && a->reset_ms[d] == b->reset_ms[d];
	if (same)
		return;
	ck_abort_msg("t=%llu window/reference: allowed %d/%d dim %d/%d never %d/%d retry %llu/%llu "
		     "used %llu,%llu,%llu/%llu,%llu,%llu reset %llu,%llu,%llu/%llu,%llu,%llu "
		     "remaining %llu,%llu,%llu/%llu,%llu,%llu",
		     (unsigned long long)t, a->allowed, b->allowed, a->denied_dim, b->denied_dim,
		     a->never_fits, b->never_fits, (unsigned long long)a->retry_after_ms,
		     (unsigned long long)b->retry_after_ms, (unsigned long long)a->used[0],
		     (unsigned long long)a->used[1], (unsigned long long)a->used[2],
		     (unsigned long long)b->used[0], (unsigned long long)b->used[1],
		     (unsigned long long)b->used[2], (unsigned long long)a->reset_ms[0],
		     (unsigned long long)a->reset_ms[1], (unsigned long long)a->reset_ms[2],
		     (unsigned long long)b->reset_ms[0], (unsigned long long)b->reset_ms[1],
		     (unsigned long long)b->reset_ms[2], (unsigned long long)a->remaining[0],
		     (unsigned long long)a->remaining[1], (unsigned long long)a->remaining[2],
		     (unsigned long long)b->remaining[0], (unsigned long long)b->remaining[1],
		     (unsigned long long)b->remaining[2]);
}

static uint64_t rnd_step(void)
{
	uint64_t p = rnd_below(100);

	if (p < 15)
		return 0;
	if (p < 75)
		return rnd_below(1000);
	if (p < 88)
		return 1000 + rnd_below(5000);
	if (p < 96)  /* land on a bucket edge, or just before one */
		return 1000 * (1 + rnd_below(3)) - rnd_below(2);
	if (p < 99)
		return 30000 + rnd_below(40000);
	return 100000 + rnd_below(100000000);
}

struct admitted {
	uint64_t t;
	uint64_t amount[WINDOW_DIMS];
};

/* (b) Against the reference, with refunds and extra charges: every verdict field equal, so
 * the window never denies what the bucket rule admits (nor the reverse), and its retry and
 * reset times are exact. (a) Without adjustments, every admitted request is checked against a
 * true sliding log: admitted amounts in (t - 60000, t] never exceed the limit. */
static void run_random(uint64_t seed, int ops, bool with_adjust)
{
	struct ref r = { 0 };
	struct admitted *log = calloc((size_t)ops, sizeof(*log));
	uint32_t *tickets = calloc((size_t)ops, sizeof(*tickets));
	uint64_t limit[WINDOW_DIMS], amount[WINDOW_DIMS], used[WINDOW_DIMS], sum;
	struct window_verdict got, want;
	struct window w, probe;
	size_t nlog = 0, nt = 0, lo, j;
	int64_t delta[WINDOW_DIMS];
	uint64_t t;
	unsigned d;
	int op;

	ck_assert_ptr_nonnull(log);
	ck_assert_ptr_nonnull(tickets);
	rng = seed;
	t = rnd_below(200000);
	window_init(&w, t);
	limit[WINDOW_REQUESTS] = 1 + rnd_below(20);
	limit[WINDOW_INPUT] = 10 + rnd_below(3000);
	limit[WINDOW_OUTPUT] = rnd_below(4) == 0 ? U : 10 + rnd_below(3000);
	for (op = 0; op < ops; op++) {
		t += rnd_step();
		ref_prune(&r, t);
		/* The const view at a time the ring has not been advanced to yet. */
		window_usage(&w, t, used);
		for (d = 0; d < WINDOW_DIMS; d++)
			REQUIRE(used[d] == ref_usage(&r, t, d));
		REQUIRE(window_idle(&w, t) == (!used[0] && !used[1] && !used[2]));

		if (with_adjust && nt && rnd_below(4) == 0) {
			for (d = 0; d < WINDOW_DIMS; d++)
				delta[d] = (int64_t)rnd_below(400) - 300;
			/* Mostly a recent ticket, sometimes one that may have expired. */
			lo = rnd_below(5) ? 4 : 200;
			j = nt - 1 - rnd_below(nt < lo ? nt : lo);
			window_adjust(&w, tickets[j], delta, t);
			ref_adjust(&r, tickets[j], t, delta);
			continue;
		}
		amount[WINDOW_REQUESTS] = rnd_below(3);
		for (d = WINDOW_INPUT; d < WINDOW_DIMS; d++) {
			sum = limit[d] == U ? 3000 : limit[d];
			amount[d] = rnd_below(50) == 0 ? sum + 1 : rnd_below(sum / 3 + 1);
		}
		ref_admit(&r, t, limit, amount, &want);
		window_admit(&w, limit, amount, t, &got);
		assert_same(&got, &want, t);
		if (got.allowed) {
			tickets[nt++] = got.bucket;
			log[nlog].t = t;
			memcpy(log[nlog].amount, amount, sizeof(amount));
			nlog++;
		} else if (got.retry_after_ms) {
			/* The request fits exactly at retry_after, not a millisecond before. */
			probe = w;
			window_admit(&probe, limit, amount, t + got.retry_after_ms - 1, &want);
			REQUIRE(!want.allowed);
			window_admit(&probe, limit, amount, t + got.retry_after_ms, &want);
			REQUIRE(want.allowed);
		}
	}

	if (!with_adjust) {
		for (lo = 0, j = 0; j < nlog; j++) {
			while (log[lo].t + WINDOW_PERIOD_MS <= log[j].t)
				lo++;
			for (d = 0; d < WINDOW_DIMS; d++) {
				if (limit[d] == U)
					continue;
				for (sum = 0, op = (int)lo; op <= (int)j; op++)
					sum += log[op].amount[d];
				if (sum > limit[d])
					ck_abort_msg("over-admitted %llu > %llu in dim %u at t=%llu",
						     (unsigned long long)sum,
						     (unsigned long long)limit[d], d,
						     (unsigned long long)log[j].t);
			}
		}
		ck_assert_uint_gt(nlog, (size_t)ops / 10);  /* the run did admit things */
	}
	free(r.ev);
	free(log);
	free(tickets);
}

static const uint64_t seeds[] = { 1, 0x9e3779b97f4a7c15ull, 42, 0xdeadbeefcafef00dull };

START_TEST(test_random_no_overadmission)
{
	run_random(seeds[_i], 20000, false);
}
END_TEST

START_TEST(test_random_matches_reference)
{
	run_random(seeds[_i] ^ 0x5555, 20000, true);
}
END_TEST

Suite *window_suite(void);

Suite *window_suite(void)
{
	Suite *s = suite_create("window");
	TCase *tc = tcase_create("core");
	TCase *tr = tcase_create("random");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_loop_test(tc, test_edge_of_the_window, 0, 3);
	tcase_add_test(tc, test_bucket_boundaries);
	tcase_add_test(tc, test_retry_after_exact);
	tcase_add_test(tc, test_reset_times);
	tcase_add_test(tc, test_refunds);
	tcase_add_test(tc, test_refund_to_expired_bucket_ignored);
	tcase_add_test(tc, test_positive_adjust);
	tcase_add_test(tc, test_atomic_three_dimensions);
	tcase_add_test(tc, test_never_fits);
	tcase_add_test(tc, test_unlimited);
	tcase_add_test(tc, test_u32_saturation);
	tcase_add_test(tc, test_idle);
	tcase_add_test(tc, test_time_jumps);
	suite_add_tcase(s, tc);

	tcase_set_timeout(tr, 120);
	tcase_add_loop_test(tr, test_random_no_overadmission, 0, 4);
	tcase_add_loop_test(tr, test_random_matches_reference, 0, 4);
	suite_add_tcase(s, tr);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(window_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
