/* peer_int.h — what the pool (peer.c: nodes, requests, batching, timers, dispatch) and the
 * connections (peer_conn.c: sockets, handshake, frames, writes) share. Not a contract: nothing
 * outside src/peer includes it.
 *
 * Ownership. The pool owns nodes, request slots and connections. A connection's memory goes in
 * its close callback; the pool's memory goes when its last handle (listener, timers,
 * check/prepare, connections) and its last uv_getaddrinfo request have called back after
 * peer_pool_free(): `refs` counts them.
 *
 * Lists are circular and doubly linked with a sentinel (the kernel's list_head), so an entry
 * can be unlinked from whichever list it is on, even one a caller spliced onto the stack while
 * it runs callbacks that may cancel other entries. */
#ifndef LLMLIMIT_PEER_PEER_INT_H
#define LLMLIMIT_PEER_PEER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "peer/peer.h"
#include "util/buf.h"
#include "wire/codec.h"
#include "wire/frame.h"
#include "wire/seal.h"

struct peer__list {
	struct peer__list *prev, *next;
};

static inline void peer__list_init(struct peer__list *l)
{
	l->prev = l->next = l;
}

static inline bool peer__list_empty(const struct peer__list *l)
{
	return l->next == l;
}

static inline void peer__list_add_tail(struct peer__list *l, struct peer__list *e)
{
	e->prev = l->prev;
	e->next = l;
	l->prev->next = e;
	l->prev = e;
}

static inline void peer__list_del(struct peer__list *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->prev = e->next = e;
}

/* Moves every entry of `from` to the end of `to`; `from` is left empty. */
static inline void peer__list_splice(struct peer__list *to, struct peer__list *from)
{
	if (peer__list_empty(from))
		return;
	from->next->prev = to->prev;
	to->prev->next = from->next;
	from->prev->next = to;
	to->prev = from->prev;
	peer__list_init(from);
}

/* Moves the run first..last (in order, all on one list) to the end of `to`, in O(1).
 *
 * Why not a loop of del + add_tail: GCC 12.2 at -O2 (loop-invariant motion with type-based
 * alias analysis) miscompiles a call-free loop that re-reads a list head while unlinking its
 * entries: it hoists the head load and moves the same entry again and again. Straight-line
 * splices and loops that call out (callbacks) are not affected. */
static inline void peer__list_move_run(struct peer__list *to, struct peer__list *first,
				       struct peer__list *last)
{
	first->prev->next = last->next;
	last->next->prev = first->prev;
	first->prev = to->prev;
	last->next = to;
	to->prev->next = first;
	to->prev = last;
}

#define peer__entry(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define PEER__TAGS 16            /* recent frame tags kept per connection to name replays */
#define PEER__TAG_BYTES 16       /* the Poly1305 tag ending every sealed frame */
#define PEER__READ_BUF 65536     /* the pool's one read buffer: reads are handled in place */
#define PEER__TICK_MS 25         /* handshake deadlines and reconnects are checked this often */
#define PEER__LOG_PER_SEC 10     /* security log lines per second per pool */
#define PEER__NTYPES 8           /* message types a handler table covers (1..7) */

/* A check from peer_check() to its reply: on its node's queue until the batch is written, then
 * on its inflight list; on the pool's deadline list throughout (every request has the same
 * timeout, so issue order is deadline order). Slots are recycled, never freed until the pool
 * goes: no allocation per check in steady state. */
struct peer__req {
	struct peer__list link;      /* node->queue or node->inflight */
	struct peer__list tlink;     /* pool->deadlines */
	uint64_t id;                 /* (generation << 32) | slot; 0 while the slot is free */
	uint32_t gen;
	uint32_t next_free;          /* free list, by slot index */
	struct peer__node *node;
	peer_check_cb cb;
	void *ctx;
	uint64_t start_ns;           /* for the duration histogram */
	uint64_t rx_mark;            /* the connection's nrx when the batch was written */
	uint64_t deadline_ms;
	uint64_t limit[WIRE_DIMS];
	uint64_t amount[WIRE_DIMS];
	uint16_t key_len;
	uint8_t hops;
	bool sent;
	uint8_t key[WIRE_KEY_MAX];
};

/* A queued ADJUST, key copied. */
struct peer__adj {
	uint32_t bucket;
	uint16_t key_len;
	int64_t delta[WIRE_DIMS];
	uint8_t key[WIRE_KEY_MAX];
};

/* Encoded messages waiting to be sealed: each is a 4-byte native length and the bytes. */
struct peer__msgq {
	struct buf data;
	size_t n;
};

struct peer__conn;

/* A remote node we may send to. */
struct peer__node {
	struct peer__node *hnext;    /* the pool's id hash chain */
	struct peer_pool *pool;
	char id[WIRE_NODE_ID_MAX + 1];
	char host[WIRE_HOST_MAX + 1];
	uint16_t port;
	struct peer__conn *conn;     /* the outgoing connection, NULL when none */
	struct peer__resolve *gai;   /* a name being resolved, NULL when none */
	uint32_t resolve_patience_ms; /* a lookup older than this is restarted (0: the minimum) */
	uint64_t retry_at_ms;        /* in backoff until then (0: not in backoff) */
	uint32_t backoff_ms;         /* the next backoff */
	bool wanted;                 /* used while in backoff: reconnect when it ends */
	bool dirty;                  /* on the pool's dirty list */
	struct peer__node *dirty_next;
	struct peer__list queue;     /* struct peer__req, not yet written */
	struct peer__list inflight;  /* struct peer__req, written, awaiting a reply */
	size_t npending;             /* queue + inflight */
	struct peer__adj *adj;       /* queued ADJUSTs */
	size_t nadj, adj_cap;
	struct peer__msgq msgs;      /* queued peer_send() messages */
};

/* A uv_getaddrinfo in flight; detached (node NULL) when its node goes first. */
struct peer__resolve {
	uv_getaddrinfo_t req;
	struct peer_pool *pool;
	struct peer__node *node;     /* NULL once abandoned (node reset, or a stale lookup) */
	uint64_t started_ms;
};

/* A lookup still running after this long is abandoned and started again when the node is
 * needed: one begun while the network was cut (Docker's resolver unreachable) waits for the
 * resolver's timeout, seconds after the network is back. The patience doubles with each
 * restart up to the maximum (a resolver that is merely slow still gets answered) and is reset
 * by an answer. */
#define PEER__RESOLVE_STALE_MS 1000u
#define PEER__RESOLVE_STALE_MAX_MS 16000u

enum peer__conn_state {
	PEER__CONNECTING,  /* outgoing, TCP connect in progress */
	PEER__HANDSHAKE,
	PEER__READY,
	PEER__CLOSING,     /* uv_close called; memory goes in the close callback */
};

struct peer__conn {
	uv_tcp_t tcp;                /* tcp.data = conn */
	uv_connect_t creq;
	uv_write_t wreq;
	struct peer_pool *pool;
	struct peer__node *node;     /* outgoing: the node dialled (NULL once detached) */
	struct peer__list link;      /* pool->conns */
	uint64_t id;                 /* pool-unique, for peer_reply() */
	bool outgoing;
	enum peer__conn_state state;
	bool writing;                /* wfly is handed to uv_write */
	bool read_paused;            /* the peer does not read our answers: stop reading its
					requests until they drain */
	bool dirty;                  /* on the pool's dirty list */
	struct peer__conn *dirty_next;
	uint64_t deadline_ms;        /* end of connect + handshake */
	uint64_t nrx;                /* frames received: a check times out on a stalled
					connection if this has not moved since it was sent */
	char peer_id[WIRE_NODE_ID_MAX + 1];  /* authenticated once READY */
	char addr[64];               /* the remote address, for logs */
	struct wire_frame_reader rd;
	struct wire_hs hs;
	struct wire_session sess;
	struct buf wq;               /* sealed frames not yet handed to the kernel */
	struct buf wfly;             /* the part uv_write is sending */
	struct wire_check_reply *replies;  /* answers queued this turn */
	size_t nreplies, reply_cap;
	struct peer__msgq msgs;      /* PONGs */
	uint8_t tags[PEER__TAGS][PEER__TAG_BYTES];
	unsigned ntags;              /* tags recorded so far (ring index = ntags % PEER__TAGS) */
};

struct peer__handler {
	peer_msg_cb cb;
	void *arg;
};

struct peer_pool {
	uv_loop_t *loop;             /* borrowed */
	struct peer_config cfg;      /* defaults filled in; cfg.self_id points at self */
	char self[WIRE_NODE_ID_MAX + 1];
	uv_tcp_t listener;
	uv_timer_t req_timer;        /* the earliest request deadline */
	uv_timer_t tick;             /* handshake deadlines, reconnects after backoff */
	uv_check_t check;            /* flush after the poll phase's I/O callbacks */
	uv_prepare_t prepare;        /* flush what other phases queued before poll can block */
	bool listening;
	uint16_t port;
	bool freeing;
	unsigned refs;               /* open handles + resolves; the pool goes at 0 once freeing */

	struct peer__node **tab;     /* node hash table, chained; cap is a power of two */
	size_t tab_cap, nnodes;

	struct peer__req **chunks;   /* request slots, PEER__CHUNK per chunk */
	size_t nchunks;
	uint32_t free_head;          /* slot index, UINT32_MAX when empty */
	struct peer__list deadlines;

	struct peer__list conns;     /* every connection not yet closed */
	uint64_t next_conn_id;
	size_t nincoming;            /* incoming connections open */
	struct peer__conn *reply_cache;  /* the last connection peer_reply() found */

	struct peer__node *dirty_nodes;
	struct peer__conn *dirty_conns;

	struct peer__handler on[PEER__NTYPES];

	struct buf enc;              /* scratch: one encoded message before sealing */
	struct buf plain;            /* scratch: one opened frame while it is handled */
	struct wire_check *checks;   /* scratch: a CHECK batch, WIRE_CHECK_BATCH_MAX */
	size_t batch_max;            /* checks per CHECK frame (cfg.max_batch or the maximum) */
	size_t reply_batch_max;      /* replies per CHECK_REPLY frame */
	struct wire_adjust *adjusts; /* scratch: an ADJUST batch, WIRE_ADJUST_BATCH_MAX */
	uint8_t *rbuf;               /* PEER__READ_BUF bytes */
	bool rbuf_busy;

	uint64_t log_second;         /* the log limiter's current second */
	unsigned log_lines;
	uint64_t log_suppressed;
	uint64_t rng;                /* xorshift state for backoff jitter */

	struct peer_stats st;
	struct metrics_counter *m_forwarded, *m_served, *m_adjusts, *m_connect_ok, *m_connect_fail;
	struct metrics_counter *m_fail[PEER_FAIL_COUNT];
	struct metrics_counter *m_reject[PEER_REJ_COUNT];
	struct metrics_histogram *m_batch, *m_duration;
	struct metrics_gauge *m_conns_in, *m_conns_out;
};

#define PEER__CHUNK 256u

/* ---- peer.c, for peer_conn.c ---- */

/* Drops one reference (a closed handle or a finished resolve); frees the pool at 0 when it is
 * being freed. */
void peer__unref(struct peer_pool *p);
/* A connection's session is up: bind it to its node, flush the node's queue. */
void peer__conn_ready(struct peer__conn *c);
/* An outgoing connection failed or closed: detach it from its node and fail the node's pending
 * checks. ready: it had an established session (reason "closed", else "connect"). */
void peer__node_conn_lost(struct peer__node *n, bool ready);
/* Handles one decoded message from an established connection. */
void peer__dispatch(struct peer__conn *c, const struct wire_msg *m);
/* Marks a connection as having queued output for the end of this loop turn. */
void peer__conn_dirty(struct peer__conn *c);
/* The node with this id, or NULL. */
struct peer__node *peer__node_find(const struct peer_pool *p, const char *id);
/* Marks a node as having queued traffic for the end of this loop turn. */
void peer__node_dirty(struct peer__node *n);
void peer__count_failure(struct peer_pool *p, enum peer_failure why, uint64_t n);
/* Counts a refused connection and logs it (rate-limited). */
void peer__reject(struct peer__conn *c, enum peer_reject why, int err, const char *detail);
/* Rate-limited warning: 1 when the caller may log now. */
bool peer__log_ok(struct peer_pool *p);

/* ---- peer_req.c, for peer.c ---- */

/* Fails every request on `list` (linked by `link`) with err, counting them under why. */
void peer__fail_list(struct peer_pool *p, struct peer__list *list, int err,
		     enum peer_failure why);
/* Fails every pending request with -ECANCELED (the pool is being freed). */
void peer__cancel_all(struct peer_pool *p);
/* Writes the batches queued this turn: one CHECK frame per node (per 1024 checks), then its
 * ADJUSTs and messages, then each connection's answers. */
void peer__flush(struct peer_pool *p);

/* ---- peer_conn.c, for peer.c and peer_req.c ---- */

/* Starts connecting to n (resolving its host first if it is not a literal). 0 or a negative
 * errno; on error n stays without a connection. */
int peer__connect(struct peer__node *n);
/* Binds and listens. */
int peer__listen(struct peer_pool *p, const char *host, uint16_t port);
/* Closes a connection (idempotent). An outgoing one is detached from its node first and the
 * node's pending checks fail (peer__node_conn_lost). */
void peer__conn_close(struct peer__conn *c);
/* (Re)starts reading; closes c on failure. */
void peer__conn_read_start(struct peer__conn *c);
/* Writes whatever is queued in c->wq. */
void peer__conn_write(struct peer__conn *c);
/* Seals plain[0..len) as the next frame on c. 0 or a negative errno (the caller closes c). */
int peer__conn_seal(struct peer__conn *c, const void *plain, size_t len);
/* Unwritten output bytes on c. */
static inline size_t peer__conn_unsent(const struct peer__conn *c)
{
	return c->wq.len + c->wfly.len;
}

#endif
