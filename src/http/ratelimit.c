#include "http/ratelimit.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "http/errors.h"
#include "util/num.h"

/* How OpenAI names each limit in its messages. */
static const char *const dim_text[WINDOW_DIMS] = {
	"requests per min (RPM)", "input tokens per min (TPM)", "output tokens per min (TPM)"
};

const char *ratelimit_dim_label(int dim)
{
	static const char *const labels[WINDOW_DIMS] = { "requests", "input_tokens",
							 "output_tokens" };

	return dim >= 0 && dim < WINDOW_DIMS ? labels[dim] : "unknown";
}

static bool limited(const struct window_verdict *v, int d)
{
	return v->limit[d] != WINDOW_UNLIMITED;
}

int ratelimit_token_dim(const struct window_verdict *v)
{
	if (!limited(v, WINDOW_INPUT))
		return limited(v, WINDOW_OUTPUT) ? WINDOW_OUTPUT : -1;
	if (!limited(v, WINDOW_OUTPUT))
		return WINDOW_INPUT;
	/* remaining_out / limit_out < remaining_in / limit_in, cross-multiplied: both limits are
	 * <= WINDOW_LIMIT_MAX (< 2^32), so the products fit in 64 bits. */
	if (v->remaining[WINDOW_OUTPUT] * v->limit[WINDOW_INPUT] <
	    v->remaining[WINDOW_INPUT] * v->limit[WINDOW_OUTPUT])
		return WINDOW_OUTPUT;
	return WINDOW_INPUT;
}

void ratelimit_refund(struct window_verdict *v, uint64_t refund)
{
	uint64_t room;

	if (!limited(v, WINDOW_OUTPUT) || v->remaining[WINDOW_OUTPUT] >= v->limit[WINDOW_OUTPUT])
		return;
	room = v->limit[WINDOW_OUTPUT] - v->remaining[WINDOW_OUTPUT];
	v->remaining[WINDOW_OUTPUT] += refund < room ? refund : room;
}

/* One dimension's three header lines; reset is its Go duration, already formatted. */
static int put_dim(struct buf *out, const char *suffix, uint64_t limit, uint64_t remaining,
		   const char *reset)
{
	int err = 0;

	err |= buf_puts(out, "x-ratelimit-limit-");
	err |= buf_puts(out, suffix);
	err |= buf_puts(out, ": ");
	err |= buf_put_u64(out, limit);
	err |= buf_puts(out, "\r\nx-ratelimit-remaining-");
	err |= buf_puts(out, suffix);
	err |= buf_puts(out, ": ");
	err |= buf_put_u64(out, remaining);
	err |= buf_puts(out, "\r\nx-ratelimit-reset-");
	err |= buf_puts(out, suffix);
	err |= buf_puts(out, ": ");
	err |= buf_puts(out, reset);
	err |= buf_puts(out, "\r\n");
	return err;
}

int ratelimit_headers(struct buf *out, const struct window_verdict *v)
{
	static const char *const suffix[WINDOW_DIMS] = { "requests", "input-tokens",
							 "output-tokens" };
	char reset[WINDOW_DIMS][32];
	int tok = ratelimit_token_dim(v);
	int err = 0, d;

	/* The dimensions usually share one reset time (charged in the same bucket): format
	 * each distinct value once. */
	for (d = 0; d < WINDOW_DIMS; d++) {
		if (d > 0 && v->reset_ms[d] == v->reset_ms[d - 1])
			memcpy(reset[d], reset[d - 1], sizeof(reset[d]));
		else
			num_format_go_duration(v->reset_ms[d], reset[d], sizeof(reset[d]));
	}
	if (limited(v, WINDOW_REQUESTS))
		err |= put_dim(out, suffix[WINDOW_REQUESTS], v->limit[WINDOW_REQUESTS],
			       v->remaining[WINDOW_REQUESTS], reset[WINDOW_REQUESTS]);
	if (tok >= 0)
		err |= put_dim(out, "tokens", v->limit[tok], v->remaining[tok], reset[tok]);
	for (d = WINDOW_INPUT; d < WINDOW_DIMS; d++)
		if (limited(v, d))
			err |= put_dim(out, suffix[d], v->limit[d], v->remaining[d], reset[d]);
	return err ? -ENOMEM : 0;
}

int ratelimit_denied(struct buf *headers, struct buf *body, const struct window_verdict *v,
		     const uint64_t amount[WINDOW_DIMS], const char *model, size_t model_len)
{
	int d = v->denied_dim >= 0 && v->denied_dim < WINDOW_DIMS ? v->denied_dim : WINDOW_REQUESTS;
	const char *type = d == WINDOW_REQUESTS ? "requests" : "tokens";
	/* Only the message is bounded: a long model name is cut at 200 bytes there. */
	int mlen = model_len > 200 ? 200 : (int)model_len;
	char msg[512], wait[32];
	int err = 0;

	if (v->never_fits) {
		snprintf(msg, sizeof(msg),
			 "Request too large for %.*s in organization llmlimit on %s: Limit %llu, "
			 "Requested %llu. The input or output tokens must be reduced in order to "
			 "run successfully.", mlen, model, dim_text[d],
			 (unsigned long long)v->limit[d], (unsigned long long)amount[d]);
	} else {
		uint64_t ms = v->retry_after_ms ? v->retry_after_ms : 1;

		num_format_go_duration(ms, wait, sizeof(wait));
		snprintf(msg, sizeof(msg),
			 "Rate limit reached for %.*s in organization llmlimit on %s: Limit %llu, "
			 "Used %llu, Requested %llu. Please try again in %s.", mlen, model,
			 dim_text[d], (unsigned long long)v->limit[d],
			 (unsigned long long)v->used[d], (unsigned long long)amount[d], wait);
		err |= buf_printf(headers, "retry-after: %llu\r\nretry-after-ms: %llu\r\n",
				  (unsigned long long)((ms + 999) / 1000),
				  (unsigned long long)ms);
	}
	err |= ratelimit_headers(headers, v);
	err |= http_error_body(body, msg, type, NULL, "rate_limit_exceeded");
	return err ? -ENOMEM : 0;
}
