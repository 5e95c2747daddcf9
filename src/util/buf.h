/* buf.h — a growable byte buffer. Pure: no I/O. Every function is loop-thread agnostic. */
#ifndef LLMLIMIT_UTIL_BUF_H
#define LLMLIMIT_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct buf {
	char *data;   /* owned; NUL-terminated whenever len < cap */
	size_t len;
	size_t cap;
};

/* Initialises an empty buffer; no allocation until the first append. */
void buf_init(struct buf *b);
/* Frees the storage; the buffer is empty and reusable afterwards. NULL-safe. */
void buf_close(struct buf *b);
/* Keeps the storage, drops the content. */
static inline void buf_reset(struct buf *b) { b->len = 0; if (b->cap) b->data[0] = '\0'; }
/* Ensures room for `extra` more bytes plus a terminating NUL. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int buf_reserve(struct buf *b, size_t extra);
/* buf_append when the bytes do not fit (or the buffer has no storage yet). */
int buf__append_slow(struct buf *b, const void *p, size_t n);
/* Appends bytes. 0 or -ENOMEM (the buffer is unchanged on failure). Inline, because responses
 * are built from many short appends: with a literal, the length and the copy fold into a few
 * moves. */
static inline int buf_append(struct buf *b, const void *p, size_t n)
{
	/* With no storage, cap and len are 0 and the slow path allocates. No buffer gets near
	 * PTRDIFF_MAX (buf_reserve refuses); saying so keeps the compiler from warning about a
	 * huge constant n in a copy that cannot run. */
	if (n > (size_t)PTRDIFF_MAX || n >= b->cap - b->len)
		return buf__append_slow(b, p, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}
static inline int buf_puts(struct buf *b, const char *s) { return buf_append(b, s, strlen(s)); }
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
int buf_put_u64(struct buf *b, uint64_t v);
/* Appends `s` as a JSON string literal, quotes included; invalid UTF-8 bytes become U+FFFD. */
int buf_put_json_str(struct buf *b, const char *s, size_t n);
/* Length of the longest prefix of s[0..n) that a JSON string carries as is: bytes 0x20-0x7f
 * but '"' and '\\'. Eight bytes per step, for long runs of text. */
size_t buf_json_plain(const char *s, size_t n);
/* Length (1-4) of the valid UTF-8 sequence at s[0..n), n >= 1; 0 when it is not valid UTF-8
 * (a bad lead or continuation byte, truncated, overlong, a surrogate or beyond U+10FFFF). The
 * judgement buf_put_json_str makes, and jansson's. */
size_t buf_utf8_len(const char *s, size_t n);
/* Removes the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);

#endif
