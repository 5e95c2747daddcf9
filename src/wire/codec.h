/* codec.h — the msgpack messages nodes exchange over their sealed TCP sessions.
 *
 * One message per frame. Encoding appends to a struct buf; decoding validates every field
 * (msgpack type, range, length, count) before anything is used, allocates at most one bounded
 * array per message, and points keys into the input rather than copying them. Pure.
 * docs/PROTOCOL.md gives the layouts. */
#ifndef LLMLIMIT_WIRE_CODEC_H
#define LLMLIMIT_WIRE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "wire/wire.h"

enum wire_type {
	WIRE_MSG_CHECK = 1,        /* forwarder -> owner: admission requests */
	WIRE_MSG_CHECK_REPLY = 2,  /* owner -> forwarder: verdicts, by request id */
	WIRE_MSG_ADJUST = 3,       /* forwarder -> owner: reconcile reservations (no reply) */
	WIRE_MSG_REPLICATE = 4,    /* owner -> replicas: window state */
	WIRE_MSG_HANDOFF = 5,      /* old owner -> new owner: window state on ownership change */
	WIRE_MSG_PING = 6,         /* liveness on the peer connection */
	WIRE_MSG_PONG = 7,         /* answer to PING, echoing its nonce */
};

/* CHECK_REPLY status. Unknown values (from a newer minor version) mean "error". */
enum wire_status {
	WIRE_STATUS_ALLOWED = 0,
	WIRE_STATUS_DENIED = 1,
	WIRE_STATUS_ERR_FULL = 2,       /* the owner's key table is full */
	WIRE_STATUS_ERR_HOPS = 3,       /* not the owner here and the hop limit is reached */
	WIRE_STATUS_ERR_INVALID = 4,    /* the check itself was invalid */
	WIRE_STATUS_ERR_BUSY = 5,       /* the owner is not ready (e.g. awaiting a handoff) */
	WIRE_STATUS_ERR_INTERNAL = 6,
};

/* Most items in one message. At these counts any message fits in a frame (codec.c asserts
 * it), so a sender splits larger batches into several frames. */
#define WIRE_CHECK_BATCH_MAX 1024
#define WIRE_REPLY_BATCH_MAX 1024
#define WIRE_ADJUST_BATCH_MAX 1024
#define WIRE_STATE_BATCH_MAX 256

/* Largest encoded message: a frame less the session's sealing overhead (17 bytes). */
#define WIRE_MSG_MAX (1024u * 1024u - 17u)

struct wire_check {
	uint64_t id;                  /* request id, echoed in the reply */
	const uint8_t *key;           /* 1..WIRE_KEY_MAX bytes; decode: points into the input */
	size_t key_len;
	uint64_t limit[WIRE_DIMS];    /* UINT64_MAX = not limited */
	uint64_t amount[WIRE_DIMS];
	uint8_t hops;                 /* times this check was forwarded already */
};

/* Mirrors struct window_verdict (src/window/window.h), plus the request id and a status. */
struct wire_check_reply {
	uint64_t id;
	uint8_t status;               /* enum wire_status */
	int8_t denied_dim;            /* -1, or the dimension (0..2) that denied */
	bool never_fits;
	uint64_t limit[WIRE_DIMS];
	uint64_t used[WIRE_DIMS];
	uint64_t remaining[WIRE_DIMS];
	uint64_t reset_ms[WIRE_DIMS];
	uint64_t retry_after_ms;
	uint32_t bucket;              /* the ticket to quote in ADJUST */
};

struct wire_adjust {
	const uint8_t *key;           /* decode: points into the input */
	size_t key_len;
	uint32_t bucket;              /* the ticket from the reply */
	int64_t delta[WIRE_DIMS];     /* actual - charged */
};

/* One counted bucket of a key's window, by absolute bucket number on the sender's clock
 * (bucket b covers [b*1000, (b+1)*1000) ms of the sender's monotonic clock). */
struct wire_slot {
	uint32_t bucket;              /* head - 60 <= bucket <= head; distinct within a key */
	/* Full state: 0..UINT32_MAX. Delta: -UINT32_MAX..UINT32_MAX (refunds are negative). */
	int64_t count[WIRE_DIMS];
};

#define WIRE_STATE_FULL 0x01u     /* wire_key_state.flags: replaces the receiver's copy;
				     without it the counts are deltas to add */
#define WIRE_HANDOFF_OWNER 0x01u  /* wire_msg.flags of a HANDOFF: you are the new owner */

struct wire_key_state {
	const uint8_t *key;           /* decode: points into the input */
	size_t key_len;
	uint8_t flags;                /* WIRE_STATE_*; unknown bits are ignored */
	uint32_t head;                /* the sender's newest bucket for this key */
	uint8_t nslots;               /* 0..WIRE_SLOTS; only non-zero slots need be sent */
	struct wire_slot slots[WIRE_SLOTS];
};

/* One message. Exactly the array matching `type` is used (n items); decode allocates it and
 * wire_msg_close() frees it. For encoding, the caller points it at its own items. */
struct wire_msg {
	uint8_t type;                 /* enum wire_type */
	size_t n;
	union {
		struct wire_check *checks;          /* CHECK */
		struct wire_check_reply *replies;   /* CHECK_REPLY */
		struct wire_adjust *adjusts;        /* ADJUST */
		struct wire_key_state *states;      /* REPLICATE, HANDOFF */
	};
	uint64_t now_ms;              /* REPLICATE, HANDOFF: the sender's monotonic clock when the
					 states were taken, so buckets can be aged */
	uint8_t flags;                /* HANDOFF: WIRE_HANDOFF_OWNER; unknown bits are ignored */
	uint64_t nonce;               /* PING, PONG */
};

/* Appends the encoding of m to out. Validates m as strictly as decoding would. 0, -EINVAL (a
 * field out of range, a count above its batch maximum, an unknown type), -EMSGSIZE or
 * -ENOMEM; out is unchanged on failure. */
__attribute__((warn_unused_result))
int wire_encode(const struct wire_msg *m, struct buf *out);

/* Decodes exactly one message filling buf[0..len). 0 with *out filled (release it with
 * wire_msg_close; keys point into buf, so buf must outlive their use); on error *out holds
 * nothing to release. Errors: -EPROTO, -EPROTONOSUPPORT (other major version), -ENOMSG
 * (unknown type: the frame may be skipped), -EMSGSIZE (too many items), -ENOMEM. */
__attribute__((warn_unused_result))
int wire_decode(const uint8_t *buf, size_t len, struct wire_msg *out);

/* Frees what wire_decode allocated. NULL-safe; only for decoded messages. */
void wire_msg_close(struct wire_msg *m);

/* Fills st->head, st->nslots and st->slots from a dense window (count[slot][dim] with
 * slot = bucket % WIRE_SLOTS, as in struct window), keeping the non-zero buckets in
 * head-60..head, newest first. key and flags are left to the caller. */
void wire_state_from_dense(struct wire_key_state *st, uint32_t head,
			   const uint32_t count[WIRE_SLOTS][WIRE_DIMS]);

#endif
