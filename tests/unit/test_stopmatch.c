/* test_stopmatch.c - stop strings across token boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/stopmatch.h"

/* Feed pieces; return the text released and whether a stop matched. */
static bool run(const char *const *stops, int n_stops, const char *const *pieces, int n, char *out,
                size_t out_size, int *stopped_at) {
    struct stopmatch m;
    stopmatch_init(&m, stops, n_stops);
    struct buf b;
    buf_init(&b, 0);
    bool stopped = false;
    *stopped_at = -1;
    for (int i = 0; i < n && !stopped; i++) {
        stopped = stopmatch_feed(&m, pieces[i], strlen(pieces[i]), &b);
        if (stopped) *stopped_at = i;
    }
    if (!stopped) stopmatch_flush(&m, &b);
    snprintf(out, out_size, "%s", b.data ? b.data : "");
    buf_free(&b);
    stopmatch_free(&m);
    return stopped;
}

static void test_no_stops_passes_through(void **state) {
    (void)state;
    const char *pieces[] = {"Hello", " wor", "ld"};
    char out[64];
    int at;
    assert_false(run(NULL, 0, pieces, 3, out, sizeof out, &at));
    assert_string_equal(out, "Hello world");
}

static void test_stop_within_one_piece(void **state) {
    (void)state;
    const char *stops[] = {"END"};
    const char *pieces[] = {"abc", "xENDy", "zzz"};
    char out[64];
    int at;
    assert_true(run(stops, 1, pieces, 3, out, sizeof out, &at));
    assert_string_equal(out, "abcx");
    assert_int_equal(at, 1);
}

static void test_stop_across_pieces(void **state) {
    (void)state;
    const char *stops[] = {"</s>"};
    const char *pieces[] = {"text <", "/", "s", "> more"};
    char out[64];
    int at;
    assert_true(run(stops, 1, pieces, 4, out, sizeof out, &at));
    assert_string_equal(out, "text ");
    assert_int_equal(at, 3);
}

static void test_partial_then_diverges_is_released(void **state) {
    (void)state;
    const char *stops[] = {"STOP"};
    const char *pieces[] = {"ST", "O", "NE", " age"};
    char out[64];
    int at;
    assert_false(run(stops, 1, pieces, 4, out, sizeof out, &at));
    assert_string_equal(out, "STONE age");
}

static void test_held_back_text_not_released_early(void **state) {
    (void)state;
    const char *stops[] = {"\n\n"};
    struct stopmatch m;
    stopmatch_init(&m, stops, 1);
    struct buf b;
    buf_init(&b, 0);
    assert_false(stopmatch_feed(&m, "line\n", 5, &b));
    assert_int_equal(b.len, 4); /* the "\n" is held */
    assert_memory_equal(b.data, "line", 4);
    assert_true(stopmatch_feed(&m, "\nnext", 5, &b));
    assert_int_equal(b.len, 4);
    buf_free(&b);
    stopmatch_free(&m);
}

static void test_earliest_of_several_stops(void **state) {
    (void)state;
    const char *stops[] = {"world", "lo w", "", "xyz"};
    const char *pieces[] = {"hello world"};
    char out[64];
    int at;
    assert_true(run(stops, 4, pieces, 1, out, sizeof out, &at));
    assert_string_equal(out, "hel");
}

static void test_flush_releases_partial_at_end(void **state) {
    (void)state;
    const char *stops[] = {"###"};
    const char *pieces[] = {"done #", "#"};
    char out[64];
    int at;
    assert_false(run(stops, 1, pieces, 2, out, sizeof out, &at));
    assert_string_equal(out, "done ##");
}

static void test_overlapping_prefix(void **state) {
    (void)state;
    /* "aab" inside "aaab": a naive matcher that drops the held "aa" on
     * mismatch would miss it */
    const char *stops[] = {"aab"};
    const char *pieces[] = {"a", "a", "a", "b", "c"};
    char out[64];
    int at;
    assert_true(run(stops, 1, pieces, 5, out, sizeof out, &at));
    assert_string_equal(out, "a");
    assert_int_equal(at, 3);
}

static void test_multibyte_stop(void **state) {
    (void)state;
    const char *stops[] = {"\xE2\x82\xAC"};
    const char *pieces[] = {"cost 5", "\xE2\x82", "\xAC", " more"};
    char out[64];
    int at;
    assert_true(run(stops, 1, pieces, 4, out, sizeof out, &at));
    assert_string_equal(out, "cost 5");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_stops_passes_through),
        cmocka_unit_test(test_stop_within_one_piece),
        cmocka_unit_test(test_stop_across_pieces),
        cmocka_unit_test(test_partial_then_diverges_is_released),
        cmocka_unit_test(test_held_back_text_not_released_early),
        cmocka_unit_test(test_earliest_of_several_stops),
        cmocka_unit_test(test_flush_releases_partial_at_end),
        cmocka_unit_test(test_overlapping_prefix),
        cmocka_unit_test(test_multibyte_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
