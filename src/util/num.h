/* num.h — the one place numbers and durations are parsed and formatted. Pure. */
#ifndef LLMLIMIT_UTIL_NUM_H
#define LLMLIMIT_UTIL_NUM_H

#include <stddef.h>
#include <stdint.h>

/* Parses a decimal unsigned integer that fills s[0..n) exactly (no sign, no spaces, no
 * leading '+'). 0, -EINVAL when it is not such a number, -ERANGE when it exceeds max. */
__attribute__((warn_unused_result))
int num_parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out);

/* Parses "HOST:PORT" or "[V6]:PORT" into host (NUL-terminated, at most hostlen-1 bytes) and
 * port. 0 or -EINVAL. */
__attribute__((warn_unused_result))
int num_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);

#define NUM_U64_DIGITS_MAX 20

/* Writes v in decimal to out, which has room for NUM_U64_DIGITS_MAX bytes (no NUL is added);
 * returns the number of digits. */
size_t num_format_u64(uint64_t v, char *out);

/* Formats a millisecond duration the way OpenAI's rate-limit headers do (Go's
 * time.Duration.String: "0s", "120ms", "1s", "1.5s", "6m0s", "1h2m3s"). Writes at most
 * outlen bytes including the NUL; returns the length written. */
size_t num_format_go_duration(uint64_t ms, char *out, size_t outlen);

/* Formats milliseconds as seconds with up to 3 decimals, trailing zeros trimmed ("1.2s" form
 * without the unit): 1200 -> "1.2", 1000 -> "1", 5 -> "0.005". Returns the length written. */
size_t num_format_seconds(uint64_t ms, char *out, size_t outlen);

/* The value of one hex digit (either case), or -1. */
static inline int num_hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

#endif
