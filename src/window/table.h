/* table.h — the key table: API key -> struct window, with idle expiry and a size cap.
 *
 * Pure: no libuv, no clock, no I/O. Keys are arbitrary bytes (attacker-chosen when unknown keys
 * are admitted), so the hash is SipHash keyed by a caller-supplied random seed. An idle key
 * (window_idle) is freed by window_table_expire(), which does bounded work per call: the table
 * keeps its keys in order of last charge, so expiry only looks at the oldest ones. */
#ifndef LLMLIMIT_WINDOW_TABLE_H
#define LLMLIMIT_WINDOW_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "window/window.h"

#define WINDOW_KEY_MAX 256  /* longest key in bytes */

struct window_table;

/* Creates an empty table. max_keys caps the number of live keys (0 means no cap); seed keys
 * the hash. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int window_table_new(struct window_table **out, size_t max_keys, const uint8_t seed[16]);
/* Frees every key. NULL-safe. */
void window_table_free(struct window_table *t);

/* Admission for `key` (see window_admit). Creates the key's window on first use. 0 with *out
 * filled; -EINVAL when key_len is 0 or > WINDOW_KEY_MAX; -ENOSPC when the key is new and the
 * table is full of non-idle keys; -ENOMEM. A denied request never creates a key. */
__attribute__((warn_unused_result))
int window_table_admit(struct window_table *t, const void *key, size_t key_len,
		       const uint64_t limit[WINDOW_DIMS], const uint64_t amount[WINDOW_DIMS],
		       uint64_t now_ms, struct window_verdict *out);

/* window_adjust for `key`. 0, or -ENOENT when the key has expired (nothing left to reconcile,
 * except a positive delta, which then creates the key and charges it; creating can fail with
 * -ENOSPC or -ENOMEM as in window_table_admit); -EINVAL for a key_len as in admit. */
int window_table_adjust(struct window_table *t, const void *key, size_t key_len, uint32_t bucket,
			const int64_t delta[WINDOW_DIMS], uint64_t now_ms);

/* Usage of `key`; all zero when unknown. */
void window_table_usage(const struct window_table *t, const void *key, size_t key_len,
			uint64_t now_ms, uint64_t used[WINDOW_DIMS]);

/* Frees up to `budget` idle keys, oldest first. Returns how many were freed. */
size_t window_table_expire(struct window_table *t, uint64_t now_ms, size_t budget);

/* Number of live keys. */
size_t window_table_size(const struct window_table *t);

#endif
