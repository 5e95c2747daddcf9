/* keyring.c — cluster keys by id, with a primary, holding only per-purpose derived keys. */
#include "wire/keyring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "wire/internal.h"

/* crypto_kdf context and subkey ids: one derived key per purpose, so a key used to MAC hellos
 * is never also used to seal gossip. Changing any of these changes every key id and breaks
 * compatibility: they are part of the protocol (docs/PROTOCOL.md). */
#define KDF_CTX "llmlimit"
enum { SUBKEY_ID = 1, SUBKEY_MAC = 2, SUBKEY_MIX = 3, SUBKEY_GOSSIP = 4 };

struct wire_keyring {
	struct wire__key keys[WIRE_KEYRING_MAX];
	size_t n;
	size_t primary;   /* index into keys; meaningful when n > 0 */
};

void wire_key_id(const uint8_t key[WIRE_KEY_BYTES], uint8_t id[WIRE_KEY_ID_BYTES])
{
	uint8_t sub[crypto_kdf_BYTES_MIN];

	crypto_kdf_derive_from_key(sub, sizeof(sub), SUBKEY_ID, KDF_CTX, key);
	memcpy(id, sub, WIRE_KEY_ID_BYTES);
	sodium_memzero(sub, sizeof(sub));
}

void wire_key_id_hex(const uint8_t id[WIRE_KEY_ID_BYTES], char out[2 * WIRE_KEY_ID_BYTES + 1])
{
	sodium_bin2hex(out, 2 * WIRE_KEY_ID_BYTES + 1, id, WIRE_KEY_ID_BYTES);
}

int wire_keyring_new(struct wire_keyring **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void wire_keyring_free(struct wire_keyring *r)
{
	if (!r)
		return;
	sodium_memzero(r, sizeof(*r));
	free(r);
}

static int find(const struct wire_keyring *r, const uint8_t id[WIRE_KEY_ID_BYTES])
{
	for (size_t i = 0; i < r->n; i++)
		if (memcmp(r->keys[i].id, id, WIRE_KEY_ID_BYTES) == 0)
			return (int)i;
	return -1;
}

int wire_keyring_add(struct wire_keyring *r, const uint8_t key[WIRE_KEY_BYTES],
		     uint8_t id[WIRE_KEY_ID_BYTES])
{
	struct wire__key *k;
	uint8_t kid[WIRE_KEY_ID_BYTES];

	wire_key_id(key, kid);
	if (id)
		memcpy(id, kid, sizeof(kid));
	if (find(r, kid) >= 0)
		return -EEXIST;
	if (r->n == WIRE_KEYRING_MAX)
		return -ENOSPC;
	k = &r->keys[r->n];
	memcpy(k->id, kid, sizeof(kid));
	crypto_kdf_derive_from_key(k->mac, sizeof(k->mac), SUBKEY_MAC, KDF_CTX, key);
	crypto_kdf_derive_from_key(k->mix, sizeof(k->mix), SUBKEY_MIX, KDF_CTX, key);
	crypto_kdf_derive_from_key(k->gossip, sizeof(k->gossip), SUBKEY_GOSSIP, KDF_CTX, key);
	if (r->n == 0)
		r->primary = 0;
	r->n++;
	return 0;
}

int wire_keyring_set_primary(struct wire_keyring *r, const uint8_t id[WIRE_KEY_ID_BYTES])
{
	int i = find(r, id);

	if (i < 0)
		return -ENOKEY;
	r->primary = (size_t)i;
	return 0;
}

int wire_keyring_remove(struct wire_keyring *r, const uint8_t id[WIRE_KEY_ID_BYTES])
{
	int i = find(r, id);

	if (i < 0)
		return -ENOKEY;
	if ((size_t)i == r->primary)
		return -EBUSY;
	memmove(&r->keys[i], &r->keys[i + 1], (r->n - (size_t)i - 1) * sizeof(r->keys[0]));
	r->n--;
	sodium_memzero(&r->keys[r->n], sizeof(r->keys[0]));
	if (r->primary > (size_t)i)
		r->primary--;
	return 0;
}

size_t wire_keyring_count(const struct wire_keyring *r)
{
	return r->n;
}

int wire_keyring_primary(const struct wire_keyring *r, uint8_t id[WIRE_KEY_ID_BYTES])
{
	if (r->n == 0)
		return -ENOKEY;
	memcpy(id, r->keys[r->primary].id, WIRE_KEY_ID_BYTES);
	return 0;
}

int wire_keyring_has(const struct wire_keyring *r, const uint8_t id[WIRE_KEY_ID_BYTES])
{
	return find(r, id) >= 0;
}

const struct wire__key *wire__keyring_find(const struct wire_keyring *r,
					   const uint8_t id[WIRE_KEY_ID_BYTES])
{
	int i = find(r, id);

	return i < 0 ? NULL : &r->keys[i];
}

const struct wire__key *wire__keyring_primary(const struct wire_keyring *r)
{
	return r->n ? &r->keys[r->primary] : NULL;
}
