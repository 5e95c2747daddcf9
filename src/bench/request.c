#include "bench/request.h"

#include <errno.h>
#include <string.h>

/* Plain ASCII words: nothing to escape, so the JSON string has exactly the prompt's bytes. */
static const char filler[] = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do ";

size_t bench_prompt_bytes(const struct bench_opts *o)
{
	if (o->endpoint == BENCH_EP_CHAT)
		return o->prompt_tokens > 7 ? ((size_t)o->prompt_tokens - 7) * 4 : 0;
	if (o->endpoint == BENCH_EP_MODELS)
		return 0;
	return (size_t)o->prompt_tokens * 4;
}

static int put_prompt(struct buf *b, size_t n)
{
	size_t chunk;
	int err;

	if ((err = buf_reserve(b, n + 2)) < 0)
		return err;
	b->data[b->len++] = '"';
	while (n) {
		chunk = n < sizeof(filler) - 1 ? n : sizeof(filler) - 1;
		memcpy(b->data + b->len, filler, chunk);
		b->len += chunk;
		n -= chunk;
	}
	b->data[b->len++] = '"';
	b->data[b->len] = '\0';
	return 0;
}

int bench_body_build(const struct bench_opts *o, struct buf *body)
{
	const char *model = o->model ? o->model : "gpt-4o-mini";
	int err = 0;

	if (o->endpoint == BENCH_EP_MODELS)
		return 0;
	err |= buf_puts(body, "{\"model\":");
	err |= buf_put_json_str(body, model, strlen(model));
	switch (o->endpoint) {
	case BENCH_EP_CHAT:
		err |= buf_puts(body, ",\"messages\":[{\"role\":\"user\",\"content\":");
		err |= put_prompt(body, bench_prompt_bytes(o));
		err |= buf_puts(body, "}]");
		break;
	case BENCH_EP_COMPLETIONS:
		err |= buf_puts(body, ",\"prompt\":");
		err |= put_prompt(body, bench_prompt_bytes(o));
		break;
	default:
		err |= buf_puts(body, ",\"input\":");
		err |= put_prompt(body, bench_prompt_bytes(o));
		break;
	}
	if (o->max_tokens && o->endpoint != BENCH_EP_EMBEDDINGS)
		err |= buf_printf(body, ",\"max_tokens\":%u", o->max_tokens);
	if (o->stream)
		err |= buf_puts(body, ",\"stream\":true");
	err |= buf_puts(body, "}");
	return err ? -ENOMEM : 0;
}

int bench_tmpl_build(struct bench_tmpl *t, const struct bench_opts *o,
		     const struct bench_url *node)
{
	struct buf body;
	int err = 0;

	buf_init(&t->head);
	buf_init(&t->tail);
	buf_init(&body);
	t->opts = o;
	t->prefix_len = o->key_prefix ? strlen(o->key_prefix) : 0;
	if (bench_body_build(o, &body) < 0)
		goto out_nomem;
	err |= buf_printf(&t->head, "%s %s HTTP/1.1\r\nHost: %s\r\n",
			  o->endpoint == BENCH_EP_MODELS ? "GET" : "POST",
			  bench_endpoint_path(o->endpoint), node->hosthdr);
	if (bench_opts_nkeys(o)) {
		err |= buf_puts(&t->head, "Authorization: Bearer ");
		err |= buf_puts(&t->tail, "\r\n");
	}
	if (o->endpoint != BENCH_EP_MODELS)
		err |= buf_printf(&t->tail,
				  "Content-Type: application/json\r\nContent-Length: %zu\r\n",
				  body.len);
	err |= buf_puts(&t->tail, "\r\n");
	err |= buf_append(&t->tail, body.data, body.len);
	if (err)
		goto out_nomem;
	buf_close(&body);
	return 0;
out_nomem:
	buf_close(&body);
	bench_tmpl_close(t);
	return -ENOMEM;
}

void bench_tmpl_close(struct bench_tmpl *t)
{
	buf_close(&t->head);
	buf_close(&t->tail);
}

/* Decimal digits of v into the end of tmp[24]; returns the first digit. */
static char *u64_digits(uint64_t v, char *tmp_end)
{
	char *p = tmp_end;

	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return p;
}

size_t bench_key_name(const struct bench_opts *o, uint64_t key, char *out, size_t outlen)
{
	char tmp[24], *d;
	size_t plen, dlen, n;

	if (!bench_opts_nkeys(o)) {
		if (outlen)
			out[0] = '\0';
		return 0;
	}
	if (!o->key_count) {
		n = o->key_lens[key];
		if (outlen) {
			size_t c = n < outlen - 1 ? n : outlen - 1;

			memcpy(out, o->keys[key], c);
			out[c] = '\0';
		}
		return n;
	}
	d = u64_digits(key, tmp + sizeof(tmp));
	dlen = (size_t)(tmp + sizeof(tmp) - d);
	plen = strlen(o->key_prefix);
	if (outlen) {
		size_t c = plen < outlen - 1 ? plen : outlen - 1;

		memcpy(out, o->key_prefix, c);
		n = dlen < outlen - 1 - c ? dlen : outlen - 1 - c;
		memcpy(out + c, d, n);
		out[c + n] = '\0';
	}
	return plen + dlen;
}

int bench_tmpl_append(const struct bench_tmpl *t, uint64_t key, struct buf *out)
{
	const struct bench_opts *o = t->opts;
	const char *k = NULL;
	char tmp[24], *d = NULL;
	size_t klen = 0, plen = 0, dlen = 0;

	if (o->key_count) {
		d = u64_digits(key, tmp + sizeof(tmp));
		dlen = (size_t)(tmp + sizeof(tmp) - d);
		k = o->key_prefix;
		plen = t->prefix_len;
	} else if (o->nkeys_listed) {
		k = o->keys[key];
		klen = o->key_lens[key];
	}
	if (buf_reserve(out, t->head.len + klen + plen + dlen + t->tail.len) < 0)
		return -ENOMEM;
	memcpy(out->data + out->len, t->head.data, t->head.len);
	out->len += t->head.len;
	if (klen) {
		memcpy(out->data + out->len, k, klen);
		out->len += klen;
	}
	if (plen) {
		memcpy(out->data + out->len, k, plen);
		out->len += plen;
	}
	if (dlen) {
		memcpy(out->data + out->len, d, dlen);
		out->len += dlen;
	}
	memcpy(out->data + out->len, t->tail.data, t->tail.len);
	out->len += t->tail.len;
	out->data[out->len] = '\0';
	return 0;
}
