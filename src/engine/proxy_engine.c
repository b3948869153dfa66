/* proxy_engine.c - a model served by a child server or remote replicas
 * (see proxy_engine.h).
 *
 * DESIGN
 * One thread per proxied model runs a libcurl multi loop. It takes the
 * requests that may start from the model's queue (engine/admit.h: the same
 * bound and permits as an in-process model), sends each upstream with
 * "model" rewritten and, for chat and completions, always as a stream
 * (with usage), and turns the upstream's SSE events back into text for the
 * request object as they arrive. The transport then frames them exactly as
 * for an in-process model (its own id, its own model name, a whole response
 * when the client did not ask for a stream), so nothing is ever buffered
 * whole and every model looks the same. Embeddings are forwarded as they
 * are and their vectors parsed from the answer.
 *
 * Connections are reused by the multi handle. The loop also polls, next to
 * curl's sockets, the child's pidfd (a crash is noticed at once) and its
 * output pipe (drained into its size-capped log), and it sleeps in
 * curl_multi_poll; a submit or a granted permit wakes it with
 * curl_multi_wakeup.
 *
 * A stream's client gets its 200 only once the upstream has answered with
 * one (engine_req_set_running), so a request that fails before that, on
 * every replica, gets a plain HTTP error.
 *
 * Replicas are chosen by least outstanding requests among the healthy ones.
 * A replica that fails a connection or a health check is ejected and checked
 * every second until it answers 200 again; healthy ones are checked every
 * 5 s. A request is retried on another replica only while nothing of it has
 * reached the client.
 *
 * Child states:
 *
 *   STARTING --health 200--> READY --exits on its own--> DEAD (requests in
 *      |                                                 flight get 502)
 *      +--exits / never healthy / stop--> FAILED (open returns the error)
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include "engine/proxy_engine.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "capacity/capacity.h"
#include "engine/admit.h"
#include "engine/supervisor.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/time.h"

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
    struct api_usage usage;
    int64_t chunks;
    struct buf line;  /* an SSE line being assembled */
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
    char stop_why[160]; /* written once, before stopping is set */

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

static const struct engine_ops proxy_engine__ops;

/* ------------------------------------------------------------ helpers */

static void proxy__global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static void proxy__notify(void *ctx) {
    struct proxy_engine *e = ctx;
    if (e->multi) curl_multi_wakeup(e->multi);
}

/* Parse "URL[, URL...]" into replicas. 0, or -1 with err. */
static int proxy__parse_upstreams(struct proxy_engine *e, const char *list, struct corral_err *err) {
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p) break;
        const char *end = p;
        while (*end && *end != ',' && *end != ' ' && *end != '\t') end++;
        size_t n = (size_t)(end - p);
        if (e->n_replicas == ENGINE_MAX_REPLICAS) {
            corral_err_set(err, CORRAL_CONFIG, NULL, "model '%s': at most %d upstream replicas", e->id,
                           ENGINE_MAX_REPLICAS);
            return -1;
        }
        struct replica *r = &e->replicas[e->n_replicas];
        if (n >= sizeof r->url || (strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0)) {
            corral_err_set(err, CORRAL_CONFIG, NULL, "model '%s': upstream '%.*s' is not an http:// or https:// URL",
                           e->id, (int)(n > 200 ? 200 : n), p);
            return -1;
        }
        memcpy(r->url, p, n);
        r->url[n] = '\0';
        while (n > 0 && r->url[n - 1] == '/') r->url[--n] = '\0';
        if (n >= 3 && strcmp(r->url + n - 3, "/v1") == 0) r->url[n - 3] = '\0';
        r->healthy = true;
        e->n_replicas++;
        p = end;
    }
    if (e->n_replicas == 0) {
        corral_err_set(err, CORRAL_CONFIG, NULL, "model '%s': upstream lists no URL", e->id);
        return -1;
    }
    return 0;
}

/* Map an upstream error answer to ours, with its message when it has one. */
static void proxy__upstream_error(struct proxy_engine *e, struct xfer *x, long code, struct corral_err *err) {
    const char *url = e->replicas[x->replica].url;
    char msg[CORRAL_ERR_MSG_MAX - 128];
    msg[0] = '\0';
    json_t *j = x->whole.len ? json_loadb(x->whole.data, x->whole.len, 0, NULL) : NULL;
    json_t *eo = j ? json_object_get(j, "error") : NULL;
    const char *m = json_is_object(eo) ? json_string_value(json_object_get(eo, "message"))
                    : json_is_string(eo) ? json_string_value(eo)
                                         : NULL;
    if (m)
        snprintf(msg, sizeof msg, "%s", m);
    else if (x->whole.len)
        snprintf(msg, sizeof msg, "%.*s", (int)(x->whole.len > 200 ? 200 : x->whole.len), x->whole.data);
    enum corral_status st = code == 400 || code == 413 || code == 422 ? CORRAL_INVALID_REQUEST
                            : code == 429 || code == 503           ? CORRAL_OVERLOADED
                                                                   : CORRAL_BAD_GATEWAY;
    if (st == CORRAL_INVALID_REQUEST)
        corral_err_set(err, st, NULL, "%s", msg[0] ? msg : "the upstream server refused the request");
    else
        corral_err_set(err, st, NULL, "model '%s': %s answered %ld%s%s", e->id, url, code, msg[0] ? ": " : "",
                       msg);
    json_decref(j);
}

/* ------------------------------------------------------------ SSE in */

/* One "data:" payload of the upstream stream. */
static void proxy__event(struct xfer *x, const char *data, size_t n) {
    if (n == 6 && memcmp(data, "[DONE]", 6) == 0) {
        x->got_done = true;
        return;
    }
    json_t *j = json_loadb(data, n, 0, NULL);
    if (!j) return; /* not JSON: ignore it, as OpenAI clients do */
    json_t *eo = json_object_get(j, "error");
    if (eo) {
        const char *m = json_is_object(eo) ? json_string_value(json_object_get(eo, "message")) : NULL;
        corral_err_set(&x->err, CORRAL_BAD_GATEWAY, NULL, "model '%s': the upstream server failed mid-stream: %s",
                       x->e->id, m ? m : "(no message)");
        x->failed = true;
        json_decref(j);
        return;
    }
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    if (ch) {
        json_t *delta = json_object_get(ch, "delta");
        const char *text = delta ? json_string_value(json_object_get(delta, "content"))
                                 : json_string_value(json_object_get(ch, "text"));
        size_t tl = text ? strlen(text) : 0;
        if (tl > 0) {
            if (engine_req_push(x->req, text, tl) != 0) {
                corral_err_set(&x->err, CORRAL_CANCELLED, NULL, "client too slow: output buffer full");
                x->failed = true;
            } else {
                x->streamed = true;
                x->chunks++;
            }
        }
        const char *fr = json_string_value(json_object_get(ch, "finish_reason"));
        if (fr) x->finish = strcmp(fr, "length") == 0 ? ENGINE_FINISH_LENGTH : ENGINE_FINISH_STOP;
    }
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        x->have_usage = true;
        x->usage.prompt_tokens = json_integer_value(json_object_get(u, "prompt_tokens"));
        x->usage.completion_tokens = json_integer_value(json_object_get(u, "completion_tokens"));
        json_t *d = json_object_get(u, "prompt_tokens_details");
        x->usage.cached_tokens = d ? json_integer_value(json_object_get(d, "cached_tokens")) : 0;
    }
    json_decref(j);
}

static size_t proxy__on_data(char *ptr, size_t size, size_t nmemb, void *ud) {
    struct xfer *x = ud;
    size_t n = size * nmemb;
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    /* the client's answer starts (200 and headers) once the upstream's has */
    if (code < 400 && !x->running) {
        engine_req_set_running(x->req);
        x->running = true;
    }
    if (code >= 400 || !x->sse) {
        if (buf_append(&x->whole, ptr, n) != 0) {
            if (code >= 400) return n; /* the start of an error body is enough */
            corral_err_set(&x->err, CORRAL_BAD_GATEWAY, NULL, "model '%s': the upstream answer is too large",
                           x->e->id);
            x->failed = true;
            return 0;
        }
        return n;
    }
    if (buf_append(&x->line, ptr, n) != 0) {
        corral_err_set(&x->err, CORRAL_BAD_GATEWAY, NULL, "model '%s': an upstream event is too large", x->e->id);
        x->failed = true;
        return 0;
    }
    size_t start = 0;
    for (size_t i = 0; i < x->line.len && !x->failed; i++) {
        if (x->line.data[i] != '\n') continue;
        size_t end = i;
        if (end > start && x->line.data[end - 1] == '\r') end--;
        const char *l = x->line.data + start;
        size_t ll = end - start;
        if (ll >= 5 && memcmp(l, "data:", 5) == 0) {
            l += 5;
            ll -= 5;
            if (ll && *l == ' ') {
                l++;
                ll--;
            }
            proxy__event(x, l, ll);
        }
        start = i + 1;
    }
    buf_consume(&x->line, start);
    return x->failed ? 0 : n;
}

static size_t proxy__discard(char *ptr, size_t size, size_t nmemb, void *ud) {
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

/* ------------------------------------------------------------ requests */

/* The healthy replica with the fewest requests in flight among those not
 * yet tried (ties rotate); -1 if none. */
static int proxy__pick(struct proxy_engine *e, unsigned tried) {
    int best = -1;
    pthread_mutex_lock(&e->mu);
    for (int k = 0; k < e->n_replicas; k++) {
        int i = (int)((e->rr + (unsigned)k) % (unsigned)e->n_replicas);
        if ((tried >> i) & 1u || !e->replicas[i].healthy) continue;
        if (best < 0 || e->replicas[i].outstanding < e->replicas[best].outstanding) best = i;
    }
    if (best >= 0) {
        e->replicas[best].outstanding++;
        e->replicas[best].requests++;
        e->rr++;
    }
    pthread_mutex_unlock(&e->mu);
    return best;
}

static void proxy__xfer_free(struct proxy_engine *e, struct xfer *x) {
    if (x->easy) {
        curl_multi_remove_handle(e->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->headers);
    free(x->body);
    buf_free(&x->line);
    buf_free(&x->whole);
    for (int i = 0; i < e->n_slots; i++)
        if (e->xfers[i] == x) e->xfers[i] = NULL;
    engine_req_release(x->req);
    atomic_fetch_sub(&e->busy, 1);
    free(x);
}

/* The request's replica no longer counts it. */
static void proxy__unclaim(struct proxy_engine *e, struct xfer *x, bool failed) {
    pthread_mutex_lock(&e->mu);
    struct replica *r = &e->replicas[x->replica];
    if (r->outstanding > 0) r->outstanding--;
    if (failed) r->failures++;
    pthread_mutex_unlock(&e->mu);
}

static void proxy__eject(struct proxy_engine *e, int i, const char *why) {
    struct replica *r = &e->replicas[i];
    pthread_mutex_lock(&e->mu);
    bool was = r->healthy;
    r->healthy = false;
    pthread_mutex_unlock(&e->mu);
    r->next_check_ms = time_now_ms() + PROXY_CHECK_EJECTED_MS;
    if (was && !e->child) log_warn("model %s: upstream %s ejected: %s", e->id, r->url, why);
}

/* Send x to a replica it has not tried. -1 if there is none left. */
static int proxy__issue(struct proxy_engine *e, struct xfer *x) {
    int i = proxy__pick(e, x->tried);
    if (i < 0) return -1;
    x->replica = i;
    x->tried |= 1u << i;
    if (x->easy) {
        curl_multi_remove_handle(e->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    buf_reset(&x->line);
    buf_reset(&x->whole);
    x->got_done = x->have_usage = false;
    x->chunks = 0;
    x->finish = ENGINE_FINISH_NONE;
    x->curl_err[0] = '\0';
    x->easy = curl_easy_init();
    if (!x->easy) return -1;
    char url[sizeof e->replicas[0].url + 32];
    snprintf(url, sizeof url, "%s%s", e->replicas[i].url, x->path);
    CURL *h = x->easy;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, proxy__on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_PRIVATE, x);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->curl_err);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)PROXY_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "identity");
    if (curl_multi_add_handle(e->multi, h) != CURLM_OK) return -1;
    return 0;
}

static void proxy__fail(struct engine_req *r, enum corral_status st, const char *fmt, const char *a, const char *b) {
    struct corral_err err;
    corral_err_set(&err, st, NULL, fmt, a, b);
    engine_req_fail(r, &err);
}

/* Start request r (taken from the queue with a permit). */
static void proxy__start(struct proxy_engine *e, struct engine_req *r) {
    const struct api_request *in = engine_req_input(r);
    int slot = -1;
    for (int i = 0; i < e->n_slots && slot < 0; i++)
        if (!e->xfers[i]) slot = i;
    struct xfer *x = slot >= 0 ? calloc(1, sizeof *x) : NULL;
    if (!x) {
        proxy__fail(r, CORRAL_NOMEM, "%s%s", "out of memory", "");
        engine_req_release(r);
        return;
    }
    atomic_fetch_add(&e->busy, 1);
    e->xfers[slot] = x;
    x->kind = H_XFER;
    x->e = e;
    x->req = r;
    x->sse = in->kind != API_EMBEDDING;
    x->path = in->kind == API_CHAT ? "/v1/chat/completions"
              : in->kind == API_COMPLETION ? "/v1/completions"
                                           : "/v1/embeddings";
    buf_init(&x->line, PROXY_LINE_MAX);
    buf_init(&x->whole, x->sse ? PROXY_ERR_BODY_MAX : PROXY_EMBED_BODY_MAX);

    /* the client's body, with our model name swapped for the upstream's */
    size_t blen = 0;
    const char *body = engine_req_body(r, &blen);
    json_t *j = body ? json_loadb(body, blen, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        proxy__fail(r, CORRAL_INTERNAL, "%s%s", "the request body is not available for forwarding", "");
        proxy__xfer_free(e, x);
        return;
    }
    json_object_set_new(j, "model", json_string(e->upstream_model));
    json_object_del(j, "keep_alive");
    if (x->sse) {
        json_object_set_new(j, "stream", json_true());
        json_object_set_new(j, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    x->body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    x->body_len = x->body ? strlen(x->body) : 0;
    x->headers = curl_slist_append(NULL, "Content-Type: application/json");
    x->headers = curl_slist_append(x->headers, x->sse ? "Accept: text/event-stream" : "Accept: application/json");
    x->headers = curl_slist_append(x->headers, "Expect:");
    if (e->auth_header) x->headers = curl_slist_append(x->headers, e->auth_header);
    if (!x->body || !x->headers) {
        proxy__fail(r, CORRAL_NOMEM, "%s%s", "out of memory", "");
        proxy__xfer_free(e, x);
        return;
    }
    if (proxy__issue(e, x) != 0) {
        if (e->child)
            proxy__fail(r, CORRAL_BAD_GATEWAY, "model '%s': %s", e->id, "its server cannot take the request");
        else
            proxy__fail(r, CORRAL_UNAVAILABLE, "model '%s': %s", e->id, "no upstream replica is healthy; retry later");
        proxy__xfer_free(e, x);
    }
}

/* Parse the embeddings answer into vectors for the request. */
static void proxy__embeddings(struct proxy_engine *e, struct xfer *x) {
    json_t *j = json_loadb(x->whole.data ? x->whole.data : "", x->whole.len, 0, NULL);
    json_t *data = j ? json_object_get(j, "data") : NULL;
    size_t n = json_array_size(data), dim = 0;
    float **vecs = n ? calloc(n, sizeof *vecs) : NULL;
    bool ok = json_is_array(data) && n > 0 && vecs;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *item = json_array_get(data, i);
        json_t *emb = json_object_get(item, "embedding");
        json_t *idx = json_object_get(item, "index");
        size_t at = json_is_integer(idx) ? (size_t)json_integer_value(idx) : i;
        size_t d = json_array_size(emb);
        if (!json_is_array(emb) || d == 0 || (dim && d != dim) || at >= n || vecs[at]) {
            ok = false;
            break;
        }
        dim = d;
        vecs[at] = malloc(d * sizeof(float));
        if (!vecs[at]) {
            ok = false;
            break;
        }
        for (size_t k = 0; k < d; k++) vecs[at][k] = (float)json_number_value(json_array_get(emb, k));
    }
    for (size_t i = 0; ok && i < n; i++) ok = vecs[i] != NULL;
    if (!ok) {
        if (vecs)
            for (size_t i = 0; i < n; i++) free(vecs[i]);
        free(vecs);
        json_decref(j);
        proxy__fail(x->req, CORRAL_BAD_GATEWAY, "model '%s': %s", e->id, "the upstream's embeddings answer is malformed");
        return;
    }
    json_t *u = json_object_get(j, "usage");
    struct api_usage usage = {.prompt_tokens = u ? json_integer_value(json_object_get(u, "prompt_tokens")) : 0};
    json_decref(j);
    engine_req_set_embeddings(x->req, vecs, n, dim);
    engine_req_set_usage(x->req, &usage);
    atomic_fetch_add(&e->st_prompt, usage.prompt_tokens);
    engine_req_finish(x->req, ENGINE_FINISH_STOP);
}

static void proxy__child_exited(struct proxy_engine *e, int status);

/* A child's connection broke: if that is because the child is exiting, wait
 * (briefly) for its exit so that every request in flight gets the exit
 * status and log path rather than a bare transport error. The kernel closes
 * a dying process's sockets before it becomes waitable, so the broken
 * connection is nearly always seen first. True if it exited (the requests
 * in flight have then been failed and freed). */
static bool proxy__child_died(struct proxy_engine *e) {
    if (!e->child) return false;
    int64_t deadline = time_now_ms() + PROXY_CHILD_EXIT_WAIT_MS;
    int status = 0;
    while (!child_reap(e->child, &status)) {
        int64_t left = deadline - time_now_ms();
        if (left <= 0) return false;
        if (child_pidfd(e->child) >= 0) {
            struct pollfd pf = {.fd = child_pidfd(e->child), .events = POLLIN};
            poll(&pf, 1, (int)left);
        } else {
            struct timespec ts = {0, 5 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    while (child_out_fd(e->child) >= 0 && child_drain(e->child) > 0) {
    }
    proxy__child_exited(e, status);
    return true;
}

/* A transfer ended (CURLMSG_DONE). */
static void proxy__xfer_done(struct proxy_engine *e, struct xfer *x, CURLcode res) {
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (e->child && !x->failed && (res != CURLE_OK || (x->sse && code < 400 && !x->got_done &&
                                                        x->finish == ENGINE_FINISH_NONE))) {
        if (proxy__child_died(e)) return;
    }
    if (x->failed) {
        proxy__unclaim(e, x, false);
        engine_req_fail(x->req, &x->err);
        proxy__xfer_free(e, x);
        return;
    }
    const char *url = e->replicas[x->replica].url;
    if (res != CURLE_OK) {
        proxy__unclaim(e, x, true);
        if (!e->child) proxy__eject(e, x->replica, x->curl_err[0] ? x->curl_err : curl_easy_strerror(res));
        if (!x->streamed && !e->child && proxy__issue(e, x) == 0) return; /* another replica */
        char msg[CORRAL_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s%s", x->streamed ? "the connection broke mid-stream: " : "",
                 x->curl_err[0] ? x->curl_err : curl_easy_strerror(res));
        struct corral_err err;
        corral_err_set(&err, CORRAL_BAD_GATEWAY, NULL, "model '%s': %s failed: %s", e->id, url, msg);
        engine_req_fail(x->req, &err);
        proxy__xfer_free(e, x);
        return;
    }
    if (code >= 400) {
        proxy__unclaim(e, x, code >= 500);
        if ((code >= 500 || code == 429) && !x->streamed && !e->child && proxy__issue(e, x) == 0) return;
        struct corral_err err;
        proxy__upstream_error(e, x, code, &err);
        engine_req_fail(x->req, &err);
        proxy__xfer_free(e, x);
        return;
    }
    proxy__unclaim(e, x, false);
    if (!x->sse) {
        proxy__embeddings(e, x);
    } else if (!x->got_done && x->finish == ENGINE_FINISH_NONE) {
        struct corral_err err;
        corral_err_set(&err, CORRAL_BAD_GATEWAY, NULL, "model '%s': %s ended the stream early", e->id, url);
        engine_req_fail(x->req, &err);
    } else {
        if (!x->have_usage) x->usage.completion_tokens = x->chunks;
        engine_req_set_usage(x->req, &x->usage);
        atomic_fetch_add(&e->st_prompt, x->usage.prompt_tokens);
        atomic_fetch_add(&e->st_generated, x->usage.completion_tokens);
        atomic_fetch_add(&e->st_cached, x->usage.cached_tokens);
        engine_req_finish(x->req, x->finish == ENGINE_FINISH_NONE ? ENGINE_FINISH_STOP : x->finish);
    }
    proxy__xfer_free(e, x);
}

/* ------------------------------------------------------------ health */

static void proxy__probe_start(struct proxy_engine *e, int i) {
    struct probe *pb = calloc(1, sizeof *pb);
    if (!pb) return;
    pb->kind = H_PROBE;
    pb->replica = i;
    pb->easy = curl_easy_init();
    if (!pb->easy) {
        free(pb);
        return;
    }
    char url[sizeof e->replicas[0].url + 256];
    snprintf(url, sizeof url, "%s%s", e->replicas[i].url, e->health_path);
    curl_easy_setopt(pb->easy, CURLOPT_URL, url);
    curl_easy_setopt(pb->easy, CURLOPT_WRITEFUNCTION, proxy__discard);
    curl_easy_setopt(pb->easy, CURLOPT_PRIVATE, pb);
    curl_easy_setopt(pb->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(pb->easy, CURLOPT_TIMEOUT_MS, (long)PROXY_PROBE_TIMEOUT_MS);
    curl_easy_setopt(pb->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)PROXY_PROBE_TIMEOUT_MS);
    if (curl_multi_add_handle(e->multi, pb->easy) != CURLM_OK) {
        curl_easy_cleanup(pb->easy);
        free(pb);
        return;
    }
    e->replicas[i].probe = pb;
}

static void proxy__probe_free(struct proxy_engine *e, struct probe *pb) {
    curl_multi_remove_handle(e->multi, pb->easy);
    curl_easy_cleanup(pb->easy);
    e->replicas[pb->replica].probe = NULL;
    free(pb);
}

static void proxy__set_state(struct proxy_engine *e, enum proxy_state st, const char *msg) {
    pthread_mutex_lock(&e->mu);
    e->state = st;
    if (msg) snprintf(e->fail_msg, sizeof e->fail_msg, "%s", msg);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static void proxy__probe_done(struct proxy_engine *e, struct probe *pb, CURLcode res) {
    long code = 0;
    curl_easy_getinfo(pb->easy, CURLINFO_RESPONSE_CODE, &code);
    int i = pb->replica;
    struct replica *r = &e->replicas[i];
    bool ok = res == CURLE_OK && code == 200;
    proxy__probe_free(e, pb);
    int64_t now = time_now_ms();
    pthread_mutex_lock(&e->mu);
    enum proxy_state st = e->state;
    pthread_mutex_unlock(&e->mu);
    if (st == PX_STARTING) {
        if (ok) {
            log_info("model %s: its server is ready after %lld ms (pid %d, port %d)", e->id,
                     (long long)(now - e->start_ms), e->pid, e->port);
            proxy__set_state(e, PX_READY, NULL);
        }
        e->next_probe_ms = now + PROXY_PROBE_EVERY_MS;
        return;
    }
    if (ok) {
        pthread_mutex_lock(&e->mu);
        bool was = r->healthy;
        r->healthy = true;
        pthread_mutex_unlock(&e->mu);
        if (!was) log_info("model %s: upstream %s is healthy again", e->id, r->url);
        r->next_check_ms = now + PROXY_CHECK_HEALTHY_MS;
    } else {
        char why[96];
        snprintf(why, sizeof why, "health check %s", res != CURLE_OK ? curl_easy_strerror(res) : "");
        if (res == CURLE_OK) snprintf(why, sizeof why, "health check answered %ld", code);
        proxy__eject(e, i, why);
    }
}

/* ------------------------------------------------------------ the loop */

/* Fail every request in flight (and drop probes). */
static void proxy__fail_all(struct proxy_engine *e, enum corral_status st, const char *msg) {
    for (int i = 0; i < e->n_slots; i++) {
        struct xfer *x = e->xfers[i];
        if (!x) continue;
        proxy__unclaim(e, x, false);
        struct corral_err err;
        corral_err_set(&err, st, NULL, "%s", msg);
        engine_req_fail(x->req, &err);
        proxy__xfer_free(e, x);
    }
    for (int i = 0; i < e->n_replicas; i++)
        if (e->replicas[i].probe) proxy__probe_free(e, e->replicas[i].probe);
}

/* The child exited. During start-up that fails the start; afterwards the
 * model is dead: requests in flight get 502, queued ones 503. */
static void proxy__child_exited(struct proxy_engine *e, int status) {
    char how[96], msg[CORRAL_ERR_MSG_MAX];
    child_describe_status(status, how, sizeof how);
    pthread_mutex_lock(&e->mu);
    enum proxy_state st = e->state;
    pthread_mutex_unlock(&e->mu);
    if (st == PX_STARTING) {
        snprintf(msg, sizeof msg, "model '%.128s': its server exited during start-up (%.80s); see %.200s", e->id, how,
                 e->log_path);
        proxy__set_state(e, PX_FAILED, msg);
        return;
    }
    if (atomic_load(&e->stopping)) return;
    snprintf(msg, sizeof msg, "model '%.128s': its server process exited (%.80s); see %.200s", e->id, how,
             e->log_path);
    log_error("%s", msg);
    proxy__set_state(e, PX_DEAD, msg);
    proxy__fail_all(e, CORRAL_BAD_GATEWAY, msg);
    admit_stop(&e->admit, msg);
    if (e->dead) e->dead(e->dead_ctx);
}

/* Cancel transfers whose client is gone; poll client sockets. */
static void proxy__watch_clients(struct proxy_engine *e) {
    int n = 0;
    for (int i = 0; i < e->n_slots; i++)
        if (e->xfers[i]) e->took[n++] = e->xfers[i]->req;
    engine_req_poll_hangups(e->took, (size_t)n);
    admit_poll_hangups(&e->admit);
}

static void *proxy__run(void *arg) {
    struct proxy_engine *e = arg;
    int64_t last_watch = 0;
    while (!atomic_load(&e->stopping)) {
        int64_t now = time_now_ms();
        pthread_mutex_lock(&e->mu);
        enum proxy_state st = e->state;
        pthread_mutex_unlock(&e->mu);
        if (st == PX_FAILED || st == PX_DEAD) break;

        if (e->child) {
            if (child_out_fd(e->child) >= 0) child_drain(e->child);
            int status = 0;
            if (child_reap(e->child, &status)) {
                while (child_out_fd(e->child) >= 0 && child_drain(e->child) > 0) {
                }
                proxy__child_exited(e, status);
                break;
            }
        }
        if (st == PX_STARTING) {
            if (e->aborted && e->aborted(e->aborted_ctx)) {
                char msg[CORRAL_ERR_MSG_MAX];
                snprintf(msg, sizeof msg, "model '%.128s': start-up stopped (unloaded or shutting down)", e->id);
                proxy__set_state(e, PX_FAILED, msg);
                break;
            }
            if (now >= e->startup_deadline_ms) {
                char msg[CORRAL_ERR_MSG_MAX];
                snprintf(msg, sizeof msg,
                         "model '%.128s': its server did not answer 200 on %.64s within %lld s; stopped it; see %.200s", e->id,
                         e->health_path, (long long)((e->startup_deadline_ms - e->start_ms) / 1000), e->log_path);
                proxy__set_state(e, PX_FAILED, msg);
                break;
            }
            if (!e->replicas[0].probe && now >= e->next_probe_ms) proxy__probe_start(e, 0);
        } else {
            if (!e->child)
                for (int i = 0; i < e->n_replicas; i++)
                    if (!e->replicas[i].probe && now >= e->replicas[i].next_check_ms) proxy__probe_start(e, i);
            if (now - last_watch >= PROXY_POLL_MS) {
                proxy__watch_clients(e);
                last_watch = now;
            }
            for (int i = 0; i < e->n_slots; i++) {
                struct xfer *x = e->xfers[i];
                if (x && engine_req_cancelled(x->req)) {
                    /* dropping the handle closes the upstream connection:
                     * the upstream stops generating */
                    proxy__unclaim(e, x, false);
                    struct corral_err err;
                    corral_err_set(&err, CORRAL_CANCELLED, NULL, "request cancelled");
                    engine_req_fail(x->req, &err);
                    proxy__xfer_free(e, x);
                }
            }
            uint64_t seen;
            int idle = e->n_slots - atomic_load(&e->busy);
            int n = admit_take(&e->admit, idle, e->took, idle, &seen);
            for (int i = 0; i < n; i++) proxy__start(e, e->took[i]); /* n < 0: stopping, seen next round */
        }

        int running = 0;
        curl_multi_perform(e->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(e->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            void *priv = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&priv);
            CURLcode res = msg->data.result;
            if (!priv) continue;
            if (*(enum handle_kind *)priv == H_PROBE)
                proxy__probe_done(e, priv, res);
            else
                proxy__xfer_done(e, priv, res);
        }

        struct curl_waitfd extra[2];
        unsigned n_extra = 0;
        if (e->child && child_pidfd(e->child) >= 0)
            extra[n_extra++] = (struct curl_waitfd){.fd = child_pidfd(e->child), .events = CURL_WAIT_POLLIN};
        if (e->child && child_out_fd(e->child) >= 0)
            extra[n_extra++] = (struct curl_waitfd){.fd = child_out_fd(e->child), .events = CURL_WAIT_POLLIN};
        int timeout = PROXY_IDLE_MS;
        if (atomic_load(&e->busy) > 0 || admit_queued(&e->admit) > 0) timeout = PROXY_POLL_MS;
        if (st == PX_STARTING) timeout = 50;
        if (e->child && child_pidfd(e->child) < 0 && timeout > 100) timeout = 100;
        curl_multi_poll(e->multi, extra, n_extra, timeout, NULL);
    }
    proxy__fail_all(e, CORRAL_UNAVAILABLE, e->stop_why[0] ? e->stop_why : "the model was unloaded");
    return NULL;
}

/* ------------------------------------------------------------ engine ops */

static enum corral_status proxy__submit(struct engine *base, struct engine_req *r, struct corral_err *err) {
    struct proxy_engine *e = (struct proxy_engine *)base;
    pthread_mutex_lock(&e->mu);
    enum proxy_state st = e->state;
    pthread_mutex_unlock(&e->mu);
    if (st == PX_DEAD)
        return corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "model '%s': its server exited; retry", e->id);
    return admit_submit(&e->admit, r, atomic_load(&e->busy), err);
}

static void proxy__stats(struct engine *base, struct engine_stats *out) {
    struct proxy_engine *e = (struct proxy_engine *)base;
    memset(out, 0, sizeof *out);
    out->slots_total = e->n_slots;
    out->slots_busy = atomic_load(&e->busy);
    out->queued = admit_queued(&e->admit);
    out->queue_cap = e->admit.p.queue_size;
    out->requests_total = admit_accepted(&e->admit);
    out->tokens_prompt = atomic_load(&e->st_prompt);
    out->tokens_generated = atomic_load(&e->st_generated);
    out->tokens_cached = atomic_load(&e->st_cached);
    out->pid = e->pid;
    out->port = e->port;
    snprintf(out->log_path, sizeof out->log_path, "%s", e->log_path);
    if (!e->child) {
        pthread_mutex_lock(&e->mu);
        out->n_replicas = e->n_replicas;
        for (int i = 0; i < e->n_replicas; i++) {
            struct engine_replica *o = &out->replicas[i];
            snprintf(o->url, sizeof o->url, "%s", e->replicas[i].url);
            o->healthy = e->replicas[i].healthy;
            o->outstanding = e->replicas[i].outstanding;
            o->requests = e->replicas[i].requests;
            o->failures = e->replicas[i].failures;
        }
        pthread_mutex_unlock(&e->mu);
    }
}

static bool proxy__alive(struct engine *base) {
    struct proxy_engine *e = (struct proxy_engine *)base;
    pthread_mutex_lock(&e->mu);
    bool alive = e->state != PX_DEAD;
    pthread_mutex_unlock(&e->mu);
    return alive;
}

static void proxy__stop(struct engine *base, const char *why) {
    struct proxy_engine *e = (struct proxy_engine *)base;
    pthread_mutex_lock(&e->mu);
    bool first = !atomic_load(&e->stopping);
    if (first) {
        snprintf(e->stop_why, sizeof e->stop_why, "%s", why ? why : "the model was unloaded");
        atomic_store(&e->stopping, true);
    }
    pthread_mutex_unlock(&e->mu);
    if (!first) return;
    admit_stop(&e->admit, e->stop_why);
    if (e->multi) curl_multi_wakeup(e->multi);
}

static void proxy__join(struct engine *base) {
    struct proxy_engine *e = (struct proxy_engine *)base;
    pthread_mutex_lock(&e->join_mu);
    if (e->thread_started && !e->joined) {
        pthread_join(e->thread, NULL);
        e->joined = true;
    }
    pthread_mutex_unlock(&e->join_mu);
}

static void proxy__free(struct engine *base) {
    struct proxy_engine *e = (struct proxy_engine *)base;
    if (!e) return;
    proxy__stop(base, "the model was unloaded");
    proxy__join(base);
    admit_free(&e->admit);
    if (e->child) {
        int status = child_stop(e->child, PROXY_STOP_GRACE_MS);
        char how[96];
        child_describe_status(status, how, sizeof how);
        log_info("model %s: its server (pid %d) stopped: %s", e->id, e->pid, how);
        child_free(e->child);
    }
    if (e->multi) curl_multi_cleanup(e->multi);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->join_mu);
    pthread_cond_destroy(&e->cv);
    free(e->took);
    free(e->xfers);
    free(e->id);
    free(e->upstream_model);
    free(e->auth_header);
    free(e->health_path);
    free(e);
}

static const struct engine_ops proxy_engine__ops = {
    .name = "proxy",
    .submit = proxy__submit,
    .stats = proxy__stats,
    .stop = proxy__stop,
    .join = proxy__join,
    .free = proxy__free,
    .alive = proxy__alive,
};

/* ------------------------------------------------------------ open */

/* Spawn the child on a free port. 0, or -1 with err. */
static int proxy__spawn(struct proxy_engine *e, const struct proxy_engine_params *p, struct corral_err *err) {
    e->port = supervisor_free_port();
    if (e->port <= 0) {
        corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "model '%s': no free loopback port", e->id);
        return -1;
    }
    char port[16];
    snprintf(port, sizeof port, "%d", e->port);
    const char *keys[] = {"port", "model"};
    const char *vals[] = {port, p->model_path ? p->model_path : p->id};
    char msg[256];
    char **argv = supervisor_split(p->command, keys, vals, 2, msg, sizeof msg);
    if (!argv) {
        corral_err_set(err, CORRAL_CONFIG, NULL, "model '%s': command: %s", e->id, msg);
        return -1;
    }
    const char *dir = p->log_dir ? p->log_dir : ".";
    if (supervisor_mkdirs(dir, 0700) != 0) {
        corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "model '%s': cannot create the log directory %s: %s", e->id,
                       dir, strerror(errno));
        supervisor_argv_free(argv);
        return -1;
    }
    snprintf(e->log_path, sizeof e->log_path, "%s/%s.log", dir, e->id);
    struct child_params cp = {.argv = argv, .log_path = e->log_path, .log_cap = PROXY_LOG_CAP};
    char line[512];
    supervisor_argv_str(argv, line, sizeof line);
    e->child = child_spawn(&cp, msg, sizeof msg);
    supervisor_argv_free(argv);
    if (!e->child) {
        corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "model '%s': %s", e->id, msg);
        return -1;
    }
    e->pid = (int)child_pid(e->child);
    log_info("model %s: started `%s` (pid %d, port %d); log %s", e->id, line, e->pid, e->port, e->log_path);
    snprintf(e->replicas[0].url, sizeof e->replicas[0].url, "http://127.0.0.1:%d", e->port);
    e->replicas[0].healthy = true;
    e->n_replicas = 1;
    return 0;
}

struct engine *proxy_engine_open(const struct proxy_engine_params *p, struct corral_err *err) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, proxy__global_init);
    struct proxy_engine *e = calloc(1, sizeof *e);
    if (!e) {
        corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        return NULL;
    }
    e->base.ops = &proxy_engine__ops;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->join_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&e->stopping, false);
    e->id = strdup(p->id);
    e->upstream_model = strdup(p->upstream_model ? p->upstream_model : p->id);
    e->health_path = strdup(p->health_path ? p->health_path : "/health");
    e->n_slots = p->parallel > 0 ? p->parallel : 1;
    e->out_cap = p->out_cap;
    e->dead = p->dead;
    e->dead_ctx = p->dead_ctx;
    e->aborted = p->aborted;
    e->aborted_ctx = p->aborted_ctx;
    e->took = calloc((size_t)e->n_slots, sizeof *e->took);
    e->xfers = calloc((size_t)e->n_slots, sizeof *e->xfers);
    if (p->api_key && p->api_key[0]) {
        size_t n = strlen(p->api_key) + 32;
        e->auth_header = malloc(n);
        if (e->auth_header) snprintf(e->auth_header, n, "Authorization: Bearer %s", p->api_key);
    }
    struct admit_params ap = {.id = e->id ? e->id : "?", .n_slots = e->n_slots, .queue_size = p->queue_size,
                              .gate = p->gate, .embed_free = false, .notify = proxy__notify, .notify_ctx = e};
    if (!e->id || !e->upstream_model || !e->health_path || !e->took || !e->xfers || admit_init(&e->admit, &ap) != 0) {
        /* admit was not set up: free by hand */
        free(e->id);
        free(e->upstream_model);
        free(e->health_path);
        free(e->took);
        free(e->xfers);
        free(e->auth_header);
        pthread_mutex_destroy(&e->mu);
        pthread_mutex_destroy(&e->join_mu);
        pthread_cond_destroy(&e->cv);
        free(e);
        corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        return NULL;
    }
    e->multi = curl_multi_init();
    if (!e->multi) {
        corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        goto fail;
    }
    e->start_ms = time_now_ms();
    if (p->command) {
        if (proxy__spawn(e, p, err) != 0) goto fail;
        e->state = PX_STARTING;
        e->startup_deadline_ms = e->start_ms + (p->startup_timeout_ms > 0 ? p->startup_timeout_ms : 120000);
    } else {
        if (proxy__parse_upstreams(e, p->upstream ? p->upstream : "", err) != 0) goto fail;
        e->state = PX_READY;
    }
    if (pthread_create(&e->thread, NULL, proxy__run, e) != 0) {
        corral_err_set(err, CORRAL_INTERNAL, NULL, "could not start the proxy thread");
        goto fail;
    }
    e->thread_started = true;
    if (e->child) {
        pthread_mutex_lock(&e->mu);
        while (e->state == PX_STARTING) pthread_cond_wait(&e->cv, &e->mu);
        enum proxy_state st = e->state;
        pthread_mutex_unlock(&e->mu);
        if (st != PX_READY) {
            corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "%s", e->fail_msg);
            goto fail;
        }
    } else {
        log_info("model %s: %d upstream replica%s, %d requests at once", e->id, e->n_replicas,
                 e->n_replicas == 1 ? "" : "s", e->n_slots);
    }
    return &e->base;
fail:
    proxy__free(&e->base);
    return NULL;
}
