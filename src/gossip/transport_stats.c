/* transport_stats.c — what the gossip driver counts and says: struct gossip_stats, the
 * Prometheus series (src/util/metrics.h), rate-limited log lines, and the join watchdog that
 * tells an operator why a node does not join. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>

#include "gossip/transport_int.h"
#include "util/log.h"
#include "util/metrics.h"
#include "wire/wire.h"

static const char *const reject_names[GOSSIP_REJ_MAX] = {
	"auth", "tampered", "replay", "malformed", "oversized", "version",
};

const char *gossip_reject_name(enum gossip_reject r)
{
	return (unsigned)r < GOSSIP_REJ_MAX ? reject_names[r] : "unknown";
}

/* ---------------------------------------------------------------- metrics */

static struct metrics_counter *counter(struct metrics *mr, const char *name, const char *help)
{
	return metrics_counter(mr, name, help, "");
}

void gossip__metrics_init(struct gossip *g, struct metrics *mr)
{
	struct gossip__metrics *x = &g->met;
	char labels[64];
	int i;

	memset(x, 0, sizeof(*x));
	if (!mr)
		return;
	for (i = 0; i < 4; i++) {
		snprintf(labels, sizeof(labels), "state=\"%s\"", gossip_state_name(i));
		x->members[i] = metrics_gauge(mr, "llmlimit_gossip_members",
					      "Cluster members in this node's view, by state.",
					      labels);
	}
	x->health = metrics_gauge(mr, "llmlimit_gossip_health_score",
				  "Local health (Lifeguard): 0 is healthy; probes slow down as "
				  "it rises.",
				  "");
	for (i = 0; i < 2; i++) {
		snprintf(labels, sizeof(labels), "dir=\"%s\"", i ? "out" : "in");
		x->packets[i] = metrics_counter(mr, "llmlimit_gossip_packets_total",
						"Gossip packets received and sent.", labels);
		x->bytes[i] = metrics_counter(mr, "llmlimit_gossip_bytes_total",
					      "Gossip bytes received and sent.", labels);
	}
	for (i = 0; i < GOSSIP_REJ_MAX; i++) {
		snprintf(labels, sizeof(labels), "reason=\"%s\"", reject_names[i]);
		x->rejected[i] = metrics_counter(mr, "llmlimit_gossip_rejected_total",
						 "Gossip packets dropped, by reason (auth: no or "
						 "another cluster key).", labels);
	}
	x->send_errors = counter(mr, "llmlimit_gossip_send_errors_total",
				 "Gossip packets that could not be sent.");
	x->probes = counter(mr, "llmlimit_gossip_probes_total", "Direct probes started.");
	x->acks = counter(mr, "llmlimit_gossip_probe_acks_total",
			  "Probes answered, directly or through a relay.");
	x->probe_failures = counter(mr, "llmlimit_gossip_probe_failures_total",
				    "Probes without an answer by their deadline.");
	x->indirect = counter(mr, "llmlimit_gossip_indirect_probes_total",
			      "Indirect probe requests (PING_REQ) sent.");
	x->nacks = counter(mr, "llmlimit_gossip_nacks_total",
			   "NACKs received: a relay could not reach the target either.");
	x->suspicions = counter(mr, "llmlimit_gossip_suspicions_total",
				"Members that became suspect in this node's view.");
	x->refutations = counter(mr, "llmlimit_gossip_refutations_total",
				 "Times this node refuted a suspicion of itself.");
	x->deaths = counter(mr, "llmlimit_gossip_deaths_total",
			    "Members declared dead in this node's view.");
	x->leaves = counter(mr, "llmlimit_gossip_leaves_total",
			    "Members that left gracefully, in this node's view.");
	x->joins = counter(mr, "llmlimit_gossip_joins_total", "Members added to this node's view.");
	x->push_pulls = counter(mr, "llmlimit_gossip_push_pulls_total",
				"Full-state exchanges started (anti-entropy, seeds, dead "
				"members).");
}

/* The state machine's counters only grow; the registry takes their increments. */
void gossip__sync_counters(struct gossip *g)
{
	const struct members_counters *c = members_counters(g->m);
	struct members_counters *l = &g->last_ctr;
	struct gossip__metrics *x = &g->met;

	metrics_counter_add(x->probes, c->probes - l->probes);
	metrics_counter_add(x->acks, c->acks - l->acks);
	metrics_counter_add(x->probe_failures, c->probe_failures - l->probe_failures);
	metrics_counter_add(x->indirect, c->indirect_probes - l->indirect_probes);
	metrics_counter_add(x->nacks, c->nacks - l->nacks);
	metrics_counter_add(x->suspicions, c->suspicions - l->suspicions);
	metrics_counter_add(x->refutations, c->refutations - l->refutations);
	metrics_counter_add(x->deaths, c->deaths - l->deaths);
	metrics_counter_add(x->leaves, c->leaves - l->leaves);
	metrics_counter_add(x->joins, c->joins - l->joins);
	metrics_counter_add(x->push_pulls, c->push_pulls - l->push_pulls);
	*l = *c;
	metrics_gauge_set(x->health, members_health(g->m));
}

void gossip__update_gauges(struct gossip *g)
{
	size_t i, n = members_count(g->m), by[4] = { 0 };
	const struct members_info *mi;

	for (i = 0; i < n; i++)
		if ((mi = members_at(g->m, i)) && (unsigned)mi->state < 4)
			by[mi->state]++;
	for (i = 0; i < 4; i++)
		metrics_gauge_set(g->met.members[i], (double)by[i]);
}

void gossip__count_in(struct gossip *g, size_t len)
{
	g->st.packets_in++;
	g->st.bytes_in += len;
	metrics_counter_add(g->met.packets[0], 1);
	metrics_counter_add(g->met.bytes[0], len);
}

void gossip__count_out(struct gossip *g, size_t len)
{
	g->st.packets_out++;
	g->st.bytes_out += len;
	metrics_counter_add(g->met.packets[1], 1);
	metrics_counter_add(g->met.bytes[1], len);
}

/* ---------------------------------------------------------------- logs */

void gossip__log_limited(struct gossip *g, int slot, int lvl, const char *fmt, ...)
{
	uint64_t now = uv_now(g->loop);
	char line[1024], more[48] = "";
	va_list ap;

	if (lvl < log_level)
		return;
	if (g->log_at[slot] && now - g->log_at[slot] < GOSSIP__LOG_EVERY_MS) {
		g->log_quiet[slot]++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (g->log_quiet[slot])
		snprintf(more, sizeof(more), " suppressed=%llu",
			 (unsigned long long)g->log_quiet[slot]);
	log__write(lvl, "%s%s", line, more);
	g->log_at[slot] = now ? now : 1;
	g->log_quiet[slot] = 0;
}

void gossip__send_error(struct gossip *g, int err, const char *to)
{
	g->st.send_errors++;
	metrics_counter_add(g->met.send_errors, 1);
	gossip__log_limited(g, GOSSIP__LOG_SEND, LOG_WARN, "gossip: send failed to=%s err=\"%s\"",
			    to, uv_strerror(err));
}

void gossip__reject(struct gossip *g, enum gossip_reject r, int err, const struct sockaddr *src)
{
	bool auth = r == GOSSIP_REJ_AUTH || r == GOSSIP_REJ_TAMPERED;
	char from[INET6_ADDRSTRLEN + 8], ip[INET6_ADDRSTRLEN];
	uint16_t port = 0;

	g->st.rejected[r]++;
	metrics_counter_add(g->met.rejected[r], 1);
	gossip__addr_text(src, ip, sizeof(ip));
	if (src && src->sa_family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)src)->sin_port);
	else if (src && src->sa_family == AF_INET6)
		port = ntohs(((const struct sockaddr_in6 *)src)->sin6_port);
	snprintf(from, sizeof(from), strchr(ip, ':') ? "[%s]:%u" : "%s:%u", ip, port);
	if (auth)
		snprintf(g->last_bad_from, sizeof(g->last_bad_from), "%s", from);
	gossip__log_limited(g, GOSSIP__LOG_REJECT + (int)r, LOG_WARN,
			    "gossip: dropped packet reason=%s from=%s err=\"%s\"%s",
			    reject_names[r], from, wire_strerror(err),
			    r == GOSSIP_REJ_AUTH ? " hint=\"different cluster key?\"" : "");
}

/* A node that has accepted nothing since it started says why, once per 10 s: every packet it
 * got failed authentication, or nobody answered its seeds (which is also all that a node with
 * another key sees when no member knows its address). */
void gossip__watchdog(struct gossip *g, uint64_t now)
{
	uint64_t bad = g->st.rejected[GOSSIP_REJ_AUTH] + g->st.rejected[GOSSIP_REJ_TAMPERED];

	if (g->leaving || g->st.accepted || now - g->start_ms < g->join_warn_ms)
		return;
	if (bad)
		gossip__log_limited(g, GOSSIP__LOG_AUTH, LOG_ERROR,
				    "gossip packets from %s fail authentication: different cluster "
				    "key? rejected=%llu accepted=0 since_start_ms=%llu",
				    g->last_bad_from, (unsigned long long)bad,
				    (unsigned long long)(now - g->start_ms));
	else if (g->seed_remote)
		gossip__log_limited(g, GOSSIP__LOG_ALONE, LOG_ERROR,
				    "gossip: no answer from any seed seeds=%s since_start_ms=%llu: "
				    "are they up and reachable, and do they share this node's "
				    "cluster key?",
				    g->seeds_text, (unsigned long long)(now - g->start_ms));
}
