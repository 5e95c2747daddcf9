/* node.h — the daemon's own entry points, shared between src/node files. */
#ifndef LLMLIMIT_NODE_NODE_H
#define LLMLIMIT_NODE_NODE_H

/* Writes a new random 32-byte cluster key (64 hex digits and a newline) to path, mode 0600,
 * refusing to overwrite an existing file. Returns the process exit code. */
int node_keygen(const char *path);

/* GETs url (http://HOST:PORT/PATH, default http://127.0.0.1:8000/readyz) within 2 s and returns
 * the process exit code: 0 on a 2xx answer, 1 otherwise, 2 for a bad URL. For container health
 * checks in images without a shell. */
int node_healthcheck(const char *url);

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;
struct config;
struct metrics;
struct buf;
struct admit_cluster;
struct admit;
struct node_cluster;

/* Joins the cluster the configuration describes (cfg->peer_port != 0): loads the cluster key
 * file, listens for peers (TCP) and gossip (UDP) on the peer port, starts membership and keeps
 * the ring and the peer pool's addresses in step with it. Borrows loop, cfg and metrics.
 * 0, or a negative errno with a one-line reason in errbuf. */
__attribute__((warn_unused_result))
int node_cluster_start(struct node_cluster **out, struct uv_loop_s *loop, const struct config *cfg,
		       struct metrics *metrics, uint16_t http_port, char *errbuf, size_t errlen);
/* What the admitter needs (owned by the cluster; valid until node_cluster_free). */
const struct admit_cluster *node_cluster_admit(struct node_cluster *c);
/* The admitter built from it, whose warm-up GET /cluster shows ("warming"). NULL detaches it. */
void node_cluster_attach(struct node_cluster *c, const struct admit *a);
/* Leaves gracefully (peers see `left` at once); done(arg) runs from the loop. */
void node_cluster_leave(struct node_cluster *c, void (*done)(void *arg), void *arg);
/* True once the node has joined (or has nobody to join). */
bool node_cluster_ready(const struct node_cluster *c);
/* GET /cluster[?key=K] as JSON into out. 0 or -ENOMEM. */
int node_cluster_json(struct node_cluster *c, const char *query, size_t query_len,
		      struct buf *out);
/* Closes every handle; memory goes in close callbacks, so run the loop afterwards. NULL-safe. */
void node_cluster_free(struct node_cluster *c);

#endif
