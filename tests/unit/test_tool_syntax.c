/* test_tool_syntax.c - the bridge's tool-call syntax on a real template
 * (tests/templates/hermes-tools.jinja) and a real vocabulary (Qwen2): the
 * grammar each tool_choice gets (for required and a named function the
 * call comes first: a grammar sampler allows no text before it), and the
 * parser that turns output back into content and calls, streamed as
 * OpenAI's deltas (a call's id and name once, then its arguments).
 *
 * Needs CORRAL_TEST_QWEN_MODEL and CORRAL_TEMPLATES (the templates folder). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat_bridge.h"
#include "engine/llama_engine.h"
#include "engine/llama_internal.h"

static const char TOOLS[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"add\",\"description\":\"Add\",\"parameters\":{\"type\":"
    "\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},\"required\":[\"a\","
    "\"b\"]}}},{\"type\":\"function\",\"function\":{\"name\":\"lamp\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"on\":{\"type\":\"boolean\"}},\"required\":[\"on\"]}}}]";

static struct llama_engine *eng;
static struct chat_bridge *bridge;

static int setup(void **state) {
    (void)state;
    const char *path = getenv("CORRAL_TEST_QWEN_MODEL"), *dir = getenv("CORRAL_TEMPLATES");
    if (!path || !dir) fail_msg("CORRAL_TEST_QWEN_MODEL and CORRAL_TEMPLATES must be set");
    struct llama_engine_params p = {.id = "t", .path = path, .parallel = 1, .ctx = 512, .batch = 512, .threads = 1,
                                    .flash_attn = 0, .queue_size = 1, .out_cap = 1 << 16};
    struct corral_err err;
    eng = (struct llama_engine *)llama_engine_open(&p, &err);
    if (!eng) fail_msg("cannot open %s: %s", path, err.message);
    char file[4096];
    snprintf(file, sizeof file, "%s/hermes-tools.jinja", dir);
    FILE *f = fopen(file, "rb");
    if (!f) fail_msg("cannot read %s", file);
    static char src[1 << 16];
    size_t n = fread(src, 1, sizeof src - 1, f);
    fclose(f);
    src[n] = '\0';
    char why[512];
    if (!(bridge = chat_bridge_new(eng->model, src, why, sizeof why))) fail_msg("template: %s", why);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    chat_bridge_free(bridge);
    engine_free(&eng->base);
    return 0;
}

static void render(enum chat_tool_choice choice, const char *name, int parallel, struct chat_bridge_out *out) {
    struct chat_bridge_msg m = {.role = "user", .content = "switch it on"};
    struct chat_bridge_opts o = {.tools_json = TOOLS, .tool_choice = choice, .tool_name = name, .parallel = parallel,
                                 .reasoning = true};
    char why[512];
    if (chat_bridge_render(bridge, &m, 1, &o, out, why, sizeof why) != 0) fail_msg("render: %s", why);
}

/* The first token of text. */
static int32_t first_token(const char *text) {
    int32_t t[64];
    int32_t k = llama_tokenize(eng->vocab, text, (int32_t)strlen(text), t, 64, false, false);
    assert_true(k > 0);
    return t[0];
}

/* Whether grammar g lets the output begin with token t. */
static bool allows_first(const struct chat_bridge_out *o, int32_t t) {
    struct llama_sampler *s =
        o->lazy ? llama_sampler_init_grammar_lazy_patterns(eng->vocab, o->grammar, "root", (const char **)o->triggers,
                                                           o->n_triggers, NULL, 0)
                : llama_sampler_init_grammar(eng->vocab, o->grammar, "root");
    assert_non_null(s);
    llama_token_data d = {t, 1.0f, 0.0f};
    llama_token_data_array a = {&d, 1, -1, false};
    llama_sampler_apply(s, &a);
    llama_sampler_free(s);
    return isfinite(d.logit);
}

static void test_required_allows_no_text_before_the_call(void **state) {
    (void)state;
    struct chat_bridge_out o;
    render(CHAT_TOOLS_REQUIRED, NULL, 1, &o);
    assert_non_null(o.grammar);
    assert_false(o.lazy);
    assert_non_null(o.syntax);
    assert_non_null(strstr(o.prompt, "\"name\": \"add\"") ? o.prompt : strstr(o.prompt, "\"add\""));
    assert_false(allows_first(&o, first_token("Hello")));
    assert_false(allows_first(&o, first_token(" ")));
    assert_true(allows_first(&o, first_token("<tool_call>")));
    assert_non_null(strstr(o.grammar, "tool-lamp"));
    chat_bridge_out_free(&o);
}

static void test_named_grammar_knows_one_function(void **state) {
    (void)state;
    struct chat_bridge_out o;
    render(CHAT_TOOLS_NAMED, "lamp", 0, &o);
    assert_non_null(o.grammar);
    assert_non_null(strstr(o.grammar, "tool-lamp"));
    assert_null(strstr(o.grammar, "tool-add"));
    assert_non_null(strstr(o.prompt, "\"add\"")); /* the prompt still lists every tool */
    assert_false(allows_first(&o, first_token("Sure")));
    /* parallel_tool_calls false: one call section */
    assert_non_null(strstr(o.grammar, "forced-calls ::= tool-call\n"));
    chat_bridge_out_free(&o);
}

static void test_auto_is_lazy_and_none_has_no_syntax(void **state) {
    (void)state;
    struct chat_bridge_out o;
    render(CHAT_TOOLS_AUTO, NULL, 1, &o);
    assert_true(o.lazy);
    assert_true(o.n_triggers >= 1);
    assert_non_null(strstr(o.triggers[0], "tool_call"));
    assert_true(allows_first(&o, first_token("Hello"))); /* free text until the trigger */
    chat_bridge_out_free(&o);
    render(CHAT_TOOLS_NONE, NULL, 1, &o);
    assert_null(o.grammar);
    assert_null(o.syntax);
    assert_non_null(strstr(o.prompt, "\"lamp\"")); /* described, not callable */
    chat_bridge_out_free(&o);
}

static void test_parse_streams_content_then_the_call(void **state) {
    (void)state;
    struct chat_bridge_out o;
    render(CHAT_TOOLS_AUTO, NULL, 1, &o);
    struct chat_parse *p = chat_parse_new(o.syntax);
    assert_non_null(p);
    const char *out = "Let me add.\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 22}}\n</tool_call>";
    size_t n = strlen(out);
    char content[256] = "", args[256] = "", id[64] = "";
    int heads = 0, pieces = 0;
    for (size_t i = 1; i <= n; i++) {
        char *d = chat_parse_delta(p, out, i, i == n);
        if (!d) continue;
        json_t *j = json_loads(d, 0, NULL);
        free(d);
        assert_non_null(j);
        const char *c = json_string_value(json_object_get(j, "content"));
        if (c) strncat(content, c, sizeof content - strlen(content) - 1);
        size_t k;
        json_t *tc;
        json_array_foreach(json_object_get(j, "tool_calls"), k, tc) {
            assert_int_equal(json_integer_value(json_object_get(tc, "index")), 0);
            json_t *fn = json_object_get(tc, "function");
            if (json_object_get(tc, "id")) {
                heads++;
                snprintf(id, sizeof id, "%s", json_string_value(json_object_get(tc, "id")));
                assert_string_equal(json_string_value(json_object_get(fn, "name")), "add");
                assert_string_equal(json_string_value(json_object_get(tc, "type")), "function");
            } else {
                assert_null(json_object_get(fn, "name"));
                assert_int_equal(heads, 1); /* arguments only after the head */
            }
            strncat(args, json_string_value(json_object_get(fn, "arguments")), sizeof args - strlen(args) - 1);
            pieces++;
        }
        json_decref(j);
    }
    assert_int_equal(heads, 1);
    assert_true(pieces > 3);
    assert_int_equal(strncmp(content, "Let me add.", 11), 0);
    assert_null(strstr(content, "tool_call")); /* the call's text never went out as content */
    assert_int_equal(chat_parse_calls(p), 1);
    char *m = chat_parse_message(p);
    json_t *msg = json_loads(m, 0, NULL);
    free(m);
    json_t *call = json_array_get(json_object_get(msg, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(call, "id")), id);
    const char *whole = json_string_value(json_object_get(json_object_get(call, "function"), "arguments"));
    assert_string_equal(whole, args); /* the pieces add up to the call */
    json_t *a = json_loads(whole, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(a, "b")), 22);
    json_decref(a);
    json_decref(msg);
    chat_parse_free(p);
    chat_bridge_out_free(&o);
}

static void test_parse_plain_text_is_content(void **state) {
    (void)state;
    struct chat_bridge_out o;
    render(CHAT_TOOLS_AUTO, NULL, 1, &o);
    struct chat_parse *p = chat_parse_new(o.syntax);
    free(chat_parse_delta(p, "just words", 10, true));
    assert_int_equal(chat_parse_calls(p), 0);
    char *m = chat_parse_message(p);
    json_t *msg = json_loads(m, 0, NULL);
    free(m);
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "just words");
    assert_null(json_object_get(msg, "tool_calls"));
    json_decref(msg);
    chat_parse_free(p);
    chat_bridge_out_free(&o);
}

static void test_bad_tools_are_an_error(void **state) {
    (void)state;
    struct chat_bridge_msg m = {.role = "user", .content = "x"};
    struct chat_bridge_opts o = {.tools_json = "[{\"type\":\"function\"}]", .tool_choice = CHAT_TOOLS_AUTO,
                                 .parallel = -1};
    struct chat_bridge_out out;
    char why[512] = "";
    assert_int_equal(chat_bridge_render(bridge, &m, 1, &o, &out, why, sizeof why), -1);
    assert_true(strlen(why) > 0);
    assert_null(out.prompt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_required_allows_no_text_before_the_call),
        cmocka_unit_test(test_named_grammar_knows_one_function),
        cmocka_unit_test(test_auto_is_lazy_and_none_has_no_syntax),
        cmocka_unit_test(test_parse_streams_content_then_the_call),
        cmocka_unit_test(test_parse_plain_text_is_content),
        cmocka_unit_test(test_bad_tools_are_an_error),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
