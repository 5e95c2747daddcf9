/* frame.c — length-prefixed framing and the incremental frame reader. */
#include "wire/frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wire/internal.h"

/* A payload buffer larger than this is released after its frame, so one big frame does not
 * pin a megabyte per connection for its lifetime. */
#define KEEP_BYTES (64u * 1024u)
#define MIN_ALLOC 4096u

void wire_frame_reader_init(struct wire_frame_reader *r, size_t max)
{
	memset(r, 0, sizeof(*r));
	wire_frame_reader_set_max(r, max);
}

void wire_frame_reader_close(struct wire_frame_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	r->buf = NULL;
	r->cap = 0;
	r->have = 0;
	r->hdr_len = 0;
}

void wire_frame_reader_set_max(struct wire_frame_reader *r, size_t max)
{
	r->max = max > WIRE_FRAME_MAX ? WIRE_FRAME_MAX : max;
}

/* Makes room for `want` payload bytes in total; the allocation grows with the bytes that
 * actually arrive, not with the length a peer announces. */
static int grow(struct wire_frame_reader *r, size_t want)
{
	size_t cap = r->cap ? r->cap : MIN_ALLOC;
	uint8_t *p;

	if (want <= r->cap)
		return 0;
	while (cap < want)
		cap *= 2;
	if (cap > r->need)
		cap = r->need;
	p = realloc(r->buf, cap);
	if (!p)
		return -ENOMEM;
	r->buf = p;
	r->cap = cap;
	return 0;
}

static int fail(struct wire_frame_reader *r, int err)
{
	r->err = err;
	return err;
}

int wire_frame_read(struct wire_frame_reader *r, const uint8_t *data, size_t len, size_t *used,
		    const uint8_t **frame, size_t *frame_len)
{
	size_t pos = 0, n;

	*used = 0;
	if (r->err)
		return r->err;
	if (r->hdr_len == 0 && r->cap > KEEP_BYTES) {
		free(r->buf);
		r->buf = NULL;
		r->cap = 0;
	}
	while (r->hdr_len < WIRE_FRAME_HDR) {
		if (pos == len) {
			*used = pos;
			return 0;
		}
		r->hdr[r->hdr_len++] = data[pos++];
		if (r->hdr_len == WIRE_FRAME_HDR) {
			r->need = wire__get_be32(r->hdr);
			r->have = 0;
			if (r->need == 0)
				return fail(r, -EPROTO);
			if (r->need > r->max)
				return fail(r, -EMSGSIZE);
		}
	}
	n = len - pos;
	if (r->have == 0 && n >= r->need) {
		/* The whole payload is in this chunk: hand it out without copying. */
		*frame = data + pos;
		*frame_len = r->need;
		*used = pos + r->need;
		r->hdr_len = 0;
		return 1;
	}
	if (n > r->need - r->have)
		n = r->need - r->have;
	if (grow(r, r->have + n) < 0)
		return fail(r, -ENOMEM);
	if (n)
		memcpy(r->buf + r->have, data + pos, n);
	r->have += n;
	*used = pos + n;
	if (r->have < r->need)
		return 0;
	*frame = r->buf;
	*frame_len = r->need;
	r->hdr_len = 0;
	r->have = 0;
	return 1;
}

int wire_frame_header(uint8_t hdr[WIRE_FRAME_HDR], size_t len)
{
	if (len == 0 || len > WIRE_FRAME_MAX)
		return -EMSGSIZE;
	wire__be32(hdr, (uint32_t)len);
	return 0;
}

int wire_frame_append(struct buf *out, const void *payload, size_t len)
{
	uint8_t hdr[WIRE_FRAME_HDR];
	int err;

	if ((err = wire_frame_header(hdr, len)) < 0)
		return err;
	if ((err = buf_reserve(out, sizeof(hdr) + len)) < 0)
		return err;
	memcpy(out->data + out->len, hdr, sizeof(hdr));
	memcpy(out->data + out->len + sizeof(hdr), payload, len);
	out->len += sizeof(hdr) + len;
	out->data[out->len] = '\0';
	return 0;
}
