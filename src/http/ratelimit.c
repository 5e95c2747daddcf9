#include "http/ratelimit.h"

#include <errno.h>
#include <stdbool.h>
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

/* Appends to text being built in a fixed array whose size bounds it by construction (see the
 * callers). */
static char *put_text(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

#define PUT_LIT(p, lit) put_text(p, lit, sizeof(lit) - 1)

static char *put_num(char *p, uint64_t v)
{
	return p + num_format_u64(v, p);
}

/* One dimension's three header lines; reset is its Go duration, already formatted. With
 * suffixes of at most 13 bytes, 20-digit numbers and a reset below 32 bytes, that is at most
 * 55 + 59 + 66 = 180 bytes. */
static char *put_dim(char *p, const char *suffix, size_t suffix_len, uint64_t limit,
		     uint64_t remaining, const char *reset, size_t reset_len)
{
	p = PUT_LIT(p, "x-ratelimit-limit-");
	p = put_text(p, suffix, suffix_len);
	p = PUT_LIT(p, ": ");
	p = put_num(p, limit);
	p = PUT_LIT(p, "\r\nx-ratelimit-remaining-");
	p = put_text(p, suffix, suffix_len);
	p = PUT_LIT(p, ": ");
	p = put_num(p, remaining);
	p = PUT_LIT(p, "\r\nx-ratelimit-reset-");
	p = put_text(p, suffix, suffix_len);
	p = PUT_LIT(p, ": ");
	p = put_text(p, reset, reset_len);
	return PUT_LIT(p, "\r\n");
}

int ratelimit_headers(struct buf *out, const struct window_verdict *v)
{
	static const struct { const char *s; size_t len; } suffix[WINDOW_DIMS] = {
		{ "requests", 8 }, { "input-tokens", 12 }, { "output-tokens", 13 },
	};
	char reset[WINDOW_DIMS][32], text[4 * 192], *p = text;  /* 4 x put_dim */
	size_t reset_len[WINDOW_DIMS];
	int tok = ratelimit_token_dim(v), d;

	/* The dimensions usually share one reset time (charged in the same bucket): format
	 * each distinct value once. */
	for (d = 0; d < WINDOW_DIMS; d++) {
		if (d > 0 && v->reset_ms[d] == v->reset_ms[d - 1]) {
			memcpy(reset[d], reset[d - 1], sizeof(reset[d]));
			reset_len[d] = reset_len[d - 1];
		} else {
			reset_len[d] = num_format_go_duration(v->reset_ms[d], reset[d],
							      sizeof(reset[d]));
		}
	}
	if (limited(v, WINDOW_REQUESTS))
		p = put_dim(p, suffix[WINDOW_REQUESTS].s, suffix[WINDOW_REQUESTS].len,
			    v->limit[WINDOW_REQUESTS], v->remaining[WINDOW_REQUESTS],
			    reset[WINDOW_REQUESTS], reset_len[WINDOW_REQUESTS]);
	if (tok >= 0)
		p = put_dim(p, "tokens", 6, v->limit[tok], v->remaining[tok], reset[tok],
			    reset_len[tok]);
	for (d = WINDOW_INPUT; d < WINDOW_DIMS; d++)
		if (limited(v, d))
			p = put_dim(p, suffix[d].s, suffix[d].len, v->limit[d], v->remaining[d],
				    reset[d], reset_len[d]);
	return buf_append(out, text, (size_t)(p - text)) < 0 ? -ENOMEM : 0;
}

int ratelimit_denied(struct buf *headers, struct buf *body, const struct window_verdict *v,
		     const uint64_t amount[WINDOW_DIMS], const char *model, size_t model_len)
{
	int d = v->denied_dim >= 0 && v->denied_dim < WINDOW_DIMS ? v->denied_dim : WINDOW_REQUESTS;
	const char *type = d == WINDOW_REQUESTS ? "requests" : "tokens";
	/* Only the message is bounded: a long model name is cut at 200 bytes there, and (as
	 * printf's %.*s would) at a NUL byte. Everything else in it is bounded too, so it fits. */
	size_t mlen = model ? strnlen(model, model_len > 200 ? 200 : model_len) : 0;
	char msg[512], wait[32], *p = msg;
	int err = 0;

	if (v->never_fits) {
		p = PUT_LIT(p, "Request too large for ");
		p = put_text(p, model, mlen);
		p = PUT_LIT(p, " in organization llmlimit on ");
		p = put_text(p, dim_text[d], strlen(dim_text[d]));
		p = PUT_LIT(p, ": Limit ");
		p = put_num(p, v->limit[d]);
		p = PUT_LIT(p, ", Requested ");
		p = put_num(p, amount[d]);
		p = PUT_LIT(p, ". The input or output tokens must be reduced in order to run "
			    "successfully.");
	} else {
		uint64_t ms = v->retry_after_ms ? v->retry_after_ms : 1;
		size_t wlen = num_format_go_duration(ms, wait, sizeof(wait));

		p = PUT_LIT(p, "Rate limit reached for ");
		p = put_text(p, model, mlen);
		p = PUT_LIT(p, " in organization llmlimit on ");
		p = put_text(p, dim_text[d], strlen(dim_text[d]));
		p = PUT_LIT(p, ": Limit ");
		p = put_num(p, v->limit[d]);
		p = PUT_LIT(p, ", Used ");
		p = put_num(p, v->used[d]);
		p = PUT_LIT(p, ", Requested ");
		p = put_num(p, amount[d]);
		p = PUT_LIT(p, ". Please try again in ");
		p = put_text(p, wait, wlen);
		p = PUT_LIT(p, ".");
		err |= buf_puts(headers, "retry-after: ");
		err |= buf_put_u64(headers, (ms + 999) / 1000);
		err |= buf_puts(headers, "\r\nretry-after-ms: ");
		err |= buf_put_u64(headers, ms);
		err |= buf_puts(headers, "\r\n");
	}
	*p = '\0';
	err |= ratelimit_headers(headers, v);
	err |= http_error_body(body, msg, type, NULL, "rate_limit_exceeded");
	return err ? -ENOMEM : 0;
}
