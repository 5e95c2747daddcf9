/* metrics.h — a small Prometheus registry: counters, gauges and histograms with fixed label
 * sets, rendered in the text exposition format. Pure: no I/O, no clock. Not thread-safe (one
 * loop thread). The registry owns every series; the pointers it returns live until
 * metrics_free(). Look series up once and keep the pointer on hot paths. */
#ifndef LLMLIMIT_UTIL_METRICS_H
#define LLMLIMIT_UTIL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

struct metrics;
struct metrics_counter;
struct metrics_gauge;
struct metrics_histogram;

__attribute__((warn_unused_result)) int metrics_new(struct metrics **out);
void metrics_free(struct metrics *m);  /* NULL-safe */

/* Finds or creates the series `name{labels}`. labels is the inside of the braces, already
 * escaped (e.g. `endpoint="chat",status="200"`), or "" for none. help is used by the first
 * series of a family. NULL on allocation failure (callers treat a NULL series as a no-op:
 * every update function accepts NULL). */
struct metrics_counter *metrics_counter(struct metrics *m, const char *name, const char *help,
					const char *labels);
struct metrics_gauge *metrics_gauge(struct metrics *m, const char *name, const char *help,
				    const char *labels);
/* bounds: ascending upper bounds of the buckets (+Inf is implied), copied. */
struct metrics_histogram *metrics_histogram(struct metrics *m, const char *name, const char *help,
					    const char *labels, const double *bounds,
					    size_t nbounds);

void metrics_counter_add(struct metrics_counter *c, uint64_t v);
void metrics_gauge_set(struct metrics_gauge *g, double v);
void metrics_gauge_add(struct metrics_gauge *g, double v);
void metrics_histogram_observe(struct metrics_histogram *h, double v);

uint64_t metrics_counter_value(const struct metrics_counter *c);

/* Appends every family, in creation order, in Prometheus text format 0.0.4. */
int metrics_render(const struct metrics *m, struct buf *out);

#endif
