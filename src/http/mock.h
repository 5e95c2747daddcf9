/* mock.h — the built-in backend: deterministic OpenAI-shaped responses. Pure (jansson for the
 * embeddings input only); the caller passes ids and times.
 *
 * Output length. For each choice,
 *     completion_tokens = min(cap, max(1, ceil(prompt_tokens / 2)), MOCK_MAX_CHOICE_TOKENS)
 * where cap is the request's max_completion_tokens / max_tokens, or the key's tier
 * default_max_tokens when absent (16 for /v1/completions, as OpenAI's default). The content is
 * that many words from a fixed word list, separated by single spaces; each word counts as
 * exactly one token. finish_reason is "length" when cap or the ceiling bound the length, else
 * "stop". Every choice has the same length, and `usage` reports exactly what is charged:
 * prompt_tokens = the input estimate (openai.h), completion_tokens = the sum over the choices.
 * MOCK_MAX_CHOICE_TOKENS keeps a request with a huge max_tokens on an unlimited key from
 * turning a small body into a huge response.
 *
 * Streaming (SSE). Each event is "data: <json>\n\n". Per choice, in order: a chunk whose delta
 * is {"role":"assistant","content":"","refusal":null} (chat only), content chunks of up to
 * MOCK_STREAM_WORDS words (the pieces concatenate to the non-streamed content), and a chunk with
 * an empty delta (chat) or empty text (completions) carrying finish_reason. Then, when
 * include_usage is set, a chunk with "choices":[] carrying `usage` (every other chunk then
 * carries "usage":null), and finally "data: [DONE]\n\n".
 *
 * Embeddings: one unit-length vector per input, seeded by the input's bytes (the same input
 * always gives the same vector), values rounded to 6 decimals; base64 is the little-endian
 * float32 array of those values, as OpenAI sends it. */
#ifndef LLMLIMIT_HTTP_MOCK_H
#define LLMLIMIT_HTTP_MOCK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/buf.h"

#define MOCK_MAX_CHOICE_TOKENS 4096u
#define MOCK_STREAM_WORDS 8u
#define MOCK_FINGERPRINT "fp_llmlimit"

/* Tokens one choice produces (the rule above); *length tells whether finish_reason is
 * "length". */
uint64_t mock_choice_tokens(uint64_t prompt_tokens, uint64_t cap, bool *length);

/* One generated response. */
struct mock_call {
	const char *model;       /* echoed; may contain any bytes (escaped) */
	size_t model_len;
	uint64_t id;             /* unique per response; becomes "chatcmpl-<16 hex>" */
	uint64_t created;        /* unix seconds */
	uint64_t prompt_tokens;
	uint64_t cap;            /* per choice */
	uint32_t choices;        /* >= 1 */
	bool stream;
	bool include_usage;
};

/* Appends a chat.completion body (or the SSE stream of chat.completion.chunk events) to out and
 * sets *completion_tokens to the tokens produced over all choices. 0 or -ENOMEM. */
int mock_chat(struct buf *out, const struct mock_call *c, uint64_t *completion_tokens);
/* The same for /v1/completions (text_completion, "cmpl-" ids). */
int mock_completions(struct buf *out, const struct mock_call *c, uint64_t *completion_tokens);

/* Appends an embeddings list for a validated `input` (openai.h). 0 or -ENOMEM. */
int mock_embeddings(struct buf *out, const json_t *input, const char *model, size_t model_len,
		    uint32_t dims, bool base64, uint64_t prompt_tokens);

/* GET /v1/models: the advertised models (the mock answers to any model name). */
int mock_models(struct buf *out);
/* GET /v1/models/{id}: the model object for any id. */
int mock_model(struct buf *out, const char *id, size_t id_len);

#endif
