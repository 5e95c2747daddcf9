/* gossip.h — the gossip driver: runs the SWIM membership state machine (members.h) over sealed,
 * replay-protected UDP packets (wire/gossip_msg.h) on a libuv loop.
 *
 * The driver owns one UDP socket, a timer armed from members_next_deadline(), the replay cache
 * and a small host-name cache. Every received datagram is authenticated and replay-checked by
 * wire_gossip_open() BEFORE anything in it is decoded; a packet that fails (no or another
 * cluster key, tampered, replayed, malformed, oversized) is dropped, counted by reason and
 * logged at most once per reason per 10 s, never a crash. Host names (seeds, and members that
 * advertise a name) are resolved with uv_getaddrinfo, never blocking the loop; a seed is
 * resolved again on every contact (DNS in Docker and Kubernetes changes) and each of its
 * addresses is contacted, except our own.
 *
 * Ports. Gossip uses UDP on the same port number as the TCP peer listener (as memberlist does
 * with its bind port): the advertised port is both the gossip port and the peer port that other
 * nodes learn, and the http port rides along for GET /cluster.
 *
 * Saying why a node cannot join: after join_warn_ms, a node that has accepted no packet yet
 * logs an error, either "gossip packets from ADDR fail authentication: different cluster key?"
 * (it received packets, all of which failed authentication) or that no seed answered (which is
 * also what a node with a different key sees when nobody knows it); the receiving side of such
 * packets logs the rejections, also with the hint, and counts them.
 *
 * Wire mapping (transport_codec.c; not yet in docs/PROTOCOL.md): the v1 gossip packet has five
 * types, the state machine seven. NACK and GOSSIP travel as ACKs whose seq carries a kind in
 * its high 32 bits, a PING_REQ carries its target's address as its first member record, and
 * the sender's reply address is its own record (the first of its updates).
 *
 * Everything here is loop-thread only. wire_init() must have been called. */
#ifndef LLMLIMIT_GOSSIP_GOSSIP_H
#define LLMLIMIT_GOSSIP_GOSSIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "gossip/members.h"

struct metrics;
struct wire_keyring;
struct gossip;

/* The ring members (members_ring_ids(gossip_members(g))) changed: rebuild the ring. */
typedef void (*gossip_change_cb)(void *arg);
/* A member changed state: m is valid during the call only; prev is the previous enum
 * members_state, or -1 for a member just added (then m->state is MEMBERS_ALIVE). Called for
 * this node too (LEFT, when leaving). */
typedef void (*gossip_member_cb)(void *arg, const struct members_info *m, int prev);
/* gossip_leave() finished. */
typedef void (*gossip_done_cb)(void *arg);

#define GOSSIP_LEAVE_WAIT_MS 500   /* longest gossip_leave() waits for its packets to go */
#define GOSSIP_JOIN_WARN_MS 5000   /* default join_warn_ms */

struct gossip_config {
	const char *node_id;          /* 1..64 printable non-space ASCII bytes */
	const char *bind_host;        /* numeric address: "0.0.0.0", "::", "127.0.0.1"... */
	uint16_t bind_port;           /* 0: an ephemeral port (tests; see gossip_port()) */
	/* How other nodes reach this one, for gossip and peer TCP alike. NULL or "": bind_host,
	 * or for a wildcard bind_host this host's first non-loopback IPv4 address (as memberlist
	 * does; 127.0.0.1 when there is none). A host name is allowed. */
	const char *advertise_host;
	uint16_t advertise_port;      /* 0: the bound port */
	uint16_t http_port;           /* told to peers, shown by GET /cluster */
	/* "host:port" or "[v6]:port" strings (copied; host names allowed). Any one live seed is
	 * enough to join; a seed that resolves to this node is skipped. */
	const char *const *seeds;
	size_t nseeds;
	const struct wire_keyring *keyring;  /* borrowed, must outlive the driver; not empty */
	struct metrics *metrics;      /* borrowed, must outlive the driver; NULL: no metrics */
	/* Timings and table size (NULL: members_config_default()). The id, host, ports,
	 * incarnation, rng_seed and seeds fields are ignored: the driver fills them in. */
	const struct members_config *timings;
	uint32_t join_warn_ms;        /* 0: GOSSIP_JOIN_WARN_MS */
	gossip_change_cb on_change;   /* may be NULL */
	gossip_member_cb on_member;   /* may be NULL */
	void *cb_arg;
};

/* Rejected packets, by reason (metrics label in quotes). */
enum gossip_reject {
	GOSSIP_REJ_AUTH = 0,   /* "auth": key id not in our ring: no or another cluster key */
	GOSSIP_REJ_TAMPERED,   /* "tampered": failed verification */
	GOSSIP_REJ_REPLAY,     /* "replay": seen before, or from an earlier boot of its sender */
	GOSSIP_REJ_MALFORMED,  /* "malformed": authentic but not a valid message */
	GOSSIP_REJ_OVERSIZED,  /* "oversized" */
	GOSSIP_REJ_VERSION,    /* "version": another packet version */
	GOSSIP_REJ_MAX
};

struct gossip_stats {
	uint64_t packets_in, packets_out, bytes_in, bytes_out;
	uint64_t accepted;                  /* packets that passed every check */
	uint64_t rejected[GOSSIP_REJ_MAX];
	uint64_t send_errors;               /* packets not sent: socket error, no address, full */
};

/* Binds the socket and starts: the first seed contact goes out on the next loop turn. Takes
 * the wall-clock time as the initial incarnation (seconds) and the packet epoch (ms), and seeds
 * the state machine's generator from randombytes. Callbacks never run from inside this call.
 * 0; -EINVAL (bad id, bind host, seed, timings, or an empty keyring); -ENOMEM; or the libuv
 * error of the bind (e.g. UV_EADDRINUSE). On a bind error the memory is released by close
 * callbacks, so run the loop afterwards as after gossip_free(). */
__attribute__((warn_unused_result))
int gossip_new(struct gossip **out, uv_loop_t *loop, const struct gossip_config *cfg);

/* Stops at once, without leaving (peers will find this node dead): closes the socket and the
 * timers, cancels name lookups. A pending gossip_leave() callback is not called. The memory is
 * released from close callbacks: keep running the loop until they ran (uv_run returns once
 * nothing else is active). May be called from a gossip callback. NULL-safe. */
void gossip_free(struct gossip *g);

/* Leaves gracefully: this node becomes LEFT and tells every live member at once (each packet
 * twice, against a loss), then waits until those packets left the socket, or at most
 * GOSSIP_LEAVE_WAIT_MS, and calls done(arg) from the loop (never from inside this call). The
 * node stays silent afterwards; free it with gossip_free(). 0, or -EALREADY when already
 * leaving. May be called from a gossip callback. */
int gossip_leave(struct gossip *g, gossip_done_cb done, void *arg);

/* The membership table, for GET /cluster and for rebuilding the ring: members_count(),
 * members_at(), members_find(), members_ring_ids(), members_counters(). Pointers obtained from
 * it are valid until control returns to the loop. */
const struct members *gossip_members(const struct gossip *g);

const char *gossip_self_id(const struct gossip *g);
uint64_t gossip_incarnation(const struct gossip *g);
/* The bound UDP port (useful with bind_port 0), and the advertised address. */
uint16_t gossip_port(const struct gossip *g);
const char *gossip_advertise_host(const struct gossip *g);
uint16_t gossip_advertise_port(const struct gossip *g);

/* How long ago, in ms, member m (from gossip_members()) was last heard from: 0 for this node,
 * UINT64_MAX when never. */
uint64_t gossip_last_seen_ago_ms(const struct gossip *g, const struct members_info *m);
/* "alive", "suspect", "dead", "left" (or "unknown"). */
const char *gossip_state_name(int state);

/* True once this node has joined: another member has been seen alive, or there is nobody to
 * join (no seeds, or every seed resolved only to this node). For a readiness probe. */
bool gossip_joined(const struct gossip *g);

void gossip_stats(const struct gossip *g, struct gossip_stats *out);
/* The metrics label of a reject reason, e.g. "auth". */
const char *gossip_reject_name(enum gossip_reject r);

#endif
