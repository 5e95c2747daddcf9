/* transport.c — the gossip driver (gossip.h): lifecycle, the timer, the receive path, carrying
 * out the state machine's actions, leaving, and the accessors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "gossip/transport_int.h"
#include "util/log.h"
#include "util/num.h"
#include "wire/keyring.h"
#include "wire/wire.h"

#define WATCHDOG_MS 1000  /* longest the timer sleeps, so the join watchdog runs */
#define LEAVE_POLL_MS 10

static const char *const state_names[] = { "alive", "suspect", "dead", "left" };

const char *gossip_state_name(int state)
{
	return state >= 0 && state < 4 ? state_names[state] : "unknown";
}

static void on_timer(uv_timer_t *t);

static void nomem(struct gossip *g, int err, const char *what)
{
	if (err == -ENOMEM)
		gossip__log_limited(g, GOSSIP__LOG_NOMEM, LOG_ERROR,
				    "gossip: out of memory in %s: packets lost", what);
}

/* ---------------------------------------------------------------- carrying out actions */

static void send_msg(struct gossip *g, const struct members_action *a)
{
	bool full = a->msg.type == MEMBERS_PUSH_PULL || a->msg.type == MEMBERS_PUSH_PULL_REPLY;
	char to[MEMBERS_HOST_MAX + 32];
	struct wire_gossip w;
	size_t len, nsent;
	int err;

	/* Probe traffic stays under the MTU, so it is never fragmented: rumors that do not fit
	 * (only with very long host names) miss this packet and ride on later ones. A full state
	 * may use a whole datagram. */
	if ((err = gossip__msg_to_wire(&a->msg, &w, &g->enc, &g->enc_cap)) < 0 ||
	    (err = wire_gossip_seal(&g->sender, g->keyring, &w, g->sbuf,
				    full ? WIRE_GOSSIP_PACKET_MAX : WIRE_GOSSIP_MTU, &len,
				    &nsent)) < 0) {
		snprintf(to, sizeof(to), "%s:%u (sealing type %u)", a->to_host,
			 (unsigned)a->to_port, (unsigned)a->msg.type);
		gossip__send_error(g, err, to);
		return;
	}
	gossip__send(g, a->to_host, a->to_port, a->to_id[0] == '\0', g->sbuf, len);
}

static void member_changed(struct gossip *g, const struct members_action *a)
{
	const struct members_update *u = &a->member;
	const struct members_info *cur = members_find(g->m, u->id);
	struct members_info info;

	memset(&info, 0, sizeof(info));
	strcpy(info.id, u->id);
	strcpy(info.host, u->host);
	info.port = u->port;
	info.peer_port = u->peer_port;
	info.http_port = u->http_port;
	info.state = (enum members_state)u->state;
	info.incarnation = u->incarnation;
	info.self = strcmp(u->id, g->id) == 0;
	if (cur) {
		info.last_seen_ms = cur->last_seen_ms;
		info.since_ms = cur->since_ms;
	}
	/* A dead or departed node that comes back is a new boot: let its packets in even when
	 * its clock went back (docs/PROTOCOL.md, gossip replay protection). */
	if (u->state == MEMBERS_DEAD || u->state == MEMBERS_LEFT)
		wire_replay_forget(g->replay, u->id);
	log_info("gossip: member id=%s addr=%s:%u http_port=%u state=%s prev=%s incarnation=%llu",
		 u->id, u->host, (unsigned)u->port, (unsigned)u->http_port,
		 gossip_state_name(u->state), a->prev < 0 ? "new" : gossip_state_name(a->prev),
		 (unsigned long long)u->incarnation);
	if (g->on_member)
		g->on_member(g->cb_arg, &info, a->prev);
}

/* Carries out and forgets the pending actions; `copies`: how many times each packet goes. */
static void run_actions(struct gossip *g, int copies)
{
	const struct members_action *a;
	bool changed = false;
	size_t i;
	int c;

	for (i = 0; i < g->acts.n && !g->closing; i++) {
		a = &g->acts.v[i];
		switch (a->type) {
		case MEMBERS_ACT_SEND:
			for (c = 0; c < copies; c++)
				send_msg(g, a);
			break;
		case MEMBERS_ACT_STATE:
			changed = true;
			member_changed(g, a);
			break;
		case MEMBERS_ACT_RING:
			changed = true;
			if (g->on_change)
				g->on_change(g->cb_arg);
			break;
		default:
			break;
		}
	}
	members_actions_reset(&g->acts);
	gossip__sync_counters(g);
	if (changed)
		gossip__update_gauges(g);
}

/* ---------------------------------------------------------------- timer and packets */

static void rearm(struct gossip *g, uint64_t min_delay)
{
	uint64_t now, next, delay;

	if (g->closing || g->left_sent)
		return;
	now = uv_now(g->loop);
	next = members_next_deadline(g->m);
	delay = next > now ? next - now : 0;
	if (delay > WATCHDOG_MS)
		delay = WATCHDOG_MS;
	/* A deadline already due after a tick (one that failed for lack of memory) must not
	 * turn the loop into a spin. */
	if (delay < min_delay)
		delay = min_delay;
	uv_timer_start(&g->timer, on_timer, delay, 0);
}

static void on_timer(uv_timer_t *t)
{
	struct gossip *g = t->data;
	uint64_t now = uv_now(g->loop);

	nomem(g, members_tick(g->m, now, &g->acts), "tick");
	run_actions(g, 1);
	gossip__watchdog(g, now);
	rearm(g, 1);
}

static enum gossip_reject reason_of(int err)
{
	switch (err) {
	case -ENOKEY:
		return GOSSIP_REJ_AUTH;
	case -EBADMSG:
		return GOSSIP_REJ_TAMPERED;
	case -EALREADY:
	case -ESTALE:
		return GOSSIP_REJ_REPLAY;
	case -EMSGSIZE:
		return GOSSIP_REJ_OVERSIZED;
	case -EPROTONOSUPPORT:
		return GOSSIP_REJ_VERSION;
	default:
		return GOSSIP_REJ_MALFORMED;
	}
}

static void on_packet(struct gossip *g, const uint8_t *pkt, size_t len,
		      const struct sockaddr *src)
{
	struct members_msg msg;
	struct wire_gossip w;
	int err;

	/* Authenticated and replay-checked before a byte of the body is decoded. */
	if ((err = wire_gossip_open(g->replay, g->keyring, pkt, len, &w)) < 0) {
		if (err == -ENOMEM)
			nomem(g, err, "receive");
		else
			gossip__reject(g, reason_of(err), err, src);
		return;
	}
	err = gossip__msg_from_wire(&w, src, &msg, &g->dec, &g->dec_cap);
	if (err == 0)
		err = members_on_msg(g->m, &msg, uv_now(g->loop), &g->acts);
	if (err == 0) {
		g->st.accepted++;
		if (strcmp(w.from, g->id) != 0)
			g->other_seen = true;
	} else if (err == -ENOMEM) {
		nomem(g, err, "receive");
	} else {
		gossip__reject(g, GOSSIP_REJ_MALFORMED, -EPROTO, src);
	}
	wire_gossip_close(&w);
	run_actions(g, 1);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct gossip *g = h->data;

	(void)hint;
	/* One datagram at a time (no recvmmsg), so one buffer serves every read. */
	*buf = uv_buf_init((char *)g->rbuf, sizeof(g->rbuf));
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
		    const struct sockaddr *addr, unsigned flags)
{
	struct gossip *g = h->data;

	if (g->closing || (nread == 0 && !addr))
		return;
	if (nread < 0) {
		gossip__log_limited(g, GOSSIP__LOG_RECV, LOG_WARN,
				    "gossip: receive failed err=\"%s\"", uv_strerror((int)nread));
		return;
	}
	gossip__count_in(g, (size_t)nread);
	if (flags & UV_UDP_PARTIAL)
		gossip__reject(g, GOSSIP_REJ_OVERSIZED, -EMSGSIZE, addr);
	else
		on_packet(g, (const uint8_t *)buf->base, (size_t)nread, addr);
	rearm(g, 0);
}

/* ---------------------------------------------------------------- leaving */

static void on_leave_timer(uv_timer_t *t)
{
	struct gossip *g = t->data;
	uint64_t now = uv_now(g->loop);
	gossip_done_cb done;

	if (!g->left_sent) {
		g->left_sent = true;
		uv_timer_stop(&g->timer);
		g->leave_deadline = now + GOSSIP_LEAVE_WAIT_MS;
		log_info("gossip: leaving id=%s incarnation=%llu", g->id,
			 (unsigned long long)members_incarnation(g->m));
		nomem(g, members_leave(g->m, now, &g->acts), "leave");
		/* Twice: a lost leave would cost a suspicion timeout and a `dead` instead of an
		 * immediate `left`. The copies are sealed apart, so neither is a replay. */
		run_actions(g, 2);
		if (g->closing)
			return;
	}
	if ((g->pending_sends || gossip__queued_packets(g)) && now < g->leave_deadline) {
		uv_timer_start(t, on_leave_timer, LEAVE_POLL_MS, 0);
		return;
	}
	done = g->leave_done;
	g->leave_done = NULL;
	if (done)
		done(g->leave_arg);
}

int gossip_leave(struct gossip *g, gossip_done_cb done, void *arg)
{
	if (g->closing || g->leaving)
		return -EALREADY;
	g->leaving = true;
	g->leave_done = done;
	g->leave_arg = arg;
	/* From the loop, so that done never runs inside this call and a gossip callback may
	 * call this while actions are being carried out. */
	uv_timer_start(&g->leave_timer, on_leave_timer, 0, 0);
	return 0;
}

/* ---------------------------------------------------------------- lifecycle */

static void destroy(struct gossip *g)
{
	members_free(g->m);
	wire_replay_free(g->replay);
	members_actions_close(&g->acts);
	free(g->dec);
	free(g->enc);
	free(g->seeds);
	free(g->local);
	free(g);
}

void gossip__maybe_destroy(struct gossip *g)
{
	if (g->closing && !g->open_handles && !g->pending_sends && !g->pending_lookups)
		destroy(g);
}

static void on_closed(uv_handle_t *h)
{
	struct gossip *g = h->data;

	g->open_handles--;
	gossip__maybe_destroy(g);
}

static void begin_close(struct gossip *g)
{
	g->closing = true;
	gossip__hosts_close(g);
	uv_close((uv_handle_t *)&g->udp, on_closed);
	uv_close((uv_handle_t *)&g->timer, on_closed);
	uv_close((uv_handle_t *)&g->leave_timer, on_closed);
}

void gossip_free(struct gossip *g)
{
	if (!g || g->closing)
		return;
	begin_close(g);
}

static int parse_seeds(struct gossip *g, const struct gossip_config *cfg)
{
	size_t i, off = 0;
	int n;

	if (cfg->nseeds && !cfg->seeds)
		return -EINVAL;
	if (!(g->seeds = calloc(cfg->nseeds + 1, sizeof(*g->seeds))))
		return -ENOMEM;
	for (i = 0; i < cfg->nseeds; i++) {
		if (!cfg->seeds[i] ||
		    num_parse_hostport(cfg->seeds[i], g->seeds[i].host, sizeof(g->seeds[i].host),
				       &g->seeds[i].port) < 0 ||
		    !g->seeds[i].port)
			return -EINVAL;
		n = snprintf(g->seeds_text + off, sizeof(g->seeds_text) - off, "%s%s",
			     i ? "," : "", cfg->seeds[i]);
		if (n > 0 && (size_t)n < sizeof(g->seeds_text) - off)
			off += (size_t)n;
	}
	g->nseeds = cfg->nseeds;
	if (!g->nseeds)
		strcpy(g->seeds_text, "none");
	return 0;
}

/* The advertised address: as configured, else the bound address, else (bound to a wildcard)
 * this host's first non-loopback IPv4 address, as memberlist does. */
static int advertise(struct gossip *g, const struct gossip_config *cfg)
{
	const struct sockaddr_in *a;
	size_t i;

	g->adv_port = cfg->advertise_port ? cfg->advertise_port : g->bound_port;
	if (cfg->advertise_host && cfg->advertise_host[0]) {
		if (strlen(cfg->advertise_host) > MEMBERS_HOST_MAX)
			return -EINVAL;
		strcpy(g->adv_host, cfg->advertise_host);
	} else if (!gossip__addr_is_any((const struct sockaddr *)&g->bound)) {
		gossip__addr_text((const struct sockaddr *)&g->bound, g->adv_host,
				  sizeof(g->adv_host));
	} else {
		strcpy(g->adv_host, "127.0.0.1");
		for (i = 0; i < g->nlocal; i++) {
			a = (const struct sockaddr_in *)&g->local[i];
			if (a->sin_family == AF_INET && (ntohl(a->sin_addr.s_addr) >> 24) != 127) {
				gossip__addr_text((const struct sockaddr *)a, g->adv_host,
						  sizeof(g->adv_host));
				break;
			}
		}
	}
	if (gossip__addr_parse(g->adv_host, g->adv_port, 0, &g->adv_addr) < 0)
		g->adv_addr.ss_family = AF_UNSPEC;
	return 0;
}

static int start(struct gossip *g, const struct gossip_config *cfg)
{
	struct sockaddr_storage bind_addr;
	struct members_config mc;
	uv_timeval64_t tv;
	uint64_t epoch_ms;
	int err, len = sizeof(g->bound);

	if ((err = parse_seeds(g, cfg)) < 0 ||
	    gossip__addr_parse(cfg->bind_host, cfg->bind_port, 0, &bind_addr) < 0)
		return err < 0 ? err : -EINVAL;
	if (cfg->timings)
		mc = *cfg->timings;
	else
		members_config_default(&mc);
	/* Every member may be a sender, plus a few that come and go. */
	if ((err = wire_replay_new(&g->replay, 2 * (size_t)mc.max_members + 16)) < 0 ||
	    (err = gossip__local_addrs(g)) < 0)
		return err;
	if ((err = uv_udp_bind(&g->udp, (const struct sockaddr *)&bind_addr, 0)) < 0 ||
	    (err = uv_udp_getsockname(&g->udp, (struct sockaddr *)&g->bound, &len)) < 0)
		return err;
	g->family = g->bound.ss_family;
	g->bound_port = ntohs(g->family == AF_INET ?
			      ((struct sockaddr_in *)&g->bound)->sin_port :
			      ((struct sockaddr_in6 *)&g->bound)->sin6_port);
	if ((err = advertise(g, cfg)) < 0)
		return err;
	/* Wall-clock time orders the boots of one node: seconds for the incarnation (a restart
	 * outranks its old, maybe dead record) and milliseconds for the packet epoch. */
	if ((err = uv_gettimeofday(&tv)) < 0)
		return err;
	epoch_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
	if ((err = wire_gossip_sender_init(&g->sender, g->id, epoch_ms)) < 0)
		return err;
	uv_update_time(g->loop);
	g->start_ms = uv_now(g->loop);
	mc.id = g->id;
	mc.host = g->adv_host;
	mc.port = g->adv_port;
	mc.peer_port = g->adv_port;
	mc.http_port = cfg->http_port;
	mc.incarnation = (uint64_t)tv.tv_sec;
	randombytes_buf(&mc.rng_seed, sizeof(mc.rng_seed));
	mc.seeds = g->seeds;
	mc.n_seeds = g->nseeds;
	if ((err = members_new(&g->m, &mc, g->start_ms)) < 0)
		return err;
	gossip__metrics_init(g, cfg->metrics);
	gossip__sync_counters(g);
	gossip__update_gauges(g);
	if ((err = uv_udp_recv_start(&g->udp, on_alloc, on_recv)) < 0)
		return err;
	/* The first tick (the seed contact) runs from the loop, not from inside gossip_new. */
	uv_timer_start(&g->timer, on_timer, 0, 0);
	log_info("gossip: started id=%s bind=%s:%u advertise=%s:%u seeds=%s incarnation=%llu",
		 g->id, cfg->bind_host, (unsigned)g->bound_port, g->adv_host, (unsigned)g->adv_port,
		 g->seeds_text, (unsigned long long)mc.incarnation);
	return 0;
}

int gossip_new(struct gossip **out, uv_loop_t *loop, const struct gossip_config *cfg)
{
	struct gossip *g;
	int err;

	*out = NULL;
	if (!cfg->node_id ||
	    !wire_node_id_valid(cfg->node_id, strnlen(cfg->node_id, MEMBERS_ID_MAX + 1)) ||
	    !cfg->bind_host || !cfg->keyring || !wire_keyring_count(cfg->keyring))
		return -EINVAL;
	if (!(g = calloc(1, sizeof(*g))))
		return -ENOMEM;
	g->loop = loop;
	g->keyring = cfg->keyring;
	strcpy(g->id, cfg->node_id);
	g->http_port = cfg->http_port;
	g->on_change = cfg->on_change;
	g->on_member = cfg->on_member;
	g->cb_arg = cfg->cb_arg;
	g->join_warn_ms = cfg->join_warn_ms ? cfg->join_warn_ms : GOSSIP_JOIN_WARN_MS;
	members_actions_init(&g->acts);
	if ((err = uv_udp_init(loop, &g->udp)) < 0) {
		free(g);
		return err;
	}
	/* The handles exist from here on, so every later failure ends in begin_close(). */
	uv_timer_init(loop, &g->timer);
	uv_timer_init(loop, &g->leave_timer);
	g->udp.data = g->timer.data = g->leave_timer.data = g;
	g->open_handles = 3;
	if ((err = start(g, cfg)) < 0) {
		log_error("gossip: cannot start id=%s bind=%s:%u err=\"%s\"", cfg->node_id,
			  cfg->bind_host, (unsigned)cfg->bind_port, uv_strerror(err));
		begin_close(g);
		return err;
	}
	*out = g;
	return 0;
}

/* ---------------------------------------------------------------- accessors */

const struct members *gossip_members(const struct gossip *g)
{
	return g->m;
}

const char *gossip_self_id(const struct gossip *g)
{
	return g->id;
}

uint64_t gossip_incarnation(const struct gossip *g)
{
	return members_incarnation(g->m);
}

uint16_t gossip_port(const struct gossip *g)
{
	return g->bound_port;
}

const char *gossip_advertise_host(const struct gossip *g)
{
	return g->adv_host;
}

uint16_t gossip_advertise_port(const struct gossip *g)
{
	return g->adv_port;
}

uint64_t gossip_last_seen_ago_ms(const struct gossip *g, const struct members_info *m)
{
	uint64_t now = uv_now(g->loop);

	if (m->self)
		return 0;
	if (!m->last_seen_ms)
		return UINT64_MAX;
	return now > m->last_seen_ms ? now - m->last_seen_ms : 0;
}

bool gossip_joined(const struct gossip *g)
{
	return g->other_seen || !g->nseeds || (g->seed_lookups >= g->nseeds && !g->seed_remote);
}

void gossip_stats(const struct gossip *g, struct gossip_stats *out)
{
	*out = g->st;
}
