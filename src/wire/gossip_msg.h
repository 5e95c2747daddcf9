/* gossip_msg.h — SWIM gossip messages and their sealed UDP packets.
 *
 * A packet is sealed with XChaCha20-Poly1305 under the gossip key derived from the sender's
 * primary cluster key, with a random nonce. The clear header (authenticated as associated
 * data) names the sender, its boot epoch and a per-boot packet counter; the receiver verifies
 * the packet BEFORE decoding anything, and rejects replays with a per-sender sliding window
 * (struct wire_replay). Pure: the caller owns the socket, the clock and the replay cache.
 *
 * Typical use (loop thread):
 *     wire_gossip_sender_init(&me, my_id, boot_wall_clock_ms);       once per process
 *     wire_gossip_seal(&me, ring, &msg, pkt, sizeof(pkt), &len, &n)  then sendto
 *     rc = wire_gossip_open(replay, ring, pkt, len, &msg)            on recv; rc < 0: count, drop
 *     ... members_on_msg(..., &msg, ...); wire_gossip_close(&msg); */
#ifndef LLMLIMIT_WIRE_GOSSIP_MSG_H
#define LLMLIMIT_WIRE_GOSSIP_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "wire/keyring.h"
#include "wire/wire.h"

enum wire_member_state {
	WIRE_MEMBER_ALIVE = 0,
	WIRE_MEMBER_SUSPECT = 1,
	WIRE_MEMBER_DEAD = 2,
	WIRE_MEMBER_LEFT = 3,
};

enum wire_gossip_type {
	WIRE_GOSSIP_PING = 1,             /* probe; target = the node probed */
	WIRE_GOSSIP_ACK = 2,              /* answer to PING (seq echoed), direct or relayed */
	WIRE_GOSSIP_PING_REQ = 3,         /* please probe target for me and relay its ACK */
	WIRE_GOSSIP_PUSH_PULL = 4,        /* my full member list; answer with yours */
	WIRE_GOSSIP_PUSH_PULL_REPLY = 5,  /* the answer: the full member list */
};

#define WIRE_GOSSIP_UPDATES_MAX 64     /* piggybacked updates on PING, ACK, PING_REQ */
#define WIRE_GOSSIP_MEMBERS_MAX 1024   /* members in PUSH_PULL(_REPLY) */
#define WIRE_GOSSIP_PACKET_MAX 65507u  /* largest packet accepted (a UDP/IPv4 payload) */
#define WIRE_GOSSIP_MTU 1400u          /* suggested cap for probe packets (no fragmentation) */
#define WIRE_GOSSIP_OVERHEAD(id_len) (50u + (id_len) + 16u)  /* header + tag, for sizing */

/* A membership update or list entry. */
struct wire_member {
	char id[WIRE_NODE_ID_MAX + 1];    /* node id, NUL-terminated (wire_node_id_valid) */
	char host[WIRE_HOST_MAX + 1];     /* advertised host name or address literal */
	uint16_t gossip_port;             /* UDP gossip */
	uint16_t peer_port;               /* TCP peer connections */
	uint16_t http_port;               /* client HTTP */
	uint64_t incarnation;
	uint8_t state;                    /* enum wire_member_state */
};

struct wire_gossip {
	uint8_t type;                     /* enum wire_gossip_type */
	uint64_t seq;                     /* probe sequence number (PING, ACK, PING_REQ) */
	char from[WIRE_NODE_ID_MAX + 1];  /* open: the authenticated sender; ignored by seal */
	char target[WIRE_NODE_ID_MAX + 1];/* PING, PING_REQ: the node to probe; else "" */
	/* Updates (PING, ACK, PING_REQ) or the full list (PUSH_PULL*). Encode: borrowed. Decode:
	 * allocated, freed by wire_gossip_close (NULL when nupdates is 0). */
	struct wire_member *updates;
	size_t nupdates;
};

/* The sending side's identity and packet counter. Caller-allocated; one per process. */
struct wire_gossip_sender {
	char id[WIRE_NODE_ID_MAX + 1];
	uint64_t epoch;
	uint64_t counter;                 /* of the last packet sealed */
};

/* Per-sender replay windows, owned by the receiving side. */
struct wire_replay;

/* epoch identifies this boot and must grow from one boot of a node to the next (wall-clock
 * milliseconds at start-up do: only this node's own clock is compared with itself; see
 * docs/PROTOCOL.md for a clock that went back). 0 or -EINVAL (bad id). */
__attribute__((warn_unused_result))
int wire_gossip_sender_init(struct wire_gossip_sender *s, const char *node_id, uint64_t epoch);

/* Seals msg into out[0..cap) as one packet with the ring's primary key and sets *outlen.
 * When nsent is NULL every update must fit, else -EMSGSIZE; when it is not, as many updates
 * as fit are sent, in order, and *nsent says how many (the rest can ride the next packet).
 * 0, -EINVAL (invalid message), -ENOKEY (empty ring), -EMSGSIZE, -ENOMEM. The counter moves
 * only on success. */
__attribute__((warn_unused_result))
int wire_gossip_seal(struct wire_gossip_sender *s, const struct wire_keyring *ring,
		     const struct wire_gossip *msg, uint8_t *out, size_t cap, size_t *outlen,
		     size_t *nsent);

/* Verifies, replay-checks and decodes one packet, in that order. 0 with *out filled (release
 * with wire_gossip_close); on error *out holds nothing to release. Errors: -EPROTONOSUPPORT
 * (other packet version), -ENOKEY (key id not in ring), -EBADMSG (malformed header or failed
 * verification), -EALREADY (replay of a packet seen, or too old to tell), -ESTALE (from an
 * earlier boot of the sender), -EPROTO/-EMSGSIZE (authentic but malformed body), -ENOMEM. */
__attribute__((warn_unused_result))
int wire_gossip_open(struct wire_replay *rp, const struct wire_keyring *ring,
		     const uint8_t *pkt, size_t len, struct wire_gossip *out);

/* Frees the updates of a decoded message. NULL-safe; only for decoded messages. */
void wire_gossip_close(struct wire_gossip *msg);

/* A replay cache remembering up to `capacity` senders (at least the cluster size; the least
 * recently heard sender is forgotten first). 0, -EINVAL (capacity 0), -ENOMEM. */
__attribute__((warn_unused_result))
int wire_replay_new(struct wire_replay **out, size_t capacity);
void wire_replay_free(struct wire_replay *rp);  /* NULL-safe */
/* Forgets a sender, e.g. when it is declared dead or left, so that a restart whose epoch is
 * not larger (its clock went back) is accepted again. */
void wire_replay_forget(struct wire_replay *rp, const char *node_id);

/* The plaintext body codec, for tests and fuzzing: the network path uses seal/open. encode
 * appends to out (-EINVAL, -ENOMEM; out unchanged on failure); decode leaves from "". */
__attribute__((warn_unused_result))
int wire_gossip_encode(const struct wire_gossip *msg, struct buf *out);
__attribute__((warn_unused_result))
int wire_gossip_decode(const uint8_t *buf, size_t len, struct wire_gossip *out);

#endif
