#include "util/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/num.h"

void buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void buf_close(struct buf *b)
{
	if (!b)
		return;
	free(b->data);
	buf_init(b);
}

int buf_reserve(struct buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	if (extra > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int buf__append_slow(struct buf *b, const void *p, size_t n)
{
	int err = buf_reserve(b, n);

	if (err)
		return err;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n, err;

	va_copy(ap2, ap);
	n = vsnprintf(b->cap ? b->data + b->len : NULL, b->cap ? b->cap - b->len : 0, fmt, ap2);
	va_end(ap2);
	if (b->cap && n >= 0 && (size_t)n < b->cap - b->len) {
		b->len += (size_t)n;
		return 0;
	}
	/* A failed or truncated attempt may have written past len; restore the terminator so the
	 * buffer is unchanged on failure, as the contract says. */
	if (b->cap)
		b->data[b->len] = '\0';
	if (n < 0)
		return -EINVAL;
	if ((err = buf_reserve(b, (size_t)n)) < 0)
		return err;
	vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return err;
}

int buf_put_u64(struct buf *b, uint64_t v)
{
	char tmp[NUM_U64_DIGITS_MAX];

	/* In place when the longest number and the NUL fit; growth stays that of an append. */
	if (b->cap - b->len > NUM_U64_DIGITS_MAX) {
		b->len += num_format_u64(v, b->data + b->len);
		b->data[b->len] = '\0';
		return 0;
	}
	return buf_append(b, tmp, num_format_u64(v, tmp));
}

size_t buf_utf8_len(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	unsigned char c = s[0];
	size_t len, i;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

size_t buf_json_plain(const char *s, size_t n)
{
	const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
	size_t i = 0;
	uint64_t x, q, b, m;

	/* Eight bytes at a time: (v - ones) & ~v & high is nonzero when a byte of v is zero, and
	 * (v - k * ones) & ~v & high when a byte is below k (k <= 0x80). */
	for (; n - i >= 8; i += 8) {
		memcpy(&x, s + i, 8);
		q = x ^ (ones * '"');
		b = x ^ (ones * '\\');
		m = ((x - ones * 0x20) & ~x & high) | ((q - ones) & ~q & high) |
		    ((b - ones) & ~b & high) | (x & high);
		if (m) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
			/* Borrows only run towards later bytes: the first flag is a real one. */
			return i + (size_t)__builtin_ctzll(m) / 8;
#else
			break;
#endif
		}
	}
	for (; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\')
			break;
	}
	return i;
}

int buf_put_json_str(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0, run, seq;
	int err;

	/* Worst case is 6 output bytes per input byte plus quotes. */
	if (n > (SIZE_MAX - 8) / 6 || (err = buf_reserve(b, n * 6 + 2)) < 0)
		return -ENOMEM;
	b->data[b->len++] = '"';
	/* s may be NULL when n is 0, and memcpy from NULL is undefined even for 0 bytes. */
	while (i < n) {
		unsigned char c;

		run = buf_json_plain(s + i, n - i);
		if (run) {
			memcpy(b->data + b->len, s + i, run);
			b->len += run;
			i += run;
			if (i == n)
				break;
		}
		c = (unsigned char)s[i];
		if (c >= 0x80) {
			seq = buf_utf8_len(s + i, n - i);
			if (seq) {
				memcpy(b->data + b->len, s + i, seq);
				b->len += seq;
				i += seq;
			} else {
				memcpy(b->data + b->len, "\xef\xbf\xbd", 3);
				b->len += 3;
				i++;
			}
			continue;
		}
		b->data[b->len++] = '\\';
		switch (c) {
		case '"': b->data[b->len++] = '"'; break;
		case '\\': b->data[b->len++] = '\\'; break;
		case '\n': b->data[b->len++] = 'n'; break;
		case '\r': b->data[b->len++] = 'r'; break;
		case '\t': b->data[b->len++] = 't'; break;
		default:
			memcpy(b->data + b->len, "u00", 3);
			b->len += 3;
			b->data[b->len++] = hex[c >> 4];
			b->data[b->len++] = hex[c & 15];
		}
		i++;
	}
	b->data[b->len++] = '"';
	b->data[b->len] = '\0';
	return 0;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}
