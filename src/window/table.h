/* table.h — the key table: API key -> struct window, with idle expiry and a size cap.
 *
 * Pure: no libuv, no clock, no I/O. Keys are arbitrary bytes (attacker-chosen when unknown keys
 * are admitted), so the hash is SipHash keyed by a caller-supplied random seed. An idle key
 * (window_idle) is freed by window_table_expire(), which does bounded work per call: the table
 * keeps its keys in order of last charge, so expiry only looks at the oldest ones. */
#ifndef LLMLIMIT_WINDOW_TABLE_H
#define LLMLIMIT_WINDOW_TABLE_H

#include <stdbool.h>
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

/* ---- replication and handoff (src/peer/replica.c) ---- */

/* One key's window as it stood at the exporter's `now`: the dense ring of struct window with
 * head = the exporter's current bucket (now_ms / 1000), so slot (head - age) % WINDOW_SLOTS
 * holds the bucket `age` seconds old (0..60) and nothing expired is left in it. */
struct window_state {
	uint32_t head;
	uint32_t count[WINDOW_SLOTS][WINDOW_DIMS];
};

/* How window_table_import() combines a state with the receiver's copy of the key. */
enum window_import_mode {
	/* Bucket-wise maximum: idempotent and order-free, so replaying, duplicating or reordering
	 * full states never double counts, and a copy only grows toward the exporter's state. */
	WINDOW_IMPORT_MAX = 0,
	/* Bucket-wise sum (saturating), for states known to be disjoint from the local copy. */
	WINDOW_IMPORT_ADD = 1,
};

/* Fills *out with `key`'s window at now_ms (aged: buckets expired by now_ms are zero).
 * 0, -ENOENT (unknown key), -EINVAL (bad key_len). */
int window_table_export(const struct window_table *t, const void *key, size_t key_len,
			uint64_t now_ms, struct window_state *out);

/* Merges st into `key`'s window. Buckets are matched by age, not number (the exporter's clock
 * is not ours): st's bucket head - a lands in our bucket now_ms / 1000 - a, so transit delay
 * only keeps charges counted a little longer. Creates the key when it is unknown and st holds
 * a charge (an all-zero state for an unknown key is a no-op). When st added to some bucket the
 * key is then marked "imported": its next window_table_charge_gap() charges the replication
 * gap. 0, -EINVAL (bad
 * key_len or mode), -ENOSPC, -ENOMEM (as window_table_admit). */
__attribute__((warn_unused_result))
int window_table_import(struct window_table *t, const void *key, size_t key_len,
			const struct window_state *st, uint64_t now_ms,
			enum window_import_mode mode);

/* If `key` was imported since its last gap charge, charges the unreplicated estimate to the
 * current bucket (like a positive adjustment: past the limit if need be) and clears the mark.
 * Per dimension the estimate is ceil(r * gap_ms / 1000), with r the larger of the two newest
 * buckets' counts as they stood at the last import (a per-second rate that errs high). Fills
 * charged[] (when not NULL) and returns 1 when it charged, 0 when no gap was pending, -EINVAL
 * for a bad key_len. */
int window_table_charge_gap(struct window_table *t, const void *key, size_t key_len,
			    uint32_t gap_ms, uint64_t now_ms, uint64_t charged[WINDOW_DIMS]);

/* Import epochs, for a node that must know which keys it received state for since some moment
 * (a warm-up: src/peer/admit.h). window_table_new_epoch() starts a new epoch;
 * window_table_imported_in_epoch() is true when `key` was imported (window_table_import) in the
 * current epoch. Epochs are 8 bits: a key last imported exactly 255 epochs ago reads as
 * imported, which needs 255 warm-ups during which that key, though alive, was never imported. */
void window_table_new_epoch(struct window_table *t);
bool window_table_imported_in_epoch(const struct window_table *t, const void *key,
				    size_t key_len);

/* Resumable walk over every key. Start with the cursor zeroed. Each call visits up to `budget`
 * slots of the table (calling cb for each key found) and returns true once the walk is over.
 * If the table was resized between calls (growth, or a shrink by expiry) the walk restarts, so
 * every key present throughout is visited at least once; a key may be visited twice, and a key
 * moved backwards past the cursor by a removal between calls (backward-shift deletion) can be
 * missed. cb must not modify the table. */
struct window_table_cursor {
	size_t slot;
	size_t nslots;
};
typedef void (*window_table_scan_cb)(void *arg, const uint8_t *key, size_t key_len);
bool window_table_scan(const struct window_table *t, struct window_table_cursor *c,
		       size_t budget, window_table_scan_cb cb, void *arg);

#endif
