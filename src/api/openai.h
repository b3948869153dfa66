/* openai.h - OpenAI request parsing and response building.
 *
 * Pure functions over jansson values and plain structs: no sockets, no
 * engine, no globals, so every case can be unit-tested and fuzzed. The
 * transport hands a request body in and gets a parsed struct api_request or
 * a struct corral_err naming the field at fault; it hands results in and
 * gets JSON text out.
 */
#ifndef CORRAL_API_OPENAI_H
#define CORRAL_API_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define API_MAX_STOP 4
#define API_MAX_EMBED_INPUTS 2048

enum api_kind { API_CHAT = 0, API_COMPLETION, API_EMBEDDING };

struct api_message {
    char *role;    /* "system", "user", "assistant" (also "developer", "tool" accepted) */
    char *content; /* text parts joined with "\n"; never NULL (may be "") */
};

/* Sampling and stopping. Fields hold the OpenAI defaults when the request
 * leaves them out. */
struct api_sampling {
    int32_t max_tokens;      /* -1 = not given (generate until EOS or context full) */
    float temperature;       /* default 1.0; 0 = greedy */
    float top_p;             /* default 1.0 */
    int32_t top_k;           /* default 0 = off */
    float min_p;             /* default 0 = off */
    float presence_penalty;  /* default 0, range [-2, 2] */
    float frequency_penalty; /* default 0, range [-2, 2] */
    bool has_seed;
    uint64_t seed;
    char *stop[API_MAX_STOP]; /* non-empty strings */
    int n_stop;
    bool json_object; /* response_format {"type":"json_object"} */
    bool ignore_eos;  /* extension: keep generating past end-of-generation tokens */
};

struct api_request {
    enum api_kind kind;
    char *model; /* required for every kind */

    /* API_CHAT */
    struct api_message *messages;
    size_t n_messages;

    /* API_COMPLETION: exactly one of prompt / prompt_tokens is set */
    char *prompt;
    int32_t *prompt_tokens;
    size_t n_prompt_tokens;

    /* API_EMBEDDING: input as strings (token arrays are not accepted) */
    char **inputs;
    size_t n_inputs;
    bool encoding_base64; /* encoding_format "base64" */

    struct api_sampling sampling;
    bool stream;
    bool include_usage; /* stream_options.include_usage */
    char *user;         /* optional, unused except for logs */
    /* keep_alive: how long the model stays loaded after this request, ms
     * (seconds as a number, or "10m"/"30s"/"1h"; 0 = unload when done,
     * -1 = never); API_KEEP_ALIVE_UNSET when not given. */
    int64_t keep_alive_ms;
};

#define API_KEEP_ALIVE_UNSET INT64_MIN

/* Parse a request body of `kind`. On success returns CORRAL_OK and fills *out
 * (free with api_request_free). On failure returns the status, fills *err
 * (malformed JSON says line/column/position; a missing or mistyped field is
 * named in err->param and the message) and leaves *out empty.
 * Unknown fields are ignored. n > 1, best_of > 1, logprobs, tools,
 * tool_choice, function_call(s), audio/image content parts, response_format
 * other than text/json_object, echo, suffix: CORRAL_UNSUPPORTED with a message
 * that says what is not supported. */
enum corral_status api_request_parse(enum api_kind kind, const char *body, size_t len,
                                     struct api_request *out, struct corral_err *err);

/* Free everything api_request_parse allocated; safe on a zeroed struct. */
void api_request_free(struct api_request *req);

/* ------------------------------------------------------------------ output */

struct api_usage {
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t cached_tokens; /* prompt tokens served from the KV cache */
};

/* finish_reason strings: "stop", "length"; NULL while a stream goes on. */

/* A whole (non-streaming) chat.completion or text_completion object.
 * Returns a malloc'd JSON string (caller frees) or NULL if out of memory. */
char *api_completion_json(enum api_kind kind, const char *id, int64_t created,
                          const char *model, const char *text, size_t text_len,
                          const char *finish_reason, const struct api_usage *usage);

/* One streaming chunk object (chat.completion.chunk or text_completion).
 * role_delta: emit {"role":"assistant"} in the delta (first chat chunk).
 * text may be NULL (no content). finish_reason NULL for "null".
 * usage NULL: no "usage" key; include_usage_null: add "usage": null (OpenAI
 * sends that on every chunk when include_usage is on). For the final usage
 * chunk pass usage and choices_empty = true. Returns malloc'd JSON or NULL. */
char *api_chunk_json(enum api_kind kind, const char *id, int64_t created, const char *model,
                     bool role_delta, const char *text, size_t text_len,
                     const char *finish_reason, bool include_usage_null,
                     const struct api_usage *usage, bool choices_empty);

/* An embeddings list object. vectors[i] has dim floats. Returns malloc'd JSON. */
char *api_embeddings_json(const char *model, const float *const *vectors, size_t n, size_t dim,
                          bool base64, int64_t prompt_tokens);

/* {"error":{"message","type","param","code"}} from *err. Returns malloc'd JSON. */
char *api_error_json(const struct corral_err *err);

/* A model entry list for GET /v1/models: ids[i] with owned_by "corral" and
 * created = created[i]; status[i] (may be NULL) is added as a corral field. */
char *api_models_json(const char *const *ids, const int64_t *created, const char *const *status,
                      size_t n);

/* A fresh id with the given prefix ("chatcmpl-", "cmpl-"): prefix + 24
 * random alphanumerics, written into out (size >= strlen(prefix) + 25). */
void api_make_id(const char *prefix, char *out, size_t out_size);

#endif
