/* transport_int.h — what the files of the gossip driver share; only src/gossip/transport*.c
 * include it.
 *
 *   transport.c        lifecycle, the timer, receiving, carrying out actions, leaving,
 *                      accessors
 *   transport_codec.c  struct members_msg <-> struct wire_gossip (pure)
 *   transport_send.c   addresses: numeric literals, the host-name cache (uv_getaddrinfo),
 *                      seeds, self-detection; the UDP send with its fallback queue
 *   transport_stats.c  counters, Prometheus series, rate-limited logs, the join watchdog */
#ifndef LLMLIMIT_GOSSIP_TRANSPORT_INT_H
#define LLMLIMIT_GOSSIP_TRANSPORT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "gossip/gossip.h"
#include "gossip/members.h"
#include "wire/gossip_msg.h"

#define GOSSIP__HOSTS_MAX 64      /* host names cached */
#define GOSSIP__ADDRS_MAX 8       /* addresses kept per host name */
#define GOSSIP__HOST_QUEUE_MAX 16 /* packets waiting for one name lookup */
#define GOSSIP__SENDQ_MAX 256     /* packets waiting for a busy socket */
#define GOSSIP__HOST_TTL_MS 30000 /* a member's host name is looked up again after this */
#define GOSSIP__HOST_RETRY_MS 1000 /* after a failed lookup, packets are dropped this long */
#define GOSSIP__LOG_EVERY_MS 10000 /* one line per log slot per this long */

/* Rate-limited log lines, one slot each. */
enum gossip__log_slot {
	GOSSIP__LOG_REJECT = 0,   /* + enum gossip_reject */
	GOSSIP__LOG_RECV = GOSSIP_REJ_MAX,
	GOSSIP__LOG_SEND,
	GOSSIP__LOG_RESOLVE,
	GOSSIP__LOG_NOMEM,
	GOSSIP__LOG_AUTH,         /* the join watchdog: only failed packets */
	GOSSIP__LOG_ALONE,        /* the join watchdog: no answer */
	GOSSIP__LOG_MAX
};

struct gossip__queued {           /* a packet waiting for a name lookup */
	struct gossip__queued *next;
	uint16_t port;
	bool seed;                    /* to every address of the name, else to the first */
	size_t len;
	uint8_t data[];
};

struct gossip__host {             /* a host name and what it resolved to */
	struct gossip *g;
	char name[MEMBERS_HOST_MAX + 1];
	struct sockaddr_storage addr[GOSSIP__ADDRS_MAX];  /* port 0 */
	size_t naddr;
	uint64_t answered_at;         /* uv_now of the last answer; 0: none yet */
	bool pending;                 /* req in flight (req.data = this) */
	uv_getaddrinfo_t req;
	struct gossip__queued *q, **q_tail;
	size_t nq;
};

struct gossip__metrics {
	struct metrics_gauge *members[4];  /* by enum members_state */
	struct metrics_gauge *health;
	struct metrics_counter *packets[2], *bytes[2];  /* in, out */
	struct metrics_counter *rejected[GOSSIP_REJ_MAX];
	struct metrics_counter *send_errors;
	struct metrics_counter *probes, *acks, *probe_failures, *indirect, *nacks;
	struct metrics_counter *suspicions, *refutations, *deaths, *leaves, *joins, *push_pulls;
};

struct gossip {
	uv_loop_t *loop;
	uv_udp_t udp;                 /* .data = this, as for both timers */
	uv_timer_t timer;             /* members_next_deadline(), and the watchdog */
	uv_timer_t leave_timer;
	struct members *m;
	struct wire_replay *replay;
	const struct wire_keyring *keyring;
	struct wire_gossip_sender sender;
	struct members_actions acts;

	char id[MEMBERS_ID_MAX + 1];
	char adv_host[MEMBERS_HOST_MAX + 1];
	uint16_t adv_port, bound_port, http_port;
	struct sockaddr_storage bound;    /* the socket's address (getsockname) */
	struct sockaddr_storage adv_addr; /* adv_host when numeric, else family AF_UNSPEC */
	int family;                       /* of the socket */
	struct sockaddr_storage *local;   /* this host's interface addresses (self-detection) */
	size_t nlocal;
	struct members_seed *seeds;
	size_t nseeds;
	char seeds_text[256];             /* for logs */

	gossip_change_cb on_change;
	gossip_member_cb on_member;
	void *cb_arg;

	/* Scratch for one packet each way. */
	uint8_t rbuf[65536];
	uint8_t sbuf[WIRE_GOSSIP_PACKET_MAX];
	struct members_update *dec;
	size_t dec_cap;
	struct wire_member *enc;
	size_t enc_cap;

	struct gossip__host *hosts[GOSSIP__HOSTS_MAX];
	size_t nhosts;
	unsigned pending_sends, pending_lookups, open_handles;
	bool closing, leaving, left_sent, other_seen;
	uint64_t seed_lookups, seed_remote;  /* seed answers, and non-self addresses in them */
	gossip_done_cb leave_done;
	void *leave_arg;
	uint64_t leave_deadline;

	uint64_t start_ms;
	uint32_t join_warn_ms;
	struct gossip_stats st;
	struct members_counters last_ctr;
	struct gossip__metrics met;
	uint64_t log_at[GOSSIP__LOG_MAX];       /* last line; 0: never */
	uint64_t log_quiet[GOSSIP__LOG_MAX];    /* events not logged since */
	char last_bad_from[64];                 /* source of the last packet failing auth */
};

/* transport_codec.c. The members_msg (or wire_gossip) filled in points into *scratch (grown
 * as needed, owned by the caller) and into `w` / `msg`. */
__attribute__((warn_unused_result))
int gossip__msg_from_wire(const struct wire_gossip *w, const struct sockaddr *src,
			  struct members_msg *msg, struct members_update **scratch, size_t *cap);
__attribute__((warn_unused_result))
int gossip__msg_to_wire(const struct members_msg *msg, struct wire_gossip *w,
			struct wire_member **scratch, size_t *cap);

/* transport_send.c */
int gossip__addr_parse(const char *host, uint16_t port, int family,
		       struct sockaddr_storage *out);
void gossip__addr_text(const struct sockaddr *sa, char *out, size_t len);
bool gossip__addr_is_any(const struct sockaddr *sa);   /* 0.0.0.0 or :: */
bool gossip__is_self(const struct gossip *g, const struct sockaddr *sa);
int gossip__local_addrs(struct gossip *g);
/* Sends one sealed packet to host:port; `seed`: look the name up again and send to each of
 * its addresses but ours. Copies pkt when it must wait. */
void gossip__send(struct gossip *g, const char *host, uint16_t port, bool seed,
		  const uint8_t *pkt, size_t len);
size_t gossip__queued_packets(const struct gossip *g);
/* Cancels lookups (their callbacks free their entries) and frees the others. */
void gossip__hosts_close(struct gossip *g);
/* Frees the gossip once it is closing and nothing is in flight. */
void gossip__maybe_destroy(struct gossip *g);

/* transport_stats.c */
void gossip__metrics_init(struct gossip *g, struct metrics *mr);
void gossip__sync_counters(struct gossip *g);
void gossip__update_gauges(struct gossip *g);
void gossip__count_in(struct gossip *g, size_t len);
void gossip__count_out(struct gossip *g, size_t len);
void gossip__send_error(struct gossip *g, int err, const char *to);
void gossip__reject(struct gossip *g, enum gossip_reject r, int err, const struct sockaddr *src);
void gossip__log_limited(struct gossip *g, int slot, int lvl, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void gossip__watchdog(struct gossip *g, uint64_t now);

#endif
