/* test_stepcost.c - the prompt budget from measured step costs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/stepcost.h"

/* Teach c a decode step of step_us and a prompt token of token_us. */
static void teach(struct stepcost *c, double step_us, double token_us) {
    for (int i = 0; i < 64; i++) {
        stepcost_learn(c, 8, 0, step_us);
        stepcost_learn(c, 8, 256, step_us + 256 * token_us);
    }
}

static void test_unmeasured_is_the_chunk(void **state) {
    (void)state;
    struct stepcost c = {0};
    assert_int_equal(stepcost_budget(&c, 200000, 512), 512);
    stepcost_learn(&c, 8, 0, 20000); /* steps known, tokens not yet */
    assert_int_equal(stepcost_budget(&c, 200000, 512), 512);
    /* a mixed step before any pure one cannot be split: nothing learnt */
    struct stepcost d = {0};
    stepcost_learn(&d, 8, 256, 200000);
    assert_true(d.token_us == 0);
}

static void test_cpu_costs_bound_the_step(void **state) {
    (void)state;
    /* 134M model on 2 cores: 8 streams step in ~21 ms, a prompt token ~0.75 ms */
    struct stepcost c = {0};
    teach(&c, 21000, 750);
    assert_true(c.step_us > 20000 && c.step_us < 22000);
    assert_true(c.token_us > 700 && c.token_us < 800);
    int b = stepcost_budget(&c, 200000, 512);
    /* (200 - 21) ms / 0.75 ms = ~238 tokens: the step stays within 200 ms */
    assert_in_range(b, 230, 245);
    assert_true(c.step_us + b * c.token_us <= 200000 + 1);
    /* no bound: one chunk a step, as before */
    assert_int_equal(stepcost_budget(&c, 0, 512), 512);
    /* a bound under 8 decode steps gives 8 of them: (168 - 21) / 0.75 */
    assert_in_range(stepcost_budget(&c, 50000, 512), 190, 200);
    /* never over the chunk */
    assert_int_equal(stepcost_budget(&c, 10000000, 512), 512);
    /* one stream (2 ms a step) and dear tokens (1 ms): 48 tokens would
     * keep 50 ms, but a step takes at least 64 */
    struct stepcost one = {0};
    teach(&one, 2000, 1000);
    assert_int_equal(stepcost_budget(&one, 50000, 512), 64);
    /* a chunk smaller than that floor is the budget */
    assert_int_equal(stepcost_budget(&one, 50000, 32), 32);
}

static void test_slow_steps_use_the_slowdown(void **state) {
    (void)state;
    /* a big model on a slow CPU: 150 ms a step, 10 ms a prompt token: a
     * 200 ms bound would allow 5 tokens; 8 steps (1.2 s) allow 105 */
    struct stepcost c = {0};
    teach(&c, 150000, 10000);
    int b = stepcost_budget(&c, 200000, 512);
    assert_in_range(b, 100, 110);
}

static void test_gpu_costs_give_the_chunk(void **state) {
    (void)state;
    /* a GPU: 10 ms a step, a prompt token 20 us: the chunk fits easily */
    struct stepcost c = {0};
    teach(&c, 10000, 20);
    assert_int_equal(stepcost_budget(&c, 200000, 512), 512);
}

static void test_averages_follow_a_change(void **state) {
    (void)state;
    struct stepcost c = {0};
    teach(&c, 21000, 750);
    int before = stepcost_budget(&c, 200000, 512);
    teach(&c, 21000, 1500); /* prompts got dearer (longer contexts) */
    int after = stepcost_budget(&c, 200000, 512);
    assert_in_range(after, before / 2 - 5, before / 2 + 5);
    /* nonsense samples are ignored */
    struct stepcost d = c;
    stepcost_learn(&d, 8, 0, -5);
    stepcost_learn(&d, 8, 256, 0);
    stepcost_learn(&d, 8, 256, 1000); /* cheaper than the decode alone */
    stepcost_learn(&d, 8, 8, 999999); /* too few prompt tokens to tell */
    assert_true(d.step_us == c.step_us && d.token_us == c.token_us);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unmeasured_is_the_chunk),
        cmocka_unit_test(test_cpu_costs_bound_the_step),
        cmocka_unit_test(test_slow_steps_use_the_slowdown),
        cmocka_unit_test(test_gpu_costs_give_the_chunk),
        cmocka_unit_test(test_averages_follow_a_change),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
