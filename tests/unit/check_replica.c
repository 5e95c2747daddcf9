/* check_replica.c — replication, failover and handoff (src/peer/replica.c, driven through
 * src/peer/admit.c) over real loopback sockets: a decision reaches the key's replica set, a
 * failover decision reaches the owner (denied ones too), a ring change hands keys over, and a
 * leaving node hands on every key it holds. The harness is tests/unit/peer_harness.h. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gossip/ring.h"
#include "peer/admit.h"
#include "peer/peer.h"
#include "peer/replica.h"
#include "peer_harness.h"

/* R = 2, replicating every 20 ms. */
static const struct admit_cluster rep_cl = { .owner_failure = ADMIT_FAIL_DENY, .max_hops = 1,
					     .replicas = 2, .replicate_interval_ms = 20 };

/* Runs the loop until n's usage of key (requests) is want, failing after ~2 s. */
static void wait_usage(const struct tnode *n, const char *key, uint64_t want)
{
	for (int polls = 0; usage(n, key, 0) != want; polls++) {
		ck_assert_msg(polls < 400, "%s: usage of %s is %llu, expected %llu", n->id, key,
			      (unsigned long long)usage(n, key, 0), (unsigned long long)want);
		run_for(5);
	}
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
	trio_up(&a, &b, &c, &rep_cl);
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

	key_owned(key, sizeof(key), "key", "node-b");
	q = mkreq(key, 10, 3, 3);
	node_up(&a, "node-a", 1000);
	node_up(&b, "node-b", 1000);
	node_admit_with(&a, view_a, 1, &rep_cl);
	node_admit_with(&b, view_ab, 2, &rep_cl);
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

/* A non-owner that decides a key (here by failover) sends its state to the owner whatever
 * the verdict: a denial charges nothing, yet the non-owner's copy may be the only one that
 * holds the key's usage. */
START_TEST(test_failover_denial_replicates_to_owner)
{
	struct tnode a, b, c;
	struct admit_request q;
	struct ares v = { 0 };
	char key[32];

	key_ordered(key, sizeof(key), "node-a", "node-b");
	q = mkreq(key, 10, 3, 2);
	trio_up(&a, &b, &c, &rep_cl);
	/* C cannot reach the owner A; B can. */
	link_dead(&c, "node-a");
	link_to(&c, &b);
	link_to(&b, &a);
	/* B holds the key's full usage, unmarked (as handed over, or decided before a restart of
	 * A): nothing sends it by itself. */
	for (int i = 0; i < 10; i++)
		precharge(&b, &q);
	run_for(100);
	ck_assert_uint_eq(usage(&a, key, 0), 0);
	/* C fails over to B, which denies. */
	admit_check(c.admit, &q, on_ares, &v);
	wait_calls(&v.calls, 1);
	ck_assert_int_eq(v.err, 0);
	ck_assert(!v.v.allowed);
	ck_assert_uint_eq(v.v.used[0], 10);
	ck_assert_uint_ge(counter(&c, "llmlimit_peer_checks_failover_total", ""), 1);
	ck_assert_uint_eq(counter(&b, "llmlimit_peer_checks_hop_limited_total", ""), 0);
	/* The owner now holds B's counts. */
	wait_usage(&a, key, 10);
	ck_assert_uint_eq(usage(&a, key, 1), 30);
	ck_assert_uint_eq(usage(&a, key, 2), 20);
	ck_assert_uint_eq(usage(&b, key, 0), 10);  /* the denial charged nothing */
	ck_assert_uint_eq(usage(&c, key, 0), 0);
	node_down(&a);
	node_down(&b);
	node_down(&c);
}
END_TEST

static void on_leave_done(void *arg)
{
	(*(int *)arg)++;
}

/* C leaves: the key it owns goes to its next owner as a HANDOFF, and a key it holds but A owns
 * goes back to A as a REPLICATE (C's copy may be the only full one). */
START_TEST(test_handoff_all_before_leaving)
{
	/* R = 1: no replication, only the leave walk sends state. */
	static const struct admit_cluster tmpl = { .owner_failure = ADMIT_FAIL_DENY,
						   .max_hops = 1 };
	struct tnode a, b, c;
	struct admit_request qc, qa;
	struct ares v = { 0 };
	struct replica_stats rs;
	char kc[32], ka[32];
	int done = 0;

	key_ordered(kc, sizeof(kc), "node-c", "node-b");
	key_ordered(ka, sizeof(ka), "node-a", "node-c");
	qc = mkreq(kc, 10, 2, 2);
	qa = mkreq(ka, 10, 5, 4);
	trio_up(&a, &b, &c, &tmpl);
	link_to(&c, &a);
	link_to(&c, &b);
	admit_check(c.admit, &qc, on_ares, &v);
	ck_assert_int_eq(v.calls, 1);
	ck_assert(v.v.allowed);
	precharge(&c, &qa);
	precharge(&c, &qa);
	run_for(100);
	ck_assert_uint_eq(usage(&b, kc, 0), 0);
	ck_assert_uint_eq(usage(&a, ka, 0), 0);
	ck_assert_int_eq(replica_handoff_all(admit_replica(c.admit), 2000, on_leave_done, &done),
			 0);
	ck_assert_int_eq(done, 0);
	ck_assert_int_eq(replica_handoff_all(admit_replica(c.admit), 2000, on_leave_done, &done),
			 -EALREADY);
	wait_calls(&done, 1);
	wait_usage(&b, kc, 1);
	ck_assert_uint_eq(usage(&b, kc, 2), 2);
	wait_usage(&a, ka, 2);
	ck_assert_uint_eq(usage(&a, ka, 1), 10);
	ck_assert_uint_eq(usage(&a, ka, 2), 8);
	/* Each to its owner in the ring without C, and nowhere else. */
	ck_assert_uint_eq(usage(&a, kc, 0), 0);
	ck_assert_uint_eq(usage(&b, ka, 0), 0);
	replica_stats(admit_replica(c.admit), &rs);
	ck_assert_uint_eq(rs.handoffs_sent, 1);
	ck_assert_uint_eq(rs.states_sent, 1);
	ck_assert_int_eq(done, 1);
	node_down(&a);
	node_down(&b);
	node_down(&c);
}
END_TEST

static Suite *replica_suite(void)
{
	Suite *s = suite_create("replica");
	TCase *t = tcase_create("replica");

	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 30);
	tcase_add_test(t, test_replicate_then_failover);
	tcase_add_test(t, test_handoff_on_ring_change);
	tcase_add_test(t, test_failover_denial_replicates_to_owner);
	tcase_add_test(t, test_handoff_all_before_leaving);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(replica_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
