/* pool.h - the warm pool of models: registry, lazy loading, memory budget.
 *
 * Models are registered from the config (sections and --model) and from a
 * models directory (every *.gguf below it, id = file stem). None is loaded
 * until a request asks for it (or it is marked preload). One loader thread
 * loads models one at a time; requests for a model that is loading wait for
 * that one load (single flight). Loaded models count against a memory budget
 * (estimated from the GGUF header) and a model-count cap; to make room the
 * least recently used model with no request in flight is unloaded. A model
 * with requests in flight is never unloaded. Idle models are unloaded after
 * their keep_alive.
 *
 * States seen from outside (pool/internal.h has the whole machine):
 *
 *   UNLOADED --request/preload--> LOADING --ok--> LOADED --admin unload, in use--> UNLOADING
 *       ^                            |              |                                  |
 *       |                            +--error--> FAILED (cooldown 10 s, doubling to 5 min)
 *       +------ evicted (LRU, unpinned) / idle past keep_alive / last request ended ---+
 */
#ifndef CORRAL_POOL_H
#define CORRAL_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "capacity/capacity.h"
#include "config.h"
#include "engine/engine.h"
#include "util/error.h"

struct pool;
struct pool_pin; /* one request's hold on its model, from pool_submit to pool_release */
struct llama_engine_params;
struct proxy_engine_params;

enum pool_model_status { POOL_UNLOADED = 0, POOL_LOADING, POOL_LOADED, POOL_FAILED, POOL_UNLOADING };

#define POOL_INFO_PATH_MAX 1024

struct pool_model_info {
    char id[CONFIG_ID_MAX];
    char path[POOL_INFO_PATH_MAX]; /* a child's command or the upstream URLs for proxied models (cut if longer) */
    const char *backend; /* "llama" (in-process), "child" (a server corral runs) or "upstream" */
    enum pool_model_status status;
    char error[CORRAL_ERR_MSG_MAX]; /* last load error, "" if none */
    int64_t created;    /* wall-clock seconds the model was registered */
    int in_flight;      /* requests holding a pin (including those waiting for a load) */
    int64_t last_used_ms; /* monotonic ms of the last request, 0 = never */
    int64_t keep_alive_ms;
    uint64_t mem_estimated; /* from the GGUF header (0 if unknown) */
    uint64_t mem_measured;  /* process RSS growth across the last load (approximate) */
    int64_t load_ms;        /* how long the last load took */
    float load_progress;    /* 0..1 while loading; 1 once loaded */
    int slots;              /* sequence slots it runs with: min(parallel, host capacity) */
    int waiting_for_load;   /* requests waiting for its load */
    struct engine_stats stats; /* live numbers zeroed unless loaded; the
                                * counters (requests, tokens) add up every
                                * load since the start */
};

struct pool_stats {
    uint64_t budget;  /* bytes */
    uint64_t used;    /* estimated bytes of loaded and loading models */
    int max_models;
    int loaded;       /* loaded + loading */
    int64_t loads, evictions, load_failures;
    int waiting_for_load; /* requests waiting for a model to load */
    uint64_t rss;         /* 0 here; pool_rss() reads it (a file read: not for hot paths) */
};

/* How the pool opens engines: llama_engine_open and proxy_engine_open
 * unless a test passes its own (pool_new_with). */
struct pool_backends {
    struct engine *(*open_llama)(const struct llama_engine_params *p, struct corral_err *err);
    struct engine *(*open_proxy)(const struct proxy_engine_params *p, struct corral_err *err);
};

/* Register the models of cfg (and of cfg->models_dir) and start the loader
 * thread; models marked preload start loading at once. Each model runs
 * min(its parallel, capacity_host(gate)) slots, and its engine takes a
 * permit from gate for every request it runs. cfg and gate (NULL = no
 * gate) must outlive the pool. NULL with *err only when out of memory or
 * the thread cannot start. */
struct pool *pool_new(const struct config *cfg, struct capacity *gate, struct corral_err *err);
struct pool *pool_new_with(const struct config *cfg, struct capacity *gate, const struct pool_backends *be,
                           struct corral_err *err);
/* Begin a graceful shutdown: new requests are refused (503), no load
 * starts, a load in progress is aborted and requests waiting for a load
 * fail (503); requests in the engines go on. */
void pool_close(struct pool *p);
/* Requests the pool holds (pins not yet released). */
int pool_in_flight(struct pool *p);
/* Stop loading and stop every engine, then wait for them: requests in
 * flight fail with CORRAL_UNAVAILABLE ("the server is shutting down"), new
 * ones are refused. Pins stay valid until pool_free. */
void pool_stop(struct pool *p);
void pool_free(struct pool *p);

/* Route request r to model `id`: submit it to the model's engine now if the
 * model is loaded, else start (or join) its load and submit it when the load
 * ends (a failed load fails r with the reason). On CORRAL_OK the model is
 * pinned for r: call pool_release(p, *pin) once r is finished with. An
 * in-process model drops r's raw body (engine_req_set_body): only proxied
 * models forward it. At most queue_size + slots requests wait for one
 * model's load. Errors: CORRAL_MODEL_NOT_FOUND (message lists the ids),
 * CORRAL_UNAVAILABLE (failed recently and cooling down, being unloaded,
 * shutting down), CORRAL_OVERLOADED (too many waiting for its load), or
 * whatever the engine's submit returns. */
enum corral_status pool_submit(struct pool *p, const char *id, struct engine_req *r, struct pool_pin **pin,
                               struct corral_err *err);
/* Let go of a pin (NULL is ignored); a request still waiting for a load
 * leaves the list. */
void pool_release(struct pool *p, struct pool_pin *pin);

/* Start loading model id in the background now, even during a failure
 * cooldown. *status gets the model's state after the call (LOADED if it
 * already was). CORRAL_MODEL_NOT_FOUND for an unknown id. */
enum corral_status pool_load(struct pool *p, const char *id, enum pool_model_status *status,
                             struct corral_err *err);
/* Unload model id. With nothing in flight it is unloaded before returning
 * (*done = true); otherwise it is unloaded when its last request ends and new
 * requests are refused meanwhile (*done = false). force cancels the requests
 * in flight (their clients get an error) instead of waiting for them. A
 * load in progress is aborted; requests waiting for it fail. The engine is
 * stopped without waiting for it (never under the pool's lock). */
enum corral_status pool_unload(struct pool *p, const char *id, bool force, bool *done, struct corral_err *err);
/* Register a GGUF file as model id. The file must resolve (symlinks and ".."
 * followed) to a regular *.gguf file inside models_dir; CORRAL_FORBIDDEN
 * otherwise, CORRAL_INVALID_REQUEST for a bad or taken id. */
enum corral_status pool_register(struct pool *p, const char *id, const char *path, struct corral_err *err);

size_t pool_count(struct pool *p);
/* Describe model i (0 <= i < pool_count). 0 on success, -1 if out of range. */
int pool_info(struct pool *p, size_t i, struct pool_model_info *out);
void pool_stats(struct pool *p, struct pool_stats *out);

/* The memory model id would take, estimated from its GGUF header with the
 * slots and context it would load with (estimate.h). 0, or -1 when it is
 * not an in-process model or its file cannot be read. */
int pool_estimate(struct pool *p, const char *id, uint64_t *bytes);

/* What happened to models lately (loads, unloads, evictions, failed
 * loads), for the status page: the newest POOL_EVENTS at most. */
#define POOL_EVENTS 32
struct pool_event {
    int64_t time_s; /* wall clock */
    char model[64];
    char what[16];   /* "loaded", "unloaded", "evicted", "failed" */
    char detail[96]; /* "in 230 ms", the reason, the error */
};
/* Copy them newest first into out (room for max). Returns the count. */
size_t pool_events(struct pool *p, struct pool_event *out, size_t max);
const char *pool_status_name(enum pool_model_status s);
/* Resident memory of this process, bytes (reads /proc/self/statm). */
uint64_t pool_rss(void);

#endif
