/* test_openai_format.c - parsing the output constraints of a request:
 * response_format json_object and json_schema, and the llama-server
 * extension `grammar`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "api/openai.h"

#define CHAT(extra) "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]" extra "}"

static enum corral_status parse(const char *body, struct api_request *req, struct corral_err *err) {
    return api_request_parse(ENGINE_CHAT, body, strlen(body), req, err);
}

static void test_json_schema(void **state) {
    (void)state;
    struct api_request req;
    struct corral_err err;
    assert_int_equal(parse(CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\","
                                "\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":"
                                "\"integer\"}}}}}"),
                           &req, &err),
                     CORRAL_OK);
    assert_string_equal(req.in.sampling.json_schema,
                        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}");
    assert_false(req.in.sampling.json_object);
    assert_null(req.in.sampling.grammar);
    api_request_free(&req);
    /* no schema: any JSON object */
    assert_int_equal(parse(CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\"}}"),
                           &req, &err),
                     CORRAL_OK);
    assert_true(req.in.sampling.json_object);
    assert_null(req.in.sampling.json_schema);
    api_request_free(&req);
}

static void test_json_schema_errors(void **state) {
    (void)state;
    struct {
        const char *body, *param;
    } bad[] = {
        {CHAT(",\"response_format\":{\"type\":\"json_schema\"}"), "response_format.json_schema"},
        {CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":5}"), "response_format.json_schema"},
        {CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":[1]}}"),
         "response_format.json_schema.schema"},
        {CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":1}}"),
         "response_format.json_schema.name"},
        {CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"strict\":\"yes\"}}"),
         "response_format.json_schema.strict"},
        {CHAT(",\"response_format\":{\"type\":\"yaml\"}"), "response_format.type"},
        {CHAT(",\"grammar\":5"), "grammar"},
        {CHAT(",\"grammar\":\"root ::= \\\"a\\\"\",\"response_format\":{\"type\":\"json_object\"}"), "grammar"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct api_request req;
        struct corral_err err;
        enum corral_status st = parse(bad[i].body, &req, &err);
        if (st != CORRAL_INVALID_REQUEST) fail_msg("%s: status %d", bad[i].body, st);
        assert_string_equal(err.param, bad[i].param);
        assert_null(req.model); /* nothing left to free */
    }
}

static void test_grammar(void **state) {
    (void)state;
    struct api_request req;
    struct corral_err err;
    assert_int_equal(parse(CHAT(",\"grammar\":\"root ::= \\\"yes\\\" | \\\"no\\\"\""), &req, &err), CORRAL_OK);
    assert_string_equal(req.in.sampling.grammar, "root ::= \"yes\" | \"no\"");
    api_request_free(&req);
    assert_int_equal(parse(CHAT(",\"grammar\":\"\""), &req, &err), CORRAL_OK); /* empty: none */
    assert_null(req.in.sampling.grammar);
    api_request_free(&req);
}

static void test_logprobs(void **state) {
    (void)state;
    struct api_request req;
    struct corral_err err;
    assert_int_equal(parse(CHAT(",\"logprobs\":true,\"top_logprobs\":5"), &req, &err), CORRAL_OK);
    assert_true(req.in.sampling.logprobs);
    assert_int_equal(req.in.sampling.top_logprobs, 5);
    api_request_free(&req);
    assert_int_equal(parse(CHAT(""), &req, &err), CORRAL_OK);
    assert_false(req.in.sampling.logprobs);
    api_request_free(&req);
    const char *c = "{\"model\":\"m\",\"prompt\":\"p\",\"logprobs\":3}";
    assert_int_equal(api_request_parse(ENGINE_COMPLETION, c, strlen(c), &req, &err), CORRAL_OK);
    assert_true(req.in.sampling.logprobs);
    assert_int_equal(req.in.sampling.top_logprobs, 3);
    api_request_free(&req);
    c = "{\"model\":\"m\",\"prompt\":\"p\",\"logprobs\":\"x\"}";
    assert_int_equal(api_request_parse(ENGINE_COMPLETION, c, strlen(c), &req, &err), CORRAL_INVALID_REQUEST);
    assert_string_equal(err.param, "logprobs");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_schema),
        cmocka_unit_test(test_json_schema_errors),
        cmocka_unit_test(test_grammar),
        cmocka_unit_test(test_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
