/* engine.h — the engine's internals, shared by conn.c (one connection's I/O) and run.c (the
 * schedule, timers and the run). Not a public interface: include only from src/bench/. Loop
 * thread only, all of it. */
#ifndef LLMLIMIT_BENCH_ENGINE_H
#define LLMLIMIT_BENCH_ENGINE_H

#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bench/options.h"
#include "bench/request.h"
#include "bench/stats.h"
#include "util/buf.h"

/* Bytes of a 429 body kept for classifying it; the limit's name comes early in the message. */
#define BENCH_BODY_KEEP 1024

/* One request, in flight on a connection or waiting to be retried. */
struct bench_slot {
	uint64_t start_ns;   /* latency origin: intended send (open loop) or first send */
	uint64_t sent_ns;    /* this attempt's send, for the timeout; queued: when queued */
	uint64_t key;        /* key index */
	uint32_t node;       /* node of the latest attempt */
	uint16_t attempts;   /* sends so far */
	uint8_t last_err;    /* enum bench_xerr of the latest failed attempt */
};

enum bench_conn_state {
	BENCH_CONN_IDLE,        /* tcp initialised, not connected: waiting for the backoff timer */
	BENCH_CONN_CONNECTING,
	BENCH_CONN_OPEN,
	BENCH_CONN_CLOSING,     /* uv_close() called; on_tcp_closed() comes next */
};

struct bench_conn {
	uv_tcp_t tcp;               /* tcp.data = conn */
	uv_connect_t creq;
	uv_write_t wreq;
	uv_timer_t backoff;         /* reconnect delay; backoff.data = conn */
	llhttp_t parser;            /* parser.data = conn */
	struct bench_engine *eng;         /* borrowed */
	struct bench_slot *ring;    /* borrowed from eng->slots: pipeline entries, oldest first */
	uint32_t head, count;
	uint32_t node, id;
	enum bench_conn_state state;
	uint32_t fails;             /* consecutive failed connects, for the backoff */
	uint64_t connect_ns;
	struct buf out;             /* requests not handed to the kernel yet */
	struct buf wbuf;            /* bytes owned by the uv_write in progress */
	bool writing;
	bool resolved;              /* opened or failed at least once (for the start) */
	bool peer_closing;          /* a response said the server closes the connection */
	bool unexpected;            /* a response arrived with nothing in flight */
	bool keep_body;
	bool dirty;                 /* on eng's dirty list: out needs flushing */
	bool ready;                 /* on its node's ready list: open with a free slot */
	struct bench_conn *dirty_next;
	struct bench_conn *ready_prev, *ready_next;
	uint16_t status;            /* of the response being parsed */
	uint16_t body_len;
	char body[BENCH_BODY_KEEP];
};

struct bench_node {
	struct sockaddr_storage addr;
	struct bench_tmpl tmpl;
	struct bench_conn *ready_head, *ready_tail;
	uint32_t open;              /* connections in BENCH_CONN_OPEN */
};

enum bench_phase { BENCH_PH_CONNECTING, BENCH_PH_RUNNING, BENCH_PH_DRAINING, BENCH_PH_DONE };

struct bench_engine {
	uv_loop_t loop;
	const struct bench_opts *o;     /* borrowed */
	struct bench_stats *st;         /* borrowed */
	struct bench_node *nodes;          /* owned, o->nnodes */
	size_t nnodes;
	struct bench_conn *conns;             /* owned */
	size_t nconns;
	struct bench_slot *slots;             /* owned, nconns * pipeline */
	struct bench_slot *rq;                /* owned ring: requests waiting to be retried */
	size_t rq_cap, rq_head, rq_len;
	llhttp_settings_t settings;
	uv_check_t check;               /* pumps once per loop iteration */
	uv_timer_t sweep;               /* timeouts */
	uv_timer_t stop_timer;          /* --duration */
	uv_timer_t progress;
	uv_timer_t tick;                /* open-loop wakeups where there is no timerfd */
	uv_idle_t idle;                 /* active: the loop polls without blocking */
	bool spinning;
	uv_signal_t sigint, sigterm;
#ifdef __linux__
	uv_poll_t tpoll;                /* open-loop wakeups at µs precision */
	int tfd;
	bool tfd_on;                    /* tpoll is polling tfd */
	bool tfd_fired;                 /* tfd is readable: re-arm or disarm it */
#endif
	uint64_t armed_ns;              /* wakeup armed for this time; 0: none */
	enum bench_phase phase;
	uint64_t created_ns;            /* when the connections were opened */
	uint64_t t0;                    /* start of sending */
	uint64_t last_done;             /* time of the last finished request */
	uint64_t next_idx;              /* index of the next new request */
	uint64_t cap;                   /* no new request at or past this index */
	uint64_t inflight;              /* slots in conn rings */
	uint64_t nslots;                /* concurrent * pipeline */
	uint64_t timeout_ns;
	double ns_per_req;              /* open loop: 1e9 / rate */
	uint64_t now_read;              /* time the current read callback started */
	uint64_t progress_last;         /* requests at the previous progress line */
	size_t rr;                      /* node to try first */
	size_t resolved;                /* connections that opened or failed once */
	struct bench_conn *dirty_head;
	int signals;
	int last_conn_err;              /* for the message when nothing connects */
	bool progress_on;
	char rbuf[64 * 1024];           /* read buffer shared by all connections */
};

/* conn.c */
/* Initialises connection id for node (handles on eng->loop) and starts connecting. 0 or a
 * negative libuv error. */
int bench__conn_init(struct bench_engine *e, struct bench_conn *c, uint32_t id, uint32_t node);
/* Appends the request in s to c and takes a slot (c must be ready). 0 or -ENOMEM. */
int bench__conn_push(struct bench_conn *c, const struct bench_slot *s);
/* Writes what is buffered on c, now or through uv_write. */
void bench__conn_flush(struct bench_conn *c);
/* Fails c: counts a connection error of `kind`, retries (or, out of retries, fails as `kind`)
 * what is in flight, the request that timed out included, and closes it; a reconnect follows
 * unless the run is over. */
void bench__conn_fail(struct bench_conn *c, enum bench_xerr kind);
/* Closes c for good at the end of the run (its slots must have been accounted for). */
void bench__conn_shutdown(struct bench_conn *c);
void bench__ready_remove(struct bench_conn *c);
enum bench_xerr bench__map_err(int uv_err);
/* The llhttp callbacks of a response parser. */
void bench__settings_init(llhttp_settings_t *s);

/* run.c */
/* Queues a copy of s (its latest attempt ended in `kind`) to be sent again, preferably to
 * another node, and counts the retry on s->node. False, counting nothing, when it has no
 * attempts left, the queue is full or the run is over: s's outcome is then final. */
bool bench__retry(struct bench_engine *e, struct bench_slot *s, enum bench_xerr kind);
/* Retries s elsewhere if it can, else counts its final failure as `kind`. */
void bench__requeue(struct bench_engine *e, struct bench_slot *s, enum bench_xerr kind);
/* A connection opened or failed for the first time (the run starts when all have). */
void bench__conn_resolved(struct bench_engine *e, struct bench_conn *c);

#endif
