/* check_admit.c — cluster admission (src/peer/admit.c) over real loopback sockets: routing,
 * owner failure, joining and warm-up (replication and handoff: check_replica.c). The harness
 * is tests/unit/peer_harness.h, shared with check_peer.c and check_replica.c. */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "peer/admit.h"
#include "peer/peer.h"
#include "peer_harness.h"
#include "window/table.h"

/* ---- cluster admission ---- */

static const char *const view_bcx[] = { "node-b", "node-c", "node-x" };
static const char *const view_cd[] = { "node-c", "node-d" };

/* Sends q through n and waits for the verdict, which must allow. */
static void check_allowed(struct tnode *n, const struct admit_request *q, struct ares *v)
{
	admit_check(n->admit, q, on_ares, v);
	wait_calls(&v->calls, 1);
	ck_assert_int_eq(v->err, 0);
	ck_assert(v->v.allowed);
}

/* Two checks of q on A while B cannot be reached: the first waits for the refused connect, the
 * second finds B in backoff and is answered inside the call. */
static void check_twice(struct tnode *a, const struct admit_request *q, struct ares v[2])
{
	memset(v, 0, 2 * sizeof(*v));
	admit_check(a->admit, q, on_ares, &v[0]);
	ck_assert_int_eq(v[0].calls, 0);
	wait_calls(&v[0].calls, 1);
	admit_check(a->admit, q, on_ares, &v[1]);
	ck_assert_int_eq(v[1].calls, 1);
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
	check_allowed(&a, &q, &v1);
	ck_assert_uint_eq(v1.v.remaining[0], 9);  /* C's figures, relayed by B */
	ck_assert_uint_eq(usage(&c, k1, 1), 5);
	ck_assert_uint_eq(usage(&b, k1, 1), 0);
	ck_assert_uint_eq(usage(&a, k1, 1), 0);
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_checks_relayed_total", ""), 1);

	/* k2: C is not the owner in its own view either, but the hop limit stops it there. */
	q = mkreq(k2, 10, 5, 5);
	check_allowed(&a, &q, &v2);
	ck_assert_uint_eq(usage(&c, k2, 1), 5);
	ck_assert_uint_eq(counter(&c, "llmlimit_peer_checks_hop_limited_total", ""), 1);

	/* k3: B cannot reach x, so B's policy (local) decides and A gets B's verdict. */
	q = mkreq(k3, 10, 5, 5);
	check_allowed(&a, &q, &v3);
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

	key_owned(key, sizeof(key), "key", "node-b");
	q = mkreq(key, 10, 5, 5);
	node_up(&a, "node-a", 1000);
	node_admit(&a, view_ab, 2, pol);
	link_dead(&a, "node-b");
	check_twice(&a, &q, v);
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

static bool b_alive(void *arg, const char *id)
{
	return *(const bool *)arg && strcmp(id, "node-b") == 0;
}

/* --owner-failure local applies to an owner membership no longer shows alive; one it shows
 * alive but that cannot be reached fails the check instead (503), whatever the policy. */
START_TEST(test_owner_alive_unreachable_fails)
{
	struct admit_cluster tmpl = { .owner_failure = ADMIT_FAIL_LOCAL, .max_hops = 1,
				      .alive = b_alive };
	bool alive = true;
	struct tnode a;
	struct admit_request q;
	struct ares v;
	char key[32];

	key_owned(key, sizeof(key), "key", "node-b");
	q = mkreq(key, 10, 5, 5);
	tmpl.signal_arg = &alive;
	node_up(&a, "node-a", 1000);
	node_admit_with(&a, view_ab, 2, &tmpl);
	link_dead(&a, "node-b");
	memset(&v, 0, sizeof(v));
	admit_check(a.admit, &q, on_ares, &v);
	wait_calls(&v.calls, 1);
	ck_assert_int_eq(v.err, -EIO);
	ck_assert_uint_eq(usage(&a, key, 0), 0);
	ck_assert_uint_eq(counter(&a, "llmlimit_peer_owner_alive_unreachable_total", ""), 1);
	/* Suspect or dead: the policy decides on A's fallback window. */
	alive = false;
	memset(&v, 0, sizeof(v));
	check_allowed(&a, &q, &v);
	ck_assert_uint_eq(usage(&a, key, 0), 1);
	ck_assert_uint_eq(counter(&a, "llmlimit_peer_owner_unreachable_total",
				  "policy=\"local\""), 1);
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

	key_owned(key, sizeof(key), "key", "node-b");
	key_owned(mine, sizeof(mine), "mine", "node-a");
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

	key_owned(key, sizeof(key), "key", "node-b");
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

/* ---- joining and warm-up ---- */

/* Past any replication flush a test waits for: where a charge is is where it was decided. */
#define QUIET_INTERVAL_MS 60000u

static const char *const view_a[] = { "node-a" };

/* The membership signals an admitter polls (admit_cluster.joined and .accused). */
struct signals {
	bool joined;
	uint64_t accused;
};

static bool sig_joined(void *arg)
{
	return ((const struct signals *)arg)->joined;
}

static uint64_t sig_accused(void *arg)
{
	return ((const struct signals *)arg)->accused;
}

/* R = 2, so that a warm-up has a next node to ask. sig NULL: no signals (joined from the
 * start, never accused). */
static struct admit_cluster warm_cl(enum admit_owner_failure pol, struct signals *sig)
{
	struct admit_cluster t = { .owner_failure = pol, .max_hops = 1, .replicas = 2,
				   .replicate_interval_ms = QUIET_INTERVAL_MS };

	if (sig) {
		t.joined = sig_joined;
		t.accused = sig_accused;
		t.signal_arg = sig;
	}
	return t;
}

/* A and B with the view {a, b}, linked both ways, replicating every interval_ms; A's signals
 * are sig. */
static void pair_up(struct tnode *a, struct tnode *b, struct signals *sig, uint32_t interval_ms)
{
	struct admit_cluster t = warm_cl(ADMIT_FAIL_DENY, sig);

	node_up(a, "node-a", 1000);
	node_up(b, "node-b", 1000);
	t.replicate_interval_ms = interval_ms;
	node_admit_with(a, view_ab, 2, &t);
	t = warm_cl(ADMIT_FAIL_DENY, NULL);
	t.replicate_interval_ms = interval_ms;
	node_admit_with(b, view_ab, 2, &t);
	link_to(a, b);
	link_to(b, a);
}

/* Waits for v, a check that A sent on to B because A is warming up: B decided it on B's window
 * (`remaining` left, b_used counted there) and A counted nothing. */
static void wait_warm_verdict(struct ares *v, const struct tnode *a, const struct tnode *b,
			      const char *key, uint64_t remaining, uint64_t b_used)
{
	wait_calls(&v->calls, 1);
	ck_assert_int_eq(v->err, 0);
	ck_assert(v->v.allowed);
	ck_assert_uint_eq(v->v.remaining[0], remaining);
	ck_assert_uint_eq(usage(b, key, 0), b_used);
	ck_assert_uint_eq(usage(a, key, 0), 0);
	ck_assert_uint_eq(counter(a, "llmlimit_peer_checks_warmup_total", ""), 1);
}

/* A, warming, sends q for its own key on to B, which ends up with b_used of it. */
static void check_via_b(struct tnode *a, const struct tnode *b, const struct admit_request *q,
			const char *key, uint64_t b_used)
{
	struct ares v = { 0 };

	admit_check(a->admit, q, on_ares, &v);
	ck_assert_int_eq(v.calls, 0);
	wait_calls(&v.calls, 1);
	ck_assert(v.v.allowed);
	ck_assert_uint_eq(usage(b, key, 0), b_used);
}

/* A decides q for its own key inside the call, on a window merged from B's one decision. */
static void check_merged(struct tnode *a, const struct tnode *b, const struct admit_request *q,
			 const char *key)
{
	struct ares v = { 0 };

	admit_check(a->admit, q, on_ares, &v);
	ck_assert_int_eq(v.calls, 1);
	ck_assert_int_eq(v.err, 0);
	ck_assert(v.v.allowed);
	ck_assert_uint_le(v.v.remaining[0], 8);
	ck_assert_uint_ge(usage(a, key, 0), 2);
	ck_assert_uint_eq(usage(b, key, 0), 1);
	ck_assert_uint_eq(counter(a, "llmlimit_peer_checks_warmup_total", ""), 1);
}

START_TEST(test_joining_refuses_then_warms)
{
	struct signals sig = { .joined = false };
	struct tnode a, b;
	struct admit_request q;
	struct ares v = { 0 }, vb = { 0 }, v2 = { 0 };
	char key[32];

	key_owned(key, sizeof(key), "key", "node-a");
	q = mkreq(key, 10, 1, 1);
	pair_up(&a, &b, &sig, QUIET_INTERVAL_MS);
	ck_assert(admit_joining(a.admit));
	ck_assert(!admit_joining(b.admit));
	/* Not joined: refused at once, nothing charged. */
	admit_check(a.admit, &q, on_ares, &v);
	ck_assert_int_eq(v.calls, 1);
	ck_assert_int_eq(v.err, -EAGAIN);
	ck_assert_uint_eq(counter(&a, "llmlimit_peer_checks_joining_total", ""), 1);
	/* B sends A's key to A, which answers "busy": B fails over to the key's next node,
	 * itself. */
	check_allowed(&b, &q, &vb);
	ck_assert_uint_eq(usage(&a, key, 0), 0);
	ck_assert_uint_eq(usage(&b, key, 0), 1);
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_checks_failover_total", ""), 1);
	ck_assert(admit_joining(a.admit));
	ck_assert(!admit_warming(a.admit));
	/* Joined: the next check is decided, and a warm-up sends it to B, which has counted
	 * the key meanwhile. */
	sig.joined = true;
	admit_check(a.admit, &q, on_ares, &v2);
	ck_assert(!admit_joining(a.admit));
	ck_assert(admit_warming(a.admit));
	wait_warm_verdict(&v2, &a, &b, key, 8, 2);
	ck_assert_uint_eq(counter(&a, "llmlimit_peer_checks_joining_total", ""), 1);
	node_down(&a);
	node_down(&b);
}
END_TEST

/* Runs the loop ~5 s: the grace is a constant. */
START_TEST(test_join_grace_then_alone)
{
	struct signals sig = { .joined = false };
	struct admit_cluster t = warm_cl(ADMIT_FAIL_DENY, &sig);
	struct tnode a;
	struct admit_request q = mkreq("grace", 10, 1, 1);
	struct ares v = { 0 }, v2 = { 0 };
	uint64_t t0;

	node_up(&a, "node-a", 1000);
	node_admit_with(&a, view_a, 1, &t);
	t0 = uv_now(&loop);
	admit_check(a.admit, &q, on_ares, &v);
	ck_assert_int_eq(v.err, -EAGAIN);
	while (admit_joining(a.admit)) {
		run_for(50);
		ck_assert_uint_lt(uv_now(&loop) - t0, ADMIT_JOIN_GRACE_MS + 1000);
	}
	ck_assert_uint_ge(uv_now(&loop) - t0, ADMIT_JOIN_GRACE_MS);
	/* No seed answered: A decides alone, on its own table, with nobody to warm up from. */
	admit_check(a.admit, &q, on_ares, &v2);
	ck_assert_int_eq(v2.calls, 1);
	ck_assert_int_eq(v2.err, 0);
	ck_assert(v2.v.allowed);
	ck_assert_uint_eq(usage(&a, "grace", 0), 1);
	ck_assert(!admit_warming(a.admit));
	/* Joining late is still joining: A's memory misses what the others decided. */
	sig.joined = true;
	run_for(120);
	ck_assert(admit_warming(a.admit));
	node_down(&a);
}
END_TEST

START_TEST(test_warmup_forwards_to_next)
{
	struct tnode a, b;
	struct admit_request q;
	struct ares v = { 0 };
	char key[32];

	key_owned(key, sizeof(key), "key", "node-a");
	q = mkreq(key, 10, 1, 1);
	pair_up(&a, &b, NULL, QUIET_INTERVAL_MS);
	precharge(&b, &q);
	precharge(&b, &q);
	ck_assert(!admit_warming(a.admit));
	admit_warmup(a.admit, "test");
	ck_assert(admit_warming(a.admit));
	admit_check(a.admit, &q, on_ares, &v);
	ck_assert_int_eq(v.calls, 0);  /* A owns the key, yet asks B */
	wait_warm_verdict(&v, &a, &b, key, 7, 3);  /* B's window: B's two and this one */
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_checks_hop_limited_total", ""), 0);
	node_down(&a);
	node_down(&b);
}
END_TEST

START_TEST(test_warmup_next_unreachable_decides_here)
{
	struct admit_cluster t = warm_cl(ADMIT_FAIL_DENY, NULL);
	struct tnode a;
	struct admit_request q;
	struct ares v[2];
	char key[32];

	key_owned(key, sizeof(key), "key", "node-a");
	q = mkreq(key, 10, 1, 1);
	node_up(&a, "node-a", 1000);
	node_admit_with(&a, view_ab, 2, &t);
	link_dead(&a, "node-b");
	admit_warmup(a.admit, "test");
	/* Both checks are of A's own key: A decides them, whatever --owner-failure says. */
	check_twice(&a, &q, v);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(v[i].err, 0);
		ck_assert(v[i].v.allowed);
		ck_assert_uint_eq(v[i].v.remaining[0], (uint64_t)(9 - i));
	}
	ck_assert_uint_eq(usage(&a, key, 0), 2);
	ck_assert(admit_warming(a.admit));
	ck_assert_uint_eq(counter(&a, "llmlimit_peer_owner_unreachable_total",
				  "policy=\"deny\""), 0);
	node_down(&a);
}
END_TEST

START_TEST(test_warming_owner_relays_to_next)
{
	struct admit_cluster t = warm_cl(ADMIT_FAIL_DENY, NULL);
	struct tnode a, b, c;
	struct admit_request q;
	struct ares v = { 0 };
	char key[32];

	key_ordered(key, sizeof(key), "node-a", "node-b");
	q = mkreq(key, 10, 1, 1);
	trio_up(&a, &b, &c, &t);
	link_to(&c, &a);
	link_to(&a, &b);
	precharge(&b, &q);
	admit_warmup(a.admit, "test");
	/* C sends the check to A, the owner; A, warming, sends it on to B and relays B's
	 * verdict back to C. */
	admit_check(c.admit, &q, on_ares, &v);
	wait_warm_verdict(&v, &a, &b, key, 8, 2);
	ck_assert_uint_eq(usage(&c, key, 0), 0);
	ck_assert_uint_eq(counter(&c, "llmlimit_peer_checks_failover_total", ""), 0);
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_checks_hop_limited_total", ""), 0);
	node_down(&a);
	node_down(&b);
	node_down(&c);
}
END_TEST

#define STALL_MS 100u

static void on_block(uv_timer_t *t)
{
	(void)t;
	usleep((STALL_MS + 200) * 1000);  /* the loop holds still, as under SIGSTOP */
}

START_TEST(test_stall_starts_warmup)
{
	struct admit_cluster t = warm_cl(ADMIT_FAIL_DENY, NULL);
	struct tnode a;
	uv_timer_t block;

	t.stall_ms = STALL_MS;
	node_up(&a, "node-a", 1000);
	node_admit_with(&a, view_ab, 2, &t);
	/* Eight beats on time: no warm-up. */
	run_for(400);
	ck_assert(!admit_warming(a.admit));
	uv_timer_init(&loop, &block);
	uv_timer_start(&block, on_block, 0, 0);
	run_for(100);
	ck_assert(admit_warming(a.admit));
	uv_close((uv_handle_t *)&block, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);  /* the handle lives on this stack */
	node_down(&a);
}
END_TEST

/* _i = 0: the beat sees the new accusation; 1: a check does, before any beat. */
START_TEST(test_accused_starts_warmup)
{
	struct signals sig = { .joined = true, .accused = 7 };
	struct tnode a, b;
	struct admit_request q;
	struct ares v = { 0 }, v2 = { 0 };
	char key[32];

	key_owned(key, sizeof(key), "key", "node-a");
	q = mkreq(key, 10, 1, 1);
	pair_up(&a, &b, &sig, QUIET_INTERVAL_MS);
	/* Joined from the start and the count unchanged: A decides its key at once. */
	run_for(120);
	ck_assert(!admit_joining(a.admit));
	ck_assert(!admit_warming(a.admit));
	admit_check(a.admit, &q, on_ares, &v);
	ck_assert_int_eq(v.calls, 1);
	ck_assert_uint_eq(usage(&a, key, 0), 1);
	sig.accused++;
	if (_i == 0) {
		run_for(120);
		ck_assert(admit_warming(a.admit));
	}
	admit_check(a.admit, &q, on_ares, &v2);
	ck_assert_int_eq(v2.calls, 0);
	ck_assert(admit_warming(a.admit));
	wait_calls(&v2.calls, 1);
	ck_assert_int_eq(v2.err, 0);
	ck_assert(v2.v.allowed);
	ck_assert_uint_eq(usage(&b, key, 0), 1);
	ck_assert_uint_eq(usage(&a, key, 0), 1);
	node_down(&a);
	node_down(&b);
}
END_TEST

/* Runs the loop ~3 s: the warm-up's length is a constant. */
START_TEST(test_warmup_ends)
{
	struct tnode a, b;
	struct admit_request q;
	char key[32];
	uint64_t t0;

	key_owned(key, sizeof(key), "key", "node-a");
	q = mkreq(key, 10, 1, 1);
	pair_up(&a, &b, NULL, 20);  /* replicating: B's decisions come back to A */
	t0 = uv_now(&loop);
	admit_warmup(a.admit, "test");
	check_via_b(&a, &b, &q, key, 1);
	while (admit_warming(a.admit)) {
		run_for(20);
		ck_assert_uint_lt(uv_now(&loop) - t0, ADMIT_WARMUP_MS + 500);
	}
	ck_assert_uint_ge(uv_now(&loop) - t0, ADMIT_WARMUP_MS);
	ck_assert_uint_eq(usage(&a, key, 0), 1);  /* B's decision, replicated */
	/* Over: A decides its key again, at once, on the merged window. */
	check_merged(&a, &b, &q, key);
	node_down(&a);
	node_down(&b);
}
END_TEST

/* Once state for an owned key arrives (here B's REPLICATE of its warm-up decision), A decides
 * the key itself though still warming; state imported before the warm-up began does not count. */
START_TEST(test_warmup_ends_per_key_on_import)
{
	struct tnode a, b;
	struct admit_request q, q2;
	struct window_state st;
	char key[32], old[32];
	int polls = 0;

	key_owned(key, sizeof(key), "key", "node-a");
	key_owned(old, sizeof(old), "old", "node-a");
	q = mkreq(key, 10, 1, 1);
	q2 = mkreq(old, 10, 1, 1);
	pair_up(&a, &b, NULL, 20);  /* replicating: B's decisions come back to A */
	precharge(&b, &q2);
	ck_assert_int_eq(window_table_export(b.table, old, strlen(old), uv_now(&loop), &st), 0);
	ck_assert_int_eq(window_table_import(a.table, old, strlen(old), &st, uv_now(&loop),
					     WINDOW_IMPORT_MAX), 0);
	admit_warmup(a.admit, "test");
	check_via_b(&a, &b, &q, key, 1);
	while (usage(&a, key, 0) != 1) {
		run_for(5);
		ck_assert_int_lt(++polls, 200);
	}
	ck_assert(admit_warming(a.admit));
	/* Decided inside the call, on A's merged window. */
	check_merged(&a, &b, &q, key);
	/* The key imported before the warm-up still goes to B. */
	check_via_b(&a, &b, &q2, old, 2);
	ck_assert_uint_eq(counter(&a, "llmlimit_peer_checks_warmup_total", ""), 2);
	ck_assert(admit_warming(a.admit));
	node_down(&a);
	node_down(&b);
}
END_TEST

static Suite *admit_suite(void)
{
	Suite *s = suite_create("admit");
	TCase *t = tcase_create("admit");

	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 30);
	tcase_add_test(t, test_hop_forwarding);
	tcase_add_loop_test(t, test_owner_failure_policy, ADMIT_FAIL_LOCAL, ADMIT_FAIL_ALLOW + 1);
	tcase_add_test(t, test_owner_alive_unreachable_fails);
	tcase_add_test(t, test_admit_routes_and_adjusts);
	tcase_add_test(t, test_admit_free_cancels);
	suite_add_tcase(s, t);

	t = tcase_create("warmup");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 30);
	tcase_add_test(t, test_joining_refuses_then_warms);
	tcase_add_test(t, test_join_grace_then_alone);
	tcase_add_test(t, test_warmup_forwards_to_next);
	tcase_add_test(t, test_warmup_next_unreachable_decides_here);
	tcase_add_test(t, test_warming_owner_relays_to_next);
	tcase_add_test(t, test_stall_starts_warmup);
	tcase_add_loop_test(t, test_accused_starts_warmup, 0, 2);
	tcase_add_test(t, test_warmup_ends);
	tcase_add_test(t, test_warmup_ends_per_key_on_import);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(admit_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
