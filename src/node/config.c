#include "node/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/log.h"
#include "util/num.h"

const char config_usage[] =
	"Usage: llmlimitd [OPTIONS]\n"
	"\n"
	"Rate-limits OpenAI-style LLM API traffic per API key: requests, input tokens and output\n"
	"tokens per minute over sliding 60 s windows. Serves the OpenAI API on a built-in mock\n"
	"backend. Every option can also be set by the environment variable in brackets; a flag\n"
	"wins over its variable.\n"
	"\n"
	"Serving:\n"
	"  --listen HOST:PORT        client HTTP address [LLMLIMIT_LISTEN] (default 127.0.0.1:8000)\n"
	"  --keys FILE               keys file (JSON: tiers, keys, unknown_keys) [LLMLIMIT_KEYS];\n"
	"                            default: the built-in example (cluster/keys.example.json).\n"
	"                            SIGHUP reloads it; a bad file is refused and the old one kept\n"
	"  --max-keys N              most API keys with live windows [LLMLIMIT_MAX_KEYS]\n"
	"                            (default 2000000; a new key beyond it gets 503)\n"
	"\n"
	"HTTP limits:\n"
	"  --max-body-bytes N        request body limit, else 413 [LLMLIMIT_MAX_BODY_BYTES]\n"
	"                            (default 1048576)\n"
	"  --max-header-bytes N      request line + headers limit, else 431\n"
	"                            [LLMLIMIT_MAX_HEADER_BYTES] (default 16384)\n"
	"  --max-headers N           header count limit, else 431 [LLMLIMIT_MAX_HEADERS] (default 100)\n"
	"  --read-timeout-ms N       a started request must arrive whole within N ms, else 408\n"
	"                            [LLMLIMIT_READ_TIMEOUT_MS] (default 30000)\n"
	"  --idle-timeout-ms N       close keep-alive connections idle for N ms\n"
	"                            [LLMLIMIT_IDLE_TIMEOUT_MS] (default 60000)\n"
	"  --max-connections N       open client connections; beyond it a new one gets 503\n"
	"                            [LLMLIMIT_MAX_CONNECTIONS] (default 10000)\n"
	"  --max-pipeline N          unanswered pipelined requests per connection before reading\n"
	"                            pauses [LLMLIMIT_MAX_PIPELINE] (default 64)\n"
	"\n"
	"Cluster (omit --peer-listen to run a single node):\n"
	"  --node-id ID              this node's unique name [LLMLIMIT_NODE_ID]\n"
	"                            (default: the advertised peer address)\n"
	"  --peer-listen HOST:PORT   node-to-node address: TCP for forwarded checks and UDP for\n"
	"                            gossip, on the same port [LLMLIMIT_PEER_LISTEN]\n"
	"  --advertise HOST:PORT     the peer address other nodes use to reach this one\n"
	"                            [LLMLIMIT_ADVERTISE] (default: --peer-listen; required when\n"
	"                            that is a wildcard such as 0.0.0.0)\n"
	"  --seeds H:P,H:P           peer addresses of nodes to join through (host names allowed;\n"
	"                            any one live seed is enough) [LLMLIMIT_SEEDS]\n"
	"  --cluster-key-file FILE   shared secret authenticating every node-to-node byte\n"
	"                            [LLMLIMIT_CLUSTER_KEY_FILE]; make one with `llmlimitd keygen`.\n"
	"                            One key per line, 64 hex digits; the first is used to send\n"
	"                            and all are accepted (rotation)\n"
	"  --owner-failure POLICY    when a key's owner cannot be reached: local (decide on this\n"
	"                            node's fallback window), deny (503) or allow\n"
	"                            [LLMLIMIT_OWNER_FAILURE] (default local)\n"
	"  --peer-timeout-ms N       how long a forwarded check may take before the owner counts\n"
	"                            as unreachable [LLMLIMIT_PEER_TIMEOUT_MS] (default 250)\n"
	"  --replicas R              copies of each key's window, the owner's included: the owner\n"
	"                            replicates to the next R-1 nodes in ring order, which take\n"
	"                            over with that state when it dies [LLMLIMIT_REPLICAS]\n"
	"                            (default 2; 1 turns replication and failover off)\n"
	"  --replicate-interval-ms N how often changed windows are replicated, in batches\n"
	"                            [LLMLIMIT_REPLICATE_INTERVAL_MS] (default 50)\n"
	"  --gossip-probe-interval-ms N   SWIM probe period [LLMLIMIT_GOSSIP_PROBE_INTERVAL_MS]\n"
	"                            (default 200)\n"
	"  --gossip-probe-timeout-ms N    direct probe timeout before indirect probes, below the\n"
	"                            interval [LLMLIMIT_GOSSIP_PROBE_TIMEOUT_MS] (default 100)\n"
	"  --gossip-suspicion-mult N suspicion timeout in probe intervals, scaled by cluster\n"
	"                            size [LLMLIMIT_GOSSIP_SUSPICION_MULT] (default 4)\n"
	"  --gossip-push-pull-interval-ms N   full-state exchange period, heals partitions\n"
	"                            [LLMLIMIT_GOSSIP_PUSH_PULL_INTERVAL_MS] (default 5000)\n"
	"  --peer-batch-max N        most checks per node-to-node frame (default 1024); 1 turns\n"
	"                            batching off, for measuring it [LLMLIMIT_PEER_BATCH_MAX]\n"
	"\n"
	"Operations:\n"
	"  --admission-log FILE      append one line per admission and reconciliation (audits,\n"
	"                            exactness tests) [LLMLIMIT_ADMISSION_LOG]\n"
	"  --shutdown-grace-ms N     on SIGTERM, how long in-flight requests may take\n"
	"                            [LLMLIMIT_SHUTDOWN_GRACE_MS] (default 10000)\n"
	"  --log-level LEVEL         debug, info, warn or error [LLMLIMIT_LOG_LEVEL] (default info)\n"
	"  -h, --help                print this help and exit\n"
	"  --version                 print the version and exit\n"
	"\n"
	"\n"
	"  llmlimitd keygen FILE     write a new random cluster key to FILE (mode 0600) and exit\n"
	"  llmlimitd healthcheck [URL]  GET URL (default http://127.0.0.1:8000/readyz); exit 0 on\n"
	"                            a 2xx answer, else 1 (container health checks)\n"
	"\n"
	"Signals: SIGHUP reloads the keys file; SIGTERM and SIGINT stop gracefully.\n"
	"Endpoints: POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models,\n"
	"/healthz, /metrics. See README.md.\n";

enum opt_kind { OPT_FLAG, OPT_STR, OPT_U64, OPT_U32, OPT_SIZE, OPT_HOSTPORT, OPT_LEVEL, OPT_POLICY };

struct opt {
	const char *name;   /* without the leading "--" */
	const char *env;
	enum opt_kind kind;
	size_t offset;      /* into struct config */
	uint64_t min, max;  /* numbers only; for HOST:PORT, the offset of the port field */
};

#define OFF(f) offsetof(struct config, f)

static const struct opt opts[] = {
	{"listen", "LLMLIMIT_LISTEN", OPT_HOSTPORT, OFF(listen_host), OFF(listen_port), 0},
	{"node-id", "LLMLIMIT_NODE_ID", OPT_STR, OFF(node_id), 0, 0},
	{"peer-listen", "LLMLIMIT_PEER_LISTEN", OPT_HOSTPORT, OFF(peer_host), OFF(peer_port), 0},
	{"advertise", "LLMLIMIT_ADVERTISE", OPT_HOSTPORT, OFF(advertise_host), OFF(advertise_port),
	 0},
	{"seeds", "LLMLIMIT_SEEDS", OPT_STR, OFF(seeds), 0, 0},
	{"cluster-key-file", "LLMLIMIT_CLUSTER_KEY_FILE", OPT_STR, OFF(cluster_key_file), 0, 0},
	{"owner-failure", "LLMLIMIT_OWNER_FAILURE", OPT_POLICY, OFF(owner_failure), 0, 0},
	{"peer-timeout-ms", "LLMLIMIT_PEER_TIMEOUT_MS", OPT_U32, OFF(peer_timeout_ms), 1, 60000},
	{"peer-batch-max", "LLMLIMIT_PEER_BATCH_MAX", OPT_U32, OFF(peer_batch_max), 1, 1024},
	{"replicas", "LLMLIMIT_REPLICAS", OPT_U32, OFF(replicas), 1, 8},
	{"replicate-interval-ms", "LLMLIMIT_REPLICATE_INTERVAL_MS", OPT_U32,
	 OFF(replicate_interval_ms), 1, 10000},
	{"gossip-probe-interval-ms", "LLMLIMIT_GOSSIP_PROBE_INTERVAL_MS", OPT_U32,
	 OFF(gossip_probe_interval_ms), 10, 60000},
	{"gossip-probe-timeout-ms", "LLMLIMIT_GOSSIP_PROBE_TIMEOUT_MS", OPT_U32,
	 OFF(gossip_probe_timeout_ms), 5, 60000},
	{"gossip-suspicion-mult", "LLMLIMIT_GOSSIP_SUSPICION_MULT", OPT_U32,
	 OFF(gossip_suspicion_mult), 1, 100},
	{"gossip-push-pull-interval-ms", "LLMLIMIT_GOSSIP_PUSH_PULL_INTERVAL_MS", OPT_U32,
	 OFF(gossip_push_pull_interval_ms), 100, 3600000},
	{"keys", "LLMLIMIT_KEYS", OPT_STR, OFF(keys_path), 0, 0},
	{"max-keys", "LLMLIMIT_MAX_KEYS", OPT_U64, OFF(max_keys), 1, 1000000000},
	{"max-body-bytes", "LLMLIMIT_MAX_BODY_BYTES", OPT_SIZE, OFF(http.max_body_bytes), 1,
	 1ull << 30},
	{"max-header-bytes", "LLMLIMIT_MAX_HEADER_BYTES", OPT_SIZE, OFF(http.max_header_bytes), 256,
	 1u << 20},
	{"max-headers", "LLMLIMIT_MAX_HEADERS", OPT_U32, OFF(http.max_headers), 1, 10000},
	{"read-timeout-ms", "LLMLIMIT_READ_TIMEOUT_MS", OPT_U32, OFF(http.read_timeout_ms), 1,
	 3600000},
	{"idle-timeout-ms", "LLMLIMIT_IDLE_TIMEOUT_MS", OPT_U32, OFF(http.idle_timeout_ms), 1,
	 86400000},
	{"max-connections", "LLMLIMIT_MAX_CONNECTIONS", OPT_U32, OFF(http.max_connections), 1,
	 1000000},
	{"max-pipeline", "LLMLIMIT_MAX_PIPELINE", OPT_U32, OFF(http.max_pipeline), 1, 4096},
	{"admission-log", "LLMLIMIT_ADMISSION_LOG", OPT_STR, OFF(admission_log), 0, 0},
	{"shutdown-grace-ms", "LLMLIMIT_SHUTDOWN_GRACE_MS", OPT_U32, OFF(shutdown_grace_ms), 0,
	 3600000},
	{"log-level", "LLMLIMIT_LOG_LEVEL", OPT_LEVEL, OFF(log_level), 0, 0},
	{"help", NULL, OPT_FLAG, OFF(help), 0, 0},
	{"version", NULL, OPT_FLAG, OFF(version), 0, 0},
};

static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static void set_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->listen_host, "127.0.0.1");
	c->listen_port = 8000;
	c->http.max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
	c->http.max_body_bytes = HTTP_DEFAULT_MAX_BODY_BYTES;
	c->http.max_headers = HTTP_DEFAULT_MAX_HEADERS;
	c->http.idle_timeout_ms = HTTP_DEFAULT_IDLE_TIMEOUT_MS;
	c->http.read_timeout_ms = HTTP_DEFAULT_READ_TIMEOUT_MS;
	c->http.max_connections = HTTP_DEFAULT_MAX_CONNECTIONS;
	c->http.max_pipeline = HTTP_DEFAULT_MAX_PIPELINE;
	c->max_keys = 2000000;
	c->shutdown_grace_ms = 10000;
	c->peer_timeout_ms = 250;
	c->replicas = 2;
	c->replicate_interval_ms = 50;
	c->log_level = LOG_INFO;
}

/* Applies one option's value; `from` names its source for messages ("--max-keys" or
 * "LLMLIMIT_MAX_KEYS"). */
static int apply(struct config *c, const struct opt *o, const char *value, const char *from,
		 char *errbuf, size_t errlen)
{
	char *field = (char *)c + o->offset;
	uint64_t v;
	int lvl;

	switch (o->kind) {
	case OPT_FLAG:
		*(bool *)field = true;
		return 0;
	case OPT_STR:
		if (!*value)
			return fail(errbuf, errlen, "%s: empty value", from);
		*(const char **)field = value;
		return 0;
	case OPT_HOSTPORT:
		/* Every HOST:PORT field is a char[256] followed by its uint16_t port. */
		if (num_parse_hostport(value, field, 256, (uint16_t *)((char *)c + o->min)) < 0)
			return fail(errbuf, errlen, "%s: expected HOST:PORT, got \"%s\"", from, value);
		return 0;
	case OPT_POLICY:
		if (strcmp(value, "local") == 0)
			*(int *)field = 0;
		else if (strcmp(value, "deny") == 0)
			*(int *)field = 1;
		else if (strcmp(value, "allow") == 0)
			*(int *)field = 2;
		else
			return fail(errbuf, errlen, "%s: expected local, deny or allow, got \"%s\"",
				    from, value);
		return 0;
	case OPT_LEVEL:
		if ((lvl = log_parse_level(value)) < 0)
			return fail(errbuf, errlen,
				    "%s: expected debug, info, warn or error, got \"%s\"", from, value);
		*(int *)field = lvl;
		return 0;
	case OPT_U64:
	case OPT_U32:
	case OPT_SIZE:
		if (num_parse_u64(value, strlen(value), o->max, &v) < 0 || v < o->min)
			return fail(errbuf, errlen, "%s: expected an integer from %llu to %llu, got \"%s\"",
				    from, (unsigned long long)o->min, (unsigned long long)o->max,
				    value);
		if (o->kind == OPT_U32)
			*(uint32_t *)field = (uint32_t)v;
		else if (o->kind == OPT_SIZE)
			*(size_t *)field = (size_t)v;
		else
			*(uint64_t *)field = v;
		return 0;
	}
	return -EINVAL;
}

static const struct opt *find_opt(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
			return &opts[i];
	return NULL;
}

int config_parse_args(int argc, char *const argv[], const char *(*getenv_fn)(const char *),
		      struct config *out, char *errbuf, size_t errlen)
{
	size_t i;
	int a, err;

	set_defaults(out);
	for (i = 0; getenv_fn && i < sizeof(opts) / sizeof(opts[0]); i++) {
		const char *v = opts[i].env ? getenv_fn(opts[i].env) : NULL;

		if (v && (err = apply(out, &opts[i], v, opts[i].env, errbuf, errlen)) < 0)
			return err;
	}
	for (a = 1; a < argc; a++) {
		const char *arg = argv[a], *name, *eq, *value;
		const struct opt *o;
		char flag[64];
		size_t len;

		if (strcmp(arg, "-h") == 0)
			arg = "--help";
		if (strncmp(arg, "--", 2) != 0)
			return fail(errbuf, errlen, "unexpected argument \"%s\" (see --help)", arg);
		name = arg + 2;
		eq = strchr(name, '=');
		len = eq ? (size_t)(eq - name) : strlen(name);
		if (!(o = find_opt(name, len)))
			return fail(errbuf, errlen, "unknown option \"%.*s\" (see --help)",
				    (int)(len + 2), arg);
		if (o->kind == OPT_FLAG) {
			if (eq)
				return fail(errbuf, errlen, "--%s takes no value", o->name);
			value = "";
		} else if (eq) {
			value = eq + 1;
		} else if (a + 1 < argc) {
			value = argv[++a];
		} else {
			return fail(errbuf, errlen, "--%s needs a value", o->name);
		}
		snprintf(flag, sizeof(flag), "--%s", o->name);
		if ((err = apply(out, o, value, flag, errbuf, errlen)) < 0)
			return err;
	}
	return 0;
}

int config_parse_cluster_keys(const char *text, size_t len, uint8_t (*keys)[32], size_t max,
			      size_t *n, char *errbuf, size_t errlen)
{
	size_t pos = 0, line = 0, i;

	*n = 0;
	/* A raw 32-byte secret (e.g. `head -c 32 /dev/urandom`) is accepted as one key. */
	if (len == 32 && memchr(text, '\n', len) == NULL) {
		for (i = 0; i < 32 && num_hex_digit(text[i]) >= 0; i++)
			;
		if (i < 32) {
			memcpy(keys[0], text, 32);
			*n = 1;
			return 0;
		}
	}
	while (pos < len) {
		const char *start = text + pos, *end = memchr(start, '\n', len - pos);
		size_t l = end ? (size_t)(end - start) : len - pos, b = 0;

		pos += l + (end ? 1 : 0);
		line++;
		while (l && (start[l - 1] == '\r' || start[l - 1] == ' ' || start[l - 1] == '\t'))
			l--;
		while (l && (*start == ' ' || *start == '\t')) {
			start++;
			l--;
		}
		if (l == 0 || *start == '#')
			continue;
		if (l != 64)
			return fail(errbuf, errlen, "line %zu: expected 64 hex digits (a 32-byte key), "
				    "got %zu characters", line, l);
		if (*n == max)
			return fail(errbuf, errlen, "line %zu: more than %zu keys", line, max);
		for (b = 0; b < 32; b++) {
			int hi = num_hex_digit(start[2 * b]), lo = num_hex_digit(start[2 * b + 1]);

			if (hi < 0 || lo < 0)
				return fail(errbuf, errlen, "line %zu: not a hex digit at column %zu",
					    line, 2 * b + (hi < 0 ? 1 : 2));
			keys[*n][b] = (uint8_t)(hi << 4 | lo);
		}
		(*n)++;
	}
	if (*n == 0)
		return fail(errbuf, errlen, "no key in the file");
	return 0;
}
