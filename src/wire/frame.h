/* frame.h — TCP framing: every frame is a 4-byte big-endian payload length, then the payload.
 *
 * The length counts the payload only; it is never 0 and never above the reader's maximum
 * (WIRE_FRAME_MAX once a session is up, WIRE_HELLO_MAX during the handshake). Pure. */
#ifndef LLMLIMIT_WIRE_FRAME_H
#define LLMLIMIT_WIRE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define WIRE_FRAME_HDR 4u
#define WIRE_FRAME_MAX (1024u * 1024u)  /* largest payload: 1 MiB */

/* Incremental frame reader for one connection: takes the byte stream in chunks of any size
 * (partial headers, several frames in one chunk) and hands back whole frames. Caller-allocated;
 * the fields are private. */
struct wire_frame_reader {
	size_t max;         /* largest payload accepted */
	uint8_t hdr[WIRE_FRAME_HDR];
	uint8_t hdr_len;    /* header bytes seen so far */
	size_t need;        /* payload length of the current frame, valid once hdr_len == 4 */
	uint8_t *buf;       /* owned: the current payload when it spans chunks */
	size_t have;
	size_t cap;
	int err;            /* sticky: once a stream is bad it stays bad */
};

/* Initialises a reader accepting payloads of 1..max bytes (max <= WIRE_FRAME_MAX). */
void wire_frame_reader_init(struct wire_frame_reader *r, size_t max);
/* Frees the buffer. NULL-safe; the reader may be initialised again. */
void wire_frame_reader_close(struct wire_frame_reader *r);
/* Changes the maximum for the frames that follow (after the handshake). */
void wire_frame_reader_set_max(struct wire_frame_reader *r, size_t max);

/* Consumes bytes from data[0..len) until one frame is complete or the data runs out, and sets
 * *used to the number of bytes consumed. Returns 1 with *frame and *frame_len set to the payload
 * (it points into data or into the reader and stays valid until the next call on r or its
 * close), 0 when all of data was consumed without completing a frame, or an error:
 * -EMSGSIZE for a length above the maximum, -EPROTO for a zero length, -ENOMEM. Errors are
 * sticky: the stream cannot be resynchronised, close the connection. Typical use:
 *     while (len > 0 && (rc = wire_frame_read(r, p, len, &used, &f, &flen)) >= 0) {
 *             p += used, len -= used;
 *             if (rc == 1) handle(f, flen);
 *     } */
__attribute__((warn_unused_result))
int wire_frame_read(struct wire_frame_reader *r, const uint8_t *data, size_t len, size_t *used,
		    const uint8_t **frame, size_t *frame_len);

/* Appends a frame (header + payload) to out. 0, -EMSGSIZE (len 0 or > WIRE_FRAME_MAX) or
 * -ENOMEM; out is unchanged on failure. */
__attribute__((warn_unused_result))
int wire_frame_append(struct buf *out, const void *payload, size_t len);

/* Writes the 4-byte header for a payload of len bytes. 0 or -EMSGSIZE. */
__attribute__((warn_unused_result))
int wire_frame_header(uint8_t hdr[WIRE_FRAME_HDR], size_t len);

#endif
