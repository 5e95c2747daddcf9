/* check_members.c — unit tests for src/gossip/members: the SWIM state machine, through scripted
 * event sequences with an injected clock, and through a simulated network of state machines
 * (latency, loss, partitions, killed and restarted nodes) that checks the timing targets of the
 * default configuration: a killed node detected within 3 s, a join spread within 2 s, no false
 * dead over 10 minutes at 5 % loss, and convergence after a partition heals. */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/members.h"

#define NMAX 8
#define BASE_PORT 7000

/* ---------------------------------------------------------------- a simulated network */

struct packet {
	uint64_t at;
	int to;
	struct members_msg msg;
	struct members_update *upd;  /* owned copy, as a decoder would produce */
};

struct sim {
	struct members *m[NMAX];
	int n;
	bool down[NMAX];    /* killed: neither ticks nor receives */
	int group[NMAX];    /* partition: packets cross only within a group */
	uint64_t now;
	uint64_t rng;
	unsigned loss_pm;   /* per-mille packet loss */
	struct packet *q;
	size_t nq, capq;
	struct members_actions act;
	/* Observed transitions, by every observer. */
	unsigned to_dead, to_left, to_suspect, ring_changes;
	uint64_t sent, lost;
};

static uint64_t sim_rand(struct sim *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

static char node_id_buf[NMAX][16];

static const char *node_id(int i)
{
	snprintf(node_id_buf[i], sizeof(node_id_buf[i]), "n%d", i);
	return node_id_buf[i];
}

static void node_config(struct members_config *c, int i, uint64_t inc, uint64_t seed,
			const struct members_seed *seeds, size_t n_seeds)
{
	members_config_default(c);
	c->id = node_id(i);
	c->host = "127.0.0.1";
	c->port = (uint16_t)(BASE_PORT + i);
	c->peer_port = (uint16_t)(8000 + i);
	c->incarnation = inc;
	c->rng_seed = seed * 7919 + (uint64_t)i;
	c->seeds = seeds;
	c->n_seeds = n_seeds;
}

/* Every node but n0 uses n0 as its seed. */
static void sim_start_node(struct sim *s, int i, uint64_t inc, uint64_t seed)
{
	static const struct members_seed seed0 = { "127.0.0.1", BASE_PORT };
	struct members_config c;

	node_config(&c, i, inc, seed, &seed0, i ? 1 : 0);
	ck_assert_int_eq(members_new(&s->m[i], &c, s->now), 0);
	s->down[i] = false;
}

static void sim_init(struct sim *s, int n, uint64_t seed)
{
	int i;

	memset(s, 0, sizeof(*s));
	s->n = n;
	s->rng = seed * 0x9e3779b97f4a7c15ull + 1;
	members_actions_init(&s->act);
	for (i = 0; i < n; i++)
		sim_start_node(s, i, 1, seed);
}

static void sim_free(struct sim *s)
{
	size_t i;
	int j;

	for (j = 0; j < s->n; j++)
		members_free(s->m[j]);
	for (i = 0; i < s->nq; i++)
		free(s->q[i].upd);
	free(s->q);
	members_actions_close(&s->act);
}

static void sim_kill(struct sim *s, int i)
{
	s->down[i] = true;
}

static void enqueue(struct sim *s, const struct members_action *a)
{
	int to = a->to_port - BASE_PORT, from = a->msg.from_port - BASE_PORT;
	struct packet *p;

	s->sent++;
	if (to < 0 || to >= s->n || s->group[to] != s->group[from] ||
	    sim_rand(s) % 1000 < s->loss_pm) {
		s->lost++;
		return;
	}
	if (s->nq == s->capq) {
		s->capq = s->capq ? 2 * s->capq : 64;
		s->q = realloc(s->q, s->capq * sizeof(*s->q));
		ck_assert_ptr_nonnull(s->q);
	}
	p = &s->q[s->nq++];
	p->at = s->now + 1 + sim_rand(s) % 2;  /* 1-2 ms one way */
	p->to = to;
	p->msg = a->msg;
	p->upd = NULL;
	if (a->msg.n_updates) {
		p->upd = malloc(a->msg.n_updates * sizeof(*p->upd));
		ck_assert_ptr_nonnull(p->upd);
		memcpy(p->upd, a->msg.updates, a->msg.n_updates * sizeof(*p->upd));
	}
	p->msg.updates = p->upd;
}

/* Carries out the actions a node just produced: packets into the network, changes counted. */
static void dispatch(struct sim *s)
{
	const struct members_action *a;
	size_t k;

	for (k = 0; k < s->act.n; k++) {
		a = &s->act.v[k];
		if (a->type == MEMBERS_ACT_SEND) {
			enqueue(s, a);
		} else if (a->type == MEMBERS_ACT_RING) {
			s->ring_changes++;
		} else if (a->type == MEMBERS_ACT_STATE) {
			s->to_dead += a->member.state == MEMBERS_DEAD;
			s->to_left += a->member.state == MEMBERS_LEFT;
			s->to_suspect += a->member.state == MEMBERS_SUSPECT;
		}
	}
	members_actions_reset(&s->act);
}

/* Advances simulated time to `until`, delivering packets and running timers in time order. */
static void sim_run(struct sim *s, uint64_t until)
{
	uint64_t next, t;
	size_t k, best;
	unsigned steps = 0;
	struct packet p;
	int i;

	for (;;) {
		ck_assert_uint_lt(++steps, 50000000);  /* a timer that never advances */
		next = UINT64_MAX;
		for (i = 0; i < s->n; i++)
			if (!s->down[i] && (t = members_next_deadline(s->m[i])) < next)
				next = t;
		for (k = 0; k < s->nq; k++)
			if (s->q[k].at < next)
				next = s->q[k].at;
		if (next > until) {
			s->now = until;
			return;
		}
		if (next > s->now)
			s->now = next;
		/* Every packet due, oldest first; a reply due at once is picked up next round. */
		for (;;) {
			best = s->nq;
			for (k = 0; k < s->nq; k++)
				if (s->q[k].at <= s->now && (best == s->nq || s->q[k].at < s->q[best].at))
					best = k;
			if (best == s->nq)
				break;
			p = s->q[best];
			s->q[best] = s->q[--s->nq];
			if (!s->down[p.to] && s->group[p.to] == s->group[p.msg.from_port - BASE_PORT]) {
				ck_assert_int_eq(members_on_msg(s->m[p.to], &p.msg, s->now, &s->act), 0);
				dispatch(s);
			}
			free(p.upd);
		}
		for (i = 0; i < s->n; i++) {
			if (s->down[i] || members_next_deadline(s->m[i]) > s->now)
				continue;
			ck_assert_int_eq(members_tick(s->m[i], s->now, &s->act), 0);
			dispatch(s);
		}
	}
}

/* The state node `obs` holds for node `about`; -1 when unknown. */
static int state_of(const struct sim *s, int obs, int about)
{
	const struct members_info *x = members_find(s->m[obs], node_id(about));

	return x ? (int)x->state : -1;
}

/* Whether every live node other than `about` holds it in `st`. */
static bool all_see(const struct sim *s, int about, int st)
{
	int i;

	for (i = 0; i < s->n; i++)
		if (i != about && !s->down[i] && state_of(s, i, about) != st)
			return false;
	return true;
}

static bool converged(const struct sim *s)
{
	int i, j;

	for (i = 0; i < s->n; i++)
		for (j = 0; j < s->n; j++)
			if (!s->down[i] && !s->down[j] && state_of(s, i, j) != MEMBERS_ALIVE)
				return false;
	return true;
}

/* Runs in 10 ms steps until cond holds or `limit` ms pass; returns the time it took. */
static uint64_t sim_until(struct sim *s, bool (*cond)(const struct sim *, int, int), int a,
			  int b, uint64_t limit)
{
	uint64_t t0 = s->now;

	while (!cond(s, a, b) && s->now - t0 < limit)
		sim_run(s, s->now + 10);
	return s->now - t0;
}

static bool cond_all_see(const struct sim *s, int about, int st)
{
	return all_see(s, about, st);
}

static bool cond_converged(const struct sim *s, int a, int b)
{
	(void)a;
	(void)b;
	return converged(s);
}

/* ---------------------------------------------------------------- scripted helpers */

/* A lone node n0 (no seeds) at time 0, with its own action list. */
static struct members *m0;
static struct members_actions act;
/* m0's clock: scripted events and ticks never go backwards. */
static uint64_t now0;
/* Nodes that answer m0's PINGs (with a bare ACK) when tick0() runs m0's timers. */
static bool answers[NMAX];


static void setup(void)
{
	struct members_config c;

	now0 = 0;
	memset(answers, 0, sizeof(answers));
	node_config(&c, 0, 1, 1, NULL, 0);
	ck_assert_int_eq(members_new(&m0, &c, 0), 0);
	members_actions_init(&act);
}

static void teardown(void)
{
	members_free(m0);
	members_actions_close(&act);
}

static struct members_update upd(int i, int st, uint64_t inc, const char *from)
{
	struct members_update u;

	memset(&u, 0, sizeof(u));
	strcpy(u.id, node_id(i));
	strcpy(u.from, from);
	strcpy(u.host, "127.0.0.1");
	u.port = (uint16_t)(BASE_PORT + i);
	u.peer_port = (uint16_t)(8000 + i);
	u.state = (uint8_t)st;
	u.incarnation = inc;
	return u;
}

static struct members_msg msg_from(int i, int type, uint32_t seq, const struct members_update *u,
				   size_t n)
{
	struct members_msg g;

	memset(&g, 0, sizeof(g));
	g.type = (uint8_t)type;
	g.seq = seq;
	strcpy(g.from, node_id(i));
	strcpy(g.from_host, "127.0.0.1");
	g.from_port = (uint16_t)(BASE_PORT + i);
	g.updates = u;
	g.n_updates = n;
	return g;
}

static void at(uint64_t t)
{
	ck_assert_uint_ge(t, now0);
	now0 = t;
}

/* Feeds m0 one GOSSIP from node `from` carrying `u`, at now0. */
static void gossip(int from, struct members_update u)
{
	struct members_msg g = msg_from(from, MEMBERS_GOSSIP, 0, &u, 1);

	ck_assert_int_eq(members_on_msg(m0, &g, now0, &act), 0);
}

static int st0(int about)
{
	const struct members_info *x = members_find(m0, node_id(about));

	return x ? (int)x->state : -1;
}

static uint64_t inc0(int about)
{
	return members_find(m0, node_id(about))->incarnation;
}

/* The first action of `type` (and, for SEND, of message type `mtype`), or NULL. */
static const struct members_action *find_act(const struct members_actions *a, int type, int mtype)
{
	size_t k;

	for (k = 0; k < a->n; k++)
		if (a->v[k].type == type && (type != MEMBERS_ACT_SEND || a->v[k].msg.type == mtype))
			return &a->v[k];
	return NULL;
}

static size_t count_act(const struct members_actions *a, int type, int mtype)
{
	size_t k, c = 0;

	for (k = 0; k < a->n; k++)
		c += a->v[k].type == type && (type != MEMBERS_ACT_SEND || a->v[k].msg.type == mtype);
	return c;
}

/* Whether message `g` carries an update about `id` in state `st` at incarnation `inc`. */
static bool carries(const struct members_msg *g, const char *id, int st, uint64_t inc)
{
	size_t k;

	for (k = 0; k < g->n_updates; k++)
		if (!strcmp(g->updates[k].id, id) && g->updates[k].state == st &&
		    g->updates[k].incarnation == inc)
			return true;
	return false;
}

/* Runs m0's timers up to `until`; PINGs to nodes in answers[] get an ACK at once. */
static void tick0(uint64_t until)
{
	struct members_msg ack;
	uint64_t t;
	size_t k, from;
	int to;

	while ((t = members_next_deadline(m0)) <= until) {
		at(t > now0 ? t : now0);
		from = act.n;
		ck_assert_int_eq(members_tick(m0, now0, &act), 0);
		for (k = from; k < act.n; k++) {
			to = act.v[k].to_port - BASE_PORT;
			if (act.v[k].type != MEMBERS_ACT_SEND || act.v[k].msg.type != MEMBERS_PING ||
			    to < 0 || to >= NMAX || !answers[to])
				continue;
			ack = msg_from(to, MEMBERS_ACK, act.v[k].msg.seq, NULL, 0);
			ck_assert_int_eq(members_on_msg(m0, &ack, now0, &act), 0);
		}
	}
	at(until);
}

/* m0 learns of n1..n(k) as ALIVE at incarnation 1. */
static void know(int k)
{
	int i;

	for (i = 1; i <= k; i++)
		gossip(i, upd(i, MEMBERS_ALIVE, 1, node_id(i)));
}

/* ---------------------------------------------------------------- scripted sequences */

START_TEST(test_join_via_seed)
{
	const struct members_action *a;
	const char *ids[4];
	struct sim s;

	sim_init(&s, 2, 1);
	/* n1 is alone with a seed: its first tick sends its full state to the seed address. */
	ck_assert_int_eq(members_tick(s.m[1], 0, &s.act), 0);
	a = find_act(&s.act, MEMBERS_ACT_SEND, MEMBERS_PUSH_PULL);
	ck_assert_ptr_nonnull(a);
	ck_assert_str_eq(a->to_id, "");
	ck_assert_uint_eq(a->to_port, BASE_PORT);
	ck_assert(carries(&a->msg, "n1", MEMBERS_ALIVE, 1));
	dispatch(&s);
	ck_assert_int_eq(state_of(&s, 0, 1), -1);
	sim_run(&s, 10);
	/* The seed added n1 and its reply taught n1 about the seed. */
	ck_assert_int_eq(state_of(&s, 0, 1), MEMBERS_ALIVE);
	ck_assert_int_eq(state_of(&s, 1, 0), MEMBERS_ALIVE);
	ck_assert_uint_ge(s.ring_changes, 2);
	ck_assert_uint_eq(members_ring_ids(s.m[0], ids, 4), 2);
	ck_assert_uint_eq(members_ring_ids(s.m[1], ids, 4), 2);
	ck_assert_uint_eq(members_counters(s.m[0])->joins, 1);
	ck_assert_uint_eq(members_find(s.m[0], "n1")->peer_port, 8001);
	ck_assert_uint_ge(members_find(s.m[0], "n1")->last_seen_ms, 1);
	sim_free(&s);
}
END_TEST

START_TEST(test_probe_indirect_then_suspect)
{
	const struct members_action *a, *ping;
	const struct members_counters *c = members_counters(m0);
	char target[MEMBERS_ID_MAX + 1];
	uint64_t t0;
	size_t k;

	know(3);
	members_actions_reset(&act);
	do {
		t0 = members_next_deadline(m0);
		tick0(t0);
	} while (!(ping = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_PING)));
	ck_assert_uint_lt(t0, 200);  /* a random phase within the first interval */
	ck_assert_str_eq(ping->msg.target, ping->to_id);
	ck_assert(carries(&ping->msg, "n0", MEMBERS_ALIVE, 1));  /* our own join rumor */
	strcpy(target, ping->to_id);
	/* No ACK: after probe_timeout, PING_REQs go to the other two (k = 3, capped). */
	tick0(t0 + 99);
	ck_assert_uint_eq(count_act(&act, MEMBERS_ACT_SEND, MEMBERS_PING_REQ), 0);
	tick0(t0 + 100);
	ck_assert_uint_eq(count_act(&act, MEMBERS_ACT_SEND, MEMBERS_PING_REQ), 2);
	for (k = 0; k < act.n; k++) {
		a = &act.v[k];
		if (a->type != MEMBERS_ACT_SEND || a->msg.type != MEMBERS_PING_REQ)
			continue;
		ck_assert_str_ne(a->to_id, target);
		ck_assert_str_eq(a->msg.target, target);
		ck_assert_uint_eq(a->msg.target_port, BASE_PORT + target[1] - '0');
		ck_assert_uint_eq(a->msg.seq, ping->msg.seq);
	}
	/* No relayed ACK either: at the end of the interval the target is suspected. */
	tick0(t0 + 199);
	ck_assert_int_eq(st0(target[1] - '0'), MEMBERS_ALIVE);
	tick0(t0 + 200);
	ck_assert_int_eq(st0(target[1] - '0'), MEMBERS_SUSPECT);
	a = find_act(&act, MEMBERS_ACT_STATE, 0);
	ck_assert_ptr_nonnull(a);
	ck_assert_str_eq(a->member.id, target);
	ck_assert_int_eq(a->prev, MEMBERS_ALIVE);
	ck_assert_uint_eq(c->probes, 2);  /* the next probe started at t0 + 200 */
	ck_assert_uint_eq(c->indirect_probes, 2);
	ck_assert_uint_eq(c->probe_failures, 1);
	ck_assert_uint_eq(c->suspicions, 1);
	/* Lifeguard: both helpers failed to NACK, which counts against our own health. */
	ck_assert_uint_eq(members_health(m0), 2);
}
END_TEST

START_TEST(test_indirect_ack_and_nack)
{
	struct members_msg g;
	const struct members_action *ping;
	uint64_t t0;
	uint32_t seq;

	know(3);
	members_actions_reset(&act);
	do {
		t0 = members_next_deadline(m0);
		tick0(t0);
	} while (!(ping = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_PING)));
	tick0(t0 + 100);
	ping = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_PING);
	seq = ping->msg.seq;
	/* A helper relays the target's ACK: the probe succeeds, nobody is suspected. */
	at(t0 + 150);
	g = msg_from(ping->to_id[1] == '1' ? 2 : 1, MEMBERS_ACK, seq, NULL, 0);
	ck_assert_int_eq(members_on_msg(m0, &g, now0, &act), 0);
	ck_assert_uint_eq(members_counters(m0)->acks, 1);
	answers[1] = answers[2] = answers[3] = true;
	tick0(t0 + 5000);
	ck_assert_uint_eq(members_counters(m0)->suspicions, 0);
	ck_assert_uint_eq(members_health(m0), 0);
	/* A NACK for a probe that is no longer running changes nothing. */
	g = msg_from(1, MEMBERS_NACK, seq, NULL, 0);
	ck_assert_int_eq(members_on_msg(m0, &g, now0, &act), 0);
	ck_assert_uint_eq(members_counters(m0)->nacks, 0);
}
END_TEST

START_TEST(test_relay_for_ping_req)
{
	const struct members_action *a;
	struct members_msg g;
	uint32_t seq;

	know(2);
	/* n1 asks us to ping n2: we ping n2 with a seq of our own... */
	at(1000);
	members_actions_reset(&act);
	g = msg_from(1, MEMBERS_PING_REQ, 77, NULL, 0);
	strcpy(g.target, "n2");
	strcpy(g.target_host, "127.0.0.1");
	g.target_port = BASE_PORT + 2;
	ck_assert_int_eq(members_on_msg(m0, &g, now0, &act), 0);
	a = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_PING);
	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq(a->to_port, BASE_PORT + 2);
	ck_assert_str_eq(a->msg.target, "n2");
	seq = a->msg.seq;
	/* ... and forward n2's ACK to n1 under n1's seq. */
	members_actions_reset(&act);
	g = msg_from(2, MEMBERS_ACK, seq, NULL, 0);
	ck_assert_int_eq(members_on_msg(m0, &g, now0, &act), 0);
	a = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_ACK);
	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq(a->to_port, BASE_PORT + 1);
	ck_assert_uint_eq(a->msg.seq, 77);
	/* Without an ACK, a NACK goes back before the requester's own deadline. */
	at(2000);
	g = msg_from(1, MEMBERS_PING_REQ, 78, NULL, 0);
	strcpy(g.target, "n2");
	strcpy(g.target_host, "127.0.0.1");
	g.target_port = BASE_PORT + 2;
	ck_assert_int_eq(members_on_msg(m0, &g, now0, &act), 0);
	members_actions_reset(&act);
	answers[1] = answers[2] = true;
	tick0(2079);
	ck_assert_ptr_null(find_act(&act, MEMBERS_ACT_SEND, MEMBERS_NACK));
	tick0(2080);
	a = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_NACK);
	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq(a->msg.seq, 78);
	ck_assert_uint_eq(a->to_port, BASE_PORT + 1);
}
END_TEST

START_TEST(test_suspect_then_refute)
{
	struct members_update u = upd(0, MEMBERS_SUSPECT, 1, "n1");
	struct members_msg g = msg_from(1, MEMBERS_PING, 5, &u, 1);
	const struct members_action *a;

	/* We hear that n1 suspects us: we refute with a higher incarnation, and the ACK carries
	 * it back at once. */
	know(2);
	members_actions_reset(&act);
	strcpy(g.target, "n0");
	ck_assert_int_eq(members_on_msg(m0, &g, 10, &act), 0);
	ck_assert_uint_eq(members_incarnation(m0), 2);
	ck_assert_uint_eq(members_counters(m0)->refutations, 1);
	a = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_ACK);
	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq(a->msg.seq, 5);
	ck_assert(carries(&a->msg, "n0", MEMBERS_ALIVE, 2));
	/* An older accusation does not bump it again. */
	u.incarnation = 1;
	ck_assert_int_eq(members_on_msg(m0, &g, 11, &act), 0);
	ck_assert_uint_eq(members_incarnation(m0), 2);
}
END_TEST

START_TEST(test_refutation_overrides_suspicion)
{
	/* The accuser's side: n1 is suspected here; its refutation (alive, higher incarnation)
	 * makes it ALIVE again and it is never declared dead. */
	know(2);
	answers[1] = answers[2] = true;
	at(1000);
	gossip(2, upd(1, MEMBERS_SUSPECT, 1, "n2"));
	ck_assert_int_eq(st0(1), MEMBERS_SUSPECT);
	tick0(1500);
	gossip(1, upd(1, MEMBERS_ALIVE, 1, "n1"));  /* same incarnation: not a refutation */
	ck_assert_int_eq(st0(1), MEMBERS_SUSPECT);
	gossip(1, upd(1, MEMBERS_ALIVE, 2, "n1"));
	ck_assert_int_eq(st0(1), MEMBERS_ALIVE);
	ck_assert_uint_eq(inc0(1), 2);
	tick0(20000);
	ck_assert_int_eq(st0(1), MEMBERS_ALIVE);
	ck_assert_uint_eq(members_counters(m0)->deaths, 0);
}
END_TEST

START_TEST(test_suspect_then_dead)
{
	const struct members_action *a;
	struct members_config c;

	/* Three members: too few for Lifeguard confirmations, so the timeout is the minimum,
	 * suspicion_mult * probe_interval = 4 * 210 ms (an interval off the 200 ms gossip grid,
	 * so that only the suspicion timer can be due when it expires). */
	members_free(m0);
	node_config(&c, 0, 1, 1, NULL, 0);
	c.probe_interval_ms = 210;
	ck_assert_int_eq(members_new(&m0, &c, 0), 0);
	know(2);
	answers[1] = answers[2] = true;
	tick0(1000);
	at(1037);
	gossip(2, upd(1, MEMBERS_SUSPECT, 1, "n2"));
	members_actions_reset(&act);
	tick0(1876);
	ck_assert_int_eq(st0(1), MEMBERS_SUSPECT);
	ck_assert_uint_eq(members_next_deadline(m0), 1877);  /* the driver's timer must fire */
	tick0(1877);
	ck_assert_int_eq(st0(1), MEMBERS_DEAD);
	ck_assert_uint_eq(members_counters(m0)->deaths, 1);
	ck_assert_ptr_nonnull(find_act(&act, MEMBERS_ACT_RING, 0));
	a = find_act(&act, MEMBERS_ACT_STATE, 0);
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(a->member.state, MEMBERS_DEAD);
	ck_assert_int_eq(a->prev, MEMBERS_SUSPECT);
	/* The verdict spreads: the next message out carries it. */
	members_actions_reset(&act);
	tick0(2400);
	a = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_PING);
	ck_assert_ptr_nonnull(a);
	ck_assert(carries(&a->msg, "n1", MEMBERS_DEAD, 1));
	ck_assert_str_ne(a->to_id, "n1");  /* dead members are not probed */
}
END_TEST

START_TEST(test_lifeguard_confirmations)
{
	/* Five members: k = suspicion_mult - 2 = 2 confirmations expected; the timeout runs from
	 * max = 3 * 800 ms down to min = 800 ms as independent accusers confirm. */
	know(4);
	answers[1] = answers[2] = answers[3] = answers[4] = true;
	at(1000);
	gossip(2, upd(1, MEMBERS_SUSPECT, 1, "n2"));
	tick0(3399);
	ck_assert_int_eq(st0(1), MEMBERS_SUSPECT);
	tick0(3400);
	ck_assert_int_eq(st0(1), MEMBERS_DEAD);

	/* Two new accusers: down to the minimum. */
	gossip(1, upd(1, MEMBERS_ALIVE, 2, "n1"));
	at(10000);
	gossip(2, upd(1, MEMBERS_SUSPECT, 2, "n2"));
	gossip(3, upd(1, MEMBERS_SUSPECT, 2, "n3"));
	gossip(2, upd(1, MEMBERS_SUSPECT, 2, "n2"));  /* the first accuser again: no count */
	tick0(10799);
	ck_assert_int_eq(st0(1), MEMBERS_SUSPECT);
	at(10799);
	gossip(4, upd(1, MEMBERS_SUSPECT, 2, "n4"));
	tick0(10800);
	ck_assert_int_eq(st0(1), MEMBERS_DEAD);

	/* One confirmation: 2400 - 1600 * log(2) / log(3), about 1.39 s. */
	gossip(1, upd(1, MEMBERS_ALIVE, 3, "n1"));
	at(20000);
	gossip(2, upd(1, MEMBERS_SUSPECT, 3, "n2"));
	gossip(3, upd(1, MEMBERS_SUSPECT, 3, "n3"));
	tick0(21380);
	ck_assert_int_eq(st0(1), MEMBERS_SUSPECT);
	tick0(21400);
	ck_assert_int_eq(st0(1), MEMBERS_DEAD);
}
END_TEST

START_TEST(test_dead_rejoins_with_higher_incarnation)
{
	const struct members_action *a;
	struct members_update u;

	know(2);
	gossip(2, upd(1, MEMBERS_DEAD, 1, "n2"));
	ck_assert_int_eq(st0(1), MEMBERS_DEAD);
	gossip(1, upd(1, MEMBERS_ALIVE, 1, "n1"));
	ck_assert_int_eq(st0(1), MEMBERS_DEAD);
	members_actions_reset(&act);
	/* A restarted process: higher incarnation, and it may have moved. */
	u = upd(1, MEMBERS_ALIVE, 1700000000, "n1");
	u.port = 7101;
	gossip(1, u);
	ck_assert_int_eq(st0(1), MEMBERS_ALIVE);
	ck_assert_uint_eq(members_find(m0, "n1")->port, 7101);
	ck_assert_ptr_nonnull(find_act(&act, MEMBERS_ACT_RING, 0));
	a = find_act(&act, MEMBERS_ACT_STATE, 0);
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(a->prev, MEMBERS_DEAD);
	ck_assert_int_eq(a->member.state, MEMBERS_ALIVE);
}
END_TEST

START_TEST(test_precedence_by_incarnation)
{
	know(1);
	gossip(1, upd(1, MEMBERS_ALIVE, 5, "n1"));
	ck_assert_uint_eq(inc0(1), 5);
	/* Anything older than what we hold is ignored. */
	gossip(1, upd(1, MEMBERS_ALIVE, 4, "n1"));
	gossip(2, upd(1, MEMBERS_SUSPECT, 4, "n2"));
	gossip(2, upd(1, MEMBERS_DEAD, 4, "n2"));
	gossip(1, upd(1, MEMBERS_LEFT, 4, "n1"));
	ck_assert_int_eq(st0(1), MEMBERS_ALIVE);
	ck_assert_uint_eq(inc0(1), 5);
	/* suspect(i) overrides alive(i); alive(i) does not override suspect(i); alive(i+1) does. */
	gossip(2, upd(1, MEMBERS_SUSPECT, 5, "n2"));
	ck_assert_int_eq(st0(1), MEMBERS_SUSPECT);
	gossip(1, upd(1, MEMBERS_ALIVE, 5, "n1"));
	ck_assert_int_eq(st0(1), MEMBERS_SUSPECT);
	gossip(1, upd(1, MEMBERS_ALIVE, 6, "n1"));
	ck_assert_int_eq(st0(1), MEMBERS_ALIVE);
	/* dead(i) overrides alive(i); suspect never overrides dead; left overrides dead. */
	gossip(2, upd(1, MEMBERS_DEAD, 6, "n2"));
	ck_assert_int_eq(st0(1), MEMBERS_DEAD);
	gossip(2, upd(1, MEMBERS_SUSPECT, 7, "n2"));
	ck_assert_int_eq(st0(1), MEMBERS_DEAD);
	gossip(1, upd(1, MEMBERS_LEFT, 6, "n1"));
	ck_assert_int_eq(st0(1), MEMBERS_LEFT);
	gossip(2, upd(1, MEMBERS_DEAD, 6, "n2"));
	ck_assert_int_eq(st0(1), MEMBERS_LEFT);
	gossip(1, upd(1, MEMBERS_ALIVE, 6, "n1"));
	ck_assert_int_eq(st0(1), MEMBERS_LEFT);
	gossip(1, upd(1, MEMBERS_ALIVE, 7, "n1"));
	ck_assert_int_eq(st0(1), MEMBERS_ALIVE);
	/* Rumors about unknown members other than ALIVE are ignored. */
	gossip(2, upd(5, MEMBERS_SUSPECT, 9, "n2"));
	gossip(2, upd(6, MEMBERS_DEAD, 9, "n2"));
	ck_assert_int_eq(st0(5), -1);
	ck_assert_int_eq(st0(6), -1);
}
END_TEST

START_TEST(test_self_refutes_dead_and_stale_self)
{
	struct members_update u;

	know(1);
	gossip(1, upd(0, MEMBERS_DEAD, 1, "n1"));
	ck_assert_uint_eq(members_incarnation(m0), 2);
	ck_assert_int_eq(st0(0), MEMBERS_ALIVE);
	gossip(1, upd(0, MEMBERS_LEFT, 2, "n1"));  /* we did not leave */
	ck_assert_uint_eq(members_incarnation(m0), 3);
	/* An older record of us that is ahead of our incarnation (a previous process of ours
	 * refuted more often): we jump past it. */
	gossip(1, upd(0, MEMBERS_ALIVE, 40, "n0"));
	ck_assert_uint_eq(members_incarnation(m0), 41);
	/* The same incarnation at another address: someone else uses our id; we refute. */
	u = upd(0, MEMBERS_ALIVE, 41, "n0");
	strcpy(u.host, "10.0.0.9");
	gossip(1, u);
	ck_assert_uint_eq(members_incarnation(m0), 42);
	/* Our own current record and older accusations change nothing. */
	gossip(1, upd(0, MEMBERS_ALIVE, 42, "n0"));
	gossip(1, upd(0, MEMBERS_SUSPECT, 41, "n1"));
	ck_assert_uint_eq(members_incarnation(m0), 42);
	ck_assert_uint_eq(members_counters(m0)->refutations, 4);
}
END_TEST

START_TEST(test_push_pull_merge)
{
	struct members_update u[3] = {
		upd(2, MEMBERS_ALIVE, 1, "n2"), upd(1, MEMBERS_DEAD, 1, "n2"),
		upd(3, MEMBERS_LEFT, 1, "n3"),
	};
	struct members_msg g = msg_from(2, MEMBERS_PUSH_PULL, 0, u, 3);
	const struct members_action *a;

	know(1);
	members_actions_reset(&act);
	ck_assert_int_eq(members_on_msg(m0, &g, 10, &act), 0);
	/* Another node's DEAD verdict is only a suspicion here; an unknown leaver is ignored. */
	ck_assert_int_eq(st0(1), MEMBERS_SUSPECT);
	ck_assert_int_eq(st0(2), MEMBERS_ALIVE);
	ck_assert_int_eq(st0(3), -1);
	a = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_PUSH_PULL_REPLY);
	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq(a->to_port, BASE_PORT + 2);
	ck_assert_uint_eq(a->msg.n_updates, 3);
	ck_assert(carries(&a->msg, "n0", MEMBERS_ALIVE, 1));
	ck_assert(carries(&a->msg, "n1", MEMBERS_SUSPECT, 1));
	ck_assert(carries(&a->msg, "n2", MEMBERS_ALIVE, 1));
	/* A reply is merged the same way but not answered. */
	members_actions_reset(&act);
	g.type = MEMBERS_PUSH_PULL_REPLY;
	ck_assert_int_eq(members_on_msg(m0, &g, 11, &act), 0);
	ck_assert_uint_eq(count_act(&act, MEMBERS_ACT_SEND, MEMBERS_PUSH_PULL_REPLY), 0);
}
END_TEST

START_TEST(test_ping_answers_and_misdirection)
{
	struct members_msg g = msg_from(1, MEMBERS_PING, 9, NULL, 0);
	const struct members_action *a;

	strcpy(g.target, "n0");
	ck_assert_int_eq(members_on_msg(m0, &g, 10, &act), 0);
	a = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_ACK);
	ck_assert_ptr_nonnull(a);
	/* The sender was unknown; the ACK goes to its return address. */
	ck_assert_uint_eq(a->to_port, BASE_PORT + 1);
	ck_assert_uint_eq(a->msg.seq, 9);
	members_actions_reset(&act);
	/* A PING for another id (our address used to be someone else's) is not answered. */
	strcpy(g.target, "n7");
	ck_assert_int_eq(members_on_msg(m0, &g, 11, &act), 0);
	ck_assert_uint_eq(count_act(&act, MEMBERS_ACT_SEND, MEMBERS_ACK), 0);
	ck_assert_uint_eq(members_counters(m0)->misdirected, 1);
	/* Our own packets (a seed list naming us) are ignored. */
	g = msg_from(0, MEMBERS_PUSH_PULL, 0, NULL, 0);
	ck_assert_int_eq(members_on_msg(m0, &g, 12, &act), 0);
	ck_assert_uint_eq(act.n, 0);
}
END_TEST

START_TEST(test_bad_messages)
{
	struct members_update u = upd(1, MEMBERS_ALIVE, 1, "n1");
	struct members_msg g, ok = msg_from(1, MEMBERS_GOSSIP, 0, &u, 1);

	g = ok;
	g.type = 42;
	ck_assert_int_eq(members_on_msg(m0, &g, 1, &act), -EBADMSG);
	g = ok;
	memset(g.from, 'a', sizeof(g.from));  /* unterminated */
	ck_assert_int_eq(members_on_msg(m0, &g, 1, &act), -EBADMSG);
	g = ok;
	g.from[0] = '\0';
	ck_assert_int_eq(members_on_msg(m0, &g, 1, &act), -EBADMSG);
	g = ok;
	g.from_port = 0;
	ck_assert_int_eq(members_on_msg(m0, &g, 1, &act), -EBADMSG);
	g = ok;
	g.type = MEMBERS_PING_REQ;  /* without a target */
	ck_assert_int_eq(members_on_msg(m0, &g, 1, &act), -EBADMSG);
	g = ok;
	g.updates = NULL;
	ck_assert_int_eq(members_on_msg(m0, &g, 1, &act), -EBADMSG);
	u.state = 4;
	ck_assert_int_eq(members_on_msg(m0, &ok, 1, &act), -EBADMSG);
	u = upd(1, MEMBERS_ALIVE, 1, "n1");
	strcpy(u.id, "has space");
	ck_assert_int_eq(members_on_msg(m0, &ok, 1, &act), -EBADMSG);
	u = upd(1, MEMBERS_ALIVE, 1, "n1");
	memset(u.host, 'h', sizeof(u.host));
	ck_assert_int_eq(members_on_msg(m0, &ok, 1, &act), -EBADMSG);
	u = upd(1, MEMBERS_ALIVE, 1, "n1");
	u.port = 0;
	ck_assert_int_eq(members_on_msg(m0, &ok, 1, &act), -EBADMSG);
	/* Nothing was applied, and each refusal was counted. */
	ck_assert_uint_eq(members_count(m0), 1);
	ck_assert_uint_eq(members_counters(m0)->bad_msgs, 10);
	ck_assert_uint_eq(act.n, 0);
	u = upd(1, MEMBERS_ALIVE, 1, "n1");
	ck_assert_int_eq(members_on_msg(m0, &ok, 1, &act), 0);
	ck_assert_uint_eq(members_count(m0), 2);
}
END_TEST

START_TEST(test_config_validation)
{
	struct members_seed bad_seed = { "127.0.0.1", 0 };
	struct members_config c;
	struct members *x = NULL;
	char long_id[MEMBERS_ID_MAX + 2];

	memset(long_id, 'i', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	node_config(&c, 1, 1, 1, NULL, 0);
	c.id = "";
	ck_assert_int_eq(members_new(&x, &c, 0), -EINVAL);
	c.id = "a b";
	ck_assert_int_eq(members_new(&x, &c, 0), -EINVAL);
	c.id = long_id;
	ck_assert_int_eq(members_new(&x, &c, 0), -EINVAL);
	long_id[MEMBERS_ID_MAX] = '\0';
	ck_assert_int_eq(members_new(&x, &c, 0), 0);
	members_free(x);
	node_config(&c, 1, 1, 1, NULL, 0);
	c.probe_timeout_ms = c.probe_interval_ms;
	ck_assert_int_eq(members_new(&x, &c, 0), -EINVAL);
	node_config(&c, 1, 1, 1, NULL, 0);
	c.max_members = 1;
	ck_assert_int_eq(members_new(&x, &c, 0), -EINVAL);
	node_config(&c, 1, 1, 1, &bad_seed, 1);
	ck_assert_int_eq(members_new(&x, &c, 0), -EINVAL);
	node_config(&c, 1, 1, 1, NULL, 0);
	c.port = 0;
	ck_assert_int_eq(members_new(&x, &c, 0), -EINVAL);
}
END_TEST

START_TEST(test_ring_ids_and_info)
{
	const char *ids[8];
	const struct members_info *me;
	size_t i, n;

	know(4);
	gossip(2, upd(1, MEMBERS_SUSPECT, 1, "n2"));
	gossip(2, upd(3, MEMBERS_DEAD, 1, "n2"));
	gossip(4, upd(4, MEMBERS_LEFT, 1, "n4"));
	/* Suspects keep their keys; dead and left members do not. */
	n = members_ring_ids(m0, ids, 8);
	ck_assert_uint_eq(n, 3);
	for (i = 0; i < n; i++)
		ck_assert(!strcmp(ids[i], "n0") || !strcmp(ids[i], "n1") || !strcmp(ids[i], "n2"));
	ck_assert_uint_eq(members_ring_ids(m0, ids, 1), 3);  /* the total, even when capped */
	ck_assert_uint_eq(members_count(m0), 5);
	me = members_at(m0, 0);
	ck_assert(me->self);
	ck_assert_str_eq(me->id, "n0");
	ck_assert_ptr_null(members_at(m0, 5));
	ck_assert_ptr_null(members_find(m0, "zz"));
}
END_TEST

START_TEST(test_table_full_evicts_dead)
{
	struct members_config c;

	members_free(m0);
	node_config(&c, 0, 1, 1, NULL, 0);
	c.max_members = 3;
	ck_assert_int_eq(members_new(&m0, &c, 0), 0);
	know(3);
	ck_assert_uint_eq(members_count(m0), 3);
	ck_assert_int_eq(st0(3), -1);
	ck_assert_uint_eq(members_counters(m0)->table_full, 1);
	gossip(1, upd(2, MEMBERS_DEAD, 1, "n1"));
	gossip(3, upd(3, MEMBERS_ALIVE, 1, "n3"));
	ck_assert_int_eq(st0(3), MEMBERS_ALIVE);
	ck_assert_int_eq(st0(2), -1);
	ck_assert_uint_eq(members_count(m0), 3);
}
END_TEST

START_TEST(test_messages_carry_accusations)
{
	struct members_msg g = msg_from(2, MEMBERS_PING, 3, NULL, 0);
	const struct members_action *a;
	size_t k;

	/* A ping to a suspect carries the suspicion, whatever the rumor queue holds. */
	know(3);
	answers[2] = answers[3] = true;
	at(1000);
	gossip(2, upd(1, MEMBERS_SUSPECT, 1, "n2"));
	members_actions_reset(&act);
	tick0(2000);
	for (k = 0; k < act.n; k++) {
		a = &act.v[k];
		if (a->type == MEMBERS_ACT_SEND && !strcmp(a->to_id, "n1"))
			break;
	}
	ck_assert_uint_lt(k, act.n);
	ck_assert(carries(&act.v[k].msg, "n1", MEMBERS_SUSPECT, 1));
	/* A packet from a member we hold dead is answered with the verdict, long after its
	 * rumor has retired: that is how a node that was stalled or cut off learns it must
	 * refute. */
	gossip(3, upd(2, MEMBERS_DEAD, 1, "n3"));
	answers[2] = false;
	tick0(60000);
	members_actions_reset(&act);
	strcpy(g.target, "n0");
	ck_assert_int_eq(members_on_msg(m0, &g, now0, &act), 0);
	a = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_ACK);
	ck_assert_ptr_nonnull(a);
	ck_assert(carries(&a->msg, "n2", MEMBERS_DEAD, 1));
	/* ... and every message carries our own record, rumors retired or not. */
	ck_assert(carries(&a->msg, "n0", MEMBERS_ALIVE, 1));
	ck_assert_uint_eq(a->msg.n_updates, 2);
}
END_TEST

START_TEST(test_gossip_rounds)
{
	const struct members_action *a;
	size_t k, n = 0;

	/* With rumors pending, a GOSSIP round goes to gossip_nodes (3) of the four live members
	 * within a gossip interval, and the next one an interval later. */
	know(4);
	answers[1] = answers[2] = answers[3] = answers[4] = true;
	tick0(999);
	members_actions_reset(&act);
	at(1000);
	gossip(2, upd(1, MEMBERS_SUSPECT, 1, "n2"));
	tick0(1199);
	for (k = 0; k < act.n; k++) {
		a = &act.v[k];
		if (a->type != MEMBERS_ACT_SEND || a->msg.type != MEMBERS_GOSSIP)
			continue;
		n++;
		ck_assert(carries(&a->msg, "n1", MEMBERS_SUSPECT, 1));
	}
	ck_assert_uint_eq(n, 3);
	/* Once every rumor has been sent its quota, the rounds stop. */
	tick0(5000);
	members_actions_reset(&act);
	tick0(9000);
	ck_assert_uint_eq(count_act(&act, MEMBERS_ACT_SEND, MEMBERS_GOSSIP), 0);
}
END_TEST

START_TEST(test_stall_is_not_evidence)
{
	const struct members_action *ping;
	uint64_t t0;

	/* A probe goes out, then we are not scheduled for seconds (SIGSTOP, a blocked loop):
	 * the missing ACK says nothing about the target. */
	know(3);
	members_actions_reset(&act);
	do {
		t0 = members_next_deadline(m0);
		tick0(t0);
	} while (!(ping = find_act(&act, MEMBERS_ACT_SEND, MEMBERS_PING)));
	at(t0 + 5000);
	ck_assert_int_eq(members_tick(m0, now0, &act), 0);
	ck_assert_uint_eq(members_counters(m0)->suspicions, 0);
	ck_assert_uint_eq(members_counters(m0)->probe_failures, 0);
	ck_assert_uint_eq(members_health(m0), 1);
}
END_TEST

/* PUSH_PULLs in `act` addressed to a seed rather than to a member. */
static size_t seed_contacts(void)
{
	size_t k, c = 0;

	for (k = 0; k < act.n; k++)
		c += act.v[k].type == MEMBERS_ACT_SEND && act.v[k].msg.type == MEMBERS_PUSH_PULL &&
		     !act.v[k].to_id[0];
	return c;
}

START_TEST(test_seed_contact)
{
	static const struct members_seed seeds[3] = {
		{ "seed-a.example", 7100 }, { "seed-b.example", 7101 }, { "127.0.0.1", 7102 },
	};
	struct members_config c;
	struct members *x;
	size_t k;

	node_config(&c, 5, 1, 1, seeds, 3);
	ck_assert_int_eq(members_new(&x, &c, 0), 0);
	/* Alone: every seed, and again every join_retry (1 s) while nobody answers. */
	ck_assert_int_eq(members_tick(x, 0, &act), 0);
	ck_assert_uint_eq(count_act(&act, MEMBERS_ACT_SEND, MEMBERS_PUSH_PULL), 3);
	for (k = 0; k < act.n; k++)
		ck_assert_str_eq(act.v[k].to_host, seeds[act.v[k].to_port - 7100].host);
	members_actions_reset(&act);
	ck_assert_int_eq(members_tick(x, 999, &act), 0);
	ck_assert_uint_eq(count_act(&act, MEMBERS_ACT_SEND, MEMBERS_PUSH_PULL), 0);
	ck_assert_int_eq(members_tick(x, 1000, &act), 0);
	ck_assert_uint_eq(count_act(&act, MEMBERS_ACT_SEND, MEMBERS_PUSH_PULL), 3);
	/* Joined: one random seed every seed_interval (30 s), to heal a split start. */
	members_free(m0);
	m0 = x;
	at(1500);
	know(1);
	members_actions_reset(&act);
	ck_assert_int_eq(members_tick(m0, 2000, &act), 0);
	ck_assert_uint_eq(seed_contacts(), 1);
	members_actions_reset(&act);
	ck_assert_int_eq(members_tick(m0, 2000 + 29999, &act), 0);
	ck_assert_uint_eq(seed_contacts(), 0);
	ck_assert_int_eq(members_tick(m0, 2000 + 30000, &act), 0);
	ck_assert_uint_eq(seed_contacts(), 1);
}
END_TEST

START_TEST(test_reap_dead)
{
	know(2);
	answers[2] = true;
	at(1000);
	gossip(2, upd(1, MEMBERS_DEAD, 1, "n2"));
	/* An hour of probing n2: drop the actions as a driver would. */
	while (now0 + 10000 < 1000 + 3600 * 1000 - 1) {
		tick0(now0 + 10000);
		members_actions_reset(&act);
	}
	tick0(1000 + 3600 * 1000 - 1);
	ck_assert_int_eq(st0(1), MEMBERS_DEAD);
	tick0(1000 + 3600 * 1000);
	ck_assert_int_eq(st0(1), -1);
	ck_assert_int_eq(st0(2), MEMBERS_ALIVE);
}
END_TEST

/* ---------------------------------------------------------------- simulated clusters */

#ifndef TRIALS
#define TRIALS 8
#endif

/* Five nodes joined through n0 and settled; node `late` (or -1) is left out. */
static void sim_cluster(struct sim *s, uint64_t seed, int late)
{
	sim_init(s, 5, seed);
	if (late >= 0)
		sim_kill(s, late);
	sim_run(s, 10000);
	ck_assert(converged(s));
	ck_assert_uint_eq(s->to_dead, 0);
}

START_TEST(test_sim_join_spreads_within_2s)
{
	uint64_t t, worst = 0;
	struct sim s;
	int trial;

	for (trial = 0; trial < TRIALS; trial++) {
		sim_cluster(&s, 100 + (uint64_t)trial, 4);
		members_free(s.m[4]);
		sim_start_node(&s, 4, 1700000000, 100 + (uint64_t)trial);
		t = sim_until(&s, cond_all_see, 4, MEMBERS_ALIVE, 10000);
		ck_assert_uint_lt(t, 2000);
		worst = t > worst ? t : worst;
		/* ... and the newcomer knows everyone. */
		t += sim_until(&s, cond_converged, 0, 0, 10000);
		ck_assert_uint_lt(t, 2000);
		sim_free(&s);
	}
	printf("members sim: join seen by all in <= %llu ms (%d trials)\n",
	       (unsigned long long)worst, TRIALS);
}
END_TEST

static void detect_trials(unsigned loss_pm, const char *what)
{
	uint64_t t, worst = 0;
	struct sim s;
	int trial, victim;

	for (trial = 0; trial < TRIALS; trial++) {
		sim_cluster(&s, 200 + (uint64_t)trial, -1);
		s.loss_pm = loss_pm;
		s.to_dead = 0;
		victim = 1 + trial % 4;
		sim_kill(&s, victim);
		t = sim_until(&s, cond_all_see, victim, MEMBERS_DEAD, 10000);
		ck_assert_uint_lt(t, 3000);
		worst = t > worst ? t : worst;
		/* Exactly the four survivors declared exactly the victim dead. */
		ck_assert_uint_eq(s.to_dead, 4);
		sim_free(&s);
	}
	printf("members sim: killed node dead on all survivors in <= %llu ms (%s, %d trials)\n",
	       (unsigned long long)worst, what, TRIALS);
}

START_TEST(test_sim_kill_detected_within_3s)
{
	detect_trials(0, "no loss");
}
END_TEST

START_TEST(test_sim_kill_detected_within_3s_lossy)
{
	detect_trials(50, "5% loss");
}
END_TEST

START_TEST(test_sim_no_false_dead_under_loss)
{
	unsigned susp = 0, refute = 0;
	struct sim s;
	int i;

	sim_init(&s, 5, 300);
	s.loss_pm = 50;
	sim_run(&s, 10 * 60 * 1000);
	ck_assert_uint_eq(s.to_dead, 0);
	ck_assert_uint_eq(s.to_left, 0);
	ck_assert(converged(&s));
	for (i = 0; i < 5; i++) {
		susp += (unsigned)members_counters(s.m[i])->suspicions;
		refute += (unsigned)members_counters(s.m[i])->refutations;
	}
	printf("members sim: 10 min at 5%% loss: %llu of %llu packets lost, %u suspicions, "
	       "%u refutations, 0 dead\n", (unsigned long long)s.lost,
	       (unsigned long long)s.sent, susp, refute);
	/* The loss did bite (there were suspicions to survive), and every one was refuted. */
	ck_assert_uint_gt(susp, 0);
	ck_assert_uint_gt(refute, 0);
	sim_free(&s);
}
END_TEST

START_TEST(test_sim_leave_is_immediate)
{
	struct sim s;

	sim_cluster(&s, 400, -1);
	s.to_suspect = 0;
	ck_assert_int_eq(members_leave(s.m[2], s.now, &s.act), 0);
	ck_assert_uint_eq(count_act(&s.act, MEMBERS_ACT_SEND, MEMBERS_GOSSIP), 4);
	ck_assert_ptr_nonnull(find_act(&s.act, MEMBERS_ACT_RING, 0));
	dispatch(&s);
	ck_assert_uint_eq(members_next_deadline(s.m[2]), UINT64_MAX);
	sim_run(&s, s.now + 5);
	ck_assert(all_see(&s, 2, MEMBERS_LEFT));
	/* Not suspected, not dead, not probed back to life, for a long while. */
	sim_run(&s, s.now + 60000);
	ck_assert(all_see(&s, 2, MEMBERS_LEFT));
	ck_assert_uint_eq(s.to_suspect, 0);
	ck_assert_uint_eq(s.to_dead, 0);
	/* A left node comes back with a higher incarnation. */
	members_free(s.m[2]);
	sim_start_node(&s, 2, 1700000000, 400);
	ck_assert_uint_lt(sim_until(&s, cond_all_see, 2, MEMBERS_ALIVE, 10000), 2000);
	sim_free(&s);
}
END_TEST

START_TEST(test_sim_restart_reads_incarnation)
{
	struct sim s;

	/* A node killed and declared dead restarts with an incarnation that is not higher (its
	 * clock stepped back): the seed's reply carries its old record, and it refutes past it. */
	sim_cluster(&s, 500, -1);
	sim_kill(&s, 3);
	ck_assert_uint_lt(sim_until(&s, cond_all_see, 3, MEMBERS_DEAD, 10000), 3000);
	members_free(s.m[3]);
	sim_start_node(&s, 3, 1, 500);
	ck_assert_uint_lt(sim_until(&s, cond_all_see, 3, MEMBERS_ALIVE, 10000), 2000);
	ck_assert_uint_gt(members_incarnation(s.m[3]), 1);
	ck_assert(converged(&s));
	sim_free(&s);
}
END_TEST

START_TEST(test_sim_partition_heals)
{
	uint64_t t;
	struct sim s;

	sim_cluster(&s, 600, -1);
	s.group[3] = s.group[4] = 1;
	sim_run(&s, s.now + 30000);
	/* Each side declared the other dead. */
	ck_assert_int_eq(state_of(&s, 0, 3), MEMBERS_DEAD);
	ck_assert_int_eq(state_of(&s, 4, 1), MEMBERS_DEAD);
	ck_assert_int_eq(state_of(&s, 3, 4), MEMBERS_ALIVE);
	s.group[3] = s.group[4] = 0;
	t = sim_until(&s, cond_converged, 0, 0, 20000);
	printf("members sim: 3|2 partition of 30 s healed in %llu ms\n", (unsigned long long)t);
	ck_assert_uint_le(t, 5000);
	sim_free(&s);
}
END_TEST

static Suite *members_suite(void)
{
	Suite *s = suite_create("members");
	TCase *tc = tcase_create("scripted");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_join_via_seed);
	tcase_add_test(tc, test_probe_indirect_then_suspect);
	tcase_add_test(tc, test_indirect_ack_and_nack);
	tcase_add_test(tc, test_relay_for_ping_req);
	tcase_add_test(tc, test_suspect_then_refute);
	tcase_add_test(tc, test_refutation_overrides_suspicion);
	tcase_add_test(tc, test_suspect_then_dead);
	tcase_add_test(tc, test_lifeguard_confirmations);
	tcase_add_test(tc, test_dead_rejoins_with_higher_incarnation);
	tcase_add_test(tc, test_precedence_by_incarnation);
	tcase_add_test(tc, test_self_refutes_dead_and_stale_self);
	tcase_add_test(tc, test_push_pull_merge);
	tcase_add_test(tc, test_ping_answers_and_misdirection);
	tcase_add_test(tc, test_bad_messages);
	tcase_add_test(tc, test_config_validation);
	tcase_add_test(tc, test_ring_ids_and_info);
	tcase_add_test(tc, test_table_full_evicts_dead);
	tcase_add_test(tc, test_reap_dead);
	tcase_add_test(tc, test_messages_carry_accusations);
	tcase_add_test(tc, test_gossip_rounds);
	tcase_add_test(tc, test_stall_is_not_evidence);
	tcase_add_test(tc, test_seed_contact);
	suite_add_tcase(s, tc);

	tc = tcase_create("simulated");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_sim_join_spreads_within_2s);
	tcase_add_test(tc, test_sim_kill_detected_within_3s);
	tcase_add_test(tc, test_sim_kill_detected_within_3s_lossy);
	tcase_add_test(tc, test_sim_no_false_dead_under_loss);
	tcase_add_test(tc, test_sim_leave_is_immediate);
	tcase_add_test(tc, test_sim_restart_reads_incarnation);
	tcase_add_test(tc, test_sim_partition_heals);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(members_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
