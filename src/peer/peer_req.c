/* peer_req.c — the client side of the pool and message dispatch: request slots and ids,
 * peer_check/adjust/send, the batches written at the end of each loop turn, reply matching,
 * timeouts, and the handlers incoming messages go to. */
#include "peer/peer_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/metrics.h"

/* ---- request slots ---- */

static struct peer__req *req_slot(const struct peer_pool *p, uint32_t idx)
{
	return &p->chunks[idx / PEER__CHUNK][idx % PEER__CHUNK];
}

static struct peer__req *req_alloc(struct peer_pool *p)
{
	struct peer__req *r, **chunks;
	uint32_t idx, base;

	if (p->free_head == UINT32_MAX) {
		if (p->nchunks >= UINT32_MAX / PEER__CHUNK - 1)
			return NULL;
		chunks = realloc(p->chunks, (p->nchunks + 1) * sizeof(*chunks));
		if (!chunks)
			return NULL;
		p->chunks = chunks;
		if (!(chunks[p->nchunks] = calloc(PEER__CHUNK, sizeof(**chunks))))
			return NULL;
		base = (uint32_t)(p->nchunks * PEER__CHUNK);
		p->nchunks++;
		for (uint32_t i = PEER__CHUNK; i-- > 0;) {
			r = req_slot(p, base + i);
			r->next_free = p->free_head;
			p->free_head = base + i;
		}
	}
	idx = p->free_head;
	r = req_slot(p, idx);
	p->free_head = r->next_free;
	if (++r->gen == 0)
		r->gen = 1;
	r->id = (uint64_t)r->gen << 32 | idx;
	return r;
}

/* Unlinks r from its lists and returns its slot; the caller has taken cb and ctx. */
static void req_release(struct peer_pool *p, struct peer__req *r)
{
	uint32_t idx = (uint32_t)r->id;

	peer__list_del(&r->link);
	peer__list_del(&r->tlink);
	r->node->npending--;
	r->id = 0;
	r->cb = NULL;
	r->ctx = NULL;
	r->next_free = p->free_head;
	p->free_head = idx;
}

static struct peer__req *req_find(const struct peer_pool *p, uint64_t id)
{
	uint32_t idx = (uint32_t)id;
	struct peer__req *r;

	if (id == 0 || idx >= p->nchunks * PEER__CHUNK)
		return NULL;
	r = req_slot(p, idx);
	return r->id == id ? r : NULL;
}

/* Fails every request on `list` (linked by `link`). The list is first moved onto the stack, so
 * callbacks that queue new checks or cancel others see consistent lists. */
void peer__fail_list(struct peer_pool *p, struct peer__list *list, int err,
		      enum peer_failure why)
{
	struct peer__list local;

	peer__list_init(&local);
	peer__list_splice(&local, list);
	while (!peer__list_empty(&local)) {
		struct peer__req *r = peer__entry(local.next, struct peer__req, link);
		peer_check_cb cb = r->cb;
		void *ctx = r->ctx;

		req_release(p, r);
		peer__count_failure(p, why, 1);
		cb(ctx, err, NULL);
	}
}

/* ---- client side ---- */

void peer__cancel_all(struct peer_pool *p)
{
	while (!peer__list_empty(&p->deadlines)) {
		struct peer__req *r = peer__entry(p->deadlines.next, struct peer__req, tlink);
		peer_check_cb cb = r->cb;
		void *ctx = r->ctx;

		req_release(p, r);
		cb(ctx, -ECANCELED, NULL);
	}
}

/* Whether the node takes more traffic now; starts connecting if it has no connection. 0,
 * -EIO (backoff, or the dial failed at once), -ENOBUFS. */
static int node_usable(struct peer_pool *p, struct peer__node *n, size_t queued)
{
	uint32_t patience = n->resolve_patience_ms ? n->resolve_patience_ms : PEER__RESOLVE_STALE_MS;

	if (!n->conn && n->gai && uv_now(p->loop) - n->gai->started_ms >= patience) {
		/* Abandoned: its callback frees it and finds no node. */
		n->gai->node = NULL;
		uv_cancel((uv_req_t *)&n->gai->req);
		n->gai = NULL;
		n->resolve_patience_ms = patience * 2 > PEER__RESOLVE_STALE_MAX_MS ?
					 PEER__RESOLVE_STALE_MAX_MS : patience * 2;
		p->st.resolves_restarted++;
	}
	if (!n->conn && !n->gai) {
		if (n->retry_at_ms && uv_now(p->loop) < n->retry_at_ms) {
			n->wanted = true;
			return -EIO;
		}
		if (peer__connect(n) < 0) {
			peer__node_conn_lost(n, false);
			return -EIO;
		}
	}
	if (queued >= p->cfg.max_pending ||
	    (n->conn && peer__conn_unsent(n->conn) > p->cfg.max_unsent))
		return -ENOBUFS;
	return 0;
}

static void on_req_timer(uv_timer_t *t);

/* Arms the request timer for the earliest deadline (the head of the deadline list). */
static void arm_req_timer(struct peer_pool *p)
{
	const struct peer__req *r;
	uint64_t now = uv_now(p->loop);

	if (peer__list_empty(&p->deadlines)) {
		uv_timer_stop(&p->req_timer);
		return;
	}
	r = peer__entry(p->deadlines.next, struct peer__req, tlink);
	uv_timer_start(&p->req_timer, on_req_timer,
		       r->deadline_ms > now ? r->deadline_ms - now : 0, 0);
}

int peer_check(struct peer_pool *p, const char *node_id, const struct admit_request *req,
	       uint8_t hops, peer_check_cb cb, void *ctx, uint64_t *id)
{
	struct peer__node *n;
	struct peer__req *r;
	int err;

	if (p->freeing)
		return -ECANCELED;
	if (!req || !cb || req->key_len == 0 || req->key_len > WIRE_KEY_MAX)
		return -EINVAL;
	if (!node_id || !(n = peer__node_find(p, node_id)))
		return -EHOSTUNREACH;
	if ((err = node_usable(p, n, n->npending)) < 0) {
		peer__count_failure(p, err == -ENOBUFS ? PEER_FAIL_BACKLOG : PEER_FAIL_CONNECT, 1);
		return err;
	}
	if (!(r = req_alloc(p)))
		return -ENOMEM;
	r->node = n;
	r->cb = cb;
	r->ctx = ctx;
	r->start_ns = uv_hrtime();
	r->deadline_ms = uv_now(p->loop) + p->cfg.request_timeout_ms;
	memcpy(r->limit, req->limit, sizeof(r->limit));
	memcpy(r->amount, req->amount, sizeof(r->amount));
	memcpy(r->key, req->key, req->key_len);
	r->key_len = req->key_len;
	r->hops = hops;
	r->sent = false;
	peer__list_add_tail(&n->queue, &r->link);
	peer__list_add_tail(&p->deadlines, &r->tlink);
	n->npending++;
	/* Every request has the same timeout, so an armed timer is already due no later. */
	if (!uv_is_active((uv_handle_t *)&p->req_timer))
		arm_req_timer(p);
	if (n->conn && n->conn->state == PEER__READY)
		peer__node_dirty(n);
	if (id)
		*id = r->id;
	return 0;
}

int peer_cancel(struct peer_pool *p, uint64_t id)
{
	struct peer__req *r = req_find(p, id);

	if (!r)
		return -ENOENT;
	req_release(p, r);
	return 0;
}

int peer_adjust(struct peer_pool *p, const char *node_id, const void *key, size_t key_len,
		uint32_t bucket, const int64_t delta[WIRE_DIMS])
{
	struct peer__node *n;
	struct peer__adj *a;
	int err;

	if (p->freeing)
		return -ECANCELED;
	if (!key || !delta || key_len == 0 || key_len > WIRE_KEY_MAX)
		return -EINVAL;
	if (!node_id || !(n = peer__node_find(p, node_id)))
		return -EHOSTUNREACH;
	if ((err = node_usable(p, n, n->nadj)) < 0)
		return err;
	if (n->nadj == n->adj_cap) {
		size_t cap = n->adj_cap ? n->adj_cap * 2 : 64;

		if (!(a = realloc(n->adj, cap * sizeof(*a))))
			return -ENOMEM;
		n->adj = a;
		n->adj_cap = cap;
	}
	a = &n->adj[n->nadj++];
	a->bucket = bucket;
	a->key_len = (uint16_t)key_len;
	memcpy(a->key, key, key_len);
	memcpy(a->delta, delta, sizeof(a->delta));
	if (n->conn && n->conn->state == PEER__READY)
		peer__node_dirty(n);
	return 0;
}

/* Appends m, encoded, to q as a 4-byte native length and the bytes. 0 or a wire_encode error;
 * q is unchanged on failure. */
static int msgq_push(struct peer__msgq *q, const struct wire_msg *m)
{
	size_t off = q->data.len;
	uint32_t len;
	int err;

	if ((err = buf_reserve(&q->data, sizeof(len))) < 0)
		return err;
	q->data.len += sizeof(len);
	if ((err = wire_encode(m, &q->data)) < 0) {
		q->data.len = off;
		return err;
	}
	len = (uint32_t)(q->data.len - off - sizeof(len));
	memcpy(q->data.data + off, &len, sizeof(len));
	q->n++;
	return 0;
}

/* Seals every message of q onto c and empties q. 0 or a negative errno. */
static int msgq_flush(struct peer__msgq *q, struct peer__conn *c)
{
	size_t off = 0;
	uint32_t len;
	int err = 0;

	while (off < q->data.len) {
		memcpy(&len, q->data.data + off, sizeof(len));
		if ((err = peer__conn_seal(c, q->data.data + off + sizeof(len), len)) < 0)
			break;
		off += sizeof(len) + len;
	}
	buf_reset(&q->data);
	q->n = 0;
	return err;
}

int peer_send(struct peer_pool *p, const char *node_id, const struct wire_msg *m)
{
	struct peer__node *n;
	int err;

	if (p->freeing)
		return -ECANCELED;
	if (!m || m->type == WIRE_MSG_CHECK || m->type == WIRE_MSG_CHECK_REPLY ||
	    m->type == WIRE_MSG_ADJUST)
		return -EINVAL;
	if (!node_id || !(n = peer__node_find(p, node_id)))
		return -EHOSTUNREACH;
	if ((err = node_usable(p, n, 0)) < 0)
		return err;
	if (n->msgs.data.len > p->cfg.max_unsent)
		return -ENOBUFS;
	if ((err = msgq_push(&n->msgs, m)) < 0)
		return err;
	if (n->conn && n->conn->state == PEER__READY)
		peer__node_dirty(n);
	return 0;
}

/* ---- server side ---- */

int peer_pool_on(struct peer_pool *p, uint8_t type, peer_msg_cb cb, void *arg)
{
	if (type == 0 || type >= PEER__NTYPES || type == WIRE_MSG_CHECK_REPLY ||
	    type == WIRE_MSG_PING || type == WIRE_MSG_PONG)
		return -EINVAL;
	p->on[type].cb = cb;
	p->on[type].arg = cb ? arg : NULL;
	return 0;
}

static struct peer__conn *conn_find(struct peer_pool *p, uint64_t id)
{
	struct peer__list *l;

	if (p->reply_cache && p->reply_cache->id == id)
		return p->reply_cache;
	for (l = p->conns.next; l != &p->conns; l = l->next) {
		struct peer__conn *c = peer__entry(l, struct peer__conn, link);

		if (c->id == id && c->state != PEER__CLOSING) {
			p->reply_cache = c;
			return c;
		}
	}
	return NULL;
}

int peer_reply(struct peer_pool *p, uint64_t conn_id, const struct wire_check_reply *r)
{
	struct peer__conn *c = conn_find(p, conn_id);

	if (!c || c->state != PEER__READY)
		return -ENOTCONN;
	if (c->nreplies == c->reply_cap) {
		size_t cap = c->reply_cap ? c->reply_cap * 2 : 64;
		struct wire_check_reply *v = realloc(c->replies, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->replies = v;
		c->reply_cap = cap;
	}
	c->replies[c->nreplies++] = *r;
	peer__conn_dirty(c);
	return 0;
}

static void deliver_replies(struct peer__conn *c, const struct wire_msg *m)
{
	struct peer_pool *p = c->pool;
	uint64_t now_ns = uv_hrtime();

	for (size_t i = 0; i < m->n && c->state != PEER__CLOSING; i++) {
		const struct wire_check_reply *rep = &m->replies[i];
		struct peer__req *r = req_find(p, rep->id);
		peer_check_cb cb;
		void *ctx;

		/* Only the connection a check went out on may answer it. */
		if (!r || !r->sent || !c->node || r->node != c->node) {
			p->st.replies_late++;
			continue;
		}
		metrics_histogram_observe(p->m_duration, (double)(now_ns - r->start_ns) / 1e9);
		cb = r->cb;
		ctx = r->ctx;
		req_release(p, r);
		cb(ctx, 0, rep);
	}
}

void peer__dispatch(struct peer__conn *c, const struct wire_msg *m)
{
	struct peer_pool *p = c->pool;
	struct peer_from from = { .node_id = c->peer_id, .conn_id = c->id };
	struct wire_msg pong;

	switch (m->type) {
	case WIRE_MSG_CHECK_REPLY:
		deliver_replies(c, m);
		return;
	case WIRE_MSG_PING:
		memset(&pong, 0, sizeof(pong));
		pong.type = WIRE_MSG_PONG;
		pong.nonce = m->nonce;
		if (msgq_push(&c->msgs, &pong) == 0)
			peer__conn_dirty(c);
		return;
	case WIRE_MSG_PONG:
		return;
	case WIRE_MSG_CHECK:
		p->st.checks_served += m->n;
		metrics_counter_add(p->m_served, m->n);
		if (p->on[WIRE_MSG_CHECK].cb) {
			p->on[WIRE_MSG_CHECK].cb(p->on[WIRE_MSG_CHECK].arg, &from, m);
			return;
		}
		/* Nobody decides here yet: say so now rather than let the sender time out. */
		for (size_t i = 0; i < m->n; i++) {
			struct wire_check_reply busy = {
				.id = m->checks[i].id,
				.status = WIRE_STATUS_ERR_BUSY,
				.denied_dim = -1,
			};

			(void)peer_reply(p, c->id, &busy);
		}
		return;
	default:
		if (m->type < PEER__NTYPES && p->on[m->type].cb) {
			p->on[m->type].cb(p->on[m->type].arg, &from, m);
			return;
		}
		p->st.messages_unhandled++;
		return;
	}
}

void peer__conn_ready(struct peer__conn *c)
{
	struct peer_pool *p = c->pool;
	struct peer__node *n = c->node;
	char detail[2 * WIRE_NODE_ID_MAX + 32];

	if (c->outgoing && (!n || strcmp(c->peer_id, n->id) != 0)) {
		/* Someone else now listens at that address (a restarted cluster, a stale
		 * membership entry): not the node we meant to talk to. */
		snprintf(detail, sizeof(detail), "wanted=%s got=%s", n ? n->id : "-", c->peer_id);
		peer__reject(c, PEER_REJ_IDENTITY, 0, detail);
		peer__conn_close(c);
		return;
	}
	c->state = PEER__READY;
	if (!c->outgoing) {
		p->st.conns_in++;
		metrics_gauge_add(p->m_conns_in, 1);
		log_debug("msg=\"peer accepted\" node=%s addr=%s", c->peer_id, c->addr);
		return;
	}
	p->st.conns_out++;
	metrics_gauge_add(p->m_conns_out, 1);
	p->st.connects_ok++;
	metrics_counter_add(p->m_connect_ok, 1);
	n->backoff_ms = p->cfg.backoff_min_ms;
	n->retry_at_ms = 0;
	log_info("msg=\"peer connected\" node=%s addr=%s", n->id, c->addr);
	if (!peer__list_empty(&n->queue) || n->nadj || n->msgs.n)
		peer__node_dirty(n);
}

/* ---- the end of a loop turn: one frame per node (per kind) ---- */

static int flush_checks(struct peer__node *n, struct peer__conn *c)
{
	struct peer_pool *p = n->pool;
	int err;

	while (!peer__list_empty(&n->queue)) {
		struct wire_msg m = { .type = WIRE_MSG_CHECK, .checks = p->checks };
		struct peer__list *l, *first = n->queue.next, *last = first;
		size_t k = 0;

		for (l = first; l != &n->queue && k < p->batch_max; l = l->next) {
			struct peer__req *r = peer__entry(l, struct peer__req, link);
			struct wire_check *w = &p->checks[k++];

			w->id = r->id;
			w->key = r->key;
			w->key_len = r->key_len;
			memcpy(w->limit, r->limit, sizeof(w->limit));
			memcpy(w->amount, r->amount, sizeof(w->amount));
			w->hops = r->hops;
			/* Marked now; if the write fails the connection closes and fails them all. */
			r->sent = true;
			r->rx_mark = c->nrx;
			last = l;
		}
		m.n = k;
		buf_reset(&p->enc);
		if ((err = wire_encode(&m, &p->enc)) < 0 ||
		    (err = peer__conn_seal(c, p->enc.data, p->enc.len)) < 0)
			return err;
		peer__list_move_run(&n->inflight, first, last);
		p->st.checks_sent += k;
		p->st.check_frames_sent++;
		metrics_counter_add(p->m_forwarded, k);
		metrics_histogram_observe(p->m_batch, (double)k);
	}
	return 0;
}

static int flush_adjusts(struct peer__node *n, struct peer__conn *c)
{
	struct peer_pool *p = n->pool;
	size_t off = 0;
	int err = 0;

	while (off < n->nadj) {
		struct wire_msg m = { .type = WIRE_MSG_ADJUST, .adjusts = p->adjusts };
		size_t k = n->nadj - off < WIRE_ADJUST_BATCH_MAX ? n->nadj - off :
								  WIRE_ADJUST_BATCH_MAX;

		for (size_t i = 0; i < k; i++) {
			const struct peer__adj *a = &n->adj[off + i];

			p->adjusts[i].key = a->key;
			p->adjusts[i].key_len = a->key_len;
			p->adjusts[i].bucket = a->bucket;
			memcpy(p->adjusts[i].delta, a->delta, sizeof(a->delta));
		}
		m.n = k;
		buf_reset(&p->enc);
		if ((err = wire_encode(&m, &p->enc)) < 0 ||
		    (err = peer__conn_seal(c, p->enc.data, p->enc.len)) < 0)
			break;
		off += k;
		p->st.adjusts_sent += k;
		metrics_counter_add(p->m_adjusts, k);
	}
	n->nadj = 0;
	return err;
}

static void flush_node(struct peer__node *n)
{
	struct peer__conn *c = n->conn;
	int err;

	if (!c || c->state != PEER__READY)
		return;  /* peer__conn_ready() marks it again */
	if ((err = flush_checks(n, c)) < 0 || (err = flush_adjusts(n, c)) < 0 ||
	    (err = msgq_flush(&n->msgs, c)) < 0) {
		if (peer__log_ok(n->pool))
			log_error("msg=\"peer send failed\" node=%s error=\"%s\"", n->id,
				  wire_strerror(err));
		peer__conn_close(c);
		return;
	}
	peer__conn_dirty(c);
}

static void flush_conn(struct peer__conn *c)
{
	struct peer_pool *p = c->pool;
	size_t off = 0;
	int err = 0;

	if (c->state != PEER__READY)
		return;
	while (off < c->nreplies) {
		struct wire_msg m = { .type = WIRE_MSG_CHECK_REPLY, .replies = c->replies + off };

		m.n = c->nreplies - off < p->reply_batch_max ? c->nreplies - off :
							      p->reply_batch_max;
		buf_reset(&p->enc);
		if ((err = wire_encode(&m, &p->enc)) < 0 ||
		    (err = peer__conn_seal(c, p->enc.data, p->enc.len)) < 0)
			break;
		off += m.n;
		p->st.reply_frames_sent++;
	}
	c->nreplies = 0;
	if (!err)
		err = msgq_flush(&c->msgs, c);
	if (err) {
		if (peer__log_ok(p))
			log_error("msg=\"peer send failed\" addr=%s error=\"%s\"", c->addr,
				  wire_strerror(err));
		peer__conn_close(c);
		return;
	}
	peer__conn_write(c);
}

void peer__flush(struct peer_pool *p)
{
	struct peer__node *n;
	struct peer__conn *c;

	while ((n = p->dirty_nodes)) {
		p->dirty_nodes = n->dirty_next;
		n->dirty = false;
		flush_node(n);
	}
	while ((c = p->dirty_conns)) {
		p->dirty_conns = c->dirty_next;
		c->dirty = false;
		flush_conn(c);
	}
}

/* ---- timers ---- */

static void on_req_timer(uv_timer_t *t)
{
	struct peer_pool *p = t->data;
	uint64_t now = uv_now(p->loop);

	while (!peer__list_empty(&p->deadlines)) {
		struct peer__req *r = peer__entry(p->deadlines.next, struct peer__req, tlink);
		struct peer__conn *c = r->node->conn;
		peer_check_cb cb = r->cb;
		void *ctx = r->ctx;
		bool stalled;

		if (r->deadline_ms > now)
			break;
		/* Nothing at all came back since this check went out: the peer is stopped or cut
		 * off, not just slow. Dropping the connection fails its other checks now instead
		 * of one timeout at a time, and puts the node in backoff. */
		stalled = r->sent && c && c->state == PEER__READY && c->nrx == r->rx_mark;
		req_release(p, r);
		peer__count_failure(p, PEER_FAIL_TIMEOUT, 1);
		if (stalled) {
			if (peer__log_ok(p))
				log_warn("msg=\"peer connection stalled\" node=%s timeout_ms=%u",
					 c->peer_id, p->cfg.request_timeout_ms);
			peer__conn_close(c);
		}
		cb(ctx, -ETIMEDOUT, NULL);
	}
	arm_req_timer(p);
}

