/* table.c — the key table: open addressing (linear probing, backward-shift deletion) over an
 * array of entry pointers, plus an intrusive list of entries in order of last charge.
 *
 * Memory is the constraint (a million active keys in well under 1 GiB), so an entry is one
 * exactly-sized malloc holding the list links, the hash, the window and the key bytes, and the
 * table itself is one pointer per slot at a load factor between 1/4 and 3/4.
 *
 * Expiry order. Every charge (an allowed admission, or a positive adjustment) moves the entry to
 * the newest end of the list. A window only holds charges made at or before its entry's last
 * charge, so once the oldest entry is still in use, every entry after it is too (as far as
 * its charges go; one emptied early by refunds waits its turn): expiry stops there, and costs
 * O(freed + 1). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/siphash.h"
#include "window/table.h"

#define MIN_SLOTS 16u
#define ENTRY_IMPORTED 0x01u  /* imported since the last gap charge */
/* 2^31 slots of 8 bytes is 16 GiB: far past any real table, and it keeps hashes in 32 bits. */
#define MAX_SLOTS ((size_t)1 << 31)

struct entry {
	struct entry *older, *newer;  /* the last-charge list */
	uint32_t hash;                /* low bits of the key's SipHash: its home slot */
	uint16_t key_len;
	uint8_t flags;                /* ENTRY_*; sits in what was padding */
	uint8_t epoch;                /* the table's import epoch at the last import, or 0 */
	struct window w;
	uint8_t key[];
};

struct window_table {
	struct entry **slot;   /* owned; NULL marks an empty slot */
	size_t mask;           /* number of slots - 1 (a power of two - 1) */
	size_t size;           /* live entries */
	size_t max_keys;       /* 0: no cap */
	struct entry *oldest;  /* least recently charged */
	struct entry *newest;
	uint8_t seed[16];
	uint8_t epoch;         /* 1..255 once window_table_new_epoch() ran; entries start at 0 */
};

int window_table_new(struct window_table **out, size_t max_keys, const uint8_t seed[16])
{
	struct window_table *t;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->slot = calloc(MIN_SLOTS, sizeof(*t->slot));
	if (!t->slot)
		goto out_free_table;
	t->mask = MIN_SLOTS - 1;
	t->max_keys = max_keys;
	memcpy(t->seed, seed, sizeof(t->seed));
	*out = t;
	return 0;

out_free_table:
	free(t);
	return -ENOMEM;
}

void window_table_free(struct window_table *t)
{
	struct entry *e, *next;

	if (!t)
		return;
	for (e = t->oldest; e; e = next) {
		next = e->newer;
		free(e);
	}
	free(t->slot);
	free(t);
}

static inline bool key_ok(size_t key_len)
{
	return key_len > 0 && key_len <= WINDOW_KEY_MAX;
}

static inline uint32_t hash_key(const struct window_table *t, const void *key, size_t key_len)
{
	return (uint32_t)siphash24(t->seed, key, key_len);
}

/* The slot holding `key`, or the empty slot where it would go. The load factor stays <= 3/4,
 * so there is always an empty slot to stop at. */
static size_t probe(const struct window_table *t, uint32_t h, const void *key, size_t key_len)
{
	size_t i = h & t->mask;
	const struct entry *e;

	while ((e = t->slot[i])) {
		if (e->hash == h && e->key_len == key_len && !memcmp(e->key, key, key_len))
			break;
		i = (i + 1) & t->mask;
	}
	return i;
}

static struct entry *lookup(const struct window_table *t, const void *key, size_t key_len)
{
	return t->slot[probe(t, hash_key(t, key, key_len), key, key_len)];
}

/* Rebuilds the slot array with `n` slots (a power of two that fits every entry). */
static int rehash(struct window_table *t, size_t n)
{
	struct entry **slot, *e;
	size_t i;

	slot = calloc(n, sizeof(*slot));
	if (!slot)
		return -ENOMEM;
	for (e = t->oldest; e; e = e->newer) {
		i = e->hash & (n - 1);
		while (slot[i])
			i = (i + 1) & (n - 1);
		slot[i] = e;
	}
	free(t->slot);
	t->slot = slot;
	t->mask = n - 1;
	return 0;
}

/* Makes room for one more entry under the 3/4 load factor. */
static int reserve_one(struct window_table *t)
{
	size_t n = t->mask + 1;

	if ((t->size + 1) * 4 <= n * 3)
		return 0;
	if (n >= MAX_SLOTS)
		return -ENOMEM;
	return rehash(t, n * 2);
}

/* Empties slot i, moving later entries of its probe run back so lookups never stop early
 * (Knuth's algorithm R: no tombstones to accumulate). */
static void slot_clear(struct window_table *t, size_t i)
{
	size_t j = i, home;

	for (;;) {
		j = (j + 1) & t->mask;
		if (!t->slot[j])
			break;
		home = t->slot[j]->hash & t->mask;
		/* The entry at j may fill the hole at i unless its home lies cyclically in (i, j]. */
		if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
			t->slot[i] = t->slot[j];
			i = j;
		}
	}
	t->slot[i] = NULL;
}

static void list_unlink(struct window_table *t, struct entry *e)
{
	if (e->older)
		e->older->newer = e->newer;
	else
		t->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		t->newest = e->older;
}

static void list_append(struct window_table *t, struct entry *e)
{
	e->newer = NULL;
	e->older = t->newest;
	if (t->newest)
		t->newest->newer = e;
	else
		t->oldest = e;
	t->newest = e;
}

/* Records a charge: e becomes the newest entry. */
static inline void touch(struct window_table *t, struct entry *e)
{
	if (t->newest == e)
		return;
	list_unlink(t, e);
	list_append(t, e);
}

static void entry_remove(struct window_table *t, struct entry *e)
{
	size_t i = e->hash & t->mask;

	while (t->slot[i] != e)
		i = (i + 1) & t->mask;
	slot_clear(t, i);
	list_unlink(t, e);
	t->size--;
	free(e);
}

/* Frees up to `budget` idle entries from the oldest end; see the file comment. */
static size_t expire_oldest(struct window_table *t, uint64_t now_ms, size_t budget)
{
	size_t n = 0;

	while (n < budget && t->oldest && window_idle(&t->oldest->w, now_ms)) {
		entry_remove(t, t->oldest);
		n++;
	}
	return n;
}

/* Inserts a new entry for `key` holding a copy of `w`, as the newest. */
static int insert(struct window_table *t, const void *key, size_t key_len, uint32_t h,
		  const struct window *w, uint64_t now_ms)
{
	struct entry *e;
	int err;

	if (t->max_keys && t->size >= t->max_keys && !expire_oldest(t, now_ms, 1))
		return -ENOSPC;
	if ((err = reserve_one(t)) < 0)
		return err;
	e = malloc(sizeof(*e) + key_len);
	if (!e)
		return -ENOMEM;
	e->hash = h;
	e->key_len = (uint16_t)key_len;
	e->flags = 0;
	e->epoch = 0;
	e->w = *w;
	memcpy(e->key, key, key_len);
	/* Found again: expiry and growth may have moved every slot since the caller looked. */
	t->slot[probe(t, h, key, key_len)] = e;
	list_append(t, e);
	t->size++;
	return 0;
}

/* What an error leaves in *out: a denial, so a caller that misreads the code admits nothing. */
static void verdict_error(struct window_verdict *out)
{
	memset(out, 0, sizeof(*out));
	out->denied_dim = -1;
}

int window_table_admit(struct window_table *t, const void *key, size_t key_len,
		       const uint64_t limit[WINDOW_DIMS], const uint64_t amount[WINDOW_DIMS],
		       uint64_t now_ms, struct window_verdict *out)
{
	struct window fresh;
	struct entry *e;
	uint32_t h;
	size_t i;
	int err;

	if (!key_ok(key_len)) {
		verdict_error(out);
		return -EINVAL;
	}
	h = hash_key(t, key, key_len);
	i = probe(t, h, key, key_len);
	if ((e = t->slot[i])) {
		window_admit(&e->w, limit, amount, now_ms, out);
		if (out->allowed)
			touch(t, e);
		return 0;
	}
	/* A new key is decided on a window on the stack and stored only when allowed, so denied
	 * requests (amounts over the limit) cannot fill the table with keys. */
	window_init(&fresh, now_ms);
	window_admit(&fresh, limit, amount, now_ms, out);
	if (!out->allowed)
		return 0;
	if ((err = insert(t, key, key_len, h, &fresh, now_ms)) < 0) {
		verdict_error(out);
		return err;
	}
	return 0;
}

int window_table_adjust(struct window_table *t, const void *key, size_t key_len, uint32_t bucket,
			const int64_t delta[WINDOW_DIMS], uint64_t now_ms)
{
	struct window fresh;
	int64_t charge[WINDOW_DIMS];
	bool positive = false;
	struct entry *e;
	uint32_t h;
	unsigned d;

	if (!key_ok(key_len))
		return -EINVAL;
	for (d = 0; d < WINDOW_DIMS; d++) {
		charge[d] = delta[d] > 0 ? delta[d] : 0;
		positive |= delta[d] > 0;
	}
	h = hash_key(t, key, key_len);
	if ((e = t->slot[probe(t, h, key, key_len)])) {
		window_adjust(&e->w, bucket, delta, now_ms);
		if (positive)
			touch(t, e);
		return 0;
	}
	if (!positive)
		return -ENOENT;
	/* The key expired between admission and reconciliation, taking the reservation with it:
	 * there is nothing to refund, but work beyond the reservation still counts. */
	window_init(&fresh, now_ms);
	window_adjust(&fresh, bucket, charge, now_ms);
	return insert(t, key, key_len, h, &fresh, now_ms);
}

void window_table_usage(const struct window_table *t, const void *key, size_t key_len,
			uint64_t now_ms, uint64_t used[WINDOW_DIMS])
{
	const struct entry *e = key_ok(key_len) ? lookup(t, key, key_len) : NULL;
	unsigned d;

	if (e) {
		window_usage(&e->w, now_ms, used);
		return;
	}
	for (d = 0; d < WINDOW_DIMS; d++)
		used[d] = 0;
}

size_t window_table_expire(struct window_table *t, uint64_t now_ms, size_t budget)
{
	size_t n = expire_oldest(t, now_ms, budget), want;

	/* Give the slot array back once it is mostly empty (load < 1/8), leaving it at load <= 1/4
	 * so growth is far off. A failed shrink just keeps the bigger array. */
	if (n && t->mask + 1 > MIN_SLOTS && t->size * 8 < t->mask + 1) {
		want = MIN_SLOTS;
		while (want < t->size * 4)
			want *= 2;
		(void)rehash(t, want);
	}
	return n;
}

size_t window_table_size(const struct window_table *t)
{
	return t->size;
}

/* ---- replication and handoff ---- */

static inline uint32_t prev_slot(uint32_t s)
{
	return s == 0 ? WINDOW_SLOTS - 1 : s - 1;
}

/* w aged to bucket cur (>= w->head): the ring invariant of window.c, restated here because
 * window.c keeps advance() private. */
static void age_to(struct window *w, uint32_t cur)
{
	uint32_t gap = cur - w->head, s = w->head % WINDOW_SLOTS;

	if (gap >= WINDOW_SLOTS) {
		memset(w->count, 0, sizeof(w->count));
	} else {
		while (gap--) {
			s = s + 1 == WINDOW_SLOTS ? 0 : s + 1;
			memset(w->count[s], 0, sizeof(w->count[s]));
		}
	}
	w->head = cur;
}

/* The bucket a call at now_ms works in for w: never behind its head (see window.c current()). */
static inline uint32_t cur_bucket(const struct window *w, uint64_t now_ms)
{
	uint32_t cur = (uint32_t)(now_ms / WINDOW_BUCKET_MS);

	return (int32_t)(cur - w->head) < 0 ? w->head : cur;
}

int window_table_export(const struct window_table *t, const void *key, size_t key_len,
			uint64_t now_ms, struct window_state *out)
{
	const struct entry *e;
	struct window w;

	if (!key_ok(key_len))
		return -EINVAL;
	if (!(e = lookup(t, key, key_len)))
		return -ENOENT;
	w = e->w;
	age_to(&w, cur_bucket(&w, now_ms));
	out->head = w.head;
	memcpy(out->count, w.count, sizeof(out->count));
	return 0;
}

static bool state_empty(const struct window_state *st)
{
	for (unsigned s = 0; s < WINDOW_SLOTS; s++)
		if (st->count[s][0] | st->count[s][1] | st->count[s][2])
			return false;
	return true;
}

/* Merges st into w, matching buckets by age; w must already be aged to its current bucket. */
/* true when some bucket grew. */
static bool merge(struct window *w, const struct window_state *st, enum window_import_mode mode)
{
	uint32_t si = st->head % WINDOW_SLOTS, so = w->head % WINDOW_SLOTS;
	unsigned age, d;
	bool grew = false;

	for (age = 0; age < WINDOW_SLOTS; age++) {
		for (d = 0; d < WINDOW_DIMS; d++) {
			uint32_t in = st->count[si][d], *c = &w->count[so][d];

			grew |= in > 0 && *c != UINT32_MAX && (mode == WINDOW_IMPORT_ADD || in > *c);
			if (mode == WINDOW_IMPORT_MAX)
				*c = in > *c ? in : *c;
			else
				*c = in >= UINT32_MAX - *c ? UINT32_MAX : *c + in;
		}
		si = prev_slot(si);
		so = prev_slot(so);
	}
	return grew;
}

int window_table_import(struct window_table *t, const void *key, size_t key_len,
			const struct window_state *st, uint64_t now_ms,
			enum window_import_mode mode)
{
	struct window fresh;
	struct entry *e;
	uint32_t h;
	int err;

	if (!key_ok(key_len) || (mode != WINDOW_IMPORT_MAX && mode != WINDOW_IMPORT_ADD))
		return -EINVAL;
	h = hash_key(t, key, key_len);
	if ((e = t->slot[probe(t, h, key, key_len)])) {
		age_to(&e->w, cur_bucket(&e->w, now_ms));
		/* A copy that brings nothing new (an echo of this node's own state) leaves no gap
		 * to charge: two nodes deciding a key in turn must not charge each other's echoes
		 * over and over. */
		if (merge(&e->w, st, mode))
			e->flags |= ENTRY_IMPORTED;
		e->epoch = t->epoch;
		/* Imported charges are at most as new as now: the entry joins the newest end, which
		 * keeps the expiry order's argument (see the file comment). */
		touch(t, e);
		return 0;
	}
	if (state_empty(st))
		return 0;
	window_init(&fresh, now_ms);
	(void)merge(&fresh, st, mode);
	if ((err = insert(t, key, key_len, h, &fresh, now_ms)) < 0)
		return err;
	t->newest->flags |= ENTRY_IMPORTED;
	t->newest->epoch = t->epoch;
	return 0;
}

void window_table_new_epoch(struct window_table *t)
{
	/* 0 is what a key that was never imported holds: skip it when wrapping. */
	t->epoch = t->epoch == UINT8_MAX ? 1 : (uint8_t)(t->epoch + 1);
}

bool window_table_imported_in_epoch(const struct window_table *t, const void *key,
				    size_t key_len)
{
	const struct entry *e = key_ok(key_len) ? lookup(t, key, key_len) : NULL;

	return e && t->epoch && e->epoch == t->epoch;
}

int window_table_charge_gap(struct window_table *t, const void *key, size_t key_len,
			    uint32_t gap_ms, uint64_t now_ms, uint64_t charged[WINDOW_DIMS])
{
	int64_t delta[WINDOW_DIMS];
	uint32_t s, p;
	struct entry *e;
	unsigned d;

	if (!key_ok(key_len))
		return -EINVAL;
	if (!(e = lookup(t, key, key_len)) || !(e->flags & ENTRY_IMPORTED))
		return 0;
	e->flags &= (uint8_t)~ENTRY_IMPORTED;
	/* The head is where the last import left it: every decision on an imported key charges
	 * its gap first, so nothing has advanced it since. */
	s = e->w.head % WINDOW_SLOTS;
	p = prev_slot(s);
	for (d = 0; d < WINDOW_DIMS; d++) {
		uint64_t r = e->w.count[s][d] > e->w.count[p][d] ? e->w.count[s][d] :
								      e->w.count[p][d];

		delta[d] = (int64_t)((r * gap_ms + WINDOW_BUCKET_MS - 1) / WINDOW_BUCKET_MS);
		if (charged)
			charged[d] = (uint64_t)delta[d];
	}
	window_adjust(&e->w, e->w.head, delta, now_ms);
	touch(t, e);
	return 1;
}

bool window_table_scan(const struct window_table *t, struct window_table_cursor *c,
		       size_t budget, window_table_scan_cb cb, void *arg)
{
	const struct entry *e;

	if (c->nslots != t->mask + 1) {
		c->nslots = t->mask + 1;
		c->slot = 0;
	}
	for (; budget && c->slot < c->nslots; budget--, c->slot++)
		if ((e = t->slot[c->slot]))
			cb(arg, e->key, e->key_len);
	return c->slot >= c->nslots;
}
