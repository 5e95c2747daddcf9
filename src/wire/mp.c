/* mp.c — the strict msgpack reader and the buffer-backed writer shared by the wire codecs.
 *
 * Decoding uses this reader rather than msgpack_unpack: msgpack_unpack builds an object tree
 * in a zone (allocation proportional to the input) and leaves the type checks to the caller,
 * while the reader checks each field in place, copies nothing and allocates nothing. Encoding
 * uses msgpack-c's packer, which always picks the shortest form. */
#include "wire/internal.h"

#include <errno.h>
#include <string.h>

#include "wire/wire.h"

/* Deepest nesting rd_skip follows inside an unknown field. */
#define SKIP_DEPTH 8

static size_t left(const struct wire__rd *r)
{
	return (size_t)(r->end - r->p);
}

/* Big-endian unsigned of w bytes at p (w <= 8). */
static uint64_t get_be(const uint8_t *p, unsigned w)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < w; i++)
		v = v << 8 | p[i];
	return v;
}

/* Reads any msgpack integer: *neg false with *u, or *neg true with *s < 0. */
static int rd_integer(struct wire__rd *r, bool *neg, uint64_t *u, int64_t *s)
{
	unsigned w;
	bool is_signed;
	uint64_t v;
	uint8_t t;

	if (left(r) < 1)
		return -EPROTO;
	t = r->p[0];
	if (t <= 0x7f) {
		*neg = false;
		*u = t;
		r->p++;
		return 0;
	}
	if (t >= 0xe0) {
		*neg = true;
		*s = (int64_t)t - 256;
		r->p++;
		return 0;
	}
	if (t >= 0xcc && t <= 0xcf) {
		is_signed = false;
		w = 1u << (t - 0xcc);
	} else if (t >= 0xd0 && t <= 0xd3) {
		is_signed = true;
		w = 1u << (t - 0xd0);
	} else {
		return -EPROTO;
	}
	if (left(r) < 1 + w)
		return -EPROTO;
	v = get_be(r->p + 1, w);
	r->p += 1 + w;
	if (is_signed) {
		int64_t sv;

		if (w < 8) {
			uint64_t sign = 1ull << (8 * w - 1);

			sv = (int64_t)(v ^ sign) - (int64_t)sign;
		} else if (v > (uint64_t)INT64_MAX) {
			sv = -(int64_t)(~v) - 1;
		} else {
			sv = (int64_t)v;
		}
		if (sv < 0) {
			*neg = true;
			*s = sv;
			return 0;
		}
		v = (uint64_t)sv;
	}
	*neg = false;
	*u = v;
	return 0;
}

int wire__rd_uint(struct wire__rd *r, uint64_t max, uint64_t *v)
{
	struct wire__rd save = *r;
	bool neg;
	uint64_t u = 0;
	int64_t s = 0;

	if (rd_integer(r, &neg, &u, &s) < 0 || neg || u > max) {
		*r = save;
		return -EPROTO;
	}
	*v = u;
	return 0;
}

int wire__rd_int(struct wire__rd *r, int64_t min, int64_t max, int64_t *v)
{
	struct wire__rd save = *r;
	bool neg;
	uint64_t u = 0;
	int64_t s = 0;

	if (rd_integer(r, &neg, &u, &s) < 0)
		goto bad;
	if (!neg) {
		if (u > (uint64_t)INT64_MAX)
			goto bad;
		s = (int64_t)u;
	}
	if (s < min || s > max)
		goto bad;
	*v = s;
	return 0;
bad:
	*r = save;
	return -EPROTO;
}

int wire__rd_bool(struct wire__rd *r, bool *v)
{
	if (left(r) < 1 || (r->p[0] != 0xc2 && r->p[0] != 0xc3))
		return -EPROTO;
	*v = r->p[0] == 0xc3;
	r->p++;
	return 0;
}

int wire__rd_array(struct wire__rd *r, uint32_t *n)
{
	uint64_t count;
	size_t hdr;
	uint8_t t;

	if (left(r) < 1)
		return -EPROTO;
	t = r->p[0];
	if (t >= 0x90 && t <= 0x9f) {
		count = t & 0x0fu;
		hdr = 1;
	} else if (t == 0xdc || t == 0xdd) {
		hdr = t == 0xdc ? 3 : 5;
		if (left(r) < hdr)
			return -EPROTO;
		count = get_be(r->p + 1, (unsigned)hdr - 1);
	} else {
		return -EPROTO;
	}
	if (count > left(r) - hdr)
		return -EPROTO;
	r->p += hdr;
	*n = (uint32_t)count;
	return 0;
}

/* Reads the header of a bin (want_str false) or str and checks its length. */
static int rd_bytes(struct wire__rd *r, bool want_str, size_t min, size_t max,
		    const uint8_t **p, size_t *len)
{
	size_t hdr, n;
	uint8_t t;

	if (left(r) < 1)
		return -EPROTO;
	t = r->p[0];
	if (want_str && t >= 0xa0 && t <= 0xbf) {
		hdr = 1;
		n = t & 0x1fu;
	} else if ((want_str && t >= 0xd9 && t <= 0xdb) || (!want_str && t >= 0xc4 && t <= 0xc6)) {
		unsigned w = 1u << (t - (want_str ? 0xd9 : 0xc4));

		hdr = 1 + w;
		if (left(r) < hdr)
			return -EPROTO;
		n = (size_t)get_be(r->p + 1, w);
	} else {
		return -EPROTO;
	}
	if (n > left(r) - hdr || n < min || n > max)
		return -EPROTO;
	*p = r->p + hdr;
	*len = n;
	r->p += hdr + n;
	return 0;
}

int wire__rd_bin(struct wire__rd *r, size_t min, size_t max, const uint8_t **p, size_t *len)
{
	return rd_bytes(r, false, min, max, p, len);
}

int wire__rd_str(struct wire__rd *r, size_t min, size_t max, const char **p, size_t *len)
{
	const uint8_t *q;
	int err = rd_bytes(r, true, min, max, &q, len);

	if (err == 0)
		*p = (const char *)q;
	return err;
}

/* Sizes the object at r->p without moving: its header bytes, its payload bytes (bin, str,
 * ext) and its child objects (array, map). Checks only that the header is present. */
static int object_head(const struct wire__rd *r, size_t *hdr, uint64_t *body,
		       uint64_t *children)
{
	unsigned w;
	uint64_t n;
	uint8_t t;

	*body = 0;
	*children = 0;
	*hdr = 1;
	if (left(r) < 1)
		return -EPROTO;
	t = r->p[0];
	if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
		return 0;
	if (t >= 0x80 && t <= 0x9f) {                  /* fixmap, fixarray */
		*children = (t & 0x0fu) * (t < 0x90 ? 2u : 1u);
		return 0;
	}
	if (t >= 0xa0 && t <= 0xbf) {                  /* fixstr */
		*body = t & 0x1fu;
		return 0;
	}
	switch (t) {
	case 0xca: *hdr = 5; return 0;                 /* float 32 */
	case 0xcb: *hdr = 9; return 0;                 /* float 64 */
	case 0xcc: case 0xd0: *hdr = 2; return 0;      /* (u)int 8 */
	case 0xcd: case 0xd1: *hdr = 3; return 0;      /* (u)int 16 */
	case 0xce: case 0xd2: *hdr = 5; return 0;      /* (u)int 32 */
	case 0xcf: case 0xd3: *hdr = 9; return 0;      /* (u)int 64 */
	case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
		*hdr = 2 + (1u << (t - 0xd4));          /* fixext: type byte + 1..16 */
		return 0;
	case 0xc4: case 0xc5: case 0xc6:               /* bin 8/16/32 */
		w = 1u << (t - 0xc4);
		break;
	case 0xc7: case 0xc8: case 0xc9:               /* ext 8/16/32 */
		w = 1u << (t - 0xc7);
		break;
	case 0xd9: case 0xda: case 0xdb:               /* str 8/16/32 */
		w = 1u << (t - 0xd9);
		break;
	case 0xdc: case 0xde:                          /* array 16, map 16 */
		w = 2;
		break;
	case 0xdd: case 0xdf:                          /* array 32, map 32 */
		w = 4;
		break;
	default:                                       /* 0xc1 is never used */
		return -EPROTO;
	}
	if (left(r) < 1 + w)
		return -EPROTO;
	*hdr = 1 + w;
	n = get_be(r->p + 1, w);
	if (t >= 0xdc)
		*children = n * (t >= 0xde ? 2u : 1u);
	else if (t >= 0xc7 && t <= 0xc9)
		*body = n + 1;                          /* the ext type byte, then the data */
	else
		*body = n;
	return 0;
}

static int skip_one(struct wire__rd *r, unsigned depth)
{
	uint64_t body, children;
	size_t hdr;

	if (object_head(r, &hdr, &body, &children) < 0 || hdr > left(r) || body > left(r) - hdr)
		return -EPROTO;
	r->p += hdr + body;
	if (children == 0)
		return 0;
	/* Each child takes at least one byte, so the loop is bounded by the input. */
	if (depth >= SKIP_DEPTH || children > left(r))
		return -EPROTO;
	for (uint64_t i = 0; i < children; i++)
		if (skip_one(r, depth + 1) < 0)
			return -EPROTO;
	return 0;
}

int wire__rd_skip(struct wire__rd *r, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (skip_one(r, 0) < 0)
			return -EPROTO;
	return 0;
}

int wire__rd_dims_u(struct wire__rd *r, uint64_t max, uint64_t *v)
{
	uint32_t n;

	if (wire__rd_array(r, &n) < 0 || n != WIRE_DIMS)
		return -EPROTO;
	for (unsigned d = 0; d < WIRE_DIMS; d++)
		if (wire__rd_uint(r, max, &v[d]) < 0)
			return -EPROTO;
	return 0;
}

static int wr_append(void *data, const char *p, size_t n)
{
	struct wire__wr *w = data;

	if (w->err)
		return -1;
	if (buf_append(w->b, p, n) < 0) {
		w->err = -ENOMEM;
		return -1;
	}
	return 0;
}

void wire__wr_init(struct wire__wr *w, struct buf *b)
{
	w->b = b;
	w->start = b->len;
	w->err = 0;
	msgpack_packer_init(&w->pk, w, wr_append);
}

int wire__wr_finish(struct wire__wr *w)
{
	if (w->err) {
		w->b->len = w->start;
		if (w->b->cap)
			w->b->data[w->start] = '\0';
	}
	return w->err;
}

void wire__wr_dims_u(struct wire__wr *w, const uint64_t *v)
{
	msgpack_pack_array(&w->pk, WIRE_DIMS);
	for (unsigned d = 0; d < WIRE_DIMS; d++)
		msgpack_pack_uint64(&w->pk, v[d]);
}
