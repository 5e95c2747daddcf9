/* check_peer.c — the peer transport over real loopback sockets (tests/unit/peer_harness.h).
 * Cluster admission over the same harness: check_admit.c. */
#include <check.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "peer/admit.h"
#include "peer/peer.h"
#include "peer_harness.h"
#include "util/buf.h"
#include "util/metrics.h"
#include "window/table.h"
#include "wire/codec.h"
#include "wire/frame.h"
#include "wire/keyring.h"
#include "wire/seal.h"
#include "wire/wire.h"

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
