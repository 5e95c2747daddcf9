/* gossip_msg.c — the plaintext codec of gossip messages: [type, seq, target, [member...]],
 * member = [id, host, gossip_port, peer_port, http_port, incarnation, state]. Sealing is in
 * gossip_seal.c. */
#include "wire/gossip_msg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wire/internal.h"

#define BODY_FIELDS 4u
#define MEMBER_FIELDS 7u

static size_t updates_max(uint8_t type)
{
	return type >= WIRE_GOSSIP_PUSH_PULL ? WIRE_GOSSIP_MEMBERS_MAX : WIRE_GOSSIP_UPDATES_MAX;
}

static bool type_ok(uint64_t type)
{
	return type >= WIRE_GOSSIP_PING && type <= WIRE_GOSSIP_PUSH_PULL_REPLY;
}

/* Hosts follow the node id rule (printable, no spaces) with a longer limit. */
static bool host_ok(const char *s, size_t len)
{
	if (len == 0 || len > WIRE_HOST_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

static bool member_ok(const struct wire_member *m)
{
	return wire__id_ok(m->id, strnlen(m->id, sizeof(m->id)), false) &&
	       host_ok(m->host, strnlen(m->host, sizeof(m->host))) &&
	       m->state <= WIRE_MEMBER_LEFT;
}

static int validate(const struct wire_gossip *g)
{
	size_t tlen = strnlen(g->target, sizeof(g->target));

	if (!type_ok(g->type) || !wire__id_ok(g->target, tlen, true))
		return -EINVAL;
	if (g->nupdates > updates_max(g->type) || (g->nupdates && !g->updates))
		return -EINVAL;
	for (size_t i = 0; i < g->nupdates; i++)
		if (!member_ok(&g->updates[i]))
			return -EINVAL;
	return 0;
}

static void put_str(struct wire__wr *w, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(&w->pk, n);
	msgpack_pack_str_body(&w->pk, s, n);
}

static void put_member(struct wire__wr *w, const struct wire_member *m)
{
	msgpack_pack_array(&w->pk, MEMBER_FIELDS);
	put_str(w, m->id);
	put_str(w, m->host);
	msgpack_pack_uint16(&w->pk, m->gossip_port);
	msgpack_pack_uint16(&w->pk, m->peer_port);
	msgpack_pack_uint16(&w->pk, m->http_port);
	msgpack_pack_uint64(&w->pk, m->incarnation);
	msgpack_pack_uint8(&w->pk, m->state);
}

static size_t array_hdr_len(size_t n)
{
	return n < 16 ? 1 : n < 65536 ? 3 : 5;
}

int wire__gossip_encode(const struct wire_gossip *g, size_t limit, bool truncate,
			struct buf *out, size_t *nsent)
{
	struct wire__wr w, mw;
	struct buf members;
	size_t k = 0, prefix;
	int err;

	if ((err = validate(g)) < 0)
		return err;
	buf_init(&members);
	wire__wr_init(&w, out);
	msgpack_pack_array(&w.pk, BODY_FIELDS);
	msgpack_pack_uint8(&w.pk, g->type);
	msgpack_pack_uint64(&w.pk, g->seq);
	put_str(&w, g->target);
	prefix = out->len - w.start;
	/* Members are encoded apart first: the array header in front of them depends on how
	 * many fit. */
	wire__wr_init(&mw, &members);
	for (; k < g->nupdates; k++) {
		size_t save = members.len;

		put_member(&mw, &g->updates[k]);
		if (mw.err)
			break;
		if (prefix + array_hdr_len(k + 1) + members.len > limit) {
			members.len = save;
			break;
		}
	}
	if (mw.err)
		w.err = mw.err;
	else if ((k < g->nupdates && !truncate) || prefix + array_hdr_len(k) + members.len > limit)
		w.err = -EMSGSIZE;
	if (!w.err) {
		msgpack_pack_array(&w.pk, k);
		if (members.len && buf_append(out, members.data, members.len) < 0)
			w.err = -ENOMEM;
	}
	buf_close(&members);
	if ((err = wire__wr_finish(&w)) < 0)
		return err;
	if (nsent)
		*nsent = k;
	return 0;
}

int wire_gossip_encode(const struct wire_gossip *msg, struct buf *out)
{
	return wire__gossip_encode(msg, SIZE_MAX, false, out, NULL);
}

static int rd_fields(struct wire__rd *r, uint32_t want, uint32_t *extra)
{
	uint32_t n;

	if (wire__rd_array(r, &n) < 0 || n < want)
		return -EPROTO;
	*extra = n - want;
	return 0;
}

/* Reads a str with the given checker into a NUL-terminated fixed array of cap bytes. */
static int rd_cstr(struct wire__rd *r, char *dst, size_t cap, bool (*ok)(const char *, size_t))
{
	const char *s;
	size_t n;

	if (wire__rd_str(r, 0, cap - 1, &s, &n) < 0 || !ok(s, n))
		return -EPROTO;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

static bool id_ok(const char *s, size_t n)
{
	return wire__id_ok(s, n, false);
}

static bool target_ok(const char *s, size_t n)
{
	return wire__id_ok(s, n, true);
}

static int get_member(struct wire__rd *r, struct wire_member *m)
{
	uint64_t gp, pp, hp, state;
	uint32_t extra;

	if (rd_fields(r, MEMBER_FIELDS, &extra) < 0 ||
	    rd_cstr(r, m->id, sizeof(m->id), id_ok) < 0 ||
	    rd_cstr(r, m->host, sizeof(m->host), host_ok) < 0 ||
	    wire__rd_uint(r, UINT16_MAX, &gp) < 0 ||
	    wire__rd_uint(r, UINT16_MAX, &pp) < 0 ||
	    wire__rd_uint(r, UINT16_MAX, &hp) < 0 ||
	    wire__rd_uint(r, UINT64_MAX, &m->incarnation) < 0 ||
	    wire__rd_uint(r, WIRE_MEMBER_LEFT, &state) < 0)
		return -EPROTO;
	m->gossip_port = (uint16_t)gp;
	m->peer_port = (uint16_t)pp;
	m->http_port = (uint16_t)hp;
	m->state = (uint8_t)state;
	return wire__rd_skip(r, extra);
}

int wire_gossip_decode(const uint8_t *buf, size_t len, struct wire_gossip *out)
{
	struct wire__rd r = { buf, buf + len };
	uint64_t type;
	uint32_t extra, n;
	int err = -EPROTO;

	memset(out, 0, sizeof(*out));
	if (!buf || rd_fields(&r, BODY_FIELDS, &extra) < 0 ||
	    wire__rd_uint(&r, UINT8_MAX, &type) < 0)
		return -EPROTO;
	if (!type_ok(type))
		return -ENOMSG;
	out->type = (uint8_t)type;
	if (wire__rd_uint(&r, UINT64_MAX, &out->seq) < 0 ||
	    rd_cstr(&r, out->target, sizeof(out->target), target_ok) < 0 ||
	    wire__rd_array(&r, &n) < 0)
		goto fail;
	if (n > updates_max(out->type)) {
		err = -EMSGSIZE;
		goto fail;
	}
	if (n) {
		if (!(out->updates = calloc(n, sizeof(*out->updates)))) {
			err = -ENOMEM;
			goto fail;
		}
		out->nupdates = n;
	}
	for (uint32_t i = 0; i < n; i++)
		if (get_member(&r, &out->updates[i]) < 0)
			goto fail;
	if (wire__rd_skip(&r, extra) < 0 || r.p != r.end)
		goto fail;
	return 0;
fail:
	wire_gossip_close(out);
	memset(out, 0, sizeof(*out));
	return err;
}

void wire_gossip_close(struct wire_gossip *msg)
{
	if (!msg)
		return;
	free(msg->updates);
	msg->updates = NULL;
	msg->nupdates = 0;
}
