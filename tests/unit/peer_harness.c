/* peer_harness.c — see peer_harness.h. */
#include "peer_harness.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "gossip/ring.h"
#include "util/metrics.h"
#include "window/table.h"
#include "wire/wire.h"

uv_loop_t loop;
struct wire_keyring *kr, *kr_other;
static uv_timer_t guard, pause_timer;
static bool expired, paused_done;

static void on_guard(uv_timer_t *t)
{
	(void)t;
	expired = true;
}

void setup(void)
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

void teardown(void)
{
	uv_close((uv_handle_t *)&guard, NULL);
	uv_close((uv_handle_t *)&pause_timer, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	wire_keyring_free(kr);
	wire_keyring_free(kr_other);
}

void wait_calls(const int *counter, int n)
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

void run_for(uint64_t ms)
{
	paused_done = false;
	uv_timer_start(&pause_timer, on_pause, ms, 0);
	while (!paused_done)
		uv_run(&loop, UV_RUN_ONCE);
}

void node_up_cfg(struct tnode *n, const char *id, const struct wire_keyring *k,
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

void node_up(struct tnode *n, const char *id, uint32_t timeout_ms)
{
	node_up_cfg(n, id, kr, timeout_ms, 0, 0);
}

void node_admit_with(struct tnode *n, const char *const *ids, size_t nids,
		     const struct admit_cluster *tmpl)
{
	uint8_t seed[16] = { 1 };

	ck_assert_int_eq(window_table_new(&n->table, 0, seed), 0);
	ck_assert_int_eq(ring_new(&n->ring, NULL), 0);
	ck_assert_int_eq(ring_set_members(n->ring, ids, nids), 0);
	n->cl = *tmpl;
	n->cl.self_id = n->id;
	n->cl.ring = n->ring;
	n->cl.peers = n->pool;
	/* admit_new() takes the loop's cached time as the stall detector's last beat, and the
	 * loop has not run while the test set up: a stale time would read as a stall. */
	uv_update_time(&loop);
	ck_assert_int_eq(admit_new(&n->admit, &loop, n->table, &n->cl), 0);
}

void node_admit(struct tnode *n, const char *const *ids, size_t nids,
		enum admit_owner_failure pol)
{
	struct admit_cluster tmpl = { .owner_failure = pol, .max_hops = 1 };

	node_admit_with(n, ids, nids, &tmpl);
}

void node_down(struct tnode *n)
{
	admit_free(n->admit);
	peer_pool_free(n->pool);
	window_table_free(n->table);
	ring_free(n->ring);
	metrics_free(n->metrics);
	memset(n, 0, sizeof(*n));
}

void link_to(struct tnode *from, const struct tnode *to)
{
	ck_assert_int_eq(peer_pool_set_address(from->pool, to->id, "127.0.0.1",
					       peer_pool_port(to->pool)), 0);
}

struct peer_stats stats(const struct tnode *n)
{
	struct peer_stats s;

	peer_pool_stats(n->pool, &s);
	return s;
}

uint64_t usage(const struct tnode *n, const char *key, int dim)
{
	uint64_t used[WINDOW_DIMS];

	window_table_usage(n->table, key, strlen(key), uv_now(&loop), used);
	return used[dim];
}

uint64_t counter(const struct tnode *n, const char *name, const char *labels)
{
	return metrics_counter_value(metrics_counter(n->metrics, name, "", labels));
}

struct admit_request mkreq(const char *key, uint64_t rpm, uint64_t in, uint64_t out)
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

void drop_checks(void *arg, const struct peer_from *from, const struct wire_msg *m)
{
	int *seen = arg;

	(void)from;
	*seen += (int)m->n;
}

void on_ares(void *ctx, int err, const struct window_verdict *v)
{
	struct ares *x = ctx;

	x->calls++;
	x->err = err;
	if (v)
		x->v = *v;
}

const char *const view_ab[2] = { "node-a", "node-b" };
const char *const view_abc[3] = { "node-a", "node-b", "node-c" };

bool owns(const char *const *ids, size_t n, const char *key, const char *want)
{
	struct ring *r;
	bool yes;

	ck_assert_int_eq(ring_new(&r, NULL), 0);
	ck_assert_int_eq(ring_set_members(r, ids, n), 0);
	yes = strcmp(ring_id(r, (size_t)ring_owner(r, key, strlen(key))), want) == 0;
	ring_free(r);
	return yes;
}

void key_owned(char *key, size_t size, const char *prefix, const char *owner)
{
	for (int i = 0;; i++) {
		snprintf(key, size, "%s-%d", prefix, i);
		if (owns(view_ab, 2, key, owner))
			return;
	}
}

void key_ordered(char *key, size_t size, const char *first, const char *second)
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

void trio_up(struct tnode *a, struct tnode *b, struct tnode *c,
	     const struct admit_cluster *tmpl)
{
	node_up(a, "node-a", 1000);
	node_up(b, "node-b", 1000);
	node_up(c, "node-c", 1000);
	node_admit_with(a, view_abc, 3, tmpl);
	node_admit_with(b, view_abc, 3, tmpl);
	node_admit_with(c, view_abc, 3, tmpl);
}

void link_dead(struct tnode *from, const char *to)
{
	ck_assert_int_eq(peer_pool_set_address(from->pool, to, "127.0.0.1", dead_port()), 0);
}

void precharge(struct tnode *n, const struct admit_request *req)
{
	struct window_verdict v;

	ck_assert_int_eq(window_table_admit(n->table, req->key, req->key_len, req->limit,
					    req->amount, uv_now(&loop), &v), 0);
	ck_assert(v.allowed);
}

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

void silent_up(struct silent *s)
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

void silent_down(struct silent *s)
{
	for (int i = 0; i < s->n; i++)
		uv_close((uv_handle_t *)&s->conns[i], NULL);
	uv_close((uv_handle_t *)&s->srv, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);  /* the handles live on the caller's stack */
}

uint16_t dead_port(void)
{
	struct silent s;
	uint16_t port;

	silent_up(&s);
	port = s.port;
	silent_down(&s);
	return port;
}

