/* replica.c — replication of window state to a key's replica set, and handoff of keys whose
 * owner changes. See replica.h for the rules.
 *
 * Dirty set. Marked keys are copied into an arena and deduplicated through an open-addressing
 * index (SipHash under a random seed: keys may be attacker-chosen). It holds at most
 * REPLICA_DIRTY_MAX keys per interval; past that, the interval's changes are not tracked
 * one by one and the next tick walks the whole table instead, sending every owned key (full
 * states make the extra sends harmless).
 *
 * Walks. One walk at a time, REPLICA_WALK_CHUNK table slots per loop turn (a 0 ms timer), so a
 * million keys never stall the loop. A ring change during a walk restarts it against the
 * newest view; the "before" view stays the one the last finished walk saw, so no key whose
 * owner changed is skipped. */
#include "peer/replica.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <uv.h>

#include "gossip/ring.h"
#include "peer/peer.h"
#include "util/log.h"
#include "window/table.h"
#include "wire/codec.h"

#define WALK_CHUNK 4096u       /* table slots per loop turn */
#define BATCH_MAX 32u          /* states per frame we build (<= WIRE_STATE_BATCH_MAX) */
#define OUTBOX_MAX RING_SUCCESSORS_MAX
#define LEAVE_DRAIN_MS 20u     /* after the last chunk, let the frames be written */

_Static_assert(BATCH_MAX <= WIRE_STATE_BATCH_MAX, "batch");

enum walk_mode { WALK_NONE, WALK_RING, WALK_LEAVE };

struct dkey {
	uint32_t off;
	uint16_t len;
};

/* States queued for one destination and message type, flushed as one frame. Keys point into
 * the dirty arena or the table, which do not change until the outbox is flushed. */
struct outbox {
	char id[RING_ID_MAX + 1];
	uint8_t type;
	size_t n;
	struct wire_key_state *st;      /* BATCH_MAX, allocated on first use */
};

struct replica {
	uv_loop_t *loop;
	struct replica_config cfg;
	uv_timer_t tick;                /* every interval_ms: flush, ring check */
	uv_timer_t work;                /* walk chunks */
	uv_timer_t deadline;            /* replica_handoff_all() timeout and drain */
	int open_handles;
	bool closing;

	/* dirty set */
	struct dkey *dk;
	uint32_t *idx;                  /* 2 * REPLICA_DIRTY_MAX slots of dk index + 1, 0 = empty */
	uint8_t *arena;
	size_t arena_len, arena_cap, ndirty;
	bool overflow;
	uint8_t seed[16];

	/* ring views */
	struct ring *prev;              /* the view the last finished walk saw */
	struct ring *next;              /* WALK_LEAVE: the live view without this node */
	uint64_t prev_sig, walk_sig;
	enum walk_mode mode;
	bool resync;                    /* the next walk also sends every owned key to its replicas */
	bool walk_resync;               /* ...and this one does */
	struct window_table_cursor cur;
	bool leave_walk_done;
	void (*leave_done)(void *arg);
	void *leave_arg;

	struct outbox box[OUTBOX_MAX];
	size_t nbox;
	struct window_state ws;         /* scratch */
	struct replica_stats stats;
};

static uint64_t ring_sig(const struct ring *g)
{
	static const uint8_t k[16] = { 0 };
	size_t i, n = ring_size(g);
	uint64_t h = n;

	for (i = 0; i < n; i++) {
		const char *id = ring_id(g, i);

		h = (h * 0x9e3779b97f4a7c15ull) ^ ring_siphash24(k, id, strlen(id));
	}
	return h;
}

/* Copies the live members into g, leaving out `skip` (NULL: none). */
static int ring_copy(struct ring *g, const struct ring *from, const char *skip)
{
	const char *ids[RING_SUCCESSORS_MAX * 4];
	size_t i, n = 0, size = ring_size(from);

	for (i = 0; i < size && n < sizeof(ids) / sizeof(ids[0]); i++)
		if (!skip || strcmp(ring_id(from, i), skip) != 0)
			ids[n++] = ring_id(from, i);
	return ring_set_members(g, ids, n);
}

/* ---- outboxes ---- */

static void box_flush(struct replica *r, struct outbox *b)
{
	struct wire_msg m;

	if (!b->n)
		return;
	memset(&m, 0, sizeof(m));
	m.type = b->type;
	m.n = b->n;
	m.states = b->st;
	m.now_ms = uv_now(r->loop);
	m.flags = b->type == WIRE_MSG_HANDOFF ? WIRE_HANDOFF_OWNER : 0;
	if (log_level <= LOG_DEBUG)
		for (size_t i = 0; i < b->n; i++)
			log_debug("msg=\"replica send\" type=%s to=%s key=%.*s",
				  b->type == WIRE_MSG_HANDOFF ? "handoff" : "replicate", b->id,
				  (int)b->st[i].key_len, (const char *)b->st[i].key);
	if (peer_send(r->cfg.peers, b->id, &m) < 0) {
		log_debug("msg=\"replica send failed\" to=%s states=%zu", b->id, b->n);
		r->stats.send_failures++;
	}
	else if (b->type == WIRE_MSG_HANDOFF)
		r->stats.handoffs_sent += b->n;
	else
		r->stats.states_sent += b->n;
	b->n = 0;
}

static void flush_all(struct replica *r)
{
	for (size_t i = 0; i < r->nbox; i++)
		box_flush(r, &r->box[i]);
}

static struct outbox *box_for(struct replica *r, const char *id, uint8_t type)
{
	struct outbox *b;
	size_t i;

	for (i = 0; i < r->nbox; i++)
		if (r->box[i].type == type && strcmp(r->box[i].id, id) == 0)
			return &r->box[i];
	if (r->nbox == OUTBOX_MAX) {
		/* More destinations than one view can name: free a slot by flushing the first. */
		box_flush(r, &r->box[0]);
		b = &r->box[0];
	} else {
		b = &r->box[r->nbox++];
	}
	if (!b->st && !(b->st = calloc(BATCH_MAX, sizeof(*b->st))))
		return NULL;
	snprintf(b->id, sizeof(b->id), "%s", id);
	b->type = type;
	b->n = 0;
	return b;
}

/* Queues key's current full state for node `id`. */
static void send_state(struct replica *r, const char *id, uint8_t type, const uint8_t *key,
		       size_t key_len)
{
	struct wire_key_state *st;
	struct outbox *b;

	if (window_table_export(r->cfg.table, key, key_len, uv_now(r->loop), &r->ws) < 0)
		return;
	if (!(b = box_for(r, id, type))) {
		r->stats.send_failures++;
		return;
	}
	st = &b->st[b->n++];
	st->key = key;
	st->key_len = key_len;
	st->flags = WIRE_STATE_FULL;
	wire_state_from_dense(st, r->ws.head, r->ws.count);
	if (b->n == BATCH_MAX)
		box_flush(r, b);
}

static uint8_t nrep(const struct replica *r)
{
	return r->cfg.replicas ? r->cfg.replicas : 1;
}

static bool is_self(const struct replica *r, const char *id)
{
	return strcmp(id, r->cfg.self_id) == 0;
}

/* ---- dirty set ---- */

#define IDX_SLOTS (2u * REPLICA_DIRTY_MAX)

static void dirty_clear(struct replica *r)
{
	if (r->ndirty)
		memset(r->idx, 0, IDX_SLOTS * sizeof(*r->idx));
	r->ndirty = 0;
	r->arena_len = 0;
	r->overflow = false;
}

void replica_mark(struct replica *r, const void *key, size_t key_len)
{
	uint32_t i;
	struct dkey *d;

	if (r->overflow || key_len == 0 || key_len > WINDOW_KEY_MAX)
		return;
	i = (uint32_t)ring_siphash24(r->seed, key, key_len) & (IDX_SLOTS - 1);
	for (; r->idx[i]; i = (i + 1) & (IDX_SLOTS - 1)) {
		d = &r->dk[r->idx[i] - 1];
		if (d->len == key_len && memcmp(r->arena + d->off, key, key_len) == 0)
			return;
	}
	if (r->ndirty == REPLICA_DIRTY_MAX || r->arena_len + key_len > r->arena_cap) {
		r->overflow = true;
		return;
	}
	d = &r->dk[r->ndirty++];
	d->off = (uint32_t)r->arena_len;
	d->len = (uint16_t)key_len;
	memcpy(r->arena + r->arena_len, key, key_len);
	r->arena_len += key_len;
	r->idx[i] = (uint32_t)r->ndirty;
}

/* Sends key's state to every member of its replica set but this node. */
static void replicate_key(struct replica *r, const uint8_t *key, size_t key_len)
{
	size_t succ[RING_SUCCESSORS_MAX], n, i;

	n = ring_successors(r->cfg.ring, key, key_len, nrep(r), succ);
	for (i = 0; i < n; i++) {
		const char *id = ring_id(r->cfg.ring, succ[i]);

		if (!is_self(r, id))
			send_state(r, id, WIRE_MSG_REPLICATE, key, key_len);
	}
}

static void flush_dirty(struct replica *r)
{
	if (nrep(r) > 1)
		for (size_t i = 0; i < r->ndirty; i++)
			replicate_key(r, r->arena + r->dk[i].off, r->dk[i].len);
	flush_all(r);
	if (r->overflow) {
		r->stats.dirty_overflows++;
		r->resync = nrep(r) > 1;
	}
	dirty_clear(r);
}

/* ---- walks ---- */

static bool in_set(const struct ring *g, const size_t *set, size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(ring_id(g, set[i]), id) == 0)
			return true;
	return false;
}

static void visit(void *arg, const uint8_t *key, size_t key_len)
{
	struct replica *r = arg;
	const struct ring *live = r->cfg.ring;
	size_t now_set[RING_SUCCESSORS_MAX], old_set[RING_SUCCESSORS_MAX], nn, no, i;
	bool was_owner, is_owner;

	if (r->mode == WALK_LEAVE) {
		/* Every key goes to its owner in the ring without this node: the keys owned here
		 * (in the live view or the last walked one: the caller may already have started
		 * leaving, and the ring may no longer name this node) as a HANDOFF; the others as
		 * a REPLICATE, since this node's copy may be the only full one (a key handed to
		 * this node by an owner that restarted before this node saw it leave, or decided
		 * here by failover). The max-merge makes the extra copies harmless. */
		int o = ring_owner(live, key, key_len), p = ring_owner(r->prev, key, key_len);
		bool owned = (o >= 0 && is_self(r, ring_id(live, (size_t)o))) ||
			     (p >= 0 && is_self(r, ring_id(r->prev, (size_t)p)));

		if (ring_successors(r->next, key, key_len, 1, now_set) == 1)
			send_state(r, ring_id(r->next, now_set[0]),
				   owned ? WIRE_MSG_HANDOFF : WIRE_MSG_REPLICATE, key, key_len);
		return;
	}
	nn = ring_successors(live, key, key_len, nrep(r), now_set);
	no = ring_successors(r->prev, key, key_len, nrep(r), old_set);
	if (!nn)
		return;
	was_owner = no && is_self(r, ring_id(r->prev, old_set[0]));
	is_owner = is_self(r, ring_id(live, now_set[0]));
	if (was_owner && !is_owner) {
		send_state(r, ring_id(live, now_set[0]), WIRE_MSG_HANDOFF, key, key_len);
		return;
	}
	if (!is_owner)
		return;
	for (i = 1; i < nn; i++) {
		const char *id = ring_id(live, now_set[i]);

		if (r->walk_resync || !was_owner || !in_set(r->prev, old_set, no, id))
			send_state(r, id, WIRE_MSG_REPLICATE, key, key_len);
	}
}

static void walk_start(struct replica *r, enum walk_mode mode)
{
	r->mode = mode;
	r->cur.slot = 0;
	r->cur.nslots = 0;
	r->walk_sig = ring_sig(r->cfg.ring);
	r->walk_resync = r->resync;
}

static void leave_finish(struct replica *r)
{
	void (*done)(void *) = r->leave_done;

	r->leave_done = NULL;
	uv_timer_stop(&r->deadline);
	uv_timer_stop(&r->work);
	uv_unref((uv_handle_t *)&r->work);
	r->mode = WALK_NONE;
	if (done)
		done(r->leave_arg);
}

static void on_deadline(uv_timer_t *t)
{
	leave_finish(t->data);
}

static void on_work(uv_timer_t *t)
{
	struct replica *r = t->data;
	bool done;

	if (r->mode == WALK_NONE)
		return;
	if (r->mode == WALK_RING && ring_sig(r->cfg.ring) != r->walk_sig)
		walk_start(r, WALK_RING);
	done = window_table_scan(r->cfg.table, &r->cur, WALK_CHUNK, visit, r);
	flush_all(r);
	if (!done) {
		uv_timer_start(&r->work, on_work, 0, 0);
		return;
	}
	if (r->mode == WALK_LEAVE) {
		/* The frames go out at the end of this loop turn; give the writes a moment. */
		r->mode = WALK_NONE;
		uv_timer_start(&r->deadline, on_deadline, LEAVE_DRAIN_MS, 0);
		return;
	}
	r->mode = WALK_NONE;
	if (r->walk_resync)
		r->resync = false;
	if (ring_copy(r->prev, r->cfg.ring, NULL) == 0)
		r->prev_sig = r->walk_sig;
}

static void on_tick(uv_timer_t *t)
{
	struct replica *r = t->data;

	flush_dirty(r);
	if (r->mode != WALK_NONE || r->leave_done)
		return;
	if (ring_sig(r->cfg.ring) != r->prev_sig) {
		r->stats.ring_changes++;
		walk_start(r, WALK_RING);
	} else if (r->resync) {
		walk_start(r, WALK_RING);
	}
	if (r->mode != WALK_NONE)
		uv_timer_start(&r->work, on_work, 0, 0);
}

/* ---- receiving ---- */

/* Converts a received state into a dense one whose head is the sender's bucket at m->now_ms
 * (or the state's own head if later), matching buckets by age. */
static void to_dense(const struct wire_msg *m, const struct wire_key_state *st,
		     struct window_state *out)
{
	uint32_t ref = (uint32_t)(m->now_ms / WINDOW_BUCKET_MS);

	if ((int32_t)(st->head - ref) > 0)
		ref = st->head;
	memset(out, 0, sizeof(*out));
	out->head = ref;
	for (unsigned i = 0; i < st->nslots; i++) {
		const struct wire_slot *s = &st->slots[i];
		uint32_t age = ref - s->bucket, slot;

		if (age >= WINDOW_SLOTS)
			continue;
		slot = (ref % WINDOW_SLOTS + WINDOW_SLOTS - age) % WINDOW_SLOTS;
		for (unsigned d = 0; d < WINDOW_DIMS; d++) {
			int64_t c = s->count[d];

			/* Deltas are not sent by this version: a negative count adds nothing. */
			out->count[slot][d] = c <= 0 ? 0 : c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
		}
	}
}

static void on_state_msg(void *arg, const struct peer_from *from, const struct wire_msg *m)
{
	struct replica *r = arg;
	uint64_t now = uv_now(r->loop);

	for (size_t i = 0; i < m->n; i++) {
		const struct wire_key_state *st = &m->states[i];

		to_dense(m, st, &r->ws);
		if (window_table_import(r->cfg.table, st->key, st->key_len, &r->ws, now,
					WINDOW_IMPORT_MAX) < 0) {
			r->stats.import_failures++;
			continue;
		}
		r->stats.states_imported++;
		log_debug("msg=\"replica import\" type=%s from=%s key=%.*s",
			  m->type == WIRE_MSG_HANDOFF ? "handoff" : "replicate", from->node_id,
			  (int)st->key_len, (const char *)st->key);
		/* A new owner passes handed-off state on to its own replicas. */
		if (m->type == WIRE_MSG_HANDOFF)
			replica_mark(r, st->key, st->key_len);
	}
}

/* ---- the contract ---- */

/* Frees r and what it owns (parts never allocated are NULL). */
static void release(struct replica *r)
{
	for (size_t i = 0; i < OUTBOX_MAX; i++)
		free(r->box[i].st);
	ring_free(r->prev);
	ring_free(r->next);
	free(r->arena);
	free(r->idx);
	free(r->dk);
	free(r);
}

int replica_new(struct replica **out, uv_loop_t *loop, const struct replica_config *cfg)
{
	struct replica *r;
	int err = -ENOMEM;

	if (!cfg->self_id || !cfg->ring || !cfg->peers || !cfg->table)
		return -EINVAL;
	if (!(r = calloc(1, sizeof(*r))))
		return -ENOMEM;
	r->loop = loop;
	r->cfg = *cfg;
	if (!r->cfg.interval_ms)
		r->cfg.interval_ms = REPLICA_DEFAULT_INTERVAL_MS;
	randombytes_buf(r->seed, sizeof(r->seed));
	r->arena_cap = (size_t)REPLICA_DIRTY_MAX * 32u;
	if (!(r->dk = calloc(REPLICA_DIRTY_MAX, sizeof(*r->dk))) ||
	    !(r->idx = calloc(IDX_SLOTS, sizeof(*r->idx))) ||
	    !(r->arena = malloc(r->arena_cap)))
		goto out_free;
	if ((err = ring_new(&r->prev, NULL)) < 0 || (err = ring_new(&r->next, NULL)) < 0)
		goto out_free;
	if ((err = ring_copy(r->prev, cfg->ring, NULL)) < 0)
		goto out_free;
	r->prev_sig = ring_sig(cfg->ring);
	uv_timer_init(loop, &r->tick);
	uv_timer_init(loop, &r->work);
	uv_timer_init(loop, &r->deadline);
	r->tick.data = r->work.data = r->deadline.data = r;
	r->open_handles = 3;
	uv_unref((uv_handle_t *)&r->tick);
	uv_unref((uv_handle_t *)&r->work);
	uv_timer_start(&r->tick, on_tick, r->cfg.interval_ms, r->cfg.interval_ms);
	(void)peer_pool_on(cfg->peers, WIRE_MSG_REPLICATE, on_state_msg, r);
	(void)peer_pool_on(cfg->peers, WIRE_MSG_HANDOFF, on_state_msg, r);
	*out = r;
	return 0;

out_free:
	release(r);
	return err;
}

static void on_closed(uv_handle_t *h)
{
	struct replica *r = h->data;

	if (!--r->open_handles)
		release(r);
}

void replica_free(struct replica *r)
{
	if (!r)
		return;
	(void)peer_pool_on(r->cfg.peers, WIRE_MSG_REPLICATE, NULL, NULL);
	(void)peer_pool_on(r->cfg.peers, WIRE_MSG_HANDOFF, NULL, NULL);
	r->leave_done = NULL;
	uv_close((uv_handle_t *)&r->tick, on_closed);
	uv_close((uv_handle_t *)&r->work, on_closed);
	uv_close((uv_handle_t *)&r->deadline, on_closed);
}

uint32_t replica_gap_ms(const struct replica *r)
{
	/* The newest unreplicated charges are at most one interval old when a flush goes out, and
	 * that flush can itself be lost with the owner: two intervals. */
	return 2 * r->cfg.interval_ms;
}

int replica_handoff_all(struct replica *r, uint32_t timeout_ms, void (*done)(void *arg),
			void *arg)
{
	if (r->leave_done)
		return -EALREADY;
	r->leave_done = done;
	r->leave_arg = arg;
	uv_timer_start(&r->deadline, on_deadline, timeout_ms, 0);
	flush_dirty(r);
	if (ring_copy(r->next, r->cfg.ring, r->cfg.self_id) < 0 || ring_size(r->next) == 0) {
		/* Nobody to hand to (or no memory for the view): done at the next loop turn. */
		r->mode = WALK_NONE;
		uv_timer_start(&r->deadline, on_deadline, 0, 0);
		return 0;
	}
	/* The walk must finish even if nothing else keeps the loop running. */
	uv_ref((uv_handle_t *)&r->work);
	walk_start(r, WALK_LEAVE);
	uv_timer_start(&r->work, on_work, 0, 0);
	return 0;
}

void replica_stats(const struct replica *r, struct replica_stats *out)
{
	*out = r->stats;
}
