/* test_error.c - the status table and struct corral_err helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/error.h"

static void test_table_mapping(void **state)
{
    (void)state;
    assert_int_equal(corral_status_http(CORRAL_OK), 200);
    assert_string_equal(corral_status_name(CORRAL_OK), "OK");
    assert_null(corral_status_openai_code(CORRAL_OK));

    assert_int_equal(corral_status_http(CORRAL_OVERLOADED), 503);
    assert_string_equal(corral_status_openai_type(CORRAL_OVERLOADED), "server_error");
    assert_string_equal(corral_status_openai_code(CORRAL_OVERLOADED), "server_overloaded");
    assert_string_equal(corral_status_name(CORRAL_OVERLOADED), "OVERLOADED");

    assert_int_equal(corral_status_http(CORRAL_INVALID_REQUEST), 400);
    assert_string_equal(corral_status_openai_type(CORRAL_INVALID_REQUEST), "invalid_request_error");
    assert_null(corral_status_openai_code(CORRAL_INVALID_REQUEST));

    assert_int_equal(corral_status_http(CORRAL_INVALID_JSON), 400);
    assert_string_equal(corral_status_openai_code(CORRAL_INVALID_JSON), "invalid_json");
    assert_int_equal(corral_status_http(CORRAL_CONTEXT_LENGTH), 400);
    assert_string_equal(corral_status_openai_code(CORRAL_CONTEXT_LENGTH),
                        "context_length_exceeded");
    assert_string_equal(corral_status_openai_code(CORRAL_UNSUPPORTED), "unsupported_value");
    assert_int_equal(corral_status_http(CORRAL_UNAUTHORIZED), 401);
    assert_string_equal(corral_status_openai_type(CORRAL_UNAUTHORIZED), "authentication_error");
    assert_string_equal(corral_status_openai_code(CORRAL_UNAUTHORIZED), "invalid_api_key");
    assert_int_equal(corral_status_http(CORRAL_FORBIDDEN), 403);
    assert_string_equal(corral_status_openai_type(CORRAL_FORBIDDEN), "permission_error");
    assert_int_equal(corral_status_http(CORRAL_MODEL_NOT_FOUND), 404);
    assert_string_equal(corral_status_openai_code(CORRAL_MODEL_NOT_FOUND), "model_not_found");
    assert_int_equal(corral_status_http(CORRAL_METHOD_NOT_ALLOWED), 405);
    assert_int_equal(corral_status_http(CORRAL_TOO_LARGE), 413);
    assert_int_equal(corral_status_http(CORRAL_UNAVAILABLE), 503);
    assert_int_equal(corral_status_http(CORRAL_TIMEOUT), 504);
    assert_int_equal(corral_status_http(CORRAL_CANCELLED), 499);
    assert_int_equal(corral_status_http(CORRAL_ENGINE), 500);
    assert_int_equal(corral_status_http(CORRAL_NOMEM), 500);
    assert_int_equal(corral_status_http(CORRAL_INTERNAL), 500);
    assert_null(corral_status_openai_code(CORRAL_INTERNAL));
    assert_string_equal(corral_status_name(CORRAL_CONFIG), "CONFIG");
    assert_string_equal(corral_status_openai_code(CORRAL_CONFIG), "invalid_config");
}

static void test_every_status_has_entries(void **state)
{
    (void)state;
    for (int s = 0; s < CORRAL__STATUS_COUNT; s++) {
        assert_non_null(corral_status_name((enum corral_status)s));
        assert_non_null(corral_status_openai_type((enum corral_status)s));
        int http = corral_status_http((enum corral_status)s);
        assert_true(http >= 200 && http <= 599);
    }
}

static void test_out_of_range_reads_as_internal(void **state)
{
    (void)state;
    enum corral_status bogus = (enum corral_status)(CORRAL__STATUS_COUNT + 7);
    assert_string_equal(corral_status_name(bogus), "INTERNAL");
    assert_int_equal(corral_status_http(bogus), 500);
    assert_string_equal(corral_status_openai_type(bogus), "server_error");
}

static void test_err_set_and_clear(void **state)
{
    (void)state;
    struct corral_err err;
    memset(&err, 0x5a, sizeof err);
    corral_err_clear(&err);
    assert_int_equal(err.status, CORRAL_OK);
    assert_string_equal(err.message, "");
    assert_string_equal(err.param, "");
    assert_string_equal(err.code, "");

    strcpy(err.code, "stale");
    enum corral_status st =
        corral_err_set(&err, CORRAL_INVALID_REQUEST, "temperature", "'%s' got %d", "temperature", 3);
    assert_int_equal(st, CORRAL_INVALID_REQUEST);
    assert_int_equal(err.status, CORRAL_INVALID_REQUEST);
    assert_string_equal(err.message, "'temperature' got 3");
    assert_string_equal(err.param, "temperature");
    assert_string_equal(err.code, ""); /* a new error drops an old code */

    st = corral_err_set(&err, CORRAL_ENGINE, NULL, "decode failed");
    assert_int_equal(st, CORRAL_ENGINE);
    assert_string_equal(err.param, "");
    assert_string_equal(err.message, "decode failed");

    corral_err_clear(&err);
    assert_int_equal(err.status, CORRAL_OK);
    assert_string_equal(err.message, "");
}

static void test_err_set_null_and_truncation(void **state)
{
    (void)state;
    assert_int_equal(corral_err_set(NULL, CORRAL_TIMEOUT, "x", "y"), CORRAL_TIMEOUT);
    corral_err_clear(NULL);

    struct corral_err err;
    char longp[200], longm[2000];
    memset(longp, 'p', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    memset(longm, 'm', sizeof longm - 1);
    longm[sizeof longm - 1] = '\0';
    corral_err_set(&err, CORRAL_INTERNAL, longp, "%s", longm);
    assert_int_equal(strlen(err.param), CORRAL_ERR_PARAM_MAX - 1);
    assert_int_equal(strlen(err.message), CORRAL_ERR_MSG_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_mapping),
        cmocka_unit_test(test_every_status_has_entries),
        cmocka_unit_test(test_out_of_range_reads_as_internal),
        cmocka_unit_test(test_err_set_and_clear),
        cmocka_unit_test(test_err_set_null_and_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
