/* request.h — the bytes of the benchmark's requests. Pure: no I/O.
 *
 * Every request to one node is identical but for the API key, so each node gets a template cut
 * at the key: head (request line, Host, "Authorization: Bearer "), the key, tail (the other
 * headers, the blank line, the body). Appending a request is then three memcpy calls. */
#ifndef LLMLIMIT_BENCH_REQUEST_H
#define LLMLIMIT_BENCH_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "bench/options.h"
#include "util/buf.h"

struct bench_tmpl {
	struct buf head;   /* owned */
	struct buf tail;   /* owned */
	const struct bench_opts *opts;  /* borrowed: key names come from it */
	size_t prefix_len;              /* strlen(opts->key_prefix) for generated keys */
};

/* Builds the template for requests to `node` (borrowed; only read here). Borrows o for the
 * template's lifetime. 0 or -ENOMEM (nothing to close then). */
__attribute__((warn_unused_result))
int bench_tmpl_build(struct bench_tmpl *t, const struct bench_opts *o,
		     const struct bench_url *node);
void bench_tmpl_close(struct bench_tmpl *t);

/* Appends the request for key index `key` (taken modulo nothing: key < bench_opts_nkeys(),
 * ignored when there are no keys) to out. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int bench_tmpl_append(const struct bench_tmpl *t, uint64_t key, struct buf *out);

/* Writes key `key`'s name (NUL-terminated, truncated to outlen-1) and returns its full length.
 * 0 when there are no keys. */
size_t bench_key_name(const struct bench_opts *o, uint64_t key, char *out, size_t outlen);

/* The JSON body for o's endpoint (empty for models). Appends to body. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int bench_body_build(const struct bench_opts *o, struct buf *body);

/* Bytes of prompt text the body carries for o->prompt_tokens (see --help). */
size_t bench_prompt_bytes(const struct bench_opts *o);

#endif
