/* codec.c — msgpack encoding and strict decoding of the node-to-node messages.
 *
 * Every message is an array [major version, type, body]; every item is an array of fields in
 * a fixed order. A decoder accepts arrays with more fields than it knows and skips the extra
 * ones (later minor versions append, never reorder), and nothing else: no missing field, no
 * other msgpack type, no value out of range, no trailing bytes. */
#include "wire/codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "window/table.h"
#include "wire/internal.h"

/* The wire constants mirror the window module's; a mismatch would corrupt replicated state. */
_Static_assert(WIRE_DIMS == WINDOW_DIMS, "dimensions differ from window.h");
_Static_assert(WIRE_SLOTS == WINDOW_SLOTS, "slots differ from window.h");
_Static_assert(WIRE_KEY_MAX == WINDOW_KEY_MAX, "key length differs from table.h");

/* Worst-case encoded sizes, so a batch at its maximum always fits in one frame. */
#define ENVELOPE_MAX 24u  /* [version, type, [now_ms, flags, items...]] heads */
#define KEY_ENC_MAX (3u + WIRE_KEY_MAX)
#define DIMS_ENC_MAX (1u + WIRE_DIMS * 9u)
#define CHECK_ENC_MAX (1u + 9u + KEY_ENC_MAX + 2u * DIMS_ENC_MAX + 2u)
#define REPLY_ENC_MAX (1u + 9u + 2u + 2u + 1u + 4u * DIMS_ENC_MAX + 9u + 5u)
#define ADJUST_ENC_MAX (1u + KEY_ENC_MAX + 5u + DIMS_ENC_MAX)
#define SLOT_ENC_MAX (1u + 5u + WIRE_DIMS * 9u)
#define STATE_ENC_MAX (1u + KEY_ENC_MAX + 2u + 5u + 3u + WIRE_SLOTS * SLOT_ENC_MAX)
_Static_assert(ENVELOPE_MAX + WIRE_CHECK_BATCH_MAX * CHECK_ENC_MAX <= WIRE_MSG_MAX, "check");
_Static_assert(ENVELOPE_MAX + WIRE_REPLY_BATCH_MAX * REPLY_ENC_MAX <= WIRE_MSG_MAX, "reply");
_Static_assert(ENVELOPE_MAX + WIRE_ADJUST_BATCH_MAX * ADJUST_ENC_MAX <= WIRE_MSG_MAX, "adjust");
_Static_assert(ENVELOPE_MAX + WIRE_STATE_BATCH_MAX * STATE_ENC_MAX <= WIRE_MSG_MAX, "state");

/* ---- validation, shared by both directions ---- */

static bool key_ok(const uint8_t *key, size_t len)
{
	return key && len >= 1 && len <= WIRE_KEY_MAX;
}

static bool count_ok(int64_t c, bool full)
{
	return full ? c >= 0 && c <= (int64_t)UINT32_MAX
		    : c >= -(int64_t)UINT32_MAX && c <= (int64_t)UINT32_MAX;
}

/* A slot must lie in the key's 61-bucket window and not repeat a bucket. */
static bool slot_ok(const struct wire_slot *s, uint32_t head, bool full, uint64_t *seen)
{
	uint32_t age;

	if (s->bucket > head || head - s->bucket >= WIRE_SLOTS)
		return false;
	age = head - s->bucket;
	if (*seen & (1ull << age))
		return false;
	*seen |= 1ull << age;
	for (unsigned d = 0; d < WIRE_DIMS; d++)
		if (!count_ok(s->count[d], full))
			return false;
	return true;
}

static bool state_ok(const struct wire_key_state *st)
{
	bool full = st->flags & WIRE_STATE_FULL;
	uint64_t seen = 0;

	if (!key_ok(st->key, st->key_len) || st->nslots > WIRE_SLOTS)
		return false;
	for (unsigned i = 0; i < st->nslots; i++)
		if (!slot_ok(&st->slots[i], st->head, full, &seen))
			return false;
	return true;
}

static size_t batch_max(uint8_t type)
{
	switch (type) {
	case WIRE_MSG_CHECK:
		return WIRE_CHECK_BATCH_MAX;
	case WIRE_MSG_CHECK_REPLY:
		return WIRE_REPLY_BATCH_MAX;
	case WIRE_MSG_ADJUST:
		return WIRE_ADJUST_BATCH_MAX;
	case WIRE_MSG_REPLICATE:
	case WIRE_MSG_HANDOFF:
		return WIRE_STATE_BATCH_MAX;
	default:
		return 0;
	}
}

static int validate(const struct wire_msg *m)
{
	if (m->type == WIRE_MSG_PING || m->type == WIRE_MSG_PONG)
		return 0;
	if (m->type < WIRE_MSG_CHECK || m->type > WIRE_MSG_HANDOFF)
		return -EINVAL;
	if (m->n > batch_max(m->type) || (m->n && !m->checks))
		return -EINVAL;
	for (size_t i = 0; i < m->n; i++) {
		switch (m->type) {
		case WIRE_MSG_CHECK:
			if (!key_ok(m->checks[i].key, m->checks[i].key_len))
				return -EINVAL;
			break;
		case WIRE_MSG_CHECK_REPLY:
			if (m->replies[i].denied_dim < -1 || m->replies[i].denied_dim >= WIRE_DIMS)
				return -EINVAL;
			break;
		case WIRE_MSG_ADJUST:
			if (!key_ok(m->adjusts[i].key, m->adjusts[i].key_len))
				return -EINVAL;
			break;
		default:
			if (!state_ok(&m->states[i]))
				return -EINVAL;
			break;
		}
	}
	return 0;
}

/* ---- encoding ---- */

static void put_key(struct wire__wr *w, const uint8_t *key, size_t len)
{
	msgpack_pack_bin(&w->pk, len);
	msgpack_pack_bin_body(&w->pk, key, len);
}

static void put_check(struct wire__wr *w, const struct wire_check *c)
{
	msgpack_pack_array(&w->pk, 5);
	msgpack_pack_uint64(&w->pk, c->id);
	put_key(w, c->key, c->key_len);
	wire__wr_dims_u(w, c->limit);
	wire__wr_dims_u(w, c->amount);
	msgpack_pack_uint8(&w->pk, c->hops);
}

static void put_reply(struct wire__wr *w, const struct wire_check_reply *v)
{
	msgpack_pack_array(&w->pk, 10);
	msgpack_pack_uint64(&w->pk, v->id);
	msgpack_pack_uint8(&w->pk, v->status);
	msgpack_pack_int8(&w->pk, v->denied_dim);
	if (v->never_fits)
		msgpack_pack_true(&w->pk);
	else
		msgpack_pack_false(&w->pk);
	wire__wr_dims_u(w, v->limit);
	wire__wr_dims_u(w, v->used);
	wire__wr_dims_u(w, v->remaining);
	wire__wr_dims_u(w, v->reset_ms);
	msgpack_pack_uint64(&w->pk, v->retry_after_ms);
	msgpack_pack_uint32(&w->pk, v->bucket);
}

static void put_adjust(struct wire__wr *w, const struct wire_adjust *a)
{
	msgpack_pack_array(&w->pk, 3);
	put_key(w, a->key, a->key_len);
	msgpack_pack_uint32(&w->pk, a->bucket);
	msgpack_pack_array(&w->pk, WIRE_DIMS);
	for (unsigned d = 0; d < WIRE_DIMS; d++)
		msgpack_pack_int64(&w->pk, a->delta[d]);
}

static void put_state(struct wire__wr *w, const struct wire_key_state *st)
{
	msgpack_pack_array(&w->pk, 4);
	put_key(w, st->key, st->key_len);
	msgpack_pack_uint8(&w->pk, st->flags);
	msgpack_pack_uint32(&w->pk, st->head);
	msgpack_pack_array(&w->pk, st->nslots);
	for (unsigned i = 0; i < st->nslots; i++) {
		msgpack_pack_array(&w->pk, 1 + WIRE_DIMS);
		msgpack_pack_uint32(&w->pk, st->slots[i].bucket);
		for (unsigned d = 0; d < WIRE_DIMS; d++)
			msgpack_pack_int64(&w->pk, st->slots[i].count[d]);
	}
}

int wire_encode(const struct wire_msg *m, struct buf *out)
{
	struct wire__wr w;
	int err;

	if ((err = validate(m)) < 0)
		return err;
	wire__wr_init(&w, out);
	msgpack_pack_array(&w.pk, 3);
	msgpack_pack_uint8(&w.pk, WIRE_VERSION_MAJOR);
	msgpack_pack_uint8(&w.pk, m->type);
	switch (m->type) {
	case WIRE_MSG_PING:
	case WIRE_MSG_PONG:
		msgpack_pack_uint64(&w.pk, m->nonce);
		break;
	case WIRE_MSG_REPLICATE:
	case WIRE_MSG_HANDOFF:
		msgpack_pack_array(&w.pk, 3);
		msgpack_pack_uint64(&w.pk, m->now_ms);
		msgpack_pack_uint8(&w.pk, m->flags);
		/* fall through */
	default:
		msgpack_pack_array(&w.pk, m->n);
		for (size_t i = 0; i < m->n; i++) {
			if (m->type == WIRE_MSG_CHECK)
				put_check(&w, &m->checks[i]);
			else if (m->type == WIRE_MSG_CHECK_REPLY)
				put_reply(&w, &m->replies[i]);
			else if (m->type == WIRE_MSG_ADJUST)
				put_adjust(&w, &m->adjusts[i]);
			else
				put_state(&w, &m->states[i]);
		}
		break;
	}
	if ((err = wire__wr_finish(&w)) < 0)
		return err;
	if (out->len - w.start > WIRE_MSG_MAX) {
		w.err = -EMSGSIZE;
		return wire__wr_finish(&w);
	}
	return 0;
}

/* ---- decoding ---- */

/* Opens an item's field array: at least `want` fields; *extra says how many to skip after. */
static int rd_fields(struct wire__rd *r, uint32_t want, uint32_t *extra)
{
	uint32_t n;

	if (wire__rd_array(r, &n) < 0 || n < want)
		return -EPROTO;
	*extra = n - want;
	return 0;
}

static int rd_key(struct wire__rd *r, const uint8_t **key, size_t *len)
{
	return wire__rd_bin(r, 1, WIRE_KEY_MAX, key, len);
}

static int get_check(struct wire__rd *r, struct wire_check *c)
{
	uint64_t hops;
	uint32_t extra;

	if (rd_fields(r, 5, &extra) < 0 ||
	    wire__rd_uint(r, UINT64_MAX, &c->id) < 0 ||
	    rd_key(r, &c->key, &c->key_len) < 0 ||
	    wire__rd_dims_u(r, UINT64_MAX, c->limit) < 0 ||
	    wire__rd_dims_u(r, UINT64_MAX, c->amount) < 0 ||
	    wire__rd_uint(r, UINT8_MAX, &hops) < 0)
		return -EPROTO;
	c->hops = (uint8_t)hops;
	return wire__rd_skip(r, extra);
}

static int get_reply(struct wire__rd *r, struct wire_check_reply *v)
{
	uint64_t status, bucket;
	int64_t dim;
	uint32_t extra;

	if (rd_fields(r, 10, &extra) < 0 ||
	    wire__rd_uint(r, UINT64_MAX, &v->id) < 0 ||
	    wire__rd_uint(r, UINT8_MAX, &status) < 0 ||
	    wire__rd_int(r, -1, WIRE_DIMS - 1, &dim) < 0 ||
	    wire__rd_bool(r, &v->never_fits) < 0 ||
	    wire__rd_dims_u(r, UINT64_MAX, v->limit) < 0 ||
	    wire__rd_dims_u(r, UINT64_MAX, v->used) < 0 ||
	    wire__rd_dims_u(r, UINT64_MAX, v->remaining) < 0 ||
	    wire__rd_dims_u(r, UINT64_MAX, v->reset_ms) < 0 ||
	    wire__rd_uint(r, UINT64_MAX, &v->retry_after_ms) < 0 ||
	    wire__rd_uint(r, UINT32_MAX, &bucket) < 0)
		return -EPROTO;
	v->status = (uint8_t)status;
	v->denied_dim = (int8_t)dim;
	v->bucket = (uint32_t)bucket;
	return wire__rd_skip(r, extra);
}

static int get_adjust(struct wire__rd *r, struct wire_adjust *a)
{
	uint64_t bucket;
	uint32_t extra, n;

	if (rd_fields(r, 3, &extra) < 0 ||
	    rd_key(r, &a->key, &a->key_len) < 0 ||
	    wire__rd_uint(r, UINT32_MAX, &bucket) < 0 ||
	    wire__rd_array(r, &n) < 0 || n != WIRE_DIMS)
		return -EPROTO;
	for (unsigned d = 0; d < WIRE_DIMS; d++)
		if (wire__rd_int(r, INT64_MIN, INT64_MAX, &a->delta[d]) < 0)
			return -EPROTO;
	a->bucket = (uint32_t)bucket;
	return wire__rd_skip(r, extra);
}

static int get_slot(struct wire__rd *r, struct wire_slot *s)
{
	uint64_t bucket;
	uint32_t extra;

	if (rd_fields(r, 1 + WIRE_DIMS, &extra) < 0 ||
	    wire__rd_uint(r, UINT32_MAX, &bucket) < 0)
		return -EPROTO;
	s->bucket = (uint32_t)bucket;
	for (unsigned d = 0; d < WIRE_DIMS; d++)
		if (wire__rd_int(r, -(int64_t)UINT32_MAX, UINT32_MAX, &s->count[d]) < 0)
			return -EPROTO;
	return wire__rd_skip(r, extra);
}

static int get_state(struct wire__rd *r, struct wire_key_state *st)
{
	uint64_t flags, head;
	uint32_t extra, n;

	if (rd_fields(r, 4, &extra) < 0 ||
	    rd_key(r, &st->key, &st->key_len) < 0 ||
	    wire__rd_uint(r, UINT8_MAX, &flags) < 0 ||
	    wire__rd_uint(r, UINT32_MAX, &head) < 0 ||
	    wire__rd_array(r, &n) < 0 || n > WIRE_SLOTS)
		return -EPROTO;
	st->flags = (uint8_t)flags;
	st->head = (uint32_t)head;
	st->nslots = (uint8_t)n;
	for (unsigned i = 0; i < n; i++)
		if (get_slot(r, &st->slots[i]) < 0)
			return -EPROTO;
	if (!state_ok(st))
		return -EPROTO;
	return wire__rd_skip(r, extra);
}

static size_t item_size(uint8_t type)
{
	switch (type) {
	case WIRE_MSG_CHECK:
		return sizeof(struct wire_check);
	case WIRE_MSG_CHECK_REPLY:
		return sizeof(struct wire_check_reply);
	case WIRE_MSG_ADJUST:
		return sizeof(struct wire_adjust);
	default:
		return sizeof(struct wire_key_state);
	}
}

/* Reads a batch array into a freshly allocated m->checks (or its union siblings). */
static int get_items(struct wire__rd *r, struct wire_msg *m)
{
	uint32_t n;
	int err = 0;

	if (wire__rd_array(r, &n) < 0)
		return -EPROTO;
	if (n > batch_max(m->type))
		return -EMSGSIZE;
	if (n == 0)
		return 0;
	m->checks = calloc(n, item_size(m->type));
	if (!m->checks)
		return -ENOMEM;
	m->n = n;
	for (uint32_t i = 0; i < n && err == 0; i++) {
		switch (m->type) {
		case WIRE_MSG_CHECK:
			err = get_check(r, &m->checks[i]);
			break;
		case WIRE_MSG_CHECK_REPLY:
			err = get_reply(r, &m->replies[i]);
			break;
		case WIRE_MSG_ADJUST:
			err = get_adjust(r, &m->adjusts[i]);
			break;
		default:
			err = get_state(r, &m->states[i]);
			break;
		}
	}
	return err;
}

static int get_body(struct wire__rd *r, struct wire_msg *m)
{
	uint64_t flags;
	uint32_t extra;

	switch (m->type) {
	case WIRE_MSG_PING:
	case WIRE_MSG_PONG:
		return wire__rd_uint(r, UINT64_MAX, &m->nonce);
	case WIRE_MSG_CHECK:
	case WIRE_MSG_CHECK_REPLY:
	case WIRE_MSG_ADJUST:
		return get_items(r, m);
	case WIRE_MSG_REPLICATE:
	case WIRE_MSG_HANDOFF:
		if (rd_fields(r, 3, &extra) < 0 ||
		    wire__rd_uint(r, UINT64_MAX, &m->now_ms) < 0 ||
		    wire__rd_uint(r, UINT8_MAX, &flags) < 0)
			return -EPROTO;
		m->flags = (uint8_t)flags;
		{
			int err = get_items(r, m);

			return err < 0 ? err : wire__rd_skip(r, extra);
		}
	default:
		return -ENOMSG;
	}
}

int wire_decode(const uint8_t *buf, size_t len, struct wire_msg *out)
{
	struct wire__rd r = { buf, buf + len };
	uint64_t version, type;
	uint32_t extra;
	int err;

	memset(out, 0, sizeof(*out));
	if (!buf)
		return -EPROTO;
	if (rd_fields(&r, 3, &extra) < 0 || wire__rd_uint(&r, UINT8_MAX, &version) < 0)
		return -EPROTO;
	if (version != WIRE_VERSION_MAJOR)
		return -EPROTONOSUPPORT;
	if (wire__rd_uint(&r, UINT8_MAX, &type) < 0)
		return -EPROTO;
	out->type = (uint8_t)type;
	if ((err = get_body(&r, out)) < 0)
		goto fail;
	if (wire__rd_skip(&r, extra) < 0 || r.p != r.end) {
		err = -EPROTO;
		goto fail;
	}
	return 0;
fail:
	wire_msg_close(out);
	memset(out, 0, sizeof(*out));
	return err;
}

void wire_msg_close(struct wire_msg *m)
{
	if (!m)
		return;
	free(m->checks);
	m->checks = NULL;
	m->n = 0;
}

void wire_state_from_dense(struct wire_key_state *st, uint32_t head,
			   const uint32_t count[WIRE_SLOTS][WIRE_DIMS])
{
	st->head = head;
	st->nslots = 0;
	for (uint32_t age = 0; age < WIRE_SLOTS && age <= head; age++) {
		uint32_t b = head - age;
		const uint32_t *c = count[b % WIRE_SLOTS];
		struct wire_slot *s;

		if (!c[0] && !c[1] && !c[2])
			continue;
		s = &st->slots[st->nslots++];
		s->bucket = b;
		for (unsigned d = 0; d < WIRE_DIMS; d++)
			s->count[d] = c[d];
	}
}
