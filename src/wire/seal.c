/* seal.c — the mutually authenticated handshake and the sealed session.
 *
 *   HELLO_I = body_I || tag_I           tag_I = HMAC(K_mac, "hello-i", body_I)
 *   HELLO_R = body_R || hdr_R || tag_R  tag_R = HMAC(K_mac, "hello-r", HELLO_I, body_R, hdr_R)
 *   FINISH  = hdr_I || tag_F            tag_F = HMAC(K_mac, "finish", HELLO_I, HELLO_R, hdr_I)
 *   th      = BLAKE2b("transcript", HELLO_I, body_R)
 *   k_i2r   = BLAKE2b_K_mix("i2r", kx client tx, th); k_r2i likewise with the client's rx
 * HMAC is HMAC-SHA512-256 (crypto_auth); every variable-length piece is absorbed behind its
 * 4-byte big-endian length so no two transcripts concatenate alike; labels carry their NUL.
 * hdr_* are the secretstream headers of each direction; every frame ends with a tag over all
 * of it, so each side rejects a changed byte as soon as the frame arrives. */
#include "wire/seal.h"

#include <errno.h>
#include <string.h>

#include "wire/frame.h"
#include "wire/internal.h"

#define MAGIC "llmlimit"
#define TAG_BYTES crypto_auth_hmacsha512256_BYTES
#define SS_HDR crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define HELLO_FIELDS 8u

_Static_assert(TAG_BYTES == 32, "hello tag size");
_Static_assert(SS_HDR == 24, "secretstream header size");
_Static_assert(crypto_kx_PUBLICKEYBYTES == 32 && crypto_kx_SESSIONKEYBYTES == 32, "kx sizes");

enum { ROLE_INITIATOR = 0, ROLE_RESPONDER = 1 };
enum { HS_FAILED = 0, HS_I_WAIT_HELLO, HS_R_WAIT_HELLO, HS_R_WAIT_FINISH, HS_DONE };

struct piece {
	const uint8_t *p;
	size_t n;
};

struct hello {
	uint8_t major;
	uint8_t minor;
	uint8_t role;
	const uint8_t *key_id;
	const uint8_t *eph_pk;
	const char *id;
	size_t id_len;
};

static void len_prefix(uint8_t out[4], size_t n)
{
	wire__be32(out, (uint32_t)n);
}

static void hmac(uint8_t out[TAG_BYTES], const uint8_t key[32], const char *label,
		 const struct piece *pc, size_t npc)
{
	crypto_auth_hmacsha512256_state st;
	uint8_t len[4];

	crypto_auth_hmacsha512256_init(&st, key, 32);
	crypto_auth_hmacsha512256_update(&st, (const uint8_t *)label, strlen(label) + 1);
	for (size_t i = 0; i < npc; i++) {
		len_prefix(len, pc[i].n);
		crypto_auth_hmacsha512256_update(&st, len, sizeof(len));
		crypto_auth_hmacsha512256_update(&st, pc[i].p, pc[i].n);
	}
	crypto_auth_hmacsha512256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

/* BLAKE2b-256 of label and pieces, keyed when key is not NULL. */
static void hash(uint8_t out[32], const uint8_t *key, const char *label, const struct piece *pc,
		 size_t npc)
{
	crypto_generichash_state st;
	uint8_t len[4];

	crypto_generichash_init(&st, key, key ? 32 : 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)label, strlen(label) + 1);
	for (size_t i = 0; i < npc; i++) {
		len_prefix(len, pc[i].n);
		crypto_generichash_update(&st, len, sizeof(len));
		crypto_generichash_update(&st, pc[i].p, pc[i].n);
	}
	crypto_generichash_final(&st, out, 32);
	sodium_memzero(&st, sizeof(st));
}

static bool tag_ok(const uint8_t *got, const uint8_t key[32], const char *label,
		   const struct piece *pc, size_t npc)
{
	uint8_t want[TAG_BYTES];
	bool ok;

	hmac(want, key, label, pc, npc);
	ok = sodium_memcmp(got, want, TAG_BYTES) == 0;
	sodium_memzero(want, sizeof(want));
	return ok;
}

static void wipe_secrets(struct wire_hs *hs)
{
	sodium_memzero(hs->mac_key, sizeof(hs->mac_key));
	sodium_memzero(hs->mix_key, sizeof(hs->mix_key));
	sodium_memzero(hs->eph_sk, sizeof(hs->eph_sk));
	sodium_memzero(hs->rx_key, sizeof(hs->rx_key));
	sodium_memzero(&hs->tx, sizeof(hs->tx));
}

static int fail(struct wire_hs *hs, int err)
{
	wipe_secrets(hs);
	hs->state = HS_FAILED;
	return err;
}

static void use_key(struct wire_hs *hs, const struct wire__key *k)
{
	memcpy(hs->key_id, k->id, sizeof(hs->key_id));
	memcpy(hs->mac_key, k->mac, sizeof(hs->mac_key));
	memcpy(hs->mix_key, k->mix, sizeof(hs->mix_key));
}

/* Encodes this side's hello body into dst (capacity cap; room must remain for what follows
 * it in the frame) and sets *len. */
static int put_hello(const struct wire_hs *hs, uint8_t role, uint8_t *dst, size_t cap,
		     size_t *len)
{
	struct wire__wr w;
	struct buf b;
	size_t idlen = strlen(hs->node_id);
	int err;

	buf_init(&b);
	wire__wr_init(&w, &b);
	msgpack_pack_array(&w.pk, HELLO_FIELDS);
	msgpack_pack_str(&w.pk, strlen(MAGIC));
	msgpack_pack_str_body(&w.pk, MAGIC, strlen(MAGIC));
	msgpack_pack_uint8(&w.pk, WIRE_VERSION_MAJOR);
	msgpack_pack_uint8(&w.pk, WIRE_VERSION_MINOR);
	msgpack_pack_uint8(&w.pk, role);
	msgpack_pack_bin(&w.pk, WIRE_KEY_ID_BYTES);
	msgpack_pack_bin_body(&w.pk, hs->key_id, WIRE_KEY_ID_BYTES);
	msgpack_pack_bin(&w.pk, sizeof(hs->eph_pk));
	msgpack_pack_bin_body(&w.pk, hs->eph_pk, sizeof(hs->eph_pk));
	msgpack_pack_bin(&w.pk, sizeof(hs->nonce));
	msgpack_pack_bin_body(&w.pk, hs->nonce, sizeof(hs->nonce));
	msgpack_pack_str(&w.pk, idlen);
	msgpack_pack_str_body(&w.pk, hs->node_id, idlen);
	if ((err = wire__wr_finish(&w)) == 0) {
		/* A 64-byte id keeps the body near 160 bytes; the check is for the contract. */
		if (b.len > cap)
			err = -EMSGSIZE;
		else
			memcpy(dst, b.data, b.len);
		*len = b.len;
	}
	buf_close(&b);
	return err;
}

/* Parses a hello body that must fill body[0..len). The major version is checked before the
 * remaining fields, whose layout another major version may change. */
static int get_hello(const uint8_t *body, size_t len, struct hello *h)
{
	struct wire__rd r = { body, body + len };
	uint64_t major, minor, role;
	const char *magic;
	const uint8_t *nonce;
	size_t n;
	uint32_t fields;

	if (wire__rd_array(&r, &fields) < 0 || fields < 2 ||
	    wire__rd_str(&r, 0, 64, &magic, &n) < 0 ||
	    n != strlen(MAGIC) || memcmp(magic, MAGIC, n) != 0 ||
	    wire__rd_uint(&r, UINT8_MAX, &major) < 0)
		return -EPROTO;
	h->major = (uint8_t)major;
	if (major != WIRE_VERSION_MAJOR)
		return -EPROTONOSUPPORT;
	if (fields < HELLO_FIELDS ||
	    wire__rd_uint(&r, UINT8_MAX, &minor) < 0 ||
	    wire__rd_uint(&r, ROLE_RESPONDER, &role) < 0 ||
	    wire__rd_bin(&r, WIRE_KEY_ID_BYTES, WIRE_KEY_ID_BYTES, &h->key_id, &n) < 0 ||
	    wire__rd_bin(&r, 32, 32, &h->eph_pk, &n) < 0 ||
	    wire__rd_bin(&r, 32, 32, &nonce, &n) < 0 ||
	    wire__rd_str(&r, 1, WIRE_NODE_ID_MAX, &h->id, &h->id_len) < 0 ||
	    !wire__id_ok(h->id, h->id_len, false) ||
	    wire__rd_skip(&r, fields - HELLO_FIELDS) < 0 || r.p != r.end)
		return -EPROTO;
	h->minor = (uint8_t)minor;
	h->role = (uint8_t)role;
	return 0;
}

static void note_peer(struct wire_hs *hs, const struct hello *h)
{
	memcpy(hs->peer_id, h->id, h->id_len);
	hs->peer_id[h->id_len] = '\0';
}

/* Keeps the version a peer announced, for the log line of a refusal. */
static void note_version(struct wire_hs *hs, const struct hello *h, int err)
{
	if (err == 0 || err == -EPROTONOSUPPORT) {
		hs->peer_major = h->major;
		hs->peer_minor = err == 0 ? h->minor : 0;
	}
}

/* Derives both directions' stream keys from the X25519 session keys (client view: tx is
 * initiator-to-responder), the cluster key and the transcript. */
static void session_keys(const struct wire_hs *hs, const uint8_t i2r_kx[32],
			 const uint8_t r2i_kx[32], const uint8_t th[32], uint8_t k_i2r[32],
			 uint8_t k_r2i[32])
{
	struct piece a[2] = { { i2r_kx, 32 }, { th, 32 } };
	struct piece b[2] = { { r2i_kx, 32 }, { th, 32 } };

	hash(k_i2r, hs->mix_key, "llmlimit i2r", a, 2);
	hash(k_r2i, hs->mix_key, "llmlimit r2i", b, 2);
}

static void fill_session(const struct wire_hs *hs, struct wire_session *sess)
{
	unsigned mine = WIRE_VERSION_MINOR;

	memcpy(sess->peer_id, hs->peer_id, sizeof(sess->peer_id));
	memcpy(sess->key_id, hs->key_id, sizeof(sess->key_id));
	/* Through a variable: with minor 0 a direct comparison trips -Wtype-limits. */
	sess->minor = (uint8_t)(hs->peer_minor < mine ? hs->peer_minor : mine);
	sess->broken = false;
}

int wire_hs_init(struct wire_hs *hs, const struct wire_keyring *ring, const char *node_id,
		 bool initiator, struct buf *out)
{
	const struct wire__key *k;
	size_t idlen;
	int err;

	memset(hs, 0, sizeof(*hs));
	idlen = node_id ? strnlen(node_id, WIRE_NODE_ID_MAX + 1) : 0;
	if (!ring || !wire_node_id_valid(node_id, idlen))
		return -EINVAL;
	memcpy(hs->node_id, node_id, idlen);
	hs->ring = ring;
	hs->initiator = initiator;
	crypto_kx_keypair(hs->eph_pk, hs->eph_sk);
	randombytes_buf(hs->nonce, sizeof(hs->nonce));
	if (!initiator) {
		hs->state = HS_R_WAIT_HELLO;
		return 0;
	}
	if (!(k = wire__keyring_primary(ring)))
		return fail(hs, -ENOKEY);
	use_key(hs, k);
	if ((err = put_hello(hs, ROLE_INITIATOR, hs->msg1, sizeof(hs->msg1) - TAG_BYTES,
			     &hs->msg1_len)) < 0)
		return fail(hs, err);
	hmac(hs->msg1 + hs->msg1_len, hs->mac_key, "llmlimit hello-i",
	     &(struct piece){ hs->msg1, hs->msg1_len }, 1);
	hs->msg1_len += TAG_BYTES;
	if ((err = wire_frame_append(out, hs->msg1, hs->msg1_len)) < 0)
		return fail(hs, err);
	hs->state = HS_I_WAIT_HELLO;
	return 0;
}

/* Responder, first frame: HELLO_I. Answers HELLO_R. */
static int on_hello_i(struct wire_hs *hs, const uint8_t *f, size_t len, struct buf *out)
{
	const struct wire__key *k;
	struct hello h = { 0 };
	uint8_t rx[32], tx[32], th[32], k_r2i[32];
	size_t blen;
	int err;

	if (len < 1 + TAG_BYTES)
		return -EPROTO;
	blen = len - TAG_BYTES;
	err = get_hello(f, blen, &h);
	note_version(hs, &h, err);
	if (err < 0)
		return err;
	note_peer(hs, &h);
	if (h.role != ROLE_INITIATOR)
		return -EPROTO;
	if (!(k = wire__keyring_find(hs->ring, h.key_id)))
		return -ENOKEY;
	use_key(hs, k);
	if (!tag_ok(f + blen, hs->mac_key, "llmlimit hello-i", &(struct piece){ f, blen }, 1))
		return -EACCES;
	/* A reflected hello would carry our own ephemeral key. */
	if (sodium_memcmp(h.eph_pk, hs->eph_pk, 32) == 0 ||
	    crypto_kx_server_session_keys(rx, tx, hs->eph_pk, hs->eph_sk, h.eph_pk) != 0)
		return -EACCES;
	memcpy(hs->msg1, f, len);
	hs->msg1_len = len;
	if ((err = put_hello(hs, ROLE_RESPONDER, hs->msg2, sizeof(hs->msg2) - SS_HDR - TAG_BYTES,
			     &hs->msg2_len)) < 0)
		goto out;
	hash(th, NULL, "llmlimit transcript",
	     (struct piece[]){ { hs->msg1, hs->msg1_len }, { hs->msg2, hs->msg2_len } }, 2);
	/* The server's rx is the client's tx: initiator to responder. */
	session_keys(hs, rx, tx, th, hs->rx_key, k_r2i);
	crypto_secretstream_xchacha20poly1305_init_push(&hs->tx, hs->msg2 + hs->msg2_len, k_r2i);
	hmac(hs->msg2 + hs->msg2_len + SS_HDR, hs->mac_key, "llmlimit hello-r",
	     (struct piece[]){ { hs->msg1, hs->msg1_len }, { hs->msg2, hs->msg2_len },
			       { hs->msg2 + hs->msg2_len, SS_HDR } }, 3);
	hs->msg2_len += SS_HDR + TAG_BYTES;
	err = wire_frame_append(out, hs->msg2, hs->msg2_len);
out:
	sodium_memzero(rx, sizeof(rx));
	sodium_memzero(tx, sizeof(tx));
	sodium_memzero(k_r2i, sizeof(k_r2i));
	sodium_memzero(hs->eph_sk, sizeof(hs->eph_sk));
	if (err == 0)
		hs->state = HS_R_WAIT_FINISH;
	return err;
}

/* Responder, second frame: FINISH. Completes the session. */
static int on_finish(struct wire_hs *hs, const uint8_t *f, size_t len, struct wire_session *sess)
{
	crypto_secretstream_xchacha20poly1305_state rx;

	if (len != SS_HDR + TAG_BYTES)
		return -EPROTO;
	if (!tag_ok(f + SS_HDR, hs->mac_key, "llmlimit finish",
		    (struct piece[]){ { hs->msg1, hs->msg1_len }, { hs->msg2, hs->msg2_len },
				      { f, SS_HDR } }, 3))
		return -EACCES;
	if (crypto_secretstream_xchacha20poly1305_init_pull(&rx, f, hs->rx_key) != 0)
		return -EACCES;
	memset(sess, 0, sizeof(*sess));
	sess->tx = hs->tx;
	sess->rx = rx;
	sodium_memzero(&rx, sizeof(rx));
	fill_session(hs, sess);
	return 1;
}

/* Initiator, only frame: HELLO_R. Answers FINISH and completes the session. */
static int on_hello_r(struct wire_hs *hs, const uint8_t *f, size_t len, struct buf *out,
		      struct wire_session *sess)
{
	crypto_secretstream_xchacha20poly1305_state tx, rx;
	uint8_t ckx_rx[32], ckx_tx[32], th[32], k_i2r[32], k_r2i[32];
	uint8_t fin[SS_HDR + TAG_BYTES];
	const uint8_t *hdr_r;
	struct hello h = { 0 };
	size_t blen;
	int err = -EACCES;

	if (len < 1 + SS_HDR + TAG_BYTES)
		return -EPROTO;
	blen = len - SS_HDR - TAG_BYTES;
	hdr_r = f + blen;
	err = get_hello(f, blen, &h);
	note_version(hs, &h, err);
	if (err < 0)
		return err;
	note_peer(hs, &h);
	if (h.role != ROLE_RESPONDER)
		return -EPROTO;
	/* The responder answers under the key we chose; anything else is not our peer. */
	if (sodium_memcmp(h.key_id, hs->key_id, WIRE_KEY_ID_BYTES) != 0 ||
	    !tag_ok(hdr_r + SS_HDR, hs->mac_key, "llmlimit hello-r",
		    (struct piece[]){ { hs->msg1, hs->msg1_len }, { f, blen }, { hdr_r, SS_HDR } },
		    3) ||
	    sodium_memcmp(h.eph_pk, hs->eph_pk, 32) == 0 ||
	    crypto_kx_client_session_keys(ckx_rx, ckx_tx, hs->eph_pk, hs->eph_sk, h.eph_pk) != 0)
		return -EACCES;
	memcpy(hs->msg2, f, len);
	hs->msg2_len = len;
	hash(th, NULL, "llmlimit transcript",
	     (struct piece[]){ { hs->msg1, hs->msg1_len }, { f, blen } }, 2);
	session_keys(hs, ckx_tx, ckx_rx, th, k_i2r, k_r2i);
	err = -EACCES;
	if (crypto_secretstream_xchacha20poly1305_init_pull(&rx, hdr_r, k_r2i) != 0)
		goto out;
	crypto_secretstream_xchacha20poly1305_init_push(&tx, fin, k_i2r);
	hmac(fin + SS_HDR, hs->mac_key, "llmlimit finish",
	     (struct piece[]){ { hs->msg1, hs->msg1_len }, { hs->msg2, hs->msg2_len },
			       { fin, SS_HDR } }, 3);
	if ((err = wire_frame_append(out, fin, sizeof(fin))) < 0)
		goto out;
	memset(sess, 0, sizeof(*sess));
	sess->tx = tx;
	sess->rx = rx;
	fill_session(hs, sess);
	err = 1;
out:
	sodium_memzero(ckx_rx, sizeof(ckx_rx));
	sodium_memzero(ckx_tx, sizeof(ckx_tx));
	sodium_memzero(k_i2r, sizeof(k_i2r));
	sodium_memzero(k_r2i, sizeof(k_r2i));
	sodium_memzero(&tx, sizeof(tx));
	sodium_memzero(&rx, sizeof(rx));
	return err;
}

int wire_hs_step(struct wire_hs *hs, const uint8_t *frame, size_t len, struct buf *out,
		 struct wire_session *sess)
{
	int rc;

	if (hs->state == HS_DONE || hs->state == HS_FAILED)
		return -EINVAL;
	if (len > WIRE_HELLO_MAX)
		return fail(hs, -EMSGSIZE);
	switch (hs->state) {
	case HS_R_WAIT_HELLO:
		rc = on_hello_i(hs, frame, len, out);
		break;
	case HS_R_WAIT_FINISH:
		rc = on_finish(hs, frame, len, sess);
		break;
	case HS_I_WAIT_HELLO:
		rc = on_hello_r(hs, frame, len, out, sess);
		break;
	default:
		return -EINVAL;
	}
	if (rc < 0)
		return fail(hs, rc);
	if (rc == 1) {
		wipe_secrets(hs);
		hs->state = HS_DONE;
	}
	return rc;
}

const char *wire_hs_peer_id(const struct wire_hs *hs)
{
	return hs->peer_id;
}

void wire_hs_peer_version(const struct wire_hs *hs, unsigned *major, unsigned *minor)
{
	*major = hs->peer_major;
	*minor = hs->peer_minor;
}

void wire_hs_close(struct wire_hs *hs)
{
	if (hs)
		sodium_memzero(hs, sizeof(*hs));
}

int wire_seal(struct wire_session *s, const void *msg, size_t len, struct buf *out)
{
	size_t clen = len + WIRE_SEAL_OVERHEAD;
	unsigned long long written;
	int err;

	if (len > WIRE_FRAME_MAX - WIRE_SEAL_OVERHEAD)
		return -EMSGSIZE;
	if ((err = buf_reserve(out, WIRE_FRAME_HDR + clen)) < 0)
		return err;
	if ((err = wire_frame_header((uint8_t *)out->data + out->len, clen)) < 0)
		return err;
	crypto_secretstream_xchacha20poly1305_push(&s->tx,
		(uint8_t *)out->data + out->len + WIRE_FRAME_HDR, &written, msg, len, NULL, 0,
		crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
	out->len += WIRE_FRAME_HDR + (size_t)written;
	out->data[out->len] = '\0';
	return 0;
}

int wire_open(struct wire_session *s, const uint8_t *frame, size_t len, struct buf *plain)
{
	unsigned long long mlen;
	unsigned char tag;
	int err;

	buf_reset(plain);
	if (s->broken)
		return -EBADMSG;
	if (len < WIRE_SEAL_OVERHEAD || len > WIRE_FRAME_MAX) {
		s->broken = true;
		return -EBADMSG;
	}
	if ((err = buf_reserve(plain, len - WIRE_SEAL_OVERHEAD)) < 0)
		return err;
	if (crypto_secretstream_xchacha20poly1305_pull(&s->rx, (uint8_t *)plain->data, &mlen,
						       &tag, frame, len, NULL, 0) != 0 ||
	    tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) {
		s->broken = true;
		buf_reset(plain);
		return -EBADMSG;
	}
	plain->len = (size_t)mlen;
	plain->data[plain->len] = '\0';
	return 0;
}

void wire_session_close(struct wire_session *s)
{
	if (s)
		sodium_memzero(s, sizeof(*s));
}
