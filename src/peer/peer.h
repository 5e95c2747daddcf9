/* peer.h — node-to-node connections: the transport under forwarded CHECKs, ADJUSTs and (later)
 * replication and handoff.
 *
 * A pool holds one persistent, lazily opened outgoing TCP connection per remote node, plus a
 * listener for the other nodes' connections to us. Every connection starts with the mutual
 * handshake of src/wire/seal.h (2 s deadline) and then carries sealed msgpack messages
 * (src/wire/codec.h); an outgoing connection is kept only if the handshake proves it reached the
 * node id we dialled. Requests flow on the sender's outgoing connection and their answers come
 * back on the same connection, so each pair of nodes normally has two connections, one per
 * direction; messages arriving on either kind are handled alike.
 *
 * Client side. peer_check() gives each check a pool-unique id, queues it on the node, and at the
 * end of the loop turn all checks queued for a node go out in one CHECK frame (up to 1024 each;
 * ADJUSTs likewise), with any number of frames in flight on the connection (pipelining);
 * replies are matched by id in any order. The flush runs in a uv_check handle, right after the
 * poll phase's I/O callbacks (where HTTP requests and peer frames arrive), so nothing waits
 * between "the last request of this turn was read" and "the batch is written"; a uv_prepare
 * handle flushes whatever timer, pending or idle callbacks queued, before the loop can block
 * in poll. Failures are fast and always reported once:
 *   - a check not answered within request_timeout_ms fails with -ETIMEDOUT; if nothing at all
 *     arrived on the connection since the check was sent, the connection is considered stalled
 *     (stopped process, partition) and closed, so the other checks fail at once too;
 *   - when a connection fails or closes, every check queued or in flight to that node fails at
 *     once with -EIO;
 *   - after a failure the node is in backoff (50 ms doubling to 2 s, +-20 % jitter, back to
 *     50 ms after a successful handshake): peer_check() refuses with -EIO without queueing, and
 *     the pool reconnects by itself when the backoff ends if the node was wanted meanwhile;
 *   - a node whose backlog (queued + in-flight checks, or unwritten bytes) is over its bound
 *     refuses with -ENOBUFS.
 *
 * Server side. Incoming messages are dispatched by type to handlers set with peer_pool_on():
 * the admitter handles CHECK and ADJUST; replication can add REPLICATE and HANDOFF the same way
 * without touching the transport. CHECK_REPLY, PING and PONG are the transport's own. A CHECK
 * handler answers each check with peer_reply(), now or later (a relayed check); answers queued
 * for a connection during one loop turn go out as one CHECK_REPLY frame. Checks arriving while
 * no CHECK handler is set are answered WIRE_STATUS_ERR_BUSY at once.
 *
 * Hostile input. A peer without the cluster key (handshake refused), a tampered frame, a
 * replayed frame, an oversized or malformed frame and another major protocol version each close
 * the connection, are logged (at most 10 lines a second per pool, with a count of the lines
 * suppressed) and are counted in llmlimit_peer_auth_rejections_total{reason=...}; nothing else
 * is affected. "replayed" means a frame byte-identical to one of the last 16 frames received on
 * that connection (secretstream refuses both alike; the copy of an earlier frame is recognised
 * by its Poly1305 tag); any other frame that fails to open counts as "tampered".
 *
 * Metrics (when a registry is given): llmlimit_peer_checks_forwarded_total,
 * llmlimit_peer_checks_served_total, llmlimit_peer_adjusts_forwarded_total,
 * llmlimit_peer_check_batch_size (checks per CHECK frame), llmlimit_peer_check_duration_seconds
 * (peer_check() to reply), llmlimit_peer_failures_total{reason="timeout|connect|closed|
 * backlog"} (failed checks), llmlimit_peer_connects_total{result="ok|failed"},
 * llmlimit_peer_auth_rejections_total{reason="handshake|identity|tampered|replayed|oversized|
 * malformed|version"}, llmlimit_peer_connections{direction="in|out"} (established sessions).
 *
 * Loop lifetime. The pool's listener, connections and housekeeping handles are unreferenced:
 * they never keep uv_run() going by themselves, so a node stops when its HTTP server and signal
 * handles are closed. What is in flight does keep the loop alive until it completes: checks
 * waiting for an answer (their timer), writes, connects and name lookups.
 *
 * Everything here is loop-thread only. Callbacks never run inside the call that registered
 * them: peer_check() either returns an error (no callback) or calls back later, exactly once,
 * unless peer_cancel() takes the request back first. */
#ifndef LLMLIMIT_PEER_PEER_H
#define LLMLIMIT_PEER_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "peer/admit.h"
#include "wire/codec.h"

struct uv_loop_s;
struct metrics;
struct wire_keyring;
struct peer_pool;

#define PEER_DEFAULT_REQUEST_TIMEOUT_MS 200u
#define PEER_DEFAULT_HANDSHAKE_TIMEOUT_MS 2000u
#define PEER_DEFAULT_BACKOFF_MIN_MS 50u
#define PEER_DEFAULT_BACKOFF_MAX_MS 2000u
#define PEER_DEFAULT_MAX_PENDING 65536u        /* checks queued or in flight, per node */
#define PEER_DEFAULT_MAX_INCOMING 1024u        /* incoming connections */
#define PEER_DEFAULT_MAX_UNSENT (8u << 20)     /* unwritten bytes per connection */

struct peer_config {
	const char *self_id;                 /* this node's id (copied); must be a valid node id */
	const struct wire_keyring *keyring;  /* borrowed; must outlive the pool */
	struct metrics *metrics;             /* borrowed, may be NULL */
	/* 0 selects the PEER_DEFAULT_* value for each of these. */
	uint32_t request_timeout_ms;
	uint32_t handshake_timeout_ms;       /* connect + handshake */
	uint32_t backoff_min_ms;
	uint32_t backoff_max_ms;
	uint32_t max_pending;
	uint32_t max_incoming;
	uint32_t max_unsent;
	/* Most checks (and replies) per frame; 0 = the protocol's maximum. 1 turns batching off,
	 * which exists only to measure what batching buys (scripts/bench-cluster). */
	uint32_t max_batch;
};

/* A node's connection state as peer_pool_state() reports it. */
enum peer_node_state {
	PEER_NODE_UNKNOWN = 0,  /* no address set for this id */
	PEER_NODE_IDLE,         /* known, not connected: the next use connects */
	PEER_NODE_CONNECTING,   /* resolving, connecting or in the handshake */
	PEER_NODE_READY,        /* session established */
	PEER_NODE_BACKOFF,      /* the last attempt failed: uses fail fast until retry */
};

/* Why a check failed (llmlimit_peer_failures_total{reason}). */
enum peer_failure {
	PEER_FAIL_TIMEOUT,   /* no reply within request_timeout_ms */
	PEER_FAIL_CONNECT,   /* connect, resolve or handshake failed, or the node was in backoff */
	PEER_FAIL_CLOSED,    /* the established connection closed with the check pending */
	PEER_FAIL_BACKLOG,   /* the node's backlog was full */
	PEER_FAIL_COUNT
};

/* Why a connection was refused (llmlimit_peer_auth_rejections_total{reason}). */
enum peer_reject {
	PEER_REJ_HANDSHAKE,  /* no or another cluster key, bad MAC, handshake timeout or abort */
	PEER_REJ_IDENTITY,   /* an outgoing connection reached another node id than dialled */
	PEER_REJ_TAMPERED,   /* a sealed frame failed to open */
	PEER_REJ_REPLAYED,   /* ... and repeats a recent frame of the connection */
	PEER_REJ_OVERSIZED,  /* a frame or message above its limit */
	PEER_REJ_MALFORMED,  /* a frame, hello or message that does not parse */
	PEER_REJ_VERSION,    /* another major protocol version */
	PEER_REJ_COUNT
};

/* Counters for tests and /cluster (the metrics carry the same figures). */
struct peer_stats {
	uint64_t checks_sent;        /* checks written in CHECK frames */
	uint64_t check_frames_sent;  /* CHECK frames written */
	uint64_t checks_served;      /* checks received and dispatched */
	uint64_t reply_frames_sent;  /* CHECK_REPLY frames written */
	uint64_t replies_late;       /* replies matching no pending request (timed out first) */
	uint64_t adjusts_sent;
	uint64_t adjusts_dropped;    /* queued ADJUSTs lost with their connection */
	uint64_t failures[PEER_FAIL_COUNT];
	uint64_t rejections[PEER_REJ_COUNT];
	uint64_t connects_ok, connects_failed;
	uint64_t messages_unhandled; /* well-formed messages with no handler, or unknown type */
	uint64_t resolves_restarted; /* host-name lookups abandoned as stale and started again */
	uint32_t conns_in, conns_out; /* established sessions now */
};

/* Creates a pool. Borrows loop and the config's keyring and metrics. 0, -EINVAL (bad self id,
 * NULL keyring, backoff_min > backoff_max) or -ENOMEM. Start listening with peer_pool_listen();
 * a pool that does not listen can still send. */
__attribute__((warn_unused_result))
int peer_pool_new(struct peer_pool **out, struct uv_loop_s *loop, const struct peer_config *cfg);

/* Fails every pending check with -ECANCELED (callbacks run inside this call), then closes every
 * handle; the memory goes in the close callbacks, so run the loop afterwards (uv_run until it
 * returns) before closing it. Not from inside a pool callback. NULL-safe. */
void peer_pool_free(struct peer_pool *p);

/* Binds host:port (an IPv4 or IPv6 literal; port 0 = ephemeral) and accepts peers. 0 or a
 * negative libuv error (-EADDRINUSE...). At most once per pool. */
__attribute__((warn_unused_result))
int peer_pool_listen(struct peer_pool *p, const char *host, uint16_t port);
/* The bound port, 0 when not listening. */
uint16_t peer_pool_port(const struct peer_pool *p);

/* Tells the pool where node_id listens for peers (host: a literal or a name, resolved with
 * uv_getaddrinfo at each connect). Setting the address it already has is a no-op; a new address
 * closes the node's connection (its pending checks fail with -EIO) and the next use dials the
 * new one without backoff. Our own id is accepted and ignored. 0, -EINVAL (invalid id or host,
 * port 0), -ENOMEM. Called by the membership wiring on join/alive. */
__attribute__((warn_unused_result))
int peer_pool_set_address(struct peer_pool *p, const char *node_id, const char *host,
			  uint16_t port);
/* Forgets a node (dead or left): closes its connection, fails its pending checks with -EIO and
 * drops its queued ADJUSTs and messages. Unknown ids are ignored. */
void peer_pool_forget(struct peer_pool *p, const char *node_id);

enum peer_node_state peer_pool_state(const struct peer_pool *p, const char *node_id);
void peer_pool_stats(const struct peer_pool *p, struct peer_stats *out);
/* The registry given at creation (may be NULL), so the admitter can register its series. */
struct metrics *peer_pool_metrics(const struct peer_pool *p);
/* This node's id, NUL-terminated, owned by the pool. */
const char *peer_pool_self(const struct peer_pool *p);

/* ---- client side ---- */

/* err 0 with r filled (any status, the id is ours); or, with r NULL: -ETIMEDOUT, -EIO (the
 * connection failed or closed, or the node was forgotten), -ECANCELED (the pool is being
 * freed). r is valid during the call only. */
typedef void (*peer_check_cb)(void *ctx, int err, const struct wire_check_reply *r);

/* Sends req (copied) to node_id as a CHECK that has been forwarded `hops` times already, in the
 * batch of this loop turn. On 0, cb(ctx, ...) runs later exactly once, and *id (if not NULL)
 * names the request for peer_cancel(). Otherwise cb is never called: -EHOSTUNREACH (no address
 * for node_id, or node_id is ourselves), -EIO (the node is in backoff after a failure),
 * -ENOBUFS (its backlog is full), -EINVAL (key length 0 or above WIRE_KEY_MAX), -ENOMEM,
 * -ECANCELED (called from a callback run by peer_pool_free()). */
__attribute__((warn_unused_result))
int peer_check(struct peer_pool *p, const char *node_id, const struct admit_request *req,
	       uint8_t hops, peer_check_cb cb, void *ctx, uint64_t *id);

/* Takes back a pending check: its callback will not run. 0 or -ENOENT (already answered,
 * failed or cancelled). */
int peer_cancel(struct peer_pool *p, uint64_t id);

/* Queues an ADJUST (fire and forget; batched like checks). Lost if the connection fails before
 * it is written. 0, or as peer_check: -EHOSTUNREACH, -EIO, -ENOBUFS, -EINVAL, -ENOMEM. */
__attribute__((warn_unused_result))
int peer_adjust(struct peer_pool *p, const char *node_id, const void *key, size_t key_len,
		uint32_t bucket, const int64_t delta[WIRE_DIMS]);

/* Queues any other message for node_id (REPLICATE, HANDOFF...): encoded now (m and what it
 * points to may go right after the call), sealed and written at the end of the loop turn,
 * after that turn's CHECK and ADJUST frames to the node; messages keep their order. Fire and
 * forget, like peer_adjust. 0, -EINVAL (m fails validation, or its type is CHECK, CHECK_REPLY
 * or ADJUST, which have their own calls), or as peer_adjust. */
__attribute__((warn_unused_result))
int peer_send(struct peer_pool *p, const char *node_id, const struct wire_msg *m);

/* ---- server side ---- */

/* The sender of a message being handled; valid during the handler call only. */
struct peer_from {
	const char *node_id;  /* authenticated by the handshake (as "some holder of the key") */
	uint64_t conn_id;     /* the connection it came on: where peer_reply() answers go */
};

/* Handles one decoded message (msg and the keys it points to are valid during the call). */
typedef void (*peer_msg_cb)(void *arg, const struct peer_from *from, const struct wire_msg *msg);

/* Routes incoming messages of `type` to cb(arg, ...), replacing any earlier handler; cb NULL
 * removes it (messages of that type are then counted and dropped, CHECKs answered ERR_BUSY).
 * 0, or -EINVAL for CHECK_REPLY, PING, PONG (the transport's) and unknown types. */
int peer_pool_on(struct peer_pool *p, uint8_t type, peer_msg_cb cb, void *arg);

/* Queues the answer to a check received on connection conn_id (r copied; r->id must be the
 * check's id); answers queued in one loop turn go out as one CHECK_REPLY frame. 0, or
 * -ENOTCONN when that connection has closed meanwhile (the answer is dropped: the sender has
 * already failed the check), -ENOMEM. */
int peer_reply(struct peer_pool *p, uint64_t conn_id, const struct wire_check_reply *r);

#endif
