/* test_openai_tools.c - parsing function calling in a chat request: tools
 * and tool_choice normalised for the template layer, the history's tool
 * calls (arguments always a string) and tool results, and every fault
 * named by its field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "api/openai.h"

#define TOOL(name) "{\"type\":\"function\",\"function\":{\"name\":\"" name "\",\"parameters\":{\"type\":\"object\"}}}"
#define BODY(msgs, extra) "{\"model\":\"m\",\"messages\":" msgs extra "}"
#define USER "[{\"role\":\"user\",\"content\":\"hi\"}]"

static enum corral_status parse(enum engine_kind k, const char *body, struct api_request *req,
                                struct corral_err *err) {
    return api_request_parse(k, body, strlen(body), req, err);
}

static void test_tools_and_choice(void **state) {
    (void)state;
    struct api_request req;
    struct corral_err err;
    assert_int_equal(parse(ENGINE_CHAT,
                           BODY(USER, ",\"tools\":[" TOOL("add") "," TOOL("lamp") "],\"tool_choice\":{\"type\":"
                                      "\"function\",\"function\":{\"name\":\"lamp\"}},\"parallel_tool_calls\":false"),
                           &req, &err),
                     CORRAL_OK);
    assert_string_equal(req.in.tools.json,
                        "[{\"type\":\"function\",\"function\":{\"name\":\"add\",\"parameters\":{\"type\":\"object\"}}},"
                        "{\"type\":\"function\",\"function\":{\"name\":\"lamp\",\"parameters\":{\"type\":\"object\"}}}]");
    assert_int_equal(req.in.tools.choice, ENGINE_TOOLS_NAMED);
    assert_string_equal(req.in.tools.name, "lamp");
    assert_int_equal(req.in.tools.parallel, 0);
    api_request_free(&req);

    assert_int_equal(parse(ENGINE_CHAT, BODY(USER, ",\"tools\":[" TOOL("a") "],\"tool_choice\":\"required\""), &req,
                           &err),
                     CORRAL_OK);
    assert_int_equal(req.in.tools.choice, ENGINE_TOOLS_REQUIRED);
    assert_int_equal(req.in.tools.parallel, -1); /* not given: the template's default */
    api_request_free(&req);

    /* an empty list is no tools; "none" without tools is fine */
    assert_int_equal(parse(ENGINE_CHAT, BODY(USER, ",\"tools\":[],\"tool_choice\":\"none\""), &req, &err), CORRAL_OK);
    assert_null(req.in.tools.json);
    api_request_free(&req);
}

static void test_history_calls_and_results(void **state) {
    (void)state;
    struct api_request req;
    struct corral_err err;
    const char *body = BODY(
        "[{\"role\":\"user\",\"content\":\"2+3?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":"
        "{\"name\":\"add\",\"arguments\":{\"a\":2}}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"name\":\"add\",\"content\":\"5\"}]",
        "");
    assert_int_equal(parse(ENGINE_CHAT, body, &req, &err), CORRAL_OK);
    assert_int_equal(req.in.n_messages, 3);
    struct engine_message *a = &req.in.messages[1], *t = &req.in.messages[2];
    assert_string_equal(a->content, "");
    assert_string_equal(a->tool_calls,
                        "[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"add\",\"arguments\":"
                        "\"{\\\"a\\\":2}\"}}]");
    assert_string_equal(t->role, "tool");
    assert_string_equal(t->tool_call_id, "c1");
    assert_string_equal(t->name, "add");
    assert_string_equal(t->content, "5");
    api_request_free(&req);
}

static void test_faults_name_their_field(void **state) {
    (void)state;
    struct {
        enum engine_kind kind;
        const char *body, *param;
    } bad[] = {
        {ENGINE_CHAT, BODY(USER, ",\"tools\":{}"), "tools"},
        {ENGINE_CHAT, BODY(USER, ",\"tools\":[5]"), "tools[0]"},
        {ENGINE_CHAT, BODY(USER, ",\"tools\":[{\"type\":\"code\"}]"), "tools[0].type"},
        {ENGINE_CHAT, BODY(USER, ",\"tools\":[{\"type\":\"function\"}]"), "tools[0].function"},
        {ENGINE_CHAT, BODY(USER, ",\"tools\":[{\"type\":\"function\",\"function\":{}}]"), "tools[0].function.name"},
        {ENGINE_CHAT, BODY(USER, ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]"),
         "tools[0].function.name"},
        {ENGINE_CHAT, BODY(USER, ",\"tools\":[" TOOL("a") "," TOOL("a") "]"), "tools"},
        {ENGINE_CHAT, BODY(USER, ",\"tools\":[" TOOL("a") "],\"tool_choice\":\"always\""), "tool_choice"},
        {ENGINE_CHAT, BODY(USER, ",\"tools\":[" TOOL("a") "],\"tool_choice\":{\"type\":\"function\",\"function\":"
                                 "{\"name\":\"b\"}}"),
         "tool_choice.function.name"},
        {ENGINE_CHAT, BODY(USER, ",\"tool_choice\":\"required\""), "tool_choice"},
        {ENGINE_CHAT, BODY(USER, ",\"tools\":[" TOOL("a") "],\"grammar\":\"root ::= \\\"x\\\"\""), "tools"},
        {ENGINE_CHAT, BODY(USER, ",\"functions\":[{\"name\":\"f\"}]"), "functions"},
        {ENGINE_CHAT, BODY(USER, ",\"parallel_tool_calls\":1"), "parallel_tool_calls"},
        {ENGINE_CHAT, BODY("[{\"role\":\"tool\",\"content\":\"5\"}]", ""), "messages[0].tool_call_id"},
        {ENGINE_CHAT, BODY("[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]", ""), "messages[0].tool_calls"},
        {ENGINE_CHAT, BODY("[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":5}}]}]",
                           ""),
         "messages[0].tool_calls[0].function.arguments"},
        {ENGINE_CHAT, BODY("[{\"role\":\"user\",\"content\":\"x\",\"name\":5}]", ""), "messages[0].name"},
        {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"tools\":[" TOOL("a") "]}", "tools"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct api_request req;
        struct corral_err err;
        enum corral_status st = parse(bad[i].kind, bad[i].body, &req, &err);
        if (st == CORRAL_OK) fail_msg("accepted: %s", bad[i].body);
        assert_true(st == CORRAL_INVALID_REQUEST || st == CORRAL_UNSUPPORTED);
        if (strcmp(err.param, bad[i].param) != 0)
            fail_msg("%s: param '%s', want '%s' (%s)", bad[i].body, err.param, bad[i].param, err.message);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tools_and_choice),
        cmocka_unit_test(test_history_calls_and_results),
        cmocka_unit_test(test_faults_name_their_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
