/* test_buf.c - the capped growable buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/buf.h"

static void test_init_is_empty(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.alloc, 0);
    assert_int_equal(b.cap, 0);
    buf_free(&b);
}

static void test_append_and_nul(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(buf_append(&b, "abc", 3), 0);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");
    assert_int_equal(buf_puts(&b, "def"), 0);
    assert_string_equal(b.data, "abcdef");
    assert_int_equal(buf_append(&b, "\0x", 2), 0); /* binary bytes are kept */
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data, "abcdef\0x", 8);
    assert_int_equal(b.data[8], '\0');
    assert_int_equal(buf_append(&b, NULL, 0), 0);
    assert_int_equal(b.len, 8);
    buf_free(&b);
    assert_null(b.data);
}

static void test_grows_large(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(b.len, 100000);
    assert_true(b.alloc > b.len);
    assert_memory_equal(b.data + 99990, "0123456789", 10);
    assert_int_equal(b.data[b.len], '\0');
    buf_free(&b);
}

static void test_cap_refuses_whole_append(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "12345678", 8), 0);
    assert_int_equal(buf_append(&b, "abc", 3), -1); /* 11 > 10 */
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(buf_append(&b, "ab", 2), 0); /* exactly at the cap */
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "12345678ab");
    assert_int_equal(buf_append(&b, "x", 1), -1);
    assert_int_equal(buf_puts(&b, "x"), -1);
    assert_int_equal(buf_printf(&b, "%d", 1), -1);
    assert_int_equal(buf_append(&b, "", 0), 0);
    assert_true(b.alloc <= 11); /* never allocates past cap + NUL */
    assert_string_equal(b.data, "12345678ab");
    buf_free(&b);

    buf_init(&b, 4);
    assert_int_equal(buf_append(&b, "hello", 5), -1);
    assert_null(b.data);
    assert_int_equal(buf_append(&b, "x", SIZE_MAX), -1); /* no overflow */
    buf_free(&b);
}

static void test_printf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 16);
    assert_int_equal(buf_printf(&b, "%s=%d", "n", 42), 0);
    assert_string_equal(b.data, "n=42");
    assert_int_equal(b.len, 4);
    assert_int_equal(buf_printf(&b, "%s", "0123456789AB"), 0); /* 16 */
    assert_int_equal(b.len, 16);
    assert_int_equal(buf_printf(&b, "%c", 'z'), -1);
    assert_string_equal(b.data, "n=420123456789AB");
    buf_free(&b);

    buf_init(&b, 0);
    char big[3000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_printf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, sizeof big + 1);
    assert_int_equal(b.data[0], '[');
    assert_int_equal(b.data[b.len - 1], ']');
    buf_free(&b);
}

static void test_reset_consume(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 8);
    buf_reset(&b); /* fine on an empty buf */
    assert_int_equal(buf_puts(&b, "abcdef"), 0);
    buf_consume(&b, 2);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "cdef");
    assert_int_equal(buf_puts(&b, "ghij"), 0); /* room again after consume */
    assert_string_equal(b.data, "cdefghij");
    buf_consume(&b, b.len);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(buf_puts(&b, "xy"), 0);
    size_t alloc = b.alloc;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.alloc, alloc); /* allocation kept */
    assert_string_equal(b.data, "");
    buf_free(&b);
}

static void test_steal(void **state)
{
    (void)state;
    struct buf b;
    size_t len = 99;
    buf_init(&b, 0);
    char *s = buf_steal(&b, &len); /* nothing appended: "" */
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);

    assert_int_equal(buf_puts(&b, "payload"), 0);
    s = buf_steal(&b, &len);
    assert_string_equal(s, "payload");
    assert_int_equal(len, 7);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.alloc, 0);
    free(s);
    assert_int_equal(buf_puts(&b, "again"), 0); /* reusable */
    assert_string_equal(b.data, "again");
    s = buf_steal(&b, NULL);
    assert_string_equal(s, "again");
    free(s);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_is_empty),
        cmocka_unit_test(test_append_and_nul),
        cmocka_unit_test(test_grows_large),
        cmocka_unit_test(test_cap_refuses_whole_append),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_reset_consume),
        cmocka_unit_test(test_steal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
