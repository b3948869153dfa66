/* pool.c - the warm pool of models: lifecycle, requests and pins, the
 * admin operations and the views (see pool.h, and pool/internal.h for the
 * states).
 *
 * DESIGN
 * One mutex guards the registry and every record; one loader thread
 * (loader.c) does all loading and unloading, so a load never runs on an
 * HTTP thread and two loads never race for memory. A request for a model
 * that is not loaded waits on that record's pending list (the transport
 * keeps its connection suspended as for any queued request) and the loader
 * submits it to the engine when the load ends, or fails it with the load's
 * error. Engines are opened, stopped and freed outside the lock; stopping
 * never waits (engine_stop), so /health, /metrics and every submit answer
 * while a model goes away.
 */
#include "pool/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capacity/capacity.h"
#include "engine/llama_engine.h"
#include "engine/proxy_engine.h"
#include "engine/supervisor.h"
#include "pool/estimate.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/time.h"

#define POOL__BIT(s) (1u << (s))

/* The moves of the table in internal.h. */
static const unsigned pool__moves[] = {
    [M_UNLOADED] = POOL__BIT(M_QUEUED),
    [M_QUEUED] = POOL__BIT(M_LOADING) | POOL__BIT(M_UNLOADED),
    [M_LOADING] = POOL__BIT(M_READY) | POOL__BIT(M_FAILED) | POOL__BIT(M_UNLOADED),
    [M_READY] = POOL__BIT(M_DRAINING) | POOL__BIT(M_UNLOADING) | POOL__BIT(M_UNLOADED) | POOL__BIT(M_RETIRED),
    [M_DRAINING] = POOL__BIT(M_READY) | POOL__BIT(M_UNLOADING) | POOL__BIT(M_QUEUED) | POOL__BIT(M_UNLOADED) |
                   POOL__BIT(M_FAILED) | POOL__BIT(M_RETIRED),
    [M_UNLOADING] = POOL__BIT(M_DRAINING) | POOL__BIT(M_UNLOADED),
    [M_FAILED] = POOL__BIT(M_QUEUED),
    [M_RETIRED] = 0,
};

const char *pool__state_name(enum pool__state s) {
    static const char *const names[] = {"unloaded", "queued",    "loading", "ready",
                                        "draining", "unloading", "failed",  "retired"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

void pool__set_state(struct pool_model *m, enum pool__state to, const char *why) {
    if (m->state == to) return;
    if (!(pool__moves[m->state] & POOL__BIT(to)))
        log_error("pool: bug: model %s moved from %s to %s (%s)", m->id, pool__state_name(m->state),
                  pool__state_name(to), why);
    else
        log_debug("pool: model %s: %s -> %s (%s)", m->id, pool__state_name(m->state), pool__state_name(to), why);
    m->state = to;
}

const char *pool_status_name(enum pool_model_status s) {
    switch (s) {
    case POOL_UNLOADED: return "unloaded";
    case POOL_LOADING: return "loading";
    case POOL_LOADED: return "loaded";
    case POOL_FAILED: return "failed";
    case POOL_UNLOADING: return "unloading";
    }
    return "unknown";
}

static enum pool_model_status pool__public(enum pool__state s) {
    switch (s) {
    case M_UNLOADED: return POOL_UNLOADED;
    case M_QUEUED:
    case M_LOADING: return POOL_LOADING;
    case M_READY:
    case M_DRAINING:
    case M_RETIRED: return POOL_LOADED;
    case M_UNLOADING: return POOL_UNLOADING;
    case M_FAILED: return POOL_FAILED;
    }
    return POOL_UNLOADED;
}

/* ------------------------------------------------------------- helpers */

uint64_t pool_rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f) return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2) resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* A safe default budget: three quarters of physical memory. */
static uint64_t pool__auto_budget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psize <= 0) return (uint64_t)8 << 30;
    return (uint64_t)pages * (uint64_t)psize / 4 * 3;
}

int pool__engine_pins(const struct pool_model *m) { return m->pins - (int)m->n_pending; }

static void pool__pend_push(struct pool_model *m, struct pool_pin *pin) {
    pin->pending = true;
    pin->next = NULL;
    pin->prev = m->pend_tail;
    if (m->pend_tail) m->pend_tail->next = pin;
    else m->pend_head = pin;
    m->pend_tail = pin;
    m->n_pending++;
}

static void pool__pend_remove(struct pool_model *m, struct pool_pin *pin) {
    if (pin->prev) pin->prev->next = pin->next;
    else m->pend_head = pin->next;
    if (pin->next) pin->next->prev = pin->prev;
    else m->pend_tail = pin->prev;
    pin->prev = pin->next = NULL;
    pin->pending = false;
    m->n_pending--;
}

struct engine_req **pool__take_pending(struct pool_model *m, size_t *n) {
    *n = 0;
    if (m->n_pending == 0) return NULL;
    struct engine_req **reqs = malloc(m->n_pending * sizeof *reqs);
    size_t k = 0;
    while (m->pend_head) {
        struct pool_pin *pin = m->pend_head;
        pool__pend_remove(m, pin);
        if (reqs) reqs[k++] = pin->req;
        else engine_req_release(pin->req); /* out of memory: dropped (its client sees no answer but a close) */
        pin->req = NULL;
    }
    *n = k;
    return reqs;
}

void pool__submit_all(struct engine *e, struct engine_req **reqs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        struct corral_err serr;
        corral_err_clear(&serr);
        if (engine_submit(e, reqs[i], &serr) != CORRAL_OK) engine_req_fail(reqs[i], &serr);
        engine_req_release(reqs[i]);
    }
    free(reqs);
}

void pool__fail_all(struct engine_req **reqs, size_t n, const struct corral_err *err) {
    for (size_t i = 0; i < n; i++) {
        engine_req_fail(reqs[i], err);
        engine_req_release(reqs[i]);
    }
    free(reqs);
}

void pool__fail_pending(struct pool *p, struct pool_model *m, enum corral_status st, const char *msg) {
    size_t n;
    struct engine_req **reqs = pool__take_pending(m, &n);
    if (!n) return;
    struct corral_err err;
    corral_err_set(&err, st, NULL, "%s", msg);
    pthread_mutex_unlock(&p->mu);
    pool__fail_all(reqs, n, &err);
    pthread_mutex_lock(&p->mu);
}

void pool__event(struct pool *p, const char *model, const char *what, const char *fmt, ...) {
    struct pool_event *ev = &p->events[p->next_event];
    ev->time_s = time_wall_s();
    snprintf(ev->model, sizeof ev->model, "%s", model);
    snprintf(ev->what, sizeof ev->what, "%s", what);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->detail, sizeof ev->detail, fmt, ap);
    va_end(ap);
    p->next_event = (p->next_event + 1) % POOL_EVENTS;
    if (p->n_events < POOL_EVENTS) p->n_events++;
}

int pool_estimate(struct pool *p, const char *id, uint64_t *bytes) {
    pthread_mutex_lock(&p->mu);
    struct pool_model *m = pool__find(p, id);
    bool llama = m && m->backend == POOL_LLAMA;
    if (llama && m->est_cache_slots == m->slots && m->file_size && !pool__file_changed(m)) {
        *bytes = m->est_cache.total_bytes; /* the loader's, for this file */
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    char path[4096] = "";
    struct estimate_params ep = {0};
    if (llama) {
        snprintf(path, sizeof path, "%s", m->path);
        ep = (struct estimate_params){.n_slots = m->slots,
                                      .ctx_per_slot = m->cfg.ctx,
                                      .n_batch = m->cfg.batch,
                                      .prompt_cache = p->cfg->prompt_cache == CONFIG_SIZE_AUTO ? ESTIMATE_CACHE_AS_KV
                                                                                               : p->cfg->prompt_cache};
    }
    pthread_mutex_unlock(&p->mu);
    struct estimate est;
    char why[256];
    if (!llama || estimate_gguf(path, &ep, &est, why, sizeof why) != 0) return -1;
    *bytes = est.total_bytes;
    return 0;
}

size_t pool_events(struct pool *p, struct pool_event *out, size_t max) {
    pthread_mutex_lock(&p->mu);
    size_t n = p->n_events < max ? p->n_events : max;
    for (size_t i = 0; i < n; i++) out[i] = p->events[(p->next_event + POOL_EVENTS - 1 - i) % POOL_EVENTS];
    pthread_mutex_unlock(&p->mu);
    return n;
}

struct engine *pool__detach(struct pool *p, struct pool_model *m, enum pool__state to, const char *why) {
    struct engine *e = m->engine;
    if (e) { /* keep the counters monotonic across reloads */
        struct engine_stats st;
        engine_stats(e, &st);
        m->acc.requests_total += st.requests_total;
        m->acc.tokens_prompt += st.tokens_prompt;
        m->acc.tokens_generated += st.tokens_generated;
        m->acc.tokens_cached += st.tokens_cached;
        m->acc.prompt_cache_hits += st.prompt_cache_hits;
    }
    m->engine = NULL;
    p->used -= m->est <= p->used ? m->est : p->used;
    m->est = 0;
    if (to == M_QUEUED) m->load_requested_ms = time_now_ms();
    pool__set_state(m, to, why);
    if (e) {
        log_info("model %s: unloaded (%s)", m->id, why);
        pool__event(p, m->id, strstr(why, "room") ? "evicted" : "unloaded", "%s", why);
    }
    return e;
}

/* ------------------------------------------------------------- lifecycle */

struct pool *pool_new(const struct config *cfg, struct capacity *gate, struct corral_err *err) {
    struct pool_backends be = {.open_llama = llama_engine_open, .open_proxy = proxy_engine_open};
    return pool_new_with(cfg, gate, &be, err);
}

static void pool__want(struct pool_model *m, const char *why) {
    if (m->state != M_UNLOADED && m->state != M_FAILED) return;
    m->fail_until_ms = 0;
    m->load_requested_ms = time_now_ms();
    pool__set_state(m, M_QUEUED, why);
}

struct pool *pool_new_with(const struct config *cfg, struct capacity *gate, const struct pool_backends *be,
                           struct corral_err *err) {
    struct pool *p = calloc(1, sizeof *p);
    if (!p) goto nomem;
    p->cfg = cfg;
    p->gate = gate;
    p->be = *be;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->budget = cfg->memory_budget ? (uint64_t)cfg->memory_budget : pool__auto_budget();
    atomic_init(&p->proxy_dead, false);
    atomic_init(&p->stopping, false);
    atomic_init(&p->closing, false);
    char state[4096 - 8];
    if (cfg->state_dir)
        snprintf(state, sizeof state, "%s", cfg->state_dir);
    else if (supervisor_state_dir(state, sizeof state) != 0)
        snprintf(state, sizeof state, "%s", "/tmp/corral");
    size_t ll = strlen(state) + 8;
    p->log_dir = malloc(ll);
    if (!p->log_dir) goto nomem;
    snprintf(p->log_dir, ll, "%s/logs", state);
    p->max_models = cfg->max_models > 0 ? cfg->max_models : 8;
    llama_engine_global_init();
    for (int i = 0; i < cfg->n_models; i++) {
        struct config_model m;
        config_model_resolve(cfg, &cfg->models[i], &m);
        struct pool_model *pm = pool__add(p, &m, m.path, false);
        if (!pm) goto nomem;
        if (cfg->models[i].preload) pool__want(pm, "preload");
    }
    pool__scan(p);
    for (int k = 0; k < cfg->n_preload; k++) {
        struct pool_model *pm = pool__find(p, cfg->preload[k]);
        if (!pm) log_warn("preload: no model '%s'", cfg->preload[k]);
        else pool__want(pm, "preload");
    }
    log_info("pool: %zu models registered, budget %.0f MiB, at most %d loaded", p->n, p->budget / 1048576.0,
             p->max_models);
    if (pthread_create(&p->loader, NULL, pool__loader, p) != 0) {
        corral_err_set(err, CORRAL_INTERNAL, NULL, "could not start the model loader thread");
        pool_free(p);
        return NULL;
    }
    p->loader_started = true;
    return p;
nomem:
    pool_free(p);
    corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
    return NULL;
}

void pool_close(struct pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->closing, true);
    for (size_t i = 0; i < p->n; i++) {
        struct pool_model *m = p->models[i];
        if (m->state == M_LOADING) atomic_store(&m->abort_load, true);
        if (m->state == M_QUEUED) pool__set_state(m, M_UNLOADED, "shutting down");
        if (m->n_pending) {
            pool__fail_pending(p, m, CORRAL_UNAVAILABLE, "the server is shutting down");
            i = (size_t)-1; /* the lock was let go: start over */
        }
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

int pool_in_flight(struct pool *p) {
    pthread_mutex_lock(&p->mu);
    int n = 0;
    for (size_t i = 0; i < p->n; i++) n += p->models[i]->pins;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void pool_stop(struct pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    bool join = p->loader_started && !atomic_load(&p->stopping);
    atomic_store(&p->stopping, true);
    atomic_store(&p->closing, true);
    for (size_t i = 0; i < p->n; i++)
        if (p->models[i]->state == M_LOADING) atomic_store(&p->models[i]->abort_load, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (join) pthread_join(p->loader, NULL);
    /* the loader is gone: fail what waits for a load, stop the engines,
     * then wait for each to have failed what it held */
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n; i++) {
        struct pool_model *m = p->models[i];
        if (m->n_pending) {
            pool__fail_pending(p, m, CORRAL_UNAVAILABLE, "the server is shutting down");
            i = (size_t)-1;
            continue;
        }
        if (m->engine) engine_stop(m->engine, "the server is shutting down");
    }
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->n; i++) /* the registry no longer changes */
        if (p->models[i]->engine) engine_join(p->models[i]->engine);
}

void pool_free(struct pool *p) {
    if (!p) return;
    pool_stop(p);
    for (size_t i = 0; i < p->n; i++) {
        engine_free(p->models[i]->engine);
        pool__free_model(p->models[i]);
    }
    free(p->models);
    free(p->log_dir);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

/* ------------------------------------------------------------- requests */

/* A new record takes over m's id because m's file changed: requests in
 * flight finish on m, which is freed when they end; m's waiting requests
 * move to the new record. Returns the record requests should now go to.
 * Caller holds mu. */
static struct pool_model *pool__retire(struct pool *p, struct pool_model *m) {
    struct pool_model *fresh = pool__add(p, &m->cfg, m->path, true);
    if (!fresh) return m; /* full or out of memory: keep serving the old file */
    fresh->keep_alive_ms = m->keep_alive_ms;
    fresh->last_used_ms = m->last_used_ms;
    while (m->pend_head) {
        struct pool_pin *pin = m->pend_head;
        pool__pend_remove(m, pin);
        m->pins--;
        pin->m = fresh;
        fresh->pins++;
        pool__pend_push(fresh, pin);
    }
    pool__set_state(m, M_RETIRED, "its file changed");
    if (fresh->n_pending) pool__want(fresh, "requests moved from the old file");
    log_info("model %s: file changed on disk; loading it again", m->id);
    pthread_cond_broadcast(&p->cv);
    return fresh;
}

enum corral_status pool_submit(struct pool *p, const char *id, struct engine_req *r, struct pool_pin **out,
                               struct corral_err *err) {
    *out = NULL;
    struct pool_pin *pin = calloc(1, sizeof *pin);
    if (!pin) return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
    pthread_mutex_lock(&p->mu);
    if (atomic_load(&p->closing)) {
        corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "the server is shutting down");
        goto refuse;
    }
    struct pool_model *m = pool__find(p, id);
    if (!m) {
        pool__scan(p); /* a model file may have been added to models_dir */
        m = pool__find(p, id);
    }
    if (!m) {
        struct buf ids;
        buf_init(&ids, 2048);
        for (size_t i = 0; i < p->n; i++)
            if (p->models[i]->state != M_RETIRED) buf_printf(&ids, "%s'%s'", ids.len ? ", " : "", p->models[i]->id);
        corral_err_set(err, CORRAL_MODEL_NOT_FOUND, "model", "the model '%.200s' does not exist; available: %s", id,
                       ids.len ? ids.data : "(none)");
        buf_free(&ids);
        goto refuse;
    }
    int64_t now = time_now_ms();
    if (m->state == M_FAILED && now < m->fail_until_ms) {
        corral_err_set(err, CORRAL_UNAVAILABLE, "model", "the model '%s' failed to load: %s (retrying in %lld s)",
                       m->id, m->error, (long long)((m->fail_until_ms - now + 999) / 1000));
        goto refuse;
    }
    if (m->state == M_UNLOADING) {
        corral_err_set(err, CORRAL_UNAVAILABLE, "model", "the model '%s' is being unloaded; retry shortly", m->id);
        goto refuse;
    }
    if ((m->state == M_READY || m->state == M_DRAINING) && pool__file_changed(m)) m = pool__retire(p, m);
    if (m->state == M_READY && !engine_alive(m->engine)) {
        m->drain = DRAIN_DEAD; /* its child server exited: this request waits for the respawn */
        pool__set_state(m, M_DRAINING, "its server exited");
        pthread_cond_broadcast(&p->cv);
    }
    m->last_used_ms = now;
    /* a request's keep_alive sets how long the model stays after it */
    int64_t ka = engine_req_input(r)->keep_alive_ms;
    m->keep_alive_ms = ka != ENGINE_KEEP_ALIVE_UNSET ? ka : m->cfg.keep_alive_ms;
    if (m->backend == POOL_LLAMA) engine_req_set_body(r, NULL, 0); /* only proxied models forward it */
    pin->m = m;
    if (m->state == M_READY) {
        m->pins++;
        struct engine *e = m->engine; /* stays: a record with engine pins is never unloaded */
        pthread_mutex_unlock(&p->mu);
        enum corral_status st = engine_submit(e, r, err);
        if (st != CORRAL_OK) {
            pool_release(p, pin);
            return st;
        }
        *out = pin;
        return CORRAL_OK;
    }
    /* not loaded: wait for the (single) load, in a list bounded like a queue */
    size_t cap = (size_t)p->cfg->queue_size + (size_t)m->slots;
    if (m->n_pending >= cap) {
        corral_err_set(err, CORRAL_OVERLOADED, NULL,
                       "too many requests are waiting for model '%s' to load (%zu; queue_size %d + %d slots); "
                       "retry later",
                       m->id, m->n_pending, p->cfg->queue_size, m->slots);
        goto refuse;
    }
    m->pins++;
    engine_req_retain(r);
    pin->req = r;
    pool__pend_push(m, pin);
    if (m->state == M_UNLOADED || m->state == M_FAILED) {
        pool__want(m, "a request");
        pthread_cond_broadcast(&p->cv);
    }
    *out = pin;
    pthread_mutex_unlock(&p->mu);
    return CORRAL_OK;
refuse:
    pthread_mutex_unlock(&p->mu);
    free(pin);
    return err->status;
}

void pool_release(struct pool *p, struct pool_pin *pin) {
    if (!pin) return;
    pthread_mutex_lock(&p->mu);
    struct pool_model *m = pin->m;
    struct engine_req *req = NULL;
    if (pin->pending) {
        pool__pend_remove(m, pin);
        req = pin->req;
        pin->req = NULL;
    }
    if (m->pins > 0) m->pins--;
    m->last_used_ms = time_now_ms();
    /* room may be free now, a drain may be done, or keep_alive starts */
    if (m->pins == 0 || m->state != M_READY) pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (req) engine_req_release(req); /* a pending request holds no permit */
    free(pin);
}

/* ------------------------------------------------------------- admin */

enum corral_status pool_load(struct pool *p, const char *id, enum pool_model_status *status,
                             struct corral_err *err) {
    pthread_mutex_lock(&p->mu);
    struct pool_model *m = pool__find(p, id);
    if (!m) {
        pool__scan(p);
        m = pool__find(p, id);
    }
    if (!m) {
        pthread_mutex_unlock(&p->mu);
        return corral_err_set(err, CORRAL_MODEL_NOT_FOUND, "model", "the model '%.200s' does not exist", id);
    }
    if (atomic_load(&p->closing)) {
        pthread_mutex_unlock(&p->mu);
        return corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "the server is shutting down");
    }
    if (m->state == M_UNLOADED || m->state == M_FAILED) {
        pool__want(m, "admin load"); /* an explicit load retries at once, cooldown or not */
    } else if (m->state == M_UNLOADING) {
        /* unloading (maybe with its engine stopped by a forced unload):
         * new requests wait, and it loads again once drained */
        m->drain = DRAIN_RELOAD;
        pool__set_state(m, M_DRAINING, "admin load while unloading");
    } else if (m->state == M_DRAINING && m->drain == DRAIN_ROOM) {
        m->drain = DRAIN_RELOAD;
    }
    pthread_cond_broadcast(&p->cv);
    *status = pool__public(m->state);
    pthread_mutex_unlock(&p->mu);
    return CORRAL_OK;
}

enum corral_status pool_unload(struct pool *p, const char *id, bool force, bool *done, struct corral_err *err) {
    *done = false;
    pthread_mutex_lock(&p->mu);
    struct pool_model *m = pool__find(p, id);
    if (!m) {
        pthread_mutex_unlock(&p->mu);
        return corral_err_set(err, CORRAL_MODEL_NOT_FOUND, "model", "the model '%.200s' does not exist", id);
    }
    static const char why[] = "the model was unloaded by an admin request";
    struct engine *e = NULL;
    switch (m->state) {
    case M_UNLOADED:
    case M_FAILED:
    case M_RETIRED:
        *done = true;
        break;
    case M_QUEUED:
        pool__set_state(m, M_UNLOADED, "admin unload");
        pool__fail_pending(p, m, CORRAL_UNAVAILABLE, why);
        *done = true;
        break;
    case M_LOADING:
        atomic_store(&m->abort_load, true); /* the loader fails its waiting requests */
        break;
    case M_READY:
    case M_DRAINING:
    case M_UNLOADING:
        if (m->state == M_DRAINING) pool__fail_pending(p, m, CORRAL_UNAVAILABLE, why);
        if (m->state == M_READY && m->pins == 0) {
            e = pool__detach(p, m, M_UNLOADED, "admin request");
            *done = true;
            break;
        }
        pool__set_state(m, M_UNLOADING, "admin unload");
        /* force: the engine fails its requests at its next step; their
         * transports then let go and the loader unloads it */
        if (force && m->engine) engine_stop(m->engine, why);
        pthread_cond_broadcast(&p->cv);
        break;
    }
    pthread_mutex_unlock(&p->mu);
    engine_free(e);
    return CORRAL_OK;
}

/* ------------------------------------------------------------- queries */

size_t pool_count(struct pool *p) {
    pthread_mutex_lock(&p->mu);
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) n += p->models[i]->state != M_RETIRED;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int pool_info(struct pool *p, size_t i, struct pool_model_info *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&p->mu);
    struct pool_model *m = pool__nth(p, i);
    if (!m) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    snprintf(out->id, sizeof out->id, "%s", m->id);
    snprintf(out->path, sizeof out->path, "%s", m->path);
    out->status = pool__public(m->state);
    snprintf(out->error, sizeof out->error, "%s", m->error);
    out->created = m->created;
    out->in_flight = m->pins;
    out->last_used_ms = m->last_used_ms;
    out->keep_alive_ms = m->keep_alive_ms;
    out->mem_estimated = m->est_last;
    out->mem_measured = m->measured;
    out->load_ms = m->load_ms;
    out->load_progress = out->status == POOL_LOADED ? 1.0f
                         : m->state == M_LOADING ? atomic_load(&m->progress_permille) / 1000.0f
                                                 : 0.0f;
    out->slots = m->slots;
    out->backend = m->backend == POOL_CHILD ? "child" : m->backend == POOL_UPSTREAM ? "upstream" : "llama";
    out->waiting_for_load = (int)m->n_pending;
    if (m->engine) engine_stats(m->engine, &out->stats);
    out->stats.requests_total += m->acc.requests_total;
    out->stats.tokens_prompt += m->acc.tokens_prompt;
    out->stats.tokens_generated += m->acc.tokens_generated;
    out->stats.tokens_cached += m->acc.tokens_cached;
    out->stats.prompt_cache_hits += m->acc.prompt_cache_hits;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void pool_stats(struct pool *p, struct pool_stats *out) {
    pthread_mutex_lock(&p->mu);
    out->budget = p->budget;
    out->used = p->used;
    out->max_models = p->max_models;
    out->loaded = pool__n_resident(p);
    out->loads = p->loads;
    out->evictions = p->evictions;
    out->load_failures = p->load_failures;
    out->waiting_for_load = 0;
    out->rss = 0;
    for (size_t i = 0; i < p->n; i++) out->waiting_for_load += (int)p->models[i]->n_pending;
    pthread_mutex_unlock(&p->mu);
}
