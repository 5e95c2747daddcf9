/* llmlimitd: wiring only. Parses the configuration, builds the modules, runs the loop, and
 * owns every long-lived object (one owner, one free). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <uv.h>

#include "http/api.h"
#include "http/keys.h"
#include "http/server.h"
#include "node/config.h"
#include "node/node.h"
#include "peer/admit.h"
#include "peer/replica.h"
#include "util/log.h"
#include "util/metrics.h"
#include "window/table.h"

#define LLMLIMIT_VERSION "0.1.0"
/* Idle keys freed per expiry tick: bounds the tick's cost while 1M keys can still drain in
 * seconds. */
#define EXPIRE_TICK_MS 250
#define EXPIRE_BUDGET 50000
/* How long a graceful stop may spend handing windows to their next owners. */
#define HANDOFF_TIMEOUT_MS 2000

struct reload_job {
	uv_work_t work;
	struct node *node;
	char *path;                 /* owned */
	struct keys_config *keys;   /* parsed in the thread pool; owned until swapped in */
	int err;
	char errbuf[512];
};

struct node {
	struct config cfg;
	uv_loop_t *loop;
	struct keys_config *keys;
	struct window_table *table;
	struct admit *admit;
	struct metrics *metrics;
	struct api *api;
	struct http_server *server;
	struct node_cluster *cluster;   /* NULL: a single node */
	FILE *admission_log;
	uv_signal_t sighup, sigterm, sigint;
	uv_timer_t tick;
	bool reloading, reload_again, stopping;
	uint64_t started_ms;
	struct metrics_gauge *g_active_keys, *g_configured_keys, *g_uptime;
	struct metrics_counter *c_reload_ok, *c_reload_failed, *c_expired;
};

static uint64_t node_now_ms(void *arg)
{
	struct node *n = arg;

	return uv_now(n->loop);
}

static bool node_ready(void *arg)
{
	struct node *n = arg;

	return !n->cluster || node_cluster_ready(n->cluster);
}

static int node_cluster_view(void *arg, const char *query, size_t query_len, struct buf *out)
{
	struct node *n = arg;

	return node_cluster_json(n->cluster, query, query_len, out);
}

static void collect_metrics(void *arg)
{
	struct node *n = arg;

	metrics_gauge_set(n->g_active_keys, (double)window_table_size(n->table));
	metrics_gauge_set(n->g_configured_keys, (double)keys_count(n->keys));
	metrics_gauge_set(n->g_uptime, (double)(uv_now(n->loop) - n->started_ms) / 1000.0);
}

static void reload_work(uv_work_t *w)
{
	struct reload_job *job = w->data;

	/* keys_load_file is pure apart from reading the file, so it may run off the loop thread. */
	job->err = keys_load_file(job->path, &job->keys, job->errbuf, sizeof(job->errbuf));
}

static void start_reload(struct node *n);

static void reload_done(uv_work_t *w, int status)
{
	struct reload_job *job = w->data;
	struct node *n = job->node;

	if (status == 0 && job->err == 0) {
		api_set_keys(n->api, job->keys);
		keys_free(n->keys);
		n->keys = job->keys;
		metrics_counter_add(n->c_reload_ok, 1);
		log_info("msg=\"keys file reloaded\" path=%s keys=%zu", job->path, keys_count(n->keys));
	} else {
		keys_free(job->keys);
		metrics_counter_add(n->c_reload_failed, 1);
		log_error("msg=\"keys file refused; previous configuration stays in force\" path=%s "
			  "error=\"%s\"", job->path, status ? uv_strerror(status) : job->errbuf);
	}
	free(job->path);
	free(job);
	n->reloading = false;
	if (n->reload_again && !n->stopping) {
		n->reload_again = false;
		start_reload(n);
	}
}

static void start_reload(struct node *n)
{
	struct reload_job *job;

	if (!n->cfg.keys_path) {
		log_warn("msg=\"SIGHUP ignored: running on the built-in keys file (no --keys)\"");
		return;
	}
	if (n->reloading) {
		n->reload_again = true;  /* the file may have changed again since the load began */
		return;
	}
	job = calloc(1, sizeof(*job));
	if (!job || !(job->path = strdup(n->cfg.keys_path))) {
		free(job);
		log_error("msg=\"reload failed\" error=\"out of memory\"");
		return;
	}
	job->node = n;
	job->work.data = job;
	if (uv_queue_work(n->loop, &job->work, reload_work, reload_done) < 0) {
		free(job->path);
		free(job);
		log_error("msg=\"reload failed\" error=\"cannot queue work\"");
		return;
	}
	n->reloading = true;
}

static void on_sighup(uv_signal_t *h, int signum)
{
	(void)signum;
	start_reload(h->data);
}

/* Safe on handles never initialised (a start that failed before start_handles()). */
static void close_handle(uv_handle_t *h)
{
	if (h->loop && !uv_is_closing(h))
		uv_close(h, NULL);
}

static void on_server_drained(void *arg)
{
	struct node *n = arg;

	log_info("msg=\"stopped\"");
	/* Gossip and peer handles stay active until freed: stop the loop and let teardown close
	 * everything in order. */
	uv_stop(n->loop);
}

static void drain_http(void *arg)
{
	struct node *n = arg;

	http_server_shutdown(n->server, n->cfg.shutdown_grace_ms, on_server_drained, n);
}

static void leave_cluster(void *arg)
{
	struct node *n = arg;

	node_cluster_leave(n->cluster, drain_http, n);
}

static void on_sigterm(uv_signal_t *h, int signum)
{
	struct node *n = h->data;

	if (n->stopping) {
		log_warn("msg=\"second signal: exiting now\" signal=%d", signum);
		uv_stop(n->loop);
		return;
	}
	n->stopping = true;
	log_info("msg=\"stopping\" signal=%d grace_ms=%u", signum, n->cfg.shutdown_grace_ms);
	/* Hand the owned windows to their next owners, then leave, so peers stop routing keys
	 * here while in-flight requests finish. */
	if (!n->cluster)
		drain_http(n);
	else if (!admit_replica(n->admit) ||
		 replica_handoff_all(admit_replica(n->admit), HANDOFF_TIMEOUT_MS, leave_cluster, n) < 0)
		leave_cluster(n);
}

static void on_tick(uv_timer_t *t)
{
	struct node *n = t->data;
	size_t freed = window_table_expire(n->table, uv_now(n->loop), EXPIRE_BUDGET);

	metrics_counter_add(n->c_expired, freed);
	if (n->admission_log)
		fflush(n->admission_log);
}

static int load_keys(struct node *n)
{
	char errbuf[512];
	int err;

	if (n->cfg.keys_path)
		err = keys_load_file(n->cfg.keys_path, &n->keys, errbuf, sizeof(errbuf));
	else
		err = keys_parse(keys_example_json, strlen(keys_example_json), &n->keys, errbuf,
				 sizeof(errbuf));
	if (err < 0)
		fprintf(stderr, "llmlimitd: %s: %s\n",
			n->cfg.keys_path ? n->cfg.keys_path : "built-in keys", errbuf);
	return err;
}

static void register_metrics(struct node *n)
{
	struct metrics *m = n->metrics;

	n->g_active_keys = metrics_gauge(m, "llmlimit_active_keys",
					 "API keys with live window state on this node", "");
	n->g_configured_keys = metrics_gauge(m, "llmlimit_configured_keys",
					     "API keys listed in the keys file", "");
	n->g_uptime = metrics_gauge(m, "llmlimit_uptime_seconds", "Seconds since start", "");
	n->c_expired = metrics_counter(m, "llmlimit_keys_expired_total",
				       "Idle keys whose window state was freed", "");
	n->c_reload_ok = metrics_counter(m, "llmlimit_reloads_total",
					 "Keys file reloads by result", "result=\"ok\"");
	n->c_reload_failed = metrics_counter(m, "llmlimit_reloads_total",
					     "Keys file reloads by result", "result=\"failed\"");
	metrics_gauge_set(metrics_gauge(m, "llmlimit_build_info", "Build information",
					"version=\"" LLMLIMIT_VERSION "\""), 1);
}

static int build(struct node *n)
{
	struct api_deps deps;
	uint8_t seed[16];
	int err;

	if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		return -EIO;
	if ((err = window_table_new(&n->table, n->cfg.max_keys, seed)) < 0)
		return err;
	if ((err = metrics_new(&n->metrics)) < 0)
		return err;
	register_metrics(n);
	if (n->cfg.peer_port) {
		char why[512];

		err = node_cluster_start(&n->cluster, n->loop, &n->cfg, n->metrics,
					 n->cfg.listen_port, why, sizeof(why));
		if (err < 0) {
			fprintf(stderr, "llmlimitd: %s\n", why);
			return -ECANCELED;  /* already explained */
		}
	}
	if ((err = admit_new(&n->admit, n->loop, n->table,
			     n->cluster ? node_cluster_admit(n->cluster) : NULL)) < 0)
		return err;
	if (n->cluster)
		node_cluster_attach(n->cluster, n->admit);
	if (n->cfg.admission_log) {
		n->admission_log = fopen(n->cfg.admission_log, "a");
		if (!n->admission_log) {
			err = -errno;
			fprintf(stderr, "llmlimitd: --admission-log %s: %s\n", n->cfg.admission_log,
				strerror(errno));
			return err;
		}
		setvbuf(n->admission_log, NULL, _IOFBF, 1 << 16);
	}
	memset(&deps, 0, sizeof(deps));
	deps.keys = n->keys;
	deps.admit = n->admit;
	deps.metrics = n->metrics;
	deps.collect = collect_metrics;
	deps.collect_arg = n;
	deps.admission_log = n->admission_log;
	deps.now_ms = node_now_ms;
	deps.ready = node_ready;
	deps.cluster_json = n->cluster ? node_cluster_view : NULL;
	deps.ops_arg = n;
	deps.now_arg = n;
	if ((err = api_new(&n->api, &deps)) < 0)
		return err;
	if ((err = http_server_new(&n->server, n->loop, &n->cfg.http, api_handle, n->api,
				   n->metrics)) < 0)
		return err;
	if ((err = http_server_listen(n->server, n->cfg.listen_host, n->cfg.listen_port)) < 0) {
		fprintf(stderr, "llmlimitd: cannot listen on %s:%u: %s\n", n->cfg.listen_host,
			n->cfg.listen_port, uv_strerror(err));
		return err;
	}
	return 0;
}

static void start_handles(struct node *n)
{
	uv_signal_init(n->loop, &n->sighup);
	uv_signal_init(n->loop, &n->sigterm);
	uv_signal_init(n->loop, &n->sigint);
	n->sighup.data = n->sigterm.data = n->sigint.data = n;
	uv_signal_start(&n->sighup, on_sighup, SIGHUP);
	uv_signal_start(&n->sigterm, on_sigterm, SIGTERM);
	uv_signal_start(&n->sigint, on_sigterm, SIGINT);
	uv_timer_init(n->loop, &n->tick);
	n->tick.data = n;
	uv_timer_start(&n->tick, on_tick, EXPIRE_TICK_MS, EXPIRE_TICK_MS);
}

static void teardown(struct node *n)
{
	http_server_free(n->server);
	close_handle((uv_handle_t *)&n->tick);
	close_handle((uv_handle_t *)&n->sighup);
	close_handle((uv_handle_t *)&n->sigterm);
	close_handle((uv_handle_t *)&n->sigint);
	/* The admitter fails its checks still waiting for a peer (the api frees their contexts)
	 * before the peer pool goes. */
	if (n->cluster)
		node_cluster_attach(n->cluster, NULL);
	admit_free(n->admit);
	node_cluster_free(n->cluster);
	/* Run the close callbacks (and any reload still in the pool) before freeing. */
	uv_run(n->loop, UV_RUN_DEFAULT);
	api_free(n->api);
	window_table_free(n->table);
	keys_free(n->keys);
	metrics_free(n->metrics);
	if (n->admission_log)
		fclose(n->admission_log);
	uv_loop_close(n->loop);
}

static const char *env_lookup(const char *name)
{
	return getenv(name);
}

int main(int argc, char **argv)
{
	struct node n;
	char errbuf[512];
	int err;

	memset(&n, 0, sizeof(n));
	if (argc >= 2 && strcmp(argv[1], "keygen") == 0) {
		if (argc != 3) {
			fprintf(stderr, "usage: llmlimitd keygen FILE\n");
			return 2;
		}
		return node_keygen(argv[2]);
	}
	if (argc >= 2 && strcmp(argv[1], "healthcheck") == 0) {
		if (argc > 3) {
			fprintf(stderr, "usage: llmlimitd healthcheck [URL]\n");
			return 2;
		}
		return node_healthcheck(argc == 3 ? argv[2] : "http://127.0.0.1:8000/readyz");
	}
	if (config_parse_args(argc, argv, env_lookup, &n.cfg, errbuf, sizeof(errbuf)) < 0) {
		fprintf(stderr, "llmlimitd: %s\n", errbuf);
		return 2;
	}
	if (n.cfg.help) {
		fputs(config_usage, stdout);
		return 0;
	}
	if (n.cfg.version) {
		puts("llmlimitd " LLMLIMIT_VERSION);
		return 0;
	}
	log_level = n.cfg.log_level;
	signal(SIGPIPE, SIG_IGN);
	if (load_keys(&n) < 0)
		return 1;
	/* Host-name lookups (seeds, peers) run in libuv's thread pool, 4 threads by default: while
	 * a network is cut each can hang for the resolver's timeout, and the lookups queued behind
	 * them would delay reconnection long after the network is back. */
	if (setenv("UV_THREADPOOL_SIZE", "16", 0) < 0)
		log_warn("msg=\"cannot size the thread pool\" error=\"%s\"", strerror(errno));
	n.loop = uv_default_loop();
	n.started_ms = uv_now(n.loop);
	if ((err = build(&n)) < 0) {
		if (err != -EADDRINUSE && err != -EACCES && err != -EADDRNOTAVAIL &&
		    err != -ECANCELED)
			fprintf(stderr, "llmlimitd: start failed: %s\n", strerror(-err));
		teardown(&n);
		return 1;
	}
	start_handles(&n);
	log_info("msg=\"listening\" url=http://%s:%u keys=%zu keys_file=%s version=%s",
		 n.cfg.listen_host, http_server_port(n.server), keys_count(n.keys),
		 n.cfg.keys_path ? n.cfg.keys_path : "built-in", LLMLIMIT_VERSION);
	uv_run(n.loop, UV_RUN_DEFAULT);
	teardown(&n);
	return 0;
}
