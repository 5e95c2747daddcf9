#include "util/num.h"

#include <errno.h>
#include <string.h>

int num_parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int num_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon, *h = s, *hend;
	uint64_t p;

	if (s[0] == '[') {
		hend = strchr(s, ']');
		if (!hend || hend[1] != ':')
			return -EINVAL;
		h = s + 1;
		colon = hend + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hend = colon;
		if (memchr(s, ':', (size_t)(colon - s)))
			return -EINVAL; /* bare IPv6 must be bracketed */
	}
	if (hend == h || (size_t)(hend - h) >= hostlen)
		return -EINVAL;
	if (num_parse_u64(colon + 1, strlen(colon + 1), 65535, &p) < 0)
		return -EINVAL;
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = '\0';
	*port = (uint16_t)p;
	return 0;
}

size_t num_format_u64(uint64_t v, char *out)
{
	/* Two digits per division, written in place from the end: responses carry a dozen. */
	static const char pairs[201] =
		"0001020304050607080910111213141516171819"
		"2021222324252627282930313233343536373839"
		"4041424344454647484950515253545556575859"
		"6061626364656667686970717273747576777879"
		"8081828384858687888990919293949596979899";
	static const uint64_t pow10[NUM_U64_DIGITS_MAX] = {
		1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
		100000000ull, 1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull,
		10000000000000ull, 100000000000000ull, 1000000000000000ull, 10000000000000000ull,
		100000000000000000ull, 1000000000000000000ull, 10000000000000000000ull,
	};
	/* The number of digits from the bit length: 1233 / 4096 is just above log10(2). */
	unsigned t = (unsigned)(64 - __builtin_clzll(v | 1)) * 1233 >> 12;
	size_t n = t + 1 - (v < pow10[t]) + (v == 0);
	char *p = out + n;
	uint32_t w;

	while (v > UINT32_MAX) {
		p -= 2;
		memcpy(p, pairs + 2 * (v % 100), 2);
		v /= 100;
	}
	/* Most numbers fit 32 bits, where dividing is cheaper. */
	for (w = (uint32_t)v; w >= 100; w /= 100) {
		p -= 2;
		memcpy(p, pairs + 2 * (w % 100), 2);
	}
	if (w >= 10) {
		p -= 2;
		memcpy(p, pairs + 2 * w, 2);
	} else {
		*--p = (char)('0' + w);
	}
	return n;
}

/* The formatters below write the whole text to a scratch buffer first (they run on every
 * request's headers, so without printf), then copy what fits, as snprintf would. */
static size_t copy_out(const char *text, size_t len, char *out, size_t outlen)
{
	if (outlen == 0)
		return 0;
	if (len >= outlen)
		len = outlen - 1;
	memcpy(out, text, len);
	out[len] = '\0';
	return len;
}

/* "whole[.fff]" with trailing zeros of the fraction trimmed; returns the end. */
static char *put_seconds(char *p, uint64_t ms)
{
	unsigned frac = (unsigned)(ms % 1000);

	p += num_format_u64(ms / 1000, p);
	if (frac == 0)
		return p;
	*p++ = '.';
	*p++ = (char)('0' + frac / 100);
	if (frac % 100 == 0)
		return p;
	*p++ = (char)('0' + frac / 10 % 10);
	if (frac % 10 == 0)
		return p;
	*p++ = (char)('0' + frac % 10);
	return p;
}

size_t num_format_seconds(uint64_t ms, char *out, size_t outlen)
{
	char tmp[NUM_U64_DIGITS_MAX + 8];

	return copy_out(tmp, (size_t)(put_seconds(tmp, ms) - tmp), out, outlen);
}

size_t num_format_go_duration(uint64_t ms, char *out, size_t outlen)
{
	uint64_t h = ms / 3600000, m = ms / 60000 % 60;
	char tmp[3 * NUM_U64_DIGITS_MAX + 8], *p = tmp;

	/* Go prints zero as "0s", sub-second durations in ms and everything else as [h]m s with
	 * fractions. */
	if (ms == 0) {
		*p++ = '0';
		*p++ = 's';
	} else if (ms < 1000) {
		p += num_format_u64(ms, p);
		*p++ = 'm';
		*p++ = 's';
	} else {
		if (h) {
			p += num_format_u64(h, p);
			*p++ = 'h';
		}
		if (h || m) {
			p += num_format_u64(m, p);
			*p++ = 'm';
		}
		p = put_seconds(p, ms % 60000);
		*p++ = 's';
	}
	return copy_out(tmp, (size_t)(p - tmp), out, outlen);
}
