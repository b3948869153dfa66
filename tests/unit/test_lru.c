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

/* Requests going round `models` models with room for `room`, the pool's
 * way (a miss evicts lru_victim's choice, marking it evicted); the loads. */
static int simulate(int models, int room, int requests, int64_t gap_ms, const int *order) {
    struct lru_entry e[8] = {{0}};
    int64_t evicted[8] = {0}, now = 1000;
    int loads = 0;
    for (int r = 0; r < requests; r++, now += gap_ms) {
        int want = order ? order[r] : r % models;
        if (!e[want].resident) {
            int resident = 0;
            for (int i = 0; i < models; i++) resident += e[i].resident;
            e[want].refault = evicted[want] && now - evicted[want] < LRU_REFAULT_MS;
            if (resident >= room) {
                long v = lru_victim(e, (size_t)models, (size_t)want);
                assert_true(v >= 0 && v != want);
                e[v].resident = e[v].counted = false;
                evicted[v] = now;
            }
            e[want].resident = e[want].counted = true;
            loads++;
        }
        e[want].last_used_ms = now;
    }
    return loads;
}

static void test_a_cycle_does_not_thrash(void **state) {
    (void)state;
    /* LRU loads on every request of a round robin over 3 models with room
     * for 2; evicting the most recent instead keeps one model resident:
     * after the first round, every other request hits */
    int loads = simulate(3, 2, 12, 100, NULL);
    assert_true(loads <= 8);
    assert_true(loads >= 7);
    /* with room for all three, only the first round loads */
    assert_int_equal(simulate(3, 3, 12, 100, NULL), 3);
}

static void test_idle_models_still_go_first(void **state) {
    (void)state;
    /* A and B hot, C used once long ago: C goes when D comes, refault or not */
    struct lru_entry e[4] = {
        {.resident = true, .counted = true, .last_used_ms = 100000},
        {.resident = true, .counted = true, .last_used_ms = 100500},
        {.resident = true, .counted = true, .last_used_ms = 1000},
        {.refault = true},
    };
    assert_int_equal(lru_victim(e, 4, 3), 2);
    /* a switch from A to B and back (A a refault, B the only other): B goes, as with LRU */
    int order[] = {0, 1, 2, 1, 1, 1, 0, 0, 1, 0};
    int loads = simulate(3, 2, 10, 40000, order);
    assert_true(loads <= 6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fits_budget_and_count),
        cmocka_unit_test(test_loading_models_count),
        cmocka_unit_test(test_victim_is_least_recently_used),
        cmocka_unit_test(test_pinned_models_are_never_victims),
        cmocka_unit_test(test_round_robin_three_on_two),
        cmocka_unit_test(test_a_cycle_does_not_thrash),
        cmocka_unit_test(test_idle_models_still_go_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
