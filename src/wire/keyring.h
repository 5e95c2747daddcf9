/* keyring.h — the cluster keys a node holds, so a key can be rotated without downtime.
 *
 * A cluster key is 32 random bytes shared by every node. Its key id (8 bytes, derived from
 * the key with a PRF, so it reveals nothing about it) travels in clear in hellos and gossip
 * packets to say which key sealed them. A node accepts any key in its ring and sends with its
 * primary. Rotation: add the new key on every node; then make it primary on every node; then
 * remove the old one everywhere (docs/PROTOCOL.md).
 *
 * The ring keeps only keys derived from each cluster key (per purpose: hello MACs, session
 * mixing, gossip sealing), never the key itself, and wipes them on removal and free. Pure;
 * not thread-safe: mutate it on the loop thread between uses. */
#ifndef LLMLIMIT_WIRE_KEYRING_H
#define LLMLIMIT_WIRE_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_KEY_BYTES 32
#define WIRE_KEY_ID_BYTES 8
#define WIRE_KEYRING_MAX 4

struct wire_keyring;

/* An empty ring. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int wire_keyring_new(struct wire_keyring **out);
/* Wipes and frees. NULL-safe. */
void wire_keyring_free(struct wire_keyring *r);

/* Adds a cluster key (copied; the caller should wipe its own copy) and writes its id to id if
 * not NULL. The first key added becomes primary. 0, -EEXIST (already there), -ENOSPC (ring
 * full). */
__attribute__((warn_unused_result))
int wire_keyring_add(struct wire_keyring *r, const uint8_t key[WIRE_KEY_BYTES],
		     uint8_t id[WIRE_KEY_ID_BYTES]);
/* Makes the key with this id the primary (the one hellos and gossip are sent with). 0 or
 * -ENOKEY. */
__attribute__((warn_unused_result))
int wire_keyring_set_primary(struct wire_keyring *r, const uint8_t id[WIRE_KEY_ID_BYTES]);
/* Removes and wipes a key; established sessions are unaffected. 0, -ENOKEY, or -EBUSY for
 * the primary (make another key primary first). */
__attribute__((warn_unused_result))
int wire_keyring_remove(struct wire_keyring *r, const uint8_t id[WIRE_KEY_ID_BYTES]);

size_t wire_keyring_count(const struct wire_keyring *r);
/* Copies the primary's id. 0 or -ENOKEY when the ring is empty. */
int wire_keyring_primary(const struct wire_keyring *r, uint8_t id[WIRE_KEY_ID_BYTES]);
/* 1 if the ring holds a key with this id, else 0. */
int wire_keyring_has(const struct wire_keyring *r, const uint8_t id[WIRE_KEY_ID_BYTES]);

/* The id of a cluster key. */
void wire_key_id(const uint8_t key[WIRE_KEY_BYTES], uint8_t id[WIRE_KEY_ID_BYTES]);
/* Lower-case hex of an id, NUL-terminated, for logs and /cluster. */
void wire_key_id_hex(const uint8_t id[WIRE_KEY_ID_BYTES], char out[2 * WIRE_KEY_ID_BYTES + 1]);

#endif
