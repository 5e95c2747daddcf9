/* metrics.c — a Prometheus registry. Families form a list in creation order and each family
 * keeps its series in creation order, so rendering groups a family's series even when callers
 * create them interleaved with other families. One open-addressing index over (name, labels)
 * makes find-or-create a hash plus, almost always, one pair of string compares; a second index
 * over names finds the family of a new series. Nothing is ever removed, so the indexes need no
 * tombstones. */
#include "util/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metrics_type {
	METRICS_COUNTER,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
};

struct family {
	struct family *next;    /* creation order */
	struct series *head;    /* this family's series, creation order */
	struct series *tail;
	enum metrics_type type;
	const char *help;       /* points into name[] after the name's NUL */
	char name[];
};

struct series {
	struct family *fam;     /* borrowed from the registry */
	struct series *next;    /* next series of the same family */
	uint64_t hash;          /* of (name, labels), kept to skip most string compares */
	const char *labels;     /* points into the series' own allocation */
};

struct metrics_counter {
	struct series s;
	uint64_t value;
};

struct metrics_gauge {
	struct series s;
	double value;
};

struct metrics_histogram {
	struct series s;
	double sum;
	uint64_t count;
	size_t nbounds;
	double *bounds;         /* nbounds ascending finite bounds, same allocation */
	uint64_t *buckets;      /* nbounds + 1 per-bucket (not cumulative) counts; last is +Inf */
};

struct slot {
	uint64_t hash;
	void *p;                /* NULL when the slot is empty */
};

struct index {
	struct slot *slots;
	size_t cap;             /* a power of two, or 0 before the first insert */
	size_t len;
};

struct metrics {
	struct family *fam_head;
	struct family *fam_tail;
	struct index families;  /* struct family *, keyed by name */
	struct index series;    /* struct series *, keyed by (name, labels) */
};

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv1a(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * FNV_PRIME;
	return h;
}

static uint64_t name_hash(const char *name)
{
	return fnv1a(FNV_OFFSET, name);
}

static uint64_t series_hash(const char *name, const char *labels)
{
	/* The separator keeps ("ab", "c") and ("a", "bc") apart; 0xff never occurs in UTF-8. */
	uint64_t h = fnv1a(FNV_OFFSET, name);

	h = (h ^ 0xff) * FNV_PRIME;
	return fnv1a(h, labels);
}

/* Makes room for one more entry at a load factor of at most 1/2. 0 or -ENOMEM; on failure the
 * index is unchanged. */
static int index_reserve(struct index *ix)
{
	struct slot *slots;
	size_t cap, i, j;

	if ((ix->len + 1) * 2 <= ix->cap)
		return 0;
	cap = ix->cap ? ix->cap * 2 : 16;
	slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (i = 0; i < ix->cap; i++) {
		if (!ix->slots[i].p)
			continue;
		for (j = ix->slots[i].hash & (cap - 1); slots[j].p; j = (j + 1) & (cap - 1))
			;
		slots[j] = ix->slots[i];
	}
	free(ix->slots);
	ix->slots = slots;
	ix->cap = cap;
	return 0;
}

/* Inserts after a successful index_reserve(), so it cannot fail. */
static void index_insert(struct index *ix, uint64_t hash, void *p)
{
	size_t j;

	for (j = hash & (ix->cap - 1); ix->slots[j].p; j = (j + 1) & (ix->cap - 1))
		;
	ix->slots[j].hash = hash;
	ix->slots[j].p = p;
	ix->len++;
}

static struct family *family_find(const struct metrics *m, const char *name, uint64_t hash)
{
	const struct index *ix = &m->families;
	size_t j;

	if (!ix->cap)
		return NULL;
	for (j = hash & (ix->cap - 1); ix->slots[j].p; j = (j + 1) & (ix->cap - 1)) {
		struct family *f = ix->slots[j].p;

		if (ix->slots[j].hash == hash && strcmp(f->name, name) == 0)
			return f;
	}
	return NULL;
}

static struct series *series_find(const struct metrics *m, const char *name, const char *labels,
				  uint64_t hash)
{
	const struct index *ix = &m->series;
	size_t j;

	if (!ix->cap)
		return NULL;
	for (j = hash & (ix->cap - 1); ix->slots[j].p; j = (j + 1) & (ix->cap - 1)) {
		struct series *s = ix->slots[j].p;

		if (ix->slots[j].hash == hash && strcmp(s->fam->name, name) == 0 &&
		    strcmp(s->labels, labels) == 0)
			return s;
	}
	return NULL;
}

int metrics_new(struct metrics **out)
{
	struct metrics *m;

	if (!out)
		return -EINVAL;
	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	*out = m;
	return 0;
}

void metrics_free(struct metrics *m)
{
	struct family *f, *fnext;
	struct series *s, *snext;

	if (!m)
		return;
	for (f = m->fam_head; f; f = fnext) {
		fnext = f->next;
		for (s = f->head; s; s = snext) {
			snext = s->next;
			free(s);
		}
		free(f);
	}
	free(m->families.slots);
	free(m->series.slots);
	free(m);
}

static struct family *family_alloc(const char *name, const char *help, enum metrics_type type)
{
	size_t nlen = strlen(name), hlen = strlen(help);
	struct family *f = malloc(sizeof(*f) + nlen + 1 + hlen + 1);

	if (!f)
		return NULL;
	f->next = NULL;
	f->head = f->tail = NULL;
	f->type = type;
	memcpy(f->name, name, nlen + 1);
	memcpy(f->name + nlen + 1, help, hlen + 1);
	f->help = f->name + nlen + 1;
	return f;
}

/* Allocates a zeroed series of `type` with room for its labels (and, for histograms, its
 * bounds and buckets) in the same block. */
static struct series *series_alloc(enum metrics_type type, const char *labels,
				   const double *bounds, size_t nbounds)
{
	size_t llen = strlen(labels) + 1, head, extra = 0;
	struct metrics_histogram *h;
	struct series *s;
	char *p;

	switch (type) {
	case METRICS_COUNTER:
		head = sizeof(struct metrics_counter);
		break;
	case METRICS_GAUGE:
		head = sizeof(struct metrics_gauge);
		break;
	default:
		head = sizeof(struct metrics_histogram);
		extra = nbounds * sizeof(double) + (nbounds + 1) * sizeof(uint64_t);
		break;
	}
	p = calloc(1, head + extra + llen);
	if (!p)
		return NULL;
	s = (struct series *)p;
	s->labels = memcpy(p + head + extra, labels, llen);
	if (type == METRICS_HISTOGRAM) {
		/* Every struct size is a multiple of 8, so both arrays stay aligned. */
		h = (struct metrics_histogram *)p;
		h->nbounds = nbounds;
		h->bounds = (double *)(p + head);
		h->buckets = (uint64_t *)(p + head + nbounds * sizeof(double));
		if (nbounds)
			memcpy(h->bounds, bounds, nbounds * sizeof(double));
	}
	return s;
}

/* The number of bounds to keep: a trailing +Inf is implied, so it is dropped. SIZE_MAX when
 * the bounds are not strictly ascending finite numbers. */
static size_t bounds_check(const double *bounds, size_t nbounds)
{
	size_t i;

	if (nbounds && !bounds)
		return SIZE_MAX;
	if (nbounds && isinf(bounds[nbounds - 1]) && bounds[nbounds - 1] > 0)
		nbounds--;
	for (i = 0; i < nbounds; i++) {
		if (!isfinite(bounds[i]) || (i && !(bounds[i] > bounds[i - 1])))
			return SIZE_MAX;
	}
	if (nbounds > (SIZE_MAX / 2) / sizeof(double))
		return SIZE_MAX;
	return nbounds;
}

static bool bounds_equal(const struct metrics_histogram *h, const double *bounds,
			 size_t nbounds)
{
	return h->nbounds == nbounds &&
	       (nbounds == 0 || memcmp(h->bounds, bounds, nbounds * sizeof(double)) == 0);
}

/* Finds or creates a series. A name already used by another type, or an existing histogram
 * series asked for with different bounds, is a caller bug reported as NULL, because handing back
 * a series of the wrong layout would corrupt it. */
static struct series *find_or_create(struct metrics *m, enum metrics_type type, const char *name,
				     const char *help, const char *labels, const double *bounds,
				     size_t nbounds)
{
	uint64_t shash, fhash;
	struct family *f;
	struct series *s;
	bool new_family = false;

	if (!m || !name || !*name)
		return NULL;
	if (!labels)
		labels = "";
	if (!help)
		help = "";
	shash = series_hash(name, labels);
	s = series_find(m, name, labels, shash);
	if (s) {
		if (s->fam->type != type)
			return NULL;
		if (type == METRICS_HISTOGRAM &&
		    !bounds_equal((struct metrics_histogram *)s, bounds, nbounds))
			return NULL;
		return s;
	}

	fhash = name_hash(name);
	f = family_find(m, name, fhash);
	if (f && f->type != type)
		return NULL;
	/* Grow both indexes first so that a failure leaves the registry as it was. */
	if (index_reserve(&m->series) < 0)
		return NULL;
	if (!f) {
		if (index_reserve(&m->families) < 0)
			return NULL;
		if (!(f = family_alloc(name, help, type)))
			return NULL;
		new_family = true;
	}
	s = series_alloc(type, labels, bounds, nbounds);
	if (!s) {
		if (new_family)
			free(f);
		return NULL;
	}
	s->fam = f;
	s->hash = shash;
	if (new_family) {
		index_insert(&m->families, fhash, f);
		if (m->fam_tail)
			m->fam_tail->next = f;
		else
			m->fam_head = f;
		m->fam_tail = f;
	}
	index_insert(&m->series, shash, s);
	if (f->tail)
		f->tail->next = s;
	else
		f->head = s;
	f->tail = s;
	return s;
}

struct metrics_counter *metrics_counter(struct metrics *m, const char *name, const char *help,
					const char *labels)
{
	return (struct metrics_counter *)find_or_create(m, METRICS_COUNTER, name, help, labels,
							 NULL, 0);
}

struct metrics_gauge *metrics_gauge(struct metrics *m, const char *name, const char *help,
				    const char *labels)
{
	return (struct metrics_gauge *)find_or_create(m, METRICS_GAUGE, name, help, labels, NULL,
						       0);
}

struct metrics_histogram *metrics_histogram(struct metrics *m, const char *name, const char *help,
					    const char *labels, const double *bounds,
					    size_t nbounds)
{
	size_t n = bounds_check(bounds, nbounds);

	if (n == SIZE_MAX)
		return NULL;
	return (struct metrics_histogram *)find_or_create(m, METRICS_HISTOGRAM, name, help, labels,
							   bounds, n);
}

void metrics_counter_add(struct metrics_counter *c, uint64_t v)
{
	if (c)
		c->value += v;
}

uint64_t metrics_counter_value(const struct metrics_counter *c)
{
	return c ? c->value : 0;
}

void metrics_gauge_set(struct metrics_gauge *g, double v)
{
	if (g)
		g->value = v;
}

void metrics_gauge_add(struct metrics_gauge *g, double v)
{
	if (g)
		g->value += v;
}

void metrics_histogram_observe(struct metrics_histogram *h, double v)
{
	size_t lo = 0, hi;

	if (!h)
		return;
	/* The first bound >= v ("le" semantics). NaN compares false with every bound and so
	 * lands in +Inf, and poisons the sum, as in the Go client: a visible NaN beats a silently
	 * dropped observation. */
	hi = h->nbounds;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (h->bounds[mid] >= v)
			hi = mid;
		else
			lo = mid + 1;
	}
	h->buckets[lo]++;
	h->count++;
	h->sum += v;
}

/* The shortest text that reads back as the same double, in C-locale notation: integers below
 * 1e15 in plain digits ("1000000", not "1e+06"), the rest in the fewest %g digits that round-trip,
 * and Prometheus' spellings of the non-finite values. */
static size_t format_double(double v, char *out, size_t outlen)
{
	int n = 0, prec;

	if (isnan(v))
		n = snprintf(out, outlen, "%s", "NaN");
	else if (isinf(v))
		n = snprintf(out, outlen, "%s", v > 0 ? "+Inf" : "-Inf");
	else if (v == 0)
		n = snprintf(out, outlen, "%s", "0"); /* also -0 */
	else if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
		n = snprintf(out, outlen, "%lld", (long long)v);
	else {
		for (prec = 1; prec <= 17; prec++) {
			n = snprintf(out, outlen, "%.*g", prec, v);
			if (n > 0 && (size_t)n < outlen && strtod(out, NULL) == v)
				break;
		}
	}
	if (n < 0)
		return 0;
	return (size_t)n < outlen ? (size_t)n : outlen - 1;
}

static int put_double(struct buf *out, double v)
{
	char tmp[40];

	return buf_append(out, tmp, format_double(v, tmp, sizeof(tmp)));
}

/* HELP text escapes only backslash and newline (exposition format 0.0.4). */
static int put_help(struct buf *out, const struct family *f)
{
	const char *p;
	int err;

	if (!*f->help)
		return 0;
	if ((err = buf_printf(out, "# HELP %s ", f->name)) < 0)
		return err;
	for (p = f->help; *p && err == 0; p++) {
		if (*p == '\\')
			err = buf_append(out, "\\\\", 2);
		else if (*p == '\n')
			err = buf_append(out, "\\n", 2);
		else
			err = buf_append(out, p, 1);
	}
	return err ? err : buf_append(out, "\n", 1);
}

/* Appends `name<suffix>{labels[,le="bound"]}` with the braces left out when empty. */
static int put_series_name(struct buf *out, const struct series *s, const char *suffix,
			   const char *le)
{
	bool has_labels = *s->labels != '\0';

	if (!has_labels && !le)
		return buf_printf(out, "%s%s ", s->fam->name, suffix);
	return buf_printf(out, "%s%s{%s%s%s%s%s} ", s->fam->name, suffix, s->labels,
			  has_labels && le ? "," : "", le ? "le=\"" : "", le ? le : "",
			  le ? "\"" : "");
}

static int put_histogram(struct buf *out, const struct metrics_histogram *h)
{
	uint64_t cum = 0;
	char le[40];
	size_t i;
	int err;

	for (i = 0; i <= h->nbounds; i++) {
		cum += h->buckets[i];
		if (i < h->nbounds)
			format_double(h->bounds[i], le, sizeof(le));
		else
			memcpy(le, "+Inf", 5);
		if ((err = put_series_name(out, &h->s, "_bucket", le)) < 0 ||
		    (err = buf_put_u64(out, cum)) < 0 || (err = buf_append(out, "\n", 1)) < 0)
			return err;
	}
	if ((err = put_series_name(out, &h->s, "_sum", NULL)) < 0 ||
	    (err = put_double(out, h->sum)) < 0 || (err = buf_append(out, "\n", 1)) < 0 ||
	    (err = put_series_name(out, &h->s, "_count", NULL)) < 0 ||
	    (err = buf_put_u64(out, h->count)) < 0)
		return err;
	return buf_append(out, "\n", 1);
}

static int put_series(struct buf *out, const struct series *s)
{
	int err;

	if (s->fam->type == METRICS_HISTOGRAM)
		return put_histogram(out, (const struct metrics_histogram *)s);
	if ((err = put_series_name(out, s, "", NULL)) < 0)
		return err;
	if (s->fam->type == METRICS_COUNTER)
		err = buf_put_u64(out, ((const struct metrics_counter *)s)->value);
	else
		err = put_double(out, ((const struct metrics_gauge *)s)->value);
	return err ? err : buf_append(out, "\n", 1);
}

static int put_family(struct buf *out, const struct family *f)
{
	static const char *const type_names[] = {
		[METRICS_COUNTER] = "counter",
		[METRICS_GAUGE] = "gauge",
		[METRICS_HISTOGRAM] = "histogram",
	};
	const struct series *s;
	int err;

	if ((err = put_help(out, f)) < 0 ||
	    (err = buf_printf(out, "# TYPE %s %s\n", f->name, type_names[f->type])) < 0)
		return err;
	for (s = f->head; s; s = s->next) {
		if ((err = put_series(out, s)) < 0)
			return err;
	}
	return 0;
}

int metrics_render(const struct metrics *m, struct buf *out)
{
	const struct family *f;
	size_t start;
	int err;

	if (!out)
		return -EINVAL;
	if (!m)
		return 0;
	start = out->len;
	for (f = m->fam_head; f; f = f->next) {
		if ((err = put_family(out, f)) < 0) {
			/* Leave no half-rendered exposition behind. */
			out->len = start;
			if (out->cap)
				out->data[start] = '\0';
			return err;
		}
	}
	return 0;
}
