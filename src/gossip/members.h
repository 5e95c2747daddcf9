/* members.h — cluster membership: SWIM failure detection and dissemination, as a pure state
 * machine (memcached's drive_machine inverted: it consumes events and returns actions).
 *
 * Pure: no libuv, no clock, no I/O, no logging, no randomness source (the caller seeds the
 * internal xorshift generator). Time is `now_ms`, a monotonic millisecond clock that must not go
 * backwards between calls. The driver (src/gossip transport) calls members_tick() when
 * members_next_deadline() is due and members_on_msg() for each authenticated, decoded packet,
 * then carries out the actions: SEND a message, and notice STATE/RING changes. Nothing here
 * ever blocks or waits; a lost action (an -ENOMEM, a dropped packet) is a lost packet, which
 * the protocol tolerates.
 *
 * The protocol (SWIM, Das et al. 2002, with memberlist's and Lifeguard's refinements):
 *  - Probing. Every probe_interval a node pings the next alive or suspect member in its own
 *    random round-robin order. No ACK within probe_timeout: it asks `indirect_probes` random
 *    alive members to ping the target for it (PING_REQ); they forward the target's ACK, or
 *    answer NACK when they got none (so a node can tell "target down" from "my own network is
 *    bad"). No ACK by the end of the probe interval: the target becomes SUSPECT. A probe whose
 *    deadline we overslept by a whole interval (a stalled or stopped process) is dropped
 *    without accusing anyone.
 *  - Local health (Lifeguard). A score in [0, awareness_max) rises on failed probes with
 *    missing NACKs, on stalls and on refutations, falls on successful probes; probe interval
 *    and timeout are multiplied by (score + 1), so a node that is itself slow probes less
 *    eagerly.
 *  - Suspicion. A suspect is declared DEAD after a timeout between
 *    min = suspicion_mult * max(1, log10(n)) * probe_interval and max = suspicion_max_mult * min
 *    (n = members not dead or left); it starts at max and shrinks toward min as independent
 *    accusers confirm (Lifeguard: k = suspicion_mult - 2 expected confirmations, 0 when n - 2 <
 *    k). A ping to a suspect carries the suspicion, so the target hears it and can refute.
 *  - Refutation. A node that hears itself suspected or declared dead (at incarnation >= its
 *    own) and has not left bumps its incarnation past the accusation and spreads ALIVE.
 *  - Dissemination. State changes queue as rumors (one per member, the newest replacing the
 *    older) piggybacked on every outgoing message, fewest-sent first, up to max_piggyback per
 *    message and retransmit_mult * ceil(log10(members + 1)) times each; while rumors are
 *    pending they also go out every gossip_interval in GOSSIP messages to gossip_nodes random
 *    live members (memberlist's gossip), so news does not wait for the probe schedule. Every
 *    message also carries the sender's own record (whoever hears from a node knows it), and a
 *    message to a member we hold SUSPECT or DEAD carries that member's record, so it learns
 *    of the accusation from the first packet it exchanges.
 *  - Anti-entropy. Every push_pull_interval a full-state PUSH_PULL to a random alive member
 *    (answered with PUSH_PULL_REPLY); every reconnect_interval one to a random DEAD member, and
 *    to seeds (all of them every join_retry while we know no live peer, else one every
 *    seed_interval), so that partitions and split starts heal.
 *  - Leaving. members_leave() marks us LEFT and sends the news to every live member at once.
 *
 * Precedence of an update u about member X held locally at incarnation i (memberlist's rules):
 *   alive(u):   unknown X: added. X = us: if u.inc > i, or u.inc == i with another address,
 *               refute (someone restarted with our id, or an old incarnation of us is around);
 *               else ignored. Otherwise taken iff u.inc > i, whatever X's state (so DEAD and
 *               LEFT members come back only with a higher incarnation); the address is taken
 *               from u (a restarted node may have moved).
 *   suspect(u): ignored when X is unknown or u.inc < i. X SUSPECT: the accuser counts as a
 *               confirmation. X DEAD/LEFT: ignored. X = us: refute. X ALIVE: X is SUSPECT at
 *               u.inc.
 *   dead(u):    ignored when X is unknown, u.inc < i, or X is DEAD/LEFT. X = us: refute unless
 *               we are leaving. Otherwise X is DEAD at u.inc.
 *   left(u):    as dead(u), and also taken over DEAD (so we stop reconnecting to a leaver).
 * Full-state merges (PUSH_PULL) apply the same rules, except that a DEAD entry is taken as a
 * suspicion by the sender (as memberlist does): one node's verdict does not kill a member
 * outright on another node, which gives the member a chance to refute.
 *
 * Incarnation of a new process. A restarted node must come back with an incarnation above the
 * one its peers hold for it (alive, dead or left). The driver passes the wall-clock time in
 * seconds as the initial incarnation, which grows across restarts; when that is not enough
 * (clock stepped back, or the old process refuted more than once per second of its life), the
 * peers' PUSH_PULL_REPLY to our join carries our old record, and the rules above make us refute
 * it with a higher incarnation: the node reads its incarnation from its peers. */
#ifndef LLMLIMIT_GOSSIP_MEMBERS_H
#define LLMLIMIT_GOSSIP_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEMBERS_ID_MAX 64     /* node id: 1..64 printable non-space ASCII bytes */
#define MEMBERS_HOST_MAX 255  /* host name or address literal */

enum members_state {
	MEMBERS_ALIVE = 0,
	MEMBERS_SUSPECT = 1,
	MEMBERS_DEAD = 2,
	MEMBERS_LEFT = 3,
};

/* What one node says about one member; the element of piggybacked rumors and of full state.
 * Strings are NUL-terminated within their arrays. */
struct members_update {
	char id[MEMBERS_ID_MAX + 1];
	/* Who says so: the accuser of a SUSPECT or DEAD record, the member itself for ALIVE and
	 * LEFT. May be empty on input. */
	char from[MEMBERS_ID_MAX + 1];
	char host[MEMBERS_HOST_MAX + 1];
	uint16_t port;       /* gossip port */
	uint16_t peer_port;  /* peer RPC port (src/peer) */
	uint16_t http_port;  /* client HTTP port, for GET /cluster; 0: not told */
	uint8_t state;       /* enum members_state */
	uint64_t incarnation;
};

enum members_msg_type {
	MEMBERS_PING = 1,        /* seq, target (the id the sender believes it pings; "" = any) */
	MEMBERS_ACK = 2,         /* seq of the PING (or of the PING_REQ, when relayed) */
	MEMBERS_PING_REQ = 3,    /* seq: please ping target at target_host:target_port */
	MEMBERS_NACK = 4,        /* seq of a PING_REQ whose target did not answer in time */
	MEMBERS_GOSSIP = 5,      /* updates only: rumors, the leave broadcast */
	MEMBERS_PUSH_PULL = 6,   /* updates = the sender's full state; answered with a REPLY */
	MEMBERS_PUSH_PULL_REPLY = 7,
};

/* One gossip packet, decoded (input of members_on_msg) or to encode (in a SEND action). */
struct members_msg {
	uint8_t type;  /* enum members_msg_type */
	uint32_t seq;
	char from[MEMBERS_ID_MAX + 1];        /* the sender's id */
	char from_host[MEMBERS_HOST_MAX + 1]; /* where the sender takes replies */
	uint16_t from_port;
	char target[MEMBERS_ID_MAX + 1];      /* PING, PING_REQ */
	char target_host[MEMBERS_HOST_MAX + 1]; /* PING_REQ */
	uint16_t target_port;                 /* PING_REQ */
	const struct members_update *updates; /* borrowed (input) or owned by the actions */
	size_t n_updates;
};

enum members_action_type {
	MEMBERS_ACT_SEND = 1,   /* send `msg` to to_host:to_port (to_id: the member, "" = a seed) */
	MEMBERS_ACT_STATE = 2,  /* `member` changed state from `prev` (-1: newly added) */
	MEMBERS_ACT_RING = 3,   /* the ring members changed: rebuild from members_ring_ids() */
};

struct members_action {
	uint8_t type;  /* enum members_action_type */
	char to_id[MEMBERS_ID_MAX + 1];
	char to_host[MEMBERS_HOST_MAX + 1];
	uint16_t to_port;
	struct members_msg msg;  /* msg.updates points into the owning members_actions */
	struct members_update member;
	int prev;
	size_t upd_off;  /* private: where msg.updates starts in the update arena */
};

/* Caller-owned list of actions; members_* calls append to it, in the order to carry them out.
 * Every msg.updates in it stays valid until the next call that appends to, resets or closes
 * the list. The driver typically carries out and resets it after each call. */
struct members_actions {
	struct members_action *v;
	size_t n, cap;
	struct members_update *upd;  /* arena behind every msg.updates */
	size_t n_upd, cap_upd;
};

void members_actions_init(struct members_actions *a);
/* Forgets the actions (their msg.updates pointers die), keeps the storage. */
void members_actions_reset(struct members_actions *a);
/* Frees the storage. NULL-safe. */
void members_actions_close(struct members_actions *a);

struct members_seed {
	char host[MEMBERS_HOST_MAX + 1];
	uint16_t port;
};

/* Timings in milliseconds. members_config_default() gives the defaults and their reasons. */
struct members_config {
	const char *id;            /* this node; borrowed during members_new() only */
	const char *host;          /* advertised gossip host */
	uint16_t port;             /* advertised gossip port */
	uint16_t peer_port;
	uint16_t http_port;        /* client HTTP; 0: not told */
	uint64_t incarnation;      /* initial: wall-clock seconds (see above) */
	uint64_t rng_seed;         /* seeds the probe order and random picks; any value */
	const struct members_seed *seeds;  /* copied */
	size_t n_seeds;
	uint32_t probe_interval_ms;
	uint32_t probe_timeout_ms;       /* < probe_interval_ms */
	uint32_t indirect_probes;        /* k of PING_REQ */
	uint32_t suspicion_mult;         /* >= 1 */
	uint32_t suspicion_max_mult;     /* >= 1 */
	uint32_t retransmit_mult;        /* >= 1 */
	uint32_t max_piggyback;          /* updates per message (besides full state), >= 1 */
	uint32_t gossip_interval_ms;     /* rumors pending: a GOSSIP round this often */
	uint32_t gossip_nodes;           /* members per GOSSIP round (0: piggyback only) */
	uint32_t push_pull_interval_ms;
	uint32_t reconnect_interval_ms;  /* to one random dead member */
	uint32_t join_retry_ms;          /* to every seed, while alone */
	uint32_t seed_interval_ms;       /* to one random seed, while not alone */
	uint32_t awareness_max;          /* >= 1; 1 disables local health scaling */
	uint64_t dead_reap_ms;           /* forget a DEAD member after this long */
	uint64_t left_reap_ms;           /* forget a LEFT member after this long */
	uint32_t max_members;            /* table size, self included, >= 2 */
};

void members_config_default(struct members_config *cfg);

/* What GET /cluster shows about one member. */
struct members_info {
	char id[MEMBERS_ID_MAX + 1];
	char host[MEMBERS_HOST_MAX + 1];
	uint16_t port, peer_port, http_port;
	enum members_state state;
	uint64_t incarnation;
	uint64_t last_seen_ms;   /* now_ms of the last message from it; 0: never */
	uint64_t since_ms;       /* now_ms of the last state change */
	bool self;
};

/* Monotonic counters for metrics. */
struct members_counters {
	uint64_t probes;            /* direct probes started */
	uint64_t acks;              /* probes answered, directly or relayed */
	uint64_t probe_failures;    /* probes without an answer by their deadline */
	uint64_t indirect_probes;   /* PING_REQs sent */
	uint64_t nacks;             /* NACKs received for our probes */
	uint64_t suspicions;        /* members that became SUSPECT here */
	uint64_t refutations;       /* times we refuted an accusation */
	uint64_t deaths;            /* members that became DEAD here */
	uint64_t leaves;            /* members that became LEFT here */
	uint64_t joins;             /* members added */
	uint64_t push_pulls;        /* PUSH_PULLs sent (not counting replies) */
	uint64_t msgs;              /* messages accepted */
	uint64_t bad_msgs;          /* messages refused as malformed */
	uint64_t misdirected;       /* PINGs for another id (an address reused by a new node) */
	uint64_t table_full;        /* new members refused because the table was full */
};

struct members;

/* Creates the state machine for node cfg->id (alive at cfg->incarnation). Copies what it keeps
 * from cfg. 0; -EINVAL for a bad id, host, port or timing; -ENOMEM. */
__attribute__((warn_unused_result))
int members_new(struct members **out, const struct members_config *cfg, uint64_t now_ms);
/* NULL-safe. */
void members_free(struct members *m);

/* Runs the timers due at now_ms (probes, indirect probes, suspicion, push/pull, seeds, reaping)
 * and appends the resulting actions to `out`. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int members_tick(struct members *m, uint64_t now_ms, struct members_actions *out);

/* Consumes one decoded packet (borrowed for the call) and appends the resulting actions. 0;
 * -EBADMSG when the packet is malformed (nothing changed: count it, log it, drop it); -ENOMEM.
 * Packets from ourselves, and every packet after members_leave(), are ignored (0). */
__attribute__((warn_unused_result))
int members_on_msg(struct members *m, const struct members_msg *msg, uint64_t now_ms,
		   struct members_actions *out);

/* Leaves the cluster: we become LEFT and a GOSSIP carrying it goes to every live member. The
 * driver sends the actions, gives them a moment to flush, then exits; the state machine stays
 * silent from now on. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int members_leave(struct members *m, uint64_t now_ms, struct members_actions *out);

/* The earliest now_ms at which members_tick() has work; UINT64_MAX when none. */
uint64_t members_next_deadline(const struct members *m);

/* Iteration (for GET /cluster): members_at(m, i) for i < members_count(m), self included.
 * Pointers stay valid until the next tick/on_msg/leave call; the order is unspecified. */
size_t members_count(const struct members *m);
const struct members_info *members_at(const struct members *m, size_t idx);
/* The member with this id, or NULL. */
const struct members_info *members_find(const struct members *m, const char *id);

/* The ids that own keys: members ALIVE or SUSPECT, self included. A suspect keeps its keys
 * until it is declared dead, because a false suspicion is common under load and moving keys
 * costs accuracy, while a really dead owner is failed over by the peer layer on its first
 * unreachable request. Writes up to `cap` borrowed pointers (valid like members_at) and returns
 * how many there are in all. */
size_t members_ring_ids(const struct members *m, const char **ids, size_t cap);

const struct members_counters *members_counters(const struct members *m);
/* The local health score (0 = healthy). */
uint32_t members_health(const struct members *m);
/* Our current incarnation. */
uint64_t members_incarnation(const struct members *m);

#endif
