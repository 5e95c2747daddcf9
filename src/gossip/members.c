/* members.c — the SWIM state machine's lifecycle, configuration, accessors and action list,
 * and the small helpers its other files share (see members.h for the protocol and its rules,
 * members_internal.h for how the code is split). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/members_internal.h"

/* ---------------------------------------------------------------- small helpers */

uint64_t members__rnd(struct members *m)
{
	/* xorshift64* (Vigna): enough for picking probe targets; the caller seeds it. */
	m->rng ^= m->rng >> 12;
	m->rng ^= m->rng << 25;
	m->rng ^= m->rng >> 27;
	return m->rng * 0x2545f4914f6cdd1dull;
}

size_t members__rnd_below(struct members *m, size_t n)
{
	return n ? (size_t)((members__rnd(m) >> 32) * n >> 32) : 0;
}

/* log2(x) in 16.16 fixed point for x >= 1, by repeated squaring of the mantissa (the pure core
 * does without libm). */
uint64_t members__log2_fp(uint64_t x)
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

/* A NUL-terminated string within `size` bytes (an array field, or a C string of at most
 * size - 1 bytes) of printable non-space ASCII: ids and hosts end up in logs and JSON. */
bool members__str_ok(const char *s, size_t size, bool empty_ok)
{
	size_t i, len = strnlen(s, size);

	if (len == size || (len == 0 && !empty_ok))
		return false;
	for (i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

uint64_t members__id_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;  /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	return h;
}

struct member *members__find(const struct members *m, const char *id)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		if (strcmp(m->mem[i].pub.id, id) == 0)
			return &m->mem[i];
	return NULL;
}

size_t members__n_live(const struct members *m)
{
	size_t i, c = 0;

	for (i = 0; i < m->n; i++)
		c += members__live(m->mem[i].pub.state);
	return c;
}

void members__record(const struct member *x, const char *from, struct members_update *u)
{
	memset(u, 0, sizeof(*u));
	strcpy(u->id, x->pub.id);
	strcpy(u->from, from);
	strcpy(u->host, x->pub.host);
	u->port = x->pub.port;
	u->peer_port = x->pub.peer_port;
	u->http_port = x->pub.http_port;
	u->state = (uint8_t)x->pub.state;
	u->incarnation = x->pub.incarnation;
}

void members__health_add(struct members *m, int delta)
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

struct members_action *members__act_new(struct members_actions *out, uint8_t type)
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
struct members_update *members__upd_new(struct members_actions *out)
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
int members__finish(struct members *m, struct members_actions *out, int err)
{
	size_t i;

	if (m->ring_dirty && members__act_new(out, MEMBERS_ACT_RING))
		m->ring_dirty = false;
	else if (m->ring_dirty && !err)
		err = -ENOMEM;
	for (i = 0; i < out->n; i++)
		out->v[i].msg.updates = out->v[i].msg.n_updates ? out->upd + out->v[i].upd_off : NULL;
	return err;
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

	if (!c->id || !members__str_ok(c->id, MEMBERS_ID_MAX + 1, false) || !c->host ||
	    !members__str_ok(c->host, MEMBERS_HOST_MAX + 1, false) || !c->port ||
	    !c->probe_interval_ms || !c->probe_timeout_ms ||
	    c->probe_timeout_ms >= c->probe_interval_ms || !c->suspicion_mult ||
	    !c->suspicion_max_mult || !c->retransmit_mult || !c->max_piggyback ||
	    !c->gossip_interval_ms ||
	    !c->push_pull_interval_ms || !c->reconnect_interval_ms || !c->join_retry_ms ||
	    !c->seed_interval_ms || !c->awareness_max || c->max_members < 2 ||
	    (c->n_seeds && !c->seeds))
		return false;
	for (i = 0; i < c->n_seeds; i++)
		if (!members__str_ok(c->seeds[i].host, sizeof(c->seeds[i].host), false) ||
		    !c->seeds[i].port)
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
	me->http_port = cfg->http_port;
	me->incarnation = cfg->incarnation;
	me->state = MEMBERS_ALIVE;
	me->last_seen_ms = me->since_ms = now;
	me->self = true;
	m->n = 1;
	/* xorshift must not start at 0; mixing also spreads nearby seeds apart. */
	m->rng = (cfg->rng_seed ^ 0x9e3779b97f4a7c15ull) | 1;
	m->seq = (uint32_t)members__rnd(m);
	/* Random phases, so that nodes started together do not probe in lockstep. */
	m->next_probe = now + members__rnd_below(m, cfg->probe_interval_ms);
	m->next_push_pull = now + cfg->push_pull_interval_ms / 2 +
			    members__rnd_below(m, cfg->push_pull_interval_ms / 2 + 1);
	m->next_reconnect = now + cfg->reconnect_interval_ms;
	m->next_seed = now;
	members__record(&m->mem[0], me->id, &u);
	members__rumor_add(m, &u);
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
	const struct member *x = members__find(m, id);

	return x ? &x->pub : NULL;
}

size_t members_ring_ids(const struct members *m, const char **ids, size_t cap)
{
	size_t i, c = 0;

	for (i = 0; i < m->n; i++) {
		if (!members__live(m->mem[i].pub.state))
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
