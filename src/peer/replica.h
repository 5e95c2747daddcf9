/* replica.h — keeping a key's windows alive when its owner dies or ownership moves.
 *
 * Replication. The node deciding a key marks it with replica_mark() after each change; every
 * interval_ms the replica sends the FULL current state of each marked key (REPLICATE, batched
 * per destination) to the other members of the key's replica set: the first R nodes of
 * ring_successors() (the owner and the R-1 nodes that would own it next), less this node.
 * Receivers merge with WINDOW_IMPORT_MAX, so loss, duplication and reordering are harmless and a
 * copy only grows toward the sender's state. An owner therefore sends to its R-1 replicas; a
 * node deciding under failover also sends back to the owner, which then learns those charges.
 *
 * Handoff. The replica watches the ring (it compares the member list at every tick). After a
 * change it walks its key table in bounded chunks (one per loop turn) and, for each key:
 *   - owned here before and by another node now: HANDOFF (full state) to the new owner;
 *   - owned here now: REPLICATE to the replica-set members that were not in the old set (all of
 *     them if this node was not the owner before).
 * A HANDOFF receiver merges the state (MAX) and marks the key, so the new owner passes it on
 * to its own replicas. replica_handoff_all() sends every key this node holds to its owner in
 * the ring without this node before it leaves: a HANDOFF for the keys it owns, a REPLICATE for
 * the others (its copy may be the only full one).
 *
 * The gap. A replica's copy can miss what its owner charged since the last flush. A node
 * deciding a key imported since its last decision first charges window_table_charge_gap() with
 * replica_gap_ms() (see docs/FAILOVER.md for the bound).
 *
 * Loop thread only. Handles are unreferenced except while replica_handoff_all() runs. */
#ifndef LLMLIMIT_PEER_REPLICA_H
#define LLMLIMIT_PEER_REPLICA_H

#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;
struct ring;
struct peer_pool;
struct window_table;
struct replica;

#define REPLICA_DEFAULT_INTERVAL_MS 50u
#define REPLICA_DIRTY_MAX 16384u  /* keys marked per interval before falling back to a walk */

struct replica_config {
	const char *self_id;            /* borrowed */
	const struct ring *ring;        /* borrowed: the live view, rebuilt in place by the caller */
	struct peer_pool *peers;        /* borrowed */
	struct window_table *table;     /* borrowed */
	uint8_t replicas;               /* R: copies including the owner's; 0 or 1 sends no
					   REPLICATE but still hands off */
	uint32_t interval_ms;           /* flush period; 0 means REPLICA_DEFAULT_INTERVAL_MS */
};

/* Counters for tests. */
struct replica_stats {
	uint64_t states_sent;           /* REPLICATE states queued */
	uint64_t handoffs_sent;         /* HANDOFF states queued */
	uint64_t send_failures;         /* frames peer_send refused */
	uint64_t states_imported;       /* REPLICATE and HANDOFF states merged */
	uint64_t import_failures;       /* ...refused by the table (full, no memory) */
	uint64_t dirty_overflows;       /* intervals that fell back to a walk */
	uint64_t ring_changes;          /* walks started by a ring change */
};

/* Registers the REPLICATE and HANDOFF handlers on the pool and starts the flush timer. Borrows
 * everything; free the replica before the pool and the table. 0, -EINVAL or -ENOMEM. */
__attribute__((warn_unused_result))
int replica_new(struct replica **out, struct uv_loop_s *loop, const struct replica_config *cfg);
/* Unregisters, closes its timers; memory goes in their close callbacks, so run the loop
 * afterwards. A pending replica_handoff_all() callback is not called. NULL-safe. */
void replica_free(struct replica *r);

/* `key` changed on this node (a decision, an adjustment): send its state at the next flush. */
void replica_mark(struct replica *r, const void *key, size_t key_len);

/* How much unreplicated time a new decider charges (window_table_charge_gap's gap_ms). */
uint32_t replica_gap_ms(const struct replica *r);

/* Sends every key this node holds to its owner in the ring without this node (HANDOFF for
 * the keys it owns, REPLICATE for the others), in bounded chunks; then done(arg) runs once, from the loop (never inside this call), when the
 * walk is over and the frames are queued, or after timeout_ms at the latest. Messages are fire
 * and forget: done does not mean delivered. -EALREADY when one is running, else 0. */
int replica_handoff_all(struct replica *r, uint32_t timeout_ms, void (*done)(void *arg),
			void *arg);

void replica_stats(const struct replica *r, struct replica_stats *out);

#endif
