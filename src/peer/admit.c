/* admit.c — where a check is decided.
 *
 * Single node (cluster == NULL): every key is decided on this node's window table, the callback
 * runs inside admit_check(), and admit_adjust() reconciles on the same table.
 *
 * Cluster. The decider of a key is its owner in this node's ring view (ring_owner). This node:
 * decided here at once. Another node: forwarded with peer_check(hops = 0); the callback runs
 * when the owner's verdict comes back, with the owner's remaining/reset figures, so the HTTP
 * layer writes the headers the owner would.
 *
 * Receiving a CHECK (this node is the admitter's CHECK handler on the peer pool), with hops h:
 *   - we own the key in our view: decide here;
 *   - we do not, and h < max_hops: forward it to the owner in our view with h + 1 and relay the
 *     answer back (in a later reply batch);
 *   - we do not, and h >= max_hops: decide here anyway.
 * Why. Views disagree only while a membership change spreads (about a gossip round). A check
 * then crosses at most max_hops + 1 nodes after its origin and the last one decides, so a
 * check never loops, and over-admission is confined to keys whose ownership is contested
 * during that window: at worst each of the max_hops + 1 deciders admits up to the key's limit
 * on its own counters. With max_hops = 1 (the default), a node that has heard of a join or a
 * death before the origin did still gets the check to the right owner.
 *
 * Failover (cluster->replicas = R >= 2). When the node asked cannot decide (refused, -EIO,
 * -ETIMEDOUT, -ENOBUFS, or it answered "busy"/"internal error"/"hop limit"), the check goes at
 * once to the next node of the key's ring order, which holds the key's replicated window,
 * flagged ADMIT_HOPS_FAILOVER ("decide here"; never forwarded again), or is decided here if
 * that node is this one; up to R nodes in all. A node deciding a key imported since its last
 * decision first charges the replication gap (docs/FAILOVER.md).
 *
 * Owner unreachable (and with it every node of the replica set): cluster->owner_failure decides.
 *   LOCAL  decide on this node's own window table. It is the same table the node decides its
 *          own keys on, used as the fallback window: a key this node does not own is only there
 *          while its owner is unreachable, it never conflicts with an owned key (a key has one
 *          owner per view), and it expires 61 s after its last charge like any other. While the
 *          owner is away each node that cannot reach it enforces the limit on its own, so a
 *          partition of k sides admits at most k times the limit: bounded, and it keeps
 *          serving.
 *   DENY   the callback gets -EIO (the API answers 503): fail closed.
 *   ALLOW  a synthetic allowed verdict (limits from the request, remaining = limit - amount,
 *          nothing counted) whose bucket is ADMIT_NO_TICKET, so its later adjust is a no-op.
 * A relaying node applies the same policy when it cannot reach the owner, and answers the
 * origin with the outcome (DENY becomes "busy", which the origin maps to its own DENY).
 *
 * Adjust routing. The HTTP layer hands back only the key and the verdict's bucket, so an ADJUST
 * goes to the key's owner at adjust time, which is the node that decided unless ownership moved
 * in between. If it moved, the new owner applies the delta to its own window for the key when it
 * has one (a refund on a bucket it does not count is a no-op, -ENOENT is ignored, and a positive
 * delta is charged: the work was done). A receiver never forwards an ADJUST (the message has no
 * hop count, so it could bounce between two disagreeing views). When the owner cannot be
 * reached the delta is applied here, which is where a LOCAL fallback charge was made.
 *
 * Lifetime: the admitter registers itself as the pool's CHECK and ADJUST handler, so free it
 * before the pool (admit_free() unregisters, cancels its forwarded checks in the pool and fails
 * them with -ECANCELED). Metrics, in the pool's registry: llmlimit_peer_checks_relayed_total,
 * llmlimit_peer_checks_hop_limited_total, llmlimit_peer_owner_unreachable_total{policy}. */
#include "peer/admit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gossip/ring.h"
#include "peer/peer.h"
#include "peer/replica.h"
#include "util/log.h"
#include "util/metrics.h"

/* The bucket of a verdict nothing was charged for (owner_failure = allow): its adjust is a
 * no-op. Real tickets are uv_now() / 1000 of the owner, which is 0 only in the first second
 * of a machine's uptime. */
#define ADMIT_NO_TICKET 0u
#define ADMIT_FREE_MAX 1024  /* spare forward records kept for reuse */
#define ADMIT_BEAT_MS 50u    /* the stall detector's period */

/* A check waiting for another node: one this node's HTTP layer asked (origin) or one it relays
 * for the node that forwarded it. */
struct admit_fwd {
	struct admit_fwd *prev, *next;  /* a->pending; the free list uses next only */
	struct admit *a;
	uint64_t peer_req;              /* the pool's request id, for peer_cancel() */
	bool relay;
	admit_cb cb;                    /* origin */
	void *ctx;
	uint64_t conn_id;               /* relay: where the answer goes */
	uint64_t check_id;              /* relay: the forwarder's request id */
	uint8_t attempt;                /* index in the key's ring order of the node asked */
	bool warm;                      /* sent on by a warm-up: this node owns the key */
	struct admit_request req;
};

struct admit {
	uv_loop_t *loop;                /* borrowed */
	struct window_table *table;     /* borrowed */
	bool clustered;
	struct admit_cluster cl;        /* copied; what it points to is borrowed */
	struct admit_fwd pending;       /* sentinel of the pending list */
	struct admit_fwd *spare;
	size_t nspare;
	struct metrics_counter *m_relayed, *m_hop_limited;
	struct metrics_counter *m_unreachable[3];
	struct metrics_counter *m_failover, *m_warm, *m_joining, *m_alive_unreachable;
	struct replica *rep;            /* owned; NULL for a single node */

	/* joining and warm-up (admit.h) */
	uv_timer_t *beat;               /* owned; freed by its close callback */
	uint64_t last_beat;
	uint64_t warm_until;
	uint64_t join_deadline;
	uint64_t accused_seen;
	uint32_t stall_ms;
	bool joining;
	bool joined;                    /* joined() returned true, or there is none */
};

/* ---- verdicts ---- */

/* Decides on this node's table. A key imported since its last decision (a replica copy, a
 * handoff) is first charged the replication gap it cannot see; a charge is marked for
 * replication. */
static int decide_here(struct admit *a, const void *key, size_t len,
		       const uint64_t limit[WINDOW_DIMS], const uint64_t amount[WINDOW_DIMS],
		       struct window_verdict *v)
{
	uint64_t now = uv_now(a->loop);
	int err;

	if (a->rep)
		(void)window_table_charge_gap(a->table, key, len, replica_gap_ms(a->rep), now,
					      NULL);
	err = window_table_admit(a->table, key, len, limit, amount, now, v);
	log_debug("msg=\"decided\" key=%.*s err=%d allowed=%d used=%llu", (int)len,
		  (const char *)key, err, !err && v->allowed,
		  err ? 0ull : (unsigned long long)v->used[0]);
	if (!err && v->allowed && a->rep)
		replica_mark(a->rep, key, len);
	return err;
}

static int decide_local(struct admit *a, const struct admit_request *req,
			struct window_verdict *v)
{
	return decide_here(a, req->key, req->key_len, req->limit, req->amount, v);
}

/* replicate: false on an owner that is not deciding the key (a warm-up): its copy is not the
 * decider's, and sending it would only echo the decider's own charges back to it. */
static void apply_adjust(struct admit *a, const void *key, size_t len, uint32_t bucket,
			 const int64_t delta[WINDOW_DIMS], bool replicate)
{
	/* -ENOENT means the window already forgot the charge: nothing left to reconcile. */
	if (window_table_adjust(a->table, key, len, bucket, delta, uv_now(a->loop)) == 0 &&
	    a->rep && replicate)
		replica_mark(a->rep, key, len);
}

static void synthetic_allow(const struct admit_request *req, struct window_verdict *v)
{
	memset(v, 0, sizeof(*v));
	v->allowed = true;
	v->denied_dim = -1;
	for (int d = 0; d < WINDOW_DIMS; d++) {
		v->limit[d] = req->limit[d];
		if (req->limit[d] == WINDOW_UNLIMITED)
			v->remaining[d] = WINDOW_UNLIMITED;
		else
			v->remaining[d] = req->limit[d] > req->amount[d] ?
					  req->limit[d] - req->amount[d] : 0;
	}
	v->bucket = ADMIT_NO_TICKET;
}

static const char *owner_of(const struct admit *a, const void *key, size_t len);

/* The owner could not decide: apply --owner-failure. 0 with *v, or -EIO (deny), or a table
 * error (local). */
static int owner_failed(struct admit *a, const struct admit_request *req,
			struct window_verdict *v)
{
	enum admit_owner_failure pol = a->cl.owner_failure;
	const char *owner = owner_of(a, req->key, req->key_len);

	if (owner && a->cl.alive && a->cl.alive(a->cl.signal_arg, owner)) {
		metrics_counter_add(a->m_alive_unreachable, 1);
		return -EIO;
	}
	metrics_counter_add(a->m_unreachable[pol <= ADMIT_FAIL_ALLOW ? pol : 0], 1);
	switch (pol) {
	case ADMIT_FAIL_DENY:
		return -EIO;
	case ADMIT_FAIL_ALLOW:
		synthetic_allow(req, v);
		return 0;
	case ADMIT_FAIL_LOCAL:
	default:
		return decide_local(a, req, v);
	}
}

/* 0 with *v for a verdict; -ENOSPC, -EINVAL for the owner's own errors; -EAGAIN for answers
 * that mean "the owner could not decide" (busy, internal, hop limit, unknown status). */
static int verdict_of(const struct wire_check_reply *r, struct window_verdict *v)
{
	switch (r->status) {
	case WIRE_STATUS_ALLOWED:
	case WIRE_STATUS_DENIED:
		v->allowed = r->status == WIRE_STATUS_ALLOWED;
		v->denied_dim = r->denied_dim;
		v->never_fits = r->never_fits;
		memcpy(v->limit, r->limit, sizeof(v->limit));
		memcpy(v->used, r->used, sizeof(v->used));
		memcpy(v->remaining, r->remaining, sizeof(v->remaining));
		memcpy(v->reset_ms, r->reset_ms, sizeof(v->reset_ms));
		v->retry_after_ms = r->retry_after_ms;
		v->bucket = r->bucket;
		return 0;
	case WIRE_STATUS_ERR_FULL:
		return -ENOSPC;
	case WIRE_STATUS_ERR_INVALID:
		return -EINVAL;
	default:
		return -EAGAIN;
	}
}

static void reply_of(uint64_t id, int err, const struct window_verdict *v,
		     struct wire_check_reply *r)
{
	memset(r, 0, sizeof(*r));
	r->id = id;
	r->denied_dim = -1;
	if (err) {
		r->status = err == -ENOSPC ? WIRE_STATUS_ERR_FULL :
			    err == -EINVAL ? WIRE_STATUS_ERR_INVALID :
			    err == -ENOMEM ? WIRE_STATUS_ERR_INTERNAL : WIRE_STATUS_ERR_BUSY;
		return;
	}
	r->status = v->allowed ? WIRE_STATUS_ALLOWED : WIRE_STATUS_DENIED;
	r->denied_dim = (int8_t)v->denied_dim;
	r->never_fits = v->never_fits;
	memcpy(r->limit, v->limit, sizeof(r->limit));
	memcpy(r->used, v->used, sizeof(r->used));
	memcpy(r->remaining, v->remaining, sizeof(r->remaining));
	memcpy(r->reset_ms, v->reset_ms, sizeof(r->reset_ms));
	r->retry_after_ms = v->retry_after_ms;
	r->bucket = v->bucket;
}

/* The node deciding `key` in this node's view, or NULL for this node (also when the ring is
 * empty: a node that knows no members yet decides alone). */
static const char *owner_of(const struct admit *a, const void *key, size_t len)
{
	int idx = ring_owner(a->cl.ring, key, len);
	const char *id;

	if (idx < 0)
		return NULL;
	id = ring_id(a->cl.ring, (size_t)idx);
	return strcmp(id, a->cl.self_id) == 0 ? NULL : id;
}

/* ---- joining and warm-up ---- */

void admit_warmup(struct admit *a, const char *reason)
{
	if (!a->clustered)
		return;
	/* Keys imported from now on hold the state of whoever decided meanwhile; what arrived
	 * before this event (an earlier warm-up's imports) may predate it. */
	window_table_new_epoch(a->table);
	a->warm_until = uv_now(a->loop) + ADMIT_WARMUP_MS;
	log_info("msg=\"warm-up: checks on owned keys go to the next node of their ring order\" "
		 "reason=%s ms=%u", reason, ADMIT_WARMUP_MS);
}

bool admit_warming(const struct admit *a)
{
	/* Joined but not yet noticed (the beat or the next check will): about to warm up, so
	 * GET /cluster never shows a joined node as settled before its warm-up began. */
	return a->clustered && (uv_now(a->loop) < a->warm_until ||
				(!a->joined && a->cl.joined && a->cl.joined(a->cl.signal_arg)));
}

static uint8_t nreplicas(const struct admit *a)
{
	return a->cl.replicas ? a->cl.replicas : 1;
}

/* An owned key that the next node of its ring order decides: warming, and no state for it
 * has arrived since the warm-up began. */
static bool warm_pending(const struct admit *a, const void *key, size_t len)
{
	/* Without replicas there is no next node that decided meanwhile. */
	return nreplicas(a) > 1 && admit_warming(a) &&
	       !window_table_imported_in_epoch(a->table, key, len);
}

/* This node is one of the key's first R nodes in its view: its owner or a replica. */
static bool in_replica_set(const struct admit *a, const void *key, size_t len)
{
	size_t succ[RING_SUCCESSORS_MAX], n, i;

	n = ring_successors(a->cl.ring, key, len, nreplicas(a), succ);
	for (i = 0; i < n; i++)
		if (strcmp(ring_id(a->cl.ring, succ[i]), a->cl.self_id) == 0)
			return true;
	return false;
}

/* The node a warm-up sends key's checks to: the next of its ring order, or NULL. */
static const char *warm_target(const struct admit *a, const void *key, size_t len)
{
	size_t succ[2];

	if (ring_successors(a->cl.ring, key, len, 2, succ) < 2)
		return NULL;
	return ring_id(a->cl.ring, succ[1]);
}

bool admit_joining(const struct admit *a)
{
	return a->joining;
}

/* Reads the membership signals: the end of joining, a new accusation. A late join (past the
 * grace) warms up too: this node decided alone meanwhile, and others decided its keys. */
static void poll_signals(struct admit *a)
{
	uint64_t n;

	if (!a->joined && a->cl.joined(a->cl.signal_arg)) {
		a->joined = true;
		a->joining = false;
		admit_warmup(a, "joined");
	} else if (a->joining && uv_now(a->loop) >= a->join_deadline) {
		a->joining = false;
		log_warn("msg=\"not joined %u ms after start (no seed answered): deciding "
			 "alone\"", ADMIT_JOIN_GRACE_MS);
	}
	if (a->cl.accused && (n = a->cl.accused(a->cl.signal_arg)) != a->accused_seen) {
		a->accused_seen = n;
		admit_warmup(a, "accused");
	}
}

/* Timers run before I/O in a loop turn, so after a stall (SIGSTOP, a paused VM) this runs
 * before the requests that queued up meanwhile are read. */
static void on_beat(uv_timer_t *t)
{
	struct admit *a = t->data;
	uint64_t now = uv_now(a->loop);

	if (now - a->last_beat > ADMIT_BEAT_MS + a->stall_ms) {
		log_warn("msg=\"event loop stalled\" ms=%llu",
			 (unsigned long long)(now - a->last_beat - ADMIT_BEAT_MS));
		admit_warmup(a, "stall");
	}
	a->last_beat = now;
	poll_signals(a);
}

static void on_beat_closed(uv_handle_t *h)
{
	free(h);
}

/* ---- forward records ---- */

static struct admit_fwd *fwd_get(struct admit *a)
{
	struct admit_fwd *f = a->spare;

	if (f) {
		a->spare = f->next;
		a->nspare--;
	} else if (!(f = malloc(sizeof(*f)))) {
		return NULL;
	}
	f->a = a;
	f->peer_req = 0;
	f->warm = false;
	f->next = a->pending.next;
	f->prev = &a->pending;
	a->pending.next->prev = f;
	a->pending.next = f;
	return f;
}

static void fwd_put(struct admit *a, struct admit_fwd *f)
{
	f->prev->next = f->next;
	f->next->prev = f->prev;
	if (a->nspare >= ADMIT_FREE_MAX) {
		free(f);
		return;
	}
	f->next = a->spare;
	a->spare = f;
	a->nspare++;
}

/* The forwarded check f is over: err 0 with the verdict v, or an error. */
static void fwd_finish(struct admit_fwd *f, int err, const struct window_verdict *v)
{
	struct admit *a = f->a;
	admit_cb cb = f->cb;
	void *ctx = f->ctx;
	struct wire_check_reply out;

	if (f->relay) {
		/* -ECANCELED: the pool is going away, and with it the connection to answer on. */
		if (err != -ECANCELED) {
			reply_of(f->check_id, err, v, &out);
			(void)peer_reply(a->cl.peers, f->conn_id, &out);
		}
		fwd_put(a, f);
		return;
	}
	/* Recycled before the callback, which may check again and reuse the record. */
	fwd_put(a, f);
	cb(ctx, err, err ? NULL : v);
}

static void on_peer_reply(void *ctx, int err, const struct wire_check_reply *r);

/* The node asked could not decide (unreachable, stalled, busy): ask the next node of the key's
 * ring order at once, as a failover check, or decide here if that node is this one. It holds
 * the key's replica. true when f is taken care of, false when the replica set is exhausted. */
static bool failover_next(struct admit_fwd *f)
{
	struct admit *a = f->a;
	size_t succ[RING_SUCCESSORS_MAX], n;
	struct window_verdict v;
	int err;

	n = ring_successors(a->cl.ring, f->req.key, f->req.key_len, nreplicas(a), succ);
	while ((size_t)++f->attempt < n) {
		const char *id = ring_id(a->cl.ring, succ[f->attempt]);

		metrics_counter_add(a->m_failover, 1);
		if (strcmp(id, a->cl.self_id) == 0) {
			err = decide_local(a, &f->req, &v);
			fwd_finish(f, err, &v);
			return true;
		}
		if (peer_check(a->cl.peers, id, &f->req, ADMIT_HOPS_FAILOVER, on_peer_reply, f,
			       &f->peer_req) == 0)
			return true;
	}
	return false;
}

static bool unreachable(int err)
{
	return err == -EIO || err == -ETIMEDOUT || err == -EHOSTUNREACH || err == -ENOBUFS ||
	       err == -EAGAIN;
}

/* The check f sent is over: err 0 with the node's reply r, or a transport error. */
static void fwd_done(struct admit_fwd *f, int err, const struct wire_check_reply *r)
{
	struct window_verdict v;

	if (!err)
		err = verdict_of(r, &v);
	if (unreachable(err) && failover_next(f))
		return;
	if (err && err != -ENOSPC && err != -EINVAL && err != -ECANCELED) {
		if (f->warm)
			err = decide_local(f->a, &f->req, &v);
		else if (admit_warming(f->a))
			/* A node that just came back cannot tell a transport still reconnecting
			 * from a partition, and its own counters for the key are stale: fail this
			 * check (503, retry elsewhere) rather than apply --owner-failure. */
			err = -EIO;
		else
			err = owner_failed(f->a, &f->req, &v);
	}
	fwd_finish(f, err, &v);
}

static void on_peer_reply(void *ctx, int err, const struct wire_check_reply *r)
{
	fwd_done(ctx, err, r);
}

static void forward(struct admit_fwd *f, const char *owner, uint8_t hops)
{
	struct admit *a = f->a;
	int err;

	f->attempt = 0;
	err = peer_check(a->cl.peers, owner, &f->req, hops, on_peer_reply, f, &f->peer_req);
	if (err)
		fwd_done(f, err, NULL);
}

/* A warm-up: this node owns f's key; the next node of its ring order decides it. */
static void warm_forward(struct admit_fwd *f)
{
	struct window_verdict v;
	int err;

	f->attempt = 0;
	f->warm = true;
	log_debug("msg=\"warm-up forward\" key=%.*s", (int)f->req.key_len, f->req.key);
	metrics_counter_add(f->a->m_warm, 1);
	if (!failover_next(f)) {
		err = decide_local(f->a, &f->req, &v);
		fwd_finish(f, err, &v);
	}
}

/* ---- the owner's side: CHECK and ADJUST handlers on the pool ---- */

static void on_check_msg(void *arg, const struct peer_from *from, const struct wire_msg *m)
{
	struct admit *a = arg;

	for (size_t i = 0; i < m->n; i++) {
		const struct wire_check *c = &m->checks[i];
		struct wire_check_reply out;
		struct window_verdict v;
		const char *owner = owner_of(a, c->key, c->key_len);
		bool failover = c->hops & ADMIT_HOPS_FAILOVER;
		struct admit_fwd *f;
		int err;

		poll_signals(a);
		/* Joining: empty windows and no ring yet. A failover check for a key this node
		 * neither owns nor replicates in its view (views differ at a heal): it holds no
		 * state for the key to decide on. Either way the sender tries the next node. */
		if (a->joining || (failover && !in_replica_set(a, c->key, c->key_len))) {
			reply_of(c->id, -EAGAIN, NULL, &out);
			(void)peer_reply(a->cl.peers, from->conn_id, &out);
			continue;
		}
		if (!failover &&
		    (owner ? c->hops < a->cl.max_hops : warm_pending(a, c->key, c->key_len)) &&
		    (f = fwd_get(a))) {
			f->relay = true;
			f->conn_id = from->conn_id;
			f->check_id = c->id;
			memcpy(f->req.key, c->key, c->key_len);
			f->req.key_len = (uint16_t)c->key_len;
			memcpy(f->req.limit, c->limit, sizeof(f->req.limit));
			memcpy(f->req.amount, c->amount, sizeof(f->req.amount));
			if (!owner) {
				warm_forward(f);
				continue;
			}
			metrics_counter_add(a->m_relayed, 1);
			forward(f, owner, (uint8_t)(c->hops + 1));
			continue;
		}
		if (owner && !failover)
			metrics_counter_add(a->m_hop_limited, 1);
		/* The codec bounds key_len by WIRE_KEY_MAX == WINDOW_KEY_MAX. */
		err = decide_here(a, c->key, c->key_len, c->limit, c->amount, &v);
		/* Deciding a key this node does not own (failover, a warm-up, the hop limit):
		 * whatever the verdict, its owner gets this node's state, which may be the only
		 * full copy (a warming owner decides once state for the key arrives). */
		if (!err && owner && a->rep && !v.allowed)
			replica_mark(a->rep, c->key, c->key_len);
		reply_of(c->id, err, &v, &out);
		(void)peer_reply(a->cl.peers, from->conn_id, &out);
	}
}

static void on_adjust_msg(void *arg, const struct peer_from *from, const struct wire_msg *m)
{
	struct admit *a = arg;

	(void)from;
	for (size_t i = 0; i < m->n; i++) {
		const struct wire_adjust *j = &m->adjusts[i];

		if (j->bucket != ADMIT_NO_TICKET)
			apply_adjust(a, j->key, j->key_len, j->bucket, j->delta,
				     owner_of(a, j->key, j->key_len) ||
				     !warm_pending(a, j->key, j->key_len));
	}
}

/* ---- the contract ---- */

static void register_metrics(struct admit *a)
{
	static const char *const pol[3] = { "policy=\"local\"", "policy=\"deny\"",
					    "policy=\"allow\"" };
	struct metrics *m = peer_pool_metrics(a->cl.peers);

	if (!m)
		return;
	a->m_relayed = metrics_counter(m, "llmlimit_peer_checks_relayed_total",
				       "Forwarded checks sent on because this node's view names "
				       "another owner", "");
	a->m_hop_limited = metrics_counter(m, "llmlimit_peer_checks_hop_limited_total",
					   "Forwarded checks decided here at the hop limit though "
					   "this node's view names another owner", "");
	for (int i = 0; i < 3; i++)
		a->m_unreachable[i] = metrics_counter(m, "llmlimit_peer_owner_unreachable_total",
						      "Checks whose owner could not decide, by "
						      "--owner-failure policy applied", pol[i]);
	a->m_failover = metrics_counter(m, "llmlimit_peer_checks_failover_total",
					"Checks re-sent to the next node of the key's ring order "
					"because the node asked could not decide", "");
	a->m_warm = metrics_counter(m, "llmlimit_peer_checks_warmup_total",
				    "Checks on keys this node owns sent to the next node of their "
				    "ring order during a warm-up (after a join, an accusation or a "
				    "stall)", "");
	a->m_alive_unreachable = metrics_counter(m, "llmlimit_peer_owner_alive_unreachable_total",
						 "Checks failed (503) because the key's owner, alive "
						 "in membership, and its replicas could not be reached",
						 "");
	a->m_joining = metrics_counter(m, "llmlimit_peer_checks_joining_total",
				       "Checks refused (503) because this node had not joined its "
				       "cluster yet", "");
}

int admit_new(struct admit **out, uv_loop_t *loop, struct window_table *table,
	      const struct admit_cluster *cluster)
{
	struct admit *a;

	if (cluster && (!cluster->self_id || !cluster->ring || !cluster->peers))
		return -EINVAL;
	if (!(a = calloc(1, sizeof(*a))))
		return -ENOMEM;
	a->loop = loop;
	a->table = table;
	a->pending.next = a->pending.prev = &a->pending;
	if (cluster) {
		struct replica_config rc = {
			.self_id = cluster->self_id, .ring = cluster->ring, .peers = cluster->peers,
			.table = table, .replicas = cluster->replicas,
			.interval_ms = cluster->replicate_interval_ms,
		};
		int err = replica_new(&a->rep, loop, &rc);

		if (err < 0) {
			free(a);
			return err;
		}
		a->clustered = true;
		a->cl = *cluster;
		register_metrics(a);
		if (!(a->beat = malloc(sizeof(*a->beat)))) {
			replica_free(a->rep);
			free(a);
			return -ENOMEM;
		}
		a->stall_ms = cluster->stall_ms ? cluster->stall_ms : ADMIT_STALL_MS;
		/* The cached loop time may be old before the first uv_run: no false stall. */
		uv_update_time(loop);
		a->last_beat = uv_now(loop);
		a->join_deadline = a->last_beat + ADMIT_JOIN_GRACE_MS;
		a->joined = !cluster->joined || cluster->joined(cluster->signal_arg);
		a->joining = !a->joined;
		if (cluster->accused)
			a->accused_seen = cluster->accused(cluster->signal_arg);
		uv_timer_init(loop, a->beat);
		a->beat->data = a;
		uv_unref((uv_handle_t *)a->beat);
		uv_timer_start(a->beat, on_beat, ADMIT_BEAT_MS, ADMIT_BEAT_MS);
		(void)peer_pool_on(cluster->peers, WIRE_MSG_CHECK, on_check_msg, a);
		(void)peer_pool_on(cluster->peers, WIRE_MSG_ADJUST, on_adjust_msg, a);
	}
	*out = a;
	return 0;
}

void admit_free(struct admit *a)
{
	struct admit_fwd *f;

	if (!a)
		return;
	if (a->clustered) {
		(void)peer_pool_on(a->cl.peers, WIRE_MSG_CHECK, NULL, NULL);
		(void)peer_pool_on(a->cl.peers, WIRE_MSG_ADJUST, NULL, NULL);
	}
	replica_free(a->rep);
	if (a->beat)
		uv_close((uv_handle_t *)a->beat, on_beat_closed);
	while ((f = a->pending.next) != &a->pending) {
		admit_cb cb = f->cb;
		void *ctx = f->ctx;
		bool relay = f->relay;

		(void)peer_cancel(a->cl.peers, f->peer_req);
		f->prev->next = f->next;
		f->next->prev = f->prev;
		free(f);
		if (!relay)
			cb(ctx, -ECANCELED, NULL);
	}
	while ((f = a->spare)) {
		a->spare = f->next;
		free(f);
	}
	free(a);
}

void admit_check(struct admit *a, const struct admit_request *req, admit_cb cb, void *ctx)
{
	struct window_verdict v;
	struct admit_fwd *f;
	const char *owner;
	int err;

	if (a->clustered) {
		poll_signals(a);
		if (a->joining) {
			metrics_counter_add(a->m_joining, 1);
			cb(ctx, -EAGAIN, NULL);
			return;
		}
	}
	if (!a->clustered || (!(owner = owner_of(a, req->key, req->key_len)) &&
			      !warm_pending(a, req->key, req->key_len))) {
		err = decide_local(a, req, &v);
		cb(ctx, err, err ? NULL : &v);
		return;
	}
	if (!(f = fwd_get(a))) {
		cb(ctx, -ENOMEM, NULL);
		return;
	}
	f->relay = false;
	f->cb = cb;
	f->ctx = ctx;
	f->req = *req;
	if (!owner)
		warm_forward(f);
	else
		forward(f, owner, 0);
}

void admit_adjust(struct admit *a, const char *key, size_t key_len, uint32_t bucket,
		  const int64_t delta[WINDOW_DIMS])
{
	const char *owner;

	if (a->clustered) {
		if (bucket == ADMIT_NO_TICKET)
			return;
		owner = owner_of(a, key, key_len);
		/* A warming owner sent the check to the next node: so goes its adjustment. */
		if (!owner && warm_pending(a, key, key_len))
			owner = warm_target(a, key, key_len);
		if (owner && peer_adjust(a->cl.peers, owner, key, key_len, bucket, delta) == 0)
			return;
	}
	apply_adjust(a, key, key_len, bucket, delta, true);
}

struct replica *admit_replica(struct admit *a)
{
	return a->rep;
}
