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
	/* Cluster (all optional: without --peer-listen the node runs alone). */
	const char *node_id;            /* default: the advertised peer address */
	char peer_host[256];            /* TCP peer listener and UDP gossip, same port */
	uint16_t peer_port;             /* 0: no cluster */
	char advertise_host[256];       /* how other nodes reach this one; "" = peer_host */
	uint16_t advertise_port;
	const char *seeds;              /* "host:port,host:port" */
	const char *cluster_key_file;
	int owner_failure;              /* enum admit_owner_failure */
	uint32_t peer_timeout_ms;
	uint32_t peer_batch_max;        /* checks per frame; 0 = protocol maximum */
	uint32_t replicas;              /* copies of each key's window, owner included */
	uint32_t replicate_interval_ms;
	/* Membership timings; 0 keeps the default of src/gossip/members.c. */
	uint32_t gossip_probe_interval_ms;
	uint32_t gossip_probe_timeout_ms;
	uint32_t gossip_suspicion_mult;
	uint32_t gossip_push_pull_interval_ms;
	bool help;
	bool version;
};

/* Parses argv (argv[0] is the program) over the environment `getenv_fn` (NULL: none): flags
 * win over LLMLIMIT_* variables, which win over defaults. Pointers in *out borrow from argv or
 * the environment. 0, or -EINVAL with a one-line message in errbuf. */
__attribute__((warn_unused_result))
int config_parse_args(int argc, char *const argv[], const char *(*getenv_fn)(const char *),
		      struct config *out, char *errbuf, size_t errlen);

/* Parses a cluster key file: one key per line as 64 hex digits (the first line is the primary,
 * used to send; every line is accepted, which is how keys rotate), '#' comments and blank lines
 * ignored; or exactly 32 raw bytes. Fills keys[0..*n) (at most max). 0, or -EINVAL with a
 * message naming the line. */
__attribute__((warn_unused_result))
int config_parse_cluster_keys(const char *text, size_t len, uint8_t (*keys)[32], size_t max,
			      size_t *n, char *errbuf, size_t errlen);

/* The --help text. */
extern const char config_usage[];

#endif
