/* service.h - the handlers every transport calls: the OpenAI API, the
 * operator's views and the admin API, knowing no socket and no framing.
 *
 * A transport (http/, rpc/) turns what it reads into a method and a body
 * and calls one of two entry points:
 *   - svc_simple for the answers that never queue behind inference (health,
 *     capacity, metrics, models, admin): one result, at once;
 *   - svc_call_start for inference (chat, completions, embeddings): a call
 *     that goes through the pool and the one admission gate, and that the
 *     transport drives with svc_call_next until its end, parking between
 *     events (svc_call_park) so the engine's wake-up comes back to it.
 * Every transport frames the same results: an HTTP response or SSE event,
 * a JSON-RPC response or stream.chunk notification.
 *
 * The service also keeps what is process-wide across transports: the
 * drain flag, the count of requests in flight (the shutdown waits for it)
 * and the count of requests by transport for /metrics.
 */
#ifndef CORRAL_SERVICE_H
#define CORRAL_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "util/error.h"

struct pool;
struct capacity;
struct service;
struct svc_call;

enum svc_transport { SVC_HTTP = 0, SVC_WEBSOCKET, SVC_STDIO, SVC_N_TRANSPORTS };

enum svc_method_id {
    SVC_HEALTH = 0,
    SVC_CAPACITY,
    SVC_METRICS,
    SVC_MODELS,
    SVC_MODEL, /* one model: its id comes apart from the body */
    SVC_CHAT,
    SVC_COMPLETIONS,
    SVC_EMBEDDINGS,
    SVC_ADMIN_MODELS,
    SVC_ADMIN_POOL,
    SVC_ADMIN_LOAD,
    SVC_ADMIN_UNLOAD,
    SVC_ADMIN_REGISTER,
    SVC_STATUS, /* everything the status page shows, in one object */
    SVC_N_METHODS,
};

/* What a method is, for every transport's access rules. */
struct svc_method {
    enum svc_method_id id;
    const char *name; /* its JSON-RPC name: "chat.completions", "admin.load", ... */
    bool auth;        /* needs the API key when one is set */
    bool admin;       /* needs the admin key, or a loopback client when none is set */
    bool infer;       /* an inference call (svc_call_start), not svc_simple */
    bool body;        /* takes a JSON body (params) */
};

const struct svc_method *svc_method(enum svc_method_id id);
/* The method of a JSON-RPC name (aliases included), or NULL. */
const struct svc_method *svc_method_named(const char *name);

/* What the operator's views show of the HTTP transport (connections and
 * responses by status). The HTTP server registers a function that fills
 * it; without one those lines are left out. */
#define SVC_MAX_CODES 32
struct svc_http_stats {
    int connections;
    int max_connections;
    int64_t connection_timeouts;
    uint64_t request_memory;
    const int *codes; /* codes[i] was answered counts[i] times */
    int64_t counts[SVC_MAX_CODES];
    size_t n_codes;
};
typedef void (*svc_http_stats_fn)(void *ctx, struct svc_http_stats *out);

struct service_params {
    struct pool *pool;        /* borrowed; must outlive the service */
    struct capacity *gate;    /* borrowed; NULL = none */
    int64_t queue_timeout_ms; /* default queue-wait bound; -1 = none */
};

struct service *service_new(const struct service_params *p);
void service_free(struct service *s);
void service_set_http_stats(struct service *s, svc_http_stats_fn fn, void *ctx);

/* Begin a graceful shutdown: from now on svc_draining is true and every
 * transport answers new requests with svc_shutting_down's error. */
void service_drain(struct service *s);
bool service_draining(struct service *s);
/* Requests in flight across every transport: a transport counts one from
 * the moment it takes a request until its answer has been sent. */
void service_enter(struct service *s);
void service_leave(struct service *s);
int service_active(struct service *s);
/* Count one request received over t (for /metrics). */
void service_count(struct service *s, enum svc_transport t);
/* A JSON-RPC session opened (+1) or closed (-1), for /metrics. */
void service_session(struct service *s, int delta);
/* The error a request gets while the server shuts down. */
void svc_shutting_down(struct corral_err *err);

/* ------------------------------------------------------------ one result */

struct svc_result {
    unsigned status; /* the HTTP status: 200, 201, 202, 503 (health while draining), or err's */
    char *json;      /* the result as JSON text (malloc'd), or NULL */
    char *text;      /* or a text result (metrics), malloc'd, text_len bytes */
    size_t text_len;
    struct corral_err err; /* err.status != CORRAL_OK: the call failed */
};

void svc_result_free(struct svc_result *r);
/* Fill r with a failure (status from the error table). */
void svc_result_fail(struct svc_result *r, const struct corral_err *err);

/* Answer a method that does not infer. id: SVC_MODEL's model id; body:
 * the JSON body (admin POSTs), may be NULL/0 otherwise. Always fills *res. */
void svc_simple(struct service *s, const struct svc_method *m, const char *id, const char *body, size_t len,
                struct svc_result *res);

/* ------------------------------------------------------------ inference */

struct svc_call_params {
    enum svc_transport transport;
    int64_t max_wait_ms; /* queue-wait bound; -1 = the server's queue_timeout */
    int fd;              /* the client's socket, polled by the engine for hang-ups; -1 = none */
    engine_notify_fn notify; /* run (cheap, from any thread) when a parked call can go on */
    void *notify_ctx;
};

/* Parse body (JSON text, len bytes; taken over: malloc'd or NULL) as a
 * request of method m, and submit it to the pool. On CORRAL_OK *out is the
 * call (free with svc_call_free); else *err says why (with its HTTP status
 * through the error table) and nothing is left to free. */
enum corral_status svc_call_start(struct service *s, const struct svc_method *m, char *body, size_t len,
                                  const struct svc_call_params *p, struct svc_call **out, struct corral_err *err);

enum svc_event {
    SVC_EV_NONE = 0, /* nothing now: park the call and wait for its notify */
    SVC_EV_START,    /* a stream was admitted: its transport may start the stream */
    SVC_EV_CHUNK,    /* one stream chunk (the SSE event's object) in *json */
    SVC_EV_END,      /* the call is over: *res is the whole response, the stream's end, or the failure */
};

/* The call's next event. CHUNK: *json is malloc'd JSON text (caller frees).
 * END: res is filled: for a whole response, the response object; for a
 * stream, {"finish_reason","usage"} after the last chunk (finish and usage
 * chunks included); or the failure (with its HTTP status; for a stream
 * that had started, the transport sends it as its in-stream error). END
 * comes once; after it only END's repeat is NONE. */
enum svc_event svc_call_next(struct svc_call *c, char **json, struct svc_result *res);
/* Park the call until what it waits for happens: call suspend(ctx) under
 * the request's lock and return true, or return false if there is an
 * event now (nothing was suspended). suspend may be NULL. */
bool svc_call_park(struct svc_call *c, void (*suspend)(void *ctx), void *ctx);
/* Stop the call (its client left or asked): the engine drops it within a
 * step. Idempotent; the call still ends with an END. */
void svc_call_cancel(struct svc_call *c);
/* Its id ("chatcmpl-..."), for logs. */
const char *svc_call_id(const struct svc_call *c);
bool svc_call_streaming(const struct svc_call *c);
/* Detach, cancel if not done and free: no notify runs after this returns.
 * The admission permit goes back once the engine lets go too. */
void svc_call_free(struct svc_call *c);

#endif
