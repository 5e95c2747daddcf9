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
};

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

/* Reconciles an admitted request (fire and forget): delta = actual - charged per dimension,
 * ticket = the verdict's bucket. */
void admit_adjust(struct admit *a, const char *key, size_t key_len, uint32_t bucket,
		  const int64_t delta[WINDOW_DIMS]);

#endif
