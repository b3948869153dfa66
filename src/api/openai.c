/* openai.c - OpenAI request parsing (openai_reply.c builds the responses).
 *
 * DESIGN: parsing walks the jansson tree once, field by field, and stops at
 * the first fault with an OpenAI-style error that names the field (its path
 * in err->param, e.g. "messages[1].content", and again in the message). A
 * JSON null for an optional field means "not given". Unknown fields are
 * ignored, as OpenAI does. On failure everything allocated so far is freed
 * and *out is left zeroed.
 */
#include "api/openai.h"

#include "config.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/openai_internal.h"
#include "util/buf.h"


static enum corral_status parse_model(const json_t *root, struct api_request *out,
                                      struct corral_err *err)
{
    json_t *v = api__opt_get(root, "model");
    if (!v)
        return api__missing(err, "model");
    if (!json_is_string(v))
        return api__bad_type(err, "model", "a string");
    if (json_string_length(v) == 0)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "model", "'model' must not be empty");
    out->model = api__dup_str(json_string_value(v), json_string_length(v), err);
    return out->model ? CORRAL_OK : CORRAL_NOMEM;
}

/* ================================================================ chat */

static const char *const chat_roles[] = {"system", "user", "assistant", "developer", "tool"};

/* Join the text parts of a content array with "\n" into *text. */
static enum corral_status parse_content_parts(const json_t *arr, const char *param, char **text,
                                              struct corral_err *err)
{
    enum corral_status st = CORRAL_OK;
    char path[PARAM_MAX], field[PARAM_MAX];
    struct buf b;
    buf_init(&b, 0);
    size_t i;
    json_t *part;
    json_array_foreach(arr, i, part) {
        api__path_fmt(path, sizeof path, "%s[%zu]", param, i);
        if (!json_is_object(part)) {
            st = api__bad_type(err, path, "an object");
            goto fail;
        }
        api__path_fmt(field, sizeof field, "%s.type", path);
        json_t *type = api__opt_get(part, "type");
        if (!type) {
            st = api__missing(err, field);
            goto fail;
        }
        if (!json_is_string(type)) {
            st = api__bad_type(err, field, "a string");
            goto fail;
        }
        if (strcmp(json_string_value(type), "text") != 0) {
            st = corral_err_set(err, CORRAL_UNSUPPORTED, field,
                                "content part type '%.64s' is not supported (in '%s'); only "
                                "'text' parts are",
                                json_string_value(type), path);
            goto fail;
        }
        api__path_fmt(field, sizeof field, "%s.text", path);
        json_t *t = api__opt_get(part, "text");
        if (!t) {
            st = api__missing(err, field);
            goto fail;
        }
        if (!json_is_string(t)) {
            st = api__bad_type(err, field, "a string");
            goto fail;
        }
        if ((i > 0 && buf_append(&b, "\n", 1) < 0) ||
            buf_append(&b, json_string_value(t), json_string_length(t)) < 0) {
            st = api__no_memory(err);
            goto fail;
        }
    }
    *text = buf_steal(&b, NULL); /* "" for an empty array */
    return *text ? CORRAL_OK : api__no_memory(err);
fail:
    buf_free(&b);
    return st;
}

static enum corral_status parse_message(const json_t *m, size_t idx, struct engine_message *msg,
                                       struct corral_err *err)
{
    char path[PARAM_MAX];
    api__path_fmt(path, sizeof path, "messages[%zu]", idx);
    if (!json_is_object(m))
        return api__bad_type(err, path, "an object");

    api__path_fmt(path, sizeof path, "messages[%zu].role", idx);
    json_t *role;
    enum corral_status rst = api__required(m, "role", JSON_STRING, path, &role, err);
    if (rst != CORRAL_OK)
        return rst;
    const char *r = json_string_value(role);
    const char *canon = NULL;
    for (size_t k = 0; k < sizeof chat_roles / sizeof chat_roles[0]; k++)
        if (strcmp(r, chat_roles[k]) == 0)
            canon = chat_roles[k];
    if (!canon)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, path,
                              "'%s' must be one of system, user, assistant, developer, tool, "
                              "got '%.64s'",
                              path, r);
    if (strcmp(canon, "developer") == 0)
        canon = "system";

    api__path_fmt(path, sizeof path, "messages[%zu].content", idx);
    json_t *content = api__opt_get(m, "content");
    char *text = NULL;
    enum corral_status st = CORRAL_OK;
    if (!content) {
        if (strcmp(canon, "assistant") != 0)
            return api__missing(err, path);
        text = api__dup_str("", 0, err);
        if (!text)
            return CORRAL_NOMEM;
    } else if (json_is_string(content)) {
        text = api__dup_str(json_string_value(content), json_string_length(content), err);
        if (!text)
            return CORRAL_NOMEM;
    } else if (json_is_array(content)) {
        st = parse_content_parts(content, path, &text, err);
        if (st != CORRAL_OK)
            return st;
    } else {
        return api__bad_type(err, path, "a string or an array of content parts");
    }

    msg->role = api__dup_str(canon, strlen(canon), err);
    if (!msg->role) {
        free(text);
        return CORRAL_NOMEM;
    }
    msg->content = text;
    st = api__parse_message_tools(m, idx, msg, err);
    if (st != CORRAL_OK) { /* this message is not counted yet: free it here */
        free(msg->role);
        free(msg->content);
        free(msg->name);
        free(msg->tool_calls);
        free(msg->tool_call_id);
        memset(msg, 0, sizeof *msg);
    }
    return st;
}

static enum corral_status parse_messages(const json_t *root, struct api_request *out,
                                         struct corral_err *err)
{
    json_t *arr = api__opt_get(root, "messages");
    if (!arr)
        return api__missing(err, "messages");
    if (!json_is_array(arr))
        return api__bad_type(err, "messages", "an array");
    size_t n = json_array_size(arr);
    if (n == 0)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "messages",
                              "'messages' must contain at least one message");
    out->in.messages = calloc(n, sizeof *out->in.messages);
    if (!out->in.messages)
        return api__no_memory(err);
    for (size_t i = 0; i < n; i++) {
        enum corral_status st = parse_message(json_array_get(arr, i), i, &out->in.messages[i], err);
        if (st != CORRAL_OK)
            return st; /* the caller frees what was filled */
        out->in.n_messages = i + 1;
    }
    return CORRAL_OK;
}

/* ================================================================ completion */

static enum corral_status parse_tokens(const json_t *arr, const char *param,
                                       struct api_request *out, struct corral_err *err)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, param, "'%s' must not be empty", param);
    int32_t *toks = malloc(n * sizeof *toks);
    if (!toks)
        return api__no_memory(err);
    char path[PARAM_MAX];
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(arr, i);
        api__path_fmt(path, sizeof path, "%s[%zu]", param, i);
        if (!json_is_integer(t)) {
            free(toks);
            return api__bad_type(err, path, "an integer token id");
        }
        json_int_t v = json_integer_value(t);
        if (v < 0 || v > INT32_MAX) {
            free(toks);
            return corral_err_set(err, CORRAL_INVALID_REQUEST, path,
                                  "'%s' must be a token id between 0 and 2147483647, "
                                  "got %" JSON_INTEGER_FORMAT,
                                  path, v);
        }
        toks[i] = (int32_t)v;
    }
    out->in.prompt_tokens = toks;
    out->in.n_prompt_tokens = n;
    return CORRAL_OK;
}

static enum corral_status parse_prompt(const json_t *root, struct api_request *out,
                                       struct corral_err *err)
{
    json_t *p = api__opt_get(root, "prompt");
    if (!p)
        return api__missing(err, "prompt");
    if (json_is_string(p)) {
        out->in.prompt = api__dup_str(json_string_value(p), json_string_length(p), err);
        return out->in.prompt ? CORRAL_OK : CORRAL_NOMEM;
    }
    if (!json_is_array(p))
        return api__bad_type(err, "prompt",
                        "a string, an array of token ids or an array of one of those");
    size_t n = json_array_size(p);
    if (n == 0)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "prompt", "'prompt' must not be empty");
    json_t *first = json_array_get(p, 0);
    if (json_is_string(first) || json_is_array(first)) {
        /* A list of prompts. */
        if (n > 1)
            return corral_err_set(err, CORRAL_UNSUPPORTED, "prompt",
                                  "multiple prompts in one request are not supported; send one "
                                  "request per prompt");
        if (json_is_string(first)) {
            out->in.prompt = api__dup_str(json_string_value(first), json_string_length(first), err);
            return out->in.prompt ? CORRAL_OK : CORRAL_NOMEM;
        }
        return parse_tokens(first, "prompt[0]", out, err);
    }
    return parse_tokens(p, "prompt", out, err);
}

static enum corral_status parse_completion_only(const json_t *root, struct corral_err *err)
{
    bool echo = false;
    enum corral_status st = api__get_bool(root, "echo", &echo, err);
    if (st != CORRAL_OK)
        return st;
    if (echo)
        return corral_err_set(err, CORRAL_UNSUPPORTED, "echo", "'echo' is not supported");

    json_t *suffix = api__opt_get(root, "suffix");
    if (suffix) {
        if (!json_is_string(suffix))
            return api__bad_type(err, "suffix", "a string");
        if (json_string_length(suffix) > 0)
            return corral_err_set(err, CORRAL_UNSUPPORTED, "suffix",
                                  "'suffix' (insertion) is not supported");
    }

    json_int_t best_of = 1;
    bool given;
    st = api__get_int(root, "best_of", 1, &best_of, &given, err);
    if (st != CORRAL_OK)
        return st;
    if (best_of > 1)
        return corral_err_set(err, CORRAL_UNSUPPORTED, "best_of", "best_of > 1 is not supported");
    return CORRAL_OK;
}

/* ================================================================ embeddings */

static enum corral_status parse_input(const json_t *root, struct api_request *out,
                                      struct corral_err *err)
{
    json_t *in = api__opt_get(root, "input");
    if (!in)
        return api__missing(err, "input");
    if (json_is_string(in)) {
        if (json_string_length(in) == 0)
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "input",
                                  "'input' must not be empty");
        out->in.inputs = calloc(1, sizeof *out->in.inputs);
        if (!out->in.inputs)
            return api__no_memory(err);
        out->in.inputs[0] = api__dup_str(json_string_value(in), json_string_length(in), err);
        if (!out->in.inputs[0])
            return CORRAL_NOMEM;
        out->in.n_inputs = 1;
        return CORRAL_OK;
    }
    if (!json_is_array(in))
        return api__bad_type(err, "input", "a string or an array of strings");
    size_t n = json_array_size(in);
    if (n == 0)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "input", "'input' must not be empty");
    if (n > API_MAX_EMBED_INPUTS)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "input",
                              "'input' may contain at most %d items, got %zu", API_MAX_EMBED_INPUTS,
                              n);
    out->in.inputs = calloc(n, sizeof *out->in.inputs);
    if (!out->in.inputs)
        return api__no_memory(err);
    char path[PARAM_MAX];
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(in, i);
        api__path_fmt(path, sizeof path, "input[%zu]", i);
        if (json_is_integer(s) || json_is_array(s))
            return corral_err_set(err, CORRAL_UNSUPPORTED, "input",
                                  "token arrays as 'input' are not supported; send text");
        if (!json_is_string(s))
            return api__bad_type(err, path, "a string");
        if (json_string_length(s) == 0)
            return corral_err_set(err, CORRAL_INVALID_REQUEST, path, "'%s' must not be empty",
                                  path);
        out->in.inputs[i] = api__dup_str(json_string_value(s), json_string_length(s), err);
        if (!out->in.inputs[i])
            return CORRAL_NOMEM;
        out->in.n_inputs = i + 1;
    }
    return CORRAL_OK;
}

static enum corral_status parse_embedding_opts(const json_t *root, struct api_request *out,
                                               struct corral_err *err)
{
    json_t *fmt = api__opt_get(root, "encoding_format");
    if (fmt) {
        if (!json_is_string(fmt))
            return api__bad_type(err, "encoding_format", "a string");
        const char *f = json_string_value(fmt);
        if (strcmp(f, "base64") == 0)
            out->encoding_base64 = true;
        else if (strcmp(f, "float") != 0)
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "encoding_format",
                                  "'encoding_format' must be 'float' or 'base64', got '%.64s'", f);
    }
    if (api__opt_get(root, "dimensions"))
        return corral_err_set(err, CORRAL_UNSUPPORTED, "dimensions",
                              "'dimensions' is not supported; embeddings have the model's size");
    return api__get_str(root, "user", &out->user, err);
}

/* ================================================================ sampling */

static enum corral_status parse_stop(const json_t *root, struct engine_sampling *s,
                                     struct corral_err *err)
{
    json_t *v = api__opt_get(root, "stop");
    if (!v)
        return CORRAL_OK;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0)
            return CORRAL_OK;
        s->stop[0] = api__dup_str(json_string_value(v), json_string_length(v), err);
        if (!s->stop[0])
            return CORRAL_NOMEM;
        s->n_stop = 1;
        return CORRAL_OK;
    }
    if (!json_is_array(v))
        return api__bad_type(err, "stop", "a string or an array of strings");
    size_t n = json_array_size(v);
    if (n > API_MAX_STOP)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "stop",
                              "'stop' may contain at most %d sequences, got %zu", API_MAX_STOP, n);
    char path[PARAM_MAX];
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        api__path_fmt(path, sizeof path, "stop[%zu]", i);
        if (!json_is_string(e))
            return api__bad_type(err, path, "a string");
        if (json_string_length(e) == 0)
            continue;
        s->stop[s->n_stop] = api__dup_str(json_string_value(e), json_string_length(e), err);
        if (!s->stop[s->n_stop])
            return CORRAL_NOMEM;
        s->n_stop++;
    }
    return CORRAL_OK;
}

/* logprobs: chat has `logprobs` (a boolean) and `top_logprobs` (0..20);
 * legacy completions have `logprobs` as the number of alternatives. */
static enum corral_status parse_logprobs(const json_t *root, enum engine_kind kind, struct engine_sampling *s,
                                         struct corral_err *err)
{
    json_t *v = api__opt_get(root, "logprobs");
    json_int_t top = 0;
    bool given = false;
    if (kind == ENGINE_COMPLETION) {
        if (json_is_boolean(v)) { /* false (or true: no alternatives), as some clients send */
            s->logprobs = json_is_true(v);
            return CORRAL_OK;
        }
        if (v && !json_is_integer(v))
            return api__bad_type(err, "logprobs", "an integer");
        enum corral_status st = api__get_int(root, "logprobs", 0, &top, &given, err);
        if (st != CORRAL_OK)
            return st;
        if (given && (top < 0 || top > ENGINE_MAX_TOP_LOGPROBS))
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "logprobs", "'logprobs' must be in 0..%d, got %lld",
                                  ENGINE_MAX_TOP_LOGPROBS, (long long)top);
        s->logprobs = given;
        s->top_logprobs = (int)top;
        return CORRAL_OK;
    }
    enum corral_status st = api__get_bool(root, "logprobs", &s->logprobs, err);
    if (st != CORRAL_OK)
        return st;
    if ((st = api__get_int(root, "top_logprobs", 0, &top, &given, err)) != CORRAL_OK)
        return st;
    if (given && (top < 0 || top > ENGINE_MAX_TOP_LOGPROBS))
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "top_logprobs",
                              "'top_logprobs' must be in 0..%d, got %lld", ENGINE_MAX_TOP_LOGPROBS,
                              (long long)top);
    if (given && !s->logprobs)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "top_logprobs",
                              "'top_logprobs' needs 'logprobs': true");
    s->top_logprobs = (int)top;
    return CORRAL_OK;
}

/* n: how many choices. */
static enum corral_status parse_n(const json_t *root, int *n_out, struct corral_err *err)
{
    json_int_t n = 1;
    bool given;
    enum corral_status st = api__get_int(root, "n", 1, &n, &given, err);
    if (st != CORRAL_OK)
        return st;
    if (n > API_MAX_CHOICES)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "n", "'n' may be at most %d, got %lld", API_MAX_CHOICES,
                              (long long)n);
    *n_out = (int)n;
    return CORRAL_OK;
}

static enum corral_status parse_response_format(const json_t *root, struct engine_sampling *s,
                                                struct corral_err *err)
{
    json_t *rf = api__opt_get(root, "response_format");
    if (!rf)
        return CORRAL_OK;
    if (!json_is_object(rf))
        return api__bad_type(err, "response_format", "an object");
    json_t *t = api__opt_get(rf, "type");
    if (!t)
        return api__missing(err, "response_format.type");
    if (!json_is_string(t))
        return api__bad_type(err, "response_format.type", "a string");
    const char *type = json_string_value(t);
    if (strcmp(type, "text") == 0)
        return CORRAL_OK;
    if (strcmp(type, "json_object") == 0) {
        s->json_object = true;
        return CORRAL_OK;
    }
    if (strcmp(type, "json_schema") == 0) {
        json_t *js = api__opt_get(rf, "json_schema");
        if (!js)
            return api__missing(err, "response_format.json_schema");
        if (!json_is_object(js))
            return api__bad_type(err, "response_format.json_schema", "an object");
        json_t *name = api__opt_get(js, "name");
        if (name && !json_is_string(name))
            return api__bad_type(err, "response_format.json_schema.name", "a string");
        json_t *strict = api__opt_get(js, "strict");
        if (strict && !json_is_boolean(strict))
            return api__bad_type(err, "response_format.json_schema.strict", "a boolean");
        json_t *schema = api__opt_get(js, "schema");
        if (!schema) { /* no schema: any JSON object */
            s->json_object = true;
            return CORRAL_OK;
        }
        if (!json_is_object(schema) && !json_is_boolean(schema))
            return api__bad_type(err, "response_format.json_schema.schema", "an object");
        s->json_schema = json_dumps(schema, JSON_COMPACT | JSON_ENCODE_ANY);
        return s->json_schema ? CORRAL_OK : corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
    }
    return corral_err_set(err, CORRAL_INVALID_REQUEST, "response_format.type",
                          "response_format type '%.64s' is not one of 'text', 'json_object', 'json_schema'",
                          type);
}

/* The llama-server extension `grammar`: GBNF text constraining the output. */
static enum corral_status parse_grammar(const json_t *root, struct engine_sampling *s, struct corral_err *err)
{
    enum corral_status st = api__get_str(root, "grammar", &s->grammar, err);
    if (st != CORRAL_OK || !s->grammar)
        return st;
    if (!s->grammar[0]) {
        free(s->grammar);
        s->grammar = NULL;
        return CORRAL_OK;
    }
    if (s->json_object || s->json_schema)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "grammar",
                              "'grammar' and a JSON response_format cannot be combined");
    return CORRAL_OK;
}

/* reasoning_format (llama-server's): "none" keeps a model's thinking in the
 * content; "auto" and the deepseek forms move it to reasoning_content. */
static enum corral_status parse_reasoning_format(const json_t *root, struct api_request *out,
                                                 struct corral_err *err)
{
    json_t *v = api__opt_get(root, "reasoning_format");
    if (!v)
        return CORRAL_OK;
    if (!json_is_string(v))
        return api__bad_type(err, "reasoning_format", "a string");
    const char *f = json_string_value(v);
    if (strcmp(f, "none") == 0) {
        out->reasoning_none = out->in.reasoning_in_content = true;
        return CORRAL_OK;
    }
    if (strcmp(f, "auto") == 0 || strcmp(f, "deepseek") == 0 || strcmp(f, "deepseek-legacy") == 0)
        return CORRAL_OK;
    return corral_err_set(err, CORRAL_INVALID_REQUEST, "reasoning_format",
                          "'reasoning_format' must be one of none, auto, deepseek, deepseek-legacy; got '%.64s'", f);
}

static enum corral_status parse_stream(const json_t *root, struct api_request *out,
                                       struct corral_err *err)
{
    enum corral_status st = api__get_bool(root, "stream", &out->stream, err);
    if (st != CORRAL_OK || !out->stream)
        return st; /* stream_options without stream is ignored */
    json_t *so = api__opt_get(root, "stream_options");
    if (!so)
        return CORRAL_OK;
    if (!json_is_object(so))
        return api__bad_type(err, "stream_options", "an object");
    json_t *iu = api__opt_get(so, "include_usage");
    if (iu) {
        if (!json_is_boolean(iu))
            return api__bad_type(err, "stream_options.include_usage", "a boolean");
        out->include_usage = json_is_true(iu);
    }
    return CORRAL_OK;
}

/* keep_alive (an Ollama extension): seconds as a number, or a duration
 * string; -1 = keep forever. */
static enum corral_status parse_keep_alive(const json_t *root, struct api_request *out,
                                           struct corral_err *err)
{
    json_t *v = api__opt_get(root, "keep_alive");
    if (!v)
        return CORRAL_OK;
    int64_t ms = 0;
    if (json_is_integer(v)) {
        json_int_t sec = json_integer_value(v);
        if (sec < -1 || sec > INT64_MAX / 1000)
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "keep_alive",
                                  "'keep_alive' must be -1 (forever), 0 or a number of seconds");
        ms = sec < 0 ? -1 : (int64_t)sec * 1000;
    } else if (json_is_real(v)) {
        double sec = json_real_value(v);
        if (!(sec >= 0 && sec < 1e12) && sec != -1)
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "keep_alive",
                                  "'keep_alive' must be -1 (forever), 0 or a number of seconds");
        ms = sec < 0 ? -1 : (int64_t)(sec * 1000);
    } else if (json_is_string(v)) {
        if (config_parse_duration(json_string_value(v), &ms) != 0)
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "keep_alive",
                                  "'keep_alive' must be a duration like \"30s\", \"10m\", \"1h\" or \"-1\", got \"%.40s\"",
                                  json_string_value(v));
    } else {
        return api__bad_type(err, "keep_alive", "a number of seconds or a duration string");
    }
    out->in.keep_alive_ms = ms;
    return CORRAL_OK;
}

static enum corral_status parse_sampling(const json_t *root, enum engine_kind kind,
                                         struct api_request *out, struct corral_err *err)
{
    struct engine_sampling *s = &out->in.sampling;
    enum corral_status st;
    json_int_t iv = 0;
    bool given;

    if ((st = api__get_int(root, "max_tokens", 1, &iv, &given, err)) != CORRAL_OK)
        return st;
    if (given)
        s->max_tokens = api__clamp_i32(iv);
    if ((st = api__get_int(root, "max_completion_tokens", 1, &iv, &given, err)) != CORRAL_OK)
        return st;
    if (given)
        s->max_tokens = api__clamp_i32(iv);

    if ((st = api__get_float(root, "temperature", 0, 2, &s->temperature, err)) != CORRAL_OK ||
        (st = api__get_float(root, "top_p", 0, 1, &s->top_p, err)) != CORRAL_OK ||
        (st = api__get_float(root, "min_p", 0, 1, &s->min_p, err)) != CORRAL_OK ||
        (st = api__get_float(root, "presence_penalty", -2, 2, &s->presence_penalty, err)) !=
            CORRAL_OK ||
        (st = api__get_float(root, "frequency_penalty", -2, 2, &s->frequency_penalty, err)) !=
            CORRAL_OK)
        return st;

    if ((st = api__get_int(root, "top_k", 0, &iv, &given, err)) != CORRAL_OK)
        return st;
    if (given)
        s->top_k = api__clamp_i32(iv);

    if ((st = api__get_int(root, "seed", INT64_MIN, &iv, &given, err)) != CORRAL_OK)
        return st;
    if (given) {
        s->has_seed = true;
        s->seed = (uint64_t)iv;
    }

    if ((st = parse_keep_alive(root, out, err)) != CORRAL_OK)
        return st;

    /* extension shared with llama-server and vLLM (benchmark clients send it) */
    if ((st = api__get_bool(root, "ignore_eos", &s->ignore_eos, err)) != CORRAL_OK)
        return st;

    if ((st = parse_stop(root, s, err)) != CORRAL_OK ||
        (st = parse_n(root, &out->n, err)) != CORRAL_OK ||
        (st = parse_response_format(root, s, err)) != CORRAL_OK ||
        (st = parse_grammar(root, s, err)) != CORRAL_OK ||
        (st = api__parse_tools(root, kind, &out->in, err)) != CORRAL_OK ||
        (st = parse_logprobs(root, kind, s, err)) != CORRAL_OK ||
        (st = parse_stream(root, out, err)) != CORRAL_OK ||
        (st = parse_reasoning_format(root, out, err)) != CORRAL_OK)
        return st;
    return api__get_str(root, "user", &out->user, err);
}

/* ================================================================ parse */

static void request_defaults(struct api_request *out, enum engine_kind kind)
{
    memset(out, 0, sizeof *out);
    out->in.kind = kind;
    out->in.sampling.max_tokens = -1;
    out->in.sampling.temperature = 1.0f;
    out->in.sampling.top_p = 1.0f;
    out->in.keep_alive_ms = ENGINE_KEEP_ALIVE_UNSET;
    out->n = 1;
}

enum corral_status api_request_parse(enum engine_kind kind, const char *body, size_t len,
                                     struct api_request *out, struct corral_err *err)
{
    enum corral_status st;
    json_error_t jerr;

    request_defaults(out, kind);
    corral_err_clear(err);

    json_t *root = json_loadb(body ? body : "", body ? len : 0, JSON_DECODE_ANY, &jerr);
    if (!root)
        return corral_err_set(err, CORRAL_INVALID_JSON, NULL,
                              "invalid JSON at line %d, column %d (position %d): %s", jerr.line,
                              jerr.column, jerr.position, jerr.text);
    if (!json_is_object(root)) {
        st = corral_err_set(err, CORRAL_INVALID_REQUEST, NULL,
                            "request body must be a JSON object");
        goto fail;
    }
    if ((st = parse_model(root, out, err)) != CORRAL_OK)
        goto fail;

    switch (kind) {
    case ENGINE_CHAT:
        if ((st = parse_messages(root, out, err)) != CORRAL_OK ||
            (st = parse_sampling(root, kind, out, err)) != CORRAL_OK)
            goto fail;
        break;
    case ENGINE_COMPLETION:
        if ((st = parse_prompt(root, out, err)) != CORRAL_OK ||
            (st = parse_completion_only(root, err)) != CORRAL_OK ||
            (st = parse_sampling(root, kind, out, err)) != CORRAL_OK)
            goto fail;
        break;
    case ENGINE_EMBEDDING:
        if ((st = parse_input(root, out, err)) != CORRAL_OK ||
            (st = parse_embedding_opts(root, out, err)) != CORRAL_OK ||
            (st = parse_keep_alive(root, out, err)) != CORRAL_OK)
            goto fail;
        break;
    default:
        st = corral_err_set(err, CORRAL_INTERNAL, NULL, "unknown request kind %d", (int)kind);
        goto fail;
    }
    json_decref(root);
    return CORRAL_OK;

fail:
    json_decref(root);
    api_request_free(out);
    return st;
}

void api_request_free(struct api_request *req)
{
    if (!req)
        return;
    free(req->model);
    engine_input_free(&req->in);
    free(req->user);
    memset(req, 0, sizeof *req);
}
