/* check_table_epoch.c — the key table's import epochs (window_table_new_epoch,
 * window_table_imported_in_epoch): what marks a key, what clears the mark, and the 8-bit wrap,
 * which skips 0 (the epoch of a key never imported). */
#include <check.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "window/table.h"

#define U WINDOW_UNLIMITED

static const uint8_t seed[16] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
static const uint64_t rpm10[WINDOW_DIMS] = { 10, U, U };
static const uint64_t one[WINDOW_DIMS] = { 1, 0, 0 };

static struct window_table *tab;
static struct window_state st;  /* one request, in the exporter's current bucket */

static void setup(void)
{
	ck_assert_int_eq(window_table_new(&tab, 0, seed), 0);
	memset(&st, 0, sizeof(st));
	st.head = 7;
	st.count[7 % WINDOW_SLOTS][WINDOW_REQUESTS] = 1;
}

static void teardown(void)
{
	window_table_free(tab);
	tab = NULL;
}

static void admit(const char *key)
{
	struct window_verdict v;

	ck_assert_int_eq(window_table_admit(tab, key, strlen(key), rpm10, one, 1000, &v), 0);
	ck_assert(v.allowed);
}

static void import(const char *key, const struct window_state *s)
{
	ck_assert_int_eq(window_table_import(tab, key, strlen(key), s, 1000, WINDOW_IMPORT_MAX),
			 0);
}

static bool imported(const char *key)
{
	return window_table_imported_in_epoch(tab, key, strlen(key));
}

START_TEST(test_no_epoch_no_import)
{
	uint8_t big[WINDOW_KEY_MAX + 1];

	/* Epoch 0: an import before the first new_epoch marks nothing. */
	import("early", &st);
	admit("plain");
	ck_assert(!imported("early"));
	ck_assert(!imported("plain"));
	ck_assert(!imported("unknown"));
	/* Nor does the next epoch see what was imported before it began. */
	window_table_new_epoch(tab);
	ck_assert(!imported("early"));
	memset(big, 'k', sizeof(big));
	ck_assert(!window_table_imported_in_epoch(tab, big, sizeof(big)));
	ck_assert(!window_table_imported_in_epoch(tab, "", 0));
}
END_TEST

START_TEST(test_import_marks_until_next_epoch)
{
	struct window_state zero;

	memset(&zero, 0, sizeof(zero));
	window_table_new_epoch(tab);
	admit("admitted");     /* created by a decision */
	admit("merged");
	import("merged", &st); /* an existing key: the merge path */
	import("fresh", &st);  /* an unknown key: the insert path */
	import("empty", &zero); /* creates nothing */
	ck_assert(!imported("admitted"));
	ck_assert(imported("merged"));
	ck_assert(imported("fresh"));
	ck_assert(!imported("empty"));
	ck_assert_uint_eq(window_table_size(tab), 3);
	/* A decision on an imported key leaves the mark: the state arrived in this epoch. */
	admit("fresh");
	ck_assert(imported("fresh"));
	/* A new epoch clears every mark; a new import sets one again. */
	window_table_new_epoch(tab);
	ck_assert(!imported("merged"));
	ck_assert(!imported("fresh"));
	import("fresh", &st);
	ck_assert(imported("fresh"));
	ck_assert(!imported("merged"));
}
END_TEST

/* Epochs run 1..255 and wrap to 1: a key imported in epoch 1 reads as imported again 255
 * epochs later, and never in between; a key never imported (epoch 0) never does. */
START_TEST(test_wrap_skips_zero)
{
	window_table_new_epoch(tab);  /* epoch 1 */
	import("k", &st);
	admit("never");
	ck_assert(imported("k"));
	for (int n = 1; n <= 256; n++) {
		window_table_new_epoch(tab);  /* epoch n % 255 + 1 */
		ck_assert_msg(imported("k") == (n == 255), "%d epochs after the import: %s", n,
			      imported("k") ? "imported" : "not imported");
		ck_assert_msg(!imported("never"), "%d epochs later, a key never imported reads as "
			      "imported", n);
	}
}
END_TEST

static Suite *table_epoch_suite(void)
{
	Suite *s = suite_create("table_epoch");
	TCase *tc = tcase_create("epoch");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_no_epoch_no_import);
	tcase_add_test(tc, test_import_marks_until_next_epoch);
	tcase_add_test(tc, test_wrap_skips_zero);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(table_epoch_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
