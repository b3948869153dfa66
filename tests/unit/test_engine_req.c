/* test_engine_req.c - the request object shared by a transport and an
 * engine: output takes, parking and wake-ups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"

static struct engine_req *new_req(size_t cap) {
    struct engine_input in;
    memset(&in, 0, sizeof in);
    struct engine_req *r = engine_req_new(&in, cap);
    assert_non_null(r);
    return r;
}

/* Take everything pending in chunks of `cap` bytes; fails the test if a
 * take moves nothing while output is pending (the stream reader would spin
 * on it forever). Returns the bytes taken. */
static size_t take_all(struct engine_req *r, char *dst, size_t cap, size_t total_cap) {
    size_t got = 0;
    while (engine_req_pending(r) > 0) {
        assert_true(got < total_cap);
        size_t room = total_cap - got;
        size_t n = engine_req_take(r, dst + got, cap < room ? cap : room, NULL);
        assert_true(n > 0);
        got += n;
    }
    return got;
}

static void test_take_never_splits_a_character(void **state) {
    (void)state;
    struct engine_req *r = new_req(1 << 20);
    /* "a\u00e9\u20ac\U0001F600" repeated: 1-, 2-, 3- and 4-byte characters */
    static const char unit[] = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
    char text[sizeof unit * 50];
    size_t len = 0;
    for (int i = 0; i < 50; i++) {
        memcpy(text + len, unit, sizeof unit - 1);
        len += sizeof unit - 1;
    }
    char out[sizeof text];
    for (size_t cap = 1; cap <= 9; cap++) {
        assert_int_equal(engine_req_push(r, text, len), 0);
        size_t got = 0;
        while (engine_req_pending(r) > 0) {
            size_t n = engine_req_take(r, out + got, cap, NULL);
            assert_true(n > 0 && n <= cap);
            got += n;
            /* a take ends on a character boundary whenever a whole
             * character fits (cap >= 4) */
            if (cap >= 4 && got < len) assert_true(((unsigned char)text[got] & 0xC0) != 0x80);
        }
        assert_int_equal(got, len);
        assert_memory_equal(out, text, len);
    }
    engine_req_release(r);
}

static void test_take_progresses_through_continuation_bytes(void **state) {
    (void)state;
    /* A model with byte tokens can emit long runs of bytes that are not
     * valid UTF-8; a take must still move them. */
    struct engine_req *r = new_req(1 << 20);
    size_t len = 20000;
    char *run = malloc(len);
    char *out = malloc(len);
    assert_non_null(run);
    assert_non_null(out);
    memset(run, 0x80, len);
    assert_int_equal(engine_req_push(r, run, len), 0);
    assert_int_equal(take_all(r, out, 16384, len), len);
    assert_memory_equal(out, run, len);

    /* the same after a valid lead byte */
    run[0] = (char)0xE2;
    assert_int_equal(engine_req_push(r, run, len), 0);
    assert_int_equal(take_all(r, out, 16384, len), len);
    assert_memory_equal(out, run, len);
    free(run);
    free(out);
    engine_req_release(r);
}

static int wakes;
static void on_wake(void *ctx) {
    (void)ctx;
    wakes++;
}
static int suspends;
static void on_suspend(void *ctx) {
    (void)ctx;
    suspends++;
}

static void test_park_and_wake(void **state) {
    (void)state;
    struct engine_req *r = new_req(1024);
    wakes = suspends = 0;
    engine_req_set_notify(r, on_wake, NULL);
    /* a stream not yet admitted parks until RUNNING */
    assert_true(engine_req_park(r, ENGINE_PARK_START, on_suspend, NULL));
    assert_int_equal(suspends, 1);
    engine_req_push(r, "x", 1); /* output alone does not wake a START park */
    assert_int_equal(wakes, 0);
    engine_req_set_running(r);
    assert_int_equal(wakes, 1);
    /* output pending: nothing to wait for */
    assert_false(engine_req_park(r, ENGINE_PARK_OUTPUT, on_suspend, NULL));
    char c;
    assert_int_equal(engine_req_take(r, &c, 1, NULL), 1);
    assert_true(engine_req_park(r, ENGINE_PARK_OUTPUT, on_suspend, NULL));
    engine_req_push(r, "y", 1);
    assert_int_equal(wakes, 2);
    engine_req_finish(r, ENGINE_FINISH_STOP);
    assert_int_equal(wakes, 2); /* not parked any more */
    struct engine_req_view v;
    engine_req_take(r, NULL, 0, &v);
    assert_int_equal(v.state, ENGINE_REQ_DONE);
    assert_false(engine_req_park(r, ENGINE_PARK_DONE, on_suspend, NULL));
    engine_req_release(r);
}

static void test_output_bound(void **state) {
    (void)state;
    struct engine_req *r = new_req(8);
    assert_int_equal(engine_req_push(r, "12345678", 8), 0);
    assert_int_equal(engine_req_push(r, "9", 1), -1); /* the client does not drain: the engine cancels */
    engine_req_release(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_never_splits_a_character),
        cmocka_unit_test(test_take_progresses_through_continuation_bytes),
        cmocka_unit_test(test_park_and_wake),
        cmocka_unit_test(test_output_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
