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

#include <jansson.h>

#include "engine/input.h"
#include "util/error.h"

#define API_MAX_STOP ENGINE_MAX_STOP
#define API_MAX_EMBED_INPUTS 2048
#define API_MAX_CHOICES 16

/* A parsed request: what the engine is asked to do (in), and what only the
 * API layer needs (the model's name, how to frame the answer). */
struct api_request {
    char *model; /* required for every kind */
    struct engine_input in;
    bool encoding_base64; /* embeddings: encoding_format "base64" */
    bool stream;
    bool include_usage; /* stream_options.include_usage */
    int n;              /* choices (1..API_MAX_CHOICES) */
    bool reasoning_none; /* reasoning_format "none": thinking text stays in content */
    char *user;         /* optional, unused except for logs */
};

/* Parse a request body of `kind`. On success returns CORRAL_OK and fills *out
 * (free with api_request_free). On failure returns the status, fills *err
 * (malformed JSON says line/column/position; a missing or mistyped field is
 * named in err->param and the message) and leaves *out empty.
 * Unknown fields are ignored. response_format json_schema gives the schema's
 * text (sampling.json_schema; the engine turns it into a grammar), the
 * extension `grammar` its GBNF; tools, tool_choice and the history's tool
 * calls go to in.tools and the messages (openai_tools.c). best_of > 1, the
 * deprecated functions/function_call, audio/image content parts, echo,
 * suffix: CORRAL_UNSUPPORTED with a message that says what is not
 * supported. */
enum corral_status api_request_parse(enum engine_kind kind, const char *body, size_t len,
                                     struct api_request *out, struct corral_err *err);

/* Free everything api_request_parse allocated; safe on a zeroed struct. */
void api_request_free(struct api_request *req);

/* ------------------------------------------------------------------ output */

/* finish_reason strings: "stop", "length"; NULL while a stream goes on. */

/* A whole (non-streaming) chat.completion or text_completion object.
 * Returns a malloc'd JSON string (caller frees) or NULL if out of memory. */
char *api_completion_json(enum engine_kind kind, const char *id, int64_t created,
                          const char *model, const char *text, size_t text_len,
                          const char *finish_reason, const struct engine_usage *usage);

/* One streaming chunk object (chat.completion.chunk or text_completion).
 * role_delta: emit {"role":"assistant"} in the delta (first chat chunk).
 * text may be NULL (no content). finish_reason NULL for "null".
 * usage NULL: no "usage" key; include_usage_null: add "usage": null (OpenAI
 * sends that on every chunk when include_usage is on). For the final usage
 * chunk pass usage and choices_empty = true. Returns malloc'd JSON or NULL. */
char *api_chunk_json(enum engine_kind kind, const char *id, int64_t created, const char *model,
                     bool role_delta, const char *text, size_t text_len,
                     const char *finish_reason, bool include_usage_null,
                     const struct engine_usage *usage, bool choices_empty);

/* The same with a choice's logprobs object (reference taken; NULL = null). */
char *api_completion_json_lp(enum engine_kind kind, const char *id, int64_t created, const char *model,
                             const char *text, size_t text_len, const char *finish_reason,
                             const struct engine_usage *usage, json_t *logprobs);
char *api_chunk_json_lp(enum engine_kind kind, const char *id, int64_t created, const char *model, int index,
                        bool role_delta, const char *text, size_t text_len, const char *finish_reason,
                        bool include_usage_null, const struct engine_usage *usage, bool choices_empty,
                        json_t *logprobs);
/* A chat chunk of choice `index` whose delta holds fields (reasoning_content,
 * content, tool_calls, ...; taken over, NULL = out of memory: returns NULL). */
char *api_chunk_json_delta(const char *id, int64_t created, const char *model, int index, json_t *fields,
                           bool include_usage_null, json_t *logprobs);
/* One choice of a whole response; logprobs: a reference the builder takes (NULL = null). */
struct api_choice {
    const char *text;
    size_t len;
    const char *reasoning; /* message.reasoning_content (chat), or NULL */
    size_t reasoning_len;
    const char *finish_reason;
    json_t *logprobs;
    json_t *message; /* chat: the parsed message (content, reasoning_content, tool_calls), taken over; replaces text */
};
/* A whole response with n choices (indexes 0..n-1). Takes every choice's
 * logprobs reference, also on failure. Malloc'd JSON or NULL. */
char *api_choices_json(enum engine_kind kind, const char *id, int64_t created, const char *model,
                       struct api_choice *choices, size_t n, const struct engine_usage *usage);
/* A choice's logprobs object for n token records: chat's {"content": [{token,
 * logprob, bytes, top_logprobs}], "refusal": null}, or the completions form
 * {tokens, token_logprobs, top_logprobs, text_offset} with offsets counted
 * in bytes from `offset`. New reference; NULL if out of memory. */
json_t *api_logprobs_json(enum engine_kind kind, const struct engine_logprob *lp, size_t n, size_t offset);

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
