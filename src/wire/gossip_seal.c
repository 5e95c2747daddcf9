/* gossip_seal.c — sealed, replay-protected gossip packets and the receiver's replay cache.
 *
 * Packet: version(1) key_id(8) epoch(8, BE) counter(8, BE) id_len(1) id(id_len) nonce(24)
 * then XChaCha20-Poly1305-IETF(body) with its 16-byte tag; the associated data is every byte
 * before the nonce. A receiver verifies first, then checks the sender's (epoch, counter)
 * against its replay window, and only then decodes. */
#include "wire/gossip_msg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "wire/internal.h"

#define PACKET_VERSION 1u
#define OFF_KEY_ID 1u
#define OFF_EPOCH 9u
#define OFF_COUNTER 17u
#define OFF_ID_LEN 25u
#define OFF_ID 26u
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define WINDOW_BITS 64u      /* counters this far behind the newest are still accepted once */
#define REPLAY_CAP_MAX 65536u

_Static_assert(NONCE_BYTES == 24 && TAG_BYTES == 16, "AEAD sizes");
_Static_assert(WIRE_GOSSIP_OVERHEAD(0) == OFF_ID + NONCE_BYTES + TAG_BYTES, "overhead");

struct replay_entry {
	char id[WIRE_NODE_ID_MAX];
	uint8_t id_len;
	uint64_t epoch;
	uint64_t top;     /* newest counter accepted in this epoch */
	uint64_t seen;    /* bit i: counter top - i was accepted */
	uint64_t used;    /* recency, for eviction */
};

struct wire_replay {
	size_t cap;
	size_t n;
	uint64_t tick;
	struct replay_entry e[];
};

int wire_gossip_sender_init(struct wire_gossip_sender *s, const char *node_id, uint64_t epoch)
{
	size_t n = node_id ? strnlen(node_id, WIRE_NODE_ID_MAX + 1) : 0;

	memset(s, 0, sizeof(*s));
	if (!wire_node_id_valid(node_id, n))
		return -EINVAL;
	memcpy(s->id, node_id, n);
	s->epoch = epoch;
	return 0;
}

int wire_gossip_seal(struct wire_gossip_sender *s, const struct wire_keyring *ring,
		     const struct wire_gossip *msg, uint8_t *out, size_t cap, size_t *outlen,
		     size_t *nsent)
{
	const struct wire__key *k = wire__keyring_primary(ring);
	size_t idlen = strnlen(s->id, sizeof(s->id)), hdr, sent = 0;
	unsigned long long clen;
	struct buf body;
	int err;

	if (!k)
		return -ENOKEY;
	if (!wire__id_ok(s->id, idlen, false) || s->counter == UINT64_MAX)
		return -EINVAL;
	if (cap > WIRE_GOSSIP_PACKET_MAX)
		cap = WIRE_GOSSIP_PACKET_MAX;
	hdr = OFF_ID + idlen + NONCE_BYTES;
	if (cap < hdr + TAG_BYTES + 1)
		return -EMSGSIZE;
	buf_init(&body);
	err = wire__gossip_encode(msg, cap - hdr - TAG_BYTES, nsent != NULL, &body, &sent);
	if (err < 0)
		goto out;
	out[0] = PACKET_VERSION;
	memcpy(out + OFF_KEY_ID, k->id, WIRE_KEY_ID_BYTES);
	wire__be64(out + OFF_EPOCH, s->epoch);
	wire__be64(out + OFF_COUNTER, s->counter + 1);
	out[OFF_ID_LEN] = (uint8_t)idlen;
	memcpy(out + OFF_ID, s->id, idlen);
	randombytes_buf(out + OFF_ID + idlen, NONCE_BYTES);
	crypto_aead_xchacha20poly1305_ietf_encrypt(out + hdr, &clen, (const uint8_t *)body.data,
						   body.len, out, OFF_ID + idlen, NULL,
						   out + OFF_ID + idlen, k->gossip);
	s->counter++;
	*outlen = hdr + (size_t)clen;
	if (nsent)
		*nsent = sent;
out:
	buf_close(&body);
	return err;
}

static struct replay_entry *replay_find(struct wire_replay *rp, const char *id, size_t len)
{
	for (size_t i = 0; i < rp->n; i++)
		if (rp->e[i].id_len == len && memcmp(rp->e[i].id, id, len) == 0)
			return &rp->e[i];
	return NULL;
}

/* Would (epoch, counter) from this sender be fresh? With commit, also records it. */
static int replay_check(struct wire_replay *rp, const char *id, size_t len, uint64_t epoch,
			uint64_t ctr, bool commit)
{
	struct replay_entry *e = replay_find(rp, id, len);
	uint64_t d;

	if (e && epoch < e->epoch)
		return -ESTALE;
	if (e && epoch == e->epoch && ctr <= e->top) {
		d = e->top - ctr;
		if (d >= WINDOW_BITS || (e->seen & (1ull << d)))
			return -EALREADY;
		if (commit)
			e->seen |= 1ull << d;
	} else if (e && epoch == e->epoch) {
		d = ctr - e->top;
		if (commit) {
			e->seen = d >= WINDOW_BITS ? 1 : (e->seen << d) | 1;
			e->top = ctr;
		}
	} else if (commit) {
		if (!e) {
			/* A new sender: take a free entry or the least recently heard one. */
			if (rp->n < rp->cap) {
				e = &rp->e[rp->n++];
			} else {
				e = &rp->e[0];
				for (size_t i = 1; i < rp->n; i++)
					if (rp->e[i].used < e->used)
						e = &rp->e[i];
			}
			memcpy(e->id, id, len);
			e->id_len = (uint8_t)len;
		}
		e->epoch = epoch;
		e->top = ctr;
		e->seen = 1;
	}
	if (commit)
		e->used = ++rp->tick;
	return 0;
}

int wire_gossip_open(struct wire_replay *rp, const struct wire_keyring *ring,
		     const uint8_t *pkt, size_t len, struct wire_gossip *out)
{
	const struct wire__key *k;
	unsigned long long mlen;
	uint64_t epoch, ctr;
	uint8_t *plain;
	size_t idlen, hdr;
	int err;

	memset(out, 0, sizeof(*out));
	if (!pkt || len < 1)
		return -EBADMSG;
	if (pkt[0] != PACKET_VERSION)
		return -EPROTONOSUPPORT;
	if (len > WIRE_GOSSIP_PACKET_MAX)
		return -EMSGSIZE;
	if (len <= OFF_ID)
		return -EBADMSG;
	idlen = pkt[OFF_ID_LEN];
	hdr = OFF_ID + idlen + NONCE_BYTES;
	if (len < hdr + TAG_BYTES + 1 || !wire__id_ok((const char *)pkt + OFF_ID, idlen, false))
		return -EBADMSG;
	if (!(k = wire__keyring_find(ring, pkt + OFF_KEY_ID)))
		return -ENOKEY;
	epoch = wire__get_be64(pkt + OFF_EPOCH);
	ctr = wire__get_be64(pkt + OFF_COUNTER);
	/* A cheap look first spares the decryption of an obvious replay; the window only moves
	 * once the packet has verified, so forgeries cannot disturb it. */
	if ((err = replay_check(rp, (const char *)pkt + OFF_ID, idlen, epoch, ctr, false)) < 0)
		return err;
	if (!(plain = malloc(len - hdr - TAG_BYTES)))
		return -ENOMEM;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &mlen, NULL, pkt + hdr, len - hdr,
						       pkt, OFF_ID + idlen, pkt + OFF_ID + idlen,
						       k->gossip) != 0) {
		err = -EBADMSG;
		goto out;
	}
	(void)replay_check(rp, (const char *)pkt + OFF_ID, idlen, epoch, ctr, true);
	if ((err = wire_gossip_decode(plain, (size_t)mlen, out)) < 0)
		goto out;
	memcpy(out->from, pkt + OFF_ID, idlen);
	out->from[idlen] = '\0';
out:
	free(plain);
	return err;
}

int wire_replay_new(struct wire_replay **out, size_t capacity)
{
	*out = NULL;
	if (capacity == 0 || capacity > REPLAY_CAP_MAX)
		return -EINVAL;
	*out = calloc(1, sizeof(**out) + capacity * sizeof((*out)->e[0]));
	if (!*out)
		return -ENOMEM;
	(*out)->cap = capacity;
	return 0;
}

void wire_replay_free(struct wire_replay *rp)
{
	free(rp);
}

void wire_replay_forget(struct wire_replay *rp, const char *node_id)
{
	size_t n = strnlen(node_id, WIRE_NODE_ID_MAX + 1);
	struct replay_entry *e;

	if (n > WIRE_NODE_ID_MAX || !(e = replay_find(rp, node_id, n)))
		return;
	*e = rp->e[--rp->n];
}
