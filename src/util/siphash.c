/* siphash.c — SipHash-2-4, written from the paper's description. */
#include "util/siphash.h"

static inline uint64_t rotl(uint64_t x, unsigned b)
{
	return (x << b) | (x >> (64 - b));
}

/* Byte-wise little-endian load: the hash must not depend on the host's byte order, and the
 * compiler turns this into one load on little-endian machines. */
static inline uint64_t load64(const uint8_t *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
	       (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
	       (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

/* One SipRound over the state v[0..3]; inlined, the state stays in registers. */
static inline void sipround(uint64_t v[4])
{
	v[0] += v[1];
	v[1] = rotl(v[1], 13);
	v[1] ^= v[0];
	v[0] = rotl(v[0], 32);
	v[2] += v[3];
	v[3] = rotl(v[3], 16);
	v[3] ^= v[2];
	v[0] += v[3];
	v[3] = rotl(v[3], 21);
	v[3] ^= v[0];
	v[2] += v[1];
	v[1] = rotl(v[1], 17);
	v[1] ^= v[2];
	v[2] = rotl(v[2], 32);
}

uint64_t siphash24(const uint8_t key[16], const void *in, size_t len)
{
	const uint8_t *p = in;
	size_t i, full = len & ~(size_t)7;
	uint64_t k0 = load64(key), k1 = load64(key + 8);
	uint64_t v[4] = {
		k0 ^ 0x736f6d6570736575ull, /* "somepseudorandomlygeneratedbytes" */
		k1 ^ 0x646f72616e646f6dull,
		k0 ^ 0x6c7967656e657261ull,
		k1 ^ 0x7465646279746573ull,
	};
	uint64_t m, b = (uint64_t)len << 56;

	/* Indices rather than pointer bumps: `in` may be NULL when len is 0. */
	for (i = 0; i < full; i += 8) {
		m = load64(p + i);
		v[3] ^= m;
		sipround(v);
		sipround(v);
		v[0] ^= m;
	}
	/* The last block holds the 0..7 leftover bytes and the length's low byte on top. */
	switch (len & 7) {
	case 7: b |= (uint64_t)p[full + 6] << 48; /* fall through */
	case 6: b |= (uint64_t)p[full + 5] << 40; /* fall through */
	case 5: b |= (uint64_t)p[full + 4] << 32; /* fall through */
	case 4: b |= (uint64_t)p[full + 3] << 24; /* fall through */
	case 3: b |= (uint64_t)p[full + 2] << 16; /* fall through */
	case 2: b |= (uint64_t)p[full + 1] << 8;  /* fall through */
	case 1: b |= (uint64_t)p[full + 0];       /* fall through */
	case 0: break;
	}
	v[3] ^= b;
	sipround(v);
	sipround(v);
	v[0] ^= b;
	v[2] ^= 0xff;
	sipround(v);
	sipround(v);
	sipround(v);
	sipround(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}
