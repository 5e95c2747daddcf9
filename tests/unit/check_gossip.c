/* check_gossip.c — the gossip driver (src/gossip/transport*.c) over real UDP sockets on
 * 127.0.0.1, several nodes in one uv loop: joining through a seed given as a host name, a
 * killed node found dead, a graceful leave seen at once, a node with another cluster key kept
 * out (and saying why), hostile packets counted by reason, a seed that is the node itself, and
 * the members_msg <-> wire mapping. No sleeps: the loop runs until a condition holds or a
 * deadline passes, and the deadlines are the requirements (join 2 s, dead 3 s, left 0.5 s). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "gossip/gossip.h"
#include "gossip/transport_int.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/metrics.h"
#include "wire/gossip_msg.h"
#include "wire/keyring.h"
#include "wire/wire.h"

#define NMAX 4
#define HTTP_BASE 8000

struct node {
	struct gossip *g;
	struct metrics *met;
	char id[16];
	unsigned ring_changes;
	unsigned became[4];      /* on_member calls, by new state */
	unsigned self_events;
};

struct world {
	uv_loop_t loop;
	struct wire_keyring *key, *other;
	struct node n[NMAX];
	char seed_a[64];          /* "localhost:<port of node a>" */
	bool left_done;
	char log_path[64];
	int saved_stderr;
	uv_udp_t raw;             /* a socket without the gossip driver, for hostile packets */
};

static struct world w;

static const uint8_t KEY[WIRE_KEY_BYTES] = "0123456789abcdef0123456789abcdef";
static const uint8_t OTHER_KEY[WIRE_KEY_BYTES] = "fedcba9876543210fedcba9876543210";

/* ---------------------------------------------------------------- fixture */

static void setup(void)
{
	memset(&w, 0, sizeof(w));
	w.saved_stderr = -1;
	/* CHECK_GOSSIP_DEBUG=1 shows the driver's info lines (and keeps captured logs). */
	log_level = getenv("CHECK_GOSSIP_DEBUG") ? LOG_DEBUG : LOG_WARN;
	ck_assert_int_eq(wire_init(), 0);
	ck_assert_int_eq(uv_loop_init(&w.loop), 0);
	ck_assert_int_eq(wire_keyring_new(&w.key), 0);
	ck_assert_int_eq(wire_keyring_add(w.key, KEY, NULL), 0);
	ck_assert_int_eq(wire_keyring_new(&w.other), 0);
	ck_assert_int_eq(wire_keyring_add(w.other, OTHER_KEY, NULL), 0);
}

static void teardown(void)
{
	int i;

	for (i = 0; i < NMAX; i++)
		gossip_free(w.n[i].g);
	/* Every handle closes and every request finishes; then the loop must be empty. */
	uv_run(&w.loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&w.loop), 0);
	for (i = 0; i < NMAX; i++)
		metrics_free(w.n[i].met);
	wire_keyring_free(w.key);
	wire_keyring_free(w.other);
	if (w.saved_stderr >= 0) {
		dup2(w.saved_stderr, 2);
		close(w.saved_stderr);
		if (getenv("CHECK_GOSSIP_DEBUG"))
			fprintf(stderr, "check_gossip: captured log kept in %s\n", w.log_path);
		else
			unlink(w.log_path);
	}
}

static void on_change(void *arg)
{
	((struct node *)arg)->ring_changes++;
}

static void on_member(void *arg, const struct members_info *m, int prev)
{
	struct node *n = arg;

	ck_assert_int_ne(prev, (int)m->state);
	if ((unsigned)m->state < 4)
		n->became[m->state]++;
	n->self_events += m->self;
}

static struct node *start_node_at(int i, const char *bind, const char *advertise,
				  const char *const *seeds, size_t nseeds,
				  const struct wire_keyring *key, uint16_t port)
{
	struct node *n = &w.n[i];
	struct gossip_config c;

	memset(&c, 0, sizeof(c));
	snprintf(n->id, sizeof(n->id), "node-%c", 'a' + i);
	ck_assert_int_eq(metrics_new(&n->met), 0);
	c.node_id = n->id;
	c.bind_host = bind;
	c.advertise_host = advertise;
	c.bind_port = port;
	c.http_port = (uint16_t)(HTTP_BASE + i);
	c.seeds = seeds;
	c.nseeds = nseeds;
	c.keyring = key;
	c.metrics = n->met;
	c.join_warn_ms = 600;
	c.on_change = on_change;
	c.on_member = on_member;
	c.cb_arg = n;
	ck_assert_int_eq(gossip_new(&n->g, &w.loop, &c), 0);
	ck_assert_uint_ne(gossip_port(n->g), 0);
	return n;
}

static struct node *start_node(int i, const char *const *seeds, size_t nseeds,
			       const struct wire_keyring *key, uint16_t port)
{
	return start_node_at(i, "127.0.0.1", NULL, seeds, nseeds, key, port);
}

/* Node a alone, advertising the name "localhost" (so the others reach it through the name
 * cache), then `more` nodes seeded with "localhost:<a's port>". */
static void start_cluster(int more)
{
	const char *seeds[1] = { w.seed_a };
	int i;

	start_node_at(0, "127.0.0.1", "localhost", NULL, 0, w.key, 0);
	snprintf(w.seed_a, sizeof(w.seed_a), "localhost:%u", (unsigned)gossip_port(w.n[0].g));
	for (i = 1; i <= more; i++)
		start_node(i, seeds, 1, w.key, 0);
}

/* ---------------------------------------------------------------- running the loop */

typedef bool (*pred_fn)(void *arg);

static void on_poll(uv_timer_t *t)
{
	(void)t;  /* only wakes uv_run(UV_RUN_ONCE) up */
}

/* Runs the loop until p(arg) holds or timeout_ms pass; the elapsed ms, or UINT64_MAX. */
static uint64_t run_until(pred_fn p, void *arg, uint64_t timeout_ms)
{
	uv_timer_t t;
	uint64_t start, elapsed;
	bool ok;

	uv_update_time(&w.loop);
	start = uv_now(&w.loop);
	ck_assert_int_eq(uv_timer_init(&w.loop, &t), 0);
	ck_assert_int_eq(uv_timer_start(&t, on_poll, 5, 5), 0);
	while (!(p && p(arg)) && uv_now(&w.loop) - start < timeout_ms)
		uv_run(&w.loop, UV_RUN_ONCE);
	ok = p && p(arg);
	elapsed = uv_now(&w.loop) - start;
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&w.loop, UV_RUN_NOWAIT);  /* finishes the close of t before it goes */
	return ok ? elapsed : UINT64_MAX;
}

static size_t count_state(const struct node *n, enum members_state st)
{
	const struct members *m = gossip_members(n->g);
	size_t i, c = 0;

	for (i = 0; i < members_count(m); i++)
		c += members_at(m, i)->state == st;
	return c;
}

static bool sees(const struct node *obs, const char *id, enum members_state st)
{
	const struct members_info *x = members_find(gossip_members(obs->g), id);

	return x && x->state == st;
}

/* arg: the number of nodes, which all see each other alive. */
static bool all_alive(void *arg)
{
	int i, k = *(int *)arg;

	for (i = 0; i < k; i++)
		if (count_state(&w.n[i], MEMBERS_ALIVE) != (size_t)k)
			return false;
	return true;
}

struct expect {
	const char *id;
	enum members_state st;
	int observers;           /* nodes 0..observers-1 */
};

static bool all_see(void *arg)
{
	const struct expect *e = arg;
	int i;

	for (i = 0; i < e->observers; i++)
		if (!sees(&w.n[i], e->id, e->st))
			return false;
	return true;
}

static bool joined(void *arg)
{
	return gossip_joined(((struct node *)arg)->g);
}

static bool flag_set(void *arg)
{
	return *(bool *)arg;
}

static uint64_t counter_value(struct node *n, const char *name, const char *labels)
{
	return metrics_counter_value(metrics_counter(n->met, name, "", labels));
}

static bool rendered(struct node *n, const char *line)
{
	struct buf b;
	bool found;

	buf_init(&b);
	ck_assert_int_eq(metrics_render(n->met, &b), 0);
	found = b.data && strstr(b.data, line);
	buf_close(&b);
	return found;
}

static void join_three(void)
{
	int k = 3;
	uint64_t t;

	start_cluster(2);
	t = run_until(all_alive, &k, 2000);
	ck_assert_msg(t != UINT64_MAX, "3 nodes did not all see 3 alive within 2 s");
	printf("gossip: 3 nodes see 3 alive after %llu ms\n", (unsigned long long)t);
}

/* ---------------------------------------------------------------- tests */

START_TEST(test_join_through_named_seed)
{
	const struct members_info *a, *me;
	struct gossip_stats st;
	int i;

	join_three();
	for (i = 0; i < 3; i++) {
		struct node *n = &w.n[i];

		ck_assert(gossip_joined(n->g));
		ck_assert_uint_eq(members_ring_ids(gossip_members(n->g), NULL, 0), 3);
		ck_assert_uint_ge(n->ring_changes, 1);
		ck_assert_uint_ge(n->became[MEMBERS_ALIVE], 2);
		ck_assert(rendered(n, "llmlimit_gossip_members{state=\"alive\"} 3\n"));
		ck_assert(rendered(n, "llmlimit_gossip_members{state=\"dead\"} 0\n"));
		gossip_stats(n->g, &st);
		ck_assert_uint_gt(st.packets_in, 0);
		ck_assert_uint_gt(st.packets_out, 0);
		ck_assert_uint_gt(st.accepted, 0);
		ck_assert_uint_eq(st.rejected[GOSSIP_REJ_AUTH], 0);
		ck_assert_uint_eq(st.rejected[GOSSIP_REJ_TAMPERED], 0);
		ck_assert_uint_eq(st.rejected[GOSSIP_REJ_MALFORMED], 0);
		ck_assert_uint_eq(st.rejected[GOSSIP_REJ_REPLAY], 0);
		ck_assert_uint_eq(counter_value(n, "llmlimit_gossip_packets_total", "dir=\"in\""),
				  st.packets_in);
		me = members_find(gossip_members(n->g), n->id);
		ck_assert_ptr_nonnull(me);
		ck_assert(me->self);
		ck_assert_uint_eq(gossip_last_seen_ago_ms(n->g, me), 0);
		ck_assert_uint_eq(me->incarnation, gossip_incarnation(n->g));
		ck_assert_str_eq(gossip_self_id(n->g), n->id);
	}
	/* What node c knows of node a: the advertised address, one port for gossip and peer
	 * TCP, and the http port for GET /cluster. */
	a = members_find(gossip_members(w.n[2].g), "node-a");
	ck_assert_ptr_nonnull(a);
	ck_assert_str_eq(a->host, "localhost");
	ck_assert_uint_eq(a->port, gossip_port(w.n[0].g));
	ck_assert_uint_eq(a->peer_port, gossip_port(w.n[0].g));
	ck_assert_uint_eq(a->http_port, HTTP_BASE);
	ck_assert_uint_lt(gossip_last_seen_ago_ms(w.n[2].g, a), 2000);
	ck_assert_str_eq(gossip_state_name(a->state), "alive");
	ck_assert_str_eq(gossip_advertise_host(w.n[0].g), "localhost");
	ck_assert_str_eq(gossip_advertise_host(w.n[1].g), "127.0.0.1");
	ck_assert_uint_eq(gossip_advertise_port(w.n[0].g), gossip_port(w.n[0].g));
}
END_TEST

START_TEST(test_killed_node_found_dead)
{
	struct expect e = { "node-c", MEMBERS_DEAD, 2 };
	uint64_t t;

	join_three();
	/* Abruptly: the socket closes, nobody is told. */
	gossip_free(w.n[2].g);
	w.n[2].g = NULL;
	t = run_until(all_see, &e, 3000);
	ck_assert_msg(t != UINT64_MAX, "node-c not dead on both survivors within 3 s");
	printf("gossip: killed node dead on both survivors after %llu ms\n",
	       (unsigned long long)t);
	ck_assert_uint_eq(members_ring_ids(gossip_members(w.n[0].g), NULL, 0), 2);
	ck_assert_uint_eq(members_ring_ids(gossip_members(w.n[1].g), NULL, 0), 2);
	ck_assert_uint_ge(w.n[0].became[MEMBERS_DEAD], 1);
	ck_assert_uint_ge(members_counters(gossip_members(w.n[0].g))->probe_failures, 1);
	ck_assert_uint_ge(counter_value(&w.n[0], "llmlimit_gossip_deaths_total", ""), 1);
	ck_assert(rendered(&w.n[0], "llmlimit_gossip_members{state=\"dead\"} 1\n"));
}
END_TEST

static void on_left(void *arg)
{
	*(bool *)arg = true;
}

START_TEST(test_graceful_leave_seen_at_once)
{
	struct expect e = { "node-c", MEMBERS_LEFT, 2 };
	uint64_t t;

	join_three();
	ck_assert_int_eq(gossip_leave(w.n[2].g, on_left, &w.left_done), 0);
	ck_assert_int_eq(gossip_leave(w.n[2].g, on_left, &w.left_done), -EALREADY);
	ck_assert(!w.left_done);  /* never from inside the call */
	t = run_until(all_see, &e, 500);
	ck_assert_msg(t != UINT64_MAX, "node-c not left on both others within 0.5 s");
	printf("gossip: leave seen by both others after %llu ms\n", (unsigned long long)t);
	ck_assert_uint_ne(run_until(flag_set, &w.left_done, GOSSIP_LEAVE_WAIT_MS + 100),
			  UINT64_MAX);
	ck_assert_uint_ge(w.n[2].self_events, 1);  /* it heard its own LEFT */
	ck_assert_uint_eq(w.n[0].became[MEMBERS_DEAD], 0);
	ck_assert_uint_eq(members_ring_ids(gossip_members(w.n[0].g), NULL, 0), 2);
	gossip_free(w.n[2].g);
	w.n[2].g = NULL;
}
END_TEST

static void capture_stderr(void)
{
	int fd;

	snprintf(w.log_path, sizeof(w.log_path), "/tmp/check_gossip_XXXXXX");
	ck_assert_int_ge(fd = mkstemp(w.log_path), 0);
	fflush(stderr);
	ck_assert_int_ge(w.saved_stderr = dup(2), 0);
	ck_assert_int_ge(dup2(fd, 2), 0);
	close(fd);
}

static bool log_has(const char *text)
{
	char buf[65536];
	FILE *f;
	size_t n;

	fflush(stderr);
	ck_assert_ptr_nonnull(f = fopen(w.log_path, "r"));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, text) != NULL;
}

START_TEST(test_other_key_never_joins)
{
	char seed_d[64];
	const char *seeds_d[1] = { w.seed_a }, *seeds_b[2] = { w.seed_a, seed_d };
	const char *seeds_c[1] = { w.seed_a };
	struct gossip_stats sa, sd;
	int i, k = 3;

	capture_stderr();
	/* d (another key) seeds on a; b seeds on a and d, so d receives packets too. */
	start_node(0, NULL, 0, w.key, 0);
	snprintf(w.seed_a, sizeof(w.seed_a), "localhost:%u", (unsigned)gossip_port(w.n[0].g));
	start_node(3, seeds_d, 1, w.other, 0);
	snprintf(seed_d, sizeof(seed_d), "127.0.0.1:%u", (unsigned)gossip_port(w.n[3].g));
	start_node(1, seeds_b, 2, w.key, 0);
	start_node(2, seeds_c, 1, w.key, 0);
	ck_assert_uint_ne(run_until(all_alive, &k, 2000), UINT64_MAX);
	/* Past d's join_warn_ms (600 ms) and a seed retry or two. */
	run_until(NULL, NULL, 1300);
	ck_assert_uint_eq(members_count(gossip_members(w.n[3].g)), 1);
	ck_assert(!gossip_joined(w.n[3].g));
	for (i = 0; i < 3; i++) {
		ck_assert_ptr_null(members_find(gossip_members(w.n[i].g), "node-d"));
		ck_assert_uint_eq(count_state(&w.n[i], MEMBERS_ALIVE), 3);
	}
	gossip_stats(w.n[0].g, &sa);
	gossip_stats(w.n[3].g, &sd);
	ck_assert_uint_ge(sa.rejected[GOSSIP_REJ_AUTH], 2);   /* d retries every second */
	ck_assert_uint_ge(sd.rejected[GOSSIP_REJ_AUTH], 1);   /* b contacted d */
	ck_assert_uint_eq(sd.accepted, 0);
	ck_assert_uint_eq(counter_value(&w.n[0], "llmlimit_gossip_rejected_total",
					"reason=\"auth\""), sa.rejected[GOSSIP_REJ_AUTH]);
	/* Both sides say why. */
	ck_assert(log_has("fail authentication: different cluster key?"));
	ck_assert(log_has("reason=auth"));
}
END_TEST

/* A node with another key that nobody contacts hears nothing at all; it says so. */
START_TEST(test_other_key_alone_says_why)
{
	const char *seeds_d[1] = { w.seed_a };
	struct gossip_stats sa;

	capture_stderr();
	start_node(0, NULL, 0, w.key, 0);
	snprintf(w.seed_a, sizeof(w.seed_a), "localhost:%u", (unsigned)gossip_port(w.n[0].g));
	start_node(3, seeds_d, 1, w.other, 0);
	run_until(NULL, NULL, 900);
	gossip_stats(w.n[0].g, &sa);
	ck_assert_uint_ge(sa.rejected[GOSSIP_REJ_AUTH], 1);
	ck_assert_uint_eq(members_count(gossip_members(w.n[0].g)), 1);
	ck_assert_uint_eq(members_count(gossip_members(w.n[3].g)), 1);
	ck_assert(!gossip_joined(w.n[3].g));
	ck_assert(log_has("no answer from any seed"));
	ck_assert(log_has("do they share this node's cluster key?"));
}
END_TEST

static void set_ip4(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	ck_assert_int_eq(uv_ip4_addr(ip, port, (struct sockaddr_in *)ss), 0);
}

/* Bound to a wildcard: an address others can use is advertised, and every local address at
 * our port counts as ourselves. */
START_TEST(test_wildcard_bind)
{
	struct sockaddr_storage ss;
	struct gossip *g;
	const char *adv;
	uint16_t port;

	g = start_node_at(0, "0.0.0.0", NULL, NULL, 0, w.key, 0)->g;
	port = gossip_port(g);
	adv = gossip_advertise_host(g);
	ck_assert_str_ne(adv, "0.0.0.0");
	ck_assert_int_eq(gossip__addr_parse(adv, port, AF_INET, &ss), 0);
	ck_assert(gossip__is_self(g, (const struct sockaddr *)&ss));
	set_ip4(&ss, "127.0.0.1", port);
	ck_assert(gossip__is_self(g, (const struct sockaddr *)&ss));
	set_ip4(&ss, "127.0.0.1", (uint16_t)(port + 1));
	ck_assert(!gossip__is_self(g, (const struct sockaddr *)&ss));
	set_ip4(&ss, "192.0.2.1", port);  /* TEST-NET-1: no interface has it */
	ck_assert(!gossip__is_self(g, (const struct sockaddr *)&ss));
	ck_assert(gossip__addr_is_any((const struct sockaddr *)&g->bound));
}
END_TEST

/* A seed that is the node itself is skipped: the node is the first of its cluster. */
START_TEST(test_seed_that_is_self_is_skipped)
{
	struct sockaddr_storage ss;
	char s1[64], s2[64];
	const char *seeds[2] = { s1, s2 };
	struct gossip_stats st;
	struct sockaddr_in sin;
	uv_udp_t probe;
	int len = sizeof(ss);
	uint16_t port;

	/* A free port, known before the node binds it. */
	ck_assert_int_eq(uv_udp_init(&w.loop, &probe), 0);
	ck_assert_int_eq(uv_ip4_addr("127.0.0.1", 0, &sin), 0);
	ck_assert_int_eq(uv_udp_bind(&probe, (const struct sockaddr *)&sin, 0), 0);
	ck_assert_int_eq(uv_udp_getsockname(&probe, (struct sockaddr *)&ss, &len), 0);
	port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	uv_close((uv_handle_t *)&probe, NULL);
	uv_run(&w.loop, UV_RUN_NOWAIT);
	snprintf(s1, sizeof(s1), "localhost:%u", (unsigned)port);
	snprintf(s2, sizeof(s2), "127.0.0.1:%u", (unsigned)port);
	start_node(0, seeds, 2, w.key, port);
	ck_assert_uint_eq(gossip_port(w.n[0].g), port);
	ck_assert(!gossip_joined(w.n[0].g));
	ck_assert_uint_ne(run_until(joined, &w.n[0], 1000), UINT64_MAX);
	run_until(NULL, NULL, 200);
	gossip_stats(w.n[0].g, &st);
	ck_assert_uint_eq(st.packets_out, 0);
	ck_assert_uint_eq(st.packets_in, 0);
	ck_assert_uint_eq(members_count(gossip_members(w.n[0].g)), 1);
}
END_TEST

/* ---------------------------------------------------------------- hostile packets */

static void raw_send(uv_udp_t *u, uint16_t port, const uint8_t *p, size_t len)
{
	struct sockaddr_in to;
	uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);

	ck_assert_int_eq(uv_ip4_addr("127.0.0.1", port, &to), 0);
	ck_assert_int_eq(uv_udp_try_send(u, &b, 1, (const struct sockaddr *)&to), (int)len);
}

static size_t seal_ack(struct wire_gossip_sender *s, const struct wire_keyring *key,
		       uint64_t seq, uint8_t *out, size_t cap)
{
	struct wire_gossip g;
	size_t len;

	memset(&g, 0, sizeof(g));
	g.type = WIRE_GOSSIP_ACK;
	g.seq = seq;
	ck_assert_int_eq(wire_gossip_seal(s, key, &g, out, cap, &len, NULL), 0);
	return len;
}

static bool hostile_counted(void *arg)
{
	struct gossip_stats st;

	gossip_stats(((struct node *)arg)->g, &st);
	return st.rejected[GOSSIP_REJ_VERSION] >= 1 && st.rejected[GOSSIP_REJ_TAMPERED] >= 2 &&
	       st.rejected[GOSSIP_REJ_REPLAY] >= 1 && st.rejected[GOSSIP_REJ_AUTH] >= 1 &&
	       st.rejected[GOSSIP_REJ_MALFORMED] >= 1 && st.accepted >= 1;
}

START_TEST(test_hostile_packets_counted_by_reason)
{
	struct wire_gossip_sender mallory;
	struct sockaddr_in sin;
	uint8_t pkt[2048], junk[300];
	uv_udp_t *raw = &w.raw;
	uint16_t pa;
	size_t len;
	int k = 2;

	start_cluster(1);
	ck_assert_uint_ne(run_until(all_alive, &k, 2000), UINT64_MAX);
	pa = gossip_port(w.n[0].g);
	ck_assert_int_eq(uv_udp_init(&w.loop, raw), 0);
	ck_assert_int_eq(uv_ip4_addr("127.0.0.1", 0, &sin), 0);
	ck_assert_int_eq(uv_udp_bind(raw, (const struct sockaddr *)&sin, 0), 0);
	ck_assert_int_eq(wire_gossip_sender_init(&mallory, "mallory", 1), 0);

	memset(junk, 0x5a, sizeof(junk));
	junk[0] = 7;                                   /* another packet version */
	raw_send(raw, pa, junk, sizeof(junk));
	junk[0] = 1;                                   /* right version, garbage after it */
	raw_send(raw, pa, junk, sizeof(junk));
	len = seal_ack(&mallory, w.key, 2ull << 32, pkt, sizeof(pkt)); /* an authentic GOSSIP */
	raw_send(raw, pa, pkt, len);
	raw_send(raw, pa, pkt, len);                  /* the same again: a replay */
	len = seal_ack(&mallory, w.key, 2ull << 32, pkt, sizeof(pkt));
	pkt[len - 1] ^= 1;                             /* a fresh packet, tampered */
	raw_send(raw, pa, pkt, len);
	len = seal_ack(&mallory, w.other, 0, pkt, sizeof(pkt));        /* another key */
	raw_send(raw, pa, pkt, len);
	len = seal_ack(&mallory, w.key, 9ull << 32, pkt, sizeof(pkt)); /* unknown kind */
	raw_send(raw, pa, pkt, len);
	raw_send(raw, pa, junk, 0);                   /* empty datagram */

	ck_assert_uint_ne(run_until(hostile_counted, &w.n[0], 1000), UINT64_MAX);
	/* Still serving: the two nodes keep each other alive, and mallory (no record of its
	 * own) was never added. */
	run_until(NULL, NULL, 300);
	ck_assert(sees(&w.n[0], "node-b", MEMBERS_ALIVE));
	ck_assert(sees(&w.n[1], "node-a", MEMBERS_ALIVE));
	ck_assert_ptr_null(members_find(gossip_members(w.n[0].g), "mallory"));
	ck_assert_uint_ge(counter_value(&w.n[0], "llmlimit_gossip_rejected_total",
					"reason=\"tampered\""), 2);
	ck_assert_uint_ge(counter_value(&w.n[0], "llmlimit_gossip_rejected_total",
					"reason=\"replay\""), 1);
	uv_close((uv_handle_t *)raw, NULL);
}
END_TEST

/* ---------------------------------------------------------------- the wire mapping */

static struct members_update rec(const char *id, const char *host, uint16_t port, uint8_t st)
{
	struct members_update u;

	memset(&u, 0, sizeof(u));
	strcpy(u.id, id);
	strcpy(u.host, host);
	u.port = u.peer_port = port;
	u.http_port = 8080;
	u.state = st;
	u.incarnation = 77;
	return u;
}

/* msg -> wire -> sealed packet -> opened -> msg, as between two nodes. */
static int round_trip(const struct members_msg *in, struct members_msg *out,
		      struct members_update **dec, size_t *dec_cap)
{
	static uint64_t epoch = 1;
	struct wire_gossip_sender s;
	struct wire_member *enc = NULL;
	struct wire_replay *rp;
	struct wire_gossip wg, got;
	struct sockaddr_in src;
	size_t enc_cap = 0, len;
	uint8_t pkt[WIRE_GOSSIP_PACKET_MAX];
	int err;

	ck_assert_int_eq(wire_gossip_sender_init(&s, in->from, epoch++), 0);
	ck_assert_int_eq(wire_replay_new(&rp, 4), 0);
	ck_assert_int_eq(gossip__msg_to_wire(in, &wg, &enc, &enc_cap), 0);
	ck_assert_int_eq(wire_gossip_seal(&s, w.key, &wg, pkt, sizeof(pkt), &len, NULL), 0);
	ck_assert_int_eq(wire_gossip_open(rp, w.key, pkt, len, &got), 0);
	ck_assert_int_eq(uv_ip4_addr("10.1.2.3", 4567, &src), 0);
	err = gossip__msg_from_wire(&got, (const struct sockaddr *)&src, out, dec, dec_cap);
	wire_gossip_close(&got);
	wire_replay_free(rp);
	free(enc);
	return err;
}

START_TEST(test_wire_mapping)
{
	static const uint8_t types[] = { MEMBERS_PING, MEMBERS_ACK, MEMBERS_PING_REQ, MEMBERS_NACK,
					 MEMBERS_GOSSIP, MEMBERS_PUSH_PULL,
					 MEMBERS_PUSH_PULL_REPLY };
	struct members_update u[3], *dec = NULL;
	struct members_msg in, out;
	struct wire_gossip wg;
	struct wire_member *enc = NULL;
	size_t i, dec_cap = 0, enc_cap = 0;

	u[0] = rec("node-a", "a.example", 7001, MEMBERS_ALIVE);       /* the sender's own */
	u[1] = rec("node-c", "10.0.0.3", 7003, MEMBERS_SUSPECT);
	u[2] = rec("node-d", "10.0.0.4", 7004, MEMBERS_LEFT);
	for (i = 0; i < sizeof(types); i++) {
		memset(&in, 0, sizeof(in));
		in.type = types[i];
		in.seq = 0xfedcba98u;
		strcpy(in.from, "node-a");
		strcpy(in.from_host, "a.example");
		in.from_port = 7001;
		if (in.type == MEMBERS_PING || in.type == MEMBERS_PING_REQ)
			strcpy(in.target, "node-b");
		if (in.type == MEMBERS_PING_REQ) {
			strcpy(in.target_host, "10.0.0.2");
			in.target_port = 7002;
		}
		in.updates = u;
		in.n_updates = 3;
		ck_assert_int_eq(round_trip(&in, &out, &dec, &dec_cap), 0);
		ck_assert_uint_eq(out.type, in.type);
		ck_assert_uint_eq(out.seq, in.seq);
		ck_assert_str_eq(out.from, "node-a");
		ck_assert_str_eq(out.from_host, "a.example");
		ck_assert_uint_eq(out.from_port, 7001);
		ck_assert_str_eq(out.target, in.target);
		ck_assert_str_eq(out.target_host, in.target_host);
		ck_assert_uint_eq(out.target_port, in.target_port);
		ck_assert_uint_eq(out.n_updates, 3);  /* the PING_REQ target record is taken out */
		ck_assert_str_eq(out.updates[1].id, "node-c");
		ck_assert_str_eq(out.updates[1].host, "10.0.0.3");
		ck_assert_uint_eq(out.updates[1].port, 7003);
		ck_assert_uint_eq(out.updates[1].peer_port, 7003);
		ck_assert_uint_eq(out.updates[1].http_port, 8080);
		ck_assert_uint_eq(out.updates[1].state, MEMBERS_SUSPECT);
		ck_assert_uint_eq(out.updates[1].incarnation, 77);
		ck_assert_str_eq(out.updates[2].from, "");  /* the accuser does not travel */
	}
	/* Without a record of its own, the sender is answered where its packet came from. */
	in.type = MEMBERS_GOSSIP;
	in.updates = &u[1];
	in.n_updates = 1;
	ck_assert_int_eq(round_trip(&in, &out, &dec, &dec_cap), 0);
	ck_assert_str_eq(out.from_host, "10.1.2.3");
	ck_assert_uint_eq(out.from_port, 4567);
	free(dec);

	/* Malformed mappings: a kind on a PING, a PING_REQ without its target record. */
	memset(&wg, 0, sizeof(wg));
	wg.type = WIRE_GOSSIP_PING;
	wg.seq = 1ull << 32;
	strcpy(wg.from, "node-a");
	dec = NULL;
	dec_cap = 0;
	ck_assert_int_eq(gossip__msg_from_wire(&wg, NULL, &out, &dec, &dec_cap), -EBADMSG);
	wg.type = WIRE_GOSSIP_PING_REQ;
	wg.seq = 1;
	strcpy(wg.target, "node-b");
	ck_assert_int_eq(gossip__msg_from_wire(&wg, NULL, &out, &dec, &dec_cap), -EBADMSG);
	/* An unknown members type does not map. */
	in.type = 99;
	ck_assert_int_eq(gossip__msg_to_wire(&in, &wg, &enc, &enc_cap), -EINVAL);
	free(enc);
	free(dec);
}
END_TEST

static Suite *gossip_suite(void)
{
	Suite *s = suite_create("gossip");
	TCase *tc = tcase_create("udp");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 15);
	tcase_add_test(tc, test_wire_mapping);
	tcase_add_test(tc, test_join_through_named_seed);
	tcase_add_test(tc, test_killed_node_found_dead);
	tcase_add_test(tc, test_graceful_leave_seen_at_once);
	tcase_add_test(tc, test_other_key_never_joins);
	tcase_add_test(tc, test_other_key_alone_says_why);
	tcase_add_test(tc, test_seed_that_is_self_is_skipped);
	tcase_add_test(tc, test_wildcard_bind);
	tcase_add_test(tc, test_hostile_packets_counted_by_reason);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(gossip_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
