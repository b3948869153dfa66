/* test_utf8.c - UTF-8 boundaries for incremental detokenisation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/utf8.h"

static void test_ascii_is_complete(void **state) {
    (void)state;
    assert_int_equal(utf8_complete_prefix("hello", 5), 5);
    assert_int_equal(utf8_complete_prefix("", 0), 0);
}

static void test_holds_back_partial_sequences(void **state) {
    (void)state;
    const char *euro = "\xE2\x82\xAC";     /* 3 bytes */
    const char *emoji = "\xF0\x9F\x98\x80"; /* 4 bytes */
    char b[16];
    for (size_t cut = 0; cut <= 3; cut++) {
        memcpy(b, "a", 1);
        memcpy(b + 1, euro, cut);
        assert_int_equal(utf8_complete_prefix(b, 1 + cut), cut == 3 ? 4 : 1);
    }
    for (size_t cut = 0; cut <= 4; cut++) {
        memcpy(b, "ab", 2);
        memcpy(b + 2, emoji, cut);
        assert_int_equal(utf8_complete_prefix(b, 2 + cut), cut == 4 ? 6 : 2);
    }
    /* two-byte: é */
    assert_int_equal(utf8_complete_prefix("x\xC3", 2), 1);
    assert_int_equal(utf8_complete_prefix("x\xC3\xA9", 3), 3);
}

static void test_invalid_bytes_not_held(void **state) {
    (void)state;
    /* a lone continuation byte or an invalid lead can never complete */
    assert_int_equal(utf8_complete_prefix("a\x80", 2), 2);
    assert_int_equal(utf8_complete_prefix("a\xFF", 2), 2);
    assert_int_equal(utf8_complete_prefix("\x80\x80\x80\x80", 4), 4);
}

static void test_streamed_pieces_reassemble(void **state) {
    (void)state;
    /* feed "héllo 😀 €" one byte at a time; every released prefix is valid */
    const char *text = "h\xC3\xA9llo \xF0\x9F\x98\x80 \xE2\x82\xAC";
    size_t n = strlen(text);
    char pend[16];
    size_t plen = 0;
    char out[64];
    size_t olen = 0;
    for (size_t i = 0; i < n; i++) {
        pend[plen++] = text[i];
        size_t ready = utf8_complete_prefix(pend, plen);
        assert_true(utf8_valid(pend, ready));
        memcpy(out + olen, pend, ready);
        olen += ready;
        memmove(pend, pend + ready, plen - ready);
        plen -= ready;
    }
    assert_int_equal(plen, 0);
    assert_int_equal(olen, n);
    assert_memory_equal(out, text, n);
}

static void test_valid(void **state) {
    (void)state;
    assert_true(utf8_valid("abc", 3));
    assert_true(utf8_valid("\xE2\x82\xAC", 3));
    assert_false(utf8_valid("\xE2\x82", 2));
    assert_false(utf8_valid("\xC0\xAF", 2));         /* overlong */
    assert_false(utf8_valid("\xED\xA0\x80", 3));     /* surrogate */
    assert_false(utf8_valid("\xF4\x90\x80\x80", 4)); /* > U+10FFFF */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii_is_complete),
        cmocka_unit_test(test_holds_back_partial_sequences),
        cmocka_unit_test(test_invalid_bytes_not_held),
        cmocka_unit_test(test_streamed_pieces_reassemble),
        cmocka_unit_test(test_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
