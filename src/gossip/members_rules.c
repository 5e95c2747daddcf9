/* members_rules.c — the member table, the precedence rules of updates, piggybacked
 * dissemination and members_on_msg() (see members.h for the rules themselves). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/members_internal.h"

/* ---------------------------------------------------------------- messages */

struct members_action *members__send_new(struct members *m, struct members_actions *out,
					 uint8_t type, uint32_t seq, const char *id,
					 const char *host, uint16_t port)
{
	struct members_action *a = members__act_new(out, MEMBERS_ACT_SEND);
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
int members__piggyback(struct members *m, struct members_actions *out)
{
	struct members_action *a = &out->v[out->n - 1];
	struct member *to = a->to_id[0] ? members__find(m, a->to_id) : NULL;
	size_t budget = m->cfg.max_piggyback, limit, i, j;
	struct members_update *u;
	struct rumor t;

	/* Our own record rides on everything we send, so whoever hears from us knows us: a
	 * joiner is known to every member it probes even after its join rumor has retired. */
	if (!(u = members__upd_new(out)))
		return -ENOMEM;
	members__record(&m->mem[0], m->mem[0].pub.id, u);
	if (to && (to->pub.state == MEMBERS_SUSPECT || to->pub.state == MEMBERS_DEAD)) {
		if (!(u = members__upd_new(out)))
			return -ENOMEM;
		members__record(to, m->mem[0].pub.id, u);
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
		if (!(u = members__upd_new(out)))
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

int members__send_to(struct members *m, struct members_actions *out, uint8_t type,
		     uint32_t seq, const char *id, const char *host, uint16_t port)
{
	if (!members__send_new(m, out, type, seq, id, host, port))
		return -ENOMEM;
	return members__piggyback(m, out);
}

/* A PUSH_PULL(_REPLY) carrying our whole table. */
int members__push_pull(struct members *m, struct members_actions *out, uint8_t type,
		       const char *id, const char *host, uint16_t port)
{
	struct members_update *u;
	size_t i;

	if (!members__send_new(m, out, type, 0, id, host, port))
		return -ENOMEM;
	for (i = 0; i < m->n; i++) {
		if (!(u = members__upd_new(out)))
			return -ENOMEM;
		members__record(&m->mem[i], m->mem[0].pub.id, u);
	}
	m->ctr.push_pulls += type == MEMBERS_PUSH_PULL;
	return 0;
}

/* ---------------------------------------------------------------- the table */

void members__rumor_add(struct members *m, const struct members_update *u)
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

int members__set_state(struct members *m, struct member *x, enum members_state st,
		       uint64_t now, struct members_actions *out)
{
	enum members_state prev = x->pub.state;
	struct members_action *a;

	if (prev == st)
		return 0;
	if (members__live(prev) != members__live(st))
		m->ring_dirty = true;
	x->pub.state = st;
	x->pub.since_ms = now;
	m->ctr.suspicions += st == MEMBERS_SUSPECT;
	m->ctr.deaths += st == MEMBERS_DEAD;
	m->ctr.leaves += st == MEMBERS_LEFT;
	if (!(a = members__act_new(out, MEMBERS_ACT_STATE)))
		return -ENOMEM;
	members__record(x, "", &a->member);
	a->prev = (int)prev;
	return 0;
}

void members__remove_member(struct members *m, size_t idx)
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
			if (!members__live(m->mem[i].pub.state) &&
			    (!old || m->mem[i].pub.since_ms < m->mem[old].pub.since_ms))
				old = i;
		if (!old) {
			m->ctr.table_full++;
			return NULL;
		}
		members__remove_member(m, old);
	}
	x = &m->mem[m->n++];
	memset(x, 0, sizeof(*x));
	strcpy(x->pub.id, u->id);
	strcpy(x->pub.host, u->host);
	x->pub.port = u->port;
	x->pub.peer_port = u->peer_port;
	x->pub.http_port = u->http_port;
	x->pub.incarnation = u->incarnation;
	x->pub.state = MEMBERS_ALIVE;
	x->pub.since_ms = now;
	j = 1 + members__rnd_below(m, m->n - 1);
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
	members__health_add(m, 1);
	members__record(me, me->pub.id, &u);
	members__rumor_add(m, &u);
}

static int on_alive(struct members *m, const struct members_update *u, uint64_t now,
		    struct members_actions *out)
{
	struct member *x = members__find(m, u->id);
	struct members_update r;
	struct members_action *a;
	bool moved;

	if (x == &m->mem[0]) {
		moved = strcmp(u->host, x->pub.host) || u->port != x->pub.port ||
			u->peer_port != x->pub.peer_port || u->http_port != x->pub.http_port;
		if (u->incarnation > x->pub.incarnation ||
		    (u->incarnation == x->pub.incarnation && moved))
			refute(m, u->incarnation);
		return 0;
	}
	if (!x) {
		if (!(x = add_member(m, u, now)))
			return 0;
		members__record(x, x->pub.id, &r);
		members__rumor_add(m, &r);
		if (!(a = members__act_new(out, MEMBERS_ACT_STATE)))
			return -ENOMEM;
		a->member = r;
		return 0;
	}
	if (u->incarnation <= x->pub.incarnation)
		return 0;
	strcpy(x->pub.host, u->host);
	x->pub.port = u->port;
	x->pub.peer_port = u->peer_port;
	x->pub.http_port = u->http_port;
	x->pub.incarnation = u->incarnation;
	members__record(x, x->pub.id, &r);
	r.state = MEMBERS_ALIVE;
	members__rumor_add(m, &r);
	return members__set_state(m, x, MEMBERS_ALIVE, now, out);
}

int members__on_suspect(struct members *m, const struct members_update *u,
			const char *accuser, uint64_t now, struct members_actions *out)
{
	struct member *x = members__find(m, u->id);
	struct members_update r;

	if (!x || u->incarnation < x->pub.incarnation)
		return 0;
	if (x->pub.state == MEMBERS_SUSPECT) {
		if (members__suspicion_confirm(x, accuser)) {
			members__record(x, accuser, &r);
			members__rumor_add(m, &r);
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
	members__suspicion_start(m, x, accuser, now);
	members__record(x, accuser, &r);
	r.state = MEMBERS_SUSPECT;
	members__rumor_add(m, &r);
	return members__set_state(m, x, MEMBERS_SUSPECT, now, out);
}

/* u->state is DEAD or LEFT. */
int members__on_dead(struct members *m, const struct members_update *u, uint64_t now,
		     struct members_actions *out)
{
	struct member *x = members__find(m, u->id);
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
	members__record(x, u->from, &r);
	r.state = u->state;
	members__rumor_add(m, &r);
	return members__set_state(m, x, u->state, now, out);
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
			return members__on_dead(m, u, now, out);
		/* fall through */
	case MEMBERS_SUSPECT:
		return members__on_suspect(m, u, merge || !u->from[0] ? sender : u->from, now, out);
	default:
		return members__on_dead(m, u, now, out);
	}
}

/* ---------------------------------------------------------------- events */

static bool msg_ok(const struct members_msg *g)
{
	const struct members_update *u;
	size_t i;

	if (g->type < MEMBERS_PING || g->type > MEMBERS_PUSH_PULL_REPLY ||
	    !members__str_ok(g->from, sizeof(g->from), false) ||
	    !members__str_ok(g->from_host, sizeof(g->from_host), false) || !g->from_port ||
	    !members__str_ok(g->target, sizeof(g->target), true) ||
	    !members__str_ok(g->target_host, sizeof(g->target_host), true) ||
	    (g->n_updates && !g->updates))
		return false;
	if (g->type == MEMBERS_PING_REQ && (!g->target[0] || !g->target_host[0] || !g->target_port))
		return false;
	for (i = 0; i < g->n_updates; i++) {
		u = &g->updates[i];
		if (!members__str_ok(u->id, sizeof(u->id), false) ||
		    !members__str_ok(u->from, sizeof(u->from), true) ||
		    !members__str_ok(u->host, sizeof(u->host), false) || !u->port ||
		    u->state > MEMBERS_LEFT)
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
	if ((from = members__find(m, g->from)))
		from->pub.last_seen_ms = now_ms;
	if (err)
		return members__finish(m, out, err);
	switch (g->type) {
	case MEMBERS_PING:
		if (g->target[0] && strcmp(g->target, m->mem[0].pub.id)) {
			m->ctr.misdirected++;
			break;
		}
		err = members__send_to(m, out, MEMBERS_ACK, g->seq, g->from, g->from_host,
				       g->from_port);
		break;
	case MEMBERS_ACK:
		err = members__on_ack(m, g, now_ms, out);
		break;
	case MEMBERS_PING_REQ:
		err = members__on_ping_req(m, g, now_ms, out);
		break;
	case MEMBERS_NACK:
		if (m->probe.active && g->seq == m->probe.seq && m->probe.nacks < m->probe.expect_nacks) {
			m->probe.nacks++;
			m->ctr.nacks++;
		}
		break;
	case MEMBERS_PUSH_PULL:
		err = members__push_pull(m, out, MEMBERS_PUSH_PULL_REPLY, g->from, g->from_host,
					 g->from_port);
		break;
	default:
		break;
	}
	return members__finish(m, out, err);
}

