/* test_think.c - a reasoning model's thinking text apart from its answer,
 * fed whole and one byte at a time (tags split across pieces). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "service/think.h"

/* Split text in pieces of `step` bytes (0 = whole); r and c get the parts. */
static void split(const char *text, bool opened, size_t step, char *r, char *c) {
    struct think t;
    think_init(&t, "<think>", "</think>", opened);
    struct buf br, bc;
    buf_init(&br, 0);
    buf_init(&bc, 0);
    size_t n = strlen(text);
    if (step == 0) step = n ? n : 1;
    for (size_t at = 0; at < n; at += step)
        assert_int_equal(think_feed(&t, text + at, at + step > n ? n - at : step, &br, &bc), 0);
    assert_int_equal(think_flush(&t, &br, &bc), 0);
    memcpy(r, br.data ? br.data : "", br.len);
    r[br.len] = '\0';
    memcpy(c, bc.data ? bc.data : "", bc.len);
    c[bc.len] = '\0';
    buf_free(&br);
    buf_free(&bc);
    think_free(&t);
}

static void check(const char *text, bool opened, const char *want_r, const char *want_c) {
    for (size_t step = 0; step <= 3; step++) {
        char r[256], c[256];
        split(text, opened, step, r, c);
        if (strcmp(r, want_r) != 0 || strcmp(c, want_c) != 0)
            fail_msg("%s (step %zu): reasoning '%s' content '%s'", text, step, r, c);
    }
}

static void test_opened_by_the_prompt(void **state) {
    (void)state;
    check("\nLet me see.\n</think>\n\nThe answer.", true, "Let me see.\n", "The answer.");
    check("no end tag at all", true, "no end tag at all", "");
    check("</think>Direct", true, "", "Direct");
}

static void test_opened_by_the_output(void **state) {
    (void)state;
    check("  <think>hmm</think>\nyes", false, "hmm", "yes");
    check("plain answer", false, "", "plain answer");
    check("<thin>not a tag", false, "", "<thin>not a tag");
    check("answer with </think> later", false, "", "answer with </think> later");
    check("<thi", false, "", "<thi"); /* a tag that never completes is text */
}

static void test_partial_end_tag_is_text_when_it_is_not_one(void **state) {
    (void)state;
    check("a</thin k>b</think>c", true, "a</thin k>b", "c");
    check("x</", true, "x</", "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opened_by_the_prompt),
        cmocka_unit_test(test_opened_by_the_output),
        cmocka_unit_test(test_partial_end_tag_is_text_when_it_is_not_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
