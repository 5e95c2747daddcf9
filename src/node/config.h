/* config.h — llmlimitd's command line and environment. Pure: parses, validates, and leaves
 * the result in a struct that the rest of the daemon treats as immutable. */
#ifndef LLMLIMIT_NODE_CONFIG_H
#define LLMLIMIT_NODE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/server.h"

struct config {
	char listen_host[256];
	uint16_t listen_port;
	const char *keys_path;          /* NULL: the built-in example keys file */
	const char *admission_log;      /* NULL: none */
	struct http_server_limits http;
	uint64_t max_keys;
	uint32_t shutdown_grace_ms;
	int log_level;
	bool help;
	bool version;
};

/* Parses argv (argv[0] is the program) over the environment `getenv_fn` (NULL: none): flags
 * win over LLMLIMIT_* variables, which win over defaults. Pointers in *out borrow from argv or
 * the environment. 0, or -EINVAL with a one-line message in errbuf. */
__attribute__((warn_unused_result))
int config_parse_args(int argc, char *const argv[], const char *(*getenv_fn)(const char *),
		      struct config *out, char *errbuf, size_t errlen);

/* The --help text. */
extern const char config_usage[];

#endif
