/* ring.c — rendezvous hashing (see ring.h for the choice and the exact placement function).
 *
 * A lookup hashes the key once with SipHash and then scores each member with one xor and the
 * splitmix64 finaliser over the member's precomputed id hash: at N = 8 that is one SipHash of
 * the key plus eight multiply-xorshift rounds, tens of nanoseconds. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/ring.h"
#include "util/siphash.h"

struct ring_node {
	uint64_t h;                  /* SipHash of the id under the ring seed */
	char id[RING_ID_MAX + 1];
};

struct ring {
	struct ring_node *node;      /* owned; n entries sorted by strcmp(id) */
	size_t n;
	double *share;               /* owned; n entries, valid when share_ok */
	bool share_ok;
	uint8_t seed[16];
};

/* ---------------------------------------------------------------- hashing */

uint64_t ring_siphash24(const uint8_t key[16], const void *in, size_t len)
{
	return siphash24(key, in, len);
}

/* The splitmix64 finaliser (Steele, Lea & Flood): a bijection with full avalanche, so scores of
 * one key under different members behave as independent uniform draws. */
static inline uint64_t mix64(uint64_t z)
{
	z ^= z >> 30;
	z *= 0xbf58476d1ce4e5b9ull;
	z ^= z >> 27;
	z *= 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- members */

int ring_new(struct ring **out, const uint8_t *seed)
{
	struct ring *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	memcpy(r->seed, seed ? seed : RING_DEFAULT_SEED, sizeof(r->seed));
	*out = r;
	return 0;
}

void ring_free(struct ring *r)
{
	if (!r)
		return;
	free(r->node);
	free(r->share);
	free(r);
}

static int node_cmp(const void *a, const void *b)
{
	const struct ring_node *x = a, *y = b;

	return strcmp(x->id, y->id);
}

int ring_set_members(struct ring *r, const char *const *ids, size_t n)
{
	struct ring_node *node = NULL;
	double *share = NULL;
	size_t i, len;

	if (n) {
		node = calloc(n, sizeof(*node));
		share = calloc(n, sizeof(*share));
		if (!node || !share)
			goto out_nomem;
	}
	for (i = 0; i < n; i++) {
		len = strnlen(ids[i], RING_ID_MAX + 1);
		if (len == 0 || len > RING_ID_MAX)
			goto out_inval;
		memcpy(node[i].id, ids[i], len);
		node[i].h = ring_siphash24(r->seed, ids[i], len);
	}
	if (n)
		qsort(node, n, sizeof(*node), node_cmp);
	for (i = 1; i < n; i++)
		if (strcmp(node[i - 1].id, node[i].id) == 0)
			goto out_inval;
	free(r->node);
	free(r->share);
	r->node = node;
	r->share = share;
	r->n = n;
	r->share_ok = false;
	return 0;

out_inval:
	free(node);
	free(share);
	return -EINVAL;
out_nomem:
	free(node);
	free(share);
	return -ENOMEM;
}

size_t ring_size(const struct ring *r)
{
	return r->n;
}

const char *ring_id(const struct ring *r, size_t idx)
{
	return idx < r->n ? r->node[idx].id : NULL;
}

int ring_find(const struct ring *r, const char *id)
{
	struct ring_node k, *hit;

	if (strnlen(id, RING_ID_MAX + 1) > RING_ID_MAX || !r->n)
		return -ENOENT;
	strcpy(k.id, id);
	hit = bsearch(&k, r->node, r->n, sizeof(k), node_cmp);
	return hit ? (int)(hit - r->node) : -ENOENT;
}

/* ---------------------------------------------------------------- placement */

/* The argmax over members for a key hash. Strictly-greater keeps the first (smallest id) of
 * equal scores. */
static size_t owner_of(const struct ring *r, uint64_t hk)
{
	uint64_t s, best = mix64(r->node[0].h ^ hk);
	size_t i, win = 0;

	for (i = 1; i < r->n; i++) {
		s = mix64(r->node[i].h ^ hk);
		if (s > best) {
			best = s;
			win = i;
		}
	}
	return win;
}

int ring_owner(const struct ring *r, const void *key, size_t len)
{
	if (!r->n)
		return -ENOENT;
	return (int)owner_of(r, ring_siphash24(r->seed, key, len));
}

size_t ring_successors(const struct ring *r, const void *key, size_t len, size_t want,
		       size_t *out)
{
	uint64_t hk = ring_siphash24(r->seed, key, len);
	uint64_t score[RING_SUCCESSORS_MAX], s;  /* scores of out[0..k), best first */
	size_t i, j, k = 0;

	if (want > r->n)
		want = r->n;
	if (want > RING_SUCCESSORS_MAX)
		want = RING_SUCCESSORS_MAX;
	/* The replica set is small (R is 2 or 3), so an insertion into a sorted prefix is the
	 * cheapest top-k. */
	for (i = 0; i < r->n; i++) {
		s = mix64(r->node[i].h ^ hk);
		if (k == want && s <= score[k - 1])
			continue;
		j = k < want ? k++ : k - 1;
		/* Strictly-greater shifting keeps earlier (smaller id) members ahead on ties. */
		for (; j > 0 && s > score[j - 1]; j--) {
			score[j] = score[j - 1];
			out[j] = out[j - 1];
		}
		score[j] = s;
		out[j] = i;
	}
	return k;
}

double ring_share(struct ring *r, size_t idx)
{
	uint64_t x = 0;
	size_t i;

	if (idx >= r->n)
		return 0;
	if (!r->share_ok) {
		/* Counting in the share array itself avoids an allocation that could fail. Key
		 * hashes are uniform 64-bit values, so a splitmix64 sequence stands in for hashing
		 * sample keys and is identical on every node. */
		for (i = 0; i < r->n; i++)
			r->share[i] = 0;
		for (i = 0; i < RING_SHARE_SAMPLES; i++) {
			x += 0x9e3779b97f4a7c15ull;
			r->share[owner_of(r, mix64(x))] += 1;
		}
		for (i = 0; i < r->n; i++)
			r->share[i] /= RING_SHARE_SAMPLES;
		r->share_ok = true;
	}
	return r->share[idx];
}
