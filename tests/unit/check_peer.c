/* check_peer.c — the peer transport and cluster admission over real loopback sockets.
 *
 * Every test runs its pools, raw attackers and silent servers on one uv loop in one process
 * (Check forks per test), on ephemeral 127.0.0.1 ports. Waiting is the loop's own: a test runs
 * uv_run(UV_RUN_ONCE) until its condition holds, under a 5 s guard timer that fails the test.
 * The teardown closes everything and requires uv_loop_close() == 0, so a leaked handle fails
 * too; ASan checks the memory. */
#include <check.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gossip/ring.h"
#include "peer/admit.h"
#include "peer/peer.h"
#include "peer/replica.h"
#include "util/buf.h"
#include "util/metrics.h"
#include "window/table.h"
#include "wire/codec.h"
#include "wire/frame.h"
#include "wire/keyring.h"
#include "wire/seal.h"
#include "wire/wire.h"

#define WAIT_MS 5000

static uv_loop_t loop;
static uv_timer_t guard, pause_timer;
static bool expired, paused_done;
static struct wire_keyring *kr, *kr_other;

static void on_guard(uv_timer_t *t)
{
	(void)t;
	expired = true;
}

static void setup(void)
{
	uint8_t k[WIRE_KEY_BYTES];

	ck_assert_int_eq(wire_init(), 0);
	ck_assert_int_eq(uv_loop_init(&loop), 0);
	uv_timer_init(&loop, &guard);
	uv_timer_init(&loop, &pause_timer);
	for (int i = 0; i < WIRE_KEY_BYTES; i++)
		k[i] = (uint8_t)i;
	ck_assert_int_eq(wire_keyring_new(&kr), 0);
	ck_assert_int_eq(wire_keyring_add(kr, k, NULL), 0);
	for (int i = 0; i < WIRE_KEY_BYTES; i++)
		k[i] = (uint8_t)(0x80 + i);
	ck_assert_int_eq(wire_keyring_new(&kr_other), 0);
	ck_assert_int_eq(wire_keyring_add(kr_other, k, NULL), 0);
}

static void teardown(void)
{
	uv_close((uv_handle_t *)&guard, NULL);
	uv_close((uv_handle_t *)&pause_timer, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	wire_keyring_free(kr);
	wire_keyring_free(kr_other);
}

/* Runs the loop until *counter >= n. */
static void wait_calls(const int *counter, int n)
{
	expired = false;
	uv_timer_start(&guard, on_guard, WAIT_MS, 0);
	while (*counter < n && !expired)
		uv_run(&loop, UV_RUN_ONCE);
	uv_timer_stop(&guard);
	ck_assert_msg(!expired, "timed out waiting for %d calls (have %d)", n, *counter);
}

static void on_pause(uv_timer_t *t)
{
	(void)t;
	paused_done = true;
}

/* Lets the loop run for ms (real time on the loop, not a sleep: sockets keep working). */
static void run_for(uint64_t ms)
{
	paused_done = false;
	uv_timer_start(&pause_timer, on_pause, ms, 0);
	while (!paused_done)
		uv_run(&loop, UV_RUN_ONCE);
}

/* ---- nodes ---- */

struct tnode {
	char id[16];
	struct peer_pool *pool;
	struct metrics *metrics;
	struct window_table *table;
	struct ring *ring;
	struct admit *admit;
	struct admit_cluster cl;
};

static void node_up_cfg(struct tnode *n, const char *id, const struct wire_keyring *k,
			uint32_t timeout_ms, uint32_t max_pending, uint16_t port)
{
	struct peer_config cfg = {
		.self_id = id, .keyring = k, .request_timeout_ms = timeout_ms,
		.backoff_min_ms = 20, .backoff_max_ms = 100, .max_pending = max_pending,
	};

	memset(n, 0, sizeof(*n));
	snprintf(n->id, sizeof(n->id), "%s", id);
	ck_assert_int_eq(metrics_new(&n->metrics), 0);
	cfg.metrics = n->metrics;
	ck_assert_int_eq(peer_pool_new(&n->pool, &loop, &cfg), 0);
	ck_assert_int_eq(peer_pool_listen(n->pool, "127.0.0.1", port), 0);
	ck_assert_uint_ne(peer_pool_port(n->pool), 0);
}

static void node_up(struct tnode *n, const char *id, uint32_t timeout_ms)
{
	node_up_cfg(n, id, kr, timeout_ms, 0, 0);
}

/* Adds a window table and an admitter whose ring view is `ids`. */
static void node_admit(struct tnode *n, const char *const *ids, size_t nids,
		       enum admit_owner_failure pol)
{
	uint8_t seed[16] = { 1 };

	ck_assert_int_eq(window_table_new(&n->table, 0, seed), 0);
	ck_assert_int_eq(ring_new(&n->ring, NULL), 0);
	ck_assert_int_eq(ring_set_members(n->ring, ids, nids), 0);
	n->cl = (struct admit_cluster){ .self_id = n->id, .ring = n->ring, .peers = n->pool,
					.owner_failure = pol, .max_hops = 1 };
	ck_assert_int_eq(admit_new(&n->admit, &loop, n->table, &n->cl), 0);
}

static void node_down(struct tnode *n)
{
	admit_free(n->admit);
	peer_pool_free(n->pool);
	window_table_free(n->table);
	ring_free(n->ring);
	metrics_free(n->metrics);
	memset(n, 0, sizeof(*n));
}

static void link_to(struct tnode *from, const struct tnode *to)
{
	ck_assert_int_eq(peer_pool_set_address(from->pool, to->id, "127.0.0.1",
					       peer_pool_port(to->pool)), 0);
}

static struct peer_stats stats(const struct tnode *n)
{
	struct peer_stats s;

	peer_pool_stats(n->pool, &s);
	return s;
}

static uint64_t usage(const struct tnode *n, const char *key, int dim)
{
	uint64_t used[WINDOW_DIMS];

	window_table_usage(n->table, key, strlen(key), uv_now(&loop), used);
	return used[dim];
}

static uint64_t counter(const struct tnode *n, const char *name, const char *labels)
{
	return metrics_counter_value(metrics_counter(n->metrics, name, "", labels));
}

/* ---- results ---- */

struct res {
	int calls;
	int err;
	struct wire_check_reply rep;
	uint64_t at;
};

static void on_res(void *ctx, int err, const struct wire_check_reply *r)
{
	struct res *x = ctx;

	x->calls++;
	x->err = err;
	if (r)
		x->rep = *r;
	x->at = uv_now(&loop);
}

struct ares {
	int calls;
	int err;
	struct window_verdict v;
};

static void on_ares(void *ctx, int err, const struct window_verdict *v)
{
	struct ares *x = ctx;

	x->calls++;
	x->err = err;
	if (v)
		x->v = *v;
}

static struct admit_request mkreq(const char *key, uint64_t rpm, uint64_t in, uint64_t out)
{
	struct admit_request r;

	memset(&r, 0, sizeof(r));
	r.key_len = (uint16_t)strlen(key);
	memcpy(r.key, key, r.key_len);
	r.limit[0] = rpm;
	r.limit[1] = 10000;
	r.limit[2] = 5000;
	r.amount[0] = 1;
	r.amount[1] = in;
	r.amount[2] = out;
	return r;
}

/* ---- a TCP server that accepts and then says nothing ---- */

struct silent {
	uv_tcp_t srv;
	uv_tcp_t conns[8];
	int n;
	uint16_t port;
};

static void silent_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
	static char sink[4096];

	(void)h;
	(void)s;
	*b = uv_buf_init(sink, sizeof(sink));
}

static void silent_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	if (n < 0)
		uv_read_stop(s);
}

static void on_silent_conn(uv_stream_t *srv, int status)
{
	struct silent *s = srv->data;

	ck_assert_int_eq(status, 0);
	ck_assert_int_lt(s->n, 8);
	uv_tcp_init(&loop, &s->conns[s->n]);
	ck_assert_int_eq(uv_accept(srv, (uv_stream_t *)&s->conns[s->n]), 0);
	uv_read_start((uv_stream_t *)&s->conns[s->n], silent_alloc, silent_read);
	s->n++;
}

static void silent_up(struct silent *s)
{
	struct sockaddr_in a;
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	memset(s, 0, sizeof(*s));
	uv_ip4_addr("127.0.0.1", 0, &a);
	uv_tcp_init(&loop, &s->srv);
	s->srv.data = s;
	ck_assert_int_eq(uv_tcp_bind(&s->srv, (const struct sockaddr *)&a, 0), 0);
	ck_assert_int_eq(uv_listen((uv_stream_t *)&s->srv, 16, on_silent_conn), 0);
	uv_tcp_getsockname(&s->srv, (struct sockaddr *)&ss, &len);
	s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void silent_down(struct silent *s)
{
	for (int i = 0; i < s->n; i++)
		uv_close((uv_handle_t *)&s->conns[i], NULL);
	uv_close((uv_handle_t *)&s->srv, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);  /* the handles live on the caller's stack */
}

/* A port nothing listens on: bound, then closed. */
static uint16_t dead_port(void)
{
	struct silent s;
	uint16_t port;

	silent_up(&s);
	port = s.port;
	silent_down(&s);
	return port;
}

/* ---- transport ---- */

START_TEST(test_round_trip)
{
	static const char *const b_view[] = { "node-b" };
	struct tnode a, b;
	struct admit_request q = mkreq("k1", 10, 100, 50);
	struct res r = { 0 }, r2 = { 0 };
	uint64_t id = 0;

	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	node_admit(&b, b_view, 1, ADMIT_FAIL_DENY);
	link_to(&a, &b);
	ck_assert_int_eq(peer_pool_state(a.pool, "node-b"), PEER_NODE_IDLE);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r, &id), 0);
	ck_assert_int_eq(r.calls, 0);  /* never inside the call */
	ck_assert_int_eq(peer_pool_state(a.pool, "node-b"), PEER_NODE_CONNECTING);
	wait_calls(&r.calls, 1);
	ck_assert_int_eq(r.err, 0);
	ck_assert_uint_eq(r.rep.id, id);
	ck_assert_uint_eq(r.rep.status, WIRE_STATUS_ALLOWED);
	ck_assert_int_eq(r.rep.denied_dim, -1);
	ck_assert_uint_eq(r.rep.limit[0], 10);
	ck_assert_uint_eq(r.rep.limit[1], 10000);
	ck_assert_uint_eq(r.rep.used[0], 0);
	ck_assert_uint_eq(r.rep.remaining[0], 9);
	ck_assert_uint_eq(r.rep.remaining[1], 9900);
	ck_assert_uint_eq(r.rep.remaining[2], 4950);
	ck_assert_uint_gt(r.rep.reset_ms[0], 59000);
	ck_assert_uint_eq(r.rep.bucket, uv_now(&loop) / 1000);
	ck_assert_uint_eq(usage(&b, "k1", 1), 100);
	ck_assert_int_eq(peer_pool_state(a.pool, "node-b"), PEER_NODE_READY);
	ck_assert_uint_eq(stats(&a).conns_out, 1);
	ck_assert_uint_eq(stats(&b).conns_in, 1);

	/* Denied on the owner: the reason and retry time travel back intact. */
	q.amount[1] = 9901;
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r2, NULL), 0);
	wait_calls(&r2.calls, 1);
	ck_assert_int_eq(r2.err, 0);
	ck_assert_uint_eq(r2.rep.status, WIRE_STATUS_DENIED);
	ck_assert_int_eq(r2.rep.denied_dim, 1);
	ck_assert(!r2.rep.never_fits);
	ck_assert_uint_eq(r2.rep.used[1], 100);
	ck_assert_uint_gt(r2.rep.retry_after_ms, 59000);
	ck_assert_uint_eq(counter(&a, "llmlimit_peer_checks_forwarded_total", ""), 2);
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_checks_served_total", ""), 2);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_batching)
{
	static const char *const b_view[] = { "node-b" };
	struct tnode a, b;
	struct admit_request q = mkreq("batch", 1000, 1, 1);
	struct res warm = { 0 }, r[100];
	struct peer_stats sa, sb;
	struct buf text;
	int done = 0;

	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	node_admit(&b, b_view, 1, ADMIT_FAIL_DENY);
	link_to(&a, &b);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &warm, NULL), 0);
	wait_calls(&warm.calls, 1);
	sa = stats(&a);
	sb = stats(&b);
	/* 100 checks in one loop turn: one CHECK frame out, one CHECK_REPLY frame back. */
	memset(r, 0, sizeof(r));
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r[i], NULL), 0);
	while (done < 100) {
		wait_calls(&r[done].calls, 1);
		ck_assert_int_eq(r[done].err, 0);
		ck_assert_uint_eq(r[done].rep.status, WIRE_STATUS_ALLOWED);
		done++;
	}
	ck_assert_uint_eq(stats(&a).check_frames_sent - sa.check_frames_sent, 1);
	ck_assert_uint_eq(stats(&a).checks_sent - sa.checks_sent, 100);
	ck_assert_uint_eq(stats(&b).reply_frames_sent - sb.reply_frames_sent, 1);
	ck_assert_uint_eq(usage(&b, "batch", 0), 101);
	buf_init(&text);
	ck_assert_int_eq(metrics_render(a.metrics, &text), 0);
	ck_assert_ptr_nonnull(strstr(text.data, "llmlimit_peer_check_batch_size_count 2\n"));
	ck_assert_ptr_nonnull(strstr(text.data, "llmlimit_peer_check_batch_size_sum 101\n"));
	ck_assert_ptr_nonnull(strstr(text.data, "llmlimit_peer_check_duration_seconds_count 101"));
	ck_assert_ptr_nonnull(strstr(text.data, "llmlimit_peer_connections{direction=\"out\"} 1"));
	buf_close(&text);
	node_down(&a);
	node_down(&b);
}
END_TEST

/* A CHECK handler that holds every check until it has seen two frames, then answers them all
 * in reverse order, echoing amount[0] in remaining[0]. */
struct holder {
	struct peer_pool *pool;
	int frames;
	size_t n;
	uint64_t conn[64], id[64], tag[64];
};

static void hold_checks(void *arg, const struct peer_from *from, const struct wire_msg *m)
{
	struct holder *h = arg;

	ck_assert_str_eq(from->node_id, "node-a");
	for (size_t i = 0; i < m->n && h->n < 64; i++, h->n++) {
		h->conn[h->n] = from->conn_id;
		h->id[h->n] = m->checks[i].id;
		h->tag[h->n] = m->checks[i].amount[0];
	}
	if (++h->frames < 2)
		return;
	while (h->n > 0) {
		struct wire_check_reply rep = { .denied_dim = -1 };

		h->n--;
		rep.id = h->id[h->n];
		rep.remaining[0] = h->tag[h->n];
		ck_assert_int_eq(peer_reply(h->pool, h->conn[h->n], &rep), 0);
	}
}

START_TEST(test_pipelining)
{
	struct tnode a, b;
	struct holder h = { 0 };
	struct res r[20];
	struct admit_request q = mkreq("pipe", 100, 1, 1);

	node_up(&a, "node-a", 2000);
	node_up(&b, "node-b", 2000);
	h.pool = b.pool;
	ck_assert_int_eq(peer_pool_on(b.pool, WIRE_MSG_CHECK, hold_checks, &h), 0);
	link_to(&a, &b);
	memset(r, 0, sizeof(r));
	for (int i = 0; i < 10; i++) {
		q.amount[0] = (uint64_t)i;
		ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r[i], NULL), 0);
	}
	wait_calls(&h.frames, 1);
	ck_assert_int_eq(r[0].calls, 0);
	/* The first batch is unanswered; a second goes out on the same connection. */
	for (int i = 10; i < 20; i++) {
		q.amount[0] = (uint64_t)i;
		ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r[i], NULL), 0);
	}
	for (int i = 0; i < 20; i++) {
		wait_calls(&r[i].calls, 1);
		ck_assert_int_eq(r[i].err, 0);
		ck_assert_uint_eq(r[i].rep.remaining[0], (uint64_t)i);  /* matched by id */
	}
	ck_assert_int_eq(h.frames, 2);
	ck_assert_uint_eq(stats(&a).connects_ok, 1);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_timeout_silent_server)
{
	struct tnode a;
	struct silent s;
	struct admit_request q = mkreq("t", 10, 1, 1);
	struct res r = { 0 };
	uint64_t t0;

	node_up(&a, "node-a", 100);
	silent_up(&s);
	ck_assert_int_eq(peer_pool_set_address(a.pool, "node-s", "127.0.0.1", s.port), 0);
	t0 = uv_now(&loop);
	ck_assert_int_eq(peer_check(a.pool, "node-s", &q, 0, on_res, &r, NULL), 0);
	wait_calls(&r.calls, 1);
	ck_assert_int_eq(r.err, -ETIMEDOUT);
	ck_assert_uint_ge(r.at - t0, 100);
	ck_assert_uint_lt(r.at - t0, 1000);
	ck_assert_uint_eq(stats(&a).failures[PEER_FAIL_TIMEOUT], 1);
	ck_assert_uint_eq(counter(&a, "llmlimit_peer_failures_total", "reason=\"timeout\""), 1);
	node_down(&a);
	silent_down(&s);
}
END_TEST

static void drop_checks(void *arg, const struct peer_from *from, const struct wire_msg *m)
{
	int *seen = arg;

	(void)from;
	*seen += (int)m->n;
}

START_TEST(test_stalled_connection_fails_fast)
{
	struct tnode a, b;
	struct admit_request q = mkreq("stall", 10, 1, 1);
	struct res r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
	int seen = 0;

	node_up(&a, "node-a", 150);
	node_up(&b, "node-b", 150);
	ck_assert_int_eq(peer_pool_on(b.pool, WIRE_MSG_CHECK, drop_checks, &seen), 0);
	link_to(&a, &b);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r1, NULL), 0);
	wait_calls(&seen, 1);
	run_for(50);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r2, NULL), 0);
	wait_calls(&r1.calls, 1);
	/* The first check timed out with nothing heard since it went out: the connection is
	 * dropped and the second check, 50 ms younger, fails with it at once. */
	ck_assert_int_eq(r1.err, -ETIMEDOUT);
	ck_assert_int_eq(r2.calls, 1);
	ck_assert_int_eq(r2.err, -EIO);
	ck_assert_int_eq(peer_pool_state(a.pool, "node-b"), PEER_NODE_BACKOFF);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r3, NULL), -EIO);
	ck_assert_uint_eq(stats(&a).failures[PEER_FAIL_CLOSED], 1);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_refused_fails_fast)
{
	static const char *const b_view[] = { "node-b" };
	struct tnode a, b;
	struct admit_request q = mkreq("r", 10, 1, 1);
	struct res r = { 0 }, r2 = { 0 }, r3 = { 0 };
	uint64_t t0;

	node_up(&a, "node-a", 1000);
	ck_assert_int_eq(peer_pool_set_address(a.pool, "node-b", "127.0.0.1", dead_port()), 0);
	t0 = uv_now(&loop);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r, NULL), 0);
	wait_calls(&r.calls, 1);
	ck_assert_int_eq(r.err, -EIO);
	ck_assert_uint_lt(r.at - t0, 500);  /* not the 1 s timeout */
	/* In backoff: refused without queueing, no callback. */
	ck_assert_int_eq(peer_pool_state(a.pool, "node-b"), PEER_NODE_BACKOFF);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r2, NULL), -EIO);
	ck_assert_int_eq(peer_check(a.pool, "node-nope", &q, 0, on_res, &r2, NULL), -EHOSTUNREACH);
	ck_assert_int_eq(peer_check(a.pool, "node-a", &q, 0, on_res, &r2, NULL), -EHOSTUNREACH);
	run_for(10);
	ck_assert_int_eq(r2.calls, 0);
	ck_assert_uint_eq(stats(&a).connects_failed, 1);
	ck_assert_uint_eq(stats(&a).failures[PEER_FAIL_CONNECT], 2);
	/* The node shows up at another address: dialled at once, backoff forgotten. */
	node_up(&b, "node-b", 1000);
	node_admit(&b, b_view, 1, ADMIT_FAIL_DENY);
	link_to(&a, &b);
	ck_assert_int_eq(peer_pool_state(a.pool, "node-b"), PEER_NODE_IDLE);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r3, NULL), 0);
	wait_calls(&r3.calls, 1);
	ck_assert_int_eq(r3.err, 0);
	ck_assert_uint_eq(r3.rep.status, WIRE_STATUS_ALLOWED);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_reconnect_after_restart)
{
	static const char *const b_view[] = { "node-b" };
	struct tnode a, b;
	struct admit_request q = mkreq("re", 100, 1, 1);
	struct res r = { 0 }, r2;
	int seen = 0, tries = 0;
	uint16_t port;
	uint64_t t0;

	node_up(&a, "node-a", 2000);
	node_up(&b, "node-b", 2000);
	ck_assert_int_eq(peer_pool_on(b.pool, WIRE_MSG_CHECK, drop_checks, &seen), 0);
	link_to(&a, &b);
	port = peer_pool_port(b.pool);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r, NULL), 0);
	wait_calls(&seen, 1);
	/* B dies with the check unanswered: A fails it on the connection loss, not after 2 s. */
	t0 = uv_now(&loop);
	node_down(&b);
	wait_calls(&r.calls, 1);
	ck_assert_int_eq(r.err, -EIO);
	ck_assert_uint_lt(r.at - t0, 500);
	/* B comes back on the same port; A redials once its backoff ends. */
	node_up_cfg(&b, "node-b", kr, 2000, 0, port);
	node_admit(&b, b_view, 1, ADMIT_FAIL_DENY);
	do {
		memset(&r2, 0, sizeof(r2));
		if (peer_check(a.pool, "node-b", &q, 0, on_res, &r2, NULL) == 0)
			wait_calls(&r2.calls, 1);
		else
			run_for(10);
		ck_assert_int_lt(++tries, 300);
	} while (r2.calls == 0 || r2.err != 0);
	ck_assert_uint_eq(r2.rep.status, WIRE_STATUS_ALLOWED);
	ck_assert_uint_eq(stats(&a).connects_ok, 2);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_wrong_key_refused_both_sides)
{
	static const char *const view[] = { "node-b" };
	struct tnode a, b, c;
	struct admit_request q = mkreq("wk", 10, 1, 1);
	struct res r = { 0 }, rc = { 0 };

	node_up_cfg(&a, "node-a", kr_other, 1000, 0, 0);  /* another cluster's key */
	node_up(&b, "node-b", 1000);
	node_up(&c, "node-c", 1000);
	node_admit(&b, view, 1, ADMIT_FAIL_DENY);
	link_to(&a, &b);
	link_to(&c, &b);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r, NULL), 0);
	wait_calls(&r.calls, 1);
	ck_assert_int_eq(r.err, -EIO);
	run_for(20);
	ck_assert_uint_eq(stats(&b).rejections[PEER_REJ_HANDSHAKE], 1);
	ck_assert_uint_eq(stats(&a).rejections[PEER_REJ_HANDSHAKE], 1);
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_auth_rejections_total",
				  "reason=\"handshake\""), 1);
	ck_assert_uint_eq(stats(&b).conns_in, 0);
	/* B keeps serving nodes that hold the key. */
	ck_assert_int_eq(peer_check(c.pool, "node-b", &q, 0, on_res, &rc, NULL), 0);
	wait_calls(&rc.calls, 1);
	ck_assert_int_eq(rc.err, 0);
	ck_assert_uint_eq(rc.rep.status, WIRE_STATUS_ALLOWED);
	node_down(&a);
	node_down(&b);
	node_down(&c);
}
END_TEST

START_TEST(test_identity_mismatch)
{
	struct tnode a, b;
	struct admit_request q = mkreq("id", 10, 1, 1);
	struct res r = { 0 };

	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	/* A believes node-x listens where node-b does. */
	ck_assert_int_eq(peer_pool_set_address(a.pool, "node-x", "127.0.0.1",
					       peer_pool_port(b.pool)), 0);
	ck_assert_int_eq(peer_check(a.pool, "node-x", &q, 0, on_res, &r, NULL), 0);
	wait_calls(&r.calls, 1);
	ck_assert_int_eq(r.err, -EIO);
	ck_assert_uint_eq(stats(&a).rejections[PEER_REJ_IDENTITY], 1);
	ck_assert_uint_eq(stats(&a).conns_out, 0);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_backlog_and_forget)
{
	struct tnode a;
	struct silent s;
	struct admit_request q = mkreq("bl", 10, 1, 1);
	struct res r[5];

	node_up_cfg(&a, "node-a", kr, 2000, 4, 0);
	silent_up(&s);
	ck_assert_int_eq(peer_pool_set_address(a.pool, "node-s", "127.0.0.1", s.port), 0);
	memset(r, 0, sizeof(r));
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(peer_check(a.pool, "node-s", &q, 0, on_res, &r[i], NULL), 0);
	ck_assert_int_eq(peer_check(a.pool, "node-s", &q, 0, on_res, &r[4], NULL), -ENOBUFS);
	ck_assert_uint_eq(stats(&a).failures[PEER_FAIL_BACKLOG], 1);
	run_for(20);
	/* Forgetting a node fails what it still owes at once. */
	peer_pool_forget(a.pool, "node-s");
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(r[i].calls, 1);
		ck_assert_int_eq(r[i].err, -EIO);
	}
	ck_assert_int_eq(r[4].calls, 0);
	ck_assert_int_eq(peer_pool_state(a.pool, "node-s"), PEER_NODE_UNKNOWN);
	ck_assert_int_eq(peer_check(a.pool, "node-s", &q, 0, on_res, &r[4], NULL), -EHOSTUNREACH);
	node_down(&a);
	silent_down(&s);
}
END_TEST

START_TEST(test_no_handler_busy_and_names)
{
	struct tnode a, b;
	struct admit_request q = mkreq("nh", 10, 1, 1);
	struct res r = { 0 };
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
	char host[64];

	/* B listens on whatever "localhost" resolves to first, so A's uv_getaddrinfo path
	 * reaches it whatever this machine's resolver prefers. */
	ck_assert_int_eq(getaddrinfo("localhost", NULL, &hints, &res), 0);
	if (res->ai_family == AF_INET6)
		snprintf(host, sizeof(host), "::1");
	else
		snprintf(host, sizeof(host), "127.0.0.1");
	freeaddrinfo(res);
	node_up(&a, "node-a", 1000);
	{
		struct peer_config cfg = { .self_id = "node-b", .keyring = kr };

		memset(&b, 0, sizeof(b));
		snprintf(b.id, sizeof(b.id), "node-b");
		ck_assert_int_eq(peer_pool_new(&b.pool, &loop, &cfg), 0);
		ck_assert_int_eq(peer_pool_listen(b.pool, host, 0), 0);
	}
	ck_assert_int_eq(peer_pool_set_address(a.pool, "node-b", "localhost",
					       peer_pool_port(b.pool)), 0);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r, NULL), 0);
	wait_calls(&r.calls, 1);
	ck_assert_int_eq(r.err, 0);
	ck_assert_uint_eq(r.rep.status, WIRE_STATUS_ERR_BUSY);  /* nobody decides on B */
	ck_assert_int_eq(peer_pool_on(b.pool, WIRE_MSG_CHECK_REPLY, drop_checks, NULL), -EINVAL);
	ck_assert_int_eq(peer_pool_on(b.pool, WIRE_MSG_PING, drop_checks, NULL), -EINVAL);
	ck_assert_int_eq(peer_pool_set_address(a.pool, "bad id", "127.0.0.1", 1), -EINVAL);
	ck_assert_int_eq(peer_pool_set_address(a.pool, "node-c", "", 1), -EINVAL);
	ck_assert_int_eq(peer_pool_set_address(a.pool, "node-c", "127.0.0.1", 0), -EINVAL);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_many_nodes)
{
	struct tnode a;
	char id[16];

	node_up(&a, "node-a", 1000);
	/* Past the node table's first two growths. */
	for (int i = 0; i < 70; i++) {
		snprintf(id, sizeof(id), "n-%d", i);
		ck_assert_int_eq(peer_pool_set_address(a.pool, id, "127.0.0.1", (uint16_t)(1000 + i)),
				 0);
	}
	for (int i = 0; i < 70; i++) {
		snprintf(id, sizeof(id), "n-%d", i);
		ck_assert_int_eq(peer_pool_state(a.pool, id), PEER_NODE_IDLE);
	}
	for (int i = 0; i < 70; i += 2) {
		snprintf(id, sizeof(id), "n-%d", i);
		peer_pool_forget(a.pool, id);
	}
	for (int i = 0; i < 70; i++) {
		snprintf(id, sizeof(id), "n-%d", i);
		ck_assert_int_eq(peer_pool_state(a.pool, id),
				 i % 2 ? PEER_NODE_IDLE : PEER_NODE_UNKNOWN);
	}
	/* Our own id is accepted and never dialled. */
	ck_assert_int_eq(peer_pool_set_address(a.pool, "node-a", "127.0.0.1", 1), 0);
	ck_assert_int_eq(peer_pool_state(a.pool, "node-a"), PEER_NODE_UNKNOWN);
	ck_assert_str_eq(peer_pool_self(a.pool), "node-a");
	node_down(&a);
}
END_TEST

/* A REPLICATE handler: the extension point issue 4 needs. */
struct got_state {
	int calls;
	char from[WIRE_NODE_ID_MAX + 1];
	size_t key_len;
	uint8_t key[16];
	uint64_t now_ms;
};

static void on_replicate(void *arg, const struct peer_from *from, const struct wire_msg *m)
{
	struct got_state *g = arg;

	g->calls++;
	snprintf(g->from, sizeof(g->from), "%s", from->node_id);
	ck_assert_uint_eq(m->n, 1);
	g->key_len = m->states[0].key_len;
	memcpy(g->key, m->states[0].key, g->key_len < 16 ? g->key_len : 16);
	g->now_ms = m->now_ms;
}

START_TEST(test_generic_message)
{
	struct tnode a, b;
	struct got_state g = { 0 };
	struct wire_key_state st;
	struct wire_msg m;

	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	ck_assert_int_eq(peer_pool_on(b.pool, WIRE_MSG_REPLICATE, on_replicate, &g), 0);
	link_to(&a, &b);
	memset(&st, 0, sizeof(st));
	st.key = (const uint8_t *)"rk";
	st.key_len = 2;
	st.flags = WIRE_STATE_FULL;
	st.head = 100;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_MSG_REPLICATE;
	m.n = 1;
	m.states = &st;
	m.now_ms = 100500;
	ck_assert_int_eq(peer_send(a.pool, "node-b", &m), 0);
	m.type = WIRE_MSG_CHECK;
	ck_assert_int_eq(peer_send(a.pool, "node-b", &m), -EINVAL);
	wait_calls(&g.calls, 1);
	ck_assert_str_eq(g.from, "node-a");
	ck_assert_uint_eq(g.key_len, 2);
	ck_assert_int_eq(memcmp(g.key, "rk", 2), 0);
	ck_assert_uint_eq(g.now_ms, 100500);
	node_down(&a);
	node_down(&b);
}
END_TEST

/* ---- hostile input from a raw client ---- */

enum attack {
	ATK_OVERSIZED_HELLO, ATK_ZERO_FRAME, ATK_GARBAGE_HELLO, ATK_VERSION_HELLO,
	ATK_TAMPERED, ATK_REPLAYED, ATK_GARBAGE_MSG, ATK_OVERSIZED_FRAME, ATK_VERSION_MSG,
	ATK_COUNT
};

static const enum peer_reject expected_reject[ATK_COUNT] = {
	PEER_REJ_OVERSIZED, PEER_REJ_MALFORMED, PEER_REJ_MALFORMED, PEER_REJ_VERSION,
	PEER_REJ_TAMPERED, PEER_REJ_REPLAYED, PEER_REJ_MALFORMED, PEER_REJ_OVERSIZED,
	PEER_REJ_VERSION,
};

struct raw {
	uv_tcp_t tcp;
	uv_connect_t creq;
	enum attack atk;
	struct wire_hs hs;
	struct wire_session sess;
	struct wire_frame_reader rd;
	struct buf out;
	bool after_hs;
	int closed;
};

struct raw_write {
	uv_write_t w;  /* first: the callback frees the struct through it */
	char data[];
};

static void raw_written(uv_write_t *w, int status)
{
	(void)status;
	free(w);
}

static void raw_send(struct raw *x, const void *p, size_t n)
{
	struct raw_write *w = malloc(sizeof(*w) + n);
	uv_buf_t b;

	ck_assert_ptr_nonnull(w);
	memcpy(w->data, p, n);
	b = uv_buf_init(w->data, (unsigned)n);
	ck_assert_int_eq(uv_write(&w->w, (uv_stream_t *)&x->tcp, &b, 1, raw_written), 0);
}

static void raw_seal(struct raw *x, const void *msg, size_t len, struct buf *b)
{
	ck_assert_int_eq(wire_seal(&x->sess, msg, len, b), 0);
}

static void raw_attack(struct raw *x)
{
	static const uint8_t ping[] = { 0x93, 0x01, 0x06, 0x2a };      /* [1, PING, 42] */
	static const uint8_t ping_v2[] = { 0x93, 0x02, 0x06, 0x2a };   /* major 2 */
	static const uint8_t garbage[20] = { 0xc1, 0xc1, 0xc1, 0xc1 }; /* 0xc1: never msgpack */
	uint8_t hdr[WIRE_FRAME_HDR] = { 0 };
	struct buf b;
	size_t len;

	buf_init(&b);
	switch (x->atk) {
	case ATK_OVERSIZED_HELLO:
		hdr[1] = 0x10;  /* 1 MiB: far above the 512-byte hello limit */
		ck_assert_int_eq(buf_append(&b, hdr, sizeof(hdr)), 0);
		break;
	case ATK_ZERO_FRAME:
		ck_assert_int_eq(buf_append(&b, hdr, sizeof(hdr)), 0);
		break;
	case ATK_GARBAGE_HELLO:
		ck_assert_int_eq(wire_frame_append(&b, garbage, sizeof(garbage)), 0);
		break;
	case ATK_VERSION_HELLO:
		ck_assert_int_eq(wire_hs_init(&x->hs, kr, "raw-peer", true, &b), 0);
		/* frame header, fixarray(8), str8 "llmlimit", then the major */
		ck_assert_uint_eq((uint8_t)b.data[WIRE_FRAME_HDR + 1 + 9], WIRE_VERSION_MAJOR);
		b.data[WIRE_FRAME_HDR + 1 + 9] = 2;
		break;
	case ATK_TAMPERED:
		raw_seal(x, ping, sizeof(ping), &b);
		b.data[WIRE_FRAME_HDR + 2] ^= 0x01;
		break;
	case ATK_REPLAYED:
		raw_seal(x, ping, sizeof(ping), &b);
		len = b.len;
		ck_assert_int_eq(buf_append(&b, b.data, len), 0);  /* the same frame twice */
		break;
	case ATK_GARBAGE_MSG:
		raw_seal(x, garbage, 3, &b);
		break;
	case ATK_OVERSIZED_FRAME:
		hdr[1] = 0x20;  /* 2 MiB, above the 1 MiB session limit */
		ck_assert_int_eq(buf_append(&b, hdr, sizeof(hdr)), 0);
		break;
	case ATK_VERSION_MSG:
		raw_seal(x, ping_v2, sizeof(ping_v2), &b);
		break;
	default:
		ck_abort();
	}
	raw_send(x, b.data, b.len);
	buf_close(&b);
}

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
	static char in[65536];

	(void)h;
	(void)s;
	*b = uv_buf_init(in, sizeof(in));
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct raw *x = s->data;
	const uint8_t *d = (const uint8_t *)b->base, *f;
	size_t len = n > 0 ? (size_t)n : 0, used, flen;
	int rc;

	if (n < 0) {
		x->closed++;
		uv_read_stop(s);
		return;
	}
	while (len > 0 && !x->after_hs) {
		rc = wire_frame_read(&x->rd, d, len, &used, &f, &flen);
		ck_assert_int_ge(rc, 0);
		d += used;
		len -= used;
		if (rc == 0)
			break;
		rc = wire_hs_step(&x->hs, f, flen, &x->out, &x->sess);
		ck_assert_int_ge(rc, 0);
		if (x->out.len)
			raw_send(x, x->out.data, x->out.len);
		buf_reset(&x->out);
		if (rc == 1) {
			x->after_hs = true;
			raw_attack(x);
		}
	}
}

static bool needs_handshake(enum attack a)
{
	return a >= ATK_TAMPERED;
}

static void raw_connected(uv_connect_t *c, int status)
{
	struct raw *x = c->data;

	ck_assert_int_eq(status, 0);
	uv_read_start((uv_stream_t *)&x->tcp, raw_alloc, raw_read);
	if (x->atk == ATK_COUNT)
		return;  /* the silent client: connects and says nothing */
	if (!needs_handshake(x->atk)) {
		raw_attack(x);
		return;
	}
	ck_assert_int_eq(wire_hs_init(&x->hs, kr, "raw-peer", true, &x->out), 0);
	raw_send(x, x->out.data, x->out.len);
	buf_reset(&x->out);
}

static void raw_up(struct raw *x, uint16_t port, enum attack atk)
{
	struct sockaddr_in a;

	memset(x, 0, sizeof(*x));
	x->atk = atk;
	buf_init(&x->out);
	wire_frame_reader_init(&x->rd, WIRE_HELLO_MAX);
	uv_ip4_addr("127.0.0.1", port, &a);
	uv_tcp_init(&loop, &x->tcp);
	x->tcp.data = x;
	x->creq.data = x;
	ck_assert_int_eq(uv_tcp_connect(&x->creq, &x->tcp, (const struct sockaddr *)&a,
					raw_connected), 0);
}

static void raw_down(struct raw *x)
{
	wire_hs_close(&x->hs);
	wire_session_close(&x->sess);
	wire_frame_reader_close(&x->rd);
	buf_close(&x->out);
	uv_close((uv_handle_t *)&x->tcp, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);
}

START_TEST(test_hostile_input)
{
	static const char *const view[] = { "node-b" };
	struct tnode a, b;
	struct admit_request q = mkreq("ok", 100, 1, 1);
	struct res r = { 0 }, r2 = { 0 };
	struct raw x;
	enum attack atk = (enum attack)_i;
	uint64_t before;

	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	node_admit(&b, view, 1, ADMIT_FAIL_DENY);
	link_to(&a, &b);
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r, NULL), 0);
	wait_calls(&r.calls, 1);
	ck_assert_int_eq(r.err, 0);
	before = stats(&b).rejections[expected_reject[atk]];
	raw_up(&x, peer_pool_port(b.pool), atk);
	wait_calls(&x.closed, 1);  /* B hung up on the attacker */
	ck_assert_uint_eq(stats(&b).rejections[expected_reject[atk]], before + 1);
	raw_down(&x);
	/* ...and kept serving A on its existing connection. */
	ck_assert_int_eq(peer_check(a.pool, "node-b", &q, 0, on_res, &r2, NULL), 0);
	wait_calls(&r2.calls, 1);
	ck_assert_int_eq(r2.err, 0);
	ck_assert_uint_eq(r2.rep.status, WIRE_STATUS_ALLOWED);
	ck_assert_uint_eq(stats(&a).connects_ok, 1);
	ck_assert_uint_eq(stats(&b).conns_in, 1);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_handshake_timeouts)
{
	struct peer_config ca = { .self_id = "node-a", .keyring = kr, .request_timeout_ms = 1000,
				  .handshake_timeout_ms = 150 };
	struct peer_config cb = { .self_id = "node-b", .keyring = kr, .handshake_timeout_ms = 150 };
	struct peer_pool *a, *b;
	struct admit_request q = mkreq("hs", 10, 1, 1);
	struct res r = { 0 };
	struct peer_stats st;
	struct silent s;
	struct raw x;
	uint64_t t0;

	ck_assert_int_eq(peer_pool_new(&a, &loop, &ca), 0);
	ck_assert_int_eq(peer_pool_new(&b, &loop, &cb), 0);
	ck_assert_int_eq(peer_pool_listen(b, "127.0.0.1", 0), 0);
	/* Out: a server that accepts and never answers the hello. */
	silent_up(&s);
	ck_assert_int_eq(peer_pool_set_address(a, "node-s", "127.0.0.1", s.port), 0);
	t0 = uv_now(&loop);
	ck_assert_int_eq(peer_check(a, "node-s", &q, 0, on_res, &r, NULL), 0);
	wait_calls(&r.calls, 1);
	ck_assert_int_eq(r.err, -EIO);
	ck_assert_uint_ge(r.at - t0, 150);
	ck_assert_uint_lt(r.at - t0, 600);
	peer_pool_stats(a, &st);
	ck_assert_uint_eq(st.connects_failed, 1);
	/* In: a client that connects and never sends a hello. */
	raw_up(&x, peer_pool_port(b), ATK_COUNT);
	wait_calls(&x.closed, 1);
	peer_pool_stats(b, &st);
	ck_assert_uint_eq(st.rejections[PEER_REJ_HANDSHAKE], 1);
	raw_down(&x);
	silent_down(&s);
	peer_pool_free(a);
	peer_pool_free(b);
}
END_TEST

/* ---- cluster admission ---- */

static bool owns(const char *const *ids, size_t n, const char *key, const char *want)
{
	struct ring *r;
	bool yes;

	ck_assert_int_eq(ring_new(&r, NULL), 0);
	ck_assert_int_eq(ring_set_members(r, ids, n), 0);
	yes = strcmp(ring_id(r, (size_t)ring_owner(r, key, strlen(key))), want) == 0;
	ring_free(r);
	return yes;
}

static const char *const view_ab[] = { "node-a", "node-b" };
static const char *const view_bcx[] = { "node-b", "node-c", "node-x" };
static const char *const view_cd[] = { "node-c", "node-d" };

/* A key that node-a's view {a, b} gives to node-b. */
static void key_of_b(char *key, size_t size)
{
	for (int i = 0;; i++) {
		snprintf(key, size, "key-%d", i);
		if (owns(view_ab, 2, key, "node-b"))
			return;
	}
}

START_TEST(test_hop_forwarding)
{
	struct tnode a, b, c;
	struct admit_request q;
	struct ares v1 = { 0 }, v2 = { 0 }, v3 = { 0 };
	char k1[32] = "", k2[32] = "", k3[32] = "";

	/* A thinks B owns all three keys. B thinks C owns k1 and k2 (C agrees on k1; C's view
	 * names D for k2), and that x, which nobody can reach, owns k3. */
	for (int i = 0; !k1[0] || !k2[0] || !k3[0]; i++) {
		char k[32];

		snprintf(k, sizeof(k), "hop-%d", i);
		if (!owns(view_ab, 2, k, "node-b"))
			continue;
		if (owns(view_bcx, 3, k, "node-x"))
			snprintf(k3, sizeof(k3), "%s", k);
		else if (owns(view_bcx, 3, k, "node-c") && owns(view_cd, 2, k, "node-c"))
			snprintf(k1, sizeof(k1), "%s", k);
		else if (owns(view_bcx, 3, k, "node-c"))
			snprintf(k2, sizeof(k2), "%s", k);
	}
	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	node_up(&c, "node-c", 1000);
	node_admit(&a, view_ab, 2, ADMIT_FAIL_DENY);
	node_admit(&b, view_bcx, 3, ADMIT_FAIL_LOCAL);
	node_admit(&c, view_cd, 2, ADMIT_FAIL_DENY);
	link_to(&a, &b);
	link_to(&b, &c);

	q = mkreq(k1, 10, 5, 5);
	admit_check(a.admit, &q, on_ares, &v1);
	wait_calls(&v1.calls, 1);
	ck_assert_int_eq(v1.err, 0);
	ck_assert(v1.v.allowed);
	ck_assert_uint_eq(v1.v.remaining[0], 9);  /* C's figures, relayed by B */
	ck_assert_uint_eq(usage(&c, k1, 1), 5);
	ck_assert_uint_eq(usage(&b, k1, 1), 0);
	ck_assert_uint_eq(usage(&a, k1, 1), 0);
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_checks_relayed_total", ""), 1);

	/* k2: C is not the owner in its own view either, but the hop limit stops it there. */
	q = mkreq(k2, 10, 5, 5);
	admit_check(a.admit, &q, on_ares, &v2);
	wait_calls(&v2.calls, 1);
	ck_assert_int_eq(v2.err, 0);
	ck_assert(v2.v.allowed);
	ck_assert_uint_eq(usage(&c, k2, 1), 5);
	ck_assert_uint_eq(counter(&c, "llmlimit_peer_checks_hop_limited_total", ""), 1);

	/* k3: B cannot reach x, so B's policy (local) decides and A gets B's verdict. */
	q = mkreq(k3, 10, 5, 5);
	admit_check(a.admit, &q, on_ares, &v3);
	wait_calls(&v3.calls, 1);
	ck_assert_int_eq(v3.err, 0);
	ck_assert(v3.v.allowed);
	ck_assert_uint_eq(usage(&b, k3, 1), 5);
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_owner_unreachable_total",
				  "policy=\"local\""), 1);
	node_down(&a);
	node_down(&b);
	node_down(&c);
}
END_TEST

START_TEST(test_owner_failure_policy)
{
	static const char *const label[] = { "policy=\"local\"", "policy=\"deny\"",
					     "policy=\"allow\"" };
	enum admit_owner_failure pol = (enum admit_owner_failure)_i;
	struct tnode a;
	struct admit_request q;
	struct ares v[2];
	char key[32];
	int64_t delta[WINDOW_DIMS] = { 0, 0, 7 };

	key_of_b(key, sizeof(key));
	q = mkreq(key, 10, 5, 5);
	node_up(&a, "node-a", 1000);
	node_admit(&a, view_ab, 2, pol);
	ck_assert_int_eq(peer_pool_set_address(a.pool, "node-b", "127.0.0.1", dead_port()), 0);
	memset(v, 0, sizeof(v));
	/* The first check waits for the refused connect; the second finds B in backoff. */
	admit_check(a.admit, &q, on_ares, &v[0]);
	ck_assert_int_eq(v[0].calls, 0);
	wait_calls(&v[0].calls, 1);
	admit_check(a.admit, &q, on_ares, &v[1]);
	ck_assert_int_eq(v[1].calls, 1);
	for (int i = 0; i < 2; i++) {
		if (pol == ADMIT_FAIL_DENY) {
			ck_assert_int_eq(v[i].err, -EIO);
			continue;
		}
		ck_assert_int_eq(v[i].err, 0);
		ck_assert(v[i].v.allowed);
	}
	if (pol == ADMIT_FAIL_LOCAL) {
		ck_assert_uint_eq(usage(&a, key, 0), 2);  /* A's own fallback window */
		ck_assert_uint_eq(v[1].v.remaining[0], 8);
		/* B still unreachable: the adjust lands where the charge was made. */
		admit_adjust(a.admit, key, strlen(key), v[1].v.bucket, delta);
		ck_assert_uint_eq(usage(&a, key, 2), 17);
	} else if (pol == ADMIT_FAIL_ALLOW) {
		ck_assert_uint_eq(usage(&a, key, 0), 0);  /* nothing counted anywhere */
		ck_assert_uint_eq(v[0].v.bucket, 0);
		ck_assert_uint_eq(v[0].v.remaining[0], 9);
		ck_assert_uint_eq(v[0].v.limit[1], 10000);
		admit_adjust(a.admit, key, strlen(key), v[0].v.bucket, delta);
		ck_assert_uint_eq(usage(&a, key, 2), 0);
	} else {
		ck_assert_uint_eq(usage(&a, key, 0), 0);
	}
	ck_assert_uint_eq(counter(&a, "llmlimit_peer_owner_unreachable_total", label[pol]), 2);
	node_down(&a);
}
END_TEST

START_TEST(test_admit_routes_and_adjusts)
{
	struct tnode a, b;
	struct admit_request q;
	struct ares v = { 0 }, local = { 0 }, own = { 0 };
	char key[32], mine[32];
	int64_t refund[WINDOW_DIMS] = { 0, 0, -60 };
	int polls = 0;

	key_of_b(key, sizeof(key));
	for (int i = 0;; i++) {
		snprintf(mine, sizeof(mine), "mine-%d", i);
		if (owns(view_ab, 2, mine, "node-a"))
			break;
	}
	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	node_admit(&a, view_ab, 2, ADMIT_FAIL_DENY);
	node_admit(&b, view_ab, 2, ADMIT_FAIL_DENY);
	link_to(&a, &b);
	/* A's own key: decided inside the call. */
	q = mkreq(mine, 10, 1, 1);
	admit_check(a.admit, &q, on_ares, &local);
	ck_assert_int_eq(local.calls, 1);
	ck_assert_uint_eq(usage(&a, mine, 0), 1);
	/* B's key: decided on B, reconciled on B. */
	q = mkreq(key, 10, 5, 100);
	admit_check(a.admit, &q, on_ares, &v);
	ck_assert_int_eq(v.calls, 0);
	wait_calls(&v.calls, 1);
	ck_assert_int_eq(v.err, 0);
	ck_assert(v.v.allowed);
	ck_assert_uint_eq(usage(&b, key, 2), 100);
	admit_adjust(a.admit, key, strlen(key), v.v.bucket, refund);
	while (usage(&b, key, 2) != 40) {
		run_for(5);
		ck_assert_int_lt(++polls, 400);
	}
	ck_assert_uint_eq(stats(&a).adjusts_sent, 1);
	ck_assert_uint_eq(usage(&a, key, 2), 0);
	/* B, the owner, sees the same window the forwarded check charged. */
	admit_check(b.admit, &q, on_ares, &own);
	ck_assert_int_eq(own.calls, 1);
	ck_assert_uint_eq(own.v.used[2], 40);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_admit_free_cancels)
{
	struct tnode a, b;
	struct admit_request q;
	struct ares v = { 0 };
	char key[32];
	int seen = 0;

	key_of_b(key, sizeof(key));
	q = mkreq(key, 10, 1, 1);
	node_up(&a, "node-a", 2000);
	node_up(&b, "node-b", 2000);
	node_admit(&a, view_ab, 2, ADMIT_FAIL_LOCAL);
	ck_assert_int_eq(peer_pool_on(b.pool, WIRE_MSG_CHECK, drop_checks, &seen), 0);
	link_to(&a, &b);
	admit_check(a.admit, &q, on_ares, &v);
	wait_calls(&seen, 1);
	ck_assert_int_eq(v.calls, 0);
	admit_free(a.admit);
	a.admit = NULL;
	ck_assert_int_eq(v.calls, 1);
	ck_assert_int_eq(v.err, -ECANCELED);
	run_for(20);
	ck_assert_int_eq(v.calls, 1);  /* and never again */
	node_down(&a);
	node_down(&b);
}
END_TEST

/* ---- replication, failover and handoff (src/peer/replica.c) ---- */

static void node_admit_rep(struct tnode *n, const char *const *ids, size_t nids)
{
	uint8_t seed[16] = { 1 };

	ck_assert_int_eq(window_table_new(&n->table, 0, seed), 0);
	ck_assert_int_eq(ring_new(&n->ring, NULL), 0);
	ck_assert_int_eq(ring_set_members(n->ring, ids, nids), 0);
	n->cl = (struct admit_cluster){ .self_id = n->id, .ring = n->ring, .peers = n->pool,
					.owner_failure = ADMIT_FAIL_DENY, .max_hops = 1,
					.replicas = 2, .replicate_interval_ms = 20 };
	ck_assert_int_eq(admit_new(&n->admit, &loop, n->table, &n->cl), 0);
}

static const char *const view_abc[] = { "node-a", "node-b", "node-c" };

/* A key whose ring order over {a, b, c} starts with `first`, `second`. */
static void key_ordered(char *key, size_t size, const char *first, const char *second)
{
	struct ring *r;
	size_t succ[2];

	ck_assert_int_eq(ring_new(&r, NULL), 0);
	ck_assert_int_eq(ring_set_members(r, view_abc, 3), 0);
	for (int i = 0;; i++) {
		snprintf(key, size, "rkey-%d", i);
		ck_assert_uint_eq(ring_successors(r, key, strlen(key), 2, succ), 2);
		if (!strcmp(ring_id(r, succ[0]), first) && !strcmp(ring_id(r, succ[1]), second))
			break;
	}
	ring_free(r);
}

START_TEST(test_replicate_then_failover)
{
	struct tnode a, b, c;
	struct admit_request q;
	struct ares v[6];
	struct replica_stats rs;
	char key[32];
	int allowed = 0, denied = 0;

	key_ordered(key, sizeof(key), "node-a", "node-b");
	q = mkreq(key, 10, 1, 1);
	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	node_up(&c, "node-c", 1000);
	node_admit_rep(&a, view_abc, 3);
	node_admit_rep(&b, view_abc, 3);
	node_admit_rep(&c, view_abc, 3);
	link_to(&a, &b);
	link_to(&a, &c);
	link_to(&b, &a);
	link_to(&b, &c);
	link_to(&c, &a);
	link_to(&c, &b);
	/* Five checks through C are decided by the owner A... */
	memset(v, 0, sizeof(v));
	for (int i = 0; i < 5; i++)
		admit_check(c.admit, &q, on_ares, &v[i]);
	for (int i = 0; i < 5; i++) {
		wait_calls(&v[i].calls, 1);
		ck_assert_int_eq(v[i].err, 0);
		ck_assert(v[i].v.allowed);
	}
	ck_assert_uint_eq(usage(&a, key, 0), 5);
	/* ...and replicated to B, the next in the key's ring order, not to C. */
	run_for(150);
	ck_assert_uint_eq(usage(&b, key, 0), 5);
	ck_assert_uint_eq(usage(&b, key, 1), 5);
	ck_assert_uint_eq(usage(&c, key, 0), 0);
	replica_stats(admit_replica(a.admit), &rs);
	ck_assert_uint_ge(rs.states_sent, 1);
	/* A dies. C's next checks fail over to B at once (no membership change), and B decides
	 * on the replicated usage plus the gap: 5 + ceil(5/s * 40 ms) = 6 used, 4 more fit. */
	node_down(&a);
	memset(v, 0, sizeof(v));
	for (int i = 0; i < 6; i++) {
		admit_check(c.admit, &q, on_ares, &v[i]);
		wait_calls(&v[i].calls, 1);
		ck_assert_int_eq(v[i].err, 0);
		if (v[i].v.allowed)
			allowed++;
		else
			denied++;
	}
	ck_assert_int_eq(allowed, 4);
	ck_assert_int_eq(denied, 2);
	ck_assert_uint_eq(usage(&b, key, 0), 10);
	ck_assert_uint_ge(counter(&c, "llmlimit_peer_checks_failover_total", ""), 1);
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_checks_hop_limited_total", ""), 0);
	ck_assert_uint_eq(counter(&c, "llmlimit_peer_owner_unreachable_total",
				  "policy=\"deny\""), 0);
	node_down(&b);
	node_down(&c);
}
END_TEST

START_TEST(test_handoff_on_ring_change)
{
	static const char *const view_a[] = { "node-a" };
	struct tnode a, b;
	struct admit_request q;
	struct ares v = { 0 };
	struct replica_stats rs;
	char key[32];

	key_of_b(key, sizeof(key));
	q = mkreq(key, 10, 3, 3);
	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	node_admit_rep(&a, view_a, 1);
	node_admit_rep(&b, view_ab, 2);
	link_to(&a, &b);
	link_to(&b, &a);
	/* Alone, A owns the key. */
	admit_check(a.admit, &q, on_ares, &v);
	ck_assert_int_eq(v.calls, 1);
	ck_assert(v.v.allowed);
	ck_assert_uint_eq(usage(&b, key, 0), 0);
	/* B joins and wins the key: A hands its window over, B does not start empty. */
	ck_assert_int_eq(ring_set_members(a.ring, view_ab, 2), 0);
	run_for(200);
	ck_assert_uint_eq(usage(&b, key, 0), 1);
	ck_assert_uint_eq(usage(&b, key, 1), 3);
	replica_stats(admit_replica(a.admit), &rs);
	ck_assert_uint_eq(rs.ring_changes, 1);
	ck_assert_uint_ge(rs.handoffs_sent, 1);
	node_down(&a);
	node_down(&b);
}
END_TEST

static void on_leave_done(void *arg)
{
	(*(int *)arg)++;
}

START_TEST(test_handoff_all_before_leaving)
{
	struct tnode a, b;
	struct admit_request q;
	struct ares v = { 0 };
	char key[32];
	int done = 0;

	/* A key A owns in {a, b}. */
	for (int i = 0;; i++) {
		snprintf(key, sizeof(key), "lkey-%d", i);
		if (owns(view_ab, 2, key, "node-a"))
			break;
	}
	q = mkreq(key, 10, 2, 2);
	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	node_admit(&a, view_ab, 2, ADMIT_FAIL_DENY);   /* R = 1: no replication to B */
	node_admit(&b, view_ab, 2, ADMIT_FAIL_DENY);
	link_to(&a, &b);
	admit_check(a.admit, &q, on_ares, &v);
	ck_assert(v.v.allowed);
	run_for(100);
	ck_assert_uint_eq(usage(&b, key, 0), 0);
	ck_assert_int_eq(replica_handoff_all(admit_replica(a.admit), 2000, on_leave_done, &done),
			 0);
	ck_assert_int_eq(done, 0);
	ck_assert_int_eq(replica_handoff_all(admit_replica(a.admit), 2000, on_leave_done, &done),
			 -EALREADY);
	wait_calls(&done, 1);
	run_for(50);
	ck_assert_uint_eq(usage(&b, key, 0), 1);
	ck_assert_uint_eq(usage(&b, key, 2), 2);
	ck_assert_int_eq(done, 1);
	node_down(&a);
	node_down(&b);
}
END_TEST

static Suite *peer_suite(void)
{
	Suite *s = suite_create("peer");
	TCase *t = tcase_create("transport");

	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 30);
	tcase_add_test(t, test_round_trip);
	tcase_add_test(t, test_batching);
	tcase_add_test(t, test_pipelining);
	tcase_add_test(t, test_timeout_silent_server);
	tcase_add_test(t, test_stalled_connection_fails_fast);
	tcase_add_test(t, test_refused_fails_fast);
	tcase_add_test(t, test_reconnect_after_restart);
	tcase_add_test(t, test_wrong_key_refused_both_sides);
	tcase_add_test(t, test_identity_mismatch);
	tcase_add_test(t, test_backlog_and_forget);
	tcase_add_test(t, test_no_handler_busy_and_names);
	tcase_add_test(t, test_generic_message);
	tcase_add_test(t, test_many_nodes);
	tcase_add_loop_test(t, test_hostile_input, 0, ATK_COUNT);
	tcase_add_test(t, test_handshake_timeouts);
	suite_add_tcase(s, t);

	t = tcase_create("admit");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 30);
	tcase_add_test(t, test_hop_forwarding);
	tcase_add_loop_test(t, test_owner_failure_policy, ADMIT_FAIL_LOCAL, ADMIT_FAIL_ALLOW + 1);
	tcase_add_test(t, test_admit_routes_and_adjusts);
	tcase_add_test(t, test_admit_free_cancels);
	tcase_add_test(t, test_replicate_then_failover);
	tcase_add_test(t, test_handoff_on_ring_change);
	tcase_add_test(t, test_handoff_all_before_leaving);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(peer_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
