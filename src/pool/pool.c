/* pool.c - the registry of models and their engines.
 *
 * Every configured model is loaded at start; pins count the requests using
 * each engine so a later unload can wait for them.
 */
#include "pool/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/llama_engine.h"
#include "pool/estimate.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/time.h"

#define POOL_OUT_CAP (4u << 20)

struct pool_model {
    char *id;
    char *path;
    enum pool_model_status status;
    char error[CORRAL_ERR_MSG_MAX];
    int64_t created;
    int pins;
    struct engine *engine;
    uint64_t mem_estimated;
    uint64_t mem_measured;
};

/* Resident set size of this process in bytes (0 if unknown). */
static uint64_t pool__rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f) return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2) resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

struct pool {
    pthread_mutex_t mu;
    struct pool_model *models;
    size_t n;
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

struct pool *pool_new(const struct config *cfg, struct corral_err *err) {
    struct pool *p = calloc(1, sizeof *p);
    if (!p) goto nomem;
    pthread_mutex_init(&p->mu, NULL);
    p->models = calloc(cfg->n_models ? (size_t)cfg->n_models : 1, sizeof *p->models);
    if (!p->models) goto nomem;
    llama_engine_global_init();
    for (int i = 0; i < cfg->n_models; i++) {
        struct config_model m;
        config_model_resolve(cfg, &cfg->models[i], &m);
        struct pool_model *pm = &p->models[p->n++];
        pm->id = strdup(m.id);
        pm->path = strdup(m.path);
        pm->created = time_wall_s();
        if (!pm->id || !pm->path) goto nomem;
        struct llama_engine_params lp = {
            .id = m.id,
            .path = m.path,
            .parallel = m.parallel,
            .ctx = m.ctx,
            .batch = m.batch,
            .threads = m.threads,
            .n_gpu_layers = m.n_gpu_layers,
            .queue_size = cfg->queue_size,
            .chat_template = m.chat_template,
            .out_cap = POOL_OUT_CAP,
        };
        struct corral_err lerr;
        corral_err_clear(&lerr);
        struct estimate est;
        struct estimate_params ep = {.n_slots = m.parallel, .ctx_per_slot = m.ctx, .n_batch = m.batch};
        char eerr[256];
        if (estimate_gguf(m.path, &ep, &est, eerr, sizeof eerr) == 0) {
            pm->mem_estimated = est.total_bytes;
            log_info("model %s: estimated %.1f MiB (weights %.1f, KV %.1f, compute %.1f)", m.id,
                     est.total_bytes / 1048576.0, est.weights_bytes / 1048576.0, est.kv_bytes / 1048576.0,
                     est.compute_bytes / 1048576.0);
        } else {
            log_warn("model %s: no memory estimate: %s", m.id, eerr);
        }
        pm->status = POOL_LOADING;
        uint64_t rss0 = pool__rss();
        pm->engine = llama_engine_open(&lp, &lerr);
        uint64_t rss1 = pool__rss();
        pm->mem_measured = rss1 > rss0 ? rss1 - rss0 : 0;
        if (pm->engine) {
            pm->status = POOL_LOADED;
        } else {
            pm->status = POOL_FAILED;
            snprintf(pm->error, sizeof pm->error, "%s", lerr.message);
            log_error("%s", lerr.message);
        }
    }
    return p;
nomem:
    pool_free(p);
    corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
    return NULL;
}

void pool_stop(struct pool *p) {
    for (size_t i = 0; i < p->n; i++)
        if (p->models[i].engine) engine_stop(p->models[i].engine);
}

void pool_free(struct pool *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) {
        engine_free(p->models[i].engine);
        free(p->models[i].id);
        free(p->models[i].path);
    }
    free(p->models);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static struct pool_model *pool__find(struct pool *p, const char *id) {
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->models[i].id, id) == 0) return &p->models[i];
    return NULL;
}

struct engine *pool_acquire(struct pool *p, const char *id, struct corral_err *err) {
    pthread_mutex_lock(&p->mu);
    struct pool_model *m = pool__find(p, id);
    if (!m) {
        struct buf ids;
        buf_init(&ids, 2048);
        for (size_t i = 0; i < p->n; i++) buf_printf(&ids, "%s'%s'", i ? ", " : "", p->models[i].id);
        pthread_mutex_unlock(&p->mu);
        corral_err_set(err, CORRAL_MODEL_NOT_FOUND, "model", "the model '%.200s' does not exist; available: %s",
                       id, ids.len ? ids.data : "(none)");
        buf_free(&ids);
        return NULL;
    }
    if (m->status != POOL_LOADED) {
        corral_err_set(err, CORRAL_UNAVAILABLE, "model", "the model '%s' is %s: %s", m->id,
                       pool_status_name(m->status), m->error[0] ? m->error : "not loaded");
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    m->pins++;
    struct engine *e = m->engine;
    pthread_mutex_unlock(&p->mu);
    return e;
}

void pool_release(struct pool *p, struct engine *e) {
    if (!e) return;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n; i++)
        if (p->models[i].engine == e && p->models[i].pins > 0) p->models[i].pins--;
    pthread_mutex_unlock(&p->mu);
}

size_t pool_count(struct pool *p) { return p->n; }

int pool_info(struct pool *p, size_t i, struct pool_model_info *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&p->mu);
    if (i >= p->n) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    struct pool_model *m = &p->models[i];
    out->id = m->id;
    out->path = m->path;
    out->status = m->status;
    out->error = m->error;
    out->created = m->created;
    out->in_flight = m->pins;
    out->mem_estimated = m->mem_estimated;
    out->mem_measured = m->mem_measured;
    struct engine *e = m->engine;
    pthread_mutex_unlock(&p->mu);
    if (e) engine_stats(e, &out->stats);
    return 0;
}
