/* window.h — one key's sliding 60 s windows over three dimensions (requests, input tokens,
 * output tokens), and atomic admission across them.
 *
 * Pure: no libuv, no clock, no I/O. Time arrives as a monotonic `now_ms` from the caller (the
 * owner's clock); it must not go backwards between calls on the same window.
 *
 * Exactness. Charges are recorded in 1 s buckets (absolute bucket b covers
 * [b*1000, (b+1)*1000) ms). A bucket stays counted until now >= (b + 61) * 1000, so a charge
 * made at time t is counted for at least 60 s after t and at most 61 s: over ANY true sliding
 * 60 s interval the admitted totals never exceed the limit, and capacity comes back at most one
 * bucket (1 s) later than a perfect sliding log would give it back. */
#ifndef LLMLIMIT_WINDOW_WINDOW_H
#define LLMLIMIT_WINDOW_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

enum window_dim { WINDOW_REQUESTS = 0, WINDOW_INPUT = 1, WINDOW_OUTPUT = 2, WINDOW_DIMS = 3 };

#define WINDOW_PERIOD_MS 60000u
#define WINDOW_BUCKET_MS 1000u
#define WINDOW_SLOTS (WINDOW_PERIOD_MS / WINDOW_BUCKET_MS + 1u)
/* A limit this large means "not limited"; limited dimensions must be <= WINDOW_LIMIT_MAX. */
#define WINDOW_UNLIMITED UINT64_MAX
#define WINDOW_LIMIT_MAX 4000000000ull

/* Caller-allocated and embedded (the key table embeds one per key); about 740 bytes. */
struct window {
	uint32_t head;                              /* absolute index of the newest bucket */
	uint32_t count[WINDOW_SLOTS][WINDOW_DIMS];  /* slot = bucket % WINDOW_SLOTS */
};

/* The outcome of an admission. Every field is filled, allowed or not; durations are relative
 * to the now_ms of the call, so they mean the same on any node that receives them. */
struct window_verdict {
	bool allowed;
	/* Denied only: the dimension that stops the request, else -1. That is the first (in enum
	 * order) that can never fit if there is one, so never_fits describes it; otherwise the first
	 * that does not fit now. */
	int denied_dim;
	/* Denied only: the request exceeds the whole limit of denied_dim and can never fit. */
	bool never_fits;
	uint64_t limit[WINDOW_DIMS];
	uint64_t used[WINDOW_DIMS];       /* usage before this request */
	uint64_t remaining[WINDOW_DIMS];  /* after the charge when allowed, else now */
	uint64_t reset_ms[WINDOW_DIMS];   /* until usage (after any charge) drops back to 0 */
	uint64_t retry_after_ms;          /* denied: until the request fits in every dimension;
					     0 when allowed or never_fits */
	uint32_t bucket;                  /* allowed: the ticket for window_adjust() */
};

void window_init(struct window *w, uint64_t now_ms);

/* Admits `amount` if, in every dimension, usage + amount <= limit; then charges all three at
 * once. Otherwise charges nothing. Fills *out either way. */
void window_admit(struct window *w, const uint64_t limit[WINDOW_DIMS],
		  const uint64_t amount[WINDOW_DIMS], uint64_t now_ms, struct window_verdict *out);

/* Reconciles an earlier admission whose ticket is `bucket`. A negative delta (a refund) is taken
 * from that bucket if it is still counted (never below zero); a positive delta (the request used
 * more than it reserved) is charged to the current bucket, even past the limit, since the work
 * is already done. */
void window_adjust(struct window *w, uint32_t bucket, const int64_t delta[WINDOW_DIMS],
		   uint64_t now_ms);

/* Current usage per dimension. */
void window_usage(const struct window *w, uint64_t now_ms, uint64_t used[WINDOW_DIMS]);

/* True when nothing is counted any more at now_ms, so the window may be freed. */
bool window_idle(const struct window *w, uint64_t now_ms);

#endif
