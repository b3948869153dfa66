/* test_waitq.c - the bounded wait queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/waitq.h"

static void test_fifo_order_and_bound(void **state) {
    (void)state;
    struct waitq q;
    int v[5];
    assert_int_equal(waitq_init(&q, 3), 0);
    assert_null(waitq_pop(&q));
    assert_int_equal(waitq_push(&q, &v[0]), 0);
    assert_int_equal(waitq_push(&q, &v[1]), 0);
    assert_int_equal(waitq_push(&q, &v[2]), 0);
    assert_true(waitq_full(&q));
    assert_int_equal(waitq_push(&q, &v[3]), -1); /* full: refused at once */
    assert_int_equal(waitq_len(&q), 3);
    assert_ptr_equal(waitq_peek(&q), &v[0]);
    assert_ptr_equal(waitq_pop(&q), &v[0]);
    assert_int_equal(waitq_push(&q, &v[3]), 0); /* wraps around */
    assert_ptr_equal(waitq_pop(&q), &v[1]);
    assert_ptr_equal(waitq_pop(&q), &v[2]);
    assert_ptr_equal(waitq_pop(&q), &v[3]);
    assert_null(waitq_pop(&q));
    waitq_free(&q);
}

static void test_remove_keeps_order(void **state) {
    (void)state;
    struct waitq q;
    int v[4];
    assert_int_equal(waitq_init(&q, 4), 0);
    waitq_pop(&q);
    for (int i = 0; i < 4; i++) assert_int_equal(waitq_push(&q, &v[i]), 0);
    waitq_pop(&q);
    assert_int_equal(waitq_push(&q, &v[0]), 0); /* ring now starts mid-array */
    assert_true(waitq_remove(&q, &v[2]));
    assert_false(waitq_remove(&q, &v[2]));
    assert_int_equal(waitq_len(&q), 3);
    assert_ptr_equal(waitq_at(&q, 0), &v[1]);
    assert_ptr_equal(waitq_at(&q, 1), &v[3]);
    assert_ptr_equal(waitq_at(&q, 2), &v[0]);
    assert_null(waitq_at(&q, 3));
    waitq_free(&q);
}

static void test_zero_capacity_refuses(void **state) {
    (void)state;
    struct waitq q;
    int v;
    assert_int_equal(waitq_init(&q, 0), 0);
    assert_true(waitq_full(&q));
    assert_int_equal(waitq_push(&q, &v), -1);
    assert_null(waitq_pop(&q));
    waitq_free(&q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_order_and_bound),
        cmocka_unit_test(test_remove_keeps_order),
        cmocka_unit_test(test_zero_capacity_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
