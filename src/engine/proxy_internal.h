/* proxy_internal.h - what the proxy engine's files share (proxy_engine.c:
 * the thread, health, lifecycle; proxy_xfer.c: requests upstream). Not for
 * other modules. */
#ifndef CORRAL_PROXY_INTERNAL_H
#define CORRAL_PROXY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "engine/admit.h"
#include "engine/proxy_engine.h"
#include "engine/sse_in.h"
#include "engine/supervisor.h"
#include "util/buf.h"

#define PROXY_POLL_MS 20             /* hang-ups and deadlines while busy */
#define PROXY_IDLE_MS 1000           /* longest sleep when idle */
#define PROXY_PROBE_EVERY_MS 500     /* start-up health probes */
#define PROXY_PROBE_TIMEOUT_MS 3000  /* one probe */
#define PROXY_CHECK_HEALTHY_MS 5000  /* a healthy replica's check */
#define PROXY_CHECK_EJECTED_MS 1000  /* an ejected replica's check */
#define PROXY_CONNECT_TIMEOUT_MS 5000
#define PROXY_LINE_MAX (1u << 20)    /* one SSE line from upstream */
#define PROXY_ERR_BODY_MAX (64u << 10)
#define PROXY_EMBED_BODY_MAX (256u << 20)
#define PROXY_STOP_GRACE_MS 5000     /* SIGTERM, then SIGKILL */
#define PROXY_LOG_CAP ((size_t)16 << 20)
#define PROXY_CHILD_EXIT_WAIT_MS 250 /* a broken child connection: wait this long for its exit */

enum proxy_state { PX_STARTING = 0, PX_READY, PX_FAILED, PX_DEAD };

enum handle_kind { H_XFER = 1, H_PROBE };

struct replica {
    char url[160]; /* the server's root, no trailing slash */
    /* guarded by the engine's mu (read by stats) */
    bool healthy;
    int outstanding;
    int64_t requests, failures;
    /* engine thread only */
    int64_t next_check_ms;
    struct probe *probe; /* a health check in flight */
};

struct probe {
    enum handle_kind kind; /* H_PROBE; first, like xfer's */
    int replica;
    CURL *easy;
};

/* One request in flight upstream. */
struct xfer {
    enum handle_kind kind; /* H_XFER */
    struct proxy_engine *e;
    struct engine_req *req;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    size_t body_len;
    const char *path;
    int replica;
    unsigned tried; /* bit per replica */
    bool sse;       /* chat/completions: an event stream upstream */
    bool streamed;  /* some text reached the request (no retry after this) */
    bool running;   /* the request was marked RUNNING */
    bool got_done;
    bool failed;    /* failed in the middle: err says why */
    struct corral_err err;
    enum engine_finish finish;
    bool have_usage;
    struct engine_usage usage;
    int64_t chunks;
    struct sse_in in; /* the upstream event stream, line by line */
    struct buf whole; /* an error body, or the embeddings answer */
    char curl_err[CURL_ERROR_SIZE];
};

struct proxy_engine {
    struct engine base; /* must be first */
    char *id;
    char *upstream_model;
    char *auth_header; /* "Authorization: Bearer ..." or NULL */
    char *health_path;
    size_t out_cap;
    int n_slots;

    struct admit admit;
    struct engine_req **took; /* n_slots */
    struct xfer **xfers;      /* n_slots; NULL = free */
    _Atomic int busy;

    struct replica replicas[ENGINE_MAX_REPLICAS];
    int n_replicas;
    unsigned rr;

    CURLM *multi;
    pthread_t thread;
    bool thread_started;
    bool joined; /* guarded by join_mu: stop may come from two threads */
    pthread_mutex_t join_mu;
    _Atomic bool stopping;

    pthread_mutex_t mu; /* state, fail_msg, replica counters */
    pthread_cond_t cv;  /* open() waits for the start-up here */
    enum proxy_state state;
    char fail_msg[CORRAL_ERR_MSG_MAX];

    /* child */
    struct child *child;
    int pid, port;
    char log_path[256];
    int64_t start_ms, startup_deadline_ms, next_probe_ms;
    void (*dead)(void *ctx);
    void *dead_ctx;
    bool (*aborted)(void *ctx);
    void *aborted_ctx;

    _Atomic int64_t st_prompt, st_generated, st_cached;
};

/* proxy_xfer.c (engine thread) */
/* Start r upstream on a free slot (r holds a permit), or fail it. */
void proxy__start(struct proxy_engine *e, struct engine_req *r);
/* A transfer ended (CURLMSG_DONE). */
void proxy__xfer_done(struct proxy_engine *e, struct xfer *x, CURLcode res);
void proxy__xfer_free(struct proxy_engine *e, struct xfer *x);
/* Give back x's replica claim (failed: count a failure). */
void proxy__unclaim(struct proxy_engine *e, struct xfer *x, bool failed);
/* Take replica i out of rotation until a health check answers 200. */
void proxy__eject(struct proxy_engine *e, int i, const char *why);
/* A curl write callback that keeps nothing. */
size_t proxy__discard(char *ptr, size_t size, size_t nmemb, void *ud);

/* proxy_engine.c (engine thread) */
void proxy__child_exited(struct proxy_engine *e, int status);

#endif
