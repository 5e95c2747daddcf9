#include "bench/hist.h"

#include <string.h>

void bench_hist_init(struct bench_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min_ns = UINT64_MAX;
}

uint32_t bench_hist__index(uint64_t ns)
{
	unsigned e, shift;

	if (ns > BENCH_HIST_MAX_NS)
		ns = BENCH_HIST_MAX_NS;
	if (ns < 2 * BENCH_HIST_SUB)
		return (uint32_t)ns;
	e = 63u - (unsigned)__builtin_clzll(ns);
	shift = e - BENCH_HIST_SUB_BITS;
	/* ns >> shift is in [SUB, 2*SUB): the octave's linear sub-bucket, offset by one SUB. */
	return (uint32_t)(shift * BENCH_HIST_SUB + (ns >> shift));
}

void bench_hist__range(uint32_t idx, uint64_t *lo, uint64_t *width)
{
	unsigned shift;

	if (idx < 2 * BENCH_HIST_SUB) {
		*lo = idx;
		*width = 1;
		return;
	}
	shift = idx / BENCH_HIST_SUB - 1;
	*lo = (uint64_t)(idx - shift * BENCH_HIST_SUB) << shift;
	*width = UINT64_C(1) << shift;
}

void bench_hist_record(struct bench_hist *h, uint64_t ns)
{
	h->count++;
	h->sum_ns += ns;
	if (ns < h->min_ns)
		h->min_ns = ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
	if (ns > BENCH_HIST_MAX_NS)
		h->saturated++;
	h->buckets[bench_hist__index(ns)]++;
}

uint64_t bench_hist_percentile(const struct bench_hist *h, double q)
{
	uint64_t rank, seen = 0, lo, width, v;
	double r;
	uint32_t i;

	if (h->count == 0)
		return 0;
	if (q >= 100.0)
		return h->max_ns;
	r = q / 100.0 * (double)h->count;
	rank = (uint64_t)r;
	if ((double)rank < r)
		rank++;
	if (rank == 0)
		rank = 1;
	for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank)
			break;
	}
	if (i == BENCH_HIST_BUCKETS)
		return h->max_ns;
	bench_hist__range(i, &lo, &width);
	v = lo + (width - 1) / 2;
	if (v < h->min_ns)
		v = h->min_ns;
	if (v > h->max_ns)
		v = h->max_ns;
	return v;
}

double bench_hist_mean(const struct bench_hist *h)
{
	return h->count ? (double)h->sum_ns / (double)h->count : 0.0;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
	uint32_t i;

	if (src->count == 0)
		return;
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
	dst->saturated += src->saturated;
	if (src->min_ns < dst->min_ns)
		dst->min_ns = src->min_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
	for (i = 0; i < BENCH_HIST_BUCKETS; i++)
		dst->buckets[i] += src->buckets[i];
}
