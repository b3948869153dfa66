/* fuzz_jsonrpc.c - libFuzzer harness for reading JSON-RPC messages: any
 * input is read without a crash or a leak, every call is either valid or
 * carries an error code, and every answer written for it (an error or a
 * result echoing its id) is JSON that reads back with that id. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/jsonrpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_answer(char *text, const char *id_json) {
    if (!text) return; /* out of memory */
    json_t *v = json_loads(text, 0, NULL);
    if (!v) abort();
    json_t *id = json_object_get(v, "id");
    char *back = id ? json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    if (!back || strcmp(back, id_json ? id_json : "null") != 0) abort();
    free(back);
    json_decref(v);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct rpc_message m;
    if (rpc_message_parse((const char *)data, size, &m) != 0) {
        rpc_message_free(&m);
        return 0;
    }
    if (m.error) {
        if (m.error != RPC_PARSE_ERROR && m.error != RPC_INVALID_REQUEST) abort();
        check_answer(rpc_error_text(NULL, m.error, m.error_msg, NULL), NULL);
    }
    for (size_t i = 0; i < m.n_calls; i++) {
        const struct rpc_call *c = &m.calls[i];
        if (!c->error && !c->method) abort();
        if (c->error && c->error != RPC_INVALID_REQUEST) abort();
        if (!c->id_json) continue;
        struct corral_err err;
        corral_err_set(&err, CORRAL_OVERLOADED, "p", "x");
        check_answer(c->error ? rpc_error_text(c->id_json, c->error, c->error_msg, NULL)
                              : rpc_failure_text(c->id_json, &err),
                     c->id_json);
        check_answer(rpc_result_text(c->id_json, "{}"), c->id_json);
    }
    rpc_message_free(&m);
    return 0;
}
