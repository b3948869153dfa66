/* delta.c - see delta.h. */
#include "service/delta.h"

#include <string.h>

void delta_acc_init(struct delta_acc *a) { memset(a, 0, sizeof *a); }

void delta_acc_free(struct delta_acc *a) {
    json_decref(a->reasoning);
    json_decref(a->tool_calls);
    json_decref(a->logprobs);
    json_decref(a->other);
    memset(a, 0, sizeof *a);
}

/* *s = *s + more (strings). */
static int acc_append(json_t **s, const json_t *more) {
    if (!json_is_string(more)) return 0;
    if (!*s) return (*s = json_deep_copy(more)) ? 0 : -1;
    size_t a = json_string_length(*s), b = json_string_length(more);
    char *cat = malloc(a + b + 1);
    if (!cat) return -1;
    memcpy(cat, json_string_value(*s), a);
    memcpy(cat + a, json_string_value(more), b);
    int rc = json_string_setn_nocheck(*s, cat, a + b);
    free(cat);
    return rc;
}

/* One tool-call delta merged into the call at its index. */
static int acc_call(struct delta_acc *a, const json_t *tc) {
    json_t *idx = json_object_get(tc, "index");
    size_t i = json_is_integer(idx) && json_integer_value(idx) >= 0 ? (size_t)json_integer_value(idx)
                                                                    : json_array_size(a->tool_calls);
    if (i > 1024) return -1;
    if (!a->tool_calls && !(a->tool_calls = json_array())) return -1;
    while (json_array_size(a->tool_calls) <= i)
        if (json_array_append_new(a->tool_calls, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", "", "type", "function",
                                                           "function", "name", "", "arguments", "")) != 0)
            return -1;
    json_t *call = json_array_get(a->tool_calls, i), *fn = json_object_get(call, "function");
    json_t *id = json_object_get(tc, "id"), *type = json_object_get(tc, "type");
    json_t *dfn = json_object_get(tc, "function");
    if (json_is_string(id) && json_string_length(id)) json_object_set(call, "id", id);
    if (json_is_string(type)) json_object_set(call, "type", type);
    json_t *name = json_object_get(dfn, "name");
    if (json_is_string(name) && json_string_length(name)) json_object_set(fn, "name", name);
    json_t *args = json_object_get(fn, "arguments");
    return acc_append(&args, json_object_get(dfn, "arguments"));
}

int delta_acc_add(struct delta_acc *a, const json_t *extra) {
    if (!json_is_object(extra)) return -1;
    json_t *d = json_object_get(extra, "delta");
    const char *key;
    json_t *v;
    json_object_foreach(d, key, v) {
        if (strcmp(key, "reasoning_content") == 0) {
            if (acc_append(&a->reasoning, v) != 0) return -1;
        } else if (strcmp(key, "tool_calls") == 0) {
            size_t i;
            json_t *tc;
            json_array_foreach(v, i, tc) if (acc_call(a, tc) != 0) return -1;
        } else {
            if (!a->other && !(a->other = json_object())) return -1;
            json_object_set(a->other, key, v);
        }
    }
    json_t *lp = json_object_get(extra, "logprobs");
    if (json_is_object(lp)) {
        if (!a->logprobs && !(a->logprobs = json_object())) return -1;
        json_object_foreach(lp, key, v) {
            json_t *have = json_object_get(a->logprobs, key);
            if (json_is_array(v) && json_is_array(have)) json_array_extend(have, v);
            else json_object_set(a->logprobs, key, v);
        }
    }
    return 0;
}

json_t *delta_acc_message(const struct delta_acc *a, const char *text, size_t len) {
    json_t *m = a->other ? json_deep_copy(a->other) : json_object();
    if (!m) return NULL;
    json_t *content = len == 0 && json_array_size(a->tool_calls) ? json_null() : json_stringn(text ? text : "", len);
    if (json_object_set_new(m, "content", content) != 0 ||
        (a->reasoning && json_object_set(m, "reasoning_content", a->reasoning) != 0) ||
        (a->tool_calls && json_object_set(m, "tool_calls", a->tool_calls) != 0)) {
        json_decref(m);
        return NULL;
    }
    return m;
}

json_t *delta_acc_logprobs(const struct delta_acc *a) { return a->logprobs ? json_incref(a->logprobs) : NULL; }

size_t delta_acc_calls(const struct delta_acc *a) { return json_array_size(a->tool_calls); }
