/* wire.c — library set-up, error texts and node id validation. */
#include "wire/wire.h"

#include <errno.h>

#include <sodium.h>

#include "wire/internal.h"

int wire_init(void)
{
	/* sodium_init() returns 1 when already initialised, which is fine. */
	return sodium_init() < 0 ? -EIO : 0;
}

const char *wire_strerror(int err)
{
	switch (err) {
	case 0:
		return "ok";
	case -EPROTO:
		return "malformed message";
	case -EPROTONOSUPPORT:
		return "unsupported protocol version";
	case -ENOMSG:
		return "unknown message type";
	case -EMSGSIZE:
		return "frame, packet or field too large";
	case -ENOKEY:
		return "key id not in keyring (peer has no or another cluster key)";
	case -EACCES:
		return "handshake authentication failed (wrong key or tampered)";
	case -EBADMSG:
		return "sealed data failed to verify (tampered, replayed, reordered or wrong key)";
	case -EALREADY:
		return "replayed packet";
	case -ESTALE:
		return "packet from an earlier boot of its sender";
	case -EINVAL:
		return "invalid argument";
	case -ENOMEM:
		return "out of memory";
	case -EIO:
		return "crypto library failed to initialise";
	default:
		return "unknown error";
	}
}

bool wire__id_ok(const char *s, size_t len, bool allow_empty)
{
	if (len == 0)
		return allow_empty;
	if (len > WIRE_NODE_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

int wire_node_id_valid(const char *s, size_t len)
{
	return s && wire__id_ok(s, len, false);
}
