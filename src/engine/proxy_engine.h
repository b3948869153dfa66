/* proxy_engine.h - a model served by another OpenAI-compatible server: a
 * child process corral starts and minds, or remote upstream replicas.
 *
 * To the pool and the transport it is an engine like the in-process one:
 * requests queue in the same bounded queue, take the same permits from the
 * host's gate (one per request in flight upstream, `parallel` at most), and
 * their text streams out through the same request object, so a client
 * cannot tell where a model runs.
 */
#ifndef CORRAL_PROXY_ENGINE_H
#define CORRAL_PROXY_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

struct capacity;

struct proxy_engine_params {
    const char *id;          /* model id: names it in messages and logs, default upstream model name */
    int parallel;            /* requests in flight upstream at once */
    int queue_size;          /* requests allowed to wait beyond those that can start */
    struct capacity *gate;   /* admission gate; NULL = none */
    size_t out_cap;          /* per-request output bound */
    const char *health_path; /* NULL = "/health" */

    /* a child server (command set) ... */
    const char *command;        /* split without a shell; {port} and {model} substituted */
    const char *model_path;     /* {model}; NULL = id */
    const char *log_dir;        /* the child's output goes to log_dir/ID.log (created) */
    int64_t startup_timeout_ms; /* until the health path answers 200 */

    /* ... or remote replicas (upstream set) */
    const char *upstream;       /* "URL[, URL...]", each the server's root (a trailing /v1 is dropped) */
    const char *upstream_model; /* "model" sent upstream; NULL = id */
    const char *api_key;        /* sent as "Authorization: Bearer"; NULL = none */

    /* Called from the engine's thread (no lock held) when the child exits
     * on its own: the engine then fails its requests and serves no more
     * (engine_alive is false). May be NULL. */
    void (*dead)(void *ctx);
    void *dead_ctx;
    /* Polled during a child's start-up: true stops it (open then fails).
     * May be NULL. */
    bool (*aborted)(void *ctx);
    void *aborted_ctx;
};

/* Start serving. A child is spawned (from the calling thread, which must
 * outlive it: the child is set to die with that thread) and this waits until
 * it is healthy, exits (the error names its exit status and log file) or
 * startup_timeout passes (it is killed). Upstream replicas are health-checked
 * in the background. NULL with *err on failure. Free with engine_free. */
struct engine *proxy_engine_open(const struct proxy_engine_params *p, struct corral_err *err);

#endif
