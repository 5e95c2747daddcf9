/* admit.h — the admission call the HTTP layer makes for every limited request.
 *
 * Asynchronous from the first line: admit_check() delivers its verdict through a callback that
 * may run before admit_check() returns (this node owns the key) or later, after a peer round
 * trip (another node owns it). Callers must handle both. Loop thread only.
 *
 * In a cluster a check goes to the key's owner over src/peer, and to the next nodes of the key's
 * ring order (which hold its replicated window) when the owner cannot be reached; see admit.c
 * and src/peer/replica.h. */
#ifndef LLMLIMIT_PEER_ADMIT_H
#define LLMLIMIT_PEER_ADMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "window/table.h"

struct uv_loop_s;

/* What crosses to the decider: small and self-contained, so it can be sent as one message. */
struct admit_request {
	char key[WINDOW_KEY_MAX];
	uint16_t key_len;
	uint64_t limit[WINDOW_DIMS];
	uint64_t amount[WINDOW_DIMS];
};

/* What a node does when the owner of a key cannot be reached (--owner-failure). */
enum admit_owner_failure {
	ADMIT_FAIL_LOCAL = 0,  /* decide on this node's own fallback window for the key */
	ADMIT_FAIL_DENY,       /* answer 503: fail closed */
	ADMIT_FAIL_ALLOW,      /* admit without counting: fail open */
};

/* How a forwarded check crosses to the owner. All optional: with cluster == NULL the admitter
 * decides every key locally (a single node). Everything is borrowed and must outlive it. */
struct admit_cluster {
	const char *self_id;            /* this node's id in the ring */
	const struct ring *ring;        /* ownership view; the caller rebuilds it on membership change */
	struct peer_pool *peers;        /* transport to the other nodes */
	enum admit_owner_failure owner_failure;
	uint8_t max_hops;               /* forwards a non-owner may add (views differ in churn); 1 */
	uint8_t replicas;               /* R (--replicas, whose default is 2): copies of each key's
					   window, the owner's included, and how many nodes of the
					   key's ring order a check tries before owner_failure.
					   0 or 1: no replication, no failover (handoff still runs) */
	uint32_t replicate_interval_ms; /* replication flush period; 0 means 50 ms */
	/* Membership signals the admitter polls (each optional): joined(arg) is true once this
	 * node has joined its cluster (gossip_joined); accused(arg) counts the times this node
	 * refuted a suspicion or a death notice about itself (both only grow). */
	bool (*joined)(void *arg);
	uint64_t (*accused)(void *arg);
	/* alive(arg, id): membership shows node id alive (not suspect, dead or left). */
	bool (*alive)(void *arg, const char *id);
	void *signal_arg;
	uint32_t stall_ms;              /* a loop stall this long starts a warm-up (see below);
					   the peer request timeout; 0 means ADMIT_STALL_MS */
};

/* Alive but unreachable. --owner-failure is for an owner that membership no longer shows alive
 * (suspect, dead: a death or a partition). While membership still shows it alive, an owner that
 * neither it nor its replicas answer is a transport problem (connections being re-established
 * after a network cut, a blocked port): the check fails with -EIO (503, retry elsewhere)
 * rather than be decided on this node's fallback window, whose counters for the key are not
 * the owner's.
 *
 * Joining. Until joined() turns true, a clustered admitter answers every check -EAGAIN (the
 * API: 503 with Retry-After, "retry on another node"), for at most ADMIT_JOIN_GRACE_MS after
 * admit_new; a node that has not joined by then (no seed answers) decides alone, with a
 * warning. A node that knows no member but itself would otherwise own every key on empty
 * windows and admit each key's full limit again.
 *
 * Warm-up. This node may have missed decisions on keys it owns when it has just joined (its
 * memory is empty after a restart), when it refuted an accusation (the others counted it
 * suspect or dead and failed its keys over), or when its own loop stalled past stall_ms
 * (SIGSTOP, a paused VM: origins failed over after their peer timeout). For ADMIT_WARMUP_MS
 * after such an event, a check on a key this node owns, and for which no state has arrived
 * since the warm-up began (window_table_imported_in_epoch), is sent, as a failover check, to
 * the next node of the key's ring order: the node that decided the key while this one was
 * away, which is also the one handing its state over (src/peer/replica.h). Once that state
 * arrives (a HANDOFF, or the REPLICATE of that node's own decisions) this node decides the key
 * on the merged state, charging the replication gap first. If the next node cannot decide
 * either, this one does. Why per key: in a rolling restart the next node may itself restart
 * empty right after handing the key back, and must not be asked any more. */
#define ADMIT_JOIN_GRACE_MS 5000u
#define ADMIT_WARMUP_MS 3000u
#define ADMIT_STALL_MS 200u

/* CHECK hops with this bit set: "the sender could not reach the owner; decide here". A
 * receiver never forwards such a check (docs/PROTOCOL.md section 6). */
#define ADMIT_HOPS_FAILOVER 0x80u

/* err is 0 with *v filled, or a negative errno (-ENOSPC: the key table is full; -EIO: the
 * decider could not be reached) with v NULL. v is valid only during the call. */
typedef void (*admit_cb)(void *ctx, int err, const struct window_verdict *v);

struct admit;
struct ring;
struct peer_pool;
struct replica;

/* Borrows loop, table and cluster (NULL: single node); all must outlive the admitter.
 * 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int admit_new(struct admit **out, struct uv_loop_s *loop, struct window_table *table,
	      const struct admit_cluster *cluster);
/* Fails every check still waiting for a peer (their callbacks run with -ECANCELED), then frees.
 * NULL-safe. */
void admit_free(struct admit *a);

/* Asks whether req fits and charges it if so; cb(ctx, ...) runs exactly once. req is copied. */
void admit_check(struct admit *a, const struct admit_request *req, admit_cb cb, void *ctx);

/* The replicator the admitter runs in cluster mode (NULL for a single node), for
 * replica_handoff_all() before leaving. Owned by the admitter. */
struct replica *admit_replica(struct admit *a);

/* Starts (or extends) a warm-up now; reason is logged ("joined", "accused", "stall"...). */
void admit_warmup(struct admit *a, const char *reason);
/* True while a warm-up runs (GET /cluster shows it); and while the node waits to join. */
bool admit_warming(const struct admit *a);
bool admit_joining(const struct admit *a);

/* Reconciles an admitted request (fire and forget): delta = actual - charged per dimension,
 * ticket = the verdict's bucket. */
void admit_adjust(struct admit *a, const char *key, size_t key_len, uint32_t bucket,
		  const int64_t delta[WINDOW_DIMS]);

#endif
