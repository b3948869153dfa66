/* engine.h - the one interface every model backend implements.
 *
 * The pool and the transport see a model only through struct engine and its
 * ops (a vtable), so an in-process llama.cpp model and (later) a supervised
 * child server look alike.
 *
 * A request is a struct engine_req, shared by exactly two parties: the
 * transport, which creates it and drains its output, and the engine, which
 * fills it. It is reference-counted; each party calls engine_req_release
 * when done with it.
 *
 * DESIGN
 * The engine never blocks on a socket. Output text goes into a bounded buffer
 * inside the request; after each change the engine calls the request's notify
 * callback, which the transport uses to resume a suspended connection. A
 * transport that stops draining (slow client) makes the buffer overflow and
 * the engine cancels the request. A transport whose client goes away calls
 * engine_req_cancel; the engine also polls the client's socket (set with
 * engine_req_set_fd) while the request is queued or generating, because a
 * suspended connection is never looked at by the HTTP library.
 *
 * Request states (only forward):
 *
 *   QUEUED --admit--> RUNNING --eos/length/stop--> DONE
 *      \                 \--cancel/error---------> DONE
 *       \--cancel/error/timeout------------------> DONE
 */
#ifndef CORRAL_ENGINE_H
#define CORRAL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/input.h"
#include "util/error.h"

struct capacity;
struct engine;
struct engine_req;

#define ENGINE_MAX_REPLICAS 8

/* One upstream replica of a proxied model, as the admin API shows it. */
struct engine_replica {
    char url[160];
    bool healthy;
    int outstanding;
    int64_t requests;
    int64_t failures;
};

/* Snapshot of an engine's load, for /health and the admin API. */
struct engine_stats {
    int slots_total;
    int slots_busy;
    int queued;
    int queue_cap;
    int ctx_per_slot;
    int64_t requests_total;
    int64_t tokens_prompt;
    int64_t tokens_generated;
    int64_t tokens_cached; /* prompt tokens served from a slot's KV cache */
    int64_t prompt_cache_hits;   /* prompts that restored a prefix from the host prompt cache */
    uint64_t prompt_cache_bytes; /* KV state it holds now */
    uint64_t memory_bytes; /* model + context buffers, as far as known */
    /* supervised child server (pid 0 = none) */
    int pid;
    int port;
    char log_path[256];
    /* remote replicas (proxied models) */
    int n_replicas;
    struct engine_replica replicas[ENGINE_MAX_REPLICAS];
};

struct engine_ops {
    const char *name; /* "llama", ... */
    /* Take a reference on r and queue it. On success the engine will later
     * bring r to DONE and call its notify. Fails at once (and takes no
     * reference) when the request cannot be served: prompt longer than the
     * context (CORRAL_CONTEXT_LENGTH), queue full (CORRAL_OVERLOADED),
     * engine stopping (CORRAL_UNAVAILABLE). May tokenise on the caller's
     * thread; never blocks on other requests. */
    enum corral_status (*submit)(struct engine *e, struct engine_req *r, struct corral_err *err);
    void (*stats)(struct engine *e, struct engine_stats *out);
    /* Begin to stop, without waiting: refuse new requests and fail the
     * queued ones now and the running ones at the engine's next step, each
     * with CORRAL_UNAVAILABLE and `why` ("the model was unloaded"). Safe
     * under any lock (it takes only the engine's own). The engine stays
     * valid (submit fails) until free. Idempotent: the first why counts. */
    void (*stop)(struct engine *e, const char *why);
    /* Wait until a stopped engine's thread has ended, i.e. every request it
     * held is DONE. Must not be called under a lock its requests' wake-ups
     * take. */
    void (*join)(struct engine *e);
    /* Stop (if not yet), join and free everything. */
    void (*free)(struct engine *e);
    /* false once the engine can no longer serve on its own account (its
     * child server exited); NULL = always alive. */
    bool (*alive)(struct engine *e);
};

/* Base of every backend's engine struct (the first member). */
struct engine {
    const struct engine_ops *ops;
};

static inline enum corral_status engine_submit(struct engine *e, struct engine_req *r,
                                               struct corral_err *err) {
    return e->ops->submit(e, r, err);
}
static inline void engine_stats(struct engine *e, struct engine_stats *out) { e->ops->stats(e, out); }
static inline void engine_stop(struct engine *e, const char *why) { e->ops->stop(e, why); }
static inline void engine_join(struct engine *e) { e->ops->join(e); }
static inline void engine_free(struct engine *e) {
    if (e) e->ops->free(e);
}
static inline bool engine_alive(struct engine *e) { return !e->ops->alive || e->ops->alive(e); }
static inline const char *engine_backend(const struct engine *e) { return e->ops->name; }

/* ------------------------------------------------------------ the request */

enum engine_req_state { ENGINE_REQ_QUEUED = 0, ENGINE_REQ_RUNNING, ENGINE_REQ_DONE };

enum engine_finish { ENGINE_FINISH_NONE = 0, ENGINE_FINISH_STOP, ENGINE_FINISH_LENGTH };

typedef void (*engine_notify_fn)(void *ctx);

/* Create a request over a parsed API request, whose contents it takes over
 * (*in is zeroed). out_cap bounds the output held for the transport. The
 * caller holds one reference. NULL if out of memory. */
struct engine_req *engine_req_new(struct engine_input *in, size_t out_cap);
void engine_req_retain(struct engine_req *r);
/* Drop a reference; the last one frees the request. */
void engine_req_release(struct engine_req *r);

/* The parsed request (read-only for both parties after submit). */
const struct engine_input *engine_req_input(const struct engine_req *r);
/* The request body as the client sent it (JSON text), for backends that
 * forward it; r takes over body (malloc'd). NULL/0 until set. */
void engine_req_set_body(struct engine_req *r, char *body, size_t len);
const char *engine_req_body(const struct engine_req *r, size_t *len);

/* Transport side ---------------------------------------------------------- */

/* Callback run by the engine (from its thread, with the request's lock held)
 * when the transport has parked the request (engine_req_park) and output or
 * a state change arrived. Must be cheap (resume the connection) and must not
 * call any engine_req_* function. */
void engine_req_set_notify(struct engine_req *r, engine_notify_fn fn, void *ctx);
/* The client's socket, polled by the engine for hang-ups; -1 = none. */
void engine_req_set_fd(struct engine_req *r, int fd);
/* Ask the engine to stop this request (client gone). Idempotent. */
void engine_req_cancel(struct engine_req *r);

/* What the transport sees in one look, taken under the request's lock. */
struct engine_req_view {
    enum engine_req_state state;
    enum engine_finish finish;
    enum corral_status status; /* CORRAL_OK unless the request failed */
    struct engine_usage usage;
    bool cancelled;
};

/* Move up to `cap` bytes of pending output text into dst (may be NULL to
 * just look) and describe the request in *view. Returns bytes moved. Text is
 * always whole UTF-8 characters. */
size_t engine_req_take(struct engine_req *r, char *dst, size_t cap, struct engine_req_view *view);
/* Bytes of output waiting to be taken. */
size_t engine_req_pending(struct engine_req *r);
/* After DONE with a failure: the error (copied into *err). */
void engine_req_error(struct engine_req *r, struct corral_err *err);
/* After DONE for an embedding request: the vectors (owned by r). */
const float *const *engine_req_embeddings(struct engine_req *r, size_t *n, size_t *dim);
/* What a parked transport waits for. */
enum engine_park {
    ENGINE_PARK_OUTPUT, /* streaming: output, or DONE */
    ENGINE_PARK_START,  /* a stream not yet answered: RUNNING (admitted) or DONE */
    ENGINE_PARK_DONE,   /* a whole response: DONE */
};
/* Park the transport until there is something to do: if what `mode` waits
 * for has not happened yet, call suspend(ctx) under the request's lock and
 * return true; the engine's next matching change calls notify under the
 * same lock, so a wake-up can never come before the suspension. Returns
 * false when there is something to do now (nothing was suspended).
 * suspend may be NULL (a transport that waits on its own wake-up). */
bool engine_req_park(struct engine_req *r, enum engine_park mode, void (*suspend)(void *ctx), void *ctx);
/* Longest the request may wait in its model's queue, in ms (-1 = no limit,
 * 0 = start now or not at all). Set by the transport before submitting. */
void engine_req_set_max_wait(struct engine_req *r, int64_t ms);
int64_t engine_req_max_wait_ms(const struct engine_req *r);

/* Engine side ------------------------------------------------------------- */

bool engine_req_cancelled(struct engine_req *r);
int engine_req_fd(const struct engine_req *r);
/* Poll the client sockets of reqs[0..n) once, without waiting, and cancel
 * the requests whose client hung up (engines call it every few ms for the
 * requests they hold: a suspended connection is never looked at by the
 * HTTP library). */
void engine_req_poll_hangups(struct engine_req *const *reqs, size_t n);
void engine_req_set_running(struct engine_req *r);
/* Append output text. -1 if the output buffer is full (the client does not
 * drain it): the engine should then cancel the request. */
int engine_req_push(struct engine_req *r, const char *text, size_t n);
void engine_req_set_usage(struct engine_req *r, const struct engine_usage *usage);
void engine_req_finish(struct engine_req *r, enum engine_finish finish);
/* Finish with an error; err is copied. */
void engine_req_fail(struct engine_req *r, const struct corral_err *err);
/* Hand over embedding vectors (n × dim floats each, malloc'd; r takes them). */
void engine_req_set_embeddings(struct engine_req *r, float **vecs, size_t n, size_t dim);
/* Monotonic time the request was created (µs), for logs. */
int64_t engine_req_created_us(const struct engine_req *r);
/* Monotonic time the request entered its model's queue (µs); the engine
 * sets it when it queues the request. Queue waits count from here. */
void engine_req_set_queued_us(struct engine_req *r, int64_t us);
int64_t engine_req_queued_us(const struct engine_req *r);
/* Hand the request an admission permit of gate (capacity.h): it is given
 * back when the request is freed, i.e. once both the engine and the
 * transport are done with it (the response has been sent). */
void engine_req_set_permit(struct engine_req *r, struct capacity *gate);
/* Give a DONE request's permit back now, before the request is freed (a
 * choice of several that waits for its siblings holds none). No-op
 * before DONE. */
void engine_req_drop_permit(struct engine_req *r);

/* engine_req_push with the log-probability records of the tokens whose
 * text ends within it (lps[0..k), taken over; each one's end is set). */
int engine_req_push_lp(struct engine_req *r, const char *text, size_t n, struct engine_logprob *lps, size_t k);
/* Transport side: move the records of tokens whose text lies within the
 * first `upto` output bytes into *out (malloc'd array; caller clears each
 * and frees it). Returns the count (0: *out NULL). */
size_t engine_req_take_logprobs(struct engine_req *r, size_t upto, struct engine_logprob **out);

/* A side record of the output: what an upstream's stream chunk carried
 * besides text, as a JSON object {"delta": {tool_calls, reasoning_content,
 * ...}, "logprobs": ...} (either key may be missing), placed after the
 * output bytes pushed so far. The service passes it on unchanged. */
struct engine_extra {
    size_t at;
    char *json;
};
/* Engine side: json taken over. 0, or -1 past the bound (dropped). */
int engine_req_push_extra(struct engine_req *r, char *json);
/* Transport side: where the next record stands in the output (SIZE_MAX:
 * none), and the next record if it stands within the first `upto` output
 * bytes (malloc'd; NULL: none). */
size_t engine_req_next_extra(struct engine_req *r);
char *engine_req_take_extra(struct engine_req *r, size_t upto);

/* The output's thinking section, set by the engine at submit when the
 * template has one: its tags, and whether the prompt already opened it
 * (the output then starts inside it). */
void engine_req_set_thinking(struct engine_req *r, const char *start, const char *end, bool opened);
/* false when the output has no thinking section. */
bool engine_req_thinking(const struct engine_req *r, const char **start, const char **end, bool *opened);

/* The GBNF grammar the output must follow (the request's, or one made
 * from its JSON schema), set by the engine at submit; malloc'd, taken over. */
void engine_req_set_grammar(struct engine_req *r, char *grammar);
const char *engine_req_grammar(const struct engine_req *r);
/* A lazy grammar's triggers (regular expressions; array and strings taken
 * over): the output is free until one matches, then the grammar applies. */
void engine_req_set_triggers(struct engine_req *r, char **patterns, size_t n);
const char *const *engine_req_triggers(const struct engine_req *r, size_t *n);
/* The template's tool-call syntax (chat_bridge.h; taken over, freed with
 * free_syntax): the output is parsed into content, reasoning and tool
 * calls with it. */
struct chat_syntax;
void engine_req_set_syntax(struct engine_req *r, struct chat_syntax *syntax,
                           void (*free_syntax)(struct chat_syntax *));
const struct chat_syntax *engine_req_syntax(const struct engine_req *r);
/* Data the engine keeps per request (prompt tokens); owned by the request and
 * freed with it. */
void engine_req_set_tokens(struct engine_req *r, int32_t *tokens, size_t n);
const int32_t *engine_req_tokens(const struct engine_req *r, size_t *n);
/* Embedding inputs tokenised: n_inputs arrays. */
void engine_req_set_token_lists(struct engine_req *r, int32_t **lists, size_t *lens, size_t n);
const int32_t *engine_req_token_list(const struct engine_req *r, size_t i, size_t *len);

#endif
