/* hist.h — a log-linear latency histogram in the manner of HdrHistogram. Pure: no I/O, no clock.
 *
 * Values are nanoseconds. Below 256 ns every value has its own bucket; above, each power of two
 * is cut into 128 linear buckets, so a bucket is at most 1/128 of its lower bound wide and a
 * reported percentile (the bucket's midpoint, clamped to the exact min and max) is within 0.4%
 * of a recorded value. The range ends at 2^36 ns (about 68.7 s); larger values are counted in
 * the last bucket and in `saturated`. The struct is about 30 KiB, fixed size, no allocation. */
#ifndef LLMLIMIT_BENCH_HIST_H
#define LLMLIMIT_BENCH_HIST_H

#include <stdint.h>

#define BENCH_HIST_SUB_BITS 7
#define BENCH_HIST_SUB (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_MAX_BITS 36
#define BENCH_HIST_MAX_NS ((UINT64_C(1) << BENCH_HIST_MAX_BITS) - 1)
#define BENCH_HIST_BUCKETS ((BENCH_HIST_MAX_BITS - BENCH_HIST_SUB_BITS + 1) * BENCH_HIST_SUB)

struct bench_hist {
	uint64_t count;
	uint64_t sum_ns;      /* for the mean; 2^64 ns is 584 years of summed latency */
	uint64_t min_ns;      /* exact; UINT64_MAX while empty */
	uint64_t max_ns;      /* exact, even past the range */
	uint64_t saturated;   /* values above BENCH_HIST_MAX_NS */
	uint64_t buckets[BENCH_HIST_BUCKETS];
};

/* Empties the histogram (caller-allocated). */
void bench_hist_init(struct bench_hist *h);

/* Records one value. O(1), no allocation. */
void bench_hist_record(struct bench_hist *h, uint64_t ns);

/* The value at percentile q (0 < q <= 100): the smallest recorded value v such that at least
 * q% of the values are <= v, to within a bucket (the midpoint is returned, clamped to the exact
 * min and max). q >= 100 gives the exact max. 0 when empty. */
uint64_t bench_hist_percentile(const struct bench_hist *h, double q);

/* Arithmetic mean in ns; 0 when empty. */
double bench_hist_mean(const struct bench_hist *h);

/* Adds src's values into dst. */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);

/* The bucket a value lands in, and the [lo, lo + width) range of a bucket: exposed for tests. */
uint32_t bench_hist__index(uint64_t ns);
void bench_hist__range(uint32_t idx, uint64_t *lo, uint64_t *width);

#endif
