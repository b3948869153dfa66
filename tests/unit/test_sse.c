/* test_sse.c - Server-Sent Events framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/sse.h"

static void test_single_line(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    const char *p = "{\"a\":1}";
    assert_int_equal(sse_data(&b, p, strlen(p)), 0);
    assert_string_equal(b.data, "data: {\"a\":1}\n\n");
    assert_int_equal(sse_data(&b, "x", 1), 0); /* events append */
    assert_string_equal(b.data, "data: {\"a\":1}\n\ndata: x\n\n");
    buf_free(&b);
}

static void test_multi_line_payload(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(sse_data(&b, "a\nb\nc", 5), 0);
    assert_string_equal(b.data, "data: a\ndata: b\ndata: c\n\n");
    buf_reset(&b);
    assert_int_equal(sse_data(&b, "a\r\nb\rc", 6), 0);
    assert_string_equal(b.data, "data: a\ndata: b\ndata: c\n\n");
    buf_reset(&b);
    /* A trailing newline survives as an empty last data line. */
    assert_int_equal(sse_data(&b, "a\n", 2), 0);
    assert_string_equal(b.data, "data: a\ndata: \n\n");
    buf_reset(&b);
    assert_int_equal(sse_data(&b, "\n\n", 2), 0);
    assert_string_equal(b.data, "data: \ndata: \ndata: \n\n");
    buf_free(&b);
}

static void test_empty_and_len_bound(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(sse_data(&b, "", 0), 0);
    assert_string_equal(b.data, "data: \n\n");
    buf_reset(&b);
    assert_int_equal(sse_data(&b, "abcdef", 3), 0); /* only len bytes */
    assert_string_equal(b.data, "data: abc\n\n");
    buf_free(&b);
}

static void test_done_and_comment(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(sse_done(&b), 0);
    assert_string_equal(b.data, "data: [DONE]\n\n");
    buf_reset(&b);
    assert_int_equal(sse_comment(&b, "keep-alive"), 0);
    assert_string_equal(b.data, ": keep-alive\n\n");
    buf_reset(&b);
    assert_int_equal(sse_comment(&b, "two\nlines"), 0); /* cannot end the event early */
    assert_string_equal(b.data, ": two\n: lines\n\n");
    buf_free(&b);
}

static void test_cap_refusal_all_or_nothing(void **state)
{
    (void)state;
    struct buf b;
    /* "data: abc\n\n" is 11 bytes. */
    buf_init(&b, 11);
    assert_int_equal(sse_data(&b, "abc", 3), 0);
    assert_int_equal(b.len, 11);
    assert_int_equal(sse_data(&b, "", 0), -1);
    assert_int_equal(sse_done(&b), -1);
    assert_int_equal(sse_comment(&b, "x"), -1);
    assert_int_equal(b.len, 11);
    assert_string_equal(b.data, "data: abc\n\n");
    buf_free(&b);

    /* A multi-line event that only partly fits leaves nothing behind. */
    buf_init(&b, 21);
    assert_int_equal(buf_puts(&b, "xx"), 0);
    assert_int_equal(sse_data(&b, "line1\nline2", 11), -1); /* needs 2 + 25 */
    assert_int_equal(b.len, 2);
    assert_string_equal(b.data, "xx");
    assert_int_equal(sse_data(&b, "ab\ncd", 5), 0); /* 2 + 19 = 21 */
    assert_string_equal(b.data, "xxdata: ab\ndata: cd\n\n");
    assert_int_equal(b.len, 21);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_line),
        cmocka_unit_test(test_multi_line_payload),
        cmocka_unit_test(test_empty_and_len_bound),
        cmocka_unit_test(test_done_and_comment),
        cmocka_unit_test(test_cap_refusal_all_or_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
