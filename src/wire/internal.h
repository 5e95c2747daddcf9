/* internal.h — shared inside src/wire only: the strict msgpack reader, the buffer-backed
 * msgpack writer, and the keyring's derived keys. Not part of the library's interface. */
#ifndef LLMLIMIT_WIRE_INTERNAL_H
#define LLMLIMIT_WIRE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "util/buf.h"
#include "wire/keyring.h"

/* A cursor over untrusted msgpack. Every reader checks the type byte, the bounds and the
 * range before it moves the cursor; each returns 0 or -EPROTO and never reads past end. Any
 * integer encoding (fixint, uint8..64, int8..64) is accepted when the value is in range, so
 * an encoder may pick widths freely; other types are never coerced. */
struct wire__rd {
	const uint8_t *p;
	const uint8_t *end;
};

/* Array header; rejects counts that cannot fit in the remaining bytes (each element takes at
 * least one), so a caller may allocate for *n after min/max checks of its own. */
int wire__rd_array(struct wire__rd *r, uint32_t *n);
int wire__rd_uint(struct wire__rd *r, uint64_t max, uint64_t *v);
int wire__rd_int(struct wire__rd *r, int64_t min, int64_t max, int64_t *v);
int wire__rd_bool(struct wire__rd *r, bool *v);
/* bin of min..max bytes; *p points into the input. */
int wire__rd_bin(struct wire__rd *r, size_t min, size_t max, const uint8_t **p, size_t *len);
/* str of min..max bytes; *p points into the input (not NUL-terminated). */
int wire__rd_str(struct wire__rd *r, size_t min, size_t max, const char **p, size_t *len);
/* Skips n whole objects of any type (fields a newer minor version appended), nesting at most
 * a few levels deep. */
int wire__rd_skip(struct wire__rd *r, uint32_t n);
/* Reads an array of exactly WIRE_DIMS unsigned integers, each <= max. */
int wire__rd_dims_u(struct wire__rd *r, uint64_t max, uint64_t *v);

/* A msgpack packer appending to a struct buf. The first failed append makes the writer
 * sticky-failed (err = -ENOMEM) so pack calls need no individual checks; check err at the
 * end and truncate the buffer back to start on failure. */
struct wire__wr {
	msgpack_packer pk;
	struct buf *b;
	size_t start;
	int err;
};

void wire__wr_init(struct wire__wr *w, struct buf *b);
/* 0, or the sticky error after restoring the buffer to its length at init. */
int wire__wr_finish(struct wire__wr *w);
void wire__wr_dims_u(struct wire__wr *w, const uint64_t *v);

/* Validates an optional node id (may be empty when allow_empty) of len bytes. */
bool wire__id_ok(const char *s, size_t len, bool allow_empty);

struct wire_gossip;
/* Appends a gossip body with as many updates as fit in `limit` bytes (all of them, or
 * -EMSGSIZE, unless truncate) and sets *nsent if not NULL. out is unchanged on failure. */
int wire__gossip_encode(const struct wire_gossip *g, size_t limit, bool truncate,
			struct buf *out, size_t *nsent);

/* The keys derived from one cluster key. */
struct wire__key {
	uint8_t id[WIRE_KEY_ID_BYTES];
	uint8_t mac[32];      /* handshake HMAC-SHA512-256 key */
	uint8_t mix[32];      /* session key mixing (BLAKE2b key) */
	uint8_t gossip[32];   /* gossip XChaCha20-Poly1305 key */
};

/* The key with this id, or NULL. Borrowed from the ring: valid until the ring changes. */
const struct wire__key *wire__keyring_find(const struct wire_keyring *r,
					   const uint8_t id[WIRE_KEY_ID_BYTES]);
/* The primary key, or NULL when the ring is empty. */
const struct wire__key *wire__keyring_primary(const struct wire_keyring *r);

static inline void wire__be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t wire__get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void wire__be64(uint8_t *p, uint64_t v)
{
	wire__be32(p, (uint32_t)(v >> 32));
	wire__be32(p + 4, (uint32_t)v);
}

static inline uint64_t wire__get_be64(const uint8_t *p)
{
	return (uint64_t)wire__get_be32(p) << 32 | wire__get_be32(p + 4);
}

#endif
