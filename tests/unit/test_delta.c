/* test_delta.c - a message put together from stream deltas: tool calls by
 * index with their arguments appended, reasoning appended, logprobs
 * records appended, content null when only calls came. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "service/delta.h"

static void add(struct delta_acc *a, const char *json) {
    json_t *j = json_loads(json, 0, NULL);
    assert_non_null(j);
    assert_int_equal(delta_acc_add(a, j), 0);
    json_decref(j);
}

static void test_calls_by_index(void **state) {
    (void)state;
    struct delta_acc a;
    delta_acc_init(&a);
    add(&a, "{\"delta\":{\"reasoning_content\":\"thin\"}}");
    add(&a, "{\"delta\":{\"reasoning_content\":\"king\"}}");
    add(&a, "{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":"
            "{\"name\":\"add\",\"arguments\":\"\"}}]}}");
    add(&a, "{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}");
    add(&a, "{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"lamp\","
            "\"arguments\":\"{}\"}}]}}");
    add(&a, "{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}");
    assert_int_equal(delta_acc_calls(&a), 2);
    json_t *m = delta_acc_message(&a, "", 0);
    char *s = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, "{\"content\":null,\"reasoning_content\":\"thinking\",\"tool_calls\":["
                           "{\"function\":{\"arguments\":\"{\\\"a\\\":1}\",\"name\":\"add\"},\"id\":\"call_a\","
                           "\"type\":\"function\"},{\"function\":{\"arguments\":\"{}\",\"name\":\"lamp\"},"
                           "\"id\":\"call_b\",\"type\":\"function\"}]}");
    free(s);
    json_decref(m);
    delta_acc_free(&a);
}

static void test_text_and_logprobs(void **state) {
    (void)state;
    struct delta_acc a;
    delta_acc_init(&a);
    assert_null(delta_acc_logprobs(&a));
    add(&a, "{\"logprobs\":{\"content\":[{\"token\":\"a\"}],\"refusal\":null}}");
    add(&a, "{\"logprobs\":{\"content\":[{\"token\":\"b\"},{\"token\":\"c\"}]}}");
    json_t *lp = delta_acc_logprobs(&a);
    assert_int_equal(json_array_size(json_object_get(lp, "content")), 3);
    json_decref(lp);
    json_t *m = delta_acc_message(&a, "abc", 3);
    assert_string_equal(json_string_value(json_object_get(m, "content")), "abc");
    assert_null(json_object_get(m, "tool_calls"));
    json_decref(m);
    json_t *bad = json_string("x");
    assert_int_equal(delta_acc_add(&a, bad), -1);
    json_decref(bad);
    delta_acc_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_by_index),
        cmocka_unit_test(test_text_and_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
