#include "peer/admit.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

struct admit {
	uv_loop_t *loop;             /* borrowed */
	struct window_table *table;  /* borrowed */
};

int admit_new(struct admit **out, uv_loop_t *loop, struct window_table *table,
	      const struct admit_cluster *cluster)
{
	struct admit *a = calloc(1, sizeof(*a));

	if (!a)
		return -ENOMEM;
	a->loop = loop;
	a->table = table;
	(void)cluster;
	*out = a;
	return 0;
}

void admit_free(struct admit *a)
{
	free(a);
}

void admit_check(struct admit *a, const struct admit_request *req, admit_cb cb, void *ctx)
{
	struct window_verdict v;
	int err;

	err = window_table_admit(a->table, req->key, req->key_len, req->limit, req->amount,
				 uv_now(a->loop), &v);
	cb(ctx, err, err ? NULL : &v);
}

void admit_adjust(struct admit *a, const char *key, size_t key_len, uint32_t bucket,
		  const int64_t delta[WINDOW_DIMS])
{
	/* -ENOENT means the window already forgot the charge: nothing left to reconcile. */
	(void)window_table_adjust(a->table, key, key_len, bucket, delta, uv_now(a->loop));
}
