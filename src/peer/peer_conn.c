/* peer_conn.c — one peer connection: dialling (with uv_getaddrinfo for host names), accepting,
 * the handshake, the sealed frame stream, writes, and every refusal of hostile input.
 *
 * Reads are handled in place in the pool's one read buffer (libuv calls alloc and read back to
 * back, and nothing here re-enters a read), so a frame that arrives whole is opened, decoded and
 * dispatched without a copy; the frame reader keeps only the tail of a frame split across reads.
 *
 * Writes: sealed frames accumulate in wq during the turn; the flush hands them to uv_try_write,
 * which normally takes everything at once (one syscall per connection per turn, no copy). What
 * the kernel does not take moves to wfly for a uv_write while wq keeps accumulating: the two
 * buffers swap, so neither is copied nor reallocated in steady state. */
#include "peer/peer_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/metrics.h"
#include "wire/keyring.h"

static void on_closed(uv_handle_t *h)
{
	struct peer__conn *c = h->data;
	struct peer_pool *p = c->pool;

	peer__list_del(&c->link);
	if (!c->outgoing)
		p->nincoming--;
	wire_frame_reader_close(&c->rd);
	wire_hs_close(&c->hs);
	wire_session_close(&c->sess);
	buf_close(&c->wq);
	buf_close(&c->wfly);
	buf_close(&c->msgs.data);
	free(c->replies);
	free(c);
	peer__unref(p);
}

void peer__conn_close(struct peer__conn *c)
{
	struct peer_pool *p = c->pool;
	struct peer__node *n = c->node;
	bool ready = c->state == PEER__READY;

	if (c->state == PEER__CLOSING)
		return;
	c->state = PEER__CLOSING;
	if (ready && c->outgoing) {
		p->st.conns_out--;
		metrics_gauge_add(p->m_conns_out, -1);
	} else if (ready) {
		p->st.conns_in--;
		metrics_gauge_add(p->m_conns_in, -1);
	}
	if (c->dirty) {
		struct peer__conn **pp = &p->dirty_conns;

		while (*pp && *pp != c)
			pp = &(*pp)->dirty_next;
		if (*pp)
			*pp = c->dirty_next;
		c->dirty = false;
	}
	if (p->reply_cache == c)
		p->reply_cache = NULL;
	uv_close((uv_handle_t *)&c->tcp, on_closed);
	/* Last, because it runs callbacks: they find the node without a connection. */
	if (c->outgoing && n) {
		c->node = NULL;
		if (ready && !p->freeing && peer__log_ok(p))
			log_warn("msg=\"peer connection lost\" node=%s addr=%s", n->id, c->addr);
		peer__node_conn_lost(n, ready);
	}
}

static struct peer__conn *conn_new(struct peer_pool *p, bool outgoing)
{
	struct peer__conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	if (uv_tcp_init(p->loop, &c->tcp) < 0) {
		free(c);
		return NULL;
	}
	/* Connections never keep the loop alive by themselves (see peer.h). */
	uv_unref((uv_handle_t *)&c->tcp);
	c->tcp.data = c;
	c->creq.data = c;
	c->wreq.data = c;
	c->pool = p;
	c->outgoing = outgoing;
	c->id = ++p->next_conn_id;
	c->state = outgoing ? PEER__CONNECTING : PEER__HANDSHAKE;
	c->deadline_ms = uv_now(p->loop) + p->cfg.handshake_timeout_ms;
	wire_frame_reader_init(&c->rd, WIRE_HELLO_MAX);
	buf_init(&c->wq);
	buf_init(&c->wfly);
	buf_init(&c->msgs.data);
	peer__list_add_tail(&p->conns, &c->link);
	if (!outgoing)
		p->nincoming++;
	p->refs++;
	return c;
}

static void set_addr(struct peer__conn *c, const struct sockaddr *sa)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET) {
		uv_ip4_name((const struct sockaddr_in *)(const void *)sa, ip, sizeof(ip));
		port = ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
		snprintf(c->addr, sizeof(c->addr), "%s:%u", ip, port);
	} else if (sa->sa_family == AF_INET6) {
		uv_ip6_name((const struct sockaddr_in6 *)(const void *)sa, ip, sizeof(ip));
		port = ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
		snprintf(c->addr, sizeof(c->addr), "[%s]:%u", ip, port);
	}
}

static void tune(struct peer__conn *c)
{
	/* Batches are already one write per turn; Nagle would only hold them back. */
	uv_tcp_nodelay(&c->tcp, 1);
	uv_tcp_keepalive(&c->tcp, 1, 30);
}

/* ---- writing ---- */

static void on_write(uv_write_t *w, int status)
{
	struct peer__conn *c = w->data;
	struct peer_pool *p = c->pool;

	c->writing = false;
	buf_reset(&c->wfly);
	if (c->state == PEER__CLOSING)
		return;
	if (status < 0) {
		if (peer__log_ok(p))
			log_warn("msg=\"peer write failed\" addr=%s error=\"%s\"", c->addr,
				 uv_strerror(status));
		peer__conn_close(c);
		return;
	}
	peer__conn_write(c);
	if (c->read_paused && peer__conn_unsent(c) <= p->cfg.max_unsent / 2 &&
	    c->state != PEER__CLOSING) {
		c->read_paused = false;
		peer__conn_read_start(c);
	}
}

void peer__conn_write(struct peer__conn *c)
{
	struct peer_pool *p = c->pool;
	struct buf tmp;
	uv_buf_t b;
	int n, err;

	if (c->writing || c->wq.len == 0 || c->state == PEER__CLOSING ||
	    c->state == PEER__CONNECTING)
		return;
	b = uv_buf_init(c->wq.data, (unsigned)c->wq.len);
	n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (n >= 0 && (size_t)n == c->wq.len) {
		buf_reset(&c->wq);
		return;
	}
	if (n < 0 && n != UV_EAGAIN) {
		if (peer__log_ok(p))
			log_warn("msg=\"peer write failed\" addr=%s error=\"%s\"", c->addr,
				 uv_strerror(n));
		peer__conn_close(c);
		return;
	}
	if (n < 0)
		n = 0;
	tmp = c->wfly;
	c->wfly = c->wq;
	c->wq = tmp;
	b = uv_buf_init(c->wfly.data + n, (unsigned)(c->wfly.len - (size_t)n));
	if ((err = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write)) < 0) {
		buf_reset(&c->wfly);
		peer__conn_close(c);
		return;
	}
	c->writing = true;
	/* A peer that sends checks but does not read our answers gets no more reading from us
	 * until they drain: our memory stays bounded by max_unsent. */
	if (!c->outgoing && !c->read_paused && peer__conn_unsent(c) > p->cfg.max_unsent) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->read_paused = true;
	}
}

int peer__conn_seal(struct peer__conn *c, const void *plain, size_t len)
{
	return wire_seal(&c->sess, plain, len, &c->wq);
}

/* ---- reading ---- */

/* The Poly1305 tag ends every sealed frame and is unique per frame of a session, so a frame
 * whose tag we have already accepted is a copy. */
static bool tag_seen(const struct peer__conn *c, const uint8_t *f, size_t len)
{
	unsigned n = c->ntags < PEER__TAGS ? c->ntags : PEER__TAGS;

	if (len < PEER__TAG_BYTES)
		return false;
	for (unsigned i = 0; i < n; i++)
		if (memcmp(c->tags[i], f + len - PEER__TAG_BYTES, PEER__TAG_BYTES) == 0)
			return true;
	return false;
}

static void tag_record(struct peer__conn *c, const uint8_t *f, size_t len)
{
	memcpy(c->tags[c->ntags % PEER__TAGS], f + len - PEER__TAG_BYTES, PEER__TAG_BYTES);
	c->ntags++;
}

static enum peer_reject reject_of(int err)
{
	switch (err) {
	case -EPROTONOSUPPORT:
		return PEER_REJ_VERSION;
	case -EMSGSIZE:
		return PEER_REJ_OVERSIZED;
	case -EPROTO:
		return PEER_REJ_MALFORMED;
	default:
		return PEER_REJ_HANDSHAKE;
	}
}

static void on_hello(struct peer__conn *c, const uint8_t *f, size_t len)
{
	char detail[64];
	unsigned major, minor;
	int rc = wire_hs_step(&c->hs, f, len, &c->wq, &c->sess);

	if (rc < 0) {
		detail[0] = '\0';
		if (rc == -EPROTONOSUPPORT) {
			wire_hs_peer_version(&c->hs, &major, &minor);
			snprintf(detail, sizeof(detail), "peer_version=%u.%u ours=%u.%u", major,
				 minor, WIRE_VERSION_MAJOR, WIRE_VERSION_MINOR);
		}
		peer__reject(c, reject_of(rc), rc, detail[0] ? detail : "stage=handshake");
		peer__conn_close(c);
		return;
	}
	/* HELLO_R or FINISH, when the step produced one. */
	peer__conn_write(c);
	if (rc == 1 && c->state != PEER__CLOSING) {
		wire_hs_close(&c->hs);
		memcpy(c->peer_id, c->sess.peer_id, sizeof(c->peer_id));
		wire_frame_reader_set_max(&c->rd, WIRE_FRAME_MAX);
		peer__conn_ready(c);
	}
}

static void on_frame(struct peer__conn *c, const uint8_t *f, size_t len)
{
	struct peer_pool *p = c->pool;
	struct wire_msg m;
	int rc = wire_open(&c->sess, f, len, &p->plain);

	if (rc == -EBADMSG) {
		bool replay = tag_seen(c, f, len);

		peer__reject(c, replay ? PEER_REJ_REPLAYED : PEER_REJ_TAMPERED, rc, NULL);
		peer__conn_close(c);
		return;
	}
	if (rc < 0) {
		peer__conn_close(c);
		return;
	}
	tag_record(c, f, len);
	rc = wire_decode((const uint8_t *)p->plain.data, p->plain.len, &m);
	if (rc == -ENOMSG) {
		/* A newer minor version's message: skip it, the session stays usable. */
		p->st.messages_unhandled++;
		return;
	}
	if (rc < 0) {
		peer__reject(c, rc == -ENOMEM ? PEER_REJ_MALFORMED : reject_of(rc), rc, NULL);
		peer__conn_close(c);
		return;
	}
	peer__dispatch(c, &m);
	wire_msg_close(&m);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct peer__conn *c = h->data;

	(void)suggested;
	b->base = (char *)c->pool->rbuf;
	b->len = PEER__READ_BUF;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct peer__conn *c = s->data;
	const uint8_t *d = (const uint8_t *)b->base;
	size_t len = nread > 0 ? (size_t)nread : 0;

	if (nread == 0 || c->state == PEER__CLOSING)
		return;
	if (nread < 0) {
		/* During the handshake a close is the other side refusing us: it found no key
		 * of ours in its ring, or our MAC wrong. (An incoming connection that never sent
		 * a hello is only a port probe.) */
		if (c->state == PEER__HANDSHAKE && (c->outgoing || c->nrx > 0))
			peer__reject(c, PEER_REJ_HANDSHAKE, 0, "closed_by_peer=handshake");
		peer__conn_close(c);
		return;
	}
	while (len > 0 && c->state != PEER__CLOSING) {
		const uint8_t *f;
		size_t used, flen;
		int rc = wire_frame_read(&c->rd, d, len, &used, &f, &flen);

		if (rc < 0) {
			peer__reject(c, rc == -EMSGSIZE ? PEER_REJ_OVERSIZED : PEER_REJ_MALFORMED, rc,
				     c->state == PEER__HANDSHAKE ? "stage=handshake" : "stage=frame");
			peer__conn_close(c);
			return;
		}
		d += used;
		len -= used;
		if (rc == 0)
			break;
		c->nrx++;
		if (c->state == PEER__HANDSHAKE)
			on_hello(c, f, flen);
		else
			on_frame(c, f, flen);
	}
}

void peer__conn_read_start(struct peer__conn *c)
{
	int err = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);

	if (err < 0)
		peer__conn_close(c);
}

/* ---- dialling ---- */

static void on_connect(uv_connect_t *r, int status)
{
	struct peer__conn *c = r->data;
	struct peer_pool *p = c->pool;
	struct sockaddr_storage ss;
	int len = sizeof(ss), err;

	if (c->state == PEER__CLOSING)
		return;
	if (status < 0) {
		if (peer__log_ok(p))
			log_warn("msg=\"peer connect failed\" node=%s addr=%s error=\"%s\"",
				 c->node ? c->node->id : "-", c->addr, uv_strerror(status));
		peer__conn_close(c);
		return;
	}
	tune(c);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		set_addr(c, (struct sockaddr *)&ss);
	if ((err = wire_hs_init(&c->hs, p->cfg.keyring, p->self, true, &c->wq)) < 0) {
		if (peer__log_ok(p))
			log_error("msg=\"peer handshake cannot start\" error=\"%s\"",
				  wire_strerror(err));
		peer__conn_close(c);
		return;
	}
	c->state = PEER__HANDSHAKE;
	peer__conn_read_start(c);
	peer__conn_write(c);
}

static int dial(struct peer__node *n, const struct sockaddr *sa)
{
	struct peer__conn *c = conn_new(n->pool, true);
	int err;

	if (!c)
		return -ENOMEM;
	set_addr(c, sa);
	if ((err = uv_tcp_connect(&c->creq, &c->tcp, sa, on_connect)) < 0) {
		peer__conn_close(c);  /* not yet attached to n: no callbacks */
		return err;
	}
	c->node = n;
	n->conn = c;
	return 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct peer__resolve *rs = req->data;
	struct peer_pool *p = rs->pool;
	struct peer__node *n = rs->node;
	int err = status;

	if (n) {
		n->gai = NULL;
		n->resolve_patience_ms = 0;
		if (err == 0)
			err = res ? dial(n, res->ai_addr) : UV_EAI_NONAME;
		if (err < 0) {
			if (peer__log_ok(p))
				log_warn("msg=\"peer address not resolved\" node=%s host=%s "
					 "error=\"%s\"", n->id, n->host, uv_strerror(err));
			peer__node_conn_lost(n, false);
		}
	}
	uv_freeaddrinfo(res);
	free(rs);
	peer__unref(p);
}

int peer__connect(struct peer__node *n)
{
	struct peer_pool *p = n->pool;
	struct sockaddr_storage ss;
	struct addrinfo hints;
	struct peer__resolve *rs;
	char port[8];
	int err;

	if (uv_ip4_addr(n->host, n->port, (struct sockaddr_in *)&ss) == 0 ||
	    uv_ip6_addr(n->host, n->port, (struct sockaddr_in6 *)&ss) == 0)
		return dial(n, (const struct sockaddr *)&ss);
	if (!(rs = calloc(1, sizeof(*rs))))
		return -ENOMEM;
	rs->pool = p;
	rs->node = n;
	rs->started_ms = uv_now(p->loop);
	rs->req.data = rs;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", n->port);
	if ((err = uv_getaddrinfo(p->loop, &rs->req, on_resolved, n->host, port, &hints)) < 0) {
		free(rs);
		return err;
	}
	n->gai = rs;
	p->refs++;
	return 0;
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *srv, int status)
{
	struct peer_pool *p = srv->data;
	struct sockaddr_storage ss;
	struct peer__conn *c;
	int len = sizeof(ss), err;

	if (status < 0) {
		if (peer__log_ok(p))
			log_warn("msg=\"peer accept failed\" error=\"%s\"", uv_strerror(status));
		return;
	}
	if (!(c = conn_new(p, false)))
		return;  /* the connection stays in the backlog; the next accept retries */
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
		peer__conn_close(c);
		return;
	}
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		set_addr(c, (struct sockaddr *)&ss);
	if (p->nincoming > p->cfg.max_incoming) {
		if (peer__log_ok(p))
			log_warn("msg=\"peer connection refused\" reason=too_many addr=%s max=%u",
				 c->addr, p->cfg.max_incoming);
		peer__conn_close(c);
		return;
	}
	tune(c);
	if ((err = wire_hs_init(&c->hs, p->cfg.keyring, p->self, false, &c->wq)) < 0) {
		peer__conn_close(c);
		return;
	}
	peer__conn_read_start(c);
}

int peer__listen(struct peer_pool *p, const char *host, uint16_t port)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss), err;

	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) < 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) < 0)
		return -EINVAL;
	if ((err = uv_tcp_init(p->loop, &p->listener)) < 0)
		return err;
	uv_unref((uv_handle_t *)&p->listener);
	p->listener.data = p;
	p->listening = true;  /* from here the handle is open and peer_pool_free closes it */
	p->refs++;
	if ((err = uv_tcp_bind(&p->listener, (const struct sockaddr *)&ss, 0)) < 0 ||
	    (err = uv_listen((uv_stream_t *)&p->listener, 128, on_connection)) < 0)
		return err;
	if (uv_tcp_getsockname(&p->listener, (struct sockaddr *)&ss, &len) == 0)
		p->port = ntohs(ss.ss_family == AF_INET6 ?
				((struct sockaddr_in6 *)&ss)->sin6_port :
				((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}
