/* jsonrpc.h - JSON-RPC 2.0 messages: reading a request or a batch, and
 * writing responses, errors and stream.chunk notifications.
 *
 * Pure functions (no service, no socket), unit-tested and fuzzed. The
 * session (rpc/session.c) runs what they read.
 */
#ifndef CORRAL_RPC_JSONRPC_H
#define CORRAL_RPC_JSONRPC_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "util/error.h"

/* The standard codes. */
#define RPC_PARSE_ERROR (-32700)
#define RPC_INVALID_REQUEST (-32600)
#define RPC_METHOD_NOT_FOUND (-32601)
#define RPC_INVALID_PARAMS (-32602)
#define RPC_INTERNAL_ERROR (-32603)
/* Server errors (-32000..-32099), by what went wrong. */
#define RPC_OVERLOADED (-32000)   /* queue full, queue timeout, too many in flight: retry_after_ms */
#define RPC_UNAVAILABLE (-32001)  /* model unavailable, shutting down: retry_after_ms */
#define RPC_UNAUTHORIZED (-32002)
#define RPC_FORBIDDEN (-32003)
#define RPC_NOT_FOUND (-32004)    /* no such model */
#define RPC_TOO_LARGE (-32005)
#define RPC_UPSTREAM (-32006)
#define RPC_TIMEOUT (-32007)
#define RPC_CANCELLED (-32008)

/* Calls in one batch at most (its answers are held until the last ends). */
#define RPC_MAX_BATCH 1000

/* One call of a message: a request (id_json set) or a notification. */
struct rpc_call {
    char *id_json;      /* the id as JSON text, echoed back; NULL = notification */
    json_t *id;         /* the id value (borrowed from root), NULL for a notification */
    const char *method; /* borrowed from root; NULL when the call is invalid */
    json_t *params;     /* borrowed; NULL when absent */
    int error;          /* 0, or the code to answer with (RPC_INVALID_REQUEST) */
    const char *error_msg;
};

struct rpc_message {
    json_t *root;   /* NULL after a parse error */
    bool batch;     /* the message was an array */
    struct rpc_call *calls;
    size_t n_calls;
    int error;      /* RPC_PARSE_ERROR or RPC_INVALID_REQUEST (empty batch), answered with id null */
    char error_msg[256];
};

/* Read one message. Always fills *m (free with rpc_message_free); check
 * m->error first, then each call's error. 0, or -1 if out of memory. */
int rpc_message_parse(const char *text, size_t len, struct rpc_message *m);
void rpc_message_free(struct rpc_message *m);

/* The JSON-RPC code of a failure. */
int rpc_code_of(enum corral_status st);
/* Milliseconds to wait before retrying a failure, or 0 when retrying the
 * same call is not the cure (overload, queue timeout, shutting down: 1000). */
int rpc_retry_after_ms(enum corral_status st);

/* {"jsonrpc":"2.0","id":<id_json>,"result":<result_json>}: malloc'd, NULL if out of memory. */
char *rpc_result_text(const char *id_json, const char *result_json);
/* An error response: code, message and data (reference taken; NULL = an
 * OpenAI-style object for the code: message, type, code such as
 * "method_not_found", param null, status). id_json NULL = null. */
char *rpc_error_text(const char *id_json, int code, const char *message, json_t *data);
/* The error response of a failure: its code, its message, and as data the
 * OpenAI error object HTTP would send (message, type, code, param) plus
 * its HTTP status and, where a retry helps, retry_after_ms. */
char *rpc_failure_text(const char *id_json, const struct corral_err *err);
/* {"jsonrpc":"2.0","method":"stream.chunk","params":{"id":<id>,"chunk":<chunk>}} */
char *rpc_chunk_text(const char *id_json, const char *chunk_json);

#endif
