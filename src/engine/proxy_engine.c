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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "capacity/capacity.h"
#include "engine/proxy_internal.h"
#include "util/log.h"
#include "util/time.h"

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
void proxy__child_exited(struct proxy_engine *e, int status) {
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
    char why[sizeof e->admit.stop_msg];
    admit_stop_msg(&e->admit, why, sizeof why);
    proxy__fail_all(e, CORRAL_UNAVAILABLE, why);
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
    atomic_store(&e->stopping, true); /* first: a child exiting now is not a crash */
    admit_stop(&e->admit, why ? why : "the model was unloaded");
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

