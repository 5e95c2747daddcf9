/* `llmlimitd keygen FILE`: writes a new random cluster key, refusing to overwrite. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "node/node.h"

int node_keygen(const char *path)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char key[32];
	char line[2 * sizeof(key) + 1];
	size_t i;
	ssize_t w;
	int fd;

	if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
		fprintf(stderr, "llmlimitd keygen: no randomness: %s\n", strerror(errno));
		return 1;
	}
	for (i = 0; i < sizeof(key); i++) {
		line[2 * i] = hex[key[i] >> 4];
		line[2 * i + 1] = hex[key[i] & 15];
	}
	line[2 * sizeof(key)] = '\n';
	memset(key, 0, sizeof(key));
	/* O_EXCL: an existing key is never replaced by accident; rotation adds a line by hand. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "llmlimitd keygen: %s: %s\n", path, strerror(errno));
		return 1;
	}
	w = write(fd, line, sizeof(line));
	memset(line, 0, sizeof(line));
	if (w != (ssize_t)sizeof(line) || fsync(fd) < 0 || close(fd) < 0) {
		fprintf(stderr, "llmlimitd keygen: %s: write failed: %s\n", path, strerror(errno));
		unlink(path);
		return 1;
	}
	fprintf(stderr, "llmlimitd keygen: wrote a new cluster key to %s (mode 0600)\n", path);
	return 0;
}
