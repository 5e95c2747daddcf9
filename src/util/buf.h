/* buf.h — a growable byte buffer. Pure: no I/O. Every function is loop-thread agnostic. */
#ifndef LLMLIMIT_UTIL_BUF_H
#define LLMLIMIT_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

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
/* Appends bytes. 0 or -ENOMEM (the buffer is unchanged on failure). */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
int buf_put_u64(struct buf *b, uint64_t v);
/* Appends `s` as a JSON string literal, quotes included; invalid UTF-8 bytes become U+FFFD. */
int buf_put_json_str(struct buf *b, const char *s, size_t n);
/* Removes the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);

#endif
