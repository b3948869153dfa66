/* pool.c - the warm pool of models (see pool.h for the states).
 *
 * DESIGN
 * One mutex guards the registry and every model's bookkeeping; one loader
 * thread does all loading and unloading, so a load never runs on an HTTP
 * thread and two loads never race for memory. A request for a model that is
 * not loaded is parked on that model's pending list (the transport keeps its
 * connection suspended as for any queued request) and the loader submits it
 * to the engine when the load ends, or fails it with the load's error.
 *
 * Pins count requests from pool_submit to pool_release, including those
 * still pending. Only a LOADED model with no pins may be unloaded, so a
 * request never loses its model; the loader waits (bounded by load_timeout)
 * for pins to drop when nothing can be evicted yet.
 *
 * Memory is accounted with the GGUF-header estimate of each loaded or
 * loading model (pool/estimate.c), which aims a little high.
 */
#define _DEFAULT_SOURCE /* DT_DIR for the models_dir scan */
#include "pool/pool.h"

#include <dirent.h>
#include <limits.h>
#include <stdatomic.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capacity/capacity.h"
#include "engine/llama_engine.h"
#include "engine/proxy_engine.h"
#include "engine/supervisor.h"
#include "pool/estimate.h"
#include "pool/lru.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/time.h"

#define POOL_OUT_CAP (4u << 20)
#define POOL_COOLDOWN_MIN_MS 10000
#define POOL_COOLDOWN_MAX_MS 300000
#define POOL_PENDING_MAX 1024
#define POOL_SCAN_INTERVAL_MS 1000
#define POOL_SCAN_DEPTH 8
#define POOL_MAX_MODELS_TOTAL 4096
/* A load waiting this long for room stops new requests from reaching the
 * least recently used busy model, so its requests drain and it can leave:
 * a loaded model's waiting requests go first, but no model starves. */
#define POOL_STARVE_MS 2000
/* A child server that crashes this often within POOL_CRASH_WINDOW_MS is
 * not restarted at once: it gets the load-failure cooldown. */
#define POOL_CRASH_LOOP 3
#define POOL_CRASH_WINDOW_MS (5 * 60 * 1000)
/* The loader looks at proxied models at least this often (a child's exit
 * is signalled without the pool's lock, so a wake-up may be missed). */
#define POOL_PROXY_CHECK_MS 1000

enum pool_backend { POOL_LLAMA = 0, POOL_CHILD, POOL_UPSTREAM };

struct pool_model {
    char *id;
    enum pool_backend backend;
    int crashes;          /* child exits in the current crash window */
    int64_t first_crash_ms;
    char *path;
    struct config_model cfg; /* resolved; strings borrowed from cfg or owned (dir models) */
    char *owned_path;
    enum pool_model_status status;
    char error[CORRAL_ERR_MSG_MAX];
    int64_t created;
    struct engine *engine;
    int slots; /* min(parallel, host capacity) */
    struct engine_stats acc; /* counters of engines already unloaded */
    int pins;
    struct engine_req **pending;
    size_t n_pending;
    uint64_t est;      /* bytes counted in the pool's `used` while loading/loaded; 0 otherwise */
    uint64_t est_last; /* the last estimate made, for display */
    uint64_t measured;
    int64_t load_ms;
    int64_t last_used_ms;
    int64_t fail_until_ms;
    int64_t backoff_ms;
    int64_t keep_alive_ms;
    int64_t load_requested_ms;
    bool unload_requested; /* admin unload waiting for the last request */
    bool retired;          /* replaced by a newer file; serves its last requests */
    bool draining;         /* another model waits for its room: new requests wait for its reload */
    dev_t file_dev;        /* identity of the file that was loaded */
    ino_t file_ino;
    off_t file_size;
    struct timespec file_mtime;
    _Atomic int progress_permille;
};

struct pool {
    const struct config *cfg;
    struct capacity *gate;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* loader wake-ups: load requested, pin released, stop */
    pthread_t loader;
    bool loader_started;
    bool stopping;

    struct pool_model **models;
    size_t n, cap;
    int64_t last_scan_ms;

    char *log_dir; /* child servers' logs */
    _Atomic bool proxy_dead; /* a child exited: the loader should look */
    uint64_t budget;
    uint64_t used;
    int max_models;
    int64_t loads, evictions, load_failures;
};

const char *pool_status_name(enum pool_model_status s) {
    switch (s) {
    case POOL_UNLOADED: return "unloaded";
    case POOL_LOADING: return "loading";
    case POOL_LOADED: return "loaded";
    case POOL_FAILED: return "failed";
    }
    return "unknown";
}

/* ------------------------------------------------------------- helpers */

static uint64_t pool__rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f) return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2) resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

uint64_t pool_rss(void) { return pool__rss(); }

/* A safe default budget: three quarters of physical memory. */
static uint64_t pool__auto_budget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psize <= 0) return (uint64_t)8 << 30;
    return (uint64_t)pages * (uint64_t)psize / 4 * 3;
}

static struct pool_model *pool__find(struct pool *p, const char *id) {
    for (size_t i = 0; i < p->n; i++)
        if (!p->models[i]->retired && strcmp(p->models[i]->id, id) == 0) return p->models[i];
    return NULL;
}

/* true if the model's file is no longer the one that was loaded (device,
 * inode, size or mtime changed, or it is gone). */
static bool pool__file_changed(const struct pool_model *m) {
    if (m->backend != POOL_LLAMA) return false;
    struct stat st;
    if (stat(m->path, &st) != 0) return false; /* gone: keep serving what is loaded */
    return st.st_dev != m->file_dev || st.st_ino != m->file_ino || st.st_size != m->file_size ||
           st.st_mtim.tv_sec != m->file_mtime.tv_sec || st.st_mtim.tv_nsec != m->file_mtime.tv_nsec;
}

/* The i-th model that is not retired, or NULL. */
static struct pool_model *pool__nth(struct pool *p, size_t i) {
    for (size_t k = 0; k < p->n; k++) {
        if (p->models[k]->retired) continue;
        if (i-- == 0) return p->models[k];
    }
    return NULL;
}

/* Add a model record. Caller holds mu (or is single-threaded at start). */
static struct pool_model *pool__add(struct pool *p, const struct config_model *resolved, const char *path,
                                    bool own_path) {
    if (p->n >= POOL_MAX_MODELS_TOTAL) return NULL;
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 16;
        struct pool_model **nm = realloc(p->models, nc * sizeof *nm);
        if (!nm) return NULL;
        p->models = nm;
        p->cap = nc;
    }
    struct pool_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->cfg = *resolved;
    m->backend = resolved->command ? POOL_CHILD : resolved->upstream ? POOL_UPSTREAM : POOL_LLAMA;
    if (!path) { /* shown as the model's path in listings */
        path = resolved->command ? resolved->command : resolved->upstream ? resolved->upstream : "";
        own_path = true;
    }
    m->id = strdup(resolved->id);
    m->owned_path = own_path ? strdup(path) : NULL;
    m->path = own_path ? m->owned_path : (char *)path;
    m->created = time_wall_s();
    m->keep_alive_ms = resolved->keep_alive_ms;
    m->backoff_ms = POOL_COOLDOWN_MIN_MS;
    if (!m->id || !m->path) {
        free(m->id);
        free(m->owned_path);
        free(m);
        return NULL;
    }
    m->cfg.path = m->path;
    m->slots = m->cfg.parallel;
    if (p->gate && m->slots > capacity_host(p->gate)) m->slots = capacity_host(p->gate);
    p->models[p->n++] = m;
    return m;
}

/* Register every *.gguf below dir (depth-limited) not registered yet. Caller
 * holds mu. */
static void pool__scan_dir(struct pool *p, const char *dir, int depth) {
    if (depth > POOL_SCAN_DEPTH) return;
    DIR *d = opendir(dir);
    if (!d) {
        if (depth == 0) log_warn("models_dir %s: %s", dir, strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path) continue;
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            pool__scan_dir(p, path, depth + 1);
            continue;
        }
        size_t len = strlen(de->d_name);
        if (!S_ISREG(st.st_mode) || len <= 5 || strcmp(de->d_name + len - 5, ".gguf") != 0) continue;
        if (len - 5 >= CONFIG_ID_MAX) continue;
        struct config_model cm;
        config_model_init(&cm);
        memcpy(cm.id, de->d_name, len - 5);
        cm.id[len - 5] = '\0';
        if (pool__find(p, cm.id)) continue;
        cm.path = path;
        struct config_model resolved;
        config_model_resolve(p->cfg, &cm, &resolved);
        if (pool__add(p, &resolved, path, true)) log_info("models_dir: registered %s (%s)", cm.id, path);
    }
    closedir(d);
}

static void pool__scan(struct pool *p) {
    if (!p->cfg->models_dir) return;
    int64_t now = time_now_ms();
    if (p->last_scan_ms && now - p->last_scan_ms < POOL_SCAN_INTERVAL_MS) return;
    p->last_scan_ms = now;
    pool__scan_dir(p, p->cfg->models_dir, 0);
}

/* Take m's pending requests (and the pool's references to them); *n gets
 * their count. Caller holds mu. */
static struct engine_req **pool__take_pending(struct pool_model *m, size_t *n) {
    struct engine_req **pend = m->pending;
    *n = m->n_pending;
    m->pending = NULL;
    m->n_pending = 0;
    return pend;
}

/* m failed (a load, or a crash loop): FAILED until the cooldown passes,
 * which doubles each time up to POOL_COOLDOWN_MAX_MS. Caller holds mu. */
static void pool__cool_down(struct pool_model *m, const char *why) {
    m->status = POOL_FAILED;
    snprintf(m->error, sizeof m->error, "%s", why);
    m->fail_until_ms = time_now_ms() + m->backoff_ms;
    m->backoff_ms = m->backoff_ms * 2 > POOL_COOLDOWN_MAX_MS ? POOL_COOLDOWN_MAX_MS : m->backoff_ms * 2;
}

/* Hand requests that waited for a load to the engine (a refusal fails the
 * request); drops the pool's references and frees the array. */
static void pool__submit_all(struct engine *e, struct engine_req **reqs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        struct corral_err serr;
        corral_err_clear(&serr);
        if (engine_submit(e, reqs[i], &serr) != CORRAL_OK) engine_req_fail(reqs[i], &serr);
        engine_req_release(reqs[i]);
    }
    free(reqs);
}

static void pool__fail_all(struct engine_req **reqs, size_t n, const struct corral_err *err) {
    for (size_t i = 0; i < n; i++) {
        engine_req_fail(reqs[i], err);
        engine_req_release(reqs[i]);
    }
    free(reqs);
}

/* ------------------------------------------------------------- lifecycle */

static void *pool__loader(void *arg);

struct pool *pool_new(const struct config *cfg, struct capacity *gate, struct corral_err *err) {
    struct pool *p = calloc(1, sizeof *p);
    if (!p) goto nomem;
    p->cfg = cfg;
    p->gate = gate;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->budget = cfg->memory_budget ? (uint64_t)cfg->memory_budget : pool__auto_budget();
    atomic_init(&p->proxy_dead, false);
    char state[PATH_MAX - 8];
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
        bool pre = cfg->models[i].preload;
        for (int k = 0; k < cfg->n_preload; k++)
            if (strcmp(cfg->preload[k], m.id) == 0) pre = true;
        if (pre) {
            pm->status = POOL_LOADING;
            pm->load_requested_ms = time_now_ms();
        }
    }
    pool__scan(p);
    for (int k = 0; k < cfg->n_preload; k++) {
        struct pool_model *pm = pool__find(p, cfg->preload[k]);
        if (!pm)
            log_warn("preload: no model '%s'", cfg->preload[k]);
        else if (pm->status == POOL_UNLOADED) {
            pm->status = POOL_LOADING;
            pm->load_requested_ms = time_now_ms();
        }
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

void pool_stop(struct pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    bool join = p->loader_started && !p->stopping;
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (join) pthread_join(p->loader, NULL);
    /* the loader is gone: fail what waits for a load, stop the engines */
    struct corral_err err;
    corral_err_set(&err, CORRAL_UNAVAILABLE, NULL, "the server is shutting down");
    for (size_t i = 0; i < p->n; i++) {
        struct pool_model *m = p->models[i];
        size_t np;
        pthread_mutex_lock(&p->mu);
        struct engine_req **pend = pool__take_pending(m, &np);
        pthread_mutex_unlock(&p->mu);
        if (pend || np) pool__fail_all(pend, np, &err);
        if (m->engine) engine_stop(m->engine);
    }
}

void pool_free(struct pool *p) {
    if (!p) return;
    pool_stop(p);
    for (size_t i = 0; i < p->n; i++) {
        struct pool_model *m = p->models[i];
        engine_free(m->engine);
        free(m->pending);
        free(m->id);
        free(m->owned_path);
        free(m);
    }
    free(p->models);
    free(p->log_dir);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

/* ------------------------------------------------------------- requests */

enum corral_status pool_submit(struct pool *p, const char *id, struct engine_req *r,
                               struct pool_model **handle, struct corral_err *err) {
    *handle = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "the server is shutting down");
    }
    struct pool_model *m = pool__find(p, id);
    if (!m) {
        pool__scan(p); /* a model file may have been added to models_dir */
        m = pool__find(p, id);
    }
    if (!m) {
        struct buf ids;
        buf_init(&ids, 2048);
        for (size_t i = 0; i < p->n; i++) buf_printf(&ids, "%s'%s'", i ? ", " : "", p->models[i]->id);
        pthread_mutex_unlock(&p->mu);
        corral_err_set(err, CORRAL_MODEL_NOT_FOUND, "model", "the model '%.200s' does not exist; available: %s", id,
                       ids.len ? ids.data : "(none)");
        buf_free(&ids);
        return err->status;
    }
    int64_t now = time_now_ms();
    if (m->status == POOL_FAILED) {
        if (now < m->fail_until_ms) {
            corral_err_set(err, CORRAL_UNAVAILABLE, "model", "the model '%s' failed to load: %s (retrying in %lld s)",
                           m->id, m->error, (long long)((m->fail_until_ms - now + 999) / 1000));
            pthread_mutex_unlock(&p->mu);
            return err->status;
        }
        m->status = POOL_UNLOADED;
    }
    if (m->unload_requested) {
        corral_err_set(err, CORRAL_UNAVAILABLE, "model", "the model '%s' is being unloaded; retry shortly", m->id);
        pthread_mutex_unlock(&p->mu);
        return err->status;
    }
    m->pins++;
    m->last_used_ms = now;
    /* a request's keep_alive sets how long the model stays after it */
    int64_t ka = engine_req_input(r)->keep_alive_ms;
    m->keep_alive_ms = ka != API_KEEP_ALIVE_UNSET ? ka : m->cfg.keep_alive_ms;
    if (m->status == POOL_LOADED && pool__file_changed(m)) {
        /* a new file: requests in flight finish on the old engine, which is
         * freed when they end; this and later requests get the new file */
        struct pool_model *fresh = pool__add(p, &m->cfg, m->path, true);
        if (fresh) {
            fresh->keep_alive_ms = m->keep_alive_ms;
            m->retired = true;
            m->unload_requested = true;
            m->pins--;
            log_info("model %s: file changed on disk; loading it again", m->id);
            pthread_cond_broadcast(&p->cv);
            m = fresh;
            m->pins++;
            m->last_used_ms = now;
        }
    }
    if (m->status == POOL_LOADED && !m->draining && !engine_alive(m->engine)) {
        /* its child server exited: this request waits for the respawn */
        m->draining = true;
        pthread_cond_broadcast(&p->cv);
    }
    if (m->status == POOL_LOADED && !m->draining) {
        struct engine *e = m->engine;
        pthread_mutex_unlock(&p->mu);
        enum corral_status st = engine_submit(e, r, err);
        if (st != CORRAL_OK) {
            pool_release(p, m);
            return st;
        }
        *handle = m;
        return CORRAL_OK;
    }
    /* not loaded: wait for the (single) load */
    if (m->n_pending >= POOL_PENDING_MAX) {
        m->pins--;
        pthread_mutex_unlock(&p->mu);
        return corral_err_set(err, CORRAL_OVERLOADED, NULL, "too many requests are waiting for model '%s' to load",
                              m->id);
    }
    if (m->n_pending % 16 == 0) {
        struct engine_req **np = realloc(m->pending, (m->n_pending + 16) * sizeof *np);
        if (!np) {
            m->pins--;
            pthread_mutex_unlock(&p->mu);
            return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        }
        m->pending = np;
    }
    engine_req_retain(r);
    m->pending[m->n_pending++] = r;
    if (m->status == POOL_UNLOADED) {
        m->status = POOL_LOADING;
        m->load_requested_ms = now;
        pthread_cond_broadcast(&p->cv);
    }
    *handle = m;
    pthread_mutex_unlock(&p->mu);
    return CORRAL_OK;
}

void pool_release(struct pool *p, struct pool_model *m) {
    if (!m) return;
    pthread_mutex_lock(&p->mu);
    if (m->pins > 0) m->pins--;
    m->last_used_ms = time_now_ms();
    /* room may be free now (a draining model counts only its requests in
     * the engine), or keep_alive starts: let the loader look */
    if (m->pins == 0 || m->draining) pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ------------------------------------------------------------- the loader */

/* Unload m (LOADED, no pins). Caller holds mu; returns the engine to free
 * after unlocking. */
static struct engine *pool__unload(struct pool *p, struct pool_model *m, const char *why) {
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
    m->status = POOL_UNLOADED;
    m->unload_requested = false;
    m->draining = false;
    p->used -= m->est <= p->used ? m->est : p->used;
    m->est = 0;
    if (m->n_pending > 0 && !m->retired) {
        /* requests arrived while it drained: load it again after the others */
        m->status = POOL_LOADING;
        m->load_requested_ms = time_now_ms();
    }
    log_info("model %s: unloaded (%s)", m->id, why);
    return e;
}

/* The registry as the pure eviction rules see it (pool/lru.h). Caller
 * holds mu; *out is malloc'd (NULL if out of memory). */
static struct lru_entry *pool__lru_view(struct pool *p) {
    struct lru_entry *v = calloc(p->n ? p->n : 1, sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < p->n; i++) {
        struct pool_model *m = p->models[i];
        v[i].bytes = m->est;
        v[i].last_used_ms = m->last_used_ms;
        /* a draining model's pending requests wait for its reload: they do
         * not keep it loaded */
        v[i].pins = m->pins - (m->draining ? (int)m->n_pending : 0);
        /* an upstream model holds no memory here: it neither counts nor
         * makes room when unloaded */
        bool local = m->backend != POOL_UPSTREAM;
        v[i].resident = local && m->status == POOL_LOADED;
        v[i].counted = local && (m->status == POOL_LOADED || (m->status == POOL_LOADING && m->est));
    }
    return v;
}

static int pool__n_resident(struct pool *p) {
    int n = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct pool_model *m = p->models[i];
        if (m->backend == POOL_UPSTREAM) continue;
        if (m->status == POOL_LOADED || (m->status == POOL_LOADING && m->est)) n++;
    }
    return n;
}

/* End every drain that did not end in an eviction: the model keeps serving
 * and the requests that waited go to its engine. Called with mu held;
 * returns with mu held (unlocks while submitting). */
static void pool__undrain(struct pool *p) {
    for (size_t i = 0; i < p->n; i++) {
        struct pool_model *d = p->models[i];
        if (!d->draining) continue;
        if (d->engine && !engine_alive(d->engine)) continue; /* waits for its respawn */
        d->draining = false;
        if (d->status != POOL_LOADED || d->n_pending == 0) continue;
        size_t np;
        struct engine_req **pend = pool__take_pending(d, &np);
        struct engine *e = d->engine;
        pthread_mutex_unlock(&p->mu);
        pool__submit_all(e, pend, np);
        pthread_mutex_lock(&p->mu);
        i = (size_t)-1; /* start over: the registry may have changed */
    }
}

/* Index of model m in the registry. Caller holds mu. */
static size_t pool__index(struct pool *p, const struct pool_model *m) {
    for (size_t i = 0; i < p->n; i++)
        if (p->models[i] == m) return i;
    return p->n;
}

/* A child server exited (called from its engine's thread, without the
 * pool's lock, which a stopping pool may hold while joining that thread). */
static void pool__on_dead(void *ctx) {
    struct pool *p = ctx;
    atomic_store(&p->proxy_dead, true);
    pthread_cond_broadcast(&p->cv);
}

static void pool__on_progress(float fraction, void *ctx) {
    struct pool_model *m = ctx;
    atomic_store(&m->progress_permille, (int)(fraction * 1000));
}

/* Load m (status LOADING, est not yet counted). Called with mu held; returns
 * with mu held. */
static void pool__load(struct pool *p, struct pool_model *m) {
    struct corral_err err;
    corral_err_clear(&err);
    /* estimate from the header */
    struct estimate est;
    memset(&est, 0, sizeof est);
    if (m->backend == POOL_LLAMA) {
        struct estimate_params ep = {.n_slots = m->slots,
                                     .ctx_per_slot = m->cfg.ctx,
                                     .n_batch = m->cfg.batch,
                                     .prompt_cache = p->cfg->prompt_cache == CONFIG_SIZE_AUTO
                                                         ? ESTIMATE_CACHE_AS_KV
                                                         : p->cfg->prompt_cache};
        char eerr[256];
        pthread_mutex_unlock(&p->mu);
        int erc = estimate_gguf(m->path, &ep, &est, eerr, sizeof eerr);
        pthread_mutex_lock(&p->mu);
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
    /* make room: evict LRU idle models, wait (bounded) for busy ones */
    int64_t wait_start = time_now_ms();
    int64_t deadline = wait_start + p->cfg->load_timeout_ms;
    for (;;) {
        if (p->stopping) {
            corral_err_set(&err, CORRAL_UNAVAILABLE, NULL, "the server is shutting down");
            goto failed;
        }
        if (m->backend == POOL_UPSTREAM) break; /* takes no room here */
        struct lru_entry *view = pool__lru_view(p);
        if (!view) {
            corral_err_set(&err, CORRAL_NOMEM, NULL, "out of memory");
            goto failed;
        }
        bool fits = lru_fits(view, p->n, est.total_bytes, p->budget, p->max_models);
        long vi = fits ? -1 : lru_victim(view, p->n, pool__index(p, m));
        free(view);
        if (fits) break;
        struct pool_model *v = vi >= 0 ? p->models[vi] : NULL;
        if (v) {
            char why[96];
            snprintf(why, sizeof why, "making room for %.60s", m->id);
            struct engine *e = pool__unload(p, v, why);
            p->evictions++;
            pthread_mutex_unlock(&p->mu);
            engine_free(e);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (time_now_ms() - wait_start >= POOL_STARVE_MS) {
            struct pool_model *d = NULL;
            for (size_t i = 0; i < p->n; i++) {
                struct pool_model *c = p->models[i];
                if (c == m || c->status != POOL_LOADED || c->draining) continue;
                if (!d || c->last_used_ms < d->last_used_ms) d = c;
            }
            bool any_draining = false;
            for (size_t i = 0; i < p->n; i++) any_draining |= p->models[i]->draining;
            if (d && !any_draining) {
                d->draining = true;
                log_info("model %s: draining so that %s can load", d->id, m->id);
            }
        }
        if (time_now_ms() >= deadline) {
            struct buf busy;
            buf_init(&busy, 1024);
            for (size_t i = 0; i < p->n; i++)
                if (p->models[i]->status == POOL_LOADED)
                    buf_printf(&busy, "%s'%s' (%d in flight)", busy.len ? ", " : "", p->models[i]->id,
                               p->models[i]->pins);
            corral_err_set(&err, CORRAL_UNAVAILABLE, "model",
                           "no room to load model '%s' (needs ~%.0f MiB; %.0f of %.0f MiB used, %d of %d models): "
                           "busy: %s",
                           m->id, est.total_bytes / 1048576.0, p->used / 1048576.0, p->budget / 1048576.0,
                           pool__n_resident(p), p->max_models, busy.len ? busy.data : "none");
            buf_free(&busy);
            goto failed;
        }
        struct timespec ts;
        int64_t wake = time_now_ms() - wait_start < POOL_STARVE_MS ? wait_start + POOL_STARVE_MS : deadline;
        time_deadline_ms(&ts, wake - time_now_ms() > 0 ? wake - time_now_ms() : 1);
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pool__undrain(p);
    m->est = m->est_last = est.total_bytes;
    p->used += m->est;
    pthread_mutex_unlock(&p->mu);

    struct llama_engine_params lp = {
        .id = m->id,
        .path = m->path,
        .parallel = m->slots,
        .ctx = m->cfg.ctx,
        .batch = m->cfg.batch,
        .threads = m->cfg.threads,
        .n_gpu_layers = m->cfg.n_gpu_layers,
        .flash_attn = m->cfg.flash_attn,
        .prompt_cache = est.cache_bytes,
        .queue_size = p->cfg->queue_size,
        .gate = p->gate,
        .chat_template = m->cfg.chat_template,
        .out_cap = POOL_OUT_CAP,
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
    };
    if (m->slots < m->cfg.parallel)
        log_info("model %s: %d slots, not %d: the host runs %d generations at once (max_concurrent, "
                 "CORRAL_MAX_CONCURRENT)", m->id, m->slots, m->cfg.parallel, m->slots);
    atomic_store(&m->progress_permille, 0);
    lp.progress = pool__on_progress;
    lp.progress_ctx = m;
    int64_t t0 = time_now_ms();
    uint64_t rss0 = pool__rss();
    struct engine *e = m->backend == POOL_LLAMA ? llama_engine_open(&lp, &err) : proxy_engine_open(&pp, &err);
    uint64_t rss1 = pool__rss();
    pthread_mutex_lock(&p->mu);
    if (!e) {
        p->used -= m->est <= p->used ? m->est : p->used;
        if (err.status == CORRAL_OK) corral_err_set(&err, CORRAL_UNAVAILABLE, NULL, "model '%s' failed to load", m->id);
        goto failed;
    }
    m->engine = e;
    struct stat fst;
    if (stat(m->path, &fst) == 0) {
        m->file_dev = fst.st_dev;
        m->file_ino = fst.st_ino;
        m->file_size = fst.st_size;
        m->file_mtime = fst.st_mtim;
    }
    m->measured = rss1 > rss0 ? rss1 - rss0 : 0;
    m->load_ms = time_now_ms() - t0;
    m->status = POOL_LOADED;
    m->error[0] = '\0';
    m->backoff_ms = POOL_COOLDOWN_MIN_MS;
    m->last_used_ms = time_now_ms();
    p->loads++;
    log_info("model %s: ready in %lld ms (estimated %.1f MiB, RSS +%.1f MiB)", m->id, (long long)m->load_ms,
             m->est / 1048576.0, m->measured / 1048576.0);
    /* hand the waiting requests to the engine */
    size_t np;
    struct engine_req **pend = pool__take_pending(m, &np);
    pthread_mutex_unlock(&p->mu);
    pool__submit_all(e, pend, np);
    pthread_mutex_lock(&p->mu);
    return;

failed:
    pool__undrain(p);
    m->est = 0;
    pool__cool_down(m, err.message);
    p->load_failures++;
    log_error("%s", err.message);
    size_t n_waiting;
    struct engine_req **waiting = pool__take_pending(m, &n_waiting);
    pthread_mutex_unlock(&p->mu);
    if (err.status == CORRAL_OK) err.status = CORRAL_UNAVAILABLE;
    pool__fail_all(waiting, n_waiting, &err);
    pthread_mutex_lock(&p->mu);
}

static void *pool__loader(void *arg) {
    struct pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        int64_t now = time_now_ms();
        /* idle models past their keep_alive, and admin unloads whose last
         * request has ended */
        int64_t next = now + 60000;
        atomic_store(&p->proxy_dead, false);
        for (size_t i = 0; i < p->n; i++) {
            struct pool_model *m = p->models[i];
            if (m->status == POOL_LOADED && m->backend != POOL_LLAMA && now + POOL_PROXY_CHECK_MS < next)
                next = now + POOL_PROXY_CHECK_MS;
            if (m->status == POOL_LOADED && !engine_alive(m->engine)) {
                /* its child server exited: new requests wait on the pending
                 * list; once the failed ones have let go, unload it, and
                 * the waiting requests start it again */
                m->draining = true;
                if (m->pins - (int)m->n_pending > 0) continue;
                if (now - m->first_crash_ms > POOL_CRASH_WINDOW_MS) {
                    m->first_crash_ms = now;
                    m->crashes = 0;
                }
                m->crashes++;
                struct engine *e = pool__unload(p, m, "its server exited");
                struct engine_req **pend = NULL;
                size_t np = 0;
                struct corral_err cerr;
                if (m->crashes >= POOL_CRASH_LOOP) {
                    /* a crash loop: cool down like a failed load */
                    char why[96];
                    snprintf(why, sizeof why, "its server exited %d times in %d minutes", m->crashes,
                             POOL_CRASH_WINDOW_MS / 60000);
                    pool__cool_down(m, why);
                    m->crashes = 0;
                    corral_err_set(&cerr, CORRAL_UNAVAILABLE, "model",
                                   "the model '%s' keeps crashing (%s); retrying in %lld s", m->id, m->error,
                                   (long long)((m->fail_until_ms - now) / 1000));
                    log_error("%s", cerr.message);
                    pend = pool__take_pending(m, &np);
                }
                pthread_mutex_unlock(&p->mu);
                if (pend) pool__fail_all(pend, np, &cerr);
                engine_free(e);
                pthread_mutex_lock(&p->mu);
                i = (size_t)-1; /* the registry may have changed: start over */
                now = time_now_ms();
                continue;
            }
            if (m->status != POOL_LOADED || m->pins > 0) continue;
            if (m->keep_alive_ms < 0 && !m->unload_requested) continue;
            int64_t due = m->unload_requested ? now : m->last_used_ms + m->keep_alive_ms;
            if (due <= now) {
                struct engine *e = pool__unload(p, m, m->unload_requested ? "admin request" : "idle past keep_alive");
                pthread_mutex_unlock(&p->mu);
                engine_free(e);
                pthread_mutex_lock(&p->mu);
                i = (size_t)-1; /* the registry may have changed: start over */
                now = time_now_ms();
                continue;
            }
            if (due < next) next = due;
        }
        /* the oldest requested load */
        struct pool_model *todo = NULL;
        for (size_t i = 0; i < p->n; i++) {
            struct pool_model *m = p->models[i];
            if (m->status == POOL_LOADING &&
                (!todo || m->load_requested_ms < todo->load_requested_ms))
                todo = m;
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
    if (m->status == POOL_UNLOADED || m->status == POOL_FAILED) {
        m->status = POOL_LOADING; /* an explicit load retries at once */
        m->fail_until_ms = 0;
        m->load_requested_ms = time_now_ms();
        pthread_cond_broadcast(&p->cv);
    }
    m->unload_requested = false;
    *status = m->status;
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
    if (m->status != POOL_LOADED) {
        /* nothing loaded (a load in progress finishes, then idles out) */
        *done = m->status != POOL_LOADING;
        if (m->status == POOL_LOADING) m->unload_requested = true;
        pthread_mutex_unlock(&p->mu);
        return CORRAL_OK;
    }
    if (m->pins == 0) {
        struct engine *e = pool__unload(p, m, "admin request");
        pthread_mutex_unlock(&p->mu);
        engine_free(e);
        *done = true;
        return CORRAL_OK;
    }
    m->unload_requested = true;
    /* force: fail the requests in flight now; their transports then drop
     * the pins and the loader unloads the model. Under the lock, so the
     * loader cannot free the engine meanwhile (stopping never takes it). */
    if (force) engine_stop(m->engine);
    pthread_mutex_unlock(&p->mu);
    return CORRAL_OK;
}

static bool pool__valid_id(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n >= CONFIG_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == ':' || c == '-'))
            return false;
    }
    return true;
}

enum corral_status pool_register(struct pool *p, const char *id, const char *path, struct corral_err *err) {
    if (!p->cfg->models_dir)
        return corral_err_set(err, CORRAL_FORBIDDEN, NULL, "registering models needs models_dir to be set");
    if (!pool__valid_id(id))
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "id", "a model id is 1..127 of [A-Za-z0-9._:-]");
    char dir[PATH_MAX], file[PATH_MAX];
    if (!realpath(p->cfg->models_dir, dir))
        return corral_err_set(err, CORRAL_INTERNAL, NULL, "models_dir is not accessible: %s", strerror(errno));
    if (!realpath(path, file))
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "path", "cannot resolve '%.200s': %s", path, strerror(errno));
    size_t dl = strlen(dir);
    struct stat st;
    size_t fl = strlen(file);
    if (strncmp(file, dir, dl) != 0 || file[dl] != '/')
        return corral_err_set(err, CORRAL_FORBIDDEN, "path", "'%.200s' is outside models_dir", path);
    if (stat(file, &st) != 0 || !S_ISREG(st.st_mode) || fl < 5 || strcmp(file + fl - 5, ".gguf") != 0)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "path", "'%.200s' is not a .gguf file", path);
    pthread_mutex_lock(&p->mu);
    if (pool__find(p, id)) {
        pthread_mutex_unlock(&p->mu);
        return corral_err_set(err, CORRAL_INVALID_REQUEST, "id", "a model '%s' is already registered", id);
    }
    struct config_model cm;
    config_model_init(&cm);
    snprintf(cm.id, sizeof cm.id, "%s", id);
    cm.path = file;
    struct config_model resolved;
    config_model_resolve(p->cfg, &cm, &resolved);
    struct pool_model *m = pool__add(p, &resolved, file, true);
    pthread_mutex_unlock(&p->mu);
    if (!m) return corral_err_set(err, CORRAL_NOMEM, NULL, "cannot register more models");
    log_info("registered model %s (%s)", id, file);
    return CORRAL_OK;
}

/* ------------------------------------------------------------- queries */

size_t pool_count(struct pool *p) {
    pthread_mutex_lock(&p->mu);
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) n += !p->models[i]->retired;
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
    out->id = m->id;
    out->path = m->path;
    out->status = m->status;
    snprintf(out->error, sizeof out->error, "%s", m->error);
    out->created = m->created;
    out->in_flight = m->pins;
    out->last_used_ms = m->last_used_ms;
    out->keep_alive_ms = m->keep_alive_ms;
    out->mem_estimated = m->est_last;
    out->mem_measured = m->measured;
    out->load_ms = m->load_ms;
    out->load_progress = m->status == POOL_LOADED ? 1.0f
                         : m->status == POOL_LOADING ? atomic_load(&m->progress_permille) / 1000.0f
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
    for (size_t i = 0; i < p->n; i++) out->waiting_for_load += (int)p->models[i]->n_pending;
    pthread_mutex_unlock(&p->mu);
}
