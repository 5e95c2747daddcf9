/* ring.h — key ownership over the ring members: rendezvous (highest-random-weight) hashing.
 *
 * Pure: no libuv, no clock, no I/O, no allocation after ring_set_members(). Not thread-safe;
 * every call is loop-thread only in practice, but nothing here depends on the loop.
 *
 * Why rendezvous hashing and not a vnode ring. A cluster here has at most a few dozen nodes,
 * so scoring every node per lookup (O(N), a multiply-xorshift each) costs less than the binary
 * search of a 128-vnode-per-node ring, and it buys, by construction rather than by tuning:
 *  - minimal movement: adding node X moves exactly the keys X now wins; removing X moves exactly
 *    the keys X owned, each to its runner-up; no other key changes owner;
 *  - balance with no vnode count to pick: each key's owner is the argmax of N independent
 *    uniform scores, so a node's share is Binomial(keys, 1/N) (8 nodes, 1e6 keys: sigma ~0.26 %);
 *  - replica sets for free: the replicas of a key are its next-best scores, and when a member
 *    goes, every replica set loses at most that member and gains the next one down.
 *
 * The placement function is fixed and specified here, because every node of one version must
 * compute the same owner (golden vectors in tests/unit/check_ring.c pin it):
 *   h(x)          = SipHash-2-4 of the bytes x under the 16-byte ring seed
 *                   (default RING_DEFAULT_SEED, the ASCII bytes "llmlimit-ring-v1")
 *   score(n, key) = mix64(h(node id) XOR h(key)), mix64 = the splitmix64 finaliser:
 *                   z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb;
 *                   z ^= z >> 31
 *   owner(key)    = the member with the highest score; ties (2^-64) go to the smaller id
 *                   (strcmp), so the result never depends on the order members were given in. */
#ifndef LLMLIMIT_GOSSIP_RING_H
#define LLMLIMIT_GOSSIP_RING_H

#include <stddef.h>
#include <stdint.h>

#define RING_ID_MAX 64  /* longest node id in bytes (matches MEMBERS_ID_MAX) */
#define RING_SUCCESSORS_MAX 64  /* most entries ring_successors() returns */
#define RING_DEFAULT_SEED ((const uint8_t *)"llmlimit-ring-v1")
/* Keys ring_share() samples; the estimate's relative error is about sqrt(N / 65536). */
#define RING_SHARE_SAMPLES 65536u

struct ring;

/* Creates an empty ring. `seed` (16 bytes, copied) keys the placement hash: NULL means
 * RING_DEFAULT_SEED. Every node of a cluster must use the same seed. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int ring_new(struct ring **out, const uint8_t *seed);
/* NULL-safe. */
void ring_free(struct ring *r);

/* Replaces the members with `ids` (n C strings, copied; the order does not matter). 0; -EINVAL
 * when an id is empty, longer than RING_ID_MAX, or given twice; -ENOMEM. On error the ring
 * keeps its previous members. Indexes from earlier calls are invalid afterwards. */
__attribute__((warn_unused_result))
int ring_set_members(struct ring *r, const char *const *ids, size_t n);

/* Number of members. */
size_t ring_size(const struct ring *r);
/* The id of member `idx` (< ring_size), NUL-terminated, owned by the ring and valid until the
 * next ring_set_members(). Members are indexed in strcmp order of their ids. */
const char *ring_id(const struct ring *r, size_t idx);
/* The index of member `id`, or -ENOENT. */
int ring_find(const struct ring *r, const char *id);

/* The index of the owner of `key` (len bytes; key may be NULL when len is 0), or -ENOENT when
 * the ring is empty. */
int ring_owner(const struct ring *r, const void *key, size_t len);
/* The replica set of `key` in preference order: out[0] is the owner, out[1] the member that
 * would own the key without the owner, and so on. Writes min(want, ring_size,
 * RING_SUCCESSORS_MAX) distinct indexes to `out` and returns how many. */
size_t ring_successors(const struct ring *r, const void *key, size_t len, size_t want,
		       size_t *out);

/* The fraction of the keyspace member `idx` owns, estimated over RING_SHARE_SAMPLES uniformly
 * spread key hashes (the same sample on every node, so every node reports the same figure).
 * The first call after ring_set_members() computes every member's share (about N * 65536 score
 * evaluations: about 2 ms at N = 8 and 6 ms at N = 64 on this machine); later calls read the
 * cache. Returns 0 when idx is out of range. */
double ring_share(struct ring *r, size_t idx);

/* SipHash-2-4 (Aumasson & Bernstein) of `len` bytes at `in` under `key`, little-endian as in the
 * reference implementation (so the published test vectors apply). Exposed for tests. */
uint64_t ring_siphash24(const uint8_t key[16], const void *in, size_t len);

#endif
