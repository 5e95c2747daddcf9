/* ratelimit.h — OpenAI's rate-limit headers and 429 bodies from an admission verdict. Pure.
 *
 * Headers (each line ends in "\r\n"; a dimension that is not limited gets no headers):
 *   x-ratelimit-{limit,remaining,reset}-requests
 *   x-ratelimit-{limit,remaining,reset}-tokens         the token dimension closest to
 *                                                      exhaustion (ratelimit_token_dim)
 *   x-ratelimit-{limit,remaining,reset}-input-tokens
 *   x-ratelimit-{limit,remaining,reset}-output-tokens
 * Resets are Go durations ("1s", "6m0s", "120ms"): the time until that dimension's usage is
 * back to zero. A 429 adds `retry-after` (whole seconds, rounded up, at least 1) and
 * `retry-after-ms`, unless the request can never fit. */
#ifndef LLMLIMIT_HTTP_RATELIMIT_H
#define LLMLIMIT_HTTP_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "window/window.h"

/* The token dimension closest to exhaustion: the smallest remaining/limit among the limited
 * ones (ties go to WINDOW_INPUT); -1 when neither is limited. */
int ratelimit_token_dim(const struct window_verdict *v);

/* Gives back `refund` output tokens in v's remaining count (capped at the limit), so the
 * headers of an admitted request show the reconciled value. */
void ratelimit_refund(struct window_verdict *v, uint64_t refund);

/* Appends the x-ratelimit-* header lines for v. 0 or -ENOMEM. */
int ratelimit_headers(struct buf *out, const struct window_verdict *v);

/* For a denied verdict: appends the 429's header lines (retry-after* then x-ratelimit-*) to
 * headers and its OpenAI error body to body. amount is what the request asked for; model
 * (model_len bytes, any content) is named in the message. 0 or -ENOMEM. */
int ratelimit_denied(struct buf *headers, struct buf *body, const struct window_verdict *v,
		     const uint64_t amount[WINDOW_DIMS], const char *model, size_t model_len);

/* "requests", "input_tokens" or "output_tokens" (metric label values); "unknown" otherwise. */
const char *ratelimit_dim_label(int dim);

#endif
