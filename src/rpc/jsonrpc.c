/* jsonrpc.c - JSON-RPC 2.0 messages in and out (see jsonrpc.h).
 *
 * Responses are put together as text around JSON the service already
 * wrote (a completion, a chunk), so a result is never parsed back. */
#include "rpc/jsonrpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ reading */

/* Check one call object; fills c (error set when invalid). */
static int rpc__call(json_t *v, struct rpc_call *c) {
    memset(c, 0, sizeof *c);
    if (!json_is_object(v)) {
        c->error = RPC_INVALID_REQUEST;
        c->error_msg = "a request must be a JSON object";
        return 0;
    }
    json_t *id = json_object_get(v, "id");
    if (id) {
        if (json_is_string(id) || json_is_number(id) || json_is_null(id)) {
            c->id = id;
            c->id_json = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
            if (!c->id_json) return -1;
        } else {
            /* answered with id null: an object, array or boolean is not an id */
            c->id_json = strdup("null");
            if (!c->id_json) return -1;
            c->error = RPC_INVALID_REQUEST;
            c->error_msg = "'id' must be a string, a number or null";
            return 0;
        }
    }
    json_t *ver = json_object_get(v, "jsonrpc");
    if (!json_is_string(ver) || strcmp(json_string_value(ver), "2.0") != 0) {
        c->error = RPC_INVALID_REQUEST;
        c->error_msg = "'jsonrpc' must be \"2.0\"";
        return 0;
    }
    json_t *method = json_object_get(v, "method");
    if (!json_is_string(method)) {
        c->error = RPC_INVALID_REQUEST;
        c->error_msg = "'method' must be a string";
        return 0;
    }
    json_t *params = json_object_get(v, "params");
    if (params && !json_is_object(params) && !json_is_array(params)) {
        c->error = RPC_INVALID_REQUEST;
        c->error_msg = "'params' must be an object or an array";
        return 0;
    }
    c->method = json_string_value(method);
    c->params = params;
    return 0;
}

int rpc_message_parse(const char *text, size_t len, struct rpc_message *m) {
    memset(m, 0, sizeof *m);
    json_error_t jerr;
    m->root = json_loadb(text ? text : "", text ? len : 0, JSON_DECODE_ANY, &jerr);
    if (!m->root) {
        m->error = RPC_PARSE_ERROR;
        snprintf(m->error_msg, sizeof m->error_msg, "invalid JSON at line %d, column %d: %.160s", jerr.line, jerr.column,
                 jerr.text);
        return 0;
    }
    m->batch = json_is_array(m->root);
    size_t n = m->batch ? json_array_size(m->root) : 1;
    if (m->batch && n == 0) {
        m->error = RPC_INVALID_REQUEST;
        snprintf(m->error_msg, sizeof m->error_msg, "an empty batch");
        return 0;
    }
    if (n > RPC_MAX_BATCH) {
        m->error = RPC_INVALID_REQUEST;
        snprintf(m->error_msg, sizeof m->error_msg, "a batch of %zu calls; at most %d are taken at once", n,
                 RPC_MAX_BATCH);
        return 0;
    }
    m->calls = calloc(n, sizeof *m->calls);
    if (!m->calls) return -1;
    for (size_t i = 0; i < n; i++) {
        m->n_calls = i + 1;
        if (rpc__call(m->batch ? json_array_get(m->root, i) : m->root, &m->calls[i]) != 0) return -1;
    }
    return 0;
}

void rpc_message_free(struct rpc_message *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_calls; i++) free(m->calls[i].id_json);
    free(m->calls);
    json_decref(m->root);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------ codes */

int rpc_code_of(enum corral_status st) {
    switch (st) {
    case CORRAL_INVALID_REQUEST:
    case CORRAL_INVALID_JSON:
    case CORRAL_CONTEXT_LENGTH:
    case CORRAL_UNSUPPORTED: return RPC_INVALID_PARAMS;
    case CORRAL_OVERLOADED: return RPC_OVERLOADED;
    case CORRAL_UNAVAILABLE: return RPC_UNAVAILABLE;
    case CORRAL_UNAUTHORIZED: return RPC_UNAUTHORIZED;
    case CORRAL_FORBIDDEN: return RPC_FORBIDDEN;
    case CORRAL_NOT_FOUND:
    case CORRAL_MODEL_NOT_FOUND: return RPC_NOT_FOUND;
    case CORRAL_TOO_LARGE: return RPC_TOO_LARGE;
    case CORRAL_BAD_GATEWAY: return RPC_UPSTREAM;
    case CORRAL_TIMEOUT: return RPC_TIMEOUT;
    case CORRAL_CANCELLED: return RPC_CANCELLED;
    default: return RPC_INTERNAL_ERROR;
    }
}

int rpc_retry_after_ms(enum corral_status st) {
    return st == CORRAL_OVERLOADED || st == CORRAL_UNAVAILABLE ? 1000 : 0;
}

/* ------------------------------------------------------------ writing */

static char *rpc__join(const char *a, const char *b, const char *c, const char *d, const char *e) {
    size_t n = strlen(a) + strlen(b) + strlen(c) + strlen(d) + strlen(e) + 1;
    char *out = malloc(n);
    if (out) snprintf(out, n, "%s%s%s%s%s", a, b, c, d, e);
    return out;
}

char *rpc_result_text(const char *id_json, const char *result_json) {
    if (!result_json) return NULL;
    return rpc__join("{\"jsonrpc\":\"2.0\",\"id\":", id_json ? id_json : "null", ",\"result\":", result_json, "}");
}

/* The data of a protocol error: an OpenAI-style error object, as server
 * errors carry, so a client reads every error the same way. */
static json_t *rpc__protocol_data(int code, const char *message) {
    const char *name = code == RPC_PARSE_ERROR        ? "parse_error"
                       : code == RPC_INVALID_REQUEST  ? "invalid_request"
                       : code == RPC_METHOD_NOT_FOUND ? "method_not_found"
                       : code == RPC_INVALID_PARAMS   ? "invalid_params"
                                                      : "internal_error";
    bool server = code == RPC_INTERNAL_ERROR;
    return json_pack("{s:s, s:s, s:s, s:n, s:i}", "message", message ? message : "", "type",
                     server ? "server_error" : "invalid_request_error", "code", name, "param", "status",
                     server ? 500 : code == RPC_METHOD_NOT_FOUND ? 404 : 400);
}

char *rpc_error_text(const char *id_json, int code, const char *message, json_t *data) {
    if (!data) data = rpc__protocol_data(code, message);
    json_t *e = json_pack("{s:i, s:s}", "code", code, "message", message ? message : "");
    if (e && data) json_object_set(e, "data", data);
    json_decref(data);
    char *et = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (!et) return NULL;
    char *out = rpc__join("{\"jsonrpc\":\"2.0\",\"id\":", id_json ? id_json : "null", ",\"error\":", et, "}");
    free(et);
    return out;
}

char *rpc_failure_text(const char *id_json, const struct corral_err *err) {
    const char *code = err->code[0] ? err->code : corral_status_openai_code(err->status);
    int http = corral_status_http(err->status);
    json_t *data = json_pack("{s:s, s:s, s:s?, s:s?, s:i}", "message", err->message, "type",
                             corral_status_openai_type(err->status), "code", code, "param",
                             err->param[0] ? err->param : NULL, "status", http == 499 ? 500 : http);
    int retry = rpc_retry_after_ms(err->status);
    if (data && retry) json_object_set_new(data, "retry_after_ms", json_integer(retry));
    return rpc_error_text(id_json, rpc_code_of(err->status), err->message, data);
}

char *rpc_chunk_text(const char *id_json, const char *chunk_json) {
    if (!chunk_json) return NULL;
    return rpc__join("{\"jsonrpc\":\"2.0\",\"method\":\"stream.chunk\",\"params\":{\"id\":", id_json ? id_json : "null",
                     ",\"chunk\":", chunk_json, "}}");
}
