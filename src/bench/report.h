/* report.h — the end-of-run report, as text (modelled on docs' reference report) and as JSON.
 * Pure apart from writing to the FILE it is given. */
#ifndef LLMLIMIT_BENCH_REPORT_H
#define LLMLIMIT_BENCH_REPORT_H

#include <stdio.h>

#include "bench/options.h"
#include "bench/stats.h"
#include "util/buf.h"

/* Writes the text report to f. Both o and s are only read. */
void bench_report_text(FILE *f, const struct bench_opts *o, const struct bench_stats *s);

/* Appends the JSON report (one object and a newline) to out. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int bench_report_json(struct buf *out, const struct bench_opts *o, const struct bench_stats *s);

/* "1,234,567": writes v with thousands separators into out (at least 27 bytes); returns out. */
char *bench_fmt_count(uint64_t v, char *out);

/* The keys with the lowest success rate among those that got requests (ties: more requests
 * first, then the lower index), worst first. Writes at most max indices to idx; returns how
 * many. Exposed for tests. */
size_t bench_report__worst_keys(const struct bench_stats *s, uint64_t *idx, size_t max);

#endif
