/* openai_tools.c - function calling in a chat request: `tools`,
 * `tool_choice`, `parallel_tool_calls`, and the history's assistant
 * `tool_calls` and `tool` messages.
 *
 * DESIGN: what is kept is normalised JSON text (the engine hands it to the
 * template layer as is): tools as [{"type":"function","function":{name,
 * description, parameters}}], a message's calls as [{"id","type":
 * "function","function":{"name","arguments"}}] with the arguments always a
 * string. Each fault names its field, as the rest of the parser does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/openai_internal.h"
#include "engine/input.h"

/* OpenAI's bounds. */
#define TOOLS_MAX 128
#define TOOL_NAME_MAX 64

/* A function name: 1..64 of [A-Za-z0-9_-] (OpenAI's rule), plus '.' and
 * ':' that MCP-style names use. */
static bool tool_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > TOOL_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

static enum corral_status tool_name(const json_t *v, const char *path, struct corral_err *err)
{
    if (!v)
        return api__missing(err, path);
    if (!json_is_string(v))
        return api__bad_type(err, path, "a string");
    if (!tool_name_ok(json_string_value(v), json_string_length(v)))
        return corral_err_set(err, CORRAL_INVALID_REQUEST, path,
                              "'%s' must be 1 to 64 letters, digits, '_', '-', '.' or ':', got '%.64s'", path,
                              json_string_value(v));
    return CORRAL_OK;
}

static enum corral_status dump_into(json_t *v, char **out, struct corral_err *err)
{
    *out = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    return *out ? CORRAL_OK : api__no_memory(err);
}

/* One entry of `tools`, normalised into *out (a new reference). */
static enum corral_status parse_tool(const json_t *t, size_t i, json_t **out, struct corral_err *err)
{
    char path[PARAM_MAX];
    api__path_fmt(path, sizeof path, "tools[%zu]", i);
    if (!json_is_object(t))
        return api__bad_type(err, path, "an object");
    api__path_fmt(path, sizeof path, "tools[%zu].type", i);
    json_t *type, *fn;
    enum corral_status st = api__required(t, "type", JSON_STRING, path, &type, err);
    if (st != CORRAL_OK)
        return st;
    if (strcmp(json_string_value(type), "function") != 0)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, path,
                              "tool type '%.64s' is not supported; only 'function' tools are", json_string_value(type));
    api__path_fmt(path, sizeof path, "tools[%zu].function", i);
    if ((st = api__required(t, "function", JSON_OBJECT, path, &fn, err)) != CORRAL_OK)
        return st;
    api__path_fmt(path, sizeof path, "tools[%zu].function.name", i);
    json_t *name = api__opt_get(fn, "name");
    st = tool_name(name, path, err);
    if (st != CORRAL_OK)
        return st;
    json_t *desc = api__opt_get(fn, "description");
    api__path_fmt(path, sizeof path, "tools[%zu].function.description", i);
    if (desc && !json_is_string(desc))
        return api__bad_type(err, path, "a string");
    json_t *params = api__opt_get(fn, "parameters");
    api__path_fmt(path, sizeof path, "tools[%zu].function.parameters", i);
    if (params && !json_is_object(params))
        return api__bad_type(err, path, "an object (a JSON schema)");
    json_t *strict = api__opt_get(fn, "strict");
    api__path_fmt(path, sizeof path, "tools[%zu].function.strict", i);
    if (strict && !json_is_boolean(strict))
        return api__bad_type(err, path, "a boolean");
    json_t *f = json_pack("{s:O}", "name", name);
    if (f && desc)
        json_object_set(f, "description", desc);
    if (f && params)
        json_object_set(f, "parameters", params);
    *out = f ? json_pack("{s:s, s:o}", "type", "function", "function", f) : NULL;
    return *out ? CORRAL_OK : api__no_memory(err);
}

static bool tools_have(const json_t *tools, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (n && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

/* tool_choice: "auto", "none", "required", or {"type":"function",
 * "function":{"name"}} (also {"type":"function","name"}). */
static enum corral_status parse_choice(const json_t *v, const json_t *tools, struct engine_tools *t,
                                       struct corral_err *err)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "auto") == 0)
            t->choice = ENGINE_TOOLS_AUTO;
        else if (strcmp(s, "none") == 0)
            t->choice = ENGINE_TOOLS_NONE;
        else if (strcmp(s, "required") == 0)
            t->choice = ENGINE_TOOLS_REQUIRED;
        else
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "tool_choice",
                                  "'tool_choice' must be 'none', 'auto', 'required' or a function, got '%.64s'", s);
    } else if (json_is_object(v)) {
        json_t *type = api__opt_get(v, "type");
        if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0)
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "tool_choice.type",
                                  "'tool_choice.type' must be 'function'");
        json_t *fn = api__opt_get(v, "function");
        json_t *name = fn ? api__opt_get(fn, "name") : api__opt_get(v, "name");
        const char *path = fn ? "tool_choice.function.name" : "tool_choice.name";
        enum corral_status st = tool_name(name, path, err);
        if (st != CORRAL_OK)
            return st;
        if (!tools || !tools_have(tools, json_string_value(name)))
            return corral_err_set(err, CORRAL_INVALID_REQUEST, path,
                                  "'tool_choice' names the function '%.64s', which is not in 'tools'",
                                  json_string_value(name));
        t->choice = ENGINE_TOOLS_NAMED;
        if (!(t->name = api__dup_str(json_string_value(name), json_string_length(name), err)))
            return CORRAL_NOMEM;
    } else {
        return api__bad_type(err, "tool_choice", "a string or an object");
    }
    if (!tools && t->choice == ENGINE_TOOLS_REQUIRED)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "tool_choice",
                              "'tool_choice' 'required' needs 'tools'");
    return CORRAL_OK;
}

enum corral_status api__parse_tools(const json_t *root, enum engine_kind kind, struct engine_input *in,
                                    struct corral_err *err)
{
    static const char *const legacy[] = {"functions", "function_call"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = api__opt_get(root, legacy[i]);
        /* an empty list and "none" ask for nothing */
        if (!v || (json_is_array(v) && json_array_size(v) == 0) ||
            (json_is_string(v) && strcmp(json_string_value(v), "none") == 0))
            continue;
        return corral_err_set(err, CORRAL_UNSUPPORTED, legacy[i],
                                  "'%s' (OpenAI's deprecated function calling) is not supported; use 'tools' and "
                                  "'tool_choice'",
                                  legacy[i]);
    }
    json_t *arr = api__opt_get(root, "tools");
    json_t *choice = api__opt_get(root, "tool_choice");
    json_t *par = api__opt_get(root, "parallel_tool_calls");
    if (kind != ENGINE_CHAT) {
        if ((arr && !(json_is_array(arr) && json_array_size(arr) == 0)) ||
            (choice && !(json_is_string(choice) && strcmp(json_string_value(choice), "none") == 0)))
            return corral_err_set(err, CORRAL_INVALID_REQUEST, arr ? "tools" : "tool_choice",
                                  "'%s' is for chat completions (/v1/chat/completions)", arr ? "tools" : "tool_choice");
        return CORRAL_OK;
    }
    in->tools.parallel = -1;
    if (par) {
        if (!json_is_boolean(par))
            return api__bad_type(err, "parallel_tool_calls", "a boolean");
        in->tools.parallel = json_is_true(par);
    }
    if (arr && !json_is_array(arr))
        return api__bad_type(err, "tools", "an array");
    if (arr && json_array_size(arr) > TOOLS_MAX)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "tools", "'tools' may hold at most %d functions, got %zu",
                              TOOLS_MAX, json_array_size(arr));
    json_t *norm = NULL;
    if (arr && json_array_size(arr) > 0) {
        if (!(norm = json_array()))
            return api__no_memory(err);
        size_t i;
        json_t *t;
        json_array_foreach(arr, i, t) {
            json_t *one = NULL;
            enum corral_status st = parse_tool(t, i, &one, err);
            if (st != CORRAL_OK) {
                json_decref(norm);
                return st;
            }
            const char *name = json_string_value(json_object_get(json_object_get(one, "function"), "name"));
            if (tools_have(norm, name)) {
                json_decref(one);
                json_decref(norm);
                return corral_err_set(err, CORRAL_INVALID_REQUEST, "tools",
                                      "'tools' names the function '%.64s' twice", name);
            }
            json_array_append_new(norm, one);
        }
    }
    in->tools.choice = ENGINE_TOOLS_AUTO;
    if (choice) {
        enum corral_status st = parse_choice(choice, norm, &in->tools, err);
        if (st != CORRAL_OK) {
            json_decref(norm);
            return st;
        }
    }
    if (!norm)
        return CORRAL_OK;
    const struct engine_sampling *s = &in->sampling;
    if (in->tools.choice != ENGINE_TOOLS_NONE && (s->json_object || s->json_schema || s->grammar)) {
        json_decref(norm);
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "tools",
                              "'tools' cannot be combined with a JSON 'response_format' or a 'grammar' (unless "
                              "'tool_choice' is 'none')");
    }
    return dump_into(norm, &in->tools.json, err);
}

/* One entry of an assistant message's tool_calls, normalised. */
static enum corral_status parse_call(const json_t *c, const char *base, size_t j, json_t **out,
                                     struct corral_err *err)
{
    char path[PARAM_MAX];
    api__path_fmt(path, sizeof path, "%s[%zu]", base, j);
    if (!json_is_object(c))
        return api__bad_type(err, path, "an object");
    json_t *type = api__opt_get(c, "type");
    api__path_fmt(path, sizeof path, "%s[%zu].type", base, j);
    if (type && !(json_is_string(type) && strcmp(json_string_value(type), "function") == 0))
        return corral_err_set(err, CORRAL_INVALID_REQUEST, path, "'%s' must be 'function'", path);
    json_t *id = api__opt_get(c, "id");
    api__path_fmt(path, sizeof path, "%s[%zu].id", base, j);
    if (id && !json_is_string(id))
        return api__bad_type(err, path, "a string");
    json_t *fn, *name;
    api__path_fmt(path, sizeof path, "%s[%zu].function", base, j);
    enum corral_status rst = api__required(c, "function", JSON_OBJECT, path, &fn, err);
    if (rst != CORRAL_OK)
        return rst;
    api__path_fmt(path, sizeof path, "%s[%zu].function.name", base, j);
    if ((rst = api__required(fn, "name", JSON_STRING, path, &name, err)) != CORRAL_OK)
        return rst;
    json_t *args = api__opt_get(fn, "arguments");
    api__path_fmt(path, sizeof path, "%s[%zu].function.arguments", base, j);
    json_t *astr = NULL;
    if (!args)
        astr = json_string("{}");
    else if (json_is_string(args))
        astr = json_incref(args);
    else if (json_is_object(args)) { /* lenient: an object given as is */
        char *d = json_dumps(args, JSON_COMPACT);
        astr = d ? json_string(d) : NULL;
        free(d);
    } else
        return api__bad_type(err, path, "a string of JSON");
    *out = astr ? json_pack("{s:s, s:s, s:{s:O, s:o}}", "id", id ? json_string_value(id) : "", "type", "function",
                            "function", "name", name, "arguments", astr)
                : NULL;
    return *out ? CORRAL_OK : api__no_memory(err);
}

enum corral_status api__parse_message_tools(const json_t *m, size_t idx, struct engine_message *msg,
                                            struct corral_err *err)
{
    char path[PARAM_MAX];
    const char *role = msg->role;
    json_t *name = api__opt_get(m, "name");
    api__path_fmt(path, sizeof path, "messages[%zu].name", idx);
    if (name && !json_is_string(name))
        return api__bad_type(err, path, "a string");
    if (name && !(msg->name = api__dup_str(json_string_value(name), json_string_length(name), err)))
        return CORRAL_NOMEM;
    json_t *calls = api__opt_get(m, "tool_calls");
    api__path_fmt(path, sizeof path, "messages[%zu].tool_calls", idx);
    if (calls && strcmp(role, "assistant") != 0)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, path, "only assistant messages carry 'tool_calls'");
    if (calls && !json_is_array(calls))
        return api__bad_type(err, path, "an array");
    if (calls && json_array_size(calls) > 0) {
        char base[PARAM_MAX];
        snprintf(base, sizeof base, "%s", path);
        json_t *norm = json_array();
        if (!norm)
            return api__no_memory(err);
        size_t j;
        json_t *c;
        json_array_foreach(calls, j, c) {
            json_t *one = NULL;
            enum corral_status st = parse_call(c, base, j, &one, err);
            if (st != CORRAL_OK) {
                json_decref(norm);
                return st;
            }
            json_array_append_new(norm, one);
        }
        enum corral_status st = dump_into(norm, &msg->tool_calls, err);
        if (st != CORRAL_OK)
            return st;
    }
    json_t *id = api__opt_get(m, "tool_call_id");
    api__path_fmt(path, sizeof path, "messages[%zu].tool_call_id", idx);
    if (strcmp(role, "tool") == 0 && !id)
        return api__missing(err, path);
    if (id && !json_is_string(id))
        return api__bad_type(err, path, "a string");
    if (id && !(msg->tool_call_id = api__dup_str(json_string_value(id), json_string_length(id), err)))
        return CORRAL_NOMEM;
    return CORRAL_OK;
}
