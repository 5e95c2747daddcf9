/* transport_send.c — where packets go: numeric addresses, the host-name cache, seeds and
 * self-detection, and the UDP send itself.
 *
 * Names never block the loop: uv_getaddrinfo runs in libuv's thread pool and the packets for a
 * name wait (a few, bounded) for its answer. A member's name is looked up again in the
 * background every GOSSIP__HOST_TTL_MS while the old addresses stay in use; a seed's name is
 * looked up on every contact, since that is how a restarted seed with a new address (Docker,
 * Kubernetes) is found, and every address it has is contacted (a headless Service names all
 * its pods) except this node's own. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include "gossip/transport_int.h"
#include "util/log.h"

struct pending_send {
	uv_udp_send_t req;   /* first: the callback gets &req */
	size_t len;
	uint8_t data[];
};

/* ---------------------------------------------------------------- addresses */

static void set_port(struct sockaddr_storage *sa, uint16_t port)
{
	if (sa->ss_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons(port);
	else if (sa->ss_family == AF_INET6)
		((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

static uint16_t get_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

/* An IPv4 address as ::ffff:a.b.c.d, for an IPv6 socket. */
static void map_v4(struct sockaddr_storage *sa)
{
	struct sockaddr_in v4 = *(struct sockaddr_in *)sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;

	memset(sa, 0, sizeof(*sa));
	v6->sin6_family = AF_INET6;
	v6->sin6_port = v4.sin_port;
	v6->sin6_addr.s6_addr[10] = 0xff;
	v6->sin6_addr.s6_addr[11] = 0xff;
	memcpy(&v6->sin6_addr.s6_addr[12], &v4.sin_addr, 4);
}

int gossip__addr_parse(const char *host, uint16_t port, int family,
		       struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0) {
		if (family == AF_INET6)
			map_v4(out);
		return 0;
	}
	memset(out, 0, sizeof(*out));
	if (family != AF_INET && uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0)
		return 0;
	memset(out, 0, sizeof(*out));
	return -EINVAL;
}

void gossip__addr_text(const struct sockaddr *sa, char *out, size_t len)
{
	if (!sa || uv_ip_name(sa, out, len) != 0)
		snprintf(out, len, "?");
}

static void addr_port_text(const struct sockaddr *sa, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	gossip__addr_text(sa, ip, sizeof(ip));
	snprintf(out, len, sa && sa->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
		 sa ? get_port(sa) : 0);
}

/* The 16-byte form of an address (IPv4 mapped), to compare across families. */
static bool ip16(const struct sockaddr *sa, uint8_t out[16])
{
	memset(out, 0, 16);
	if (sa->sa_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		return true;
	}
	return false;
}

static bool same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
	uint8_t x[16], y[16];

	return ip16(a, x) && ip16(b, y) && memcmp(x, y, 16) == 0;
}

static bool ip_is(const struct sockaddr *sa, bool loopback)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	uint8_t x[16];
	size_t i;

	if (!ip16(sa, x))
		return false;
	if (memcmp(x, mapped, 12) == 0)  /* IPv4: 127/8, or 0.0.0.0 */
		return loopback ? x[12] == 127 : !(x[12] | x[13] | x[14] | x[15]);
	for (i = 0; i < 15; i++)
		if (x[i])
			return false;
	return x[15] == (loopback ? 1 : 0);
}

bool gossip__addr_is_any(const struct sockaddr *sa)
{
	return ip_is(sa, false);
}

bool gossip__is_self(const struct gossip *g, const struct sockaddr *sa)
{
	uint16_t port = get_port(sa);
	size_t i;

	if (g->adv_addr.ss_family != AF_UNSPEC && port == g->adv_port &&
	    same_ip(sa, (const struct sockaddr *)&g->adv_addr))
		return true;
	if (port != g->bound_port)
		return false;
	if (same_ip(sa, (const struct sockaddr *)&g->bound))
		return true;
	/* Bound to a wildcard, we answer on every address of this host. */
	if (!ip_is((const struct sockaddr *)&g->bound, false))
		return false;
	if (ip_is(sa, true))
		return true;
	for (i = 0; i < g->nlocal; i++)
		if (same_ip(sa, (const struct sockaddr *)&g->local[i]))
			return true;
	return false;
}

int gossip__local_addrs(struct gossip *g)
{
	uv_interface_address_t *ifs;
	int i, n, err;

	if ((err = uv_interface_addresses(&ifs, &n)) < 0)
		return 0;  /* self-detection then relies on the bound address alone */
	if (n > 0 && !(g->local = calloc((size_t)n, sizeof(*g->local)))) {
		uv_free_interface_addresses(ifs, n);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		if (ifs[i].address.address4.sin_family == AF_INET)
			memcpy(&g->local[g->nlocal++], &ifs[i].address.address4,
			       sizeof(ifs[i].address.address4));
		else if (ifs[i].address.address6.sin6_family == AF_INET6)
			memcpy(&g->local[g->nlocal++], &ifs[i].address.address6,
			       sizeof(ifs[i].address.address6));
	}
	uv_free_interface_addresses(ifs, n);
	return 0;
}

/* ---------------------------------------------------------------- the socket */

static void on_sent(uv_udp_send_t *req, int status)
{
	struct pending_send *p = (struct pending_send *)req;
	struct gossip *g = req->handle->data;

	g->pending_sends--;
	if (status == 0)
		gossip__count_out(g, p->len);
	else if (status != UV_ECANCELED)
		gossip__send_error(g, status, "(queued)");
	free(p);
	gossip__maybe_destroy(g);
}

static void udp_send(struct gossip *g, struct sockaddr_storage *sa, const uint8_t *pkt,
		     size_t len)
{
	uv_buf_t b = uv_buf_init((char *)pkt, (unsigned)len);
	struct pending_send *p;
	char to[INET6_ADDRSTRLEN + 8];
	int rc;

	if (g->family == AF_INET6 && sa->ss_family == AF_INET)
		map_v4(sa);
	rc = uv_udp_try_send(&g->udp, &b, 1, (const struct sockaddr *)sa);
	if (rc >= 0) {
		gossip__count_out(g, len);
		return;
	}
	/* EAGAIN: the kernel buffer is full or libuv still has a queue; wait in line, bounded.
	 * ENOSYS: a platform without try_send. */
	if ((rc == UV_EAGAIN || rc == UV_ENOSYS) && g->pending_sends < GOSSIP__SENDQ_MAX &&
	    (p = malloc(sizeof(*p) + len))) {
		memcpy(p->data, pkt, len);
		p->len = len;
		b = uv_buf_init((char *)p->data, (unsigned)len);
		if ((rc = uv_udp_send(&p->req, &g->udp, &b, 1, (const struct sockaddr *)sa,
				      on_sent)) == 0) {
			g->pending_sends++;
			return;
		}
		free(p);
	}
	addr_port_text((const struct sockaddr *)sa, to, sizeof(to));
	gossip__send_error(g, rc == UV_EAGAIN ? -ENOBUFS : rc, to);
}

/* To a seed's address: skipped when it is ours. */
static void seed_send(struct gossip *g, struct sockaddr_storage *sa, const uint8_t *pkt,
		      size_t len)
{
	if (gossip__is_self(g, (const struct sockaddr *)sa))
		return;
	g->seed_remote++;
	udp_send(g, sa, pkt, len);
}

/* ---------------------------------------------------------------- host names */

static void queue_free(struct gossip__host *h)
{
	struct gossip__queued *q;

	while ((q = h->q)) {
		h->q = q->next;
		free(q);
	}
	h->q_tail = &h->q;
	h->nq = 0;
}

/* Sends what waited for h's answer. */
static void flush(struct gossip *g, struct gossip__host *h)
{
	struct sockaddr_storage sa;
	struct gossip__queued *q;
	size_t i;

	while ((q = h->q)) {
		h->q = q->next;
		if (q->seed)
			g->seed_lookups++;
		for (i = 0; i < h->naddr && (q->seed || i == 0); i++) {
			sa = h->addr[i];
			set_port(&sa, q->port);
			if (q->seed)
				seed_send(g, &sa, q->data, q->len);
			else
				udp_send(g, &sa, q->data, q->len);
		}
		if (!h->naddr)
			gossip__send_error(g, -EHOSTUNREACH, h->name);
		free(q);
	}
	h->q_tail = &h->q;
	h->nq = 0;
}

static void on_lookup(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct gossip__host *h = req->data;
	struct gossip *g = h->g;
	struct addrinfo *ai;
	size_t n = 0, i;

	h->pending = false;
	g->pending_lookups--;
	if (g->closing) {
		uv_freeaddrinfo(res);
		queue_free(h);
		free(h);
		gossip__maybe_destroy(g);
		return;
	}
	h->answered_at = uv_now(g->loop);
	for (ai = status == 0 ? res : NULL; ai && n < GOSSIP__ADDRS_MAX; ai = ai->ai_next) {
		/* IPv6 answers are of no use to an IPv4 socket. */
		if ((ai->ai_family != AF_INET &&
		     (ai->ai_family != AF_INET6 || g->family != AF_INET6)) ||
		    ai->ai_addrlen > sizeof(h->addr[0]))
			continue;
		for (i = 0; i < n && !same_ip((struct sockaddr *)&h->addr[i], ai->ai_addr); i++)
			;
		if (i < n)
			continue;
		memset(&h->addr[n], 0, sizeof(h->addr[n]));
		memcpy(&h->addr[n], ai->ai_addr, ai->ai_addrlen);
		set_port(&h->addr[n], 0);
		n++;
	}
	uv_freeaddrinfo(res);
	/* A failed lookup keeps the last addresses: stale beats none for a member that moved
	 * nowhere, and a seed contact fails the same way either way. */
	if (n)
		h->naddr = n;
	else
		gossip__log_limited(g, GOSSIP__LOG_RESOLVE, LOG_WARN,
				    "gossip: cannot resolve host=%s err=\"%s\"%s", h->name,
				    status < 0 ? uv_strerror(status) : "no usable address",
				    h->naddr ? " using=last-known" : "");
	flush(g, h);
}

static void lookup(struct gossip *g, struct gossip__host *h)
{
	struct addrinfo hints;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = g->family == AF_INET ? AF_INET : AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	h->req.data = h;
	if ((rc = uv_getaddrinfo(g->loop, &h->req, on_lookup, h->name, NULL, &hints)) < 0) {
		h->answered_at = uv_now(g->loop);
		gossip__log_limited(g, GOSSIP__LOG_RESOLVE, LOG_WARN,
				    "gossip: cannot resolve host=%s err=\"%s\"", h->name,
				    uv_strerror(rc));
		flush(g, h);
		return;
	}
	h->pending = true;
	g->pending_lookups++;
}

static struct gossip__host *host_get(struct gossip *g, const char *name)
{
	struct gossip__host *h;
	size_t i, victim = SIZE_MAX;

	for (i = 0; i < g->nhosts; i++)
		if (strcmp(g->hosts[i]->name, name) == 0)
			return g->hosts[i];
	if (strlen(name) > MEMBERS_HOST_MAX)
		return NULL;
	if (g->nhosts == GOSSIP__HOSTS_MAX) {
		/* Evict the name answered longest ago that nothing waits for. */
		for (i = 0; i < g->nhosts; i++)
			if (!g->hosts[i]->pending && !g->hosts[i]->nq &&
			    (victim == SIZE_MAX ||
			     g->hosts[i]->answered_at < g->hosts[victim]->answered_at))
				victim = i;
		if (victim == SIZE_MAX)
			return NULL;
		free(g->hosts[victim]);
		g->hosts[victim] = g->hosts[--g->nhosts];
	}
	if (!(h = calloc(1, sizeof(*h))))
		return NULL;
	h->g = g;
	strcpy(h->name, name);
	h->q_tail = &h->q;
	g->hosts[g->nhosts++] = h;
	return h;
}

static int enqueue(struct gossip__host *h, uint16_t port, bool seed, const uint8_t *pkt,
		   size_t len)
{
	struct gossip__queued *q;

	if (h->nq >= GOSSIP__HOST_QUEUE_MAX || !(q = malloc(sizeof(*q) + len)))
		return -ENOBUFS;
	q->next = NULL;
	q->port = port;
	q->seed = seed;
	q->len = len;
	memcpy(q->data, pkt, len);
	*h->q_tail = q;
	h->q_tail = &q->next;
	h->nq++;
	return 0;
}

void gossip__send(struct gossip *g, const char *host, uint16_t port, bool seed,
		  const uint8_t *pkt, size_t len)
{
	uint64_t now = uv_now(g->loop);
	struct sockaddr_storage sa;
	struct gossip__host *h;

	if (gossip__addr_parse(host, port, g->family, &sa) == 0) {
		if (seed) {
			g->seed_lookups++;
			seed_send(g, &sa, pkt, len);
		} else {
			udp_send(g, &sa, pkt, len);
		}
		return;
	}
	if (!(h = host_get(g, host))) {
		gossip__send_error(g, -ENOBUFS, host);
		return;
	}
	if (!seed && h->naddr) {
		if (!h->pending && now - h->answered_at >= GOSSIP__HOST_TTL_MS)
			lookup(g, h);
		sa = h->addr[0];
		set_port(&sa, port);
		udp_send(g, &sa, pkt, len);
		return;
	}
	/* A name that just failed is not asked again at once: its packets are lost meanwhile,
	 * which the protocol tolerates. */
	if (!seed && !h->pending && h->answered_at &&
	    now - h->answered_at < GOSSIP__HOST_RETRY_MS) {
		gossip__send_error(g, -EHOSTUNREACH, host);
		return;
	}
	if (enqueue(h, port, seed, pkt, len) < 0) {
		gossip__send_error(g, -ENOBUFS, host);
		return;
	}
	if (!h->pending)
		lookup(g, h);
}

size_t gossip__queued_packets(const struct gossip *g)
{
	size_t i, n = 0;

	for (i = 0; i < g->nhosts; i++)
		n += g->hosts[i]->nq;
	return n;
}

void gossip__hosts_close(struct gossip *g)
{
	struct gossip__host *h;
	size_t i;

	for (i = 0; i < g->nhosts; i++) {
		h = g->hosts[i];
		queue_free(h);
		/* A lookup in flight owns its entry from now on: its callback (with UV_ECANCELED,
		 * or with the answer when it was already running) frees it. */
		if (h->pending)
			uv_cancel((uv_req_t *)&h->req);
		else
			free(h);
	}
	g->nhosts = 0;
}
