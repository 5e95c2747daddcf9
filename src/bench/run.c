/* run.c — the run: start, the request schedule (open and closed loop), retries, timeouts,
 * signals and the end. The per-connection I/O is in conn.c. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/timerfd.h>
#endif

#include "bench/client.h"
#include "bench/engine.h"
#include "bench/report.h"

/* The run starts when every connection has opened or failed once, or after this long if
 * some have opened. */
#define START_WAIT_NS (UINT64_C(1000) * 1000000)
/* Open loop: a request due within this long is waited for by polling, not sleeping. */
#define SPIN_NS (UINT64_C(100) * 1000)

static void pump(struct bench_engine *e);
static void finish(struct bench_engine *e);

static bool rq_push(struct bench_engine *e, const struct bench_slot *s)
{
	size_t at;

	if (e->rq_len == e->rq_cap)
		return false;
	at = e->rq_head + e->rq_len;
	if (at >= e->rq_cap)
		at -= e->rq_cap;
	e->rq[at] = *s;
	e->rq_len++;
	return true;
}

static struct bench_slot rq_pop(struct bench_engine *e)
{
	struct bench_slot s = e->rq[e->rq_head];

	if (++e->rq_head == e->rq_cap)
		e->rq_head = 0;
	e->rq_len--;
	return s;
}

bool bench__retry(struct bench_engine *e, struct bench_slot *s, enum bench_xerr kind)
{
	struct bench_slot q = *s;

	if (e->phase == BENCH_PH_DONE || s->attempts > e->o->retries)
		return false;
	q.last_err = (uint8_t)kind;
	/* The wait for a connection is timed from now, not from the failed send: a request
	 * that timed out would otherwise fail at once, unretried. Latency still runs from
	 * start_ns; each attempt and each wait is bounded by the timeout, so a request ends
	 * within about 2 x (retries + 1) x --timeout-ms of its first send. */
	q.sent_ns = uv_hrtime();
	if (!rq_push(e, &q))
		return false;
	e->st->retried++;
	e->st->nodes[s->node].retried++;
	return true;
}

void bench__requeue(struct bench_engine *e, struct bench_slot *s, enum bench_xerr kind)
{
	if (bench__retry(e, s, kind))
		return;
	bench_stats_failure(e->st, s->node, s->key, kind);
	e->last_done = uv_hrtime();
}

/* A connection with a free slot: nodes in turn, skipping `avoid` (-1: none) while another node
 * has a live connection, so a retry goes elsewhere when it can. NULL when none is free. */
static struct bench_conn *pick(struct bench_engine *e, long avoid)
{
	size_t k, n;

	for (k = 0; k < e->nnodes; k++) {
		n = e->rr + k;
		if (n >= e->nnodes)
			n -= e->nnodes;
		if ((long)n == avoid || !e->nodes[n].ready_head)
			continue;
		e->rr = n + 1 == e->nnodes ? 0 : n + 1;
		return e->nodes[n].ready_head;
	}
	if (avoid < 0 || !e->nodes[avoid].ready_head)
		return NULL;
	/* Another node is up but busy: wait for it rather than go back where this failed. */
	for (n = 0; n < e->nnodes; n++)
		if ((long)n != avoid && e->nodes[n].open)
			return NULL;
	return e->nodes[avoid].ready_head;
}

static void send_slot(struct bench_engine *e, struct bench_conn *c, struct bench_slot *s,
		      uint64_t now)
{
	s->sent_ns = now;
	s->node = c->node;
	s->attempts++;
	if (bench__conn_push(c, s) < 0) {
		bench_stats_failure(e->st, c->node, s->key, BENCH_XERR_OTHER);
		e->last_done = now;
	}
}

static void send_new(struct bench_engine *e, struct bench_conn *c, uint64_t start, uint64_t now)
{
	struct bench_slot s = { .start_ns = start };

	if (e->st->nkeys)
		s.key = e->next_idx % e->st->nkeys;
	e->next_idx++;
	e->st->issued++;
	send_slot(e, c, &s, now);
}

static void drain_retries(struct bench_engine *e, uint64_t now)
{
	size_t n = e->rq_len;
	struct bench_conn *c;
	struct bench_slot s;

	while (n--) {
		s = rq_pop(e);
		c = pick(e, e->nnodes > 1 ? (long)s.node : -1);
		if (c)
			send_slot(e, c, &s, now);
		else
			rq_push(e, &s); /* room: it was just popped */
	}
}

/* Requests whose intended time is <= now, capped. */
static uint64_t due_by(const struct bench_engine *e, uint64_t now)
{
	uint64_t due = (uint64_t)((double)(now - e->t0) / e->ns_per_req) + 1;

	return due < e->cap ? due : e->cap;
}

static uint64_t intended(const struct bench_engine *e, uint64_t idx)
{
	return e->t0 + (uint64_t)((double)idx * e->ns_per_req);
}

static void on_tick(uv_timer_t *t)
{
	struct bench_engine *e = t->data;

	e->armed_ns = 0;
	pump(e);
}

/* Wakes the loop at `at` (uv_hrtime's clock): a timerfd gives µs precision, libuv's timers
 * only ms, which would show up as up to 1 ms of generator lag in open-loop latencies. */
static void arm(struct bench_engine *e, uint64_t at)
{
	uint64_t now;

	if (e->armed_ns && e->armed_ns <= at)
		return; /* an earlier wakeup is pending; it re-arms */
	e->armed_ns = at;
#ifdef __linux__
	if (e->tfd_on) {
		struct itimerspec its = { 0 };

		its.it_value.tv_sec = (time_t)(at / 1000000000u);
		its.it_value.tv_nsec = (long)(at % 1000000000u);
		/* Setting the timer also clears a fired one: no read() needed. */
		if (timerfd_settime(e->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0) {
			e->tfd_fired = false;
			return;
		}
	}
#endif
	now = uv_hrtime();
	uv_timer_start(&e->tick, on_tick, at > now ? (at - now + 999999) / 1000000 : 0, 0);
}

static void on_spin(uv_idle_t *h)
{
	(void)h; /* an active idle handle keeps the loop from blocking; on_check pumps */
}

static void spin(struct bench_engine *e, bool on)
{
	if (on == e->spinning)
		return;
	e->spinning = on;
	if (on)
		uv_idle_start(&e->idle, on_spin);
	else
		uv_idle_stop(&e->idle);
}

/* The next request is due at `at`. Arming a timer and sleeping costs several µs per wakeup
 * (much more in a VM, where each hrtimer reprogram exits to the hypervisor), more than the
 * request itself: close to the due time the loop polls without blocking instead, which at
 * high rates is both cheaper and precise to a µs. */
static void wait_until(struct bench_engine *e, uint64_t at, uint64_t now)
{
	if (at <= now + SPIN_NS) {
		spin(e, true);
		return;
	}
	spin(e, false);
	arm(e, at - SPIN_NS / 2);
}

static void disarm(struct bench_engine *e)
{
	e->armed_ns = 0;
	uv_timer_stop(&e->tick);
#ifdef __linux__
	if (e->tfd_on) {
		struct itimerspec its = { 0 };

		timerfd_settime(e->tfd, 0, &its, NULL);
		e->tfd_fired = false;
	}
#endif
}

static void stop_sending(struct bench_engine *e, uint64_t now)
{
	uint64_t due;

	if (e->phase != BENCH_PH_RUNNING)
		return;
	e->phase = BENCH_PH_DRAINING;
	e->st->send_ns = now - e->t0;
	spin(e, false);
	if (e->o->rate > 0) {
		due = due_by(e, now);
		if (due > e->next_idx)
			e->st->unsent += due - e->next_idx;
		disarm(e);
	}
	uv_timer_stop(&e->stop_timer);
}

static void open_loop(struct bench_engine *e, uint64_t now)
{
	uint64_t due = due_by(e, now), at;
	struct bench_conn *c;

	/* The backlog is only an index range, but it is bounded all the same: a request that
	 * waited --timeout-ms for a free connection would time out anyway, so it is dropped
	 * (and reported) instead of sent, and the queue never holds more than rate x timeout. */
	if (now - e->t0 > e->timeout_ns) {
		double late = (double)(now - e->timeout_ns - e->t0) / e->ns_per_req;
		uint64_t oldest = (uint64_t)ceil(late);

		if (oldest > due)
			oldest = due;
		if (oldest > e->next_idx) {
			e->st->dropped += oldest - e->next_idx;
			e->next_idx = oldest;
		}
	}
	while (e->next_idx < due && (c = pick(e, -1))) {
		at = intended(e, e->next_idx);
		bench_hist_record(&e->st->lag, now > at ? now - at : 0);
		send_new(e, c, at, now);
	}
	if (e->next_idx >= e->cap)
		stop_sending(e, now);
	else if (e->next_idx == due)
		wait_until(e, intended(e, due) + 1, now);
	else
		spin(e, false); /* the backlog waits for a free slot: a response runs the pump */
}

static void closed_loop(struct bench_engine *e, uint64_t now)
{
	struct bench_conn *c;

	/* N connections x P slots are N*P virtual users: a request waiting to be retried keeps
	 * its user busy, so failures on one node do not raise the load on the others. */
	while (e->next_idx < e->cap && e->inflight + e->rq_len < e->nslots &&
	       (c = pick(e, -1)))
		send_new(e, c, now, now);
	if (e->next_idx >= e->cap)
		stop_sending(e, now);
}

static void pump(struct bench_engine *e)
{
	struct bench_conn *c;
	uint64_t now;

	if (e->phase != BENCH_PH_RUNNING && e->phase != BENCH_PH_DRAINING)
		return;
	now = uv_hrtime();
	if (e->rq_len)
		drain_retries(e, now);
	if (e->phase == BENCH_PH_RUNNING) {
		if (e->o->rate > 0)
			open_loop(e, now);
		else
			closed_loop(e, now);
	}
	/* One write per connection for everything queued in this pass. */
	while ((c = e->dirty_head)) {
		e->dirty_head = c->dirty_next;
		c->dirty = false;
		bench__conn_flush(c);
	}
	if (e->phase == BENCH_PH_DRAINING && !e->inflight && !e->rq_len)
		finish(e);
}

static void on_check(uv_check_t *h)
{
	pump(h->data);
}

#ifdef __linux__
static void on_tfd(uv_poll_t *h, int status, int events)
{
	struct bench_engine *e = h->data;

	(void)status;
	(void)events;
	e->armed_ns = 0;
	e->tfd_fired = true;
	pump(e);
	/* The poll is level-triggered: a fired timer nobody re-armed must be cleared. */
	if (e->tfd_fired)
		disarm(e);
}
#endif

static void on_stop_timer(uv_timer_t *t)
{
	struct bench_engine *e = t->data;
	uint64_t now = uv_hrtime(), last;

	/* libuv's ms timers can fire up to 1 ms early by uv_hrtime(): in open loop, let the
	 * schedule's last requests come due first. */
	if (e->o->rate > 0 && e->phase == BENCH_PH_RUNNING && due_by(e, now) < e->cap) {
		last = intended(e, e->cap - 1);
		if (last > now) {
			uv_timer_start(&e->stop_timer, on_stop_timer,
				       (last - now) / 1000000 + 1, 0);
			return;
		}
	}
	stop_sending(e, now);
	pump(e);
}

static void start_run(struct bench_engine *e);
static bool any_open(const struct bench_engine *e);

static void on_sweep(uv_timer_t *t)
{
	struct bench_engine *e = t->data;
	uint64_t now = uv_hrtime(), tmo = (uint64_t)e->o->timeout_ms * 1000000u;
	struct bench_conn *c;
	size_t i, n;
	struct bench_slot s;

	for (i = 0; i < e->nconns && e->phase != BENCH_PH_DONE; i++) {
		c = &e->conns[i];
		if (c->state == BENCH_CONN_OPEN && c->count &&
		    now - c->ring[c->head].sent_ns >= tmo) {
			bench__conn_fail(c, BENCH_XERR_TIMEOUT);
		} else if (c->state == BENCH_CONN_CONNECTING && now - c->connect_ns >= tmo) {
			c->fails++;
			e->last_conn_err = UV_ETIMEDOUT;
			bench__conn_fail(c, BENCH_XERR_TIMEOUT);
		}
	}
	/* Do not let a node that swallows SYNs hold the start for a whole timeout. */
	if (e->phase == BENCH_PH_CONNECTING && now - e->created_ns >= START_WAIT_NS && any_open(e))
		start_run(e);
	/* A retry that found no connection within the timeout of being queued ends as its last
	 * attempt did: a transport failure, or the 503 it got. (Queued during this sweep, it
	 * can be younger than `now`.) */
	for (n = e->rq_len; n && e->phase != BENCH_PH_DONE; n--) {
		s = rq_pop(e);
		if (s.sent_ns > now || now - s.sent_ns < tmo) {
			rq_push(e, &s);
			continue;
		}
		if (s.last_err == BENCH_XERR_UNAVAILABLE)
			bench_stats_response(e->st, s.node, s.key, 503, NULL, 0,
					     now > s.start_ns ? now - s.start_ns : 0);
		else
			bench_stats_failure(e->st, s.node, s.key, (enum bench_xerr)s.last_err);
		e->last_done = now;
	}
	pump(e);
}

static bool any_open(const struct bench_engine *e)
{
	size_t i;

	for (i = 0; i < e->nnodes; i++)
		if (e->nodes[i].open)
			return true;
	return false;
}

static void on_progress(uv_timer_t *t)
{
	struct bench_engine *e = t->data;
	const struct bench_stats *st = e->st;
	char a[32], b[32];

	fprintf(stderr, "[%7.1fs] %s requests, %s in the last second, %.2f%% ok, %.2f%% 429, "
		"%" PRIu64 " errors\n", (double)(uv_hrtime() - e->t0) / 1e9,
		bench_fmt_count(st->requests, a),
		bench_fmt_count(st->requests - e->progress_last, b),
		st->requests ? 100.0 * (double)st->ok / (double)st->requests : 0.0,
		st->requests ? 100.0 * (double)st->limited_total / (double)st->requests : 0.0,
		st->http_errors + st->transport_errors);
	e->progress_last = st->requests;
}

static void start_run(struct bench_engine *e)
{
	const struct bench_opts *o = e->o;

	e->phase = BENCH_PH_RUNNING;
	e->t0 = uv_hrtime();
	e->last_done = e->t0;
	uv_update_time(&e->loop);
	if (o->duration_s > 0)
		uv_timer_start(&e->stop_timer, on_stop_timer,
			       (uint64_t)ceil(o->duration_s * 1000), 0);
	if (e->progress_on)
		uv_timer_start(&e->progress, on_progress, 1000, 1000);
#ifdef __linux__
	e->tfd_on = o->rate > 0 && e->tfd >= 0 &&
		    uv_poll_start(&e->tpoll, UV_READABLE, on_tfd) == 0;
#endif
	pump(e);
}

void bench__conn_resolved(struct bench_engine *e, struct bench_conn *c)
{
	c->resolved = true;
	if (++e->resolved < e->o->concurrent || e->phase != BENCH_PH_CONNECTING)
		return;
	if (any_open(e))
		start_run(e);
	else
		finish(e); /* nothing connected: bench_run reports it */
}

static void abort_run(struct bench_engine *e)
{
	if (e->phase == BENCH_PH_RUNNING)
		stop_sending(e, uv_hrtime());
	e->st->abandoned += e->inflight + e->rq_len;
	e->inflight = 0;
	e->rq_len = 0;
	finish(e);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct bench_engine *e = h->data;

	(void)signum;
	e->signals++;
	e->st->interrupted = true;
	if (e->signals == 1 && e->phase != BENCH_PH_CONNECTING) {
		stop_sending(e, uv_hrtime());
		pump(e);
		return;
	}
	abort_run(e);
}

static void close_handle(uv_handle_t *h)
{
	if (h->loop && !uv_is_closing(h))
		uv_close(h, NULL);
}

static void finish(struct bench_engine *e)
{
	uint64_t el;
	size_t i;

	if (e->phase == BENCH_PH_DONE)
		return;
	if (e->phase == BENCH_PH_RUNNING)
		stop_sending(e, uv_hrtime());
	e->phase = BENCH_PH_DONE;
	if (e->t0) {
		el = e->last_done > e->t0 ? e->last_done - e->t0 : 0;
		e->st->elapsed_ns = el > e->st->send_ns ? el : e->st->send_ns;
	}
	for (i = 0; i < e->nconns; i++)
		bench__conn_shutdown(&e->conns[i]);
	close_handle((uv_handle_t *)&e->check);
	close_handle((uv_handle_t *)&e->sweep);
	close_handle((uv_handle_t *)&e->stop_timer);
	close_handle((uv_handle_t *)&e->progress);
	close_handle((uv_handle_t *)&e->tick);
	close_handle((uv_handle_t *)&e->idle);
	close_handle((uv_handle_t *)&e->sigint);
	close_handle((uv_handle_t *)&e->sigterm);
#ifdef __linux__
	close_handle((uv_handle_t *)&e->tpoll);
#endif
}

static int resolve(struct bench_engine *e, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	const struct addrinfo *ai;
	uv_getaddrinfo_t req;
	char port[8];
	size_t i;
	int rc;

	for (i = 0; i < e->nnodes; i++) {
		const struct bench_url *u = &e->o->nodes[i];

		snprintf(port, sizeof(port), "%u", u->port);
		/* Synchronous (no callback): this runs before the loop does. */
		rc = uv_getaddrinfo(&e->loop, &req, NULL, u->host, port, &hints);
		if (rc < 0) {
			snprintf(err, errlen, "cannot resolve %s: %s", u->text, uv_strerror(rc));
			return rc;
		}
		/* "localhost" often lists ::1 first, and many servers listen on IPv4 only (while
		 * one on [::] takes IPv4 too): prefer an IPv4 address. */
		for (ai = req.addrinfo; ai && ai->ai_family != AF_INET; ai = ai->ai_next)
			;
		if (!ai)
			ai = req.addrinfo;
		memcpy(&e->nodes[i].addr, ai->ai_addr, ai->ai_addrlen);
		uv_freeaddrinfo(req.addrinfo);
	}
	return 0;
}

static int init_handles(struct bench_engine *e)
{
	int rc = 0;

	rc |= uv_check_init(&e->loop, &e->check);
	rc |= uv_timer_init(&e->loop, &e->sweep);
	rc |= uv_timer_init(&e->loop, &e->stop_timer);
	rc |= uv_timer_init(&e->loop, &e->progress);
	rc |= uv_timer_init(&e->loop, &e->tick);
	rc |= uv_idle_init(&e->loop, &e->idle);
	rc |= uv_signal_init(&e->loop, &e->sigint);
	rc |= uv_signal_init(&e->loop, &e->sigterm);
	e->check.data = e->sweep.data = e->stop_timer.data = e->progress.data = e->tick.data = e;
	e->idle.data = e;
	e->sigint.data = e->sigterm.data = e;
#ifdef __linux__
	e->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (e->tfd >= 0 && uv_poll_init(&e->loop, &e->tpoll, e->tfd) < 0) {
		close(e->tfd);
		e->tfd = -1;
	}
	e->tpoll.data = e;
#endif
	return rc ? -ENOMEM : 0;
}

static int setup(struct bench_engine *e, char *err, size_t errlen)
{
	const struct bench_opts *o = e->o;
	uint64_t sweep_ms;
	size_t i;
	int rc;

	if ((rc = resolve(e, err, errlen)) < 0)
		return rc;
	for (i = 0; i < e->nnodes; i++) {
		if (bench_tmpl_build(&e->nodes[i].tmpl, o, &o->nodes[i]) < 0)
			goto out_nomem;
	}
	e->slots = calloc((size_t)o->concurrent * o->pipeline, sizeof(*e->slots));
	e->nslots = (uint64_t)o->concurrent * o->pipeline;
	/* Closed loop never queues more than nslots; open loop's retries get ten times that,
	 * beyond which a failed request is not retried. */
	e->rq_cap = (size_t)e->nslots * 10 + 16;
	e->rq = calloc(e->rq_cap, sizeof(*e->rq));
	e->conns = calloc(o->concurrent, sizeof(*e->conns));
	if (!e->slots || !e->rq || !e->conns)
		goto out_nomem;
	e->cap = o->max_requests ? o->max_requests : UINT64_MAX;
	e->timeout_ns = (uint64_t)o->timeout_ms * 1000000u;
	if (o->rate > 0) {
		e->ns_per_req = 1e9 / o->rate;
		if (o->duration_s > 0) {
			double n = ceil(o->duration_s * o->rate);

			if (n < (double)e->cap)
				e->cap = n < 1 ? 1 : (uint64_t)n;
		}
	}
	bench__settings_init(&e->settings);
	sweep_ms = o->timeout_ms / 10;
	sweep_ms = sweep_ms < 1 ? 1 : sweep_ms > 100 ? 100 : sweep_ms;
	uv_timer_start(&e->sweep, on_sweep, sweep_ms, sweep_ms);
	uv_check_start(&e->check, on_check);
	uv_signal_start(&e->sigint, on_signal, SIGINT);
	uv_signal_start(&e->sigterm, on_signal, SIGTERM);
	e->progress_on = !o->quiet && isatty(STDERR_FILENO);
	e->created_ns = uv_hrtime();
	for (i = 0; i < o->concurrent; i++) {
		/* Counted before connecting: a connect that fails at once reaches
		 * bench__conn_resolved, which must see every connection. */
		e->nconns = i + 1;
		if ((rc = bench__conn_init(e, &e->conns[i], (uint32_t)i,
					    (uint32_t)(i % e->nnodes))) < 0) {
			e->nconns = i;
			snprintf(err, errlen, "cannot create a connection: %s", uv_strerror(rc));
			return rc;
		}
		if (e->phase == BENCH_PH_DONE)
			break;
	}
	return 0;
out_nomem:
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

int bench_run(const struct bench_opts *o, struct bench_stats *s, char *err, size_t errlen)
{
	struct bench_engine *e = calloc(1, sizeof(*e));
	size_t i;
	int rc;

	if (!e) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	e->o = o;
	e->st = s;
	e->nnodes = o->nnodes;
	e->nodes = calloc(o->nnodes, sizeof(*e->nodes));
	if (!e->nodes) {
		free(e);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if ((rc = uv_loop_init(&e->loop)) < 0) {
		snprintf(err, errlen, "uv_loop_init: %s", uv_strerror(rc));
		goto out_free;
	}
	if ((rc = init_handles(e)) < 0) {
		snprintf(err, errlen, "cannot initialise the event loop");
		finish(e);
	} else if ((rc = setup(e, err, errlen)) < 0) {
		finish(e);
	}
	uv_run(&e->loop, UV_RUN_DEFAULT);
	if (rc == 0 && !e->t0) {
		rc = e->last_conn_err < 0 ? e->last_conn_err : -ECONNREFUSED;
		if (e->signals)
			snprintf(err, errlen, "interrupted before any connection opened");
		else
			snprintf(err, errlen, "cannot connect to any node: %s", uv_strerror(rc));
	}
#ifdef __linux__
	if (e->tfd >= 0)
		close(e->tfd);
#endif
	uv_loop_close(&e->loop);
out_free:
	for (i = 0; i < e->nconns; i++) {
		buf_close(&e->conns[i].out);
		buf_close(&e->conns[i].wbuf);
	}
	for (i = 0; i < e->nnodes; i++)
		bench_tmpl_close(&e->nodes[i].tmpl);
	free(e->conns);
	free(e->rq);
	free(e->slots);
	free(e->nodes);
	free(e);
	return rc;
}
