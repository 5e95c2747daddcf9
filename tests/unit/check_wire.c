/* check_wire.c — framing, codec (golden vectors, hostile input), keyring, handshake, sealed
 * sessions and gossip packets. Links only the wire library. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <msgpack.h>

#include "wire/codec.h"
#include "wire/frame.h"
#include "wire/gossip_msg.h"
#include "wire/keyring.h"
#include "wire/seal.h"
#include "wire/wire.h"

/* ---- helpers ---- */

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
	size_t n = strlen(h) / 2;

	ck_assert_uint_le(n, cap);
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		ck_assert_int_eq(sscanf(h + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
	return n;
}

static char *tohex(const void *p, size_t n)
{
	static char s[8192];

	ck_assert_uint_lt(2 * n, sizeof(s));
	for (size_t i = 0; i < n; i++)
		sprintf(s + 2 * i, "%02x", ((const uint8_t *)p)[i]);
	s[2 * n] = '\0';
	return s;
}

/* Copies p to the very end of a readable mapping followed by an inaccessible page, so any
 * read past the end faults (picohttpparser's trick). Free with guard_free. */
static uint8_t *guard_copy(const void *p, size_t n, void **map, size_t *maplen)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), data = (n + pg - 1) / pg * pg;
	uint8_t *m;

	if (data == 0)
		data = pg;
	*maplen = data + pg;
	m = mmap(NULL, *maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);
	ck_assert_int_eq(mprotect(m + data, pg, PROT_NONE), 0);
	*map = m;
	if (n)
		memcpy(m + data - n, p, n);
	return m + data - n;
}

static void guard_free(void *map, size_t maplen)
{
	munmap(map, maplen);
}

/* msgpack-c's own unpacker must read our encoding as exactly one object. */
static void assert_msgpack_one(const uint8_t *p, size_t n)
{
	msgpack_unpacked u;
	size_t off = 0;

	msgpack_unpacked_init(&u);
	ck_assert_int_eq(msgpack_unpack_next(&u, (const char *)p, n, &off), MSGPACK_UNPACK_SUCCESS);
	ck_assert_uint_eq(off, n);
	msgpack_unpacked_destroy(&u);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void setup(void)
{
	ck_assert_int_eq(wire_init(), 0);
}

/* ---- fixtures and golden vectors ---- */

static const struct wire_check g_checks[2] = {
	{ .id = 1, .key = (const uint8_t *)"k1", .key_len = 2, .limit = { 60, 2000, 1000 },
	  .amount = { 1, 150, 200 }, .hops = 0 },
	{ .id = 0x1122334455667788ull, .key = (const uint8_t *)"test_key_2", .key_len = 10,
	  .limit = { UINT64_MAX, UINT64_MAX, UINT64_MAX }, .amount = { 1, 70000, 0 }, .hops = 1 },
};
static const struct wire_check_reply g_replies[2] = {
	{ .id = 1, .status = WIRE_STATUS_DENIED, .denied_dim = 1, .limit = { 60, 2000, 1000 },
	  .used = { 3, 1900, 0 }, .remaining = { 57, 100, 1000 }, .reset_ms = { 59000, 58000, 0 },
	  .retry_after_ms = 42000 },
	{ .id = 2, .status = WIRE_STATUS_ALLOWED, .denied_dim = -1, .limit = { 60, 2000, 1000 },
	  .used = { 3, 1900, 0 }, .remaining = { 56, 0, 800 },
	  .reset_ms = { 60000, 60000, 60000 }, .bucket = 1234567 },
};
static const struct wire_adjust g_adjust = { .key = (const uint8_t *)"k1", .key_len = 2,
					     .bucket = 1234567, .delta = { 0, -50, 300 } };
static const struct wire_key_state g_full = {
	.key = (const uint8_t *)"k1", .key_len = 2, .flags = WIRE_STATE_FULL, .head = 1000,
	.nslots = 2, .slots = { { 1000, { 1, 100, 50 } }, { 990, { 2, 0, 7 } } } };
static const struct wire_key_state g_delta = {
	.key = (const uint8_t *)"k1", .key_len = 2, .flags = 0, .head = 70, .nslots = 1,
	.slots = { { 70, { 0, -20, 5 } } } };
static const struct wire_member g_member = { .id = "node-a", .host = "10.0.0.1",
	.gossip_port = 7946, .peer_port = 7947, .http_port = 8000, .incarnation = 3,
	.state = WIRE_MEMBER_ALIVE };

enum { G_CHECK, G_REPLY, G_ADJUST, G_REPLICATE, G_HANDOFF, G_PING, G_PONG, G_N };

static struct wire_msg golden_msg(int i)
{
	switch (i) {
	case G_CHECK:
		return (struct wire_msg){ .type = WIRE_MSG_CHECK, .n = 2,
					  .checks = (struct wire_check *)g_checks };
	case G_REPLY:
		return (struct wire_msg){ .type = WIRE_MSG_CHECK_REPLY, .n = 2,
					  .replies = (struct wire_check_reply *)g_replies };
	case G_ADJUST:
		return (struct wire_msg){ .type = WIRE_MSG_ADJUST, .n = 1,
					  .adjusts = (struct wire_adjust *)&g_adjust };
	case G_REPLICATE:
		return (struct wire_msg){ .type = WIRE_MSG_REPLICATE, .n = 1, .now_ms = 1000500,
					  .states = (struct wire_key_state *)&g_full };
	case G_HANDOFF:
		return (struct wire_msg){ .type = WIRE_MSG_HANDOFF, .n = 1, .now_ms = 70001,
					  .flags = WIRE_HANDOFF_OWNER,
					  .states = (struct wire_key_state *)&g_delta };
	case G_PING:
		return (struct wire_msg){ .type = WIRE_MSG_PING, .nonce = 7 };
	default:
		return (struct wire_msg){ .type = WIRE_MSG_PONG, .nonce = 0xdeadbeefcafeull };
	}
}

/* The exact bytes of each fixture; docs/PROTOCOL.md walks through the first. Changing any of
 * these is a protocol change. */
static const char *const golden_hex[G_N] = {
	"930101929501c4026b31933ccd07d0cd03e89301cc96ccc80095cf1122334455667788c40a746573745f"
	"6b65795f3293cfffffffffffffffffcfffffffffffffffffcfffffffffffffffff9301ce000111700001",
	"930102929a010101c2933ccd07d0cd03e89303cd076c00933964cd03e893cde678cde29000cda410009a"
	"0200ffc2933ccd07d0cd03e89303cd076c00933800cd032093cdea60cdea60cdea6000ce0012d687",
	"9301039193c4026b31ce0012d6879300d0cecd012c",
	"93010493ce000f4434009194c4026b3101cd03e89294cd03e801643294cd03de020007",
	"93010593ce00011171019194c4026b31004691944600ec05",
	"93010607",
	"930107cf0000deadbeefcafe",
};
static const char golden_gossip_hex[] =
	"94012aa66e6f64652d629197a66e6f64652d61a831302e302e302e31cd1f0acd1f0bcd1f400300";

static void assert_key(const uint8_t *k, size_t n, const uint8_t *want, size_t wn)
{
	ck_assert_uint_eq(n, wn);
	ck_assert_mem_eq(k, want, n);
}

static void assert_state_eq(const struct wire_key_state *a, const struct wire_key_state *b)
{
	assert_key(a->key, a->key_len, b->key, b->key_len);
	ck_assert_uint_eq(a->flags, b->flags);
	ck_assert_uint_eq(a->head, b->head);
	ck_assert_uint_eq(a->nslots, b->nslots);
	ck_assert_mem_eq(a->slots, b->slots, a->nslots * sizeof(a->slots[0]));
}

/* Field-by-field equality of two messages of the same shape. */
static void assert_msg_eq(const struct wire_msg *a, const struct wire_msg *b)
{
	ck_assert_uint_eq(a->type, b->type);
	ck_assert_uint_eq(a->n, b->n);
	for (size_t i = 0; i < a->n; i++) {
		switch (a->type) {
		case WIRE_MSG_CHECK: {
			const struct wire_check *x = &a->checks[i], *y = &b->checks[i];

			ck_assert_uint_eq(x->id, y->id);
			assert_key(x->key, x->key_len, y->key, y->key_len);
			ck_assert_mem_eq(x->limit, y->limit, sizeof(x->limit));
			ck_assert_mem_eq(x->amount, y->amount, sizeof(x->amount));
			ck_assert_uint_eq(x->hops, y->hops);
			break;
		}
		case WIRE_MSG_CHECK_REPLY:
			ck_assert_mem_eq(&a->replies[i], &b->replies[i], sizeof(a->replies[i]));
			break;
		case WIRE_MSG_ADJUST:
			assert_key(a->adjusts[i].key, a->adjusts[i].key_len, b->adjusts[i].key,
				   b->adjusts[i].key_len);
			ck_assert_uint_eq(a->adjusts[i].bucket, b->adjusts[i].bucket);
			ck_assert_mem_eq(a->adjusts[i].delta, b->adjusts[i].delta,
					 sizeof(a->adjusts[i].delta));
			break;
		default:
			assert_state_eq(&a->states[i], &b->states[i]);
		}
	}
	ck_assert_uint_eq(a->now_ms, b->now_ms);
	ck_assert_uint_eq(a->flags, b->flags);
	ck_assert_uint_eq(a->nonce, b->nonce);
}

/* ---- framing ---- */

START_TEST(test_frame_roundtrip_chunks)
{
	struct wire_frame_reader r;
	struct buf b;
	static uint8_t big[70000];  /* above the 64 KiB the reader keeps between frames */
	const size_t sizes[] = { 1, 3, 100, sizeof(big), 4 };
	size_t steps[] = { 1, 2, 3, 5, 7, 13, 104, 4096, 65536, 0 };
	size_t got = 0;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	buf_init(&b);
	for (size_t i = 0; i < 5; i++)
		ck_assert_int_eq(wire_frame_append(&b, big, sizes[i]), 0);
	steps[9] = b.len;
	/* Byte by byte, odd sizes, and all at once. */
	for (size_t si = 0; si < 10; si++) {
		size_t step = steps[si];
		const uint8_t *p = (const uint8_t *)b.data;
		size_t left = b.len, used, flen;
		const uint8_t *f;
		int rc;

		wire_frame_reader_init(&r, WIRE_FRAME_MAX);
		got = 0;
		while (left > 0) {
			size_t chunk = left < step ? left : step;

			while (chunk > 0) {
				rc = wire_frame_read(&r, p, chunk, &used, &f, &flen);
				ck_assert_int_ge(rc, 0);
				ck_assert_uint_le(used, chunk);
				p += used, left -= used, chunk -= used;
				if (rc == 1) {
					ck_assert_uint_eq(flen, sizes[got]);
					ck_assert_mem_eq(f, big, flen);
					got++;
				} else {
					ck_assert_uint_eq(chunk, 0);
				}
			}
		}
		ck_assert_uint_eq(got, 5);
		wire_frame_reader_close(&r);
	}
	buf_close(&b);
}
END_TEST

START_TEST(test_frame_limits)
{
	struct wire_frame_reader r;
	const uint8_t zero[4] = { 0, 0, 0, 0 }, big[4] = { 0, 0x10, 0, 1 };
	const uint8_t ok[5] = { 0, 0, 0, 1, 9 };
	const uint8_t hello_sized[4] = { 0, 0, 2, 1 };
	const uint8_t *f;
	size_t used, flen;
	struct buf b;

	wire_frame_reader_init(&r, WIRE_FRAME_MAX);
	ck_assert_int_eq(wire_frame_read(&r, zero, 4, &used, &f, &flen), -EPROTO);
	/* Errors are sticky: the stream cannot be trusted after one. */
	ck_assert_int_eq(wire_frame_read(&r, ok, 5, &used, &f, &flen), -EPROTO);
	wire_frame_reader_close(&r);

	wire_frame_reader_init(&r, WIRE_FRAME_MAX);
	ck_assert_int_eq(wire_frame_read(&r, big, 3, &used, &f, &flen), 0);
	ck_assert_int_eq(wire_frame_read(&r, big + 3, 1, &used, &f, &flen), -EMSGSIZE);
	wire_frame_reader_close(&r);

	/* During the handshake the maximum is small; afterwards it is raised. */
	wire_frame_reader_init(&r, WIRE_HELLO_MAX);
	ck_assert_int_eq(wire_frame_read(&r, hello_sized, 4, &used, &f, &flen), -EMSGSIZE);
	wire_frame_reader_close(&r);
	wire_frame_reader_init(&r, WIRE_HELLO_MAX);
	ck_assert_int_eq(wire_frame_read(&r, ok, 5, &used, &f, &flen), 1);
	ck_assert_uint_eq(flen, 1);
	ck_assert_uint_eq(f[0], 9);
	wire_frame_reader_set_max(&r, WIRE_FRAME_MAX);
	ck_assert_int_eq(wire_frame_read(&r, hello_sized, 4, &used, &f, &flen), 0);
	wire_frame_reader_close(&r);

	buf_init(&b);
	ck_assert_int_eq(wire_frame_append(&b, ok, 0), -EMSGSIZE);
	ck_assert_int_eq(wire_frame_append(&b, ok, WIRE_FRAME_MAX + 1), -EMSGSIZE);
	ck_assert_uint_eq(b.len, 0);
	buf_close(&b);
}
END_TEST

/* ---- codec ---- */

START_TEST(test_codec_golden)
{
	struct wire_msg m = golden_msg(_i), d;
	uint8_t want[512];
	size_t n = unhex(golden_hex[_i], want, sizeof(want));
	struct buf b, b2;

	buf_init(&b);
	buf_init(&b2);
	ck_assert_int_eq(wire_encode(&m, &b), 0);
	ck_assert_str_eq(tohex(b.data, b.len), golden_hex[_i]);
	assert_msgpack_one(want, n);
	ck_assert_int_eq(wire_decode(want, n, &d), 0);
	assert_msg_eq(&d, &m);
	ck_assert_int_eq(wire_encode(&d, &b2), 0);
	ck_assert_mem_eq(b2.data, want, n);
	wire_msg_close(&d);
	buf_close(&b);
	buf_close(&b2);
}
END_TEST

/* Every proper prefix is an error and no read goes past the end. */
START_TEST(test_codec_truncated)
{
	uint8_t want[512];
	size_t n = unhex(golden_hex[_i], want, sizeof(want)), maplen;
	struct wire_msg d;
	void *map;

	for (size_t len = 0; len <= n; len++) {
		uint8_t *p = guard_copy(want, len, &map, &maplen);
		int rc = wire_decode(p, len, &d);

		if (len < n)
			ck_assert_int_lt(rc, 0);
		else
			ck_assert_int_eq(rc, 0);
		wire_msg_close(&d);
		guard_free(map, maplen);
	}
}
END_TEST

/* Builds a message from msgpack parts with the packer, for hostile cases. */
struct raw {
	msgpack_sbuffer sb;
	msgpack_packer pk;
};

static void raw_init(struct raw *r)
{
	msgpack_sbuffer_init(&r->sb);
	msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
}

static int raw_decode(struct raw *r)
{
	struct wire_msg d;
	int rc = wire_decode((const uint8_t *)r->sb.data, r->sb.size, &d);

	wire_msg_close(&d);
	msgpack_sbuffer_destroy(&r->sb);
	return rc;
}

static void raw_dims(struct raw *r, uint64_t v)
{
	msgpack_pack_array(&r->pk, 3);
	for (int i = 0; i < 3; i++)
		msgpack_pack_uint64(&r->pk, v);
}

/* [1, CHECK, [[id, key, limits, amounts, hops]]] with one thing made wrong (-1: none). */
static int check_variant(int bad)
{
	struct raw r;

	raw_init(&r);
	msgpack_pack_array(&r.pk, 3);
	msgpack_pack_uint8(&r.pk, 1);
	msgpack_pack_uint8(&r.pk, WIRE_MSG_CHECK);
	if (bad == 9) {
		msgpack_pack_nil(&r.pk);
		return raw_decode(&r);
	}
	msgpack_pack_array(&r.pk, 1);
	if (bad == 8) {
		msgpack_pack_map(&r.pk, 0);
		return raw_decode(&r);
	}
	msgpack_pack_array(&r.pk, 5);
	if (bad == 0)
		msgpack_pack_str(&r.pk, 1), msgpack_pack_str_body(&r.pk, "1", 1);
	else if (bad == 1)
		msgpack_pack_int64(&r.pk, -1);
	else
		msgpack_pack_uint64(&r.pk, 1);
	if (bad == 2)
		msgpack_pack_str(&r.pk, 2), msgpack_pack_str_body(&r.pk, "k1", 2);
	else
		msgpack_pack_bin(&r.pk, 2), msgpack_pack_bin_body(&r.pk, "k1", 2);
	if (bad == 3) {
		msgpack_pack_array(&r.pk, 2);
		msgpack_pack_uint8(&r.pk, 1);
		msgpack_pack_uint8(&r.pk, 1);
	} else {
		raw_dims(&r, 5);
	}
	if (bad == 4) {
		msgpack_pack_double(&r.pk, 1.0);
	} else if (bad == 5) {
		msgpack_pack_array(&r.pk, 3);
		msgpack_pack_uint8(&r.pk, 1);
		msgpack_pack_nil(&r.pk);
		msgpack_pack_uint8(&r.pk, 1);
	} else {
		raw_dims(&r, 1);
	}
	if (bad == 6)
		msgpack_pack_uint16(&r.pk, 256);
	else if (bad == 7)
		msgpack_pack_true(&r.pk);
	else
		msgpack_pack_uint8(&r.pk, 3);
	return raw_decode(&r);
}

START_TEST(test_codec_hostile)
{
	ck_assert_int_eq(check_variant(-1), 0);   /* the builder itself is right */
	for (int bad = 0; bad <= 9; bad++)
		ck_assert_int_eq(check_variant(bad), -EPROTO);
}
END_TEST

/* A valid CHECK built by hand, to vary one thing at a time. */
static int check_raw(size_t klen, uint32_t nitems, bool extra_field, bool trailing,
		     uint8_t version, uint8_t type)
{
	static const uint8_t key[300];
	struct raw r;

	raw_init(&r);
	msgpack_pack_array(&r.pk, 3);
	msgpack_pack_uint8(&r.pk, version);
	msgpack_pack_uint8(&r.pk, type);
	msgpack_pack_array(&r.pk, nitems);
	for (uint32_t i = 0; i < nitems; i++) {
		msgpack_pack_array(&r.pk, extra_field ? 6 : 5);
		msgpack_pack_uint64(&r.pk, i);
		msgpack_pack_bin(&r.pk, klen);
		msgpack_pack_bin_body(&r.pk, key, klen);
		raw_dims(&r, 5);
		raw_dims(&r, 1);
		msgpack_pack_uint8(&r.pk, 0);
		if (extra_field) {
			/* A newer minor version's field: a nested map, skipped. */
			msgpack_pack_map(&r.pk, 1);
			msgpack_pack_str(&r.pk, 1);
			msgpack_pack_str_body(&r.pk, "x", 1);
			msgpack_pack_array(&r.pk, 2);
			msgpack_pack_nil(&r.pk);
			msgpack_pack_double(&r.pk, 2.5);
		}
	}
	if (trailing)
		msgpack_pack_nil(&r.pk);
	return raw_decode(&r);
}

START_TEST(test_codec_limits)
{
	ck_assert_int_eq(check_raw(2, 1, false, false, 1, WIRE_MSG_CHECK), 0);
	ck_assert_int_eq(check_raw(WIRE_KEY_MAX, 1, false, false, 1, WIRE_MSG_CHECK), 0);
	ck_assert_int_eq(check_raw(WIRE_KEY_MAX + 1, 1, false, false, 1, WIRE_MSG_CHECK), -EPROTO);
	ck_assert_int_eq(check_raw(0, 1, false, false, 1, WIRE_MSG_CHECK), -EPROTO);
	ck_assert_int_eq(check_raw(1, WIRE_CHECK_BATCH_MAX, false, false, 1, WIRE_MSG_CHECK), 0);
	ck_assert_int_eq(check_raw(1, WIRE_CHECK_BATCH_MAX + 1, false, false, 1, WIRE_MSG_CHECK),
			 -EMSGSIZE);
	ck_assert_int_eq(check_raw(2, 2, true, false, 1, WIRE_MSG_CHECK), 0);
	ck_assert_int_eq(check_raw(2, 1, false, true, 1, WIRE_MSG_CHECK), -EPROTO);
	ck_assert_int_eq(check_raw(2, 1, false, false, 2, WIRE_MSG_CHECK), -EPROTONOSUPPORT);
	ck_assert_int_eq(check_raw(2, 1, false, false, 1, 99), -ENOMSG);
}
END_TEST

/* An array header claiming 2^32-1 items in a tiny input is rejected before any allocation. */
START_TEST(test_codec_huge_counts)
{
	const uint8_t huge[] = { 0x93, 0x01, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x90 };
	const uint8_t deep[] = { 0x93, 0x01, 0x07, 0x00, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
				 0x91, 0x91, 0x91, 0x91, 0x91, 0xc0 };
	const uint8_t extra_deep[] = { 0x94, 0x01, 0x07, 0x00, 0x91, 0x91, 0x91, 0x91, 0x91,
				       0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0xc0 };
	const uint8_t extra_ok[] = { 0x94, 0x01, 0x07, 0x05, 0x92, 0x91, 0xc0, 0xa1, 'z' };
	/* Extension fields of every other type: ext8, fixext1, uint8, float32, map16. */
	const uint8_t extra_types[] = { 0x98, 0x01, 0x07, 0x05, 0xc7, 0x02, 0x01, 0xaa, 0xbb,
					0xd4, 0x01, 0x00, 0xcc, 0xff, 0xca, 0, 0, 0, 0,
					0xde, 0x00, 0x01, 0xc2, 0xc3 };
	const uint8_t extra_c1[] = { 0x94, 0x01, 0x07, 0x05, 0xc1 };
	const uint8_t extra_ext_short[] = { 0x94, 0x01, 0x07, 0x05, 0xc8, 0x00, 0x09, 0x01 };
	struct wire_msg d;

	ck_assert_int_eq(wire_decode(huge, sizeof(huge), &d), -EPROTO);
	ck_assert_int_eq(wire_decode(deep, sizeof(deep), &d), -EPROTO);
	ck_assert_int_eq(wire_decode(extra_deep, sizeof(extra_deep), &d), -EPROTO);
	ck_assert_int_eq(wire_decode(extra_ok, sizeof(extra_ok), &d), 0);
	ck_assert_uint_eq(d.type, WIRE_MSG_PONG);
	ck_assert_uint_eq(d.nonce, 5);
	ck_assert_int_eq(wire_decode(extra_types, sizeof(extra_types), &d), 0);
	ck_assert_int_eq(wire_decode(extra_c1, sizeof(extra_c1), &d), -EPROTO);
	ck_assert_int_eq(wire_decode(extra_ext_short, sizeof(extra_ext_short), &d), -EPROTO);
	ck_assert_int_eq(wire_decode(NULL, 0, &d), -EPROTO);
}
END_TEST

/* Integers may come in any width as long as the value fits; other types never coerce. */
START_TEST(test_codec_int_widths)
{
	const uint8_t wide[] = { 0x93, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1, 0xd0, 0x06, 0xd3, 0, 0, 0, 0,
				 0, 0, 0, 9 };
	const uint8_t neg[] = { 0x93, 0x01, 0x06, 0xff };
	const uint8_t big_type[] = { 0x93, 0x01, 0xcd, 0x01, 0x06, 0x00 };
	const uint8_t bool_nonce[] = { 0x93, 0x01, 0x06, 0xc3 };
	struct wire_msg d;

	ck_assert_int_eq(wire_decode(wide, sizeof(wide), &d), 0);
	ck_assert_uint_eq(d.type, WIRE_MSG_PING);
	ck_assert_uint_eq(d.nonce, 9);
	ck_assert_int_eq(wire_decode(neg, sizeof(neg), &d), -EPROTO);
	ck_assert_int_eq(wire_decode(big_type, sizeof(big_type), &d), -EPROTO);
	ck_assert_int_eq(wire_decode(bool_nonce, sizeof(bool_nonce), &d), -EPROTO);
}
END_TEST

/* Extreme values round-trip exactly. */
START_TEST(test_codec_extremes)
{
	static uint8_t key[WIRE_KEY_MAX];
	static struct wire_key_state st;
	struct wire_check_reply v = { .id = UINT64_MAX, .status = 255, .denied_dim = 2,
				      .never_fits = true, .retry_after_ms = UINT64_MAX,
				      .bucket = UINT32_MAX };
	struct wire_adjust a = { .key = key, .key_len = sizeof(key), .bucket = UINT32_MAX,
				 .delta = { INT64_MIN, INT64_MAX, -1 } };
	struct wire_msg m, d;
	struct buf b;

	memset(key, 0xab, sizeof(key));
	for (int i = 0; i < WIRE_DIMS; i++)
		v.limit[i] = v.used[i] = v.remaining[i] = v.reset_ms[i] = UINT64_MAX - (uint64_t)i;
	st = (struct wire_key_state){ .key = key, .key_len = sizeof(key), .flags = 0xff,
				      .head = UINT32_MAX, .nslots = WIRE_SLOTS };
	for (uint32_t i = 0; i < WIRE_SLOTS; i++) {
		st.slots[i].bucket = UINT32_MAX - i;
		st.slots[i].count[0] = -(int64_t)UINT32_MAX;
		st.slots[i].count[1] = UINT32_MAX;
		st.slots[i].count[2] = i;
	}
	buf_init(&b);
	m = (struct wire_msg){ .type = WIRE_MSG_CHECK_REPLY, .n = 1, .replies = &v };
	ck_assert_int_eq(wire_encode(&m, &b), 0);
	ck_assert_int_eq(wire_decode((uint8_t *)b.data, b.len, &d), 0);
	assert_msg_eq(&d, &m);
	wire_msg_close(&d);
	buf_reset(&b);
	m = (struct wire_msg){ .type = WIRE_MSG_ADJUST, .n = 1, .adjusts = &a };
	ck_assert_int_eq(wire_encode(&m, &b), 0);
	ck_assert_int_eq(wire_decode((uint8_t *)b.data, b.len, &d), 0);
	assert_msg_eq(&d, &m);
	wire_msg_close(&d);
	buf_reset(&b);
	/* A delta (flag bit 0 clear, other bits unknown and kept) with all 61 slots. */
	st.flags = 0xfe;
	m = (struct wire_msg){ .type = WIRE_MSG_HANDOFF, .n = 1, .states = &st,
			       .now_ms = UINT64_MAX, .flags = 0xff };
	ck_assert_int_eq(wire_encode(&m, &b), 0);
	ck_assert_int_eq(wire_decode((uint8_t *)b.data, b.len, &d), 0);
	assert_msg_eq(&d, &m);
	wire_msg_close(&d);
	/* An empty batch is legal. */
	buf_reset(&b);
	m = (struct wire_msg){ .type = WIRE_MSG_CHECK };
	ck_assert_int_eq(wire_encode(&m, &b), 0);
	ck_assert_int_eq(wire_decode((uint8_t *)b.data, b.len, &d), 0);
	ck_assert_uint_eq(d.n, 0);
	ck_assert_ptr_null(d.checks);
	buf_close(&b);
}
END_TEST

START_TEST(test_codec_state_rules)
{
	struct wire_key_state st = g_full;
	struct wire_msg m = { .type = WIRE_MSG_REPLICATE, .n = 1, .states = &st };
	struct buf b;

	buf_init(&b);
	ck_assert_int_eq(wire_encode(&m, &b), 0);
	st.slots[1].bucket = 1000 - 61;         /* outside the window */
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	st.slots[1].bucket = 1000;              /* duplicate */
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	st.slots[1].bucket = 1001;              /* ahead of head */
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	st = g_full;
	st.slots[0].count[1] = -1;              /* negative in a full state */
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	st.flags = 0;                           /* fine as a delta */
	ck_assert_int_eq(wire_encode(&m, &b), 0);
	st.slots[0].count[1] = (int64_t)UINT32_MAX + 1;
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	st = g_full;
	st.nslots = WIRE_SLOTS + 1;
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	buf_close(&b);
}
END_TEST

START_TEST(test_codec_encode_rejects)
{
	struct wire_check c = g_checks[0];
	struct wire_check_reply v = g_replies[0];
	struct wire_msg m = { .type = WIRE_MSG_CHECK, .n = 1, .checks = &c };
	struct buf b;

	buf_init(&b);
	c.key_len = 0;
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	c.key_len = WIRE_KEY_MAX + 1;
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	c = g_checks[0];
	m.n = WIRE_CHECK_BATCH_MAX + 1;
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	m = (struct wire_msg){ .type = WIRE_MSG_CHECK_REPLY, .n = 1, .replies = &v };
	v.denied_dim = 3;
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	m.type = 42;
	ck_assert_int_eq(wire_encode(&m, &b), -EINVAL);
	ck_assert_uint_eq(b.len, 0);
	buf_close(&b);
}
END_TEST

START_TEST(test_codec_from_dense)
{
	uint32_t count[WIRE_SLOTS][WIRE_DIMS] = { { 0 } };
	struct wire_key_state st = { .key = (const uint8_t *)"k", .key_len = 1 };
	struct wire_msg m = { .type = WIRE_MSG_REPLICATE, .n = 1, .states = &st }, d;
	struct buf b;

	count[100 % WIRE_SLOTS][0] = 1;      /* the head bucket */
	count[40 % WIRE_SLOTS][2] = 9;       /* the oldest bucket still in the window */
	wire_state_from_dense(&st, 100, (const uint32_t (*)[WIRE_DIMS])count);
	ck_assert_uint_eq(st.nslots, 2);
	ck_assert_uint_eq(st.slots[0].bucket, 100);
	ck_assert_int_eq(st.slots[0].count[0], 1);
	ck_assert_uint_eq(st.slots[1].bucket, 40);
	ck_assert_int_eq(st.slots[1].count[2], 9);
	/* Early in the clock, slots beyond head stand for no bucket and are skipped. */
	wire_state_from_dense(&st, 3, (const uint32_t (*)[WIRE_DIMS])count);
	ck_assert_uint_eq(st.nslots, 0);
	count[2][1] = 4;
	wire_state_from_dense(&st, 3, (const uint32_t (*)[WIRE_DIMS])count);
	ck_assert_uint_eq(st.nslots, 1);
	ck_assert_uint_eq(st.slots[0].bucket, 2);
	st.flags = WIRE_STATE_FULL;
	buf_init(&b);
	ck_assert_int_eq(wire_encode(&m, &b), 0);
	ck_assert_int_eq(wire_decode((const uint8_t *)b.data, b.len, &d), 0);
	assert_msg_eq(&d, &m);
	wire_msg_close(&d);
	buf_close(&b);
}
END_TEST

/* Random mutations of the golden vectors: decoding never crashes, and whatever it accepts the
 * encoder accepts too and round-trips. Bounded: a fixed number of cases. */
START_TEST(test_codec_mutations)
{
	uint8_t base[512], cur[600];
	struct buf b;

	buf_init(&b);
	for (int iter = 0; iter < 30000; iter++) {
		int g = (int)(rng() % G_N);
		size_t n = unhex(golden_hex[g], base, sizeof(base)), len = n;
		struct wire_msg d, d2;
		int rc;

		memcpy(cur, base, n);
		for (int k = 1 + (int)(rng() % 4); k > 0; k--) {
			switch (rng() % 4) {
			case 0: cur[rng() % len] = (uint8_t)rng(); break;
			case 1: cur[rng() % len] ^= (uint8_t)(1u << (rng() % 8)); break;
			case 2: len = 1 + rng() % len; break;
			default:
				if (len < sizeof(cur))
					cur[len++] = (uint8_t)rng();
			}
		}
		rc = wire_decode(cur, len, &d);
		ck_assert_int_le(rc, 0);
		if (rc < 0)
			continue;
		buf_reset(&b);
		ck_assert_int_eq(wire_encode(&d, &b), 0);
		ck_assert_int_eq(wire_decode((const uint8_t *)b.data, b.len, &d2), 0);
		assert_msg_eq(&d, &d2);
		wire_msg_close(&d2);
		wire_msg_close(&d);
	}
	buf_close(&b);
}
END_TEST

/* ---- keyring ---- */

static void key_of(uint8_t key[WIRE_KEY_BYTES], uint8_t seed)
{
	for (int i = 0; i < WIRE_KEY_BYTES; i++)
		key[i] = (uint8_t)(seed + i);
}

static struct wire_keyring *ring_with(uint8_t seed)
{
	struct wire_keyring *r;
	uint8_t key[WIRE_KEY_BYTES];

	ck_assert_int_eq(wire_keyring_new(&r), 0);
	key_of(key, seed);
	ck_assert_int_eq(wire_keyring_add(r, key, NULL), 0);
	return r;
}

START_TEST(test_keyring)
{
	struct wire_keyring *r;
	uint8_t key[WIRE_KEY_BYTES], id[WIRE_KEY_ID_BYTES], id0[WIRE_KEY_ID_BYTES], p[8];
	char hex[17];

	/* The key id is part of the protocol: pinned. */
	key_of(key, 0);
	wire_key_id(key, id0);
	wire_key_id_hex(id0, hex);
	ck_assert_str_eq(hex, "6feb4f3872500ad7");

	ck_assert_int_eq(wire_keyring_new(&r), 0);
	ck_assert_int_eq(wire_keyring_primary(r, p), -ENOKEY);
	ck_assert_int_eq(wire_keyring_add(r, key, id), 0);
	ck_assert_mem_eq(id, id0, 8);
	ck_assert_int_eq(wire_keyring_add(r, key, NULL), -EEXIST);
	for (uint8_t s = 1; s < WIRE_KEYRING_MAX; s++) {
		key_of(key, s);
		ck_assert_int_eq(wire_keyring_add(r, key, NULL), 0);
	}
	key_of(key, 99);
	ck_assert_int_eq(wire_keyring_add(r, key, id), -ENOSPC);
	ck_assert_uint_eq(wire_keyring_count(r), WIRE_KEYRING_MAX);
	ck_assert_int_eq(wire_keyring_primary(r, p), 0);
	ck_assert_mem_eq(p, id0, 8);
	ck_assert_int_eq(wire_keyring_remove(r, id0), -EBUSY);
	ck_assert_int_eq(wire_keyring_set_primary(r, id), -ENOKEY);
	key_of(key, 2);
	wire_key_id(key, id);
	ck_assert_int_eq(wire_keyring_set_primary(r, id), 0);
	ck_assert_int_eq(wire_keyring_remove(r, id0), 0);
	ck_assert_int_eq(wire_keyring_remove(r, id0), -ENOKEY);
	ck_assert(!wire_keyring_has(r, id0));
	ck_assert_int_eq(wire_keyring_primary(r, p), 0);
	ck_assert_mem_eq(p, id, 8);    /* the primary survives removals before it */
	ck_assert_uint_eq(wire_keyring_count(r), WIRE_KEYRING_MAX - 1);
	wire_keyring_free(r);
	wire_keyring_free(NULL);
}
END_TEST

/* ---- handshake and sessions ---- */

/* The payload of the single frame in b, which is then emptied into the caller's copy. */
static size_t take_frame(struct buf *b, uint8_t *dst, size_t cap)
{
	size_t n;

	ck_assert_uint_ge(b->len, WIRE_FRAME_HDR + 1);
	n = ((size_t)(uint8_t)b->data[0] << 24) | ((size_t)(uint8_t)b->data[1] << 16) |
	    ((size_t)(uint8_t)b->data[2] << 8) | (uint8_t)b->data[3];
	ck_assert_uint_eq(n + WIRE_FRAME_HDR, b->len);
	ck_assert_uint_le(n, cap);
	memcpy(dst, b->data + WIRE_FRAME_HDR, n);
	buf_reset(b);
	return n;
}

struct hs_frames {
	uint8_t m1[WIRE_HELLO_MAX], m2[WIRE_HELLO_MAX], m3[WIRE_HELLO_MAX];
	size_t n1, n2, n3;
};

/* Runs a handshake between rings ri (initiator "node-i") and rr (responder "node-r"). Returns
 * 0 when both sides finished, else the first error; *who says which side failed. */
static int handshake(const struct wire_keyring *ri, const struct wire_keyring *rr,
		     struct wire_session *si, struct wire_session *sr, struct hs_frames *fr,
		     char *who)
{
	struct wire_hs hi, hr;
	struct hs_frames local;
	struct buf b;
	int rc;

	if (!fr)
		fr = &local;
	buf_init(&b);
	*who = 'i';
	if ((rc = wire_hs_init(&hi, ri, "node-i", true, &b)) < 0)
		goto out;
	fr->n1 = take_frame(&b, fr->m1, sizeof(fr->m1));
	*who = 'r';
	ck_assert_int_eq(wire_hs_init(&hr, rr, "node-r", false, &b), 0);
	ck_assert_uint_eq(b.len, 0);
	if ((rc = wire_hs_step(&hr, fr->m1, fr->n1, &b, sr)) < 0)
		goto out;
	ck_assert_int_eq(rc, 0);
	fr->n2 = take_frame(&b, fr->m2, sizeof(fr->m2));
	*who = 'i';
	if ((rc = wire_hs_step(&hi, fr->m2, fr->n2, &b, si)) < 0)
		goto out;
	ck_assert_int_eq(rc, 1);
	fr->n3 = take_frame(&b, fr->m3, sizeof(fr->m3));
	*who = 'r';
	if ((rc = wire_hs_step(&hr, fr->m3, fr->n3, &b, sr)) < 0)
		goto out;
	ck_assert_int_eq(rc, 1);
	ck_assert_uint_eq(b.len, 0);
	rc = 0;
out:
	wire_hs_close(&hi);
	wire_hs_close(&hr);
	buf_close(&b);
	return rc;
}

/* Seals msg on a and opens it on b. */
static int relay(struct wire_session *a, struct wire_session *b, const char *msg)
{
	struct buf w, plain;
	uint8_t f[256];
	size_t n;
	int rc;

	buf_init(&w);
	buf_init(&plain);
	ck_assert_int_eq(wire_seal(a, msg, strlen(msg), &w), 0);
	n = take_frame(&w, f, sizeof(f));
	ck_assert_uint_eq(n, strlen(msg) + WIRE_SEAL_OVERHEAD);
	rc = wire_open(b, f, n, &plain);
	if (rc == 0) {
		ck_assert_uint_eq(plain.len, strlen(msg));
		ck_assert_mem_eq(plain.data, msg, plain.len);
	}
	buf_close(&w);
	buf_close(&plain);
	return rc;
}

START_TEST(test_hs_success)
{
	struct wire_keyring *a = ring_with(1), *b = ring_with(1);
	struct wire_session si, sr;
	uint8_t id[8];
	char who;

	ck_assert_int_eq(handshake(a, b, &si, &sr, NULL, &who), 0);
	ck_assert_str_eq(si.peer_id, "node-r");
	ck_assert_str_eq(sr.peer_id, "node-i");
	ck_assert_uint_eq(si.minor, WIRE_VERSION_MINOR);
	ck_assert_int_eq(wire_keyring_primary(a, id), 0);
	ck_assert_mem_eq(si.key_id, id, 8);
	ck_assert_mem_eq(sr.key_id, id, 8);
	for (int i = 0; i < 50; i++) {
		ck_assert_int_eq(relay(&si, &sr, "check batch"), 0);
		ck_assert_int_eq(relay(&sr, &si, "reply batch"), 0);
	}
	/* The directions have distinct keys: a frame sealed i->r does not open on i's side. */
	ck_assert_int_eq(relay(&si, &si, "loop"), -EBADMSG);
	wire_session_close(&si);
	wire_session_close(&sr);
	wire_keyring_free(a);
	wire_keyring_free(b);
}
END_TEST

START_TEST(test_hs_wrong_key)
{
	struct wire_keyring *a = ring_with(1), *b = ring_with(2), *empty;
	struct wire_session si, sr;
	struct wire_hs hs;
	struct buf buf;
	char who;

	ck_assert_int_eq(handshake(a, b, &si, &sr, NULL, &who), -ENOKEY);
	ck_assert_int_eq(who, 'r');
	ck_assert_int_eq(wire_keyring_new(&empty), 0);
	buf_init(&buf);
	ck_assert_int_eq(wire_hs_init(&hs, empty, "node-i", true, &buf), -ENOKEY);
	ck_assert_int_eq(wire_hs_init(&hs, a, "bad id", true, &buf), -EINVAL);
	ck_assert_int_eq(wire_hs_init(&hs, a, "", true, &buf), -EINVAL);
	ck_assert_uint_eq(buf.len, 0);
	buf_close(&buf);
	wire_keyring_free(a);
	wire_keyring_free(b);
	wire_keyring_free(empty);
}
END_TEST

/* Changing any byte of any handshake frame makes the receiving side fail. */
START_TEST(test_hs_tamper)
{
	struct wire_keyring *a = ring_with(1), *b = ring_with(1);
	struct wire_session si, sr;
	struct hs_frames ref, t;
	struct buf out;
	char who;

	buf_init(&out);
	ck_assert_int_eq(handshake(a, b, &si, &sr, &ref, &who), 0);
	for (int which = 1; which <= 3; which++) {
		size_t n = which == 1 ? ref.n1 : which == 2 ? ref.n2 : ref.n3;

		for (size_t pos = 0; pos < n; pos++) {
			struct wire_hs hi, hr;
			int rc;

			ck_assert_int_eq(wire_hs_init(&hi, a, "node-i", true, &out), 0);
			t.n1 = take_frame(&out, t.m1, sizeof(t.m1));
			ck_assert_int_eq(wire_hs_init(&hr, b, "node-r", false, &out), 0);
			if (which == 1) {
				t.m1[pos] ^= 0x20;
				rc = wire_hs_step(&hr, t.m1, t.n1, &out, &sr);
			} else {
				ck_assert_int_eq(wire_hs_step(&hr, t.m1, t.n1, &out, &sr), 0);
				t.n2 = take_frame(&out, t.m2, sizeof(t.m2));
				ck_assert_uint_eq(t.n2, ref.n2);
				if (which == 2) {
					t.m2[pos] ^= 0x20;
					rc = wire_hs_step(&hi, t.m2, t.n2, &out, &si);
				} else {
					rc = wire_hs_step(&hi, t.m2, t.n2, &out, &si);
					ck_assert_int_eq(rc, 1);
					t.n3 = take_frame(&out, t.m3, sizeof(t.m3));
					t.m3[pos] ^= 0x20;
					rc = wire_hs_step(&hr, t.m3, t.n3, &out, &sr);
				}
			}
			ck_assert_int_lt(rc, 0);
			buf_reset(&out);
			wire_hs_close(&hi);
			wire_hs_close(&hr);
		}
	}
	buf_close(&out);
	wire_keyring_free(a);
	wire_keyring_free(b);
}
END_TEST

/* Frames recorded from one connection cannot complete another. */
START_TEST(test_hs_replay)
{
	struct wire_keyring *a = ring_with(1), *b = ring_with(1);
	struct wire_session si, sr;
	struct hs_frames old, live;
	struct wire_hs hi, hr;
	struct buf out;
	char who;

	buf_init(&out);
	ck_assert_int_eq(handshake(a, b, &si, &sr, &old, &who), 0);
	/* A replayed HELLO_I gets an answer, but the replayed FINISH does not verify. */
	ck_assert_int_eq(wire_hs_init(&hr, b, "node-r", false, &out), 0);
	ck_assert_int_eq(wire_hs_step(&hr, old.m1, old.n1, &out, &sr), 0);
	ck_assert_str_eq(wire_hs_peer_id(&hr), "node-i");
	buf_reset(&out);
	ck_assert_int_eq(wire_hs_step(&hr, old.m3, old.n3, &out, &sr), -EACCES);
	ck_assert_int_eq(wire_hs_step(&hr, old.m3, old.n3, &out, &sr), -EINVAL);
	wire_hs_close(&hr);
	/* A replayed HELLO_R does not answer a fresh HELLO_I. */
	ck_assert_int_eq(wire_hs_init(&hi, a, "node-i", true, &out), 0);
	live.n1 = take_frame(&out, live.m1, sizeof(live.m1));
	ck_assert_int_eq(wire_hs_step(&hi, old.m2, old.n2, &out, &si), -EACCES);
	ck_assert_uint_eq(out.len, 0);
	wire_hs_close(&hi);
	/* A hello reflected back to its sender is refused. */
	ck_assert_int_eq(wire_hs_init(&hi, a, "node-i", true, &out), 0);
	live.n1 = take_frame(&out, live.m1, sizeof(live.m1));
	ck_assert_int_eq(wire_hs_step(&hi, live.m1, live.n1, &out, &si), -EPROTO);
	wire_hs_close(&hi);
	buf_close(&out);
	wire_keyring_free(a);
	wire_keyring_free(b);
}
END_TEST

/* A hello from another major version is refused with its own code, before its MAC. */
START_TEST(test_hs_version)
{
	struct wire_keyring *a = ring_with(1);
	struct wire_session s;
	struct wire_hs hi, hr;
	uint8_t m1[WIRE_HELLO_MAX], big[WIRE_HELLO_MAX + 1] = { 0 };
	unsigned major, minor;
	struct buf out;
	size_t n;

	buf_init(&out);
	ck_assert_int_eq(wire_hs_init(&hi, a, "node-i", true, &out), 0);
	n = take_frame(&out, m1, sizeof(m1));
	/* Layout: fixarray(8), fixstr(8) "llmlimit", major. */
	ck_assert_uint_eq(m1[0], 0x98);
	ck_assert_uint_eq(m1[1], 0xa8);
	ck_assert_mem_eq(m1 + 2, "llmlimit", 8);
	ck_assert_uint_eq(m1[10], WIRE_VERSION_MAJOR);
	assert_msgpack_one(m1, n - 32);
	m1[10] = WIRE_VERSION_MAJOR + 1;
	ck_assert_int_eq(wire_hs_init(&hr, a, "node-r", false, &out), 0);
	ck_assert_int_eq(wire_hs_step(&hr, m1, n, &out, &s), -EPROTONOSUPPORT);
	wire_hs_peer_version(&hr, &major, &minor);
	ck_assert_uint_eq(major, WIRE_VERSION_MAJOR + 1);
	ck_assert_str_eq(wire_hs_peer_id(&hr), "");   /* nothing past the version was read */
	ck_assert_uint_eq(out.len, 0);                /* and nothing is answered */
	wire_hs_close(&hr);
	ck_assert_int_eq(wire_hs_init(&hr, a, "node-r", false, &out), 0);
	ck_assert_int_eq(wire_hs_step(&hr, big, sizeof(big), &out, &s), -EMSGSIZE);
	wire_hs_close(&hr);
	ck_assert_int_eq(wire_hs_init(&hr, a, "node-r", false, &out), 0);
	ck_assert_int_eq(wire_hs_step(&hr, big, 40, &out, &s), -EPROTO);
	wire_hs_close(&hr);
	wire_hs_close(&hi);
	buf_close(&out);
	wire_keyring_free(a);
}
END_TEST

/* Sealed frames: any changed byte, a replay, a reordering or a gap fails, and then the
 * session stays broken. */
START_TEST(test_session_tamper_replay_reorder)
{
	struct wire_keyring *a = ring_with(1), *b = ring_with(1);
	struct wire_session si, sr, snap;
	uint8_t fa[64], fb[64];
	size_t na, nb;
	struct buf w, plain;
	char who;

	buf_init(&w);
	buf_init(&plain);
	ck_assert_int_eq(handshake(a, b, &si, &sr, NULL, &who), 0);
	ck_assert_int_eq(wire_seal(&si, "first", 5, &w), 0);
	na = take_frame(&w, fa, sizeof(fa));
	ck_assert_int_eq(wire_seal(&si, "second", 6, &w), 0);
	nb = take_frame(&w, fb, sizeof(fb));
	for (size_t pos = 0; pos < na; pos++) {
		snap = sr;
		fa[pos] ^= 0x01;
		ck_assert_int_eq(wire_open(&snap, fa, na, &plain), -EBADMSG);
		fa[pos] ^= 0x01;
	}
	snap = sr;
	ck_assert_int_eq(wire_open(&snap, fa, na - 1, &plain), -EBADMSG);   /* truncated */
	snap = sr;
	ck_assert_int_eq(wire_open(&snap, fb, nb, &plain), -EBADMSG);       /* reordered */
	ck_assert_int_eq(wire_open(&snap, fa, na, &plain), -EBADMSG);       /* broken now */
	ck_assert(snap.broken);
	ck_assert_int_eq(wire_open(&sr, fa, na, &plain), 0);
	ck_assert_mem_eq(plain.data, "first", 5);
	snap = sr;
	ck_assert_int_eq(wire_open(&snap, fa, na, &plain), -EBADMSG);       /* replayed */
	ck_assert_uint_eq(plain.len, 0);
	ck_assert_int_eq(wire_open(&sr, fb, nb, &plain), 0);
	ck_assert_mem_eq(plain.data, "second", 6);
	ck_assert_int_eq(wire_seal(&si, fa, WIRE_MSG_MAX + 1, &w), -EMSGSIZE);
	ck_assert_uint_eq(w.len, 0);
	buf_close(&w);
	buf_close(&plain);
	wire_keyring_free(a);
	wire_keyring_free(b);
}
END_TEST

/* Whole flow over one byte stream: handshake frames and sealed messages through the frame
 * reader, several frames per chunk, then decoded. */
START_TEST(test_session_stream)
{
	struct wire_keyring *a = ring_with(1), *b = ring_with(1);
	struct wire_hs hi, hr;
	struct wire_session si, sr;
	struct wire_frame_reader rd;
	struct wire_msg m = golden_msg(G_CHECK), d;
	struct buf toi, tor, enc, plain;
	const uint8_t *p, *f;
	size_t left, used, flen, decoded = 0;
	int rc, done_r = 0;

	buf_init(&toi), buf_init(&tor), buf_init(&enc), buf_init(&plain);
	ck_assert_int_eq(wire_hs_init(&hi, a, "node-i", true, &tor), 0);
	ck_assert_int_eq(wire_hs_init(&hr, b, "node-r", false, &toi), 0);
	wire_frame_reader_init(&rd, WIRE_HELLO_MAX);
	/* Responder reads HELLO_I. */
	ck_assert_int_eq(wire_frame_read(&rd, (uint8_t *)tor.data, tor.len, &used, &f, &flen), 1);
	ck_assert_int_eq(wire_hs_step(&hr, f, flen, &toi, &sr), 0);
	buf_reset(&tor);
	/* Initiator reads HELLO_R, then sends FINISH and three sealed messages at once. */
	ck_assert_int_eq(wire_hs_step(&hi, (uint8_t *)toi.data + 4, toi.len - 4, &tor, &si), 1);
	ck_assert_int_eq(wire_encode(&m, &enc), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(wire_seal(&si, enc.data, enc.len, &tor), 0);
	p = (const uint8_t *)tor.data, left = tor.len;
	while (left > 0) {
		rc = wire_frame_read(&rd, p, left, &used, &f, &flen);
		ck_assert_int_ge(rc, 0);
		p += used, left -= used;
		if (rc == 0)
			continue;
		if (!done_r) {
			done_r = wire_hs_step(&hr, f, flen, &toi, &sr);
			ck_assert_int_eq(done_r, 1);
			wire_frame_reader_set_max(&rd, WIRE_FRAME_MAX);
			continue;
		}
		ck_assert_int_eq(wire_open(&sr, f, flen, &plain), 0);
		ck_assert_int_eq(wire_decode((uint8_t *)plain.data, plain.len, &d), 0);
		assert_msg_eq(&d, &m);
		wire_msg_close(&d);
		decoded++;
	}
	ck_assert_uint_eq(decoded, 3);
	wire_frame_reader_close(&rd);
	wire_hs_close(&hi), wire_hs_close(&hr);
	buf_close(&toi), buf_close(&tor), buf_close(&enc), buf_close(&plain);
	wire_keyring_free(a);
	wire_keyring_free(b);
}
END_TEST

/* Rotation: add the new key everywhere, switch primaries one node at a time, remove the old
 * key. Every step keeps both directions working; a removed key is refused. */
START_TEST(test_keyring_rotation)
{
	struct wire_keyring *a = ring_with(1), *b = ring_with(1);
	struct wire_session si, sr;
	uint8_t k2[WIRE_KEY_BYTES], id1[8], id2[8];
	char who;

	ck_assert_int_eq(wire_keyring_primary(a, id1), 0);
	key_of(k2, 2);
	ck_assert_int_eq(wire_keyring_add(a, k2, id2), 0);
	ck_assert_int_eq(wire_keyring_add(b, k2, NULL), 0);
	ck_assert_int_eq(wire_keyring_set_primary(a, id2), 0);
	/* Mixed primaries: a sends with k2, b with k1; both accepted. */
	ck_assert_int_eq(handshake(a, b, &si, &sr, NULL, &who), 0);
	ck_assert_mem_eq(si.key_id, id2, 8);
	ck_assert_int_eq(relay(&si, &sr, "x"), 0);
	ck_assert_int_eq(handshake(b, a, &si, &sr, NULL, &who), 0);
	ck_assert_mem_eq(si.key_id, id1, 8);
	ck_assert_int_eq(relay(&sr, &si, "y"), 0);
	/* a drops k1 too early: b, still on k1, is refused by a. */
	ck_assert_int_eq(wire_keyring_remove(a, id1), 0);
	ck_assert_int_eq(handshake(b, a, &si, &sr, NULL, &who), -ENOKEY);
	ck_assert_int_eq(who, 'r');
	ck_assert_int_eq(wire_keyring_set_primary(b, id2), 0);
	ck_assert_int_eq(handshake(b, a, &si, &sr, NULL, &who), 0);
	ck_assert_int_eq(wire_keyring_remove(b, id1), 0);
	ck_assert_int_eq(handshake(a, b, &si, &sr, NULL, &who), 0);
	ck_assert_int_eq(relay(&si, &sr, "z"), 0);
	wire_keyring_free(a);
	wire_keyring_free(b);
}
END_TEST

/* ---- gossip ---- */

static struct wire_member member(int i, uint8_t state)
{
	struct wire_member m = g_member;

	snprintf(m.id, sizeof(m.id), "node-%03d", i);
	snprintf(m.host, sizeof(m.host), "host-%d.cluster.example.internal", i);
	m.incarnation = (uint64_t)i * 1000;
	m.state = state;
	return m;
}

START_TEST(test_gossip_codec)
{
	struct wire_gossip g = { .type = WIRE_GOSSIP_PING, .seq = 42, .target = "node-b",
				 .updates = (struct wire_member *)&g_member, .nupdates = 1 }, d;
	uint8_t want[128];
	size_t n = unhex(golden_gossip_hex, want, sizeof(want)), maplen;
	struct buf b;
	void *map;

	buf_init(&b);
	ck_assert_int_eq(wire_gossip_encode(&g, &b), 0);
	ck_assert_str_eq(tohex(b.data, b.len), golden_gossip_hex);
	assert_msgpack_one(want, n);
	ck_assert_int_eq(wire_gossip_decode(want, n, &d), 0);
	ck_assert_uint_eq(d.type, WIRE_GOSSIP_PING);
	ck_assert_uint_eq(d.seq, 42);
	ck_assert_str_eq(d.target, "node-b");
	ck_assert_str_eq(d.from, "");
	ck_assert_uint_eq(d.nupdates, 1);
	ck_assert_mem_eq(&d.updates[0], &g_member, sizeof(g_member));
	wire_gossip_close(&d);
	for (size_t len = 0; len < n; len++) {
		uint8_t *p = guard_copy(want, len, &map, &maplen);

		ck_assert_int_lt(wire_gossip_decode(p, len, &d), 0);
		guard_free(map, maplen);
	}
	/* Unknown state, host with a space, unknown type: refused. */
	want[n - 1] = 4;
	ck_assert_int_eq(wire_gossip_decode(want, n, &d), -EPROTO);
	want[n - 1] = 0;
	want[n - 16] = ' ';
	ck_assert_int_eq(wire_gossip_decode(want, n, &d), -EPROTO);
	want[n - 16] = '1';
	want[1] = 9;
	ck_assert_int_eq(wire_gossip_decode(want, n, &d), -ENOMSG);
	/* The encoder refuses what the decoder would. */
	g.target[2] = '\n';
	ck_assert_int_eq(wire_gossip_encode(&g, &b), -EINVAL);
	buf_close(&b);
}
END_TEST

START_TEST(test_gossip_update_limits)
{
	static struct wire_member many[WIRE_GOSSIP_MEMBERS_MAX + 1];
	struct wire_gossip g = { .type = WIRE_GOSSIP_ACK, .seq = 1, .updates = many }, d;
	struct buf b;

	for (int i = 0; i <= WIRE_GOSSIP_MEMBERS_MAX; i++)
		many[i] = member(i, WIRE_MEMBER_SUSPECT);
	buf_init(&b);
	g.nupdates = WIRE_GOSSIP_UPDATES_MAX + 1;
	ck_assert_int_eq(wire_gossip_encode(&g, &b), -EINVAL);
	g.type = WIRE_GOSSIP_PUSH_PULL;
	g.nupdates = WIRE_GOSSIP_MEMBERS_MAX;
	ck_assert_int_eq(wire_gossip_encode(&g, &b), 0);
	ck_assert_int_eq(wire_gossip_decode((uint8_t *)b.data, b.len, &d), 0);
	ck_assert_uint_eq(d.nupdates, WIRE_GOSSIP_MEMBERS_MAX);
	ck_assert_mem_eq(&d.updates[1023], &many[1023], sizeof(many[0]));
	wire_gossip_close(&d);
	/* The same bytes relabelled as a probe carry too many updates. */
	b.data[1] = WIRE_GOSSIP_ACK;
	ck_assert_int_eq(wire_gossip_decode((uint8_t *)b.data, b.len, &d), -EMSGSIZE);
	buf_close(&b);
}
END_TEST

struct gossip_fx {
	struct wire_keyring *ring;
	struct wire_replay *rp;
	struct wire_gossip_sender s;
	struct wire_gossip msg;
	struct wire_member upd[3];
};

static void gfx_init(struct gossip_fx *x, uint64_t epoch)
{
	x->ring = ring_with(7);
	ck_assert_int_eq(wire_replay_new(&x->rp, 8), 0);
	ck_assert_int_eq(wire_gossip_sender_init(&x->s, "node-a", epoch), 0);
	for (int i = 0; i < 3; i++)
		x->upd[i] = member(i, (uint8_t)i);
	x->msg = (struct wire_gossip){ .type = WIRE_GOSSIP_PING_REQ, .seq = 9, .target = "node-c",
				       .updates = x->upd, .nupdates = 3 };
}

static void gfx_close(struct gossip_fx *x)
{
	wire_keyring_free(x->ring);
	wire_replay_free(x->rp);
}

static size_t gseal(struct gossip_fx *x, uint8_t *pkt)
{
	size_t len;

	ck_assert_int_eq(wire_gossip_seal(&x->s, x->ring, &x->msg, pkt, WIRE_GOSSIP_MTU, &len,
					  NULL), 0);
	return len;
}

static int gopen(struct gossip_fx *x, const struct wire_keyring *ring, const uint8_t *pkt,
		 size_t len)
{
	struct wire_gossip d;
	int rc = wire_gossip_open(x->rp, ring, pkt, len, &d);

	if (rc == 0) {
		ck_assert_str_eq(d.from, "node-a");
		ck_assert_str_eq(d.target, "node-c");
		ck_assert_uint_eq(d.nupdates, 3);
		ck_assert_mem_eq(d.updates, x->upd, sizeof(x->upd));
	}
	wire_gossip_close(&d);
	return rc;
}

START_TEST(test_gossip_seal_open)
{
	struct gossip_fx x;
	struct wire_keyring *other = ring_with(8);
	uint8_t p1[WIRE_GOSSIP_MTU], p2[WIRE_GOSSIP_MTU];
	size_t n1, n2;

	gfx_init(&x, 1000);
	n1 = gseal(&x, p1);
	n2 = gseal(&x, p2);
	ck_assert_uint_eq(x.s.counter, 2);
	/* Wrong cluster key: refused by key id. */
	ck_assert_int_eq(gopen(&x, other, p1, n1), -ENOKEY);
	/* Every changed byte fails, and failures leave the replay window untouched. */
	for (size_t pos = 0; pos < n2; pos++) {
		p2[pos] ^= 0x04;
		ck_assert_int_lt(gopen(&x, x.ring, p2, n2), 0);
		p2[pos] ^= 0x04;
	}
	ck_assert_int_lt(gopen(&x, x.ring, p2, n2 - 1), 0);
	ck_assert_int_eq(gopen(&x, x.ring, p2, n2), 0);
	ck_assert_int_eq(gopen(&x, x.ring, p2, n2), -EALREADY);   /* replay */
	ck_assert_int_eq(gopen(&x, x.ring, p1, n1), 0);           /* late, not seen: once */
	ck_assert_int_eq(gopen(&x, x.ring, p1, n1), -EALREADY);
	ck_assert_int_eq(gopen(&x, x.ring, p1, 0), -EBADMSG);
	ck_assert_int_eq(gopen(&x, x.ring, p1, 20), -EBADMSG);
	ck_assert_int_eq(gopen(&x, x.ring, p1, WIRE_GOSSIP_PACKET_MAX + 1), -EMSGSIZE);
	p1[0] = 2;
	ck_assert_int_eq(gopen(&x, x.ring, p1, n1), -EPROTONOSUPPORT);
	wire_keyring_free(other);
	gfx_close(&x);
}
END_TEST

START_TEST(test_gossip_replay_window)
{
	struct gossip_fx x;
	static uint8_t pk[70][WIRE_GOSSIP_MTU];
	size_t n[70], n_old;
	uint8_t old[WIRE_GOSSIP_MTU];

	gfx_init(&x, 1000);
	for (int i = 0; i < 70; i++)
		n[i] = gseal(&x, pk[i]);
	ck_assert_int_eq(gopen(&x, x.ring, pk[69], n[69]), 0);
	ck_assert_int_eq(gopen(&x, x.ring, pk[6], n[6]), 0);        /* 63 behind: still in */
	ck_assert_int_eq(gopen(&x, x.ring, pk[5], n[5]), -EALREADY); /* 64 behind: too old */
	ck_assert_int_eq(gopen(&x, x.ring, pk[6], n[6]), -EALREADY);
	/* The sender restarts with a later epoch: accepted; the old boot's packets are not. */
	memcpy(old, pk[68], n[68]);
	n_old = n[68];
	ck_assert_int_eq(wire_gossip_sender_init(&x.s, "node-a", 2000), 0);
	n[0] = gseal(&x, pk[0]);
	ck_assert_int_eq(gopen(&x, x.ring, pk[0], n[0]), 0);
	ck_assert_int_eq(gopen(&x, x.ring, old, n_old), -ESTALE);
	/* Forgetting the sender (declared dead) lets a restart with an earlier epoch in. */
	ck_assert_int_eq(wire_gossip_sender_init(&x.s, "node-a", 1500), 0);
	n[1] = gseal(&x, pk[1]);
	ck_assert_int_eq(gopen(&x, x.ring, pk[1], n[1]), -ESTALE);
	wire_replay_forget(x.rp, "node-a");
	ck_assert_int_eq(gopen(&x, x.ring, pk[1], n[1]), 0);
	ck_assert_int_eq(gopen(&x, x.ring, pk[1], n[1]), -EALREADY);
	gfx_close(&x);
}
END_TEST

START_TEST(test_gossip_replay_eviction)
{
	struct gossip_fx x;
	struct wire_replay *small;
	struct wire_gossip_sender senders[3];
	uint8_t pk[3][WIRE_GOSSIP_MTU];
	size_t n[3];
	struct wire_gossip d;

	gfx_init(&x, 1);
	ck_assert_int_eq(wire_replay_new(&small, 0), -EINVAL);
	ck_assert_int_eq(wire_replay_new(&small, 2), 0);
	for (int i = 0; i < 3; i++) {
		char id[16];

		snprintf(id, sizeof(id), "node-%d", i);
		ck_assert_int_eq(wire_gossip_sender_init(&senders[i], id, 1), 0);
		ck_assert_int_eq(wire_gossip_seal(&senders[i], x.ring, &x.msg, pk[i],
						  sizeof(pk[i]), &n[i], NULL), 0);
	}
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(wire_gossip_open(small, x.ring, pk[i], n[i], &d), 0);
		wire_gossip_close(&d);
	}
	/* node-0 was least recently heard and was evicted; node-2 is remembered. */
	ck_assert_int_eq(wire_gossip_open(small, x.ring, pk[2], n[2], &d), -EALREADY);
	ck_assert_int_eq(wire_gossip_open(small, x.ring, pk[0], n[0], &d), 0);
	wire_gossip_close(&d);
	wire_replay_free(small);
	gfx_close(&x);
}
END_TEST

/* Piggybacking: as many updates as fit under the cap ride along, the rest wait. */
START_TEST(test_gossip_piggyback_fit)
{
	struct gossip_fx x;
	struct wire_member ups[WIRE_GOSSIP_UPDATES_MAX];
	uint8_t pkt[WIRE_GOSSIP_PACKET_MAX];
	struct wire_gossip d;
	size_t len, sent;

	gfx_init(&x, 5);
	for (int i = 0; i < WIRE_GOSSIP_UPDATES_MAX; i++)
		ups[i] = member(i, WIRE_MEMBER_ALIVE);
	x.msg.updates = ups;
	x.msg.nupdates = WIRE_GOSSIP_UPDATES_MAX;
	ck_assert_int_eq(wire_gossip_seal(&x.s, x.ring, &x.msg, pkt, WIRE_GOSSIP_MTU, &len, NULL),
			 -EMSGSIZE);
	ck_assert_uint_eq(x.s.counter, 0);
	ck_assert_int_eq(wire_gossip_seal(&x.s, x.ring, &x.msg, pkt, WIRE_GOSSIP_MTU, &len, &sent),
			 0);
	ck_assert_uint_gt(sent, 10);
	ck_assert_uint_lt(sent, WIRE_GOSSIP_UPDATES_MAX);
	ck_assert_uint_le(len, WIRE_GOSSIP_MTU);
	ck_assert_int_eq(wire_gossip_open(x.rp, x.ring, pkt, len, &d), 0);
	ck_assert_uint_eq(d.nupdates, sent);
	ck_assert_mem_eq(&d.updates[sent - 1], &ups[sent - 1], sizeof(ups[0]));
	wire_gossip_close(&d);
	/* One more update would not have fitted. */
	x.msg.nupdates = sent + 1;
	ck_assert_int_eq(wire_gossip_seal(&x.s, x.ring, &x.msg, pkt, WIRE_GOSSIP_MTU, &len, NULL),
			 -EMSGSIZE);
	ck_assert_int_eq(wire_gossip_seal(&x.s, x.ring, &x.msg, pkt, 60, &len, &sent), -EMSGSIZE);
	gfx_close(&x);
}
END_TEST

/* Gossip follows the keyring: sent with the primary, accepted under any key in the ring. */
START_TEST(test_gossip_rotation)
{
	struct gossip_fx x;
	struct wire_keyring *rx = ring_with(7);
	uint8_t k2[WIRE_KEY_BYTES], id1[8], id2[8], pkt[WIRE_GOSSIP_MTU];
	size_t len;

	gfx_init(&x, 1);
	ck_assert_int_eq(wire_keyring_primary(x.ring, id1), 0);
	key_of(k2, 77);
	ck_assert_int_eq(wire_keyring_add(x.ring, k2, id2), 0);
	ck_assert_int_eq(wire_keyring_set_primary(x.ring, id2), 0);
	len = gseal(&x, pkt);
	ck_assert_int_eq(gopen(&x, rx, pkt, len), -ENOKEY);
	ck_assert_int_eq(wire_keyring_add(rx, k2, NULL), 0);
	ck_assert_int_eq(gopen(&x, rx, pkt, len), 0);
	ck_assert_int_eq(wire_keyring_set_primary(rx, id2), 0);
	ck_assert_int_eq(wire_keyring_remove(rx, id1), 0);
	len = gseal(&x, pkt);
	ck_assert_int_eq(gopen(&x, rx, pkt, len), 0);
	wire_keyring_free(rx);
	gfx_close(&x);
}
END_TEST

START_TEST(test_strerror)
{
	ck_assert_str_eq(wire_strerror(-ENOKEY),
			 "key id not in keyring (peer has no or another cluster key)");
	ck_assert_str_ne(wire_strerror(-EBADMSG), wire_strerror(-EACCES));
	ck_assert_str_eq(wire_strerror(-12345), "unknown error");
	ck_assert(wire_node_id_valid("node-1", 6));
	ck_assert(!wire_node_id_valid("node 1", 6));
	ck_assert(!wire_node_id_valid("", 0));
}
END_TEST

Suite *wire_suite(void);
Suite *wire_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *t;

	t = tcase_create("frame");
	tcase_add_test(t, test_frame_roundtrip_chunks);
	tcase_add_test(t, test_frame_limits);
	suite_add_tcase(s, t);

	t = tcase_create("codec");
	tcase_add_checked_fixture(t, setup, NULL);
	tcase_add_loop_test(t, test_codec_golden, 0, G_N);
	tcase_add_loop_test(t, test_codec_truncated, 0, G_N);
	tcase_add_test(t, test_codec_hostile);
	tcase_add_test(t, test_codec_limits);
	tcase_add_test(t, test_codec_huge_counts);
	tcase_add_test(t, test_codec_int_widths);
	tcase_add_test(t, test_codec_extremes);
	tcase_add_test(t, test_codec_state_rules);
	tcase_add_test(t, test_codec_encode_rejects);
	tcase_add_test(t, test_codec_from_dense);
	tcase_add_test(t, test_codec_mutations);
	suite_add_tcase(s, t);

	t = tcase_create("seal");
	tcase_add_checked_fixture(t, setup, NULL);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, test_keyring);
	tcase_add_test(t, test_hs_success);
	tcase_add_test(t, test_hs_wrong_key);
	tcase_add_test(t, test_hs_tamper);
	tcase_add_test(t, test_hs_replay);
	tcase_add_test(t, test_hs_version);
	tcase_add_test(t, test_session_tamper_replay_reorder);
	tcase_add_test(t, test_session_stream);
	tcase_add_test(t, test_keyring_rotation);
	suite_add_tcase(s, t);

	t = tcase_create("gossip");
	tcase_add_checked_fixture(t, setup, NULL);
	tcase_add_test(t, test_gossip_codec);
	tcase_add_test(t, test_gossip_update_limits);
	tcase_add_test(t, test_gossip_seal_open);
	tcase_add_test(t, test_gossip_replay_window);
	tcase_add_test(t, test_gossip_replay_eviction);
	tcase_add_test(t, test_gossip_piggyback_fit);
	tcase_add_test(t, test_gossip_rotation);
	tcase_add_test(t, test_strerror);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(wire_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
