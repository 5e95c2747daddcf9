/* transport_codec.c — maps the state machine's messages (struct members_msg) onto the v1 gossip
 * packet body (struct wire_gossip) and back. Pure: no libuv calls, no clock.
 *
 * The v1 body is [type, seq u64, target, [member...]] with five types; the state machine has
 * seven and a few more fields. Until the wire format grows them (see the report of this
 * change), they travel as follows:
 *  - NACK and GOSSIP are ACKs whose seq carries a kind in its high 32 bits (the state machine's
 *    seq is 32 bits): 0 plain, 1 NACK, 2 GOSSIP. Any other kind, or a kind on another type, is
 *    malformed.
 *  - PING_REQ: the first member record is the target's address (id = target), which the
 *    receiver takes out of the updates.
 *  - The sender's reply address (from_host, from_port) is its own record, which the state
 *    machine puts first in every message it sends; without one, the packet's source address.
 *  - An update's accuser (`from`) does not travel: the receiver counts the sender as the
 *    accuser of a SUSPECT or DEAD record (members.h allows an empty `from`), so a suspicion
 *    relayed by a third node may count as one more confirmation than memberlist would.
 *  - The http port travels in the member record's http_port field. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "gossip/transport_int.h"

#define KIND_SHIFT 32
#define KIND_PLAIN 0u
#define KIND_NACK 1u
#define KIND_GOSSIP 2u

/* v (cap elements of `size` bytes) with room for `want`: v itself, a reallocation of it, or
 * NULL when that fails (v is then unchanged). */
static void *reserve(void *v, size_t *cap, size_t want, size_t size)
{
	if (want <= *cap)
		return v;
	if (!(v = realloc(v, want * size)))
		return NULL;
	*cap = want;
	return v;
}

static void to_wire_member(const struct members_update *u, struct wire_member *w)
{
	memset(w, 0, sizeof(*w));
	strcpy(w->id, u->id);
	strcpy(w->host, u->host);
	w->gossip_port = u->port;
	w->peer_port = u->peer_port;
	w->http_port = u->http_port;
	w->incarnation = u->incarnation;
	w->state = u->state;
}

static void from_wire_member(const struct wire_member *w, struct members_update *u)
{
	memset(u, 0, sizeof(*u));
	strcpy(u->id, w->id);
	strcpy(u->host, w->host);
	u->port = w->gossip_port;
	u->peer_port = w->peer_port;
	u->http_port = w->http_port;
	u->incarnation = w->incarnation;
	u->state = w->state;
}

int gossip__msg_to_wire(const struct members_msg *msg, struct wire_gossip *w,
			struct wire_member **scratch, size_t *cap)
{
	bool req = msg->type == MEMBERS_PING_REQ;
	size_t n = msg->n_updates, max, i, k = 0;
	uint64_t kind = KIND_PLAIN;
	struct wire_member *s;

	memset(w, 0, sizeof(*w));
	switch (msg->type) {
	case MEMBERS_PING:
		w->type = WIRE_GOSSIP_PING;
		break;
	case MEMBERS_ACK:
		w->type = WIRE_GOSSIP_ACK;
		break;
	case MEMBERS_NACK:
		w->type = WIRE_GOSSIP_ACK;
		kind = KIND_NACK;
		break;
	case MEMBERS_GOSSIP:
		w->type = WIRE_GOSSIP_ACK;
		kind = KIND_GOSSIP;
		break;
	case MEMBERS_PING_REQ:
		w->type = WIRE_GOSSIP_PING_REQ;
		break;
	case MEMBERS_PUSH_PULL:
		w->type = WIRE_GOSSIP_PUSH_PULL;
		break;
	case MEMBERS_PUSH_PULL_REPLY:
		w->type = WIRE_GOSSIP_PUSH_PULL_REPLY;
		break;
	default:
		return -EINVAL;
	}
	w->seq = kind << KIND_SHIFT | msg->seq;
	if (msg->type == MEMBERS_PING || req)
		strcpy(w->target, msg->target);
	/* Past the wire's per-type limit the tail is dropped: piggybacked rumors ride again, and
	 * a full state that large is cut short (the sender's own record comes first). */
	max = w->type >= WIRE_GOSSIP_PUSH_PULL ? WIRE_GOSSIP_MEMBERS_MAX : WIRE_GOSSIP_UPDATES_MAX;
	if (n + req > max)
		n = max - req;
	if (!(s = reserve(*scratch, cap, n + req ? n + req : 1, sizeof(*s))))
		return -ENOMEM;
	*scratch = s;
	if (req) {
		memset(&s[k], 0, sizeof(s[k]));
		strcpy(s[k].id, msg->target);
		strcpy(s[k].host, msg->target_host);
		s[k].gossip_port = s[k].peer_port = msg->target_port;
		s[k].state = WIRE_MEMBER_ALIVE;
		k++;
	}
	for (i = 0; i < n; i++)
		to_wire_member(&msg->updates[i], &s[k++]);
	w->updates = k ? s : NULL;
	w->nupdates = k;
	return 0;
}

/* The sender's reply address: its own record, else where the packet came from. */
static int reply_address(const struct wire_gossip *w, const struct sockaddr *src,
			 struct members_msg *msg)
{
	size_t i;

	for (i = 0; i < w->nupdates; i++) {
		if (strcmp(w->updates[i].id, w->from) == 0 && w->updates[i].gossip_port) {
			strcpy(msg->from_host, w->updates[i].host);
			msg->from_port = w->updates[i].gossip_port;
			return 0;
		}
	}
	if (!src || (src->sa_family != AF_INET && src->sa_family != AF_INET6))
		return -EBADMSG;
	gossip__addr_text(src, msg->from_host, sizeof(msg->from_host));
	msg->from_port = ntohs(src->sa_family == AF_INET ?
			       ((const struct sockaddr_in *)src)->sin_port :
			       ((const struct sockaddr_in6 *)src)->sin6_port);
	return msg->from_host[0] && msg->from_port ? 0 : -EBADMSG;
}

int gossip__msg_from_wire(const struct wire_gossip *w, const struct sockaddr *src,
			  struct members_msg *msg, struct members_update **scratch, size_t *cap)
{
	uint64_t kind = w->seq >> KIND_SHIFT;
	const struct wire_member *u = w->updates;
	size_t n = w->nupdates, i;
	struct members_update *s;
	int err;

	memset(msg, 0, sizeof(*msg));
	msg->seq = (uint32_t)w->seq;
	if (kind != KIND_PLAIN && (w->type != WIRE_GOSSIP_ACK || kind > KIND_GOSSIP))
		return -EBADMSG;
	switch (w->type) {
	case WIRE_GOSSIP_PING:
		msg->type = MEMBERS_PING;
		strcpy(msg->target, w->target);
		break;
	case WIRE_GOSSIP_ACK:
		msg->type = kind == KIND_NACK ? MEMBERS_NACK :
			    kind == KIND_GOSSIP ? MEMBERS_GOSSIP : MEMBERS_ACK;
		break;
	case WIRE_GOSSIP_PING_REQ:
		if (!n || !w->target[0] || strcmp(u[0].id, w->target) || !u[0].gossip_port)
			return -EBADMSG;
		msg->type = MEMBERS_PING_REQ;
		strcpy(msg->target, w->target);
		strcpy(msg->target_host, u[0].host);
		msg->target_port = u[0].gossip_port;
		u++;
		n--;
		break;
	case WIRE_GOSSIP_PUSH_PULL:
		msg->type = MEMBERS_PUSH_PULL;
		break;
	case WIRE_GOSSIP_PUSH_PULL_REPLY:
		msg->type = MEMBERS_PUSH_PULL_REPLY;
		break;
	default:
		return -EBADMSG;
	}
	strcpy(msg->from, w->from);
	if ((err = reply_address(w, src, msg)) < 0)
		return err;
	if (!(s = reserve(*scratch, cap, n ? n : 1, sizeof(*s))))
		return -ENOMEM;
	*scratch = s;
	for (i = 0; i < n; i++)
		from_wire_member(&u[i], &s[i]);
	msg->updates = n ? s : NULL;
	msg->n_updates = n;
	return 0;
}
