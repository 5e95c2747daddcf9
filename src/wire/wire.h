/* wire.h — what crosses between nodes: shared constants, library set-up and error texts.
 *
 * The wire library is pure: byte buffers in, values or byte buffers out. No libuv, no clock
 * (time is always a parameter), no I/O, no logging. Its parts:
 *   frame.h       length-prefixed TCP framing with an incremental reader
 *   codec.h       msgpack encoding of the node-to-node messages (CHECK, ADJUST, REPLICATE...)
 *   keyring.h     the cluster keys (rotation)
 *   seal.h        the mutually authenticated handshake and the sealed session over TCP
 *   gossip_msg.h  SWIM gossip messages and their sealed, replay-protected UDP packets
 * docs/PROTOCOL.md describes every byte.
 *
 * Errors are negative errnos with one meaning across the library (wire_strerror() words them
 * for logs):
 *   -EPROTO           malformed input (truncated, wrong msgpack type, value out of range)
 *   -EPROTONOSUPPORT  the peer speaks another major protocol version
 *   -ENOMSG           a well-formed message of a type this version does not know
 *   -EMSGSIZE         a frame, packet, batch or field exceeds its limit
 *   -ENOKEY           the peer's key id is not in our keyring (no, or another, cluster key)
 *   -EACCES           handshake authentication failed (wrong key, tampering, impostor)
 *   -EBADMSG          sealed data failed to verify (tampered, replayed, reordered, wrong key)
 *   -EALREADY         gossip packet already seen (replay)
 *   -ESTALE           gossip packet from an earlier boot of its sender (replay)
 *   -EINVAL           a caller error (bad argument, wrong state)
 *   -ENOMEM           allocation failed */
#ifndef LLMLIMIT_WIRE_WIRE_H
#define LLMLIMIT_WIRE_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* The protocol version. A peer with another major version is refused (-EPROTONOSUPPORT);
 * minor versions only add (message types, trailing fields) and a session runs at the lower
 * minor of its two ends. */
#define WIRE_VERSION_MAJOR 1
#define WIRE_VERSION_MINOR 0

/* Limiter dimensions (requests, input tokens, output tokens) and window slots; codec.c checks
 * at compile time that they match src/window/window.h. */
#define WIRE_DIMS 3
#define WIRE_SLOTS 61
#define WIRE_KEY_MAX 256       /* longest API key in bytes */
#define WIRE_NODE_ID_MAX 64    /* longest node id in bytes */
#define WIRE_HOST_MAX 255      /* longest host name or address literal in bytes */

/* Initialises libsodium. Call once at start-up, before any other wire function (tests too).
 * Idempotent. 0, or -EIO when libsodium cannot initialise. */
__attribute__((warn_unused_result))
int wire_init(void);

/* A short, static, log-friendly description of a wire error code (negative errno). */
const char *wire_strerror(int err);

/* True when s[0..len) is a valid node id: 1..WIRE_NODE_ID_MAX bytes of printable ASCII
 * without spaces (0x21..0x7e), so it is safe to log and to use as a map key. */
int wire_node_id_valid(const char *s, size_t len);

#endif
