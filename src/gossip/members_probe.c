/* members_probe.c — failure detection and the timers: direct and indirect probes, relays,
 * suspicion timeouts (Lifeguard), gossip rounds, anti-entropy, seeds, leaving, and
 * members_tick() / members_next_deadline() (see members.h for the protocol). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/members_internal.h"

/* ---------------------------------------------------------------- random picks */

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
		j = i + members__rnd_below(m, c - i);
		t = m->scratch[i];
		m->scratch[i] = m->scratch[j];
		m->scratch[j] = t;
	}
	return i;
}

/* ---------------------------------------------------------------- suspicion (Lifeguard) */

void members__suspicion_start(struct members *m, struct member *x, const char *accuser,
			      uint64_t now)
{
	/* log10(n) = log2(n) * 0.30103 */
	uint64_t n = members__n_live(m), scale = members__log2_fp(n) * 19729 >> 16;
	uint32_t k = m->cfg.suspicion_mult > 2 ? m->cfg.suspicion_mult - 2 : 0;

	if (scale < 1 << 16)
		scale = 1 << 16;
	if (n < (uint64_t)k + 2)
		k = 0;  /* not enough members to expect that many confirmations */
	x->susp_start = now;
	x->susp_min = ((uint64_t)m->cfg.suspicion_mult * m->cfg.probe_interval_ms * scale) >> 16;
	x->susp_max = x->susp_min * m->cfg.suspicion_max_mult;
	x->susp_k = k < MEMBERS__MAX_CONFIRM - 1 ? k : MEMBERS__MAX_CONFIRM - 1;
	x->susp_n = 0;
	x->susp_by[0] = members__id_hash(accuser);
}

/* Lifeguard: max - (max - min) * log(c + 1) / log(k + 1), and min once c reaches k. */
uint64_t members__suspicion_timeout(const struct member *x)
{
	uint64_t frac;

	if (x->susp_n >= x->susp_k)
		return x->susp_min;
	frac = (members__log2_fp(x->susp_n + 1) << 16) / members__log2_fp(x->susp_k + 1);
	return x->susp_max - (((x->susp_max - x->susp_min) * frac) >> 16);
}

/* Counts `accuser` toward a running suspicion; false if it already counted or enough did. */
bool members__suspicion_confirm(struct member *x, const char *accuser)
{
	uint64_t h = members__id_hash(accuser);
	uint32_t i;

	if (x->susp_n >= x->susp_k)
		return false;
	for (i = 0; i <= x->susp_n; i++)
		if (x->susp_by[i] == h)
			return false;
	x->susp_by[++x->susp_n] = h;
	return true;
}

/* ---------------------------------------------------------------- probing */

static int probe_start(struct members *m, uint64_t now, struct members_actions *out)
{
	struct member *x = NULL;
	size_t tries;

	for (tries = 0; m->n > 1 && tries < m->n && !x; tries++) {
		if (m->probe_idx < 1 || m->probe_idx >= m->n)
			m->probe_idx = 1;
		x = &m->mem[m->probe_idx++];
		if (!members__live(x->pub.state))
			x = NULL;
	}
	if (!x)
		return 0;
	memset(&m->probe, 0, sizeof(m->probe));
	m->probe.active = true;
	m->probe.seq = ++m->seq;
	m->probe.timeout_at = now + members__scaled(m, m->cfg.probe_timeout_ms);
	m->probe.deadline = now + members__scaled(m, m->cfg.probe_interval_ms);
	strcpy(m->probe.target, x->pub.id);
	m->ctr.probes++;
	if (!members__send_new(m, out, MEMBERS_PING, m->probe.seq, x->pub.id, x->pub.host,
			       x->pub.port))
		return -ENOMEM;
	strcpy(out->v[out->n - 1].msg.target, x->pub.id);
	return members__piggyback(m, out);
}

static int probe_indirect(struct members *m, const struct member *x, struct members_actions *out)
{
	size_t i, k = pick(m, collect(m, 1u << MEMBERS_ALIVE, x->pub.id), m->cfg.indirect_probes);
	struct members_msg *g;
	const struct member *h;

	m->probe.indirect = true;
	for (i = 0; i < k; i++) {
		h = &m->mem[m->scratch[i]];
		if (!members__send_new(m, out, MEMBERS_PING_REQ, m->probe.seq, h->pub.id,
				       h->pub.host, h->pub.port))
			return -ENOMEM;
		g = &out->v[out->n - 1].msg;
		strcpy(g->target, x->pub.id);
		strcpy(g->target_host, x->pub.host);
		g->target_port = x->pub.port;
		if (members__piggyback(m, out) < 0)
			return -ENOMEM;
		m->probe.expect_nacks++;
		m->ctr.indirect_probes++;
	}
	return 0;
}

static int probe_check(struct members *m, uint64_t now, struct members_actions *out)
{
	struct member *x = m->probe.active ? members__find(m, m->probe.target) : NULL;
	struct members_update u;
	uint32_t missing;

	if (!x || !members__live(x->pub.state)) {
		m->probe.active = false;
		return 0;
	}
	if (now >= m->probe.deadline + m->cfg.probe_interval_ms) {
		/* We were not scheduled for a whole interval (a stall, a stopped process): silence
		 * over that time says nothing about the target, only about us. */
		m->probe.active = false;
		members__health_add(m, 1);
		return 0;
	}
	if (now >= m->probe.deadline) {
		m->probe.active = false;
		m->ctr.probe_failures++;
		/* Lifeguard: helpers that did not even NACK suggest the problem is on our side. */
		missing = m->probe.expect_nacks - m->probe.nacks;
		members__health_add(m, m->probe.expect_nacks ? (int)missing : 1);
		members__record(x, m->mem[0].pub.id, &u);
		return members__on_suspect(m, &u, m->mem[0].pub.id, now, out);
	}
	if (!m->probe.indirect && now >= m->probe.timeout_at)
		return probe_indirect(m, x, out);
	return 0;
}

int members__on_ack(struct members *m, const struct members_msg *g, uint64_t now,
		    struct members_actions *out)
{
	struct member *x;
	struct relay *r;

	if (m->probe.active && g->seq == m->probe.seq) {
		m->probe.active = false;
		m->ctr.acks++;
		members__health_add(m, -1);
		if ((x = members__find(m, m->probe.target)))
			x->pub.last_seen_ms = now;
		return 0;
	}
	for (r = m->relay; r < m->relay + MEMBERS__MAX_RELAYS; r++) {
		if (r->used && r->seq == g->seq) {
			r->used = false;
			return members__send_to(m, out, MEMBERS_ACK, r->origin_seq, r->origin,
						r->host, r->port);
		}
	}
	return 0;
}

/* A PING_REQ: ping the target for the origin, and remember to forward its ACK or to NACK. */
int members__on_ping_req(struct members *m, const struct members_msg *g, uint64_t now,
			 struct members_actions *out)
{
	struct relay *r, *slot = &m->relay[0];

	if (strcmp(g->target, m->mem[0].pub.id) == 0)
		return 0;
	for (r = m->relay; r < m->relay + MEMBERS__MAX_RELAYS; r++)
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
	if (!members__send_new(m, out, MEMBERS_PING, slot->seq, g->target, g->target_host,
			       g->target_port))
		return -ENOMEM;
	strcpy(out->v[out->n - 1].msg.target, g->target);
	return members__piggyback(m, out);
}

static int push_pull_random(struct members *m, enum members_state st, struct members_actions *out)
{
	const struct member *x;

	if (!pick(m, collect(m, 1u << st, NULL), 1))
		return 0;
	x = &m->mem[m->scratch[0]];
	return members__push_pull(m, out, MEMBERS_PUSH_PULL, x->pub.id, x->pub.host, x->pub.port);
}

/* Pending rumors also go out on their own, to gossip_nodes random live members per
 * gossip_interval (memberlist's gossip): piggybacking alone ties the spread of news to the
 * probe rate and wastes sends on probes of the very member that failed. */
static int gossip_round(struct members *m, struct members_actions *out)
{
	size_t i, k = pick(m, collect(m, MEMBERS__LIVE_MASK, NULL), m->cfg.gossip_nodes);
	const struct member *x;
	int err = 0;

	for (i = 0; i < k && m->n_rumors && !err; i++) {
		x = &m->mem[m->scratch[i]];
		err = members__send_to(m, out, MEMBERS_GOSSIP, 0, x->pub.id, x->pub.host,
				       x->pub.port);
	}
	return err;
}

static int contact_seeds(struct members *m, uint64_t now, struct members_actions *out)
{
	size_t i, first = 0, n = m->n_seeds;
	int err = 0;

	/* Alone, we ask every seed, since any one live seed is enough; otherwise one seed now and
	 * then heals a split start (two groups that never heard of each other). */
	if (members__n_live(m) > 1) {
		first = members__rnd_below(m, n);
		n = 1;
		m->next_seed = now + m->cfg.seed_interval_ms;
	} else {
		m->next_seed = now + m->cfg.join_retry_ms;
	}
	for (i = first; i < first + n && !err; i++)
		err = members__push_pull(m, out, MEMBERS_PUSH_PULL, "", m->seed[i].host,
					 m->seed[i].port);
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
		return members__finish(m, out, err);
	if (!m->probe.active && now >= m->next_probe) {
		m->next_probe = now + members__scaled(m, m->cfg.probe_interval_ms);
		if ((err = probe_start(m, now, out)) < 0)
			return members__finish(m, out, err);
	}
	for (r = m->relay; r < m->relay + MEMBERS__MAX_RELAYS && !err; r++) {
		if (r->used && now >= r->nack_at) {
			r->used = false;
			err = members__send_to(m, out, MEMBERS_NACK, r->origin_seq, r->origin,
					       r->host, r->port);
		}
	}
	for (i = 1; i < m->n && !err; i++) {
		x = &m->mem[i];
		if (x->pub.state == MEMBERS_SUSPECT &&
		    now - x->susp_start >= members__suspicion_timeout(x)) {
			members__record(x, m->mem[0].pub.id, &u);
			u.state = MEMBERS_DEAD;
			err = members__on_dead(m, &u, now, out);
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
			members__remove_member(m, i);
	}
	return members__finish(m, out, err);
}

int members_leave(struct members *m, uint64_t now, struct members_actions *out)
{
	struct members_update u, *v;
	size_t i;
	int err;

	if (m->left)
		return 0;
	m->left = true;
	err = members__set_state(m, &m->mem[0], MEMBERS_LEFT, now, out);
	members__record(&m->mem[0], m->mem[0].pub.id, &u);
	for (i = 1; i < m->n && !err; i++) {
		if (!members__live(m->mem[i].pub.state))
			continue;
		if (!members__send_new(m, out, MEMBERS_GOSSIP, 0, m->mem[i].pub.id,
				       m->mem[i].pub.host, m->mem[i].pub.port) ||
		    !(v = members__upd_new(out)))
			err = -ENOMEM;
		else
			*v = u;
	}
	return members__finish(m, out, err);
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
	for (i = 0; i < MEMBERS__MAX_RELAYS; i++)
		if (m->relay[i].used)
			t = min64(t, m->relay[i].nack_at);
	for (i = 1; i < m->n; i++) {
		x = &m->mem[i];
		if (x->pub.state == MEMBERS_SUSPECT)
			t = min64(t, x->susp_start + members__suspicion_timeout(x));
		else if (x->pub.state == MEMBERS_DEAD)
			t = min64(t, x->pub.since_ms + m->cfg.dead_reap_ms);
		else if (x->pub.state == MEMBERS_LEFT)
			t = min64(t, x->pub.since_ms + m->cfg.left_reap_ms);
	}
	return t;
}
