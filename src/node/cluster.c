/* Cluster wiring: the keyring, the peer pool, gossip membership and the ring, kept in step.
 * Membership decides; this file only relays its changes to the ring (ownership) and to the peer
 * pool (where each node listens). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <uv.h>

#include "gossip/gossip.h"
#include "gossip/members.h"
#include "gossip/ring.h"
#include "node/config.h"
#include "node/node.h"
#include "peer/admit.h"
#include "peer/peer.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/num.h"
#include "wire/keyring.h"
#include "wire/wire.h"

#define CLUSTER_MAX_KEYS WIRE_KEYRING_MAX
#define CLUSTER_MAX_SEEDS 32
#define KEY_FILE_MAX 4096

struct node_cluster {
	uv_loop_t *loop;
	char self_id[RING_ID_MAX + 1];
	struct wire_keyring *keyring;
	struct ring *ring;
	struct peer_pool *peers;
	struct gossip *gossip;
	struct admit_cluster admit;
	const struct admit *admitter;      /* borrowed, for GET /cluster; may be NULL */
	char *seed_buf;                    /* owned copy of --seeds, split in place */
	const char *seeds[CLUSTER_MAX_SEEDS];
	size_t nseeds;
	void (*leave_done)(void *arg);
	void *leave_arg;
};

static int fail(char *errbuf, size_t errlen, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *errbuf, size_t errlen, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
	return err;
}

static void rebuild_ring(void *arg)
{
	struct node_cluster *c = arg;
	const char *ids[RING_SUCCESSORS_MAX * 4];
	size_t n = members_ring_ids(gossip_members(c->gossip), ids, sizeof(ids) / sizeof(ids[0]));
	int err = ring_set_members(c->ring, ids, n);

	if (err < 0) {
		log_error("msg=\"ring rebuild failed\" members=%zu error=\"%s\"", n, strerror(-err));
		return;
	}
	log_info("msg=\"ring changed\" members=%zu", n);
}

static bool cluster_joined(void *arg)
{
	const struct node_cluster *c = arg;

	return gossip_joined(c->gossip);
}

static uint64_t cluster_accused(void *arg)
{
	const struct node_cluster *c = arg;

	return members_counters(gossip_members(c->gossip))->refutations;
}

static bool cluster_alive(void *arg, const char *id)
{
	const struct node_cluster *c = arg;
	const struct members_info *m = members_find(gossip_members(c->gossip), id);

	return m && m->state == MEMBERS_ALIVE;
}

static void on_member(void *arg, const struct members_info *m, int prev)
{
	struct node_cluster *c = arg;
	int err;

	if (m->self)
		return;
	log_info("msg=\"member\" id=%s state=%s prev=%s incarnation=%llu addr=%s:%u", m->id,
		 gossip_state_name(m->state), prev < 0 ? "new" : gossip_state_name(prev),
		 (unsigned long long)m->incarnation, m->host, m->peer_port);
	if (m->state == MEMBERS_ALIVE || m->state == MEMBERS_SUSPECT) {
		err = peer_pool_set_address(c->peers, m->id, m->host, m->peer_port);
		if (err < 0)
			log_warn("msg=\"cannot use member address\" id=%s addr=%s:%u error=\"%s\"",
				 m->id, m->host, m->peer_port, strerror(-err));
	} else {
		peer_pool_forget(c->peers, m->id);
	}
}

static int load_keyring(struct node_cluster *c, const char *path, char *errbuf, size_t errlen)
{
	uint8_t keys[CLUSTER_MAX_KEYS][32];
	char text[KEY_FILE_MAX], why[256];
	size_t len, n, i;
	FILE *f;
	int err;

	if (!path)
		return fail(errbuf, errlen, -EINVAL, "cluster mode (--peer-listen) needs "
			    "--cluster-key-file; create one with `llmlimitd keygen FILE`");
	if (!(f = fopen(path, "rb")))
		return fail(errbuf, errlen, -errno, "--cluster-key-file %s: %s", path,
			    strerror(errno));
	len = fread(text, 1, sizeof(text), f);
	fclose(f);
	if (len == sizeof(text))
		return fail(errbuf, errlen, -EINVAL, "--cluster-key-file %s: larger than %d bytes",
			    path, KEY_FILE_MAX - 1);
	err = config_parse_cluster_keys(text, len, keys, CLUSTER_MAX_KEYS, &n, why, sizeof(why));
	sodium_memzero(text, sizeof(text));
	if (err < 0)
		return fail(errbuf, errlen, err, "--cluster-key-file %s: %s", path, why);
	if ((err = wire_keyring_new(&c->keyring)) < 0)
		goto out;
	/* The first key added is the primary: the first line of the file. */
	for (i = 0; i < n && err >= 0; i++)
		err = wire_keyring_add(c->keyring, keys[i], NULL);
out:
	sodium_memzero(keys, sizeof(keys));
	if (err < 0)
		return fail(errbuf, errlen, err, "--cluster-key-file %s: %s", path, strerror(-err));
	return 0;
}

static int split_seeds(struct node_cluster *c, const char *seeds, char *errbuf, size_t errlen)
{
	char *tok, *save = NULL;

	if (!seeds || !*seeds)
		return 0;
	if (!(c->seed_buf = strdup(seeds)))
		return -ENOMEM;
	for (tok = strtok_r(c->seed_buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		if (c->nseeds == CLUSTER_MAX_SEEDS)
			return fail(errbuf, errlen, -EINVAL, "--seeds: more than %d seeds",
				    CLUSTER_MAX_SEEDS);
		c->seeds[c->nseeds++] = tok;
	}
	return 0;
}

int node_cluster_start(struct node_cluster **out, uv_loop_t *loop, const struct config *cfg,
		       struct metrics *metrics, uint16_t http_port, char *errbuf, size_t errlen)
{
	struct members_config timings;
	struct gossip_config gc;
	struct peer_config pc;
	struct node_cluster *c;
	const char *adv_host;
	uint16_t adv_port;
	int err;

	*out = NULL;
	if ((err = wire_init()) < 0)
		return fail(errbuf, errlen, err, "libsodium failed to initialise");
	if (!(c = calloc(1, sizeof(*c))))
		return -ENOMEM;
	*out = c;  /* the caller frees it, also on failure */
	c->loop = loop;
	adv_host = cfg->advertise_host[0] ? cfg->advertise_host : cfg->peer_host;
	adv_port = cfg->advertise_port ? cfg->advertise_port : cfg->peer_port;
	if (cfg->node_id)
		err = snprintf(c->self_id, sizeof(c->self_id), "%s", cfg->node_id);
	else
		err = snprintf(c->self_id, sizeof(c->self_id), "%s:%u", adv_host, adv_port);
	if (err < 0 || (size_t)err >= sizeof(c->self_id))
		return fail(errbuf, errlen, -EINVAL, "--node-id: longer than %d bytes", RING_ID_MAX);
	if (!cfg->advertise_host[0] && (strcmp(cfg->peer_host, "0.0.0.0") == 0 ||
					strcmp(cfg->peer_host, "::") == 0) && !cfg->node_id)
		log_warn("msg=\"--peer-listen is a wildcard and there is no --node-id or --advertise: "
			 "the node id will be a wildcard address\"");
	if ((err = load_keyring(c, cfg->cluster_key_file, errbuf, errlen)) < 0)
		return err;
	if ((err = split_seeds(c, cfg->seeds, errbuf, errlen)) < 0)
		return err;
	if ((err = ring_new(&c->ring, NULL)) < 0)
		return err;
	{
		const char *self = c->self_id;

		if ((err = ring_set_members(c->ring, &self, 1)) < 0)
			return fail(errbuf, errlen, err, "--node-id \"%s\" is not a valid node id",
				    c->self_id);
	}
	memset(&pc, 0, sizeof(pc));
	pc.self_id = c->self_id;
	pc.keyring = c->keyring;
	pc.metrics = metrics;
	pc.request_timeout_ms = cfg->peer_timeout_ms;
	pc.max_batch = cfg->peer_batch_max;
	if ((err = peer_pool_new(&c->peers, loop, &pc)) < 0)
		return fail(errbuf, errlen, err, "peer pool: %s", strerror(-err));
	if ((err = peer_pool_listen(c->peers, cfg->peer_host, cfg->peer_port)) < 0)
		return fail(errbuf, errlen, err, "cannot listen for peers on %s:%u (TCP): %s",
			    cfg->peer_host, cfg->peer_port, uv_strerror(err));
	memset(&gc, 0, sizeof(gc));
	gc.node_id = c->self_id;
	gc.bind_host = cfg->peer_host;
	gc.bind_port = cfg->peer_port;
	gc.advertise_host = cfg->advertise_host[0] ? cfg->advertise_host : NULL;
	gc.advertise_port = cfg->advertise_port;
	gc.http_port = http_port;
	gc.seeds = c->seeds;
	gc.nseeds = c->nseeds;
	gc.keyring = c->keyring;
	gc.metrics = metrics;
	members_config_default(&timings);
	if (cfg->gossip_probe_interval_ms)
		timings.probe_interval_ms = cfg->gossip_probe_interval_ms;
	if (cfg->gossip_probe_timeout_ms)
		timings.probe_timeout_ms = cfg->gossip_probe_timeout_ms;
	if (cfg->gossip_suspicion_mult)
		timings.suspicion_mult = cfg->gossip_suspicion_mult;
	if (cfg->gossip_push_pull_interval_ms)
		timings.push_pull_interval_ms = cfg->gossip_push_pull_interval_ms;
	if (timings.probe_timeout_ms >= timings.probe_interval_ms)
		return fail(errbuf, errlen, -EINVAL, "--gossip-probe-timeout-ms (%u) must be below "
			    "--gossip-probe-interval-ms (%u)", timings.probe_timeout_ms,
			    timings.probe_interval_ms);
	gc.timings = &timings;
	gc.on_change = rebuild_ring;
	gc.on_member = on_member;
	gc.cb_arg = c;
	if ((err = gossip_new(&c->gossip, loop, &gc)) < 0)
		return fail(errbuf, errlen, err, "cannot start gossip on %s:%u (UDP): %s",
			    cfg->peer_host, cfg->peer_port,
			    err == -ENOMEM ? "out of memory" : uv_strerror(err));
	c->admit.self_id = c->self_id;
	c->admit.ring = c->ring;
	c->admit.peers = c->peers;
	c->admit.owner_failure = (enum admit_owner_failure)cfg->owner_failure;
	c->admit.max_hops = 1;
	c->admit.replicas = (uint8_t)cfg->replicas;
	c->admit.replicate_interval_ms = cfg->replicate_interval_ms;
	c->admit.joined = cluster_joined;
	c->admit.accused = cluster_accused;
	c->admit.alive = cluster_alive;
	c->admit.signal_arg = c;
	c->admit.stall_ms = cfg->peer_timeout_ms;
	log_info("msg=\"cluster started\" node_id=%s peer=%s:%u advertise=%s:%u seeds=%zu",
		 c->self_id, cfg->peer_host, peer_pool_port(c->peers),
		 gossip_advertise_host(c->gossip), gossip_advertise_port(c->gossip), c->nseeds);
	return 0;
}

const struct admit_cluster *node_cluster_admit(struct node_cluster *c)
{
	return &c->admit;
}

void node_cluster_attach(struct node_cluster *c, const struct admit *a)
{
	c->admitter = a;
}

static void on_left(void *arg)
{
	struct node_cluster *c = arg;

	log_info("msg=\"left the cluster\"");
	if (c->leave_done)
		c->leave_done(c->leave_arg);
}

void node_cluster_leave(struct node_cluster *c, void (*done)(void *arg), void *arg)
{
	c->leave_done = done;
	c->leave_arg = arg;
	if (gossip_leave(c->gossip, on_left, c) < 0 && done)
		done(arg);
}

bool node_cluster_ready(const struct node_cluster *c)
{
	return c->gossip && gossip_joined(c->gossip);
}

/* Finds `key=` in a query string and percent-decodes its value into out. Length or -1. */
static int query_key(const char *q, size_t qlen, char *out, size_t outlen)
{
	size_t i = 0, n = 0;

	while (i < qlen) {
		size_t end = i;

		while (end < qlen && q[end] != '&')
			end++;
		if (end - i >= 4 && memcmp(q + i, "key=", 4) == 0) {
			for (i += 4; i < end && n < outlen; i++) {
				int hi, lo;

				if (q[i] == '%' && i + 2 < end &&
				    (hi = num_hex_digit(q[i + 1])) >= 0 &&
				    (lo = num_hex_digit(q[i + 2])) >= 0) {
					out[n++] = (char)(hi << 4 | lo);
					i += 2;
				} else {
					out[n++] = q[i] == '+' ? ' ' : q[i];
				}
			}
			return i < end ? -1 : (int)n;
		}
		i = end + 1;
	}
	return -1;
}

static int key_json(struct node_cluster *c, const char *key, size_t len, struct buf *out)
{
	size_t idx[RING_SUCCESSORS_MAX], n, i;
	int err = 0;

	n = ring_successors(c->ring, key, len, 3, idx);
	err |= buf_puts(out, "{\"key\":");
	err |= buf_put_json_str(out, key, len);
	err |= buf_puts(out, ",\"owner\":");
	err |= n ? buf_put_json_str(out, ring_id(c->ring, idx[0]), strlen(ring_id(c->ring, idx[0])))
		 : buf_puts(out, "null");
	err |= buf_printf(out, ",\"self_is_owner\":%s,\"preference\":[",
			  n && strcmp(ring_id(c->ring, idx[0]), c->self_id) == 0 ? "true" : "false");
	for (i = 0; i < n; i++) {
		const char *id = ring_id(c->ring, idx[i]);

		err |= buf_puts(out, i ? "," : "");
		err |= buf_put_json_str(out, id, strlen(id));
	}
	err |= buf_printf(out, "],\"view_from\":");
	err |= buf_put_json_str(out, c->self_id, strlen(c->self_id));
	err |= buf_puts(out, "}\n");
	return err ? -ENOMEM : 0;
}

int node_cluster_json(struct node_cluster *c, const char *query, size_t query_len,
		      struct buf *out)
{
	const struct members *ms = gossip_members(c->gossip);
	char key[WINDOW_KEY_MAX + 1];
	size_t i, count = members_count(ms);
	int klen = query_key(query, query_len, key, sizeof(key) - 1), err = 0;

	if (klen >= 0)
		return key_json(c, key, (size_t)klen, out);
	err |= buf_puts(out, "{\"self\":");
	err |= buf_put_json_str(out, c->self_id, strlen(c->self_id));
	err |= buf_printf(out, ",\"incarnation\":%llu,\"joined\":%s,\"warming\":%s,"
			  "\"ring_size\":%zu,\"members\":[",
			  (unsigned long long)gossip_incarnation(c->gossip),
			  gossip_joined(c->gossip) ? "true" : "false",
			  c->admitter && admit_warming(c->admitter) ? "true" : "false",
			  ring_size(c->ring));
	for (i = 0; i < count; i++) {
		const struct members_info *m = members_at(ms, i);
		uint64_t ago = gossip_last_seen_ago_ms(c->gossip, m);
		int ridx = ring_find(c->ring, m->id);

		err |= buf_puts(out, i ? ",{\"id\":" : "{\"id\":");
		err |= buf_put_json_str(out, m->id, strlen(m->id));
		err |= buf_printf(out, ",\"state\":\"%s\",\"incarnation\":%llu,\"address\":",
				  gossip_state_name(m->state), (unsigned long long)m->incarnation);
		{
			char addr[MEMBERS_HOST_MAX + 16];
			int n = snprintf(addr, sizeof(addr), "%s:%u", m->host, m->peer_port);

			err |= buf_put_json_str(out, addr, n > 0 ? (size_t)n : 0);
		}
		err |= buf_printf(out, ",\"http_port\":%u,\"self\":%s,\"last_seen_ms_ago\":",
				  m->http_port, m->self ? "true" : "false");
		err |= ago == UINT64_MAX ? buf_puts(out, "null") : buf_put_u64(out, ago);
		err |= buf_printf(out, ",\"ring_share\":%.4f}",
				  ridx >= 0 ? ring_share(c->ring, (size_t)ridx) : 0.0);
	}
	err |= buf_puts(out, "]}\n");
	return err ? -ENOMEM : 0;
}

void node_cluster_free(struct node_cluster *c)
{
	if (!c)
		return;
	/* The pool fails its pending checks first (their callbacks free api contexts). */
	peer_pool_free(c->peers);
	gossip_free(c->gossip);
	ring_free(c->ring);
	wire_keyring_free(c->keyring);
	free(c->seed_buf);
	free(c);
}
