/* window.c — one key's 1 s-bucket ring over three dimensions.
 *
 * The ring invariant every function relies on: slot s holds the count of the one bucket b in
 * [head - 60, head] with b % WINDOW_SLOTS == s (zero if nothing was charged to it). advance()
 * keeps it by zeroing the slots of the buckets it skips. Of those 61 buckets, the ones counted
 * at bucket `cur` (>= head) are [cur - 60, head]: mutating calls advance head to cur first, so
 * for them the whole ring is counted; the const calls (usage, idle) skip the stale slots.
 *
 * Bucket indices are now_ms / 1000 truncated to 32 bits, which is exact for 136 years of a
 * monotonic clock (uv_now() counts from an arbitrary point near boot). */
#include <string.h>

#include "window/window.h"

_Static_assert(WINDOW_SLOTS == 61, "the exactness argument assumes 61 one-second buckets");
_Static_assert(WINDOW_LIMIT_MAX < UINT32_MAX, "a bucket must hold a whole limit");

static inline uint32_t bucket_of(uint64_t now_ms)
{
	return (uint32_t)(now_ms / WINDOW_BUCKET_MS);
}

/* The bucket a call at now_ms works in. Time must not go backwards; if a caller's clock does
 * anyway, the call is treated as happening in the newest bucket, so it never un-counts a charge
 * (durations stay relative to now_ms and so only come out longer). */
static inline uint32_t current(const struct window *w, uint64_t now_ms)
{
	uint32_t cur = bucket_of(now_ms);

	return (int32_t)(cur - w->head) < 0 ? w->head : cur;
}

/* When bucket head - age stops counting, relative to now_ms (> 0 for a counted bucket). Taking
 * the age rather than the bucket keeps the ring's oldest slots, whose bucket numbers are below
 * zero in a window created less than a minute after the clock's origin, from wrapping. */
static inline uint64_t expiry_in(uint32_t head, uint32_t age, uint64_t now_ms)
{
	return ((uint64_t)head + WINDOW_SLOTS - age) * WINDOW_BUCKET_MS - now_ms;
}

static inline uint32_t next_slot(uint32_t s)
{
	return s + 1 == WINDOW_SLOTS ? 0 : s + 1;
}

static inline uint32_t prev_slot(uint32_t s)
{
	return s == 0 ? WINDOW_SLOTS - 1 : s - 1;
}

static inline bool slot_empty(const struct window *w, uint32_t s)
{
	return (w->count[s][0] | w->count[s][1] | w->count[s][2]) == 0;
}

static inline uint32_t sat_add32(uint32_t c, uint64_t add)
{
	return add >= (uint64_t)(UINT32_MAX - c) ? UINT32_MAX : c + (uint32_t)add;
}

/* Moves head to cur, zeroing the slots of the buckets in (head, cur]. */
static void advance(struct window *w, uint32_t cur)
{
	uint32_t gap = cur - w->head, s;

	if (gap == 0)
		return;
	if (gap >= WINDOW_SLOTS) {
		memset(w->count, 0, sizeof(w->count));
	} else {
		s = w->head % WINDOW_SLOTS;
		while (gap--) {
			s = next_slot(s);
			memset(w->count[s], 0, sizeof(w->count[s]));
		}
	}
	w->head = cur;
}

void window_init(struct window *w, uint64_t now_ms)
{
	memset(w->count, 0, sizeof(w->count));
	w->head = bucket_of(now_ms);
}

/* Sums the whole ring (valid right after advance()). Kept as a flat loop over the array so the
 * compiler can vectorise it; this is the admission's main cost. */
static void sum_ring(const struct window *w, uint64_t used[WINDOW_DIMS])
{
	uint64_t r = 0, i = 0, o = 0;
	uint32_t s;

	for (s = 0; s < WINDOW_SLOTS; s++) {
		r += w->count[s][WINDOW_REQUESTS];
		i += w->count[s][WINDOW_INPUT];
		o += w->count[s][WINDOW_OUTPUT];
	}
	used[WINDOW_REQUESTS] = r;
	used[WINDOW_INPUT] = i;
	used[WINDOW_OUTPUT] = o;
}

static inline bool unlimited(uint64_t limit)
{
	return limit == WINDOW_UNLIMITED;
}

/* Fills reset_ms: for each dimension, until its newest non-zero bucket expires. Only the
 * dimensions in `nonzero` (usage after any charge) have such a bucket, and those charged in the
 * head bucket are known at once, so the common allowed request does no scan at all.
 * Requires head == cur (after advance()). */
static void fill_reset(const struct window *w, unsigned nonzero, uint64_t now_ms,
		       struct window_verdict *v)
{
	uint32_t s = w->head % WINDOW_SLOTS, age;
	unsigned d, todo = 0;

	for (d = 0; d < WINDOW_DIMS; d++) {
		v->reset_ms[d] = 0;
		if (w->count[s][d])
			v->reset_ms[d] = expiry_in(w->head, 0, now_ms);
		else if (nonzero & (1u << d))
			todo |= 1u << d;
	}
	for (age = 1; todo && age < WINDOW_SLOTS; age++) {
		s = prev_slot(s);
		if (slot_empty(w, s))
			continue;
		for (d = 0; d < WINDOW_DIMS; d++) {
			if ((todo & (1u << d)) && w->count[s][d]) {
				v->reset_ms[d] = expiry_in(w->head, age, now_ms);
				todo &= ~(1u << d);
			}
		}
	}
}

/* Denied (and every dimension can fit an empty window): walks the buckets oldest first, as
 * they will expire, until usage + amount fits the limit in every dimension. The answer is exact
 * given the present charges: usage only changes at bucket expiries. Requires head == cur. */
static uint64_t retry_after(const struct window *w, const uint64_t limit[WINDOW_DIMS],
			    const uint64_t amount[WINDOW_DIMS], const uint64_t used[WINDOW_DIMS],
			    uint64_t now_ms)
{
	uint64_t gone[WINDOW_DIMS], excess[WINDOW_DIMS];
	uint32_t s = (w->head + 1) % WINDOW_SLOTS, k;
	unsigned d, over = 0;

	/* excess[d] is how much usage of d must expire before the request fits. */
	for (d = 0; d < WINDOW_DIMS; d++) {
		gone[d] = 0;
		excess[d] = 0;
		if (!unlimited(limit[d]) && used[d] > limit[d] - amount[d]) {
			excess[d] = used[d] - (limit[d] - amount[d]);
			over |= 1u << d;
		}
	}
	/* The slot after head's holds the oldest counted bucket, head - 60. */
	for (k = 0; k < WINDOW_SLOTS; k++, s = next_slot(s)) {
		/* Most slots of a denied key's ring are empty: nothing expires with them. */
		if (slot_empty(w, s))
			continue;
		for (d = 0; d < WINDOW_DIMS; d++) {
			gone[d] += w->count[s][d];
			if ((over & (1u << d)) && gone[d] >= excess[d])
				over &= ~(1u << d);
		}
		if (!over)
			return expiry_in(w->head, WINDOW_SLOTS - 1 - k, now_ms);
	}
	/* Unreachable: with every bucket expired usage is 0 and amount <= limit. */
	return expiry_in(w->head, 0, now_ms);
}

void window_admit(struct window *w, const uint64_t limit[WINDOW_DIMS],
		  const uint64_t amount[WINDOW_DIMS], uint64_t now_ms, struct window_verdict *out)
{
	uint32_t cur = current(w, now_ms), s;
	int first_unfit = -1, first_never = -1;
	unsigned d, nonzero = 0;
	uint64_t after;

	advance(w, cur);
	sum_ring(w, out->used);
	for (d = 0; d < WINDOW_DIMS; d++) {
		out->limit[d] = limit[d];
		if (unlimited(limit[d]))
			continue;
		/* Written so that nothing overflows, whatever amount the caller passes. */
		if (amount[d] > limit[d]) {
			if (first_never < 0)
				first_never = (int)d;
		} else if (out->used[d] <= limit[d] - amount[d]) {
			continue;
		}
		if (first_unfit < 0)
			first_unfit = (int)d;
	}

	out->allowed = first_unfit < 0;
	out->never_fits = first_never >= 0;
	out->denied_dim = out->never_fits ? first_never : first_unfit;
	out->retry_after_ms = 0;
	out->bucket = 0;
	if (out->allowed) {
		s = cur % WINDOW_SLOTS;
		for (d = 0; d < WINDOW_DIMS; d++)
			w->count[s][d] = sat_add32(w->count[s][d], amount[d]);
		out->bucket = cur;
	} else if (!out->never_fits) {
		out->retry_after_ms = retry_after(w, limit, amount, out->used, now_ms);
	}
	for (d = 0; d < WINDOW_DIMS; d++) {
		if (out->used[d] || (out->allowed && amount[d]))
			nonzero |= 1u << d;
		if (unlimited(limit[d])) {
			out->remaining[d] = WINDOW_UNLIMITED;
			continue;
		}
		/* Allowed: used + amount <= limit, so the sum cannot overflow. */
		after = out->used[d] + (out->allowed ? amount[d] : 0);
		out->remaining[d] = after >= limit[d] ? 0 : limit[d] - after;
	}
	fill_reset(w, nonzero, now_ms, out);
}

void window_adjust(struct window *w, uint32_t bucket, const int64_t delta[WINDOW_DIMS],
		   uint64_t now_ms)
{
	uint32_t cur = current(w, now_ms), s_cur, s_ticket, c;
	bool counted;
	uint64_t take;
	unsigned d;

	advance(w, cur);
	s_cur = cur % WINDOW_SLOTS;
	s_ticket = bucket % WINDOW_SLOTS;
	/* Unsigned distance: a ticket from the future wraps to a huge value and is not counted. */
	counted = cur - bucket < WINDOW_SLOTS;
	for (d = 0; d < WINDOW_DIMS; d++) {
		if (delta[d] > 0) {
			w->count[s_cur][d] = sat_add32(w->count[s_cur][d], (uint64_t)delta[d]);
		} else if (delta[d] < 0 && counted) {
			/* 0 - (uint64_t)delta is |delta| even for INT64_MIN. */
			take = 0 - (uint64_t)delta[d];
			c = w->count[s_ticket][d];
			w->count[s_ticket][d] = take >= c ? 0 : c - (uint32_t)take;
		}
	}
}

/* For the const calls: how many of the newest ring slots (ending at head) are still counted at
 * now_ms; 0..WINDOW_SLOTS. */
static uint32_t counted_slots(const struct window *w, uint64_t now_ms)
{
	uint32_t gap = current(w, now_ms) - w->head;

	return gap >= WINDOW_SLOTS ? 0 : WINDOW_SLOTS - gap;
}

void window_usage(const struct window *w, uint64_t now_ms, uint64_t used[WINDOW_DIMS])
{
	uint32_t n = counted_slots(w, now_ms), s = w->head % WINDOW_SLOTS;
	unsigned d;

	for (d = 0; d < WINDOW_DIMS; d++)
		used[d] = 0;
	for (; n; n--, s = prev_slot(s))
		for (d = 0; d < WINDOW_DIMS; d++)
			used[d] += w->count[s][d];
}

bool window_idle(const struct window *w, uint64_t now_ms)
{
	uint32_t n = counted_slots(w, now_ms), s = w->head % WINDOW_SLOTS;

	for (; n; n--, s = prev_slot(s))
		if (w->count[s][0] | w->count[s][1] | w->count[s][2])
			return false;
	return true;
}
