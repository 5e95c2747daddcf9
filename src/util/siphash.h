/* siphash.h — SipHash-2-4 (Aumasson & Bernstein, 2012): the keyed hash of the key table
 * (random seed, against hash flooding) and of ring placement (fixed seed, pinned by golden
 * vectors). Pure and allocation-free. */
#ifndef LLMLIMIT_UTIL_SIPHASH_H
#define LLMLIMIT_UTIL_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of `len` bytes at `in` (may be NULL when len is 0) under the 16-byte `key`, with
 * the reference byte order: the key and the message are read little-endian, so the result is
 * the same on every host and matches the published test vectors. */
uint64_t siphash24(const uint8_t key[16], const void *in, size_t len);

#endif
