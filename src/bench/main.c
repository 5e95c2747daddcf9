/* main.c — llmlimit-bench: parse the options, run, print the report. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "bench/client.h"
#include "bench/options.h"
#include "bench/report.h"
#include "bench/stats.h"

/* Each connection is a descriptor; lift the soft limit toward the hard one when needed. */
static void raise_nofile(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		fprintf(stderr, "llmlimit-bench: warning: cannot raise the descriptor limit: %s\n",
			strerror(errno));
}

static int write_json(const struct bench_opts *o, const struct bench_stats *s)
{
	struct buf b;
	FILE *f;
	int rc = 0;

	buf_init(&b);
	if (bench_report_json(&b, o, s) < 0) {
		fprintf(stderr, "llmlimit-bench: out of memory writing the JSON report\n");
		buf_close(&b);
		return -ENOMEM;
	}
	f = strcmp(o->json_path, "-") ? fopen(o->json_path, "w") : stdout;
	if (!f || fwrite(b.data, 1, b.len, f) != b.len || (f != stdout ? fclose(f) : fflush(f))) {
		rc = -errno;
		fprintf(stderr, "llmlimit-bench: cannot write %s: %s\n", o->json_path,
			strerror(errno));
	}
	buf_close(&b);
	return rc;
}

int main(int argc, char **argv)
{
	struct bench_stats *s = NULL;
	struct bench_opts o;
	char err[512];
	int rc = 0;

	/* A write to a connection the server reset must be an error, not the end of us. */
	signal(SIGPIPE, SIG_IGN);
	if (bench_opts_parse(&o, argc, argv, err, sizeof(err)) < 0) {
		fprintf(stderr, "llmlimit-bench: %s\n", err);
		return 2;
	}
	if (o.help) {
		bench_opts_usage(stdout);
		bench_opts_close(&o);
		return 0;
	}
	raise_nofile((rlim_t)o.concurrent + 64);
	if (bench_stats_new(&s, o.nnodes, bench_opts_nkeys(&o)) < 0) {
		fprintf(stderr, "llmlimit-bench: out of memory\n");
		rc = 1;
		goto out;
	}
	if (!o.quiet)
		fprintf(stderr, "llmlimit-bench: %u connections to %zu node%s, %s\n", o.concurrent,
			o.nnodes, o.nnodes == 1 ? "" : "s",
			o.rate > 0 ? "open loop" : "closed loop");
	if (bench_run(&o, s, err, sizeof(err)) < 0) {
		fprintf(stderr, "llmlimit-bench: %s\n", err);
		rc = 1;
		goto out;
	}
	if (!o.quiet)
		bench_report_text(stdout, &o, s);
	if (o.json_path && write_json(&o, s) < 0)
		rc = 1;
	if (!s->issued) {
		fprintf(stderr, "llmlimit-bench: no request could be sent\n");
		rc = 1;
	}
out:
	bench_stats_free(s);
	bench_opts_close(&o);
	return rc;
}
