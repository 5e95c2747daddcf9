/* peer.c — the pool: its life cycle and handles, the nodes and their addresses, backoff and
 * reconnection, the housekeeping tick, logging and metrics. Requests, batching and dispatch are
 * peer_req.c's; sockets, the handshake and the frame stream are peer_conn.c's.
 *
 * Why both a uv_check and a uv_prepare handle flush. libuv's turn runs timers, pending
 * callbacks, idle, prepare, poll (I/O callbacks), check, close callbacks. Checks are queued
 * mostly by I/O callbacks (an HTTP request read, a peer frame to relay), so flushing in the
 * check phase writes them in the same turn, right after the reads, before the close callbacks
 * and the next turn's timers (the node's expiry tick can take milliseconds). Checks queued by a
 * timer or a pending callback (a write completion, a retry) would wait in the check phase for
 * poll to return, which may block until the next event; the prepare phase writes them before
 * poll blocks. Each is a flag test when nothing is queued, and a turn still writes at most one
 * CHECK frame per node unless both phases found work. */
#include "peer/peer_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "util/log.h"
#include "util/metrics.h"
#include "wire/keyring.h"

static const char *const fail_label[PEER_FAIL_COUNT] = {
	"timeout", "connect", "closed", "backlog",
};
static const char *const reject_label[PEER_REJ_COUNT] = {
	"handshake", "identity", "tampered", "replayed", "oversized", "malformed", "version",
};

/* ---- small helpers ---- */

static uint64_t next_rand(struct peer_pool *p)
{
	/* xorshift64: jitter only needs to decorrelate nodes, not to be unpredictable. */
	p->rng ^= p->rng << 13;
	p->rng ^= p->rng >> 7;
	p->rng ^= p->rng << 17;
	return p->rng;
}

static uint64_t id_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

static bool host_valid(const char *h)
{
	size_t len;

	if (!h)
		return false;
	len = strlen(h);
	if (len == 0 || len > WIRE_HOST_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)h[i] < 0x21 || (unsigned char)h[i] > 0x7e)
			return false;
	return true;
}

bool peer__log_ok(struct peer_pool *p)
{
	uint64_t sec = uv_now(p->loop) / 1000;

	if (sec != p->log_second) {
		if (p->log_suppressed)
			log_warn("msg=\"peer log lines suppressed\" count=%" PRIu64, p->log_suppressed);
		p->log_second = sec;
		p->log_lines = 0;
		p->log_suppressed = 0;
	}
	if (p->log_lines < PEER__LOG_PER_SEC) {
		p->log_lines++;
		return true;
	}
	p->log_suppressed++;
	return false;
}

void peer__count_failure(struct peer_pool *p, enum peer_failure why, uint64_t n)
{
	p->st.failures[why] += n;
	metrics_counter_add(p->m_fail[why], n);
}

void peer__reject(struct peer__conn *c, enum peer_reject why, int err, const char *detail)
{
	struct peer_pool *p = c->pool;
	const char *peer = c->outgoing && c->node ? c->node->id :
			   c->peer_id[0] ? c->peer_id : wire_hs_peer_id(&c->hs);

	p->st.rejections[why]++;
	metrics_counter_add(p->m_reject[why], 1);
	/* The peer id is only claimed until the handshake is done: good for a log line. */
	if (peer__log_ok(p))
		log_warn("msg=\"peer connection refused\" reason=%s direction=%s addr=%s peer=%s"
			 "%s%s%s%s%s", reject_label[why], c->outgoing ? "out" : "in",
			 c->addr[0] ? c->addr : "-", peer[0] ? peer : "-",
			 err ? " error=\"" : "", err ? wire_strerror(err) : "", err ? "\"" : "",
			 detail ? " " : "", detail ? detail : "");
}

/* ---- nodes ---- */

struct peer__node *peer__node_find(const struct peer_pool *p, const char *id)
{
	struct peer__node *n;

	for (n = p->tab[id_hash(id) & (p->tab_cap - 1)]; n; n = n->hnext)
		if (strcmp(n->id, id) == 0)
			return n;
	return NULL;
}

static int node_insert(struct peer_pool *p, struct peer__node *n)
{
	if (p->nnodes >= p->tab_cap) {
		size_t cap = p->tab_cap * 2;
		struct peer__node **tab = calloc(cap, sizeof(*tab));

		if (!tab)
			return -ENOMEM;
		for (size_t i = 0; i < p->tab_cap; i++) {
			struct peer__node *e, *next;

			for (e = p->tab[i]; e; e = next) {
				size_t b = id_hash(e->id) & (cap - 1);

				next = e->hnext;
				e->hnext = tab[b];
				tab[b] = e;
			}
		}
		free(p->tab);
		p->tab = tab;
		p->tab_cap = cap;
	}
	n->hnext = p->tab[id_hash(n->id) & (p->tab_cap - 1)];
	p->tab[id_hash(n->id) & (p->tab_cap - 1)] = n;
	p->nnodes++;
	return 0;
}

static void node_unlink(struct peer_pool *p, struct peer__node *n)
{
	struct peer__node **pp = &p->tab[id_hash(n->id) & (p->tab_cap - 1)];

	while (*pp && *pp != n)
		pp = &(*pp)->hnext;
	if (*pp) {
		*pp = n->hnext;
		p->nnodes--;
	}
}

void peer__node_dirty(struct peer__node *n)
{
	struct peer_pool *p = n->pool;

	if (n->dirty)
		return;
	n->dirty = true;
	n->dirty_next = p->dirty_nodes;
	p->dirty_nodes = n;
}

static void node_undirty(struct peer__node *n)
{
	struct peer__node **pp = &n->pool->dirty_nodes;

	if (!n->dirty)
		return;
	while (*pp && *pp != n)
		pp = &(*pp)->dirty_next;
	if (*pp)
		*pp = n->dirty_next;
	n->dirty = false;
}

void peer__conn_dirty(struct peer__conn *c)
{
	struct peer_pool *p = c->pool;

	if (c->dirty || c->state == PEER__CLOSING)
		return;
	c->dirty = true;
	c->dirty_next = p->dirty_conns;
	p->dirty_conns = c;
}

/* Drops a node's queued ADJUSTs and messages (their connection is gone). */
static void node_drop_queued(struct peer__node *n)
{
	n->pool->st.adjusts_dropped += n->nadj;
	n->nadj = 0;
	buf_reset(&n->msgs.data);
	n->msgs.n = 0;
}

void peer__node_conn_lost(struct peer__node *n, bool ready)
{
	struct peer_pool *p = n->pool;
	uint64_t d = n->backoff_ms, now = uv_now(p->loop);
	enum peer_failure why = ready ? PEER_FAIL_CLOSED : PEER_FAIL_CONNECT;

	n->conn = NULL;
	/* +-20 % jitter, so the nodes that lost the same peer do not redial it in lockstep. */
	d = d * 8 / 10 + next_rand(p) % (d * 4 / 10 + 1);
	n->retry_at_ms = now + (d ? d : 1);
	n->backoff_ms = n->backoff_ms * 2 > p->cfg.backoff_max_ms ? p->cfg.backoff_max_ms :
								     n->backoff_ms * 2;
	if (ready) {
		n->wanted = true;  /* it was in use: have it back as soon as the backoff allows */
	} else {
		p->st.connects_failed++;
		metrics_counter_add(p->m_connect_fail, 1);
	}
	node_undirty(n);
	node_drop_queued(n);
	/* Set the backoff first: a callback that retries this node fails fast. */
	peer__fail_list(p, &n->inflight, -EIO, why);
	peer__fail_list(p, &n->queue, -EIO, why);
}

/* Closes whatever connection or resolve the node has and fails its pending checks with -EIO,
 * without backoff (forget, or a new address). */
static void node_reset(struct peer__node *n)
{
	if (n->gai) {
		n->gai->node = NULL;
		uv_cancel((uv_req_t *)&n->gai->req);
		n->gai = NULL;
	}
	if (n->conn)
		peer__conn_close(n->conn);
	node_undirty(n);
	node_drop_queued(n);
	peer__fail_list(n->pool, &n->inflight, -EIO, PEER_FAIL_CLOSED);
	peer__fail_list(n->pool, &n->queue, -EIO, PEER_FAIL_CLOSED);
	n->retry_at_ms = 0;
	n->backoff_ms = n->pool->cfg.backoff_min_ms;
	n->wanted = false;
}

static void node_free(struct peer__node *n)
{
	free(n->adj);
	buf_close(&n->msgs.data);
	free(n);
}

int peer_pool_set_address(struct peer_pool *p, const char *node_id, const char *host,
			  uint16_t port)
{
	struct peer__node *n;
	int err;

	if (!node_id || !wire_node_id_valid(node_id, strlen(node_id)) || !host_valid(host) ||
	    port == 0)
		return -EINVAL;
	if (strcmp(node_id, p->self) == 0)
		return 0;
	if ((n = peer__node_find(p, node_id))) {
		if (n->port == port && strcmp(n->host, host) == 0)
			return 0;
		node_reset(n);
		strcpy(n->host, host);
		n->port = port;
		return 0;
	}
	if (!(n = calloc(1, sizeof(*n))))
		return -ENOMEM;
	n->pool = p;
	strcpy(n->id, node_id);
	strcpy(n->host, host);
	n->port = port;
	n->backoff_ms = p->cfg.backoff_min_ms;
	peer__list_init(&n->queue);
	peer__list_init(&n->inflight);
	buf_init(&n->msgs.data);
	if ((err = node_insert(p, n)) < 0) {
		node_free(n);
		return err;
	}
	return 0;
}

void peer_pool_forget(struct peer_pool *p, const char *node_id)
{
	struct peer__node *n = node_id ? peer__node_find(p, node_id) : NULL;

	if (!n)
		return;
	/* Out of the table first, so callbacks that retry it see an unknown node. */
	node_unlink(p, n);
	node_reset(n);
	node_free(n);
}

enum peer_node_state peer_pool_state(const struct peer_pool *p, const char *node_id)
{
	const struct peer__node *n = node_id ? peer__node_find(p, node_id) : NULL;

	if (!n)
		return PEER_NODE_UNKNOWN;
	if (n->gai || (n->conn && n->conn->state != PEER__READY))
		return PEER_NODE_CONNECTING;
	if (n->conn)
		return PEER_NODE_READY;
	if (n->retry_at_ms && uv_now(p->loop) < n->retry_at_ms)
		return PEER_NODE_BACKOFF;
	return PEER_NODE_IDLE;
}

void peer_pool_stats(const struct peer_pool *p, struct peer_stats *out)
{
	*out = p->st;
}

struct metrics *peer_pool_metrics(const struct peer_pool *p)
{
	return p->cfg.metrics;
}

const char *peer_pool_self(const struct peer_pool *p)
{
	return p->self;
}

static void on_check(uv_check_t *h)
{
	peer__flush(h->data);
}

static void on_prepare(uv_prepare_t *h)
{
	peer__flush(h->data);
}

static void on_tick(uv_timer_t *t)
{
	struct peer_pool *p = t->data;
	uint64_t now = uv_now(p->loop);
	struct peer__list *l;

	for (l = p->conns.next; l != &p->conns; l = l->next) {
		struct peer__conn *c = peer__entry(l, struct peer__conn, link);

		if ((c->state != PEER__CONNECTING && c->state != PEER__HANDSHAKE) ||
		    now < c->deadline_ms)
			continue;
		if (!c->outgoing)
			peer__reject(c, PEER_REJ_HANDSHAKE, 0, "handshake=timeout");
		else if (peer__log_ok(p))
			log_warn("msg=\"peer connect timed out\" node=%s addr=%s",
				 c->node ? c->node->id : "-", c->addr);
		peer__conn_close(c);
	}
	/* A node without a connection has no pending checks, so nothing calls back here and the
	 * table cannot change under the walk. */
	for (size_t i = 0; i < p->tab_cap; i++) {
		struct peer__node *n;

		for (n = p->tab[i]; n; n = n->hnext) {
			if (!n->wanted || n->conn || n->gai || now < n->retry_at_ms)
				continue;
			n->wanted = false;
			if (peer__connect(n) < 0)
				peer__node_conn_lost(n, false);
		}
	}
}

/* ---- the pool ---- */

static void register_metrics(struct peer_pool *p)
{
	static const double batch_bounds[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024 };
	static const double dur_bounds[] = { 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002,
					     0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1 };
	struct metrics *m = p->cfg.metrics;
	char labels[48];

	if (!m)
		return;
	p->m_forwarded = metrics_counter(m, "llmlimit_peer_checks_forwarded_total",
					 "Checks sent to other nodes", "");
	p->m_served = metrics_counter(m, "llmlimit_peer_checks_served_total",
				      "Checks received from other nodes", "");
	p->m_adjusts = metrics_counter(m, "llmlimit_peer_adjusts_forwarded_total",
				       "Adjustments sent to other nodes", "");
	p->m_batch = metrics_histogram(m, "llmlimit_peer_check_batch_size",
				       "Checks per CHECK frame", "", batch_bounds,
				       sizeof(batch_bounds) / sizeof(batch_bounds[0]));
	p->m_duration = metrics_histogram(m, "llmlimit_peer_check_duration_seconds",
					  "Forwarded check round trip, queueing included", "",
					  dur_bounds, sizeof(dur_bounds) / sizeof(dur_bounds[0]));
	for (int i = 0; i < PEER_FAIL_COUNT; i++) {
		snprintf(labels, sizeof(labels), "reason=\"%s\"", fail_label[i]);
		p->m_fail[i] = metrics_counter(m, "llmlimit_peer_failures_total",
					       "Forwarded checks that failed, by reason", labels);
	}
	for (int i = 0; i < PEER_REJ_COUNT; i++) {
		snprintf(labels, sizeof(labels), "reason=\"%s\"", reject_label[i]);
		p->m_reject[i] = metrics_counter(m, "llmlimit_peer_auth_rejections_total",
						 "Peer connections refused, by reason", labels);
	}
	p->m_connect_ok = metrics_counter(m, "llmlimit_peer_connects_total",
					  "Outgoing peer connection attempts", "result=\"ok\"");
	p->m_connect_fail = metrics_counter(m, "llmlimit_peer_connects_total",
					    "Outgoing peer connection attempts",
					    "result=\"failed\"");
	p->m_conns_in = metrics_gauge(m, "llmlimit_peer_connections",
				      "Established peer sessions", "direction=\"in\"");
	p->m_conns_out = metrics_gauge(m, "llmlimit_peer_connections",
				       "Established peer sessions", "direction=\"out\"");
}

static void destroy(struct peer_pool *p)
{
	for (size_t i = 0; i < p->nchunks; i++)
		free(p->chunks[i]);
	free(p->chunks);
	free(p->tab);
	free(p->checks);
	free(p->adjusts);
	free(p->rbuf);
	/* Opened frames hold API keys. */
	if (p->plain.cap)
		sodium_memzero(p->plain.data, p->plain.cap);
	buf_close(&p->plain);
	buf_close(&p->enc);
	free(p);
}

void peer__unref(struct peer_pool *p)
{
	if (--p->refs == 0 && p->freeing)
		destroy(p);
}

static void on_handle_closed(uv_handle_t *h)
{
	peer__unref(h->data);
}

int peer_pool_new(struct peer_pool **out, uv_loop_t *loop, const struct peer_config *cfg)
{
	struct peer_pool *p;

	if (!cfg || !cfg->self_id || !wire_node_id_valid(cfg->self_id, strlen(cfg->self_id)) ||
	    !cfg->keyring)
		return -EINVAL;
	if (!(p = calloc(1, sizeof(*p))))
		return -ENOMEM;
	p->loop = loop;
	p->cfg = *cfg;
	strcpy(p->self, cfg->self_id);
	p->cfg.self_id = p->self;
#define DEFAULT(f, v) (p->cfg.f = p->cfg.f ? p->cfg.f : (v))
	DEFAULT(request_timeout_ms, PEER_DEFAULT_REQUEST_TIMEOUT_MS);
	DEFAULT(handshake_timeout_ms, PEER_DEFAULT_HANDSHAKE_TIMEOUT_MS);
	DEFAULT(backoff_min_ms, PEER_DEFAULT_BACKOFF_MIN_MS);
	DEFAULT(backoff_max_ms, PEER_DEFAULT_BACKOFF_MAX_MS);
	DEFAULT(max_pending, PEER_DEFAULT_MAX_PENDING);
	DEFAULT(max_incoming, PEER_DEFAULT_MAX_INCOMING);
	DEFAULT(max_unsent, PEER_DEFAULT_MAX_UNSENT);
#undef DEFAULT
	if (p->cfg.backoff_min_ms > p->cfg.backoff_max_ms) {
		free(p);
		return -EINVAL;
	}
	p->free_head = UINT32_MAX;
	peer__list_init(&p->deadlines);
	peer__list_init(&p->conns);
	buf_init(&p->enc);
	buf_init(&p->plain);
	p->tab_cap = 16;
	p->tab = calloc(p->tab_cap, sizeof(*p->tab));
	p->batch_max = cfg->max_batch && cfg->max_batch < WIRE_CHECK_BATCH_MAX ? cfg->max_batch :
		       WIRE_CHECK_BATCH_MAX;
	p->reply_batch_max = cfg->max_batch && cfg->max_batch < WIRE_REPLY_BATCH_MAX ?
			     cfg->max_batch : WIRE_REPLY_BATCH_MAX;
	p->checks = calloc(WIRE_CHECK_BATCH_MAX, sizeof(*p->checks));
	p->adjusts = calloc(WIRE_ADJUST_BATCH_MAX, sizeof(*p->adjusts));
	p->rbuf = malloc(PEER__READ_BUF);
	if (!p->tab || !p->checks || !p->adjusts || !p->rbuf) {
		destroy(p);
		return -ENOMEM;
	}
	p->rng = uv_hrtime() ^ (uintptr_t)p ^ id_hash(p->self);
	if (!p->rng)
		p->rng = 0x9e3779b97f4a7c15ULL;
	/* Only pending requests (the request timer) keep the loop alive: see peer.h. */
	uv_timer_init(loop, &p->req_timer);
	uv_timer_init(loop, &p->tick);
	uv_check_init(loop, &p->check);
	uv_prepare_init(loop, &p->prepare);
	p->req_timer.data = p->tick.data = p->check.data = p->prepare.data = p;
	p->refs = 4;
	uv_timer_start(&p->tick, on_tick, PEER__TICK_MS, PEER__TICK_MS);
	uv_check_start(&p->check, on_check);
	uv_prepare_start(&p->prepare, on_prepare);
	uv_unref((uv_handle_t *)&p->tick);
	uv_unref((uv_handle_t *)&p->check);
	uv_unref((uv_handle_t *)&p->prepare);
	register_metrics(p);
	*out = p;
	return 0;
}

void peer_pool_free(struct peer_pool *p)
{
	struct peer__list *l;

	if (!p)
		return;
	p->freeing = true;
	peer__cancel_all(p);
	for (l = p->conns.next; l != &p->conns; l = l->next)
		peer__conn_close(peer__entry(l, struct peer__conn, link));
	for (size_t i = 0; i < p->tab_cap; i++) {
		struct peer__node *n, *next;

		for (n = p->tab[i]; n; n = next) {
			next = n->hnext;
			if (n->gai) {
				n->gai->node = NULL;
				uv_cancel((uv_req_t *)&n->gai->req);
			}
			node_free(n);
		}
		p->tab[i] = NULL;
	}
	p->nnodes = 0;
	p->dirty_nodes = NULL;
	if (p->listening)
		uv_close((uv_handle_t *)&p->listener, on_handle_closed);
	uv_close((uv_handle_t *)&p->req_timer, on_handle_closed);
	uv_close((uv_handle_t *)&p->tick, on_handle_closed);
	uv_close((uv_handle_t *)&p->check, on_handle_closed);
	uv_close((uv_handle_t *)&p->prepare, on_handle_closed);
}

int peer_pool_listen(struct peer_pool *p, const char *host, uint16_t port)
{
	if (p->listening || !host)
		return -EINVAL;
	return peer__listen(p, host, port);
}

uint16_t peer_pool_port(const struct peer_pool *p)
{
	return p->port;
}
