/* `llmlimitd healthcheck [URL]`: the container health probe. A scratch image has no shell or
 * curl, so the daemon's own binary asks a node over HTTP and exits 0 on a 2xx answer. Runs
 * outside the event loop, as a short-lived process of its own, so blocking I/O is fine here. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "node/node.h"
#include "util/num.h"

#define HEALTHCHECK_TIMEOUT_MS 2000

static long remaining_ms(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

static int wait_fd(int fd, short events, const struct timespec *deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	long ms = remaining_ms(deadline);

	if (ms <= 0)
		return -ETIMEDOUT;
	if (poll(&p, 1, (int)ms) <= 0)
		return -ETIMEDOUT;
	return 0;
}

/* Splits http://HOST:PORT/PATH. */
static int parse_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen,
		     const char **path)
{
	const char *hp = url, *slash;
	char hostport[300];
	uint16_t p;
	size_t n;

	if (strncmp(url, "http://", 7) == 0)
		hp = url + 7;
	slash = strchr(hp, '/');
	n = slash ? (size_t)(slash - hp) : strlen(hp);
	if (n == 0 || n >= sizeof(hostport))
		return -EINVAL;
	memcpy(hostport, hp, n);
	hostport[n] = '\0';
	if (num_parse_hostport(hostport, host, hostlen, &p) < 0)
		return -EINVAL;
	snprintf(port, portlen, "%u", p);
	*path = slash ? slash : "/";
	return 0;
}

int node_healthcheck(const char *url)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	char host[256], port[8], req[512], resp[64];
	struct timespec deadline;
	const char *path;
	size_t got = 0;
	int fd = -1, status = 0, n;

	if (parse_url(url, host, sizeof(host), port, sizeof(port), &path) < 0) {
		fprintf(stderr, "llmlimitd healthcheck: expected http://HOST:PORT/PATH, got %s\n", url);
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += HEALTHCHECK_TIMEOUT_MS / 1000;
	if (getaddrinfo(host, port, &hints, &res) != 0) {
		fprintf(stderr, "llmlimitd healthcheck: cannot resolve %s\n", host);
		return 1;
	}
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		/* A non-blocking connect reports its outcome through SO_ERROR once writable. */
		if ((connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
		     (errno != EINPROGRESS || wait_fd(fd, POLLOUT, &deadline) < 0)) ||
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0) {
		fprintf(stderr, "llmlimitd healthcheck: cannot connect to %s:%s\n", host, port);
		return 1;
	}
	n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
	if (n < 0 || (size_t)n >= sizeof(req) || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		fprintf(stderr, "llmlimitd healthcheck: cannot send to %s:%s\n", host, port);
		close(fd);
		return 1;
	}
	/* The status line is all we need: "HTTP/1.x NNN". */
	while (got < 12 && wait_fd(fd, POLLIN, &deadline) == 0) {
		ssize_t r = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	resp[got] = '\0';
	if (got >= 12 && strncmp(resp, "HTTP/1.", 7) == 0)
		status = atoi(resp + 9);
	if (status >= 200 && status < 300)
		return 0;
	fprintf(stderr, "llmlimitd healthcheck: %s answered %d\n", url, status);
	return 1;
}
