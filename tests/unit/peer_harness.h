/* peer_harness.h — the loopback harness check_peer, check_admit and check_replica share.
 *
 * Every test runs its pools, admitters and silent servers on one uv loop in one process (Check
 * forks per test), on ephemeral 127.0.0.1 ports. Waiting is the loop's own: a test runs
 * uv_run(UV_RUN_ONCE) until its condition holds, under a 5 s guard timer that fails the test.
 * teardown() closes everything and requires uv_loop_close() == 0, so a leaked handle fails
 * too; ASan checks the memory. Test code only: helpers fail the test with ck_assert. */
#ifndef LLMLIMIT_TESTS_PEER_HARNESS_H
#define LLMLIMIT_TESTS_PEER_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "peer/admit.h"
#include "peer/peer.h"
#include "wire/keyring.h"

#define WAIT_MS 5000

extern uv_loop_t loop;
extern struct wire_keyring *kr, *kr_other;  /* this cluster's key, and another cluster's */

/* The checked fixture. */
void setup(void);
void teardown(void);

/* Runs the loop until *counter >= n, failing the test after WAIT_MS. */
void wait_calls(const int *counter, int n);
/* Lets the loop run for ms (real time on the loop, not a sleep: sockets keep working). */
void run_for(uint64_t ms);

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

void node_up_cfg(struct tnode *n, const char *id, const struct wire_keyring *k,
		 uint32_t timeout_ms, uint32_t max_pending, uint16_t port);
void node_up(struct tnode *n, const char *id, uint32_t timeout_ms);
/* Adds a window table and an admitter whose ring view is `ids`; tmpl gives every field of the
 * admitter's cluster but self_id, ring and peers, which are the node's. */
void node_admit_with(struct tnode *n, const char *const *ids, size_t nids,
		     const struct admit_cluster *tmpl);
/* node_admit_with() with owner_failure = pol, max_hops = 1 and nothing else. */
void node_admit(struct tnode *n, const char *const *ids, size_t nids,
		enum admit_owner_failure pol);
void node_down(struct tnode *n);
void link_to(struct tnode *from, const struct tnode *to);

struct peer_stats stats(const struct tnode *n);
uint64_t usage(const struct tnode *n, const char *key, int dim);
uint64_t counter(const struct tnode *n, const char *name, const char *labels);

/* A request of 1 request, `in` input and `out` output tokens against rpm/10000/5000. */
struct admit_request mkreq(const char *key, uint64_t rpm, uint64_t in, uint64_t out);

/* A CHECK handler that counts the checks in *(int *)arg and never answers. */
void drop_checks(void *arg, const struct peer_from *from, const struct wire_msg *m);

/* ---- admission ---- */

/* What an admit_check() callback saw; on_ares is the callback, with a struct ares as ctx. */
struct ares {
	int calls;
	int err;
	struct window_verdict v;
};

void on_ares(void *ctx, int err, const struct window_verdict *v);

extern const char *const view_ab[2];   /* {node-a, node-b} */
extern const char *const view_abc[3];  /* {node-a, node-b, node-c} */

/* Whether the ring over ids gives key to want. */
bool owns(const char *const *ids, size_t n, const char *key, const char *want);
/* The first "<prefix>-0", "<prefix>-1"... that the view {a, b} gives to owner. */
void key_owned(char *key, size_t size, const char *prefix, const char *owner);
/* The first "rkey-0", "rkey-1"... whose ring order over {a, b, c} starts first, second. */
void key_ordered(char *key, size_t size, const char *first, const char *second);
/* Three nodes a, b and c (timeout 1 s), each with an admitter on view_abc made from tmpl; no
 * links. */
void trio_up(struct tnode *a, struct tnode *b, struct tnode *c,
	     const struct admit_cluster *tmpl);
/* Points from's route to `to` at a port nothing listens on. */
void link_dead(struct tnode *from, const char *to);
/* Charges req on n's table directly, as if n had decided it: nothing marks it for
 * replication. */
void precharge(struct tnode *n, const struct admit_request *req);

/* ---- a TCP server that accepts and then says nothing ---- */

struct silent {
	uv_tcp_t srv;
	uv_tcp_t conns[8];
	int n;
	uint16_t port;
};

void silent_up(struct silent *s);
void silent_down(struct silent *s);
/* A port nothing listens on: bound, then closed. */
uint16_t dead_port(void);

#endif
