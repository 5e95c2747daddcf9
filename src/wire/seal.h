/* seal.h — the peer connection's handshake and sealed session.
 *
 * Handshake (three frames, docs/PROTOCOL.md has the bytes): the initiator (the connecting
 * side) sends HELLO_I; the responder answers HELLO_R; the initiator sends FINISH. Each hello
 * carries the protocol version, the key id, an ephemeral X25519 key and a random nonce, and an
 * HMAC-SHA512-256 under the cluster key over the transcript so far, so each side proves it
 * holds the key and that it is live (the MAC covers the other side's fresh values). Session
 * keys come from the X25519 exchange mixed with the cluster key and the transcript. Then each
 * direction is a crypto_secretstream_xchacha20poly1305 stream: a tampered, replayed, reordered
 * or dropped frame fails to open.
 *
 * Usage, per connection, loop thread only:
 *     wire_hs_init(&hs, ring, my_id, initiator, &wbuf);      send wbuf (HELLO_I if initiator)
 *     frame reader max = WIRE_HELLO_MAX
 *     for each frame: rc = wire_hs_step(&hs, f, n, &wbuf, &sess); send wbuf;
 *             rc < 0: log wire_strerror(rc), close;  rc == 1: done, leave the loop
 *     wire_hs_close(&hs); frame reader max = WIRE_FRAME_MAX
 *     wire_seal(&sess, msg, len, &wbuf) / wire_open(&sess, f, n, &plain) per frame
 *     wire_session_close(&sess)
 * The initiator may send sealed frames right after FINISH; the responder opens them after its
 * step returned 1 (TCP keeps them in order). */
#ifndef LLMLIMIT_WIRE_SEAL_H
#define LLMLIMIT_WIRE_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "util/buf.h"
#include "wire/keyring.h"
#include "wire/wire.h"

#define WIRE_HELLO_MAX 512u  /* largest handshake frame payload */
#define WIRE_SEAL_OVERHEAD crypto_secretstream_xchacha20poly1305_ABYTES  /* 17 bytes a frame */

/* An established session. Caller-allocated; fields other than the documented ones are
 * private. */
struct wire_session {
	crypto_secretstream_xchacha20poly1305_state tx;
	crypto_secretstream_xchacha20poly1305_state rx;
	char peer_id[WIRE_NODE_ID_MAX + 1];    /* the authenticated peer's node id */
	uint8_t key_id[WIRE_KEY_ID_BYTES];     /* the cluster key the session was made under */
	uint8_t minor;                         /* the negotiated minor version */
	bool broken;                           /* a frame failed to open: close the connection */
};

/* Handshake state. Caller-allocated; fields are private. Holds secrets until closed. */
struct wire_hs {
	int state;
	bool initiator;
	const struct wire_keyring *ring;       /* borrowed */
	char node_id[WIRE_NODE_ID_MAX + 1];
	char peer_id[WIRE_NODE_ID_MAX + 1];    /* as claimed; authenticated only once done */
	uint8_t key_id[WIRE_KEY_ID_BYTES];
	uint8_t mac_key[32];
	uint8_t mix_key[32];
	uint8_t eph_pk[32];
	uint8_t eph_sk[32];
	uint8_t nonce[32];
	uint8_t rx_key[32];                    /* responder: pull key until FINISH brings hdr_I */
	uint8_t peer_major;
	uint8_t peer_minor;
	crypto_secretstream_xchacha20poly1305_state tx;
	uint8_t msg1[WIRE_HELLO_MAX];
	size_t msg1_len;
	uint8_t msg2[WIRE_HELLO_MAX];
	size_t msg2_len;
};

/* Starts a handshake as initiator (appends the framed HELLO_I to out) or responder (appends
 * nothing). Borrows ring, which must outlive the handshake; the initiator uses the ring's
 * primary key, the responder whichever key the initiator names. node_id is this node's id.
 * 0, -EINVAL (invalid node id), -ENOKEY (initiator with an empty ring), -ENOMEM. On failure
 * the state needs no close, but closing it is harmless. */
__attribute__((warn_unused_result))
int wire_hs_init(struct wire_hs *hs, const struct wire_keyring *ring, const char *node_id,
		 bool initiator, struct buf *out);

/* Feeds one received handshake frame payload. May append a framed reply to out (send it even
 * when 1 is returned). Returns 0 (wait for the next frame), 1 (done: *sess is established),
 * or an error after which the connection must be closed: -EPROTO, -EPROTONOSUPPORT, -ENOKEY,
 * -EACCES, -EMSGSIZE, -EINVAL (called after done or failed), -ENOMEM. */
__attribute__((warn_unused_result))
int wire_hs_step(struct wire_hs *hs, const uint8_t *frame, size_t len, struct buf *out,
		 struct wire_session *sess);

/* The node id the peer claims, "" if none yet. Only authenticated once step returned 1;
 * before that it is for logging the failure. */
const char *wire_hs_peer_id(const struct wire_hs *hs);

/* The protocol version the peer's hello announced (0.0 if none parsed yet), e.g. to log
 * "peer_version=2.0 ours=1.0" when step returned -EPROTONOSUPPORT. */
void wire_hs_peer_version(const struct wire_hs *hs, unsigned *major, unsigned *minor);

/* Wipes the handshake's secrets. NULL-safe; idempotent. */
void wire_hs_close(struct wire_hs *hs);

/* Seals msg[0..len) as the next frame of the session and appends it, framed, to out. 0,
 * -EMSGSIZE (len > WIRE_MSG_MAX), -ENOMEM; out is unchanged on failure. */
__attribute__((warn_unused_result))
int wire_seal(struct wire_session *s, const void *msg, size_t len, struct buf *out);

/* Opens the next frame payload of the session into plain (reset first). 0, or -EBADMSG when
 * it does not verify (tampered, replayed, reordered, or a frame went missing); after that the
 * session is broken and every later open fails too: close the connection. -ENOMEM. */
__attribute__((warn_unused_result))
int wire_open(struct wire_session *s, const uint8_t *frame, size_t len, struct buf *plain);

/* Wipes the session's keys. NULL-safe. */
void wire_session_close(struct wire_session *s);

#endif
