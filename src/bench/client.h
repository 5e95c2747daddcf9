/* client.h — the load generator's engine (libuv): connections to the nodes, the request
 * schedule, timeouts, retries and reconnects.
 *
 * What a run means (the choices a user of the numbers needs to know):
 * - Connections: --concurrent keep-alive HTTP/1.1 connections, connection i to node
 *   i % nnodes, each with up to --pipeline requests in flight. All are opened before the
 *   clock starts; the run starts once each has connected or failed once (or after 1 s if
 *   some have connected), and fails at once (bench_run's error) if none connected.
 *   Request i uses key i % nkeys; a request goes to the next node in turn that has a
 *   connection with a free slot.
 * - Closed loop (--rate 0): concurrent x pipeline virtual users, each sending its next
 *   request when its previous one finished. Latency runs from the actual send.
 * - Open loop (--rate R): request i is due at t0 + i/R, and its latency runs from that
 *   intended time, so time spent waiting for a free connection (a stalled server) is counted
 *   (no coordinated omission). The loop sleeps on a timerfd until 50 µs before the next
 *   due time and polls without blocking from there, so sends are µs-precise and high rates
 *   cost no timer per request (at 10,000 req/s and up the generator's core stays busy);
 *   the report shows the generator's own send lag. Due requests wait in a backlog while every connection is busy;
 *   one that waited longer than --timeout-ms is dropped (counted, not sent).
 * - Failures: as the OpenAI SDKs do, a request is retried up to --retries times, on another
 *   node while one has a live connection, when its connection was refused, reset or closed
 *   before its response, when it had no response after --timeout-ms, or when it got a 503 (a
 *   node joining its cluster or shutting down). A retry is counted in "retried" of the node
 *   it failed on and queued at once (no backoff; Retry-After is not waited for); one that
 *   finds no free connection within --timeout-ms of being queued ends as its last attempt
 *   did. Each lost or failed connection is a connection error of its node, and it
 *   reconnects (at once after losing an open connection, then backing off 10 ms doubling to
 *   1 s). A timeout closes the connection (a connection error of kind "timeout"); the
 *   requests pipelined behind the one that timed out are retried too. A 503 is no
 *   connection error: the connection stays in use; every 503 counts in its node's
 *   "unavailable". Out of retries, a request fails as its last attempt did (as a timeout,
 *   say), or, when that was a 503, the 503 is its response. A response saying
 *   "Connection: close" counts as a connection error of kind "closed" too.
 * - The end: sending stops at --duration or --requests; requests in flight and their retries
 *   are then awaited (each attempt, and each retry's wait for a connection, at most
 *   --timeout-ms). Throughput is finished requests over the time from the first send to the
 *   last finish. Latency runs from a request's first send (or intended time) to its final
 *   response, retries included; transport failures have no latency sample.
 */
#ifndef LLMLIMIT_BENCH_CLIENT_H
#define LLMLIMIT_BENCH_CLIENT_H

#include <stddef.h>

#include "bench/options.h"
#include "bench/stats.h"

/* Runs the benchmark o describes on its own loop and counts into s (from bench_stats_new with
 * o's node and key counts); blocks until the run ends. SIGINT/SIGTERM are handled during the
 * run (first: stop sending and drain; second: stop at once, counting what was in flight as
 * abandoned). Borrows o and s. Returns 0 when the run happened, or a negative errno with a
 * message in err when it could not start: a node name did not resolve, or no connection to
 * any node could be opened. */
__attribute__((warn_unused_result))
int bench_run(const struct bench_opts *o, struct bench_stats *s, char *err, size_t errlen);

#endif
