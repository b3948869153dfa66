/* loader.c - the pool's loader thread: it loads queued models one at a
 * time, makes room for them (evicting idle models, draining a busy one when
 * a load has waited too long), unloads drained, unloading, retired and idle
 * models, and notices child servers that died. Every move is one of
 * pool/internal.h's table.
 *
 * Engines are opened and freed with the pool's lock let go; the lock is
 * held for the bookkeeping only.
 */
#include "pool/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capacity/capacity.h"
#include "engine/llama_engine.h"
#include "engine/proxy_engine.h"
#include "pool/estimate.h"
#include "pool/lru.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/time.h"

/* ------------------------------------------------------------- callbacks */

/* A child server exited (called from its engine's thread, without the
 * pool's lock: a stopping pool may hold it while waiting for that thread). */
static void pool__on_dead(void *ctx) {
    struct pool *p = ctx;
    atomic_store(&p->proxy_dead, true);
    pthread_cond_broadcast(&p->cv);
}

/* Should the load of m stop now (an admin unload, a shutdown)? */
static bool pool__aborted(void *ctx) {
    struct pool_model *m = ctx;
    return atomic_load(&m->abort_load) || atomic_load(&m->pool->stopping);
}

static bool pool__on_progress(float fraction, void *ctx) {
    struct pool_model *m = ctx;
    atomic_store(&m->progress_permille, (int)(fraction * 1000));
    return !pool__aborted(m);
}

/* ------------------------------------------------------------- room */

/* The registry as the pure eviction rules see it (pool/lru.h). Caller
 * holds mu; the result is malloc'd (NULL if out of memory). */
static struct lru_entry *pool__lru_view(struct pool *p) {
    struct lru_entry *v = calloc(p->n ? p->n : 1, sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < p->n; i++) {
        struct pool_model *m = p->models[i];
        /* an upstream model holds no memory here: it neither counts nor
         * makes room when unloaded */
        bool local = m->backend != POOL_UPSTREAM;
        v[i].bytes = m->est;
        v[i].last_used_ms = m->last_used_ms;
        v[i].pins = m->pins;
        /* only a ready model is evicted; draining, unloading and retired
         * ones leave by themselves once their requests end */
        v[i].resident = local && m->state == M_READY;
        v[i].counted = local && (m->engine || (m->state == M_LOADING && m->est));
        v[i].refault = m->evicted_ms && time_now_ms() - m->evicted_ms < LRU_REFAULT_MS;
    }
    return v;
}

int pool__n_resident(struct pool *p) {
    int n = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct pool_model *m = p->models[i];
        if (m->backend == POOL_UPSTREAM) continue;
        if (m->engine || (m->state == M_LOADING && m->est)) n++;
    }
    return n;
}

static size_t pool__index(struct pool *p, const struct pool_model *m) {
    for (size_t i = 0; i < p->n; i++)
        if (p->models[i] == m) return i;
    return p->n;
}

/* m failed (a load, or a crash loop): its cooldown doubles each time up to
 * POOL_COOLDOWN_MAX_MS. Caller holds mu. */
static void pool__cool_down(struct pool_model *m, const char *why) {
    snprintf(m->error, sizeof m->error, "%s", why);
    m->fail_until_ms = time_now_ms() + m->backoff_ms;
    m->backoff_ms = m->backoff_ms * 2 > POOL_COOLDOWN_MAX_MS ? POOL_COOLDOWN_MAX_MS : m->backoff_ms * 2;
}

/* Unload every draining, unloading or retired record whose engine has
 * nothing left to do. Returns true if it did (the lock was let go in
 * between: the registry may have changed). Caller holds mu. */
static bool pool__reap(struct pool *p) {
    for (size_t i = 0; i < p->n; i++) {
        struct pool_model *m = p->models[i];
        if (!(m->state == M_DRAINING || m->state == M_UNLOADING || m->state == M_RETIRED)) continue;
        if (pool__engine_pins(m) > 0) continue;
        struct engine *e = NULL;
        if (m->state == M_RETIRED) {
            if (m->pins > 0) continue;
            e = pool__detach(p, m, M_RETIRED, "replaced by the changed file");
            pool__remove(p, m);
        } else if (m->state == M_UNLOADING) {
            e = pool__detach(p, m, M_UNLOADED, "admin request");
        } else if (m->drain == DRAIN_DEAD) {
            int64_t now = time_now_ms();
            if (now - m->first_crash_ms > POOL_CRASH_WINDOW_MS) {
                m->first_crash_ms = now;
                m->crashes = 0;
            }
            if (++m->crashes >= POOL_CRASH_LOOP) {
                char why[96], msg[CORRAL_ERR_MSG_MAX];
                snprintf(why, sizeof why, "its server exited %d times in %d minutes", m->crashes,
                         POOL_CRASH_WINDOW_MS / 60000);
                e = pool__detach(p, m, M_FAILED, "its server exited");
                pool__cool_down(m, why);
                m->crashes = 0;
                snprintf(msg, sizeof msg, "the model '%.128s' keeps crashing (%.200s); retrying in %lld s", m->id, m->error,
                         (long long)((m->fail_until_ms - now) / 1000));
                log_error("%s", msg);
                pool__fail_pending(p, m, CORRAL_UNAVAILABLE, msg);
            } else {
                e = pool__detach(p, m, m->n_pending ? M_QUEUED : M_UNLOADED, "its server exited");
            }
        } else {
            bool again = m->drain == DRAIN_RELOAD || m->n_pending > 0;
            e = pool__detach(p, m, again ? M_QUEUED : M_UNLOADED,
                             m->drain == DRAIN_RELOAD ? "reloading" : "drained to make room");
            if (m->drain == DRAIN_ROOM) p->evictions++;
        }
        pthread_mutex_unlock(&p->mu);
        engine_free(e);
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        return true;
    }
    return false;
}

/* End every drain for room that did not end in an unload: the model keeps
 * serving and the requests that waited go to its engine. Caller holds mu;
 * returns with it held (lets it go while submitting). */
static void pool__undrain(struct pool *p) {
    for (size_t i = 0; i < p->n; i++) {
        struct pool_model *d = p->models[i];
        if (d->state != M_DRAINING || d->drain != DRAIN_ROOM) continue;
        pool__set_state(d, M_READY, "its room is not needed any more");
        if (d->n_pending == 0) continue;
        size_t np;
        struct engine_req **pend = pool__take_pending(d, &np);
        struct engine *e = d->engine;
        pthread_mutex_unlock(&p->mu);
        pool__submit_all(e, pend, np);
        pthread_mutex_lock(&p->mu);
        i = (size_t)-1; /* start over: the registry may have changed */
    }
}

/* Make room for `need` bytes for m: evict idle models, and once a load has
 * waited POOL_STARVE_MS drain the least recently used busy one. 0 once it
 * fits; -1 with *err when it cannot (deadline, abort, out of memory).
 * Caller holds mu. */
static int pool__make_room(struct pool *p, struct pool_model *m, uint64_t need, struct corral_err *err) {
    int64_t wait_start = time_now_ms();
    int64_t deadline = wait_start + p->cfg->load_timeout_ms;
    for (;;) {
        if (pool__aborted(m) || atomic_load(&p->closing)) {
            corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "the load of model '%s' was stopped", m->id);
            return -1;
        }
        if (m->backend == POOL_UPSTREAM) return 0; /* takes no room here */
        if (pool__reap(p)) continue;
        struct lru_entry *view = pool__lru_view(p);
        if (!view) {
            corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
            return -1;
        }
        bool fits = lru_fits(view, p->n, need, p->budget, p->max_models);
        long vi = fits ? -1 : lru_victim(view, p->n, pool__index(p, m));
        free(view);
        if (fits) return 0;
        if (vi >= 0) {
            char why[96];
            snprintf(why, sizeof why, "making room for %.60s", m->id);
            struct engine *e = pool__detach(p, p->models[vi], M_UNLOADED, why);
            p->models[vi]->evicted_ms = time_now_ms();
            p->evictions++;
            pthread_mutex_unlock(&p->mu);
            engine_free(e);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (time_now_ms() - wait_start >= POOL_STARVE_MS) {
            struct pool_model *d = NULL;
            bool any = false;
            for (size_t i = 0; i < p->n; i++) {
                struct pool_model *c = p->models[i];
                any |= c->state == M_DRAINING && c->drain == DRAIN_ROOM;
                if (c == m || c->state != M_READY || c->backend == POOL_UPSTREAM) continue;
                if (!d || c->last_used_ms < d->last_used_ms) d = c;
            }
            if (d && !any) {
                d->drain = DRAIN_ROOM;
                pool__set_state(d, M_DRAINING, "another model waits for its room");
                log_info("model %s: draining so that %s can load", d->id, m->id);
            }
        }
        if (time_now_ms() >= deadline) {
            struct buf busy;
            buf_init(&busy, 1024);
            for (size_t i = 0; i < p->n; i++)
                if (p->models[i]->engine)
                    buf_printf(&busy, "%s'%s' (%d in flight)", busy.len ? ", " : "", p->models[i]->id,
                               p->models[i]->pins);
            corral_err_set(err, CORRAL_UNAVAILABLE, "model",
                           "no room to load model '%s' (needs ~%.0f MiB; %.0f of %.0f MiB used, %d of %d models): "
                           "busy: %s",
                           m->id, need / 1048576.0, p->used / 1048576.0, p->budget / 1048576.0, pool__n_resident(p),
                           p->max_models, busy.len ? busy.data : "none");
            buf_free(&busy);
            return -1;
        }
        struct timespec ts;
        int64_t wake = time_now_ms() - wait_start < POOL_STARVE_MS ? wait_start + POOL_STARVE_MS : deadline;
        time_deadline_ms(&ts, wake - time_now_ms() > 0 ? wake - time_now_ms() : 1);
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
}

/* ------------------------------------------------------------- loading */

/* The engine for m, opened without the lock. */
static struct engine *pool__open(struct pool *p, struct pool_model *m, uint64_t cache_bytes, struct corral_err *err) {
    struct llama_engine_params lp = {
        .id = m->id,
        .path = m->path,
        .parallel = m->slots,
        .ctx = m->cfg.ctx,
        .batch = m->cfg.batch,
        .prompt_stall_ms = p->cfg->prompt_stall_ms,
        .threads = m->cfg.threads,
        .n_gpu_layers = m->cfg.n_gpu_layers,
        .flash_attn = m->cfg.flash_attn,
        .prompt_cache = cache_bytes,
        .queue_size = p->cfg->queue_size,
        .gate = p->gate,
        .chat_template = m->cfg.chat_template,
        .chat_template_kwargs = m->cfg.chat_template_kwargs,
        .out_cap = POOL_OUT_CAP,
        .progress = pool__on_progress,
        .progress_ctx = m,
    };
    struct proxy_engine_params pp = {
        .id = m->id,
        .parallel = m->slots,
        .queue_size = p->cfg->queue_size,
        .gate = p->gate,
        .out_cap = POOL_OUT_CAP,
        .health_path = m->cfg.health_path,
        .command = m->cfg.command,
        .model_path = m->cfg.path,
        .log_dir = p->log_dir,
        .startup_timeout_ms = m->cfg.startup_timeout_ms,
        .upstream = m->cfg.upstream,
        .upstream_model = m->cfg.upstream_model,
        .api_key = m->cfg.upstream_api_key,
        .dead = pool__on_dead,
        .dead_ctx = p,
        .aborted = pool__aborted,
        .aborted_ctx = m,
    };
    return m->backend == POOL_LLAMA ? p->be.open_llama(&lp, err) : p->be.open_proxy(&pp, err);
}

/* Load m (QUEUED). Called with mu held; returns with it held. */
static void pool__load(struct pool *p, struct pool_model *m) {
    struct corral_err err;
    corral_err_clear(&err);
    pool__set_state(m, M_LOADING, "the loader took it");
    atomic_store(&m->abort_load, false);
    atomic_store(&m->progress_permille, 0);
    struct estimate est;
    memset(&est, 0, sizeof est);
    if (m->backend == POOL_LLAMA) {
        struct estimate_params ep = {.n_slots = m->slots,
                                     .ctx_per_slot = m->cfg.ctx,
                                     .n_batch = m->cfg.batch,
                                     .prompt_cache = p->cfg->prompt_cache == CONFIG_SIZE_AUTO ? ESTIMATE_CACHE_AS_KV
                                                                                              : p->cfg->prompt_cache};
        char eerr[256];
        int erc = 0;
        /* a reload of the same file (a swap) reuses the header's estimate */
        if (m->est_cache_slots == m->slots && m->file_size && !pool__file_changed(m)) {
            est = m->est_cache;
        } else {
            pthread_mutex_unlock(&p->mu);
            erc = estimate_gguf(m->path, &ep, &est, eerr, sizeof eerr);
            pthread_mutex_lock(&p->mu);
            if (erc == 0) {
                m->est_cache = est;
                m->est_cache_slots = m->slots;
            }
        }
        if (erc != 0) {
            corral_err_set(&err, CORRAL_UNAVAILABLE, "model", "model '%s' (%s): %s", m->id, m->path, eerr);
            goto failed;
        }
    } else if (m->backend == POOL_CHILD) {
        est.total_bytes = m->cfg.memory_estimate; /* what the operator says it takes */
    }
    if (est.total_bytes > p->budget) {
        corral_err_set(&err, CORRAL_UNAVAILABLE, "model",
                       "model '%s' needs about %.0f MiB, more than the whole memory budget of %.0f MiB", m->id,
                       est.total_bytes / 1048576.0, p->budget / 1048576.0);
        goto failed;
    }
    int room = pool__make_room(p, m, est.total_bytes, &err);
    pool__undrain(p);
    if (room != 0) goto failed;
    m->est = m->est_last = est.total_bytes;
    p->used += m->est;
    if (m->slots < m->cfg.parallel)
        log_info("model %s: %d slots, not %d: the host runs %d generations at once (max_concurrent, "
                 "CORRAL_MAX_CONCURRENT)", m->id, m->slots, m->cfg.parallel, m->slots);
    pthread_mutex_unlock(&p->mu);
    int64_t t0 = time_now_ms();
    uint64_t rss0 = pool_rss();
    struct engine *e = pool__open(p, m, est.cache_bytes, &err);
    uint64_t rss1 = pool_rss();
    pthread_mutex_lock(&p->mu);
    if (!e) {
        p->used -= m->est <= p->used ? m->est : p->used;
        m->est = 0;
        if (err.status == CORRAL_OK) corral_err_set(&err, CORRAL_UNAVAILABLE, NULL, "model '%s' failed to load", m->id);
        goto failed;
    }
    m->engine = e;
    pool__note_file(m);
    m->measured = rss1 > rss0 ? rss1 - rss0 : 0;
    m->load_ms = time_now_ms() - t0;
    m->error[0] = '\0';
    m->backoff_ms = POOL_COOLDOWN_MIN_MS;
    m->last_used_ms = time_now_ms();
    p->loads++;
    pool__event(p, m->id, "loaded", "in %lld ms", (long long)m->load_ms);
    pool__set_state(m, M_READY, "loaded");
    log_info("model %s: ready in %lld ms (estimated %.1f MiB, RSS +%.1f MiB)", m->id, (long long)m->load_ms,
             m->est / 1048576.0, m->measured / 1048576.0);
    if (pool__aborted(m)) {
        /* unloaded or shut down while it loaded: what waited fails, and it
         * leaves once its pins are gone */
        pool__fail_pending(p, m, CORRAL_UNAVAILABLE, "the model was unloaded while it loaded");
        pool__set_state(m, M_UNLOADING, "unloaded while it loaded");
        return;
    }
    size_t np;
    struct engine_req **pend = pool__take_pending(m, &np);
    pthread_mutex_unlock(&p->mu);
    pool__submit_all(e, pend, np);
    pthread_mutex_lock(&p->mu);
    return;

failed:
    if (pool__aborted(m) || atomic_load(&p->closing)) {
        /* not the model's fault: no cooldown */
        log_info("model %s: load stopped (%s)", m->id, atomic_load(&p->closing) ? "shutting down" : "admin unload");
        pool__set_state(m, M_UNLOADED, "load aborted");
        pool__fail_pending(p, m, CORRAL_UNAVAILABLE,
                           atomic_load(&p->closing) ? "the server is shutting down"
                                                    : "the model was unloaded by an admin request while it loaded");
        return;
    }
    pool__set_state(m, M_FAILED, "load failed");
    pool__cool_down(m, err.message);
    p->load_failures++;
    pool__event(p, m->id, "failed", "%s", err.message);
    log_error("%s", err.message);
    size_t n_waiting;
    struct engine_req **waiting = pool__take_pending(m, &n_waiting);
    pthread_mutex_unlock(&p->mu);
    if (err.status == CORRAL_OK) err.status = CORRAL_UNAVAILABLE;
    pool__fail_all(waiting, n_waiting, &err);
    pthread_mutex_lock(&p->mu);
}

/* ------------------------------------------------------------- the thread */

/* last + ka without overflow (ka >= 0). */
static int64_t pool__due(int64_t last, int64_t ka) { return ka > INT64_MAX - last ? INT64_MAX : last + ka; }

void *pool__loader(void *arg) {
    struct pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!atomic_load(&p->stopping)) {
        atomic_store(&p->proxy_dead, false);
        if (pool__reap(p)) continue;
        int64_t now = time_now_ms();
        int64_t next = now + 60000;
        bool moved = false;
        for (size_t i = 0; i < p->n && !moved; i++) {
            struct pool_model *m = p->models[i];
            if (m->state != M_READY) continue;
            if (m->backend != POOL_LLAMA && now + POOL_PROXY_CHECK_MS < next) next = now + POOL_PROXY_CHECK_MS;
            if (!engine_alive(m->engine)) {
                /* its child server exited: new requests wait on the pending
                 * list; once the failed ones have let go it is unloaded,
                 * and the waiting requests start it again */
                m->drain = DRAIN_DEAD;
                pool__set_state(m, M_DRAINING, "its server exited");
                moved = true;
                continue;
            }
            if (m->pins > 0 || m->keep_alive_ms < 0) continue;
            int64_t due = pool__due(m->last_used_ms, m->keep_alive_ms);
            if (due <= now) {
                struct engine *e = pool__detach(p, m, M_UNLOADED, "idle past keep_alive");
                pthread_mutex_unlock(&p->mu);
                engine_free(e);
                pthread_mutex_lock(&p->mu);
                moved = true;
            } else if (due < next) {
                next = due;
            }
        }
        if (moved) continue;
        /* the oldest requested load */
        struct pool_model *todo = NULL;
        for (size_t i = 0; i < p->n && !atomic_load(&p->closing); i++) {
            struct pool_model *m = p->models[i];
            if (m->state == M_QUEUED && (!todo || m->load_requested_ms < todo->load_requested_ms)) todo = m;
        }
        if (todo) {
            pool__load(p, todo);
            continue;
        }
        if (atomic_load(&p->proxy_dead)) continue;
        struct timespec ts;
        time_deadline_ms(&ts, next - now > 0 ? next - now : 1);
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}
