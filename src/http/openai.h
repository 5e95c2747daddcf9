/* openai.h — the OpenAI request model: parse and validate a request body of
 * /v1/chat/completions, /v1/completions or /v1/embeddings, and estimate its input tokens.
 * Pure (jansson only).
 *
 * Input token estimate (there is no tokenizer in the limiter; this rule is what gets charged,
 * and what `usage.prompt_tokens` reports). "ceil4(s)" is ceil(bytes(s) / 4), 0 for "".
 *   chat:        3 (reply priming) + for each message:
 *                  4 + ceil4(content) + ceil4(name) when `name` is present,
 *                  where content is a string, null (0), or an array of parts: a part with a
 *                  string `text` counts ceil4(text), an "image_url" part counts 85, any other 0.
 *   completions: `prompt` is a string (ceil4), an array of strings (sum of ceil4), an array of
 *                token ids (its length) or an array of such arrays (sum of lengths).
 *   embeddings:  `input`, by the same rule as `prompt`.
 *
 * Validation follows OpenAI's messages and codes where it has them ("Missing required
 * parameter: 'model'.", param "model", code "missing_required_parameter"). A JSON null in an
 * optional field means the field is absent. Unknown fields are ignored, as OpenAI does. */
#ifndef LLMLIMIT_HTTP_OPENAI_H
#define LLMLIMIT_HTTP_OPENAI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum openai_endpoint { OPENAI_CHAT = 0, OPENAI_COMPLETIONS = 1, OPENAI_EMBEDDINGS = 2 };

#define OPENAI_MAX_TOKENS_MAX 1000000u    /* larger max_tokens are refused as absurd */
#define OPENAI_N_MAX 128u                 /* choices per request (n x prompts) */
#define OPENAI_INPUTS_MAX 2048u           /* elements of a prompt / input array */
#define OPENAI_COMPLETIONS_MAX_TOKENS 16u /* /v1/completions' max_tokens default, as OpenAI's */
#define OPENAI_EMBEDDING_DIMS 256u        /* embedding length when `dimensions` is absent */
#define OPENAI_EMBEDDING_DIMS_MAX 3072u
#define OPENAI_IMAGE_TOKENS 85u           /* flat charge per image_url part */

/* A validated request. Owns the parsed document; the pointers point into it. A plain chat body
 * is validated without building a document (openai_parse's fast path): root is then NULL and
 * model points to model_copy. */
struct openai_request {
	enum openai_endpoint endpoint;
	json_t *root;              /* owned; NULL after the fast path */
	char *model_copy;          /* owned; the model when root is NULL */
	const char *model;         /* NUL-terminated, may contain NUL bytes: use model_len */
	size_t model_len;
	uint64_t max_tokens;       /* max_completion_tokens, else max_tokens; 0 when absent */
	uint32_t n;                /* choices per prompt (1 for embeddings) */
	uint32_t nprompts;         /* completions: prompts in `prompt`; embeddings: inputs;
				      chat: 1 */
	bool stream;
	bool include_usage;        /* stream_options.include_usage */
	const json_t *input;       /* completions' `prompt`, embeddings' `input`; else NULL */
	uint32_t dimensions;       /* embeddings */
	bool base64;               /* embeddings: encoding_format "base64" */
	uint64_t input_tokens;     /* the estimate above */
};

/* A 400 answer: message, param ("" for JSON null) and code (NULL for JSON null). */
struct openai_error {
	char message[480];
	char param[64];
	const char *code;
};

/* Parses and validates body for endpoint. 0 with *out filled (release it with
 * openai_request_close); -EINVAL with *err filled; -ENOMEM. */
__attribute__((warn_unused_result))
int openai_parse(enum openai_endpoint endpoint, const char *body, size_t len,
		 struct openai_request *out, struct openai_error *err);
/* Frees the parsed document. NULL-safe; the request is zeroed. */
void openai_request_close(struct openai_request *r);

/* The two halves of openai_parse, exposed for the differential unit test. The jansson path
 * answers every body, as openai_parse does. The fast path reads a chat body in one pass without
 * allocating (but for the model's copy): 0 with *out filled only when the jansson path would
 * accept the body with the same result, -EAGAIN when it cannot tell (every invalid body among
 * them; *out is then zeroed), -ENOMEM. */
__attribute__((warn_unused_result))
int openai__parse_json(enum openai_endpoint endpoint, const char *body, size_t len,
		       struct openai_request *out, struct openai_error *err);
__attribute__((warn_unused_result))
int openai__parse_fast_chat(const char *body, size_t len, struct openai_request *out);
/* Shared by openai.c and openai_fast.c: the ⌈bytes/4⌉ estimate and the accepted chat roles
 * (NULL-terminated). */
uint64_t openai__ceil4(size_t bytes);
extern const char *const openai__roles[];

/* The estimate for a `messages` array (anything else counts only the priming). */
uint64_t openai_estimate_chat(const json_t *messages);
/* The estimate for a `prompt` or `input` value. */
uint64_t openai_estimate_prompt(const json_t *prompt);

/* Output tokens one choice may produce: the request's max tokens, else 16 for completions,
 * 0 for embeddings, and tier_default for chat. */
uint64_t openai_output_cap(const struct openai_request *r, uint64_t tier_default);
/* Choices in the response: n x nprompts (0 for embeddings). */
uint32_t openai_choices(const struct openai_request *r);

#endif
