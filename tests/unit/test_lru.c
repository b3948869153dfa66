/* test_lru.c - the pool's eviction rules as pure code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pool/lru.h"

#define MIB (UINT64_C(1) << 20)

static void test_fits_budget_and_count(void **state) {
    (void)state;
    struct lru_entry e[3] = {
        {.bytes = 400 * MIB, .resident = true, .counted = true},
        {.bytes = 300 * MIB, .resident = true, .counted = true},
        {.bytes = 0},
    };
    assert_true(lru_fits(e, 3, 300 * MIB, 1000 * MIB, 8));   /* 700 + 300 = 1000: fits exactly */
    assert_false(lru_fits(e, 3, 301 * MIB, 1000 * MIB, 8));  /* one byte over */
    assert_false(lru_fits(e, 3, 10 * MIB, 1000 * MIB, 2));   /* the model cap */
    assert_true(lru_fits(e, 3, 10 * MIB, 1000 * MIB, 3));
    assert_false(lru_fits(e, 0, 2000 * MIB, 1000 * MIB, 8)); /* larger than the whole budget */
    int counted = 0;
    assert_true(lru_used(e, 3, &counted) == 700 * MIB);
    assert_int_equal(counted, 2);
}

static void test_loading_models_count(void **state) {
    (void)state;
    /* a model being loaded holds its share though it cannot be evicted */
    struct lru_entry e[2] = {
        {.bytes = 600 * MIB, .resident = false, .counted = true},
        {.bytes = 300 * MIB, .resident = true, .counted = true, .last_used_ms = 5},
    };
    assert_false(lru_fits(e, 2, 200 * MIB, 1000 * MIB, 8));
    assert_int_equal(lru_victim(e, 2, 2), 1); /* only the loaded one is a victim */
}

static void test_victim_is_least_recently_used(void **state) {
    (void)state;
    struct lru_entry e[4] = {
        {.bytes = 1, .resident = true, .counted = true, .last_used_ms = 300},
        {.bytes = 1, .resident = true, .counted = true, .last_used_ms = 100},
        {.bytes = 1, .resident = true, .counted = true, .last_used_ms = 200},
        {.bytes = 1, .resident = false, .counted = false, .last_used_ms = 1}, /* unloaded: not a victim */
    };
    assert_int_equal(lru_victim(e, 4, 4), 1);
    assert_int_equal(lru_victim(e, 4, 1), 2); /* never the model being loaded */
}

static void test_pinned_models_are_never_victims(void **state) {
    (void)state;
    struct lru_entry e[3] = {
        {.bytes = 1, .resident = true, .counted = true, .last_used_ms = 1, .pins = 1},   /* streaming */
        {.bytes = 1, .resident = true, .counted = true, .last_used_ms = 2, .pins = 3},   /* queued */
        {.bytes = 1, .resident = true, .counted = true, .last_used_ms = 900, .pins = 0}, /* idle, recent */
    };
    assert_int_equal(lru_victim(e, 3, 3), 2);
    e[2].pins = 1;
    assert_int_equal(lru_victim(e, 3, 3), -1); /* everything busy: the caller waits */
}

static void test_round_robin_three_on_two(void **state) {
    (void)state;
    /* A, B loaded; C wanted: A (older) goes. Then A wanted: B (older than C) goes. */
    struct lru_entry e[3] = {
        {.bytes = 100, .resident = true, .counted = true, .last_used_ms = 10},
        {.bytes = 100, .resident = true, .counted = true, .last_used_ms = 20},
        {.bytes = 0, .resident = false, .counted = false},
    };
    assert_false(lru_fits(e, 3, 100, 250, 8));
    long v = lru_victim(e, 3, 2);
    assert_int_equal(v, 0);
    e[0] = (struct lru_entry){0};
    e[2] = (struct lru_entry){.bytes = 100, .resident = true, .counted = true, .last_used_ms = 30};
    assert_false(lru_fits(e, 3, 100, 250, 8));
    assert_int_equal(lru_victim(e, 3, 0), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fits_budget_and_count),
        cmocka_unit_test(test_loading_models_count),
        cmocka_unit_test(test_victim_is_least_recently_used),
        cmocka_unit_test(test_pinned_models_are_never_victims),
        cmocka_unit_test(test_round_robin_three_on_two),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
