/* test_jsonrpc.c - JSON-RPC 2.0 messages: reading requests, batches and
 * their errors, and the responses, errors and chunks written back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "rpc/jsonrpc.h"

static void parse(const char *text, struct rpc_message *m) {
    assert_int_equal(rpc_message_parse(text, strlen(text), m), 0);
}

static void test_request(void **state) {
    (void)state;
    struct rpc_message m;
    parse("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"health\",\"params\":{\"a\":1}}", &m);
    assert_int_equal(m.error, 0);
    assert_false(m.batch);
    assert_int_equal(m.n_calls, 1);
    assert_int_equal(m.calls[0].error, 0);
    assert_string_equal(m.calls[0].method, "health");
    assert_string_equal(m.calls[0].id_json, "7");
    assert_true(json_is_object(m.calls[0].params));
    rpc_message_free(&m);
}

static void test_ids_echoed(void **state) {
    (void)state;
    const char *ids[][2] = {
        {"\"abc\"", "\"abc\""}, {"-12", "-12"}, {"1.5", "1.5"}, {"null", "null"},
        {"\"\\u00e9t\\u00e9\"", "\"\xc3\xa9t\xc3\xa9\""}, {"9007199254740993", "9007199254740993"},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char text[200];
        snprintf(text, sizeof text, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"m\"}", ids[i][0]);
        struct rpc_message m;
        parse(text, &m);
        assert_int_equal(m.calls[0].error, 0);
        assert_string_equal(m.calls[0].id_json, ids[i][1]);
        rpc_message_free(&m);
    }
}

static void test_notification(void **state) {
    (void)state;
    struct rpc_message m;
    parse("{\"jsonrpc\":\"2.0\",\"method\":\"health\"}", &m);
    assert_int_equal(m.calls[0].error, 0);
    assert_null(m.calls[0].id_json);
    assert_null(m.calls[0].params);
    rpc_message_free(&m);
}

static void test_parse_error(void **state) {
    (void)state;
    struct rpc_message m;
    parse("{\"jsonrpc\":\"2.0\",", &m);
    assert_int_equal(m.error, RPC_PARSE_ERROR);
    assert_non_null(strstr(m.error_msg, "invalid JSON"));
    rpc_message_free(&m);
    parse("", &m);
    assert_int_equal(m.error, RPC_PARSE_ERROR);
    rpc_message_free(&m);
}

static void test_invalid_requests(void **state) {
    (void)state;
    const char *bad[] = {
        "1",
        "{\"id\":1,\"method\":\"m\"}",                           /* no jsonrpc */
        "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"m\"}",       /* wrong version */
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}",           /* method not a string */
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":\"x\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"m\"}", /* object id */
        "{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"m\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct rpc_message m;
        parse(bad[i], &m);
        assert_int_equal(m.error, 0);
        assert_int_equal(m.n_calls, 1);
        assert_int_equal(m.calls[0].error, RPC_INVALID_REQUEST);
        assert_non_null(m.calls[0].error_msg);
        rpc_message_free(&m);
    }
    /* a bad id is answered with id null */
    struct rpc_message m;
    parse("{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"m\"}", &m);
    assert_string_equal(m.calls[0].id_json, "null");
    rpc_message_free(&m);
}

static void test_batch(void **state) {
    (void)state;
    struct rpc_message m;
    parse("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"},{\"jsonrpc\":\"2.0\",\"method\":\"b\"},7]", &m);
    assert_int_equal(m.error, 0);
    assert_true(m.batch);
    assert_int_equal(m.n_calls, 3);
    assert_string_equal(m.calls[0].method, "a");
    assert_null(m.calls[1].id_json);
    assert_int_equal(m.calls[2].error, RPC_INVALID_REQUEST);
    rpc_message_free(&m);
    parse("[]", &m);
    assert_int_equal(m.error, RPC_INVALID_REQUEST);
    rpc_message_free(&m);
    /* a batch over the bound is refused whole */
    size_t cap = (RPC_MAX_BATCH + 1) * 4 + 2;
    char *big = malloc(cap);
    size_t at = 0;
    big[at++] = '[';
    for (int i = 0; i <= RPC_MAX_BATCH; i++) at += (size_t)snprintf(big + at, cap - at, "%s1", i ? "," : "");
    big[at++] = ']';
    big[at] = '\0';
    parse(big, &m);
    assert_int_equal(m.error, RPC_INVALID_REQUEST);
    assert_non_null(strstr(m.error_msg, "at most"));
    rpc_message_free(&m);
    free(big);
}

static void test_codes(void **state) {
    (void)state;
    assert_int_equal(rpc_code_of(CORRAL_OVERLOADED), RPC_OVERLOADED);
    assert_int_equal(rpc_code_of(CORRAL_INVALID_REQUEST), RPC_INVALID_PARAMS);
    assert_int_equal(rpc_code_of(CORRAL_CONTEXT_LENGTH), RPC_INVALID_PARAMS);
    assert_int_equal(rpc_code_of(CORRAL_MODEL_NOT_FOUND), RPC_NOT_FOUND);
    assert_int_equal(rpc_code_of(CORRAL_UNAUTHORIZED), RPC_UNAUTHORIZED);
    assert_int_equal(rpc_code_of(CORRAL_NOMEM), RPC_INTERNAL_ERROR);
    for (int st = 1; st < CORRAL__STATUS_COUNT; st++) {
        int code = rpc_code_of((enum corral_status)st);
        assert_true(code == RPC_INVALID_PARAMS || code == RPC_INTERNAL_ERROR || (code <= -32000 && code >= -32099));
    }
    assert_int_equal(rpc_retry_after_ms(CORRAL_OVERLOADED), 1000);
    assert_int_equal(rpc_retry_after_ms(CORRAL_INVALID_REQUEST), 0);
}

static json_t *load(char *text) {
    assert_non_null(text);
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    free(text);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "jsonrpc")), "2.0");
    return v;
}

static void test_failure_text(void **state) {
    (void)state;
    struct corral_err err;
    corral_err_set(&err, CORRAL_OVERLOADED, NULL, "queue full");
    strcpy(err.code, "queue_full");
    json_t *v = load(rpc_failure_text("\"x\"", &err));
    assert_string_equal(json_string_value(json_object_get(v, "id")), "x");
    json_t *e = json_object_get(v, "error");
    assert_int_equal(json_integer_value(json_object_get(e, "code")), RPC_OVERLOADED);
    assert_string_equal(json_string_value(json_object_get(e, "message")), "queue full");
    json_t *d = json_object_get(e, "data");
    assert_string_equal(json_string_value(json_object_get(d, "type")), "server_error");
    assert_string_equal(json_string_value(json_object_get(d, "code")), "queue_full");
    assert_true(json_is_null(json_object_get(d, "param")));
    assert_int_equal(json_integer_value(json_object_get(d, "status")), 503);
    assert_int_equal(json_integer_value(json_object_get(d, "retry_after_ms")), 1000);
    json_decref(v);

    corral_err_set(&err, CORRAL_INVALID_REQUEST, "messages", "missing 'messages'");
    v = load(rpc_failure_text(NULL, &err));
    assert_true(json_is_null(json_object_get(v, "id")));
    d = json_object_get(json_object_get(v, "error"), "data");
    assert_string_equal(json_string_value(json_object_get(d, "param")), "messages");
    assert_null(json_object_get(d, "retry_after_ms"));
    json_decref(v);
}

static void test_result_and_chunk(void **state) {
    (void)state;
    json_t *v = load(rpc_result_text("3", "{\"ok\":true}"));
    assert_int_equal(json_integer_value(json_object_get(v, "id")), 3);
    assert_true(json_is_true(json_object_get(json_object_get(v, "result"), "ok")));
    assert_null(json_object_get(v, "error"));
    json_decref(v);
    v = load(rpc_chunk_text("\"s\"", "{\"n\":1}"));
    assert_null(json_object_get(v, "id"));
    assert_string_equal(json_string_value(json_object_get(v, "method")), "stream.chunk");
    json_t *p = json_object_get(v, "params");
    assert_string_equal(json_string_value(json_object_get(p, "id")), "s");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(p, "chunk"), "n")), 1);
    json_decref(v);
    v = load(rpc_error_text(NULL, RPC_METHOD_NOT_FOUND, "no such method", NULL));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "error"), "code")), RPC_METHOD_NOT_FOUND);
    json_t *d = json_object_get(json_object_get(v, "error"), "data");
    assert_string_equal(json_string_value(json_object_get(d, "code")), "method_not_found");
    assert_string_equal(json_string_value(json_object_get(d, "type")), "invalid_request_error");
    assert_int_equal(json_integer_value(json_object_get(d, "status")), 404);
    json_decref(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request),       cmocka_unit_test(test_ids_echoed),
        cmocka_unit_test(test_notification),  cmocka_unit_test(test_parse_error),
        cmocka_unit_test(test_invalid_requests), cmocka_unit_test(test_batch),
        cmocka_unit_test(test_codes),         cmocka_unit_test(test_failure_text),
        cmocka_unit_test(test_result_and_chunk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
