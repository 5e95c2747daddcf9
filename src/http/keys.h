/* keys.h — the keys file: tiers, per-key limits and the unknown-key policy (DESIGN.md).
 *
 *   {"tiers": {"default": {"rpm": 1000, "input_tpm": 10000, "output_tpm": 5000,
 *                          "default_max_tokens": 256}},
 *    "keys": {"test_key_1": {"tier": "default"},
 *             "test_key_2": {"rpm": 60, "input_tpm": 2000, "output_tpm": 1000}},
 *    "unknown_keys": "reject"}
 *
 * A limit is a positive integer <= WINDOW_LIMIT_MAX, or null for "not limited". A key may name
 * a tier and override any of its fields; a key without a tier starts from "default" when that
 * tier exists, and must otherwise give all three limits. Pure (jansson only); the parsed
 * configuration is immutable and may be shared until keys_free(). */
#ifndef LLMLIMIT_HTTP_KEYS_H
#define LLMLIMIT_HTTP_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "window/window.h"

#define KEYS_DEFAULT_MAX_TOKENS 256  /* a tier's default_max_tokens when it gives none */

struct keys_limits {
	uint64_t limit[WINDOW_DIMS];  /* WINDOW_UNLIMITED for null */
	uint64_t default_max_tokens;  /* output reservation per choice when the request has none */
	const char *tier;             /* tier name, or "" for a key with no tier */
};

struct keys_config;

/* Parses and fully validates a keys file. 0 with *out owned by the caller; -EINVAL with a
 * one-line message naming the line (and the field) in errbuf; -ENOMEM. */
__attribute__((warn_unused_result))
int keys_parse(const char *text, size_t len, struct keys_config **out, char *errbuf,
	       size_t errlen);
/* Reads path and parses it; errors as keys_parse, plus -errno when the file cannot be read. */
__attribute__((warn_unused_result))
int keys_load_file(const char *path, struct keys_config **out, char *errbuf, size_t errlen);
void keys_free(struct keys_config *k);  /* NULL-safe */

/* The built-in example configuration (the same text as cluster/keys.example.json). */
extern const char keys_example_json[];

/* The limits for an API key. 0 and *out (valid until keys_free); -ENOENT when the key is not
 * listed and unknown_keys is "reject" (with "default", unknown keys get the default tier). */
int keys_lookup(const struct keys_config *k, const char *key, size_t key_len,
		const struct keys_limits **out);

size_t keys_count(const struct keys_config *k);

#endif
