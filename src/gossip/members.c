/* members.c — the SWIM state machine (see members.h for the protocol and its rules).
 *
 * Everything is sized at members_new() from max_members: the member table, the rumor queue and
 * a scratch array, so the state machine itself never allocates; only the caller's action list
 * grows. Members are found by linear search: a cluster has tens of members and a packet names a
 * handful. The table keeps us at index 0 and the others in the order the round-robin prober
 * walks. A new member goes in at a random place, so each node probes in its own random order;
 * unlike memberlist, the order is not reshuffled after each round, which bounds the gap between
 * two probes of a member by one round (n - 1 probe intervals) instead of two. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/members.h"

#define MAX_CONFIRM 8   /* accusers remembered per suspicion (Lifeguard) */
#define MAX_RELAYS 32   /* PING_REQs we relay at once */

struct member {
	struct members_info pub;
	/* SUSPECT only: when it started, its bounds, expected (k) and counted confirmations, and
	 * hashes of the accusers already counted (the first one included). */
	uint64_t susp_start, susp_min, susp_max;
	uint32_t susp_k, susp_n;
	uint64_t susp_by[MAX_CONFIRM];
};

struct rumor {
	struct members_update u;
	uint32_t sent;
};

struct relay {
	bool used;
	uint32_t seq, origin_seq;   /* ours to the target; the origin's PING_REQ */
	uint64_t nack_at;
	char origin[MEMBERS_ID_MAX + 1];
	char host[MEMBERS_HOST_MAX + 1];
	uint16_t port;
};

struct members {
	struct members_config cfg;      /* cfg.id/host/seeds are not used after members_new */
	struct members_seed *seed;      /* owned */
	size_t n_seeds;
	struct member *mem;             /* owned; cfg.max_members slots; mem[0] is us */
	size_t n;
	struct rumor *rumor;            /* owned; at most one per member id */
	size_t n_rumors;
	size_t *scratch;                /* owned; cfg.max_members slots */
	struct relay relay[MAX_RELAYS];
	struct {
		bool active, indirect;
		uint32_t seq, expect_nacks, nacks;
		uint64_t timeout_at, deadline;
		char target[MEMBERS_ID_MAX + 1];
	} probe;
	size_t probe_idx;
	uint32_t seq;
	uint64_t rng;
	uint32_t health;
	bool left, ring_dirty;
	uint64_t next_probe, next_gossip, next_push_pull, next_reconnect, next_seed;
	struct members_counters ctr;
};

/* ---------------------------------------------------------------- small helpers */

static uint64_t rnd(struct members *m)
{
	/* xorshift64* (Vigna): enough for picking probe targets; the caller seeds it. */
	m->rng ^= m->rng >> 12;
	m->rng ^= m->rng << 25;
	m->rng ^= m->rng >> 27;
	return m->rng * 0x2545f4914f6cdd1dull;
}

static size_t rnd_below(struct members *m, size_t n)
{
	return n ? (size_t)((rnd(m) >> 32) * n >> 32) : 0;
}

/* log2(x) in 16.16 fixed point for x >= 1, by repeated squaring of the mantissa (the pure core
 * does without libm). */
static uint64_t log2_fp(uint64_t x)
{
	unsigned n = 63 - (unsigned)__builtin_clzll(x | 1);
	uint64_t y = n >= 31 ? x >> (n - 31) : x << (31 - n);  /* mantissa in [2^31, 2^32) */
	uint64_t r = (uint64_t)n << 16;
	int i;

	for (i = 15; i >= 0; i--) {
		y = (y * y) >> 31;
		if (y >= (1ull << 32)) {
			y >>= 1;
			r |= 1ull << i;
		}
	}
	return r;
}

static bool live(enum members_state s)
{
	return s == MEMBERS_ALIVE || s == MEMBERS_SUSPECT;
}

/* A NUL-terminated string within `size` bytes (an array field, or a C string of at most
 * size - 1 bytes) of printable non-space ASCII: ids and hosts end up in logs and JSON. */
static bool str_ok(const char *s, size_t size, bool empty_ok)
{
	size_t i, len = strnlen(s, size);

	if (len == size || (len == 0 && !empty_ok))
		return false;
	for (i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

static uint64_t id_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;  /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	return h;
}

static struct member *find(const struct members *m, const char *id)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		if (strcmp(m->mem[i].pub.id, id) == 0)
			return &m->mem[i];
	return NULL;
}

static size_t n_live(const struct members *m)
{
	size_t i, c = 0;

	for (i = 0; i < m->n; i++)
		c += live(m->mem[i].pub.state);
	return c;
}

static void record(const struct member *x, const char *from, struct members_update *u)
{
	memset(u, 0, sizeof(*u));
	strcpy(u->id, x->pub.id);
	strcpy(u->from, from);
	strcpy(u->host, x->pub.host);
	u->port = x->pub.port;
	u->peer_port = x->pub.peer_port;
	u->state = (uint8_t)x->pub.state;
	u->incarnation = x->pub.incarnation;
}

static uint64_t scaled(const struct members *m, uint32_t ms)
{
	return (uint64_t)ms * (m->health + 1);
}

static void health_add(struct members *m, int delta)
{
	int64_t h = (int64_t)m->health + delta;

	if (h < 0)
		h = 0;
	if (h > (int64_t)m->cfg.awareness_max - 1)
		h = m->cfg.awareness_max - 1;
	m->health = (uint32_t)h;
}

/* ---------------------------------------------------------------- actions */

void members_actions_init(struct members_actions *a)
{
	memset(a, 0, sizeof(*a));
}

void members_actions_reset(struct members_actions *a)
{
	a->n = 0;
	a->n_upd = 0;
}

void members_actions_close(struct members_actions *a)
{
	if (!a)
		return;
	free(a->v);
	free(a->upd);
	memset(a, 0, sizeof(*a));
}

/* Returns `v` (n elements used of *cap, each `size` bytes) with room for one more: v itself,
 * a reallocation of it, or NULL when that fails (v is then unchanged). */
static void *grow(void *v, size_t n, size_t *cap, size_t size)
{
	size_t ncap = *cap ? *cap * 2 : 16;

	if (n < *cap)
		return v;
	if (!(v = realloc(v, ncap * size)))
		return NULL;
	*cap = ncap;
	return v;
}

static struct members_action *act_new(struct members_actions *out, uint8_t type)
{
	struct members_action *a = grow(out->v, out->n, &out->cap, sizeof(*out->v));

	if (!a)
		return NULL;
	out->v = a;
	a = &out->v[out->n++];
	memset(a, 0, sizeof(*a));
	a->type = type;
	a->prev = -1;
	a->upd_off = out->n_upd;
	return a;
}

/* A new update for the last action appended (its updates are contiguous in the arena). */
static struct members_update *upd_new(struct members_actions *out)
{
	struct members_update *u = grow(out->upd, out->n_upd, &out->cap_upd, sizeof(*out->upd));

	if (!u)
		return NULL;
	out->upd = u;
	out->v[out->n - 1].msg.n_updates++;
	return &out->upd[out->n_upd++];
}

/* Ends every public call: the ring notice, then msg.updates pointers, which the arena's
 * reallocations may have moved until now. */
static int finish(struct members *m, struct members_actions *out, int err)
{
	size_t i;

	if (m->ring_dirty && act_new(out, MEMBERS_ACT_RING))
		m->ring_dirty = false;
	else if (m->ring_dirty && !err)
		err = -ENOMEM;
	for (i = 0; i < out->n; i++)
		out->v[i].msg.updates = out->v[i].msg.n_updates ? out->upd + out->v[i].upd_off : NULL;
	return err;
}

static struct members_action *send_new(struct members *m, struct members_actions *out,
				       uint8_t type, uint32_t seq, const char *id,
				       const char *host, uint16_t port)
{
	struct members_action *a = act_new(out, MEMBERS_ACT_SEND);
	const struct members_info *me = &m->mem[0].pub;

	if (!a)
		return NULL;
	strcpy(a->to_id, id);
	strcpy(a->to_host, host);
	a->to_port = port;
	a->msg.type = type;
	a->msg.seq = seq;
	strcpy(a->msg.from, me->id);
	strcpy(a->msg.from_host, me->host);
	a->msg.from_port = me->port;
	return a;
}

static uint32_t digits(size_t n)
{
	uint32_t d = 1;

	for (; n >= 10; n /= 10)
		d++;
	return d;
}

/* Piggybacks on the message just appended: our own record, the destination's own record when
 * we hold it SUSPECT or DEAD, then the least-sent rumors, each of which retires after
 * retransmit_mult * ceil(log10(members + 1)) sends. */
static int piggyback(struct members *m, struct members_actions *out)
{
	struct members_action *a = &out->v[out->n - 1];
	struct member *to = a->to_id[0] ? find(m, a->to_id) : NULL;
	size_t budget = m->cfg.max_piggyback, limit, i, j;
	struct members_update *u;
	struct rumor t;

	/* Our own record rides on everything we send, so whoever hears from us knows us: a
	 * joiner is known to every member it probes even after its join rumor has retired. */
	if (!(u = upd_new(out)))
		return -ENOMEM;
	record(&m->mem[0], m->mem[0].pub.id, u);
	if (to && (to->pub.state == MEMBERS_SUSPECT || to->pub.state == MEMBERS_DEAD)) {
		if (!(u = upd_new(out)))
			return -ENOMEM;
		record(to, m->mem[0].pub.id, u);
		budget--;
	}
	/* Insertion sort by sends: the queue is short and nearly sorted from the last call. */
	for (i = 1; i < m->n_rumors; i++) {
		t = m->rumor[i];
		for (j = i; j > 0 && m->rumor[j - 1].sent > t.sent; j--)
			m->rumor[j] = m->rumor[j - 1];
		m->rumor[j] = t;
	}
	limit = (size_t)m->cfg.retransmit_mult * digits(m->n);
	for (i = 0; i < m->n_rumors && i < budget; i++) {
		if (!(u = upd_new(out)))
			return -ENOMEM;
		*u = m->rumor[i].u;
		m->rumor[i].sent++;
	}
	for (i = j = 0; i < m->n_rumors; i++)
		if (m->rumor[i].sent < limit)
			m->rumor[j++] = m->rumor[i];
	m->n_rumors = j;
	return 0;
}

static int send_to(struct members *m, struct members_actions *out, uint8_t type, uint32_t seq,
		   const char *id, const char *host, uint16_t port)
{
	return send_new(m, out, type, seq, id, host, port) ? piggyback(m, out) : -ENOMEM;
}

/* A PUSH_PULL(_REPLY) carrying our whole table. */
static int push_pull(struct members *m, struct members_actions *out, uint8_t type,
		     const char *id, const char *host, uint16_t port)
{
	struct members_update *u;
	size_t i;

	if (!send_new(m, out, type, 0, id, host, port))
		return -ENOMEM;
	for (i = 0; i < m->n; i++) {
		if (!(u = upd_new(out)))
			return -ENOMEM;
		record(&m->mem[i], m->mem[0].pub.id, u);
	}
	m->ctr.push_pulls += type == MEMBERS_PUSH_PULL;
	return 0;
}

/* ---------------------------------------------------------------- the table */

static void rumor_add(struct members *m, const struct members_update *u)
{
	size_t i, worst = 0;

	for (i = 0; i < m->n_rumors; i++) {
		if (strcmp(m->rumor[i].u.id, u->id) == 0)
			break;
		if (m->rumor[i].sent > m->rumor[worst].sent)
			worst = i;
	}
	/* One rumor per member (the newest wins); the queue holds at most max_members, and when
	 * it is full (ids come and go) the most-sent rumor makes way. */
	if (i == m->n_rumors && m->n_rumors == m->cfg.max_members)
		i = worst;
	else if (i == m->n_rumors)
		m->n_rumors++;
	m->rumor[i].u = *u;
	m->rumor[i].sent = 0;
}

static int set_state(struct members *m, struct member *x, enum members_state st, uint64_t now,
		     struct members_actions *out)
{
	enum members_state prev = x->pub.state;
	struct members_action *a;

	if (prev == st)
		return 0;
	if (live(prev) != live(st))
		m->ring_dirty = true;
	x->pub.state = st;
	x->pub.since_ms = now;
	m->ctr.suspicions += st == MEMBERS_SUSPECT;
	m->ctr.deaths += st == MEMBERS_DEAD;
	m->ctr.leaves += st == MEMBERS_LEFT;
	if (!(a = act_new(out, MEMBERS_ACT_STATE)))
		return -ENOMEM;
	record(x, "", &a->member);
	a->prev = (int)prev;
	return 0;
}

static void remove_member(struct members *m, size_t idx)
{
	memmove(&m->mem[idx], &m->mem[idx + 1], (m->n - idx - 1) * sizeof(*m->mem));
	m->n--;
	if (m->probe_idx > idx)
		m->probe_idx--;
}

/* Adds u's member as ALIVE at a random place (not 0: that is us). NULL when the table is full
 * of live members. */
static struct member *add_member(struct members *m, const struct members_update *u, uint64_t now)
{
	size_t i, j, old = 0;
	struct member *x, t;

	if (m->n == m->cfg.max_members) {
		for (i = 1; i < m->n; i++)
			if (!live(m->mem[i].pub.state) &&
			    (!old || m->mem[i].pub.since_ms < m->mem[old].pub.since_ms))
				old = i;
		if (!old) {
			m->ctr.table_full++;
			return NULL;
		}
		remove_member(m, old);
	}
	x = &m->mem[m->n++];
	memset(x, 0, sizeof(*x));
	strcpy(x->pub.id, u->id);
	strcpy(x->pub.host, u->host);
	x->pub.port = u->port;
	x->pub.peer_port = u->peer_port;
	x->pub.incarnation = u->incarnation;
	x->pub.state = MEMBERS_ALIVE;
	x->pub.since_ms = now;
	j = 1 + rnd_below(m, m->n - 1);
	t = m->mem[j];
	m->mem[j] = *x;
	*x = t;
	m->ctr.joins++;
	m->ring_dirty = true;
	return &m->mem[j];
}

/* ---------------------------------------------------------------- precedence rules */

static void refute(struct members *m, uint64_t accused)
{
	struct member *me = &m->mem[0];
	struct members_update u;

	me->pub.incarnation = accused >= me->pub.incarnation ? accused + 1 : me->pub.incarnation + 1;
	m->ctr.refutations++;
	health_add(m, 1);
	record(me, me->pub.id, &u);
	rumor_add(m, &u);
}

static int on_alive(struct members *m, const struct members_update *u, uint64_t now,
		    struct members_actions *out)
{
	struct member *x = find(m, u->id);
	struct members_update r;
	struct members_action *a;
	bool moved;

	if (x == &m->mem[0]) {
		moved = strcmp(u->host, x->pub.host) || u->port != x->pub.port ||
			u->peer_port != x->pub.peer_port;
		if (u->incarnation > x->pub.incarnation ||
		    (u->incarnation == x->pub.incarnation && moved))
			refute(m, u->incarnation);
		return 0;
	}
	if (!x) {
		if (!(x = add_member(m, u, now)))
			return 0;
		record(x, x->pub.id, &r);
		rumor_add(m, &r);
		if (!(a = act_new(out, MEMBERS_ACT_STATE)))
			return -ENOMEM;
		a->member = r;
		return 0;
	}
	if (u->incarnation <= x->pub.incarnation)
		return 0;
	strcpy(x->pub.host, u->host);
	x->pub.port = u->port;
	x->pub.peer_port = u->peer_port;
	x->pub.incarnation = u->incarnation;
	record(x, x->pub.id, &r);
	r.state = MEMBERS_ALIVE;
	rumor_add(m, &r);
	return set_state(m, x, MEMBERS_ALIVE, now, out);
}

static void suspicion_start(struct members *m, struct member *x, const char *accuser,
			    uint64_t now)
{
	uint64_t n = n_live(m), scale = log2_fp(n) * 19729 >> 16;  /* log10(n) = log2(n) * 0.30103 */
	uint32_t k = m->cfg.suspicion_mult > 2 ? m->cfg.suspicion_mult - 2 : 0;

	if (scale < 1 << 16)
		scale = 1 << 16;
	if (n < (uint64_t)k + 2)
		k = 0;  /* not enough members to expect that many confirmations */
	x->susp_start = now;
	x->susp_min = ((uint64_t)m->cfg.suspicion_mult * m->cfg.probe_interval_ms * scale) >> 16;
	x->susp_max = x->susp_min * m->cfg.suspicion_max_mult;
	x->susp_k = k < MAX_CONFIRM - 1 ? k : MAX_CONFIRM - 1;
	x->susp_n = 0;
	x->susp_by[0] = id_hash(accuser);
}

/* Lifeguard: max - (max - min) * log(c + 1) / log(k + 1), and min once c reaches k. */
static uint64_t suspicion_timeout(const struct member *x)
{
	uint64_t frac;

	if (x->susp_n >= x->susp_k)
		return x->susp_min;
	frac = (log2_fp(x->susp_n + 1) << 16) / log2_fp(x->susp_k + 1);
	return x->susp_max - (((x->susp_max - x->susp_min) * frac) >> 16);
}

/* Counts `accuser` toward a running suspicion; false if it already counted or enough did. */
static bool suspicion_confirm(struct member *x, const char *accuser)
{
	uint64_t h = id_hash(accuser);
	uint32_t i;

	if (x->susp_n >= x->susp_k)
		return false;
	for (i = 0; i <= x->susp_n; i++)
		if (x->susp_by[i] == h)
			return false;
	x->susp_by[++x->susp_n] = h;
	return true;
}

static int on_suspect(struct members *m, const struct members_update *u, const char *accuser,
		      uint64_t now, struct members_actions *out)
{
	struct member *x = find(m, u->id);
	struct members_update r;

	if (!x || u->incarnation < x->pub.incarnation)
		return 0;
	if (x->pub.state == MEMBERS_SUSPECT) {
		if (suspicion_confirm(x, accuser)) {
			record(x, accuser, &r);
			rumor_add(m, &r);
		}
		return 0;
	}
	if (x->pub.state != MEMBERS_ALIVE)
		return 0;
	if (x == &m->mem[0]) {
		refute(m, u->incarnation);
		return 0;
	}
	x->pub.incarnation = u->incarnation;
	suspicion_start(m, x, accuser, now);
	record(x, accuser, &r);
	r.state = MEMBERS_SUSPECT;
	rumor_add(m, &r);
	return set_state(m, x, MEMBERS_SUSPECT, now, out);
}

/* u->state is DEAD or LEFT. */
static int on_dead(struct members *m, const struct members_update *u, uint64_t now,
		   struct members_actions *out)
{
	struct member *x = find(m, u->id);
	struct members_update r;

	if (!x || u->incarnation < x->pub.incarnation)
		return 0;
	if (x->pub.state == MEMBERS_LEFT || (x->pub.state == MEMBERS_DEAD && u->state == MEMBERS_DEAD))
		return 0;
	if (x == &m->mem[0]) {
		if (!m->left)
			refute(m, u->incarnation);
		return 0;
	}
	x->pub.incarnation = u->incarnation;
	record(x, u->from, &r);
	r.state = u->state;
	rumor_add(m, &r);
	return set_state(m, x, u->state, now, out);
}

/* One update from a packet; `merge` (full state from `sender`) takes DEAD as a suspicion. */
static int apply(struct members *m, const struct members_update *u, const char *sender,
		 bool merge, uint64_t now, struct members_actions *out)
{
	switch (u->state) {
	case MEMBERS_ALIVE:
		return on_alive(m, u, now, out);
	case MEMBERS_DEAD:
		if (!merge)
			return on_dead(m, u, now, out);
		/* fall through */
	case MEMBERS_SUSPECT:
		return on_suspect(m, u, merge || !u->from[0] ? sender : u->from, now, out);
	default:
		return on_dead(m, u, now, out);
	}
}

/* ---------------------------------------------------------------- probing */

/* Indexes (>= 1) of members whose state is in `mask` (bits of enum members_state), skipping
 * `skip`, into m->scratch; returns how many. */
static size_t collect(struct members *m, unsigned mask, const char *skip)
{
	size_t i, c = 0;

	for (i = 1; i < m->n; i++)
		if ((mask >> m->mem[i].pub.state & 1) && (!skip || strcmp(m->mem[i].pub.id, skip)))
			m->scratch[c++] = i;
	return c;
}

/* Moves min(k, c) random picks of scratch[0..c) to its front (a partial Fisher-Yates). */
static size_t pick(struct members *m, size_t c, size_t k)
{
	size_t i, j, t;

	for (i = 0; i < c && i < k; i++) {
		j = i + rnd_below(m, c - i);
		t = m->scratch[i];
		m->scratch[i] = m->scratch[j];
		m->scratch[j] = t;
	}
	return i;
}

#define LIVE_MASK (1u << MEMBERS_ALIVE | 1u << MEMBERS_SUSPECT)

static int probe_start(struct members *m, uint64_t now, struct members_actions *out)
{
	struct member *x = NULL;
	size_t tries;

	for (tries = 0; m->n > 1 && tries < m->n && !x; tries++) {
		if (m->probe_idx < 1 || m->probe_idx >= m->n)
			m->probe_idx = 1;
		x = &m->mem[m->probe_idx++];
		if (!live(x->pub.state))
			x = NULL;
	}
	if (!x)
		return 0;
	memset(&m->probe, 0, sizeof(m->probe));
	m->probe.active = true;
	m->probe.seq = ++m->seq;
	m->probe.timeout_at = now + scaled(m, m->cfg.probe_timeout_ms);
	m->probe.deadline = now + scaled(m, m->cfg.probe_interval_ms);
	strcpy(m->probe.target, x->pub.id);
	m->ctr.probes++;
	if (!send_new(m, out, MEMBERS_PING, m->probe.seq, x->pub.id, x->pub.host, x->pub.port))
		return -ENOMEM;
	strcpy(out->v[out->n - 1].msg.target, x->pub.id);
	return piggyback(m, out);
}

static int probe_indirect(struct members *m, const struct member *x, struct members_actions *out)
{
	size_t i, k = pick(m, collect(m, 1u << MEMBERS_ALIVE, x->pub.id), m->cfg.indirect_probes);
	struct members_msg *g;
	const struct member *h;

	m->probe.indirect = true;
	for (i = 0; i < k; i++) {
		h = &m->mem[m->scratch[i]];
		if (!send_new(m, out, MEMBERS_PING_REQ, m->probe.seq, h->pub.id, h->pub.host,
			      h->pub.port))
			return -ENOMEM;
		g = &out->v[out->n - 1].msg;
		strcpy(g->target, x->pub.id);
		strcpy(g->target_host, x->pub.host);
		g->target_port = x->pub.port;
		if (piggyback(m, out) < 0)
			return -ENOMEM;
		m->probe.expect_nacks++;
		m->ctr.indirect_probes++;
	}
	return 0;
}

static int probe_check(struct members *m, uint64_t now, struct members_actions *out)
{
	struct member *x = m->probe.active ? find(m, m->probe.target) : NULL;
	struct members_update u;
	uint32_t missing;

	if (!x || !live(x->pub.state)) {
		m->probe.active = false;
		return 0;
	}
	if (now >= m->probe.deadline + m->cfg.probe_interval_ms) {
		/* We were not scheduled for a whole interval (a stall, a stopped process): silence
		 * over that time says nothing about the target, only about us. */
		m->probe.active = false;
		health_add(m, 1);
		return 0;
	}
	if (now >= m->probe.deadline) {
		m->probe.active = false;
		m->ctr.probe_failures++;
		/* Lifeguard: helpers that did not even NACK suggest the problem is on our side. */
		missing = m->probe.expect_nacks - m->probe.nacks;
		health_add(m, m->probe.expect_nacks ? (int)missing : 1);
		record(x, m->mem[0].pub.id, &u);
		return on_suspect(m, &u, m->mem[0].pub.id, now, out);
	}
	if (!m->probe.indirect && now >= m->probe.timeout_at)
		return probe_indirect(m, x, out);
	return 0;
}

static int on_ack(struct members *m, const struct members_msg *g, uint64_t now,
		  struct members_actions *out)
{
	struct member *x;
	struct relay *r;

	if (m->probe.active && g->seq == m->probe.seq) {
		m->probe.active = false;
		m->ctr.acks++;
		health_add(m, -1);
		if ((x = find(m, m->probe.target)))
			x->pub.last_seen_ms = now;
		return 0;
	}
	for (r = m->relay; r < m->relay + MAX_RELAYS; r++) {
		if (r->used && r->seq == g->seq) {
			r->used = false;
			return send_to(m, out, MEMBERS_ACK, r->origin_seq, r->origin, r->host, r->port);
		}
	}
	return 0;
}

/* A PING_REQ: ping the target for the origin, and remember to forward its ACK or to NACK. */
static int on_ping_req(struct members *m, const struct members_msg *g, uint64_t now,
		       struct members_actions *out)
{
	struct relay *r, *slot = &m->relay[0];

	if (strcmp(g->target, m->mem[0].pub.id) == 0)
		return 0;
	for (r = m->relay; r < m->relay + MAX_RELAYS; r++)
		if (!r->used || (slot->used && r->nack_at < slot->nack_at))
			slot = r;
	slot->used = true;
	slot->seq = ++m->seq;
	slot->origin_seq = g->seq;
	/* The NACK must reach the origin before its probe deadline, which falls one probe
	 * timeout after it sent the PING_REQ. */
	slot->nack_at = now + m->cfg.probe_timeout_ms * 8 / 10;
	strcpy(slot->origin, g->from);
	strcpy(slot->host, g->from_host);
	slot->port = g->from_port;
	if (!send_new(m, out, MEMBERS_PING, slot->seq, g->target, g->target_host, g->target_port))
		return -ENOMEM;
	strcpy(out->v[out->n - 1].msg.target, g->target);
	return piggyback(m, out);
}

/* ---------------------------------------------------------------- events */

static bool msg_ok(const struct members_msg *g)
{
	const struct members_update *u;
	size_t i;

	if (g->type < MEMBERS_PING || g->type > MEMBERS_PUSH_PULL_REPLY ||
	    !str_ok(g->from, sizeof(g->from), false) ||
	    !str_ok(g->from_host, sizeof(g->from_host), false) || !g->from_port ||
	    !str_ok(g->target, sizeof(g->target), true) ||
	    !str_ok(g->target_host, sizeof(g->target_host), true) ||
	    (g->n_updates && !g->updates))
		return false;
	if (g->type == MEMBERS_PING_REQ && (!g->target[0] || !g->target_host[0] || !g->target_port))
		return false;
	for (i = 0; i < g->n_updates; i++) {
		u = &g->updates[i];
		if (!str_ok(u->id, sizeof(u->id), false) || !str_ok(u->from, sizeof(u->from), true) ||
		    !str_ok(u->host, sizeof(u->host), false) || !u->port || u->state > MEMBERS_LEFT)
			return false;
	}
	return true;
}

int members_on_msg(struct members *m, const struct members_msg *g, uint64_t now_ms,
		   struct members_actions *out)
{
	bool merge = g->type == MEMBERS_PUSH_PULL || g->type == MEMBERS_PUSH_PULL_REPLY;
	struct member *from;
	size_t i;
	int err = 0;

	if (!msg_ok(g)) {
		m->ctr.bad_msgs++;
		return -EBADMSG;
	}
	if (m->left || strcmp(g->from, m->mem[0].pub.id) == 0)
		return 0;
	m->ctr.msgs++;
	for (i = 0; i < g->n_updates && !err; i++)
		err = apply(m, &g->updates[i], g->from, merge, now_ms, out);
	if ((from = find(m, g->from)))
		from->pub.last_seen_ms = now_ms;
	if (err)
		return finish(m, out, err);
	switch (g->type) {
	case MEMBERS_PING:
		if (g->target[0] && strcmp(g->target, m->mem[0].pub.id)) {
			m->ctr.misdirected++;
			break;
		}
		err = send_to(m, out, MEMBERS_ACK, g->seq, g->from, g->from_host, g->from_port);
		break;
	case MEMBERS_ACK:
		err = on_ack(m, g, now_ms, out);
		break;
	case MEMBERS_PING_REQ:
		err = on_ping_req(m, g, now_ms, out);
		break;
	case MEMBERS_NACK:
		if (m->probe.active && g->seq == m->probe.seq && m->probe.nacks < m->probe.expect_nacks) {
			m->probe.nacks++;
			m->ctr.nacks++;
		}
		break;
	case MEMBERS_PUSH_PULL:
		err = push_pull(m, out, MEMBERS_PUSH_PULL_REPLY, g->from, g->from_host, g->from_port);
		break;
	default:
		break;
	}
	return finish(m, out, err);
}

/* A full-state exchange with a random member in state `st`. */
static int push_pull_random(struct members *m, enum members_state st, struct members_actions *out)
{
	const struct member *x;

	if (!pick(m, collect(m, 1u << st, NULL), 1))
		return 0;
	x = &m->mem[m->scratch[0]];
	return push_pull(m, out, MEMBERS_PUSH_PULL, x->pub.id, x->pub.host, x->pub.port);
}

/* Pending rumors also go out on their own, to gossip_nodes random live members per
 * gossip_interval (memberlist's gossip): piggybacking alone ties the spread of news to the
 * probe rate and wastes sends on probes of the very member that failed. */
static int gossip_round(struct members *m, struct members_actions *out)
{
	size_t i, k = pick(m, collect(m, LIVE_MASK, NULL), m->cfg.gossip_nodes);
	const struct member *x;
	int err = 0;

	for (i = 0; i < k && m->n_rumors && !err; i++) {
		x = &m->mem[m->scratch[i]];
		err = send_to(m, out, MEMBERS_GOSSIP, 0, x->pub.id, x->pub.host, x->pub.port);
	}
	return err;
}

static int contact_seeds(struct members *m, uint64_t now, struct members_actions *out)
{
	size_t i, first = 0, n = m->n_seeds;
	int err = 0;

	/* Alone, we ask every seed, since any one live seed is enough; otherwise one seed now and
	 * then heals a split start (two groups that never heard of each other). */
	if (n_live(m) > 1) {
		first = rnd_below(m, n);
		n = 1;
		m->next_seed = now + m->cfg.seed_interval_ms;
	} else {
		m->next_seed = now + m->cfg.join_retry_ms;
	}
	for (i = first; i < first + n && !err; i++)
		err = push_pull(m, out, MEMBERS_PUSH_PULL, "", m->seed[i].host, m->seed[i].port);
	return err;
}

int members_tick(struct members *m, uint64_t now, struct members_actions *out)
{
	struct members_update u;
	struct member *x;
	struct relay *r;
	size_t i;
	int err;

	if (m->left)
		return 0;
	if ((err = probe_check(m, now, out)) < 0)
		return finish(m, out, err);
	if (!m->probe.active && now >= m->next_probe) {
		m->next_probe = now + scaled(m, m->cfg.probe_interval_ms);
		if ((err = probe_start(m, now, out)) < 0)
			return finish(m, out, err);
	}
	for (r = m->relay; r < m->relay + MAX_RELAYS && !err; r++) {
		if (r->used && now >= r->nack_at) {
			r->used = false;
			err = send_to(m, out, MEMBERS_NACK, r->origin_seq, r->origin, r->host, r->port);
		}
	}
	for (i = 1; i < m->n && !err; i++) {
		x = &m->mem[i];
		if (x->pub.state == MEMBERS_SUSPECT && now - x->susp_start >= suspicion_timeout(x)) {
			record(x, m->mem[0].pub.id, &u);
			u.state = MEMBERS_DEAD;
			err = on_dead(m, &u, now, out);
		}
	}
	if (!err && m->n_rumors && now >= m->next_gossip) {
		m->next_gossip = now + m->cfg.gossip_interval_ms;
		err = gossip_round(m, out);
	}
	if (!err && now >= m->next_push_pull) {
		m->next_push_pull = now + m->cfg.push_pull_interval_ms;
		err = push_pull_random(m, MEMBERS_ALIVE, out);
	}
	if (!err && now >= m->next_reconnect) {
		m->next_reconnect = now + m->cfg.reconnect_interval_ms;
		err = push_pull_random(m, MEMBERS_DEAD, out);
	}
	if (!err && m->n_seeds && now >= m->next_seed)
		err = contact_seeds(m, now, out);
	for (i = m->n - 1; i > 0; i--) {
		x = &m->mem[i];
		if ((x->pub.state == MEMBERS_DEAD && now - x->pub.since_ms >= m->cfg.dead_reap_ms) ||
		    (x->pub.state == MEMBERS_LEFT && now - x->pub.since_ms >= m->cfg.left_reap_ms))
			remove_member(m, i);
	}
	return finish(m, out, err);
}

int members_leave(struct members *m, uint64_t now, struct members_actions *out)
{
	struct members_update u, *v;
	size_t i;
	int err;

	if (m->left)
		return 0;
	m->left = true;
	err = set_state(m, &m->mem[0], MEMBERS_LEFT, now, out);
	record(&m->mem[0], m->mem[0].pub.id, &u);
	for (i = 1; i < m->n && !err; i++) {
		if (!live(m->mem[i].pub.state))
			continue;
		if (!send_new(m, out, MEMBERS_GOSSIP, 0, m->mem[i].pub.id, m->mem[i].pub.host,
			      m->mem[i].pub.port) || !(v = upd_new(out)))
			err = -ENOMEM;
		else
			*v = u;
	}
	return finish(m, out, err);
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

uint64_t members_next_deadline(const struct members *m)
{
	const struct member *x;
	uint64_t t;
	size_t i;

	if (m->left)
		return UINT64_MAX;
	t = min64(m->next_push_pull, m->next_reconnect);
	if (m->n_rumors)
		t = min64(t, m->next_gossip);
	if (m->n_seeds)
		t = min64(t, m->next_seed);
	if (m->probe.active)
		t = min64(t, m->probe.indirect ? m->probe.deadline : m->probe.timeout_at);
	else
		t = min64(t, m->next_probe);
	for (i = 0; i < MAX_RELAYS; i++)
		if (m->relay[i].used)
			t = min64(t, m->relay[i].nack_at);
	for (i = 1; i < m->n; i++) {
		x = &m->mem[i];
		if (x->pub.state == MEMBERS_SUSPECT)
			t = min64(t, x->susp_start + suspicion_timeout(x));
		else if (x->pub.state == MEMBERS_DEAD)
			t = min64(t, x->pub.since_ms + m->cfg.dead_reap_ms);
		else if (x->pub.state == MEMBERS_LEFT)
			t = min64(t, x->pub.since_ms + m->cfg.left_reap_ms);
	}
	return t;
}

/* ---------------------------------------------------------------- setup and accessors */

void members_config_default(struct members_config *c)
{
	memset(c, 0, sizeof(*c));
	/* Loopback and LAN round trips are well under a millisecond, so a 100 ms timeout only
	 * fires on a dead or badly stalled peer; 200 ms probes make a 5-node cluster probe each
	 * member about every 200 ms (4 probers, each every 800 ms round-robin). */
	c->probe_interval_ms = 200;
	c->probe_timeout_ms = 100;
	c->indirect_probes = 3;
	/* min = 4 * 200 ms = 0.8 s up to 10 members (x log10(n) beyond), max = 2.4 s: with the
	 * two confirmations a 5-node cluster produces within a probe round or two, a dead node is
	 * declared about 1 s after the first suspicion, and a healthy suspect has 0.8 s (four
	 * probe rounds, each carrying the accusation to it) to refute. */
	c->suspicion_mult = 4;
	c->suspicion_max_mult = 3;
	c->retransmit_mult = 4;   /* memberlist's LAN values */
	c->gossip_interval_ms = 200;
	c->gossip_nodes = 3;
	c->max_piggyback = 8;     /* ~8 x 100 encoded bytes: a packet stays under 1 KiB */
	/* Full state is ~100 bytes per member, so 5 s anti-entropy costs nothing at our sizes
	 * and bounds how long a rumor lost to retransmit limits can go unnoticed. */
	c->push_pull_interval_ms = 5000;
	/* Partitions heal through these: a dead member is retried every 2 s, which keeps the
	 * time from a heal to convergence under the 5 s the chaos tests allow. */
	c->reconnect_interval_ms = 2000;
	c->join_retry_ms = 1000;
	c->seed_interval_ms = 30000;
	c->awareness_max = 8;
	c->dead_reap_ms = 3600 * 1000;
	c->left_reap_ms = 600 * 1000;
	c->max_members = 256;
}

static bool config_ok(const struct members_config *c)
{
	size_t i;

	if (!c->id || !str_ok(c->id, MEMBERS_ID_MAX + 1, false) || !c->host ||
	    !str_ok(c->host, MEMBERS_HOST_MAX + 1, false) || !c->port ||
	    !c->probe_interval_ms || !c->probe_timeout_ms ||
	    c->probe_timeout_ms >= c->probe_interval_ms || !c->suspicion_mult ||
	    !c->suspicion_max_mult || !c->retransmit_mult || !c->max_piggyback ||
	    !c->gossip_interval_ms ||
	    !c->push_pull_interval_ms || !c->reconnect_interval_ms || !c->join_retry_ms ||
	    !c->seed_interval_ms || !c->awareness_max || c->max_members < 2 ||
	    (c->n_seeds && !c->seeds))
		return false;
	for (i = 0; i < c->n_seeds; i++)
		if (!str_ok(c->seeds[i].host, sizeof(c->seeds[i].host), false) || !c->seeds[i].port)
			return false;
	return true;
}

int members_new(struct members **out, const struct members_config *cfg, uint64_t now)
{
	struct members_update u;
	struct members_info *me;
	struct members *m;

	if (!config_ok(cfg))
		return -EINVAL;
	if (!(m = calloc(1, sizeof(*m))))
		return -ENOMEM;
	m->mem = calloc(cfg->max_members, sizeof(*m->mem));
	m->rumor = calloc(cfg->max_members, sizeof(*m->rumor));
	m->scratch = calloc(cfg->max_members, sizeof(*m->scratch));
	m->seed = calloc(cfg->n_seeds + 1, sizeof(*m->seed));
	if (!m->mem || !m->rumor || !m->scratch || !m->seed) {
		members_free(m);
		return -ENOMEM;
	}
	if (cfg->n_seeds)
		memcpy(m->seed, cfg->seeds, cfg->n_seeds * sizeof(*m->seed));
	m->n_seeds = cfg->n_seeds;
	m->cfg = *cfg;
	m->cfg.id = m->cfg.host = NULL;
	m->cfg.seeds = NULL;
	me = &m->mem[0].pub;
	strcpy(me->id, cfg->id);
	strcpy(me->host, cfg->host);
	me->port = cfg->port;
	me->peer_port = cfg->peer_port;
	me->incarnation = cfg->incarnation;
	me->state = MEMBERS_ALIVE;
	me->last_seen_ms = me->since_ms = now;
	me->self = true;
	m->n = 1;
	/* xorshift must not start at 0; mixing also spreads nearby seeds apart. */
	m->rng = (cfg->rng_seed ^ 0x9e3779b97f4a7c15ull) | 1;
	m->seq = (uint32_t)rnd(m);
	/* Random phases, so that nodes started together do not probe in lockstep. */
	m->next_probe = now + rnd_below(m, cfg->probe_interval_ms);
	m->next_push_pull = now + cfg->push_pull_interval_ms / 2 +
			    rnd_below(m, cfg->push_pull_interval_ms / 2 + 1);
	m->next_reconnect = now + cfg->reconnect_interval_ms;
	m->next_seed = now;
	record(&m->mem[0], me->id, &u);
	rumor_add(m, &u);
	*out = m;
	return 0;
}

void members_free(struct members *m)
{
	if (!m)
		return;
	free(m->mem);
	free(m->rumor);
	free(m->scratch);
	free(m->seed);
	free(m);
}

size_t members_count(const struct members *m)
{
	return m->n;
}

const struct members_info *members_at(const struct members *m, size_t idx)
{
	return idx < m->n ? &m->mem[idx].pub : NULL;
}

const struct members_info *members_find(const struct members *m, const char *id)
{
	const struct member *x = find(m, id);

	return x ? &x->pub : NULL;
}

size_t members_ring_ids(const struct members *m, const char **ids, size_t cap)
{
	size_t i, c = 0;

	for (i = 0; i < m->n; i++) {
		if (!live(m->mem[i].pub.state))
			continue;
		if (c < cap)
			ids[c] = m->mem[i].pub.id;
		c++;
	}
	return c;
}

const struct members_counters *members_counters(const struct members *m)
{
	return &m->ctr;
}

uint32_t members_health(const struct members *m)
{
	return m->health;
}

uint64_t members_incarnation(const struct members *m)
{
	return m->mem[0].pub.incarnation;
}
