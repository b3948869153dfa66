/* test_openai.c - OpenAI request parsing and response building.
 *
 * Parse errors are table-driven: each case names its body, the status, the
 * param and a substring the message must contain. Builders are checked by
 * parsing their output back with jansson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <math.h>

#include "api/openai.h"

/* ================================================================ helpers */

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define CHAT(extra) "{\"model\":\"m\"," MSGS extra "}"
#define COMPL(extra) "{\"model\":\"m\",\"prompt\":\"p\"" extra "}"
#define EMB(extra) "{\"model\":\"m\",\"input\":\"x\"" extra "}"

static enum corral_status parse(enum engine_kind kind, const char *body, struct api_request *req,
                                struct corral_err *err)
{
    return api_request_parse(kind, body, strlen(body), req, err);
}

/* Parse a body that must succeed. */
static void parse_ok(enum engine_kind kind, const char *body, struct api_request *req)
{
    struct corral_err err;
    enum corral_status st = parse(kind, body, req, &err);
    if (st != CORRAL_OK)
        print_error("unexpected failure for %s: %s (param %s)\n", body, err.message, err.param);
    assert_int_equal(st, CORRAL_OK);
    assert_int_equal(err.status, CORRAL_OK);
    assert_string_equal(err.message, "");
}

/* The output of a builder, parsed back; asserts it is valid compact JSON. */
static json_t *load_out(char *s)
{
    assert_non_null(s);
    json_error_t jerr;
    json_t *j = json_loads(s, JSON_ALLOW_NUL, &jerr);
    if (!j)
        print_error("builder produced invalid JSON: %s (%s)\n", s, jerr.text);
    assert_non_null(j);
    /* Compact: no whitespace outside strings. */
    bool in_str = false;
    for (const char *p = s; *p; p++) {
        if (in_str) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_str = false;
        } else if (*p == '"') {
            in_str = true;
        } else if (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') {
            print_error("not compact at offset %td: %s\n", p - s, s);
            fail();
        }
    }
    free(s);
    return j;
}

static const char *jstr(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static json_int_t jint(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void assert_jnull(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    assert_non_null(v); /* present */
    assert_true(json_is_null(v));
}

/* ================================================================ parse errors */

struct err_case {
    enum engine_kind kind;
    const char *body;
    enum corral_status status;
    const char *param;
    const char *msg; /* substring of the message */
};

static const struct err_case err_cases[] = {
    /* body */
    {ENGINE_CHAT, "{\"model\": \"m\",}", CORRAL_INVALID_JSON, "",
     "invalid JSON at line 1, column 15 (position 15): string or '}' expected near '}'"},
    {ENGINE_CHAT, "", CORRAL_INVALID_JSON, "", "invalid JSON at line 1, column 0 (position 0)"},
    {ENGINE_COMPLETION, "{\"model\":", CORRAL_INVALID_JSON, "", "invalid JSON at line 1"},
    {ENGINE_EMBEDDING, "nul", CORRAL_INVALID_JSON, "", "invalid token"},
    {ENGINE_CHAT, "{\"model\":\"m\",\n \"x\":\"\\u0000\"}", CORRAL_INVALID_JSON, "",
     "invalid JSON at line 2"},
    {ENGINE_CHAT, "[1,2]", CORRAL_INVALID_REQUEST, "", "request body must be a JSON object"},
    {ENGINE_CHAT, "\"text\"", CORRAL_INVALID_REQUEST, "", "request body must be a JSON object"},
    {ENGINE_EMBEDDING, "null", CORRAL_INVALID_REQUEST, "", "request body must be a JSON object"},
    {ENGINE_COMPLETION, "42", CORRAL_INVALID_REQUEST, "", "request body must be a JSON object"},

    /* model */
    {ENGINE_CHAT, "{" MSGS "}", CORRAL_INVALID_REQUEST, "model", "missing required field 'model'"},
    {ENGINE_CHAT, "{\"model\":null," MSGS "}", CORRAL_INVALID_REQUEST, "model",
     "missing required field 'model'"},
    {ENGINE_CHAT, "{\"model\":5," MSGS "}", CORRAL_INVALID_REQUEST, "model",
     "'model' must be a string"},
    {ENGINE_CHAT, "{\"model\":\"\"," MSGS "}", CORRAL_INVALID_REQUEST, "model",
     "'model' must not be empty"},
    {ENGINE_COMPLETION, "{\"prompt\":\"p\"}", CORRAL_INVALID_REQUEST, "model",
     "missing required field 'model'"},
    {ENGINE_EMBEDDING, "{\"model\":[],\"input\":\"x\"}", CORRAL_INVALID_REQUEST, "model",
     "'model' must be a string"},

    /* messages */
    {ENGINE_CHAT, "{\"model\":\"m\"}", CORRAL_INVALID_REQUEST, "messages",
     "missing required field 'messages'"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":{}}", CORRAL_INVALID_REQUEST, "messages",
     "'messages' must be an array"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[]}", CORRAL_INVALID_REQUEST, "messages",
     "'messages' must contain at least one message"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[5]}", CORRAL_INVALID_REQUEST, "messages[0]",
     "'messages[0]' must be an object"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}", CORRAL_INVALID_REQUEST,
     "messages[0].role", "missing required field 'messages[0].role'"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":5,\"content\":\"x\"}]}",
     CORRAL_INVALID_REQUEST, "messages[0].role", "'messages[0].role' must be a string"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}",
     CORRAL_INVALID_REQUEST, "messages[0].role",
     "'messages[0].role' must be one of system, user, assistant, developer, tool, got 'robot'"},
    {ENGINE_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\"}]}",
     CORRAL_INVALID_REQUEST, "messages[1].content",
     "missing required field 'messages[1].content'"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":null}]}",
     CORRAL_INVALID_REQUEST, "messages[0].content",
     "missing required field 'messages[0].content'"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"tool\"}]}", CORRAL_INVALID_REQUEST,
     "messages[0].content", "missing required field 'messages[0].content'"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}",
     CORRAL_INVALID_REQUEST, "messages[0].content",
     "'messages[0].content' must be a string or an array of content parts"},
    {ENGINE_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
     "\"text\":\"a\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y.png\"}}]}]}",
     CORRAL_UNSUPPORTED, "messages[0].content[1].type",
     "content part type 'image_url' is not supported"},
    {ENGINE_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\","
     "\"input_audio\":{}}]}]}",
     CORRAL_UNSUPPORTED, "messages[0].content[0].type", "'input_audio' is not supported"},
    {ENGINE_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"file\"}]}]}",
     CORRAL_UNSUPPORTED, "messages[0].content[0].type", "'file' is not supported"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
     CORRAL_INVALID_REQUEST, "messages[0].content[0].text",
     "missing required field 'messages[0].content[0].text'"},
    {ENGINE_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":5}]}]}",
     CORRAL_INVALID_REQUEST, "messages[0].content[0].text",
     "'messages[0].content[0].text' must be a string"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[\"x\"]}]}",
     CORRAL_INVALID_REQUEST, "messages[0].content[0]", "'messages[0].content[0]' must be an object"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"x\"}]}]}",
     CORRAL_INVALID_REQUEST, "messages[0].content[0].type",
     "missing required field 'messages[0].content[0].type'"},
    {ENGINE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":3}]}]}",
     CORRAL_INVALID_REQUEST, "messages[0].content[0].type",
     "'messages[0].content[0].type' must be a string"},

    /* prompt */
    {ENGINE_COMPLETION, "{\"model\":\"m\"}", CORRAL_INVALID_REQUEST, "prompt",
     "missing required field 'prompt'"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":null}", CORRAL_INVALID_REQUEST, "prompt",
     "missing required field 'prompt'"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":5}", CORRAL_INVALID_REQUEST, "prompt",
     "'prompt' must be a string"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[]}", CORRAL_INVALID_REQUEST, "prompt",
     "'prompt' must not be empty"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", CORRAL_UNSUPPORTED, "prompt",
     "multiple prompts in one request are not supported; send one request per prompt"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[[1,2],[3]]}", CORRAL_UNSUPPORTED, "prompt",
     "multiple prompts in one request are not supported"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[1,\"a\"]}", CORRAL_INVALID_REQUEST,
     "prompt[1]", "'prompt[1]' must be an integer token id"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[1,-1]}", CORRAL_INVALID_REQUEST, "prompt[1]",
     "'prompt[1]' must be a token id between 0 and 2147483647, got -1"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[2147483648]}", CORRAL_INVALID_REQUEST,
     "prompt[0]", "between 0 and 2147483647, got 2147483648"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[[1,2.5]]}", CORRAL_INVALID_REQUEST,
     "prompt[0][1]", "'prompt[0][1]' must be an integer token id"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[[]]}", CORRAL_INVALID_REQUEST, "prompt[0]",
     "'prompt[0]' must not be empty"},
    {ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[true]}", CORRAL_INVALID_REQUEST, "prompt[0]",
     "'prompt[0]' must be an integer token id"},
    {ENGINE_COMPLETION, COMPL(",\"echo\":true"), CORRAL_UNSUPPORTED, "echo",
     "'echo' is not supported"},
    {ENGINE_COMPLETION, COMPL(",\"echo\":\"yes\""), CORRAL_INVALID_REQUEST, "echo",
     "'echo' must be a boolean"},
    {ENGINE_COMPLETION, COMPL(",\"suffix\":\"tail\""), CORRAL_UNSUPPORTED, "suffix",
     "'suffix' (insertion) is not supported"},
    {ENGINE_COMPLETION, COMPL(",\"suffix\":5"), CORRAL_INVALID_REQUEST, "suffix",
     "'suffix' must be a string"},
    {ENGINE_COMPLETION, COMPL(",\"best_of\":2"), CORRAL_UNSUPPORTED, "best_of",
     "best_of > 1 is not supported"},
    {ENGINE_COMPLETION, COMPL(",\"best_of\":0"), CORRAL_INVALID_REQUEST, "best_of",
     "'best_of' must be at least 1, got 0"},
    {ENGINE_COMPLETION, COMPL(",\"logprobs\":21"), CORRAL_INVALID_REQUEST, "logprobs",
     "'logprobs' must be in 0..20, got 21"},
    {ENGINE_COMPLETION, COMPL(",\"temperature\":5"), CORRAL_INVALID_REQUEST, "temperature",
     "'temperature' must be between 0 and 2, got 5"},
    {ENGINE_COMPLETION, COMPL(",\"n\":17"), CORRAL_INVALID_REQUEST, "n", "'n' may be at most 16, got 17"},

    /* input */
    {ENGINE_EMBEDDING, "{\"model\":\"m\"}", CORRAL_INVALID_REQUEST, "input",
     "missing required field 'input'"},
    {ENGINE_EMBEDDING, "{\"model\":\"m\",\"input\":\"\"}", CORRAL_INVALID_REQUEST, "input",
     "'input' must not be empty"},
    {ENGINE_EMBEDDING, "{\"model\":\"m\",\"input\":[]}", CORRAL_INVALID_REQUEST, "input",
     "'input' must not be empty"},
    {ENGINE_EMBEDDING, "{\"model\":\"m\",\"input\":[\"a\",\"\"]}", CORRAL_INVALID_REQUEST,
     "input[1]", "'input[1]' must not be empty"},
    {ENGINE_EMBEDDING, "{\"model\":\"m\",\"input\":[1,2,3]}", CORRAL_UNSUPPORTED, "input",
     "token arrays as 'input' are not supported"},
    {ENGINE_EMBEDDING, "{\"model\":\"m\",\"input\":[[1,2],[3]]}", CORRAL_UNSUPPORTED, "input",
     "token arrays as 'input' are not supported"},
    {ENGINE_EMBEDDING, "{\"model\":\"m\",\"input\":5}", CORRAL_INVALID_REQUEST, "input",
     "'input' must be a string or an array of strings"},
    {ENGINE_EMBEDDING, "{\"model\":\"m\",\"input\":[\"a\",{}]}", CORRAL_INVALID_REQUEST,
     "input[1]", "'input[1]' must be a string"},
    {ENGINE_EMBEDDING, EMB(",\"encoding_format\":\"int8\""), CORRAL_INVALID_REQUEST,
     "encoding_format", "'encoding_format' must be 'float' or 'base64', got 'int8'"},
    {ENGINE_EMBEDDING, EMB(",\"encoding_format\":1"), CORRAL_INVALID_REQUEST, "encoding_format",
     "'encoding_format' must be a string"},
    {ENGINE_EMBEDDING, EMB(",\"dimensions\":256"), CORRAL_UNSUPPORTED, "dimensions",
     "'dimensions' is not supported"},
    {ENGINE_EMBEDDING, EMB(",\"user\":5"), CORRAL_INVALID_REQUEST, "user",
     "'user' must be a string"},

    /* sampling */
    {ENGINE_CHAT, CHAT(",\"max_tokens\":0"), CORRAL_INVALID_REQUEST, "max_tokens",
     "'max_tokens' must be at least 1, got 0"},
    {ENGINE_CHAT, CHAT(",\"max_tokens\":\"5\""), CORRAL_INVALID_REQUEST, "max_tokens",
     "'max_tokens' must be an integer"},
    {ENGINE_CHAT, CHAT(",\"max_tokens\":1.5"), CORRAL_INVALID_REQUEST, "max_tokens",
     "'max_tokens' must be an integer"},
    {ENGINE_CHAT, CHAT(",\"max_completion_tokens\":-3"), CORRAL_INVALID_REQUEST,
     "max_completion_tokens", "'max_completion_tokens' must be at least 1, got -3"},
    {ENGINE_CHAT, CHAT(",\"temperature\":3.5"), CORRAL_INVALID_REQUEST, "temperature",
     "'temperature' must be between 0 and 2, got 3.5"},
    {ENGINE_CHAT, CHAT(",\"temperature\":-0.1"), CORRAL_INVALID_REQUEST, "temperature",
     "'temperature' must be between 0 and 2, got -0.1"},
    {ENGINE_CHAT, CHAT(",\"temperature\":\"hot\""), CORRAL_INVALID_REQUEST, "temperature",
     "'temperature' must be a number"},
    {ENGINE_CHAT, CHAT(",\"top_p\":1.5"), CORRAL_INVALID_REQUEST, "top_p",
     "'top_p' must be between 0 and 1, got 1.5"},
    {ENGINE_CHAT, CHAT(",\"top_p\":true"), CORRAL_INVALID_REQUEST, "top_p",
     "'top_p' must be a number"},
    {ENGINE_CHAT, CHAT(",\"top_k\":-1"), CORRAL_INVALID_REQUEST, "top_k",
     "'top_k' must be at least 0, got -1"},
    {ENGINE_CHAT, CHAT(",\"top_k\":2.5"), CORRAL_INVALID_REQUEST, "top_k",
     "'top_k' must be an integer"},
    {ENGINE_CHAT, CHAT(",\"min_p\":2"), CORRAL_INVALID_REQUEST, "min_p",
     "'min_p' must be between 0 and 1, got 2"},
    {ENGINE_CHAT, CHAT(",\"seed\":\"x\""), CORRAL_INVALID_REQUEST, "seed",
     "'seed' must be an integer"},
    {ENGINE_CHAT, CHAT(",\"seed\":1.5"), CORRAL_INVALID_REQUEST, "seed", "'seed' must be an integer"},
    {ENGINE_CHAT, CHAT(",\"presence_penalty\":2.5"), CORRAL_INVALID_REQUEST, "presence_penalty",
     "'presence_penalty' must be between -2 and 2, got 2.5"},
    {ENGINE_CHAT, CHAT(",\"frequency_penalty\":-3"), CORRAL_INVALID_REQUEST, "frequency_penalty",
     "'frequency_penalty' must be between -2 and 2, got -3"},
    {ENGINE_CHAT, CHAT(",\"frequency_penalty\":[]"), CORRAL_INVALID_REQUEST, "frequency_penalty",
     "'frequency_penalty' must be a number"},
    {ENGINE_CHAT, CHAT(",\"stop\":5"), CORRAL_INVALID_REQUEST, "stop",
     "'stop' must be a string or an array of strings"},
    {ENGINE_CHAT, CHAT(",\"stop\":[\"a\",5]"), CORRAL_INVALID_REQUEST, "stop[1]",
     "'stop[1]' must be a string"},
    {ENGINE_CHAT, CHAT(",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]"), CORRAL_INVALID_REQUEST, "stop",
     "'stop' may contain at most 4 sequences, got 5"},
    {ENGINE_CHAT, CHAT(",\"n\":100"), CORRAL_INVALID_REQUEST, "n", "'n' may be at most 16, got 100"},
    {ENGINE_CHAT, CHAT(",\"n\":0"), CORRAL_INVALID_REQUEST, "n", "'n' must be at least 1, got 0"},
    {ENGINE_CHAT, CHAT(",\"n\":\"1\""), CORRAL_INVALID_REQUEST, "n", "'n' must be an integer"},
    {ENGINE_CHAT, CHAT(",\"logprobs\":true,\"top_logprobs\":21"), CORRAL_INVALID_REQUEST, "top_logprobs",
     "'top_logprobs' must be in 0..20, got 21"},
    {ENGINE_CHAT, CHAT(",\"logprobs\":\"x\""), CORRAL_INVALID_REQUEST, "logprobs",
     "'logprobs' must be a boolean"},
    {ENGINE_CHAT, CHAT(",\"top_logprobs\":2"), CORRAL_INVALID_REQUEST, "top_logprobs",
     "'top_logprobs' needs 'logprobs': true"},
    {ENGINE_CHAT, CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"\"}}]"),
     CORRAL_INVALID_REQUEST, "tools[0].function.name", "'tools[0].function.name' must be 1 to 64 letters"},
    {ENGINE_CHAT, CHAT(",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}"),
     CORRAL_INVALID_REQUEST, "tool_choice.function.name", "which is not in 'tools'"},
    {ENGINE_CHAT, CHAT(",\"functions\":[{\"name\":\"f\"}]"), CORRAL_UNSUPPORTED, "functions",
     "'functions' (OpenAI's deprecated function calling) is not supported"},
    {ENGINE_CHAT, CHAT(",\"function_call\":\"auto\""), CORRAL_UNSUPPORTED, "function_call",
     "'function_call' (OpenAI's deprecated function calling) is not supported"},
    {ENGINE_CHAT, CHAT(",\"response_format\":{\"type\":\"json_schema\"}"), CORRAL_INVALID_REQUEST,
     "response_format.json_schema", "missing required field 'response_format.json_schema'"},
    {ENGINE_CHAT, CHAT(",\"response_format\":{\"type\":\"xml\"}"), CORRAL_INVALID_REQUEST,
     "response_format.type", "response_format type 'xml' is not one of"},
    {ENGINE_CHAT, CHAT(",\"response_format\":\"json\""), CORRAL_INVALID_REQUEST, "response_format",
     "'response_format' must be an object"},
    {ENGINE_CHAT, CHAT(",\"response_format\":{}"), CORRAL_INVALID_REQUEST, "response_format.type",
     "missing required field 'response_format.type'"},
    {ENGINE_CHAT, CHAT(",\"response_format\":{\"type\":1}"), CORRAL_INVALID_REQUEST,
     "response_format.type", "'response_format.type' must be a string"},
    {ENGINE_CHAT, CHAT(",\"stream\":\"yes\""), CORRAL_INVALID_REQUEST, "stream",
     "'stream' must be a boolean"},
    {ENGINE_CHAT, CHAT(",\"stream\":true,\"stream_options\":5"), CORRAL_INVALID_REQUEST,
     "stream_options", "'stream_options' must be an object"},
    {ENGINE_CHAT, CHAT(",\"stream\":true,\"stream_options\":{\"include_usage\":\"y\"}"),
     CORRAL_INVALID_REQUEST, "stream_options.include_usage",
     "'stream_options.include_usage' must be a boolean"},
    {ENGINE_CHAT, CHAT(",\"user\":5"), CORRAL_INVALID_REQUEST, "user", "'user' must be a string"},
    {ENGINE_CHAT, CHAT(",\"ignore_eos\":1"), CORRAL_INVALID_REQUEST, "ignore_eos",
     "'ignore_eos' must be a boolean"},
    {ENGINE_CHAT, CHAT(",\"keep_alive\":\"soon\""), CORRAL_INVALID_REQUEST, "keep_alive",
     "'keep_alive' must be a duration"},
    {ENGINE_CHAT, CHAT(",\"keep_alive\":-5"), CORRAL_INVALID_REQUEST, "keep_alive",
     "'keep_alive' must be -1 (forever), 0 or a number of seconds"},
    {ENGINE_CHAT, CHAT(",\"keep_alive\":[1]"), CORRAL_INVALID_REQUEST, "keep_alive",
     "'keep_alive' must be a number of seconds or a duration string"},
};

static void test_parse_errors(void **state)
{
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
        const struct err_case *c = &err_cases[i];
        struct api_request req;
        struct corral_err err;
        memset(&req, 0x5a, sizeof req); /* must come back zeroed */
        enum corral_status st = parse(c->kind, c->body, &req, &err);
        bool ok = st == c->status && err.status == c->status &&
                  strcmp(err.param, c->param) == 0 && strstr(err.message, c->msg) != NULL;
        if (!ok) {
            print_error("case %zu %s\n  got status %s param '%s' message '%s'\n"
                        "  want status %s param '%s' message containing '%s'\n",
                        i, c->body, corral_status_name(st), err.param, err.message,
                        corral_status_name(c->status), c->param, c->msg);
            failures++;
        }
        /* *out is left empty on failure. */
        assert_null(req.model);
        assert_null(req.in.messages);
        assert_int_equal(req.in.n_messages, 0);
        assert_null(req.in.prompt);
        assert_null(req.in.prompt_tokens);
        assert_null(req.in.inputs);
        assert_int_equal(req.in.sampling.n_stop, 0);
        assert_null(req.user);
        api_request_free(&req);
    }
    assert_int_equal(failures, 0);
}

static void test_parse_error_json_position(void **state)
{
    (void)state;
    struct api_request req;
    struct corral_err err;
    const char *body = "{\"model\": \"m\",}";
    assert_int_equal(parse(ENGINE_CHAT, body, &req, &err), CORRAL_INVALID_JSON);
    assert_string_equal(err.message, "invalid JSON at line 1, column 15 (position 15): "
                                     "string or '}' expected near '}'");
    assert_string_equal(err.param, "");
}

static void test_parse_too_many_inputs(void **state)
{
    (void)state;
    size_t n = API_MAX_EMBED_INPUTS + 1;
    size_t cap = 64 + n * 4;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t len = (size_t)snprintf(body, cap, "{\"model\":\"m\",\"input\":[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s\"a\"", i ? "," : "");
    len += (size_t)snprintf(body + len, cap - len, "]}");

    struct api_request req;
    struct corral_err err;
    assert_int_equal(api_request_parse(ENGINE_EMBEDDING, body, len, &req, &err),
                     CORRAL_INVALID_REQUEST);
    assert_string_equal(err.param, "input");
    assert_string_equal(err.message, "'input' may contain at most 2048 items, got 2049");
    assert_null(req.in.inputs);

    /* Exactly the limit is fine. */
    len = (size_t)snprintf(body, cap, "{\"model\":\"m\",\"input\":[");
    for (size_t i = 0; i < API_MAX_EMBED_INPUTS; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s\"a\"", i ? "," : "");
    len += (size_t)snprintf(body + len, cap - len, "]}");
    assert_int_equal(api_request_parse(ENGINE_EMBEDDING, body, len, &req, &err), CORRAL_OK);
    assert_int_equal(req.in.n_inputs, API_MAX_EMBED_INPUTS);
    assert_string_equal(req.in.inputs[API_MAX_EMBED_INPUTS - 1], "a");
    api_request_free(&req);
    free(body);
}

/* A failure after earlier fields were allocated frees them (ASan checks). */
static void test_parse_error_after_allocations(void **state)
{
    (void)state;
    struct api_request req;
    struct corral_err err;
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"b\"}]}],"
        "\"stop\":[\"x\",\"y\"],\"user\":\"u\",\"tools\":[{\"type\":\"function\"}]}";
    assert_int_equal(parse(ENGINE_CHAT, body, &req, &err), CORRAL_INVALID_REQUEST);
    assert_string_equal(err.param, "tools[0].function");
    assert_null(req.model);
    assert_null(req.in.messages);
    assert_int_equal(req.in.sampling.n_stop, 0);

    body = "{\"model\":\"m\",\"input\":[\"a\",\"b\",7]}";
    assert_int_equal(parse(ENGINE_EMBEDDING, body, &req, &err), CORRAL_UNSUPPORTED);
    assert_null(req.in.inputs);
    assert_int_equal(req.in.n_inputs, 0);

    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"b\"},{\"type\":\"image_url\"}]}]}";
    assert_int_equal(parse(ENGINE_CHAT, body, &req, &err), CORRAL_UNSUPPORTED);
    assert_string_equal(err.param, "messages[1].content[1].type");
    assert_null(req.in.messages);
}

/* ================================================================ valid requests */

static void test_parse_chat_full(void **state)
{
    (void)state;
    const char *body =
        "{\"model\":\"llama-3\",\"messages\":["
        "{\"role\":\"developer\",\"content\":\"be brief\"},"
        "{\"role\":\"system\",\"content\":\"sys\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"part one\"},"
        "{\"type\":\"text\",\"text\":\"part two\"}],\"name\":\"bob\"},"
        "{\"role\":\"assistant\",\"content\":null},"
        "{\"role\":\"assistant\"},"
        "{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":\"c1\"},"
        "{\"role\":\"user\",\"content\":\"caf\\u00e9 \\ud83d\\ude00\"}],"
        "\"max_tokens\":10,\"max_completion_tokens\":20,\"temperature\":0.5,\"top_p\":0.9,"
        "\"top_k\":40,\"min_p\":0.05,\"seed\":-1,\"presence_penalty\":-1.5,"
        "\"frequency_penalty\":2,\"stop\":[\"END\",\"\",\"\\n\\n\",\"###\"],\"n\":1,"
        "\"logprobs\":false,\"top_logprobs\":null,\"tools\":[],\"tool_choice\":\"none\","
        "\"functions\":null,\"function_call\":\"none\","
        "\"response_format\":{\"type\":\"json_object\"},\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"user\":\"alice\","
        "\"metadata\":{\"x\":1},\"some_future_field\":[1,2],\"ignore_eos\":true,\"keep_alive\":\"10m\"}";
    struct api_request req;
    parse_ok(ENGINE_CHAT, body, &req);

    assert_int_equal(req.in.kind, ENGINE_CHAT);
    assert_string_equal(req.model, "llama-3");
    assert_int_equal(req.in.n_messages, 7);
    assert_string_equal(req.in.messages[0].role, "system"); /* developer maps to system */
    assert_string_equal(req.in.messages[0].content, "be brief");
    assert_string_equal(req.in.messages[1].role, "system");
    assert_string_equal(req.in.messages[1].content, "sys");
    assert_string_equal(req.in.messages[2].role, "user");
    assert_string_equal(req.in.messages[2].content, "part one\npart two");
    assert_string_equal(req.in.messages[3].role, "assistant");
    assert_string_equal(req.in.messages[3].content, "");
    assert_string_equal(req.in.messages[4].role, "assistant");
    assert_string_equal(req.in.messages[4].content, "");
    assert_string_equal(req.in.messages[5].role, "tool");
    assert_string_equal(req.in.messages[5].content, "42");
    assert_string_equal(req.in.messages[6].content, "caf\xc3\xa9 \xf0\x9f\x98\x80");

    assert_int_equal(req.in.sampling.max_tokens, 20); /* max_completion_tokens wins */
    assert_float_equal(req.in.sampling.temperature, 0.5f, 0);
    assert_float_equal(req.in.sampling.top_p, 0.9f, 0);
    assert_int_equal(req.in.sampling.top_k, 40);
    assert_float_equal(req.in.sampling.min_p, 0.05f, 0);
    assert_true(req.in.sampling.has_seed);
    assert_true(req.in.sampling.seed == UINT64_MAX);
    assert_float_equal(req.in.sampling.presence_penalty, -1.5f, 0);
    assert_float_equal(req.in.sampling.frequency_penalty, 2.0f, 0);
    assert_int_equal(req.in.sampling.n_stop, 3);
    assert_string_equal(req.in.sampling.stop[0], "END");
    assert_string_equal(req.in.sampling.stop[1], "\n\n");
    assert_string_equal(req.in.sampling.stop[2], "###");
    assert_null(req.in.sampling.stop[3]);
    assert_true(req.in.sampling.json_object);
    assert_true(req.in.sampling.ignore_eos);
    assert_true(req.in.keep_alive_ms == 600000);
    assert_true(req.stream);
    assert_true(req.include_usage);
    assert_string_equal(req.user, "alice");
    assert_null(req.in.prompt);
    assert_null(req.in.inputs);

    api_request_free(&req);
    assert_null(req.model);
    api_request_free(&req); /* freeing twice is harmless: it was zeroed */
}

static void test_parse_chat_defaults(void **state)
{
    (void)state;
    struct api_request req;
    parse_ok(ENGINE_CHAT, CHAT(""), &req);
    assert_string_equal(req.model, "m");
    assert_int_equal(req.in.n_messages, 1);
    assert_string_equal(req.in.messages[0].role, "user");
    assert_string_equal(req.in.messages[0].content, "hi");
    assert_int_equal(req.in.sampling.max_tokens, -1);
    assert_float_equal(req.in.sampling.temperature, 1.0f, 0);
    assert_float_equal(req.in.sampling.top_p, 1.0f, 0);
    assert_int_equal(req.in.sampling.top_k, 0);
    assert_float_equal(req.in.sampling.min_p, 0.0f, 0);
    assert_float_equal(req.in.sampling.presence_penalty, 0.0f, 0);
    assert_float_equal(req.in.sampling.frequency_penalty, 0.0f, 0);
    assert_false(req.in.sampling.has_seed);
    assert_int_equal(req.in.sampling.n_stop, 0);
    assert_false(req.in.sampling.json_object);
    assert_false(req.in.sampling.ignore_eos);
    assert_true(req.in.keep_alive_ms == ENGINE_KEEP_ALIVE_UNSET);
    assert_false(req.stream);
    assert_false(req.include_usage);
    assert_null(req.user);
    api_request_free(&req);
}

static void test_parse_nulls_mean_not_given(void **state)
{
    (void)state;
    struct api_request req;
    parse_ok(ENGINE_CHAT,
             CHAT(",\"max_tokens\":null,\"max_completion_tokens\":null,\"temperature\":null,"
                  "\"top_p\":null,\"top_k\":null,\"min_p\":null,\"seed\":null,"
                  "\"presence_penalty\":null,\"frequency_penalty\":null,\"stop\":null,\"n\":null,"
                  "\"logprobs\":null,\"tools\":null,\"tool_choice\":null,"
                  "\"response_format\":null,\"stream\":null,\"stream_options\":null,"
                  "\"user\":null"),
             &req);
    assert_int_equal(req.in.sampling.max_tokens, -1);
    assert_float_equal(req.in.sampling.temperature, 1.0f, 0);
    assert_false(req.in.sampling.has_seed);
    assert_int_equal(req.in.sampling.n_stop, 0);
    assert_false(req.stream);
    assert_null(req.user);
    api_request_free(&req);
}

static void test_parse_sampling_edges(void **state)
{
    (void)state;
    struct api_request req;
    /* Integers where floats are expected; bounds are inclusive. */
    parse_ok(ENGINE_CHAT,
             CHAT(",\"temperature\":2,\"top_p\":0,\"min_p\":1,\"presence_penalty\":-2,"
                  "\"frequency_penalty\":2,\"max_tokens\":7,\"seed\":12345,\"top_k\":0"),
             &req);
    assert_float_equal(req.in.sampling.temperature, 2.0f, 0);
    assert_float_equal(req.in.sampling.top_p, 0.0f, 0);
    assert_float_equal(req.in.sampling.min_p, 1.0f, 0);
    assert_float_equal(req.in.sampling.presence_penalty, -2.0f, 0);
    assert_int_equal(req.in.sampling.max_tokens, 7);
    assert_true(req.in.sampling.has_seed);
    assert_int_equal(req.in.sampling.seed, 12345);
    api_request_free(&req);

    /* 1e0 is a JSON real, so not an integer. */
    struct corral_err err;
    assert_int_equal(parse(ENGINE_CHAT, CHAT(",\"top_k\":1e0"), &req, &err), CORRAL_INVALID_REQUEST);
    assert_string_equal(err.param, "top_k");
    /* temperature 0 = greedy; huge counts saturate at INT32_MAX. */
    parse_ok(ENGINE_CHAT, CHAT(",\"temperature\":0,\"max_tokens\":99999999999"), &req);
    assert_float_equal(req.in.sampling.temperature, 0.0f, 0);
    assert_int_equal(req.in.sampling.max_tokens, INT32_MAX);
    api_request_free(&req);

    /* max_tokens alone, seed at the int64 extremes. */
    parse_ok(ENGINE_CHAT, CHAT(",\"max_tokens\":5,\"seed\":9223372036854775807"), &req);
    assert_int_equal(req.in.sampling.max_tokens, 5);
    assert_true(req.in.sampling.seed == (uint64_t)INT64_MAX);
    api_request_free(&req);
    parse_ok(ENGINE_CHAT, CHAT(",\"seed\":-9223372036854775808,\"seed\":0"), &req);
    assert_true(req.in.sampling.has_seed);
    assert_int_equal(req.in.sampling.seed, 0); /* duplicate keys: the last wins */
    api_request_free(&req);

    /* stop as a lone string; an empty one is skipped; all-empty array. */
    parse_ok(ENGINE_CHAT, CHAT(",\"stop\":\"\\nUser:\""), &req);
    assert_int_equal(req.in.sampling.n_stop, 1);
    assert_string_equal(req.in.sampling.stop[0], "\nUser:");
    api_request_free(&req);
    parse_ok(ENGINE_CHAT, CHAT(",\"stop\":\"\""), &req);
    assert_int_equal(req.in.sampling.n_stop, 0);
    api_request_free(&req);
    parse_ok(ENGINE_CHAT, CHAT(",\"stop\":[\"\",\"\"]"), &req);
    assert_int_equal(req.in.sampling.n_stop, 0);
    api_request_free(&req);
    parse_ok(ENGINE_CHAT, CHAT(",\"stop\":[\"a\",\"b\",\"c\",\"d\"]"), &req);
    assert_int_equal(req.in.sampling.n_stop, 4);
    assert_string_equal(req.in.sampling.stop[3], "d");
    api_request_free(&req);

    /* response_format text; logprobs false. */
    parse_ok(ENGINE_CHAT, CHAT(",\"response_format\":{\"type\":\"text\"},\"logprobs\":false"), &req);
    assert_false(req.in.sampling.json_object);
    api_request_free(&req);
}

static void test_parse_stream_options(void **state)
{
    (void)state;
    struct api_request req;
    /* Without stream, stream_options is ignored, even a malformed one. */
    parse_ok(ENGINE_CHAT, CHAT(",\"stream_options\":{\"include_usage\":true}"), &req);
    assert_false(req.stream);
    assert_false(req.include_usage);
    api_request_free(&req);
    parse_ok(ENGINE_CHAT, CHAT(",\"stream\":false,\"stream_options\":5"), &req);
    assert_false(req.stream);
    api_request_free(&req);
    parse_ok(ENGINE_CHAT, CHAT(",\"stream\":true,\"stream_options\":{\"include_usage\":false}"), &req);
    assert_true(req.stream);
    assert_false(req.include_usage);
    api_request_free(&req);
    parse_ok(ENGINE_CHAT, CHAT(",\"stream\":true,\"stream_options\":{}"), &req);
    assert_true(req.stream);
    assert_false(req.include_usage);
    api_request_free(&req);
}

static void test_parse_completion(void **state)
{
    (void)state;
    struct api_request req;
    parse_ok(ENGINE_COMPLETION,
             "{\"model\":\"gpt\",\"prompt\":\"Once upon\",\"echo\":false,\"suffix\":\"\","
             "\"best_of\":1,\"logprobs\":null,\"max_tokens\":16,\"temperature\":0.7,"
             "\"top_p\":0.5,\"top_k\":3,\"min_p\":0.1,\"seed\":7,\"presence_penalty\":0.5,"
             "\"frequency_penalty\":-0.5,\"stop\":\"END\",\"n\":1,\"stream\":true,"
             "\"stream_options\":{\"include_usage\":true},\"user\":\"bob\","
             "\"response_format\":{\"type\":\"json_object\"}}",
             &req);
    assert_int_equal(req.in.kind, ENGINE_COMPLETION);
    assert_string_equal(req.model, "gpt");
    assert_string_equal(req.in.prompt, "Once upon");
    assert_null(req.in.prompt_tokens);
    assert_int_equal(req.in.n_prompt_tokens, 0);
    assert_int_equal(req.in.sampling.max_tokens, 16);
    assert_float_equal(req.in.sampling.temperature, 0.7f, 0);
    assert_float_equal(req.in.sampling.top_p, 0.5f, 0);
    assert_int_equal(req.in.sampling.top_k, 3);
    assert_float_equal(req.in.sampling.min_p, 0.1f, 0);
    assert_int_equal(req.in.sampling.seed, 7);
    assert_float_equal(req.in.sampling.presence_penalty, 0.5f, 0);
    assert_float_equal(req.in.sampling.frequency_penalty, -0.5f, 0);
    assert_int_equal(req.in.sampling.n_stop, 1);
    assert_string_equal(req.in.sampling.stop[0], "END");
    assert_true(req.in.sampling.json_object);
    assert_true(req.stream);
    assert_true(req.include_usage);
    assert_string_equal(req.user, "bob");
    assert_null(req.in.messages);
    api_request_free(&req);

    parse_ok(ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"only one\"],\"suffix\":null}", &req);
    assert_string_equal(req.in.prompt, "only one");
    api_request_free(&req);

    parse_ok(ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"\"}", &req);
    assert_string_equal(req.in.prompt, "");
    api_request_free(&req);

    parse_ok(ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[1,0,2147483647]}", &req);
    assert_null(req.in.prompt);
    assert_int_equal(req.in.n_prompt_tokens, 3);
    assert_int_equal(req.in.prompt_tokens[0], 1);
    assert_int_equal(req.in.prompt_tokens[1], 0);
    assert_int_equal(req.in.prompt_tokens[2], INT32_MAX);
    api_request_free(&req);

    parse_ok(ENGINE_COMPLETION, "{\"model\":\"m\",\"prompt\":[[4,5]],\"logprobs\":false}", &req);
    assert_int_equal(req.in.n_prompt_tokens, 2);
    assert_int_equal(req.in.prompt_tokens[0], 4);
    assert_int_equal(req.in.prompt_tokens[1], 5);
    api_request_free(&req);
}

static void test_parse_embedding(void **state)
{
    (void)state;
    struct api_request req;
    parse_ok(ENGINE_EMBEDDING, "{\"model\":\"e5\",\"input\":\"hello world\",\"user\":\"u1\","
                            "\"encoding_format\":\"float\",\"dimensions\":null}",
             &req);
    assert_int_equal(req.in.kind, ENGINE_EMBEDDING);
    assert_string_equal(req.model, "e5");
    assert_int_equal(req.in.n_inputs, 1);
    assert_string_equal(req.in.inputs[0], "hello world");
    assert_false(req.encoding_base64);
    assert_string_equal(req.user, "u1");
    /* Sampling fields keep their defaults for embeddings. */
    assert_int_equal(req.in.sampling.max_tokens, -1);
    api_request_free(&req);

    parse_ok(ENGINE_EMBEDDING,
             "{\"model\":\"e5\",\"input\":[\"a\",\"b c\",\"\\u00fc\"],\"encoding_format\":\"base64\","
             "\"temperature\":99}",
             &req); /* sampling fields are not looked at for embeddings */
    assert_int_equal(req.in.n_inputs, 3);
    assert_string_equal(req.in.inputs[0], "a");
    assert_string_equal(req.in.inputs[1], "b c");
    assert_string_equal(req.in.inputs[2], "\xc3\xbc");
    assert_true(req.encoding_base64);
    assert_null(req.user);
    api_request_free(&req);
}

static void test_parse_body_len_and_null(void **state)
{
    (void)state;
    struct api_request req;
    struct corral_err err;
    /* Only len bytes are read: trailing garbage past len is not seen. */
    const char *body = CHAT("") "GARBAGE";
    size_t len = strlen(body) - strlen("GARBAGE");
    assert_int_equal(api_request_parse(ENGINE_CHAT, body, len, &req, &err), CORRAL_OK);
    assert_string_equal(req.model, "m");
    api_request_free(&req);
    /* ...but garbage inside len is. */
    assert_int_equal(api_request_parse(ENGINE_CHAT, body, strlen(body), &req, &err),
                     CORRAL_INVALID_JSON);
    assert_int_equal(api_request_parse(ENGINE_CHAT, NULL, 0, &req, &err), CORRAL_INVALID_JSON);
    /* err may be NULL. */
    assert_int_equal(api_request_parse(ENGINE_CHAT, "{}", 2, &req, NULL), CORRAL_INVALID_REQUEST);
    struct api_request zero;
    memset(&zero, 0, sizeof zero);
    api_request_free(&zero);
    api_request_free(NULL);
}

/* ================================================================ builders */

static void test_completion_json_chat(void **state)
{
    (void)state;
    struct engine_usage u = {.prompt_tokens = 12, .completion_tokens = 5, .cached_tokens = 8};
    const char *text = "Hello \"world\"\n\tend";
    json_t *j = load_out(api_completion_json(ENGINE_CHAT, "chatcmpl-abc", 1700000000, "llama",
                                             text, strlen(text), "stop", &u));
    assert_string_equal(jstr(j, "id"), "chatcmpl-abc");
    assert_string_equal(jstr(j, "object"), "chat.completion");
    assert_int_equal(jint(j, "created"), 1700000000);
    assert_string_equal(jstr(j, "model"), "llama");
    assert_string_equal(jstr(j, "system_fingerprint"), "corral");
    json_t *choices = json_object_get(j, "choices");
    assert_int_equal(json_array_size(choices), 1);
    json_t *c = json_array_get(choices, 0);
    assert_int_equal(jint(c, "index"), 0);
    assert_string_equal(jstr(c, "finish_reason"), "stop");
    assert_jnull(c, "logprobs");
    json_t *msg = json_object_get(c, "message");
    assert_string_equal(jstr(msg, "role"), "assistant");
    assert_string_equal(jstr(msg, "content"), text);
    json_t *usage = json_object_get(j, "usage");
    assert_int_equal(jint(usage, "prompt_tokens"), 12);
    assert_int_equal(jint(usage, "completion_tokens"), 5);
    assert_int_equal(jint(usage, "total_tokens"), 17);
    assert_int_equal(jint(json_object_get(usage, "prompt_tokens_details"), "cached_tokens"), 8);
    json_decref(j);
}

static void test_completion_json_text(void **state)
{
    (void)state;
    struct engine_usage u = {.prompt_tokens = 3, .completion_tokens = 16, .cached_tokens = 0};
    /* text_len counts: an embedded NUL is kept, bytes past len are not. */
    const char text[] = "ab\0cdXYZ";
    json_t *j = load_out(api_completion_json(ENGINE_COMPLETION, "cmpl-1", 5, "m", text, 5,
                                             "length", &u));
    assert_string_equal(jstr(j, "object"), "text_completion");
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_equal(jint(c, "index"), 0);
    json_t *t = json_object_get(c, "text");
    assert_int_equal(json_string_length(t), 5);
    assert_memory_equal(json_string_value(t), "ab\0cd", 5);
    assert_null(json_object_get(c, "message"));
    assert_string_equal(jstr(c, "finish_reason"), "length");
    assert_jnull(c, "logprobs");
    assert_int_equal(jint(json_object_get(j, "usage"), "total_tokens"), 19);
    json_decref(j);

    /* NULL finish_reason -> null; NULL usage -> zeros; NULL text -> "". */
    j = load_out(api_completion_json(ENGINE_COMPLETION, "cmpl-2", 0, "m", NULL, 0, NULL, NULL));
    c = json_array_get(json_object_get(j, "choices"), 0);
    assert_jnull(c, "finish_reason");
    assert_string_equal(jstr(c, "text"), "");
    assert_int_equal(jint(json_object_get(j, "usage"), "prompt_tokens"), 0);
    assert_int_equal(jint(json_object_get(j, "usage"), "total_tokens"), 0);
    json_decref(j);
}

/* Build a chat completion around raw bytes and return its content. */
static char *roundtrip_text(const char *bytes, size_t n)
{
    json_t *j = load_out(api_completion_json(ENGINE_CHAT, "id", 0, "m", bytes, n, "stop", NULL));
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    char *s = strdup(json_string_value(json_object_get(msg, "content")));
    json_decref(j);
    return s;
}

#define FFFD "\xef\xbf\xbd"

static void test_invalid_utf8_replaced(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } cases[] = {
        {"ok\xff", 3, "ok" FFFD},
        {"a\xe2\x82" "b", 4, "a" FFFD "b"},           /* truncated 3-byte: one U+FFFD */
        {"end\xe2\x82", 5, "end" FFFD},               /* cut at the end */
        {"\xc0\xaf", 2, FFFD FFFD},                   /* overlong */
        {"\xed\xa0\x80", 3, FFFD FFFD FFFD},          /* surrogate */
        {"\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD}, /* above U+10FFFF */
        {"\x80\x80x", 3, FFFD FFFD "x"},              /* stray continuations */
        {"\xe2\x82\xac \xf0\x9f\x98\x80", 8, "\xe2\x82\xac \xf0\x9f\x98\x80"}, /* valid kept */
        {"\xf0\x9f\x98", 3, FFFD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = roundtrip_text(cases[i].in, cases[i].n);
        if (strcmp(got, cases[i].want) != 0)
            print_error("utf8 case %zu\n", i);
        assert_string_equal(got, cases[i].want);
        free(got);
    }

    /* Chunks and the embeddings model name are cleaned the same way. */
    json_t *j = load_out(api_chunk_json(ENGINE_CHAT, "id", 0, "m\xfe", false, "x\xc3", 2, NULL,
                                        false, NULL, false));
    json_t *delta = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta");
    assert_string_equal(jstr(delta, "content"), "x" FFFD);
    assert_string_equal(jstr(j, "model"), "m" FFFD);
    json_decref(j);
}

static void test_chunk_json_chat(void **state)
{
    (void)state;
    /* First chunk: role only. */
    json_t *j = load_out(
        api_chunk_json(ENGINE_CHAT, "chatcmpl-x", 42, "m", true, NULL, 0, NULL, false, NULL, false));
    assert_string_equal(jstr(j, "object"), "chat.completion.chunk");
    assert_string_equal(jstr(j, "id"), "chatcmpl-x");
    assert_int_equal(jint(j, "created"), 42);
    assert_string_equal(jstr(j, "model"), "m");
    assert_null(json_object_get(j, "usage"));
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_equal(jint(c, "index"), 0);
    assert_jnull(c, "finish_reason");
    assert_jnull(c, "logprobs");
    json_t *delta = json_object_get(c, "delta");
    assert_int_equal(json_object_size(delta), 1);
    assert_string_equal(jstr(delta, "role"), "assistant");
    json_decref(j);

    /* Content chunk with usage: null (include_usage on). */
    j = load_out(api_chunk_json(ENGINE_CHAT, "chatcmpl-x", 42, "m", false, "Hel", 3, NULL, true,
                                NULL, false));
    assert_jnull(j, "usage");
    delta = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta");
    assert_int_equal(json_object_size(delta), 1);
    assert_string_equal(jstr(delta, "content"), "Hel");
    json_decref(j);

    /* Role and content together; empty content is still content. */
    j = load_out(
        api_chunk_json(ENGINE_CHAT, "id", 0, "m", true, "", 0, NULL, false, NULL, false));
    delta = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta");
    assert_int_equal(json_object_size(delta), 2);
    assert_string_equal(jstr(delta, "content"), "");
    json_decref(j);

    /* Final chunk: empty delta, finish_reason. */
    j = load_out(
        api_chunk_json(ENGINE_CHAT, "id", 0, "m", false, NULL, 0, "length", false, NULL, false));
    c = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_equal(json_object_size(json_object_get(c, "delta")), 0);
    assert_string_equal(jstr(c, "finish_reason"), "length");
    json_decref(j);

    /* Usage chunk: choices [] and a usage object (wins over usage null). */
    struct engine_usage u = {.prompt_tokens = 4, .completion_tokens = 6, .cached_tokens = 2};
    j = load_out(api_chunk_json(ENGINE_CHAT, "id", 0, "m", false, NULL, 0, NULL, true, &u, true));
    json_t *choices = json_object_get(j, "choices");
    assert_true(json_is_array(choices));
    assert_int_equal(json_array_size(choices), 0);
    json_t *usage = json_object_get(j, "usage");
    assert_int_equal(jint(usage, "prompt_tokens"), 4);
    assert_int_equal(jint(usage, "completion_tokens"), 6);
    assert_int_equal(jint(usage, "total_tokens"), 10);
    assert_int_equal(jint(json_object_get(usage, "prompt_tokens_details"), "cached_tokens"), 2);
    json_decref(j);
}

static void test_chunk_json_completion(void **state)
{
    (void)state;
    json_t *j = load_out(api_chunk_json(ENGINE_COMPLETION, "cmpl-9", 7, "m", true, " there", 6,
                                        NULL, false, NULL, false));
    assert_string_equal(jstr(j, "object"), "text_completion");
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_equal(jint(c, "index"), 0);
    assert_string_equal(jstr(c, "text"), " there");
    assert_null(json_object_get(c, "delta"));
    assert_jnull(c, "finish_reason");
    assert_jnull(c, "logprobs");
    json_decref(j);

    j = load_out(
        api_chunk_json(ENGINE_COMPLETION, "cmpl-9", 7, "m", false, NULL, 0, "stop", true, NULL, false));
    c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(jstr(c, "text"), "");
    assert_string_equal(jstr(c, "finish_reason"), "stop");
    assert_jnull(j, "usage");
    json_decref(j);
}

static void test_embeddings_json_float(void **state)
{
    (void)state;
    const float v0[] = {0.5f, -1.25f, 0.1f, 1.0f};
    const float v1[] = {3.4028235e38f, -1e-20f, NAN, 0.0f};
    const float *const vecs[] = {v0, v1};
    json_t *j = load_out(api_embeddings_json("e\"5", vecs, 2, 4, false, 9));
    assert_string_equal(jstr(j, "object"), "list");
    assert_string_equal(jstr(j, "model"), "e\"5");
    json_t *usage = json_object_get(j, "usage");
    assert_int_equal(jint(usage, "prompt_tokens"), 9);
    assert_int_equal(jint(usage, "total_tokens"), 9);
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *d = json_array_get(data, i);
        assert_string_equal(jstr(d, "object"), "embedding");
        assert_int_equal(jint(d, "index"), (json_int_t)i);
        json_t *e = json_object_get(d, "embedding");
        assert_int_equal(json_array_size(e), 4);
        for (size_t k = 0; k < 4; k++) {
            float want = isfinite(vecs[i][k]) ? vecs[i][k] : 0.0f; /* NaN is written as 0 */
            float got = (float)json_number_value(json_array_get(e, k));
            assert_true(got == want); /* exact float round trip */
        }
    }
    json_decref(j);

    j = load_out(api_embeddings_json("m", NULL, 0, 0, false, 0));
    assert_int_equal(json_array_size(json_object_get(j, "data")), 0);
    json_decref(j);
}

static void test_embeddings_json_base64(void **state)
{
    (void)state;
    const float v0[] = {1.0f, -2.0f};
    const float v1[] = {0.5f};
    const float v2[] = {1.0f, 2.0f, 3.0f};
    const float v3[] = {0.25f, -0.5f, 1.5f, 100.0f, -3.0f};
    const float *const vecs2[] = {v0};
    json_t *j = load_out(api_embeddings_json("m", vecs2, 1, 2, true, 1));
    json_t *d = json_array_get(json_object_get(j, "data"), 0);
    assert_string_equal(jstr(d, "embedding"), "AACAPwAAAMA=");
    json_decref(j);

    const float *const vecs1[] = {v1};
    j = load_out(api_embeddings_json("m", vecs1, 1, 1, true, 1));
    assert_string_equal(jstr(json_array_get(json_object_get(j, "data"), 0), "embedding"),
                        "AAAAPw==");
    json_decref(j);

    const float *const vecs3[] = {v2, v3};
    j = load_out(api_embeddings_json("m", vecs3, 1, 3, true, 1));
    assert_string_equal(jstr(json_array_get(json_object_get(j, "data"), 0), "embedding"),
                        "AACAPwAAAEAAAEBA");
    json_decref(j);
    const float *const vecs4[] = {v3};
    j = load_out(api_embeddings_json("m", vecs4, 1, 5, true, 1));
    assert_string_equal(jstr(json_array_get(json_object_get(j, "data"), 0), "embedding"),
                        "AACAPgAAAL8AAMA/AADIQgAAQMA=");
    json_decref(j);
}

static void test_error_json(void **state)
{
    (void)state;
    struct corral_err err;
    corral_err_set(&err, CORRAL_INVALID_REQUEST, "temperature",
                   "'temperature' must be between 0 and 2, got 3.5");
    json_t *j = load_out(api_error_json(&err));
    assert_int_equal(json_object_size(j), 1);
    json_t *e = json_object_get(j, "error");
    assert_string_equal(jstr(e, "message"), "'temperature' must be between 0 and 2, got 3.5");
    assert_string_equal(jstr(e, "type"), "invalid_request_error");
    assert_string_equal(jstr(e, "param"), "temperature");
    assert_jnull(e, "code");
    json_decref(j);

    corral_err_set(&err, CORRAL_OVERLOADED, NULL, "queue \"full\"");
    j = load_out(api_error_json(&err));
    e = json_object_get(j, "error");
    assert_string_equal(jstr(e, "message"), "queue \"full\"");
    assert_string_equal(jstr(e, "type"), "server_error");
    assert_jnull(e, "param");
    assert_string_equal(jstr(e, "code"), "server_overloaded");
    json_decref(j);

    corral_err_set(&err, CORRAL_INVALID_REQUEST, "messages", "too long");
    strcpy(err.code, "context_length_exceeded"); /* the override wins */
    j = load_out(api_error_json(&err));
    e = json_object_get(j, "error");
    assert_string_equal(jstr(e, "code"), "context_length_exceeded");
    json_decref(j);

    /* A message with invalid UTF-8 (it may quote user bytes) stays valid JSON. */
    corral_err_set(&err, CORRAL_MODEL_NOT_FOUND, "model", "model 'x\xff' not found");
    j = load_out(api_error_json(&err));
    e = json_object_get(j, "error");
    assert_string_equal(jstr(e, "message"), "model 'x" FFFD "' not found");
    assert_string_equal(jstr(e, "code"), "model_not_found");
    json_decref(j);
}

static void test_models_json(void **state)
{
    (void)state;
    const char *ids[] = {"llama", "qwen"};
    const int64_t created[] = {100, 200};
    const char *status[] = {"loaded", NULL};
    json_t *j = load_out(api_models_json(ids, created, status, 2));
    assert_string_equal(jstr(j, "object"), "list");
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 2);
    json_t *m0 = json_array_get(data, 0);
    assert_string_equal(jstr(m0, "id"), "llama");
    assert_string_equal(jstr(m0, "object"), "model");
    assert_int_equal(jint(m0, "created"), 100);
    assert_string_equal(jstr(m0, "owned_by"), "corral");
    assert_string_equal(jstr(m0, "status"), "loaded");
    json_t *m1 = json_array_get(data, 1);
    assert_string_equal(jstr(m1, "id"), "qwen");
    assert_int_equal(jint(m1, "created"), 200);
    assert_null(json_object_get(m1, "status"));
    json_decref(j);

    j = load_out(api_models_json(ids, created, NULL, 1));
    assert_int_equal(json_array_size(json_object_get(j, "data")), 1);
    assert_null(json_object_get(json_array_get(json_object_get(j, "data"), 0), "status"));
    json_decref(j);

    j = load_out(api_models_json(NULL, NULL, NULL, 0));
    assert_int_equal(json_array_size(json_object_get(j, "data")), 0);
    json_decref(j);
}

/* ================================================================ ids */

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_make_id(void **state)
{
    (void)state;
    enum { N = 1000 };
    char *ids[N];
    for (int i = 0; i < N; i++) {
        char out[64];
        memset(out, 'Z', sizeof out);
        api_make_id("chatcmpl-", out, sizeof out);
        assert_int_equal(strlen(out), 9 + 24);
        assert_memory_equal(out, "chatcmpl-", 9);
        for (int k = 9; k < 33; k++)
            assert_true(is_alnum(out[k]));
        ids[i] = strdup(out);
    }
    qsort(ids, N, sizeof ids[0], cmp_str);
    for (int i = 1; i < N; i++)
        assert_true(strcmp(ids[i - 1], ids[i]) != 0);
    for (int i = 0; i < N; i++)
        free(ids[i]);

    /* Exactly the documented size, and a short buffer is cut safely. */
    char exact[5 + 25];
    api_make_id("cmpl-", exact, sizeof exact);
    assert_int_equal(strlen(exact), 29);
    char small[8];
    api_make_id("cmpl-", small, sizeof small);
    assert_int_equal(strlen(small), 7);
    assert_memory_equal(small, "cmpl-", 5);
    char tiny[3];
    api_make_id("cmpl-", tiny, sizeof tiny);
    assert_string_equal(tiny, "cm");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_error_json_position),
        cmocka_unit_test(test_parse_too_many_inputs),
        cmocka_unit_test(test_parse_error_after_allocations),
        cmocka_unit_test(test_parse_chat_full),
        cmocka_unit_test(test_parse_chat_defaults),
        cmocka_unit_test(test_parse_nulls_mean_not_given),
        cmocka_unit_test(test_parse_sampling_edges),
        cmocka_unit_test(test_parse_stream_options),
        cmocka_unit_test(test_parse_completion),
        cmocka_unit_test(test_parse_embedding),
        cmocka_unit_test(test_parse_body_len_and_null),
        cmocka_unit_test(test_completion_json_chat),
        cmocka_unit_test(test_completion_json_text),
        cmocka_unit_test(test_invalid_utf8_replaced),
        cmocka_unit_test(test_chunk_json_chat),
        cmocka_unit_test(test_chunk_json_completion),
        cmocka_unit_test(test_embeddings_json_float),
        cmocka_unit_test(test_embeddings_json_base64),
        cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_models_json),
        cmocka_unit_test(test_make_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
