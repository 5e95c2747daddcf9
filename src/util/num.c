#include "util/num.h"

#include <errno.h>
#include <stdio.h>
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

size_t num_format_seconds(uint64_t ms, char *out, size_t outlen)
{
	uint64_t whole = ms / 1000, frac = ms % 1000;
	int n;

	if (outlen == 0)
		return 0;
	if (frac == 0)
		n = snprintf(out, outlen, "%llu", (unsigned long long)whole);
	else if (frac % 100 == 0)
		n = snprintf(out, outlen, "%llu.%llu", (unsigned long long)whole,
			     (unsigned long long)(frac / 100));
	else if (frac % 10 == 0)
		n = snprintf(out, outlen, "%llu.%02llu", (unsigned long long)whole,
			     (unsigned long long)(frac / 10));
	else
		n = snprintf(out, outlen, "%llu.%03llu", (unsigned long long)whole,
			     (unsigned long long)frac);
	if (n < 0)
		return 0;
	return (size_t)n < outlen ? (size_t)n : outlen - 1;
}

size_t num_format_go_duration(uint64_t ms, char *out, size_t outlen)
{
	uint64_t h = ms / 3600000, m = ms / 60000 % 60, rest = ms % 60000;
	char secs[32];
	int n;

	if (outlen == 0)
		return 0;
	/* Go prints zero as "0s", sub-second durations in ms and everything else as [h]m s with
	 * fractions. */
	if (ms == 0)
		n = snprintf(out, outlen, "0s");
	else if (ms < 1000)
		n = snprintf(out, outlen, "%llums", (unsigned long long)ms);
	else {
		num_format_seconds(rest, secs, sizeof(secs));
		if (h)
			n = snprintf(out, outlen, "%lluh%llum%ss", (unsigned long long)h,
				     (unsigned long long)m, secs);
		else if (m)
			n = snprintf(out, outlen, "%llum%ss", (unsigned long long)m, secs);
		else
			n = snprintf(out, outlen, "%ss", secs);
	}
	if (n < 0)
		return 0;
	return (size_t)n < outlen ? (size_t)n : outlen - 1;
}
