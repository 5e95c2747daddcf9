/* members_internal.h — what the three files of the membership state machine share; nothing
 * outside src/gossip/members*.c includes it.
 *
 *   members.c        lifecycle, configuration, accessors, the action list, small helpers
 *   members_rules.c  the table, the precedence rules, piggybacking and members_on_msg()
 *   members_probe.c  probes and relays, suspicion timeouts, gossip rounds, anti-entropy,
 *                    seeds, members_tick(), members_leave(), members_next_deadline()
 *
 * Everything is sized at members_new() from max_members: the member table, the rumor queue and
 * a scratch array, so the state machine itself never allocates; only the caller's action list
 * grows. Members are found by linear search: a cluster has tens of members and a packet names a
 * handful. The table keeps us at index 0 and the others in the order the round-robin prober
 * walks. A new member goes in at a random place, so each node probes in its own random order;
 * unlike memberlist, the order is not reshuffled after each round, which bounds the gap between
 * two probes of a member by one round (n - 1 probe intervals) instead of two. */
#ifndef LLMLIMIT_GOSSIP_MEMBERS_INTERNAL_H
#define LLMLIMIT_GOSSIP_MEMBERS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gossip/members.h"

#define MEMBERS__MAX_CONFIRM 8   /* accusers remembered per suspicion (Lifeguard) */
#define MEMBERS__MAX_RELAYS 32   /* PING_REQs we relay at once */
#define MEMBERS__LIVE_MASK (1u << MEMBERS_ALIVE | 1u << MEMBERS_SUSPECT)

struct member {
	struct members_info pub;
	/* SUSPECT only: when it started, its bounds, expected (k) and counted confirmations, and
	 * hashes of the accusers already counted (the first one included). */
	uint64_t susp_start, susp_min, susp_max;
	uint32_t susp_k, susp_n;
	uint64_t susp_by[MEMBERS__MAX_CONFIRM];
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
	struct relay relay[MEMBERS__MAX_RELAYS];
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

static inline bool members__live(enum members_state s)
{
	return s == MEMBERS_ALIVE || s == MEMBERS_SUSPECT;
}

/* A probe interval or timeout stretched by the local health score (Lifeguard). */
static inline uint64_t members__scaled(const struct members *m, uint32_t ms)
{
	return (uint64_t)ms * (m->health + 1);
}

/* members.c: helpers. */
uint64_t members__rnd(struct members *m);
size_t members__rnd_below(struct members *m, size_t n);
uint64_t members__log2_fp(uint64_t x);
bool members__str_ok(const char *s, size_t size, bool empty_ok);
uint64_t members__id_hash(const char *s);
struct member *members__find(const struct members *m, const char *id);
size_t members__n_live(const struct members *m);
void members__record(const struct member *x, const char *from, struct members_update *u);
void members__health_add(struct members *m, int delta);

/* members.c: the action list. act_new/upd_new return NULL when out of memory; finish ends
 * every public call that appended actions and returns err (or -ENOMEM). */
struct members_action *members__act_new(struct members_actions *out, uint8_t type);
struct members_update *members__upd_new(struct members_actions *out);
int members__finish(struct members *m, struct members_actions *out, int err);

/* members_rules.c: messages, the table and the precedence rules. */
struct members_action *members__send_new(struct members *m, struct members_actions *out,
					 uint8_t type, uint32_t seq, const char *id,
					 const char *host, uint16_t port);
/* Appends our own record, the destination's record when we hold it SUSPECT or DEAD, and the
 * least-sent rumors to the message just appended. 0 or -ENOMEM. */
int members__piggyback(struct members *m, struct members_actions *out);
int members__send_to(struct members *m, struct members_actions *out, uint8_t type,
		     uint32_t seq, const char *id, const char *host, uint16_t port);
int members__push_pull(struct members *m, struct members_actions *out, uint8_t type,
		       const char *id, const char *host, uint16_t port);
void members__rumor_add(struct members *m, const struct members_update *u);
int members__set_state(struct members *m, struct member *x, enum members_state st,
		       uint64_t now, struct members_actions *out);
void members__remove_member(struct members *m, size_t idx);
int members__on_suspect(struct members *m, const struct members_update *u,
			const char *accuser, uint64_t now, struct members_actions *out);
int members__on_dead(struct members *m, const struct members_update *u, uint64_t now,
		     struct members_actions *out);

/* members_probe.c: suspicion and probe answers. */
void members__suspicion_start(struct members *m, struct member *x, const char *accuser,
			      uint64_t now);
uint64_t members__suspicion_timeout(const struct member *x);
bool members__suspicion_confirm(struct member *x, const char *accuser);
int members__on_ack(struct members *m, const struct members_msg *g, uint64_t now,
		    struct members_actions *out);
int members__on_ping_req(struct members *m, const struct members_msg *g, uint64_t now,
			 struct members_actions *out);

#endif
