/* fuzz_codec.c — libFuzzer target for everything in src/wire that reads network bytes.
 *
 * The first input byte picks the entry point; the rest is the hostile input:
 *   0 wire_decode (peer messages)          1 wire_gossip_decode (gossip body)
 *   2 wire_frame_read, chunked by the input 3 handshake responder: HELLO_I
 *   4 handshake initiator: HELLO_R          5 wire_gossip_open
 *   6 wire_open on an established session
 * Besides "no crash, no leak, no read out of bounds", it checks one property: whatever a
 * decoder accepts, the encoder accepts and reproduces.
 *
 * libFuzzer (clang), from the repository root:
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc tests/fuzz/fuzz_codec.c \
 *         $(ls src/wire/[a-z]*.c) src/util/buf.c -lmsgpackc -lsodium -o fuzz_codec
 * Without clang, -DFUZZ_STANDALONE builds a small mutation driver over built-in seeds:
 *     gcc -DFUZZ_STANDALONE -fsanitize=address,undefined ... && ./a.out ITERATIONS [SEED] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/codec.h"
#include "wire/frame.h"
#include "wire/gossip_msg.h"
#include "wire/keyring.h"
#include "wire/seal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct wire_keyring *ring;
static struct wire_replay *replay;
static struct wire_session sess_r;   /* the responder's end of a real session */
static unsigned long accepted[7];    /* inputs each entry point accepted, for the report */

static void establish(void)
{
	struct wire_hs hi, hr;
	struct wire_session si;
	struct buf a, b;

	buf_init(&a);
	buf_init(&b);
	if (wire_hs_init(&hi, ring, "fuzz-i", true, &a) < 0 ||
	    wire_hs_init(&hr, ring, "fuzz-r", false, &b) < 0 ||
	    wire_hs_step(&hr, (uint8_t *)a.data + 4, a.len - 4, &b, &sess_r) != 0)
		abort();
	buf_reset(&a);
	if (wire_hs_step(&hi, (uint8_t *)b.data + 4, b.len - 4, &a, &si) != 1 ||
	    wire_hs_step(&hr, (uint8_t *)a.data + 4, a.len - 4, &b, &sess_r) != 1)
		abort();
	wire_hs_close(&hi);
	wire_hs_close(&hr);
	wire_session_close(&si);
	buf_close(&a);
	buf_close(&b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint8_t key[WIRE_KEY_BYTES] = { 1 };

	(void)argc;
	(void)argv;
	if (wire_init() < 0 || wire_keyring_new(&ring) < 0 ||
	    wire_keyring_add(ring, key, NULL) < 0 || wire_replay_new(&replay, 16) < 0)
		abort();
	establish();
	return 0;
}

static void fuzz_decode(const uint8_t *p, size_t n)
{
	struct wire_msg m, m2;
	struct buf b;

	if (wire_decode(p, n, &m) < 0)
		return;
	accepted[0]++;
	buf_init(&b);
	if (wire_encode(&m, &b) < 0 || wire_decode((uint8_t *)b.data, b.len, &m2) < 0)
		abort();
	wire_msg_close(&m2);
	wire_msg_close(&m);
	buf_close(&b);
}

static void fuzz_gossip(const uint8_t *p, size_t n)
{
	struct wire_gossip g, g2;
	struct buf b;

	if (wire_gossip_decode(p, n, &g) < 0)
		return;
	accepted[1]++;
	buf_init(&b);
	if (wire_gossip_encode(&g, &b) < 0 ||
	    wire_gossip_decode((uint8_t *)b.data, b.len, &g2) < 0 || g2.nupdates != g.nupdates ||
	    (g.nupdates && memcmp(g.updates, g2.updates, g.nupdates * sizeof(*g.updates)) != 0))
		abort();
	wire_gossip_close(&g2);
	wire_gossip_close(&g);
	buf_close(&b);
}

/* Chunk sizes come from the input itself, so partial headers get exercised. */
static void fuzz_frames(const uint8_t *p, size_t n)
{
	struct wire_frame_reader r;
	size_t used, flen, chunk;
	const uint8_t *f;

	wire_frame_reader_init(&r, 4096);
	while (n > 0) {
		chunk = 1 + p[0] % 16;
		if (chunk > n)
			chunk = n;
		int rc = wire_frame_read(&r, p, chunk, &used, &f, &flen);

		if (rc < 0)
			break;
		accepted[2] += rc == 1;
		if (used == 0)
			abort();
		p += used;
		n -= used;
	}
	wire_frame_reader_close(&r);
}

static void fuzz_handshake(const uint8_t *p, size_t n, bool initiator)
{
	struct wire_session s;
	struct wire_hs hs;
	struct buf out;

	buf_init(&out);
	/* Only a responder can get past a forged first frame (it answers a hello it cannot yet
	 * tell from a replay); nothing may ever complete. */
	if (wire_hs_init(&hs, ring, "fuzz", initiator, &out) == 0) {
		int rc = wire_hs_step(&hs, p, n, &out, &s);

		if (rc == 1)
			abort();
		accepted[initiator ? 4 : 3] += rc == 0;
	}
	wire_hs_close(&hs);
	buf_close(&out);
}

static void fuzz_gossip_open(const uint8_t *p, size_t n)
{
	struct wire_gossip g;

	if (wire_gossip_open(replay, ring, p, n, &g) == 0) {
		accepted[5]++;
		wire_gossip_close(&g);
	}
}

static void fuzz_open(const uint8_t *p, size_t n)
{
	struct wire_session s = sess_r;
	struct buf plain;

	buf_init(&plain);
	if (wire_open(&s, p, n, &plain) == 0)
		abort();   /* a forgery opened */
	buf_close(&plain);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	if (size < 1)
		return 0;
	/* An exact-size copy, so ASan sees any read past the end. */
	copy = malloc(size - 1 ? size - 1 : 1);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	switch (data[0] % 7) {
	case 0: fuzz_decode(copy, size - 1); break;
	case 1: fuzz_gossip(copy, size - 1); break;
	case 2: fuzz_frames(copy, size - 1); break;
	case 3: fuzz_handshake(copy, size - 1, false); break;
	case 4: fuzz_handshake(copy, size - 1, true); break;
	case 5: fuzz_gossip_open(copy, size - 1); break;
	default: fuzz_open(copy, size - 1); break;
	}
	free(copy);
	return 0;
}

#ifdef FUZZ_STANDALONE
/* A small deterministic mutation driver for machines without libFuzzer: seeds are valid
 * inputs for each entry point; each round mutates one. Bounded by the iteration count. */
static uint64_t st = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
	st ^= st << 13;
	st ^= st >> 7;
	st ^= st << 17;
	return st;
}

#define NSEEDS 9
static uint8_t seeds[NSEEDS][1024];
static size_t seedlen[NSEEDS];

static void add_seed(int i, uint8_t sel, const void *p, size_t n)
{
	seeds[i][0] = sel;
	memcpy(seeds[i] + 1, p, n);
	seedlen[i] = n + 1;
}

static void make_seeds(void)
{
	static const uint8_t check[] = { 0x93, 0x01, 0x01, 0x92, 0x95, 0x01, 0xc4, 0x02, 0x6b,
		0x31, 0x93, 0x3c, 0xcd, 0x07, 0xd0, 0xcd, 0x03, 0xe8, 0x93, 0x01, 0xcc, 0x96, 0xcc,
		0xc8, 0x00, 0x95, 0x02, 0xc4, 0x01, 0x61, 0x93, 0x01, 0x02, 0x03, 0x93, 0x00, 0x00,
		0x00, 0x01 };
	static const uint8_t repl[] = { 0x93, 0x01, 0x04, 0x93, 0xce, 0x00, 0x0f, 0x44, 0x34,
		0x00, 0x91, 0x94, 0xc4, 0x02, 0x6b, 0x31, 0x01, 0xcd, 0x03, 0xe8, 0x92, 0x94, 0xcd,
		0x03, 0xe8, 0x01, 0x64, 0x32, 0x94, 0xcd, 0x03, 0xde, 0x02, 0x00, 0x07 };
	static const uint8_t gossip[] = { 0x94, 0x01, 0x2a, 0xa6, 'n', 'o', 'd', 'e', '-', 'b',
		0x91, 0x97, 0xa6, 'n', 'o', 'd', 'e', '-', 'a', 0xa8, '1', '0', '.', '0', '.', '0',
		'.', '1', 0xcd, 0x1f, 0x0a, 0xcd, 0x1f, 0x0b, 0xcd, 0x1f, 0x40, 0x03, 0x00 };
	struct wire_member mem = { .id = "node-a", .host = "h", .state = 1 };
	struct wire_gossip g = { .type = WIRE_GOSSIP_ACK, .seq = 1, .updates = &mem,
				 .nupdates = 1 };
	struct wire_gossip_sender snd;
	struct wire_hs hs;
	struct buf b;
	uint8_t pkt[1400];
	size_t n;

	add_seed(0, 0, check, sizeof(check));
	add_seed(1, 0, repl, sizeof(repl));
	add_seed(2, 1, gossip, sizeof(gossip));
	add_seed(3, 2, "\0\0\0\3abc\0\0\0\1z", 12);
	buf_init(&b);
	if (wire_hs_init(&hs, ring, "seed-i", true, &b) < 0)
		abort();
	add_seed(4, 3, b.data + 4, b.len - 4);
	wire_hs_close(&hs);
	add_seed(5, 4, b.data + 4, b.len - 4);
	buf_close(&b);
	if (wire_gossip_sender_init(&snd, "seed-g", 1) < 0 ||
	    wire_gossip_seal(&snd, ring, &g, pkt, sizeof(pkt), &n, NULL) < 0)
		abort();
	add_seed(6, 5, pkt, n);
	add_seed(7, 6, pkt + 30, 40);
	add_seed(8, 0, "\x93\x01\x06\x07", 4);
}

int main(int argc, char **argv)
{
	long iters = argc > 1 ? atol(argv[1]) : 100000;
	static uint8_t cur[1100];

	if (argc > 2)
		st = strtoull(argv[2], NULL, 0) | 1;
	LLVMFuzzerInitialize(&argc, &argv);
	make_seeds();
	for (long it = 0; it < iters; it++) {
		int s = (int)(rnd() % NSEEDS);
		size_t len = seedlen[s];

		memcpy(cur, seeds[s], len);
		for (int k = 1 + (int)(rnd() % 6); k > 0; k--) {
			size_t pos = 1 + rnd() % (len > 1 ? len - 1 : 1);

			switch (rnd() % 6) {
			case 0: cur[pos % len] = (uint8_t)rnd(); break;
			case 1: cur[pos % len] ^= (uint8_t)(1u << (rnd() % 8)); break;
			case 2: if (len > 1) len = 1 + rnd() % len; break;
			case 3: if (len < sizeof(cur)) cur[len++] = (uint8_t)rnd(); break;
			case 4: cur[pos % len] = (uint8_t[]){ 0x00, 0x7f, 0x80, 0xc1, 0xdc, 0xdd,
							  0xff, 0xcf }[rnd() % 8]; break;
			default:
				if (pos < len)
					memmove(cur + pos, cur + pos + 1, len - pos - 1), len--;
			}
		}
		LLVMFuzzerTestOneInput(cur, len);
	}
	wire_keyring_free(ring);
	wire_replay_free(replay);
	wire_session_close(&sess_r);
	printf("fuzz_codec: %ld inputs, no failure; accepted: decode %lu, gossip body %lu, "
	       "frames %lu, hello_i %lu, hello_r %lu, gossip packet %lu, sealed %lu\n", iters,
	       accepted[0], accepted[1], accepted[2], accepted[3], accepted[4], accepted[5],
	       accepted[6]);
	return 0;
}
#endif
