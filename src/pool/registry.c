/* registry.c - the pool's model records: adding and removing them, finding
 * them by id, store scans (models_dir, Ollama, Hugging Face: stores.c),
 * admin registration and file identity. */
#define _DEFAULT_SOURCE /* realpath */
#include "pool/internal.h"
#include "pool/stores.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capacity/capacity.h"
#include "util/log.h"
#include "util/time.h"

struct pool_model *pool__add(struct pool *p, const struct config_model *resolved, const char *path, bool own_path) {
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
    m->pool = p;
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
    atomic_init(&m->abort_load, false);
    atomic_init(&m->progress_permille, 0);
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

void pool__free_model(struct pool_model *m) {
    if (!m) return;
    free(m->id);
    free(m->owned_path);
    free(m);
}

void pool__remove(struct pool *p, struct pool_model *m) {
    for (size_t i = 0; i < p->n; i++) {
        if (p->models[i] != m) continue;
        memmove(&p->models[i], &p->models[i + 1], (p->n - i - 1) * sizeof *p->models);
        p->n--;
        break;
    }
    pool__free_model(m);
}

struct pool_model *pool__find(struct pool *p, const char *id) {
    for (size_t i = 0; i < p->n; i++)
        if (p->models[i]->state != M_RETIRED && strcmp(p->models[i]->id, id) == 0) return p->models[i];
    return NULL;
}

struct pool_model *pool__nth(struct pool *p, size_t i) {
    for (size_t k = 0; k < p->n; k++) {
        if (p->models[k]->state == M_RETIRED) continue;
        if (i-- == 0) return p->models[k];
    }
    return NULL;
}

bool pool__file_changed(const struct pool_model *m) {
    if (m->backend != POOL_LLAMA) return false;
    struct stat st;
    if (stat(m->path, &st) != 0) return false; /* gone: keep serving what is loaded */
    return st.st_dev != m->file_dev || st.st_ino != m->file_ino || st.st_size != m->file_size ||
           st.st_mtim.tv_sec != m->file_mtime.tv_sec || st.st_mtim.tv_nsec != m->file_mtime.tv_nsec;
}

void pool__note_file(struct pool_model *m) {
    struct stat st;
    if (stat(m->path, &st) != 0) return;
    m->file_dev = st.st_dev;
    m->file_ino = st.st_ino;
    m->file_size = st.st_size;
    m->file_mtime = st.st_mtim;
}

/* ------------------------------------------------------------- scans */

struct pool__scan_ctx {
    struct pool *p;
    const char *source;
};

/* One model a store scan found: registered unless its id is known. */
static void pool__found(void *ctx, const char *id, const char *path) {
    struct pool__scan_ctx *sc = ctx;
    if (strlen(id) >= CONFIG_ID_MAX || pool__find(sc->p, id)) return;
    struct config_model cm;
    config_model_init(&cm);
    snprintf(cm.id, sizeof cm.id, "%s", id);
    cm.path = (char *)path;
    struct config_model resolved;
    config_model_resolve(sc->p->cfg, &cm, &resolved);
    if (pool__add(sc->p, &resolved, path, true)) log_info("%s: registered %s (%s)", sc->source, id, path);
}

/* Register what models_dir, Ollama's store and the Hugging Face cache hold
 * (store.h), at most once per POOL_SCAN_INTERVAL_MS. Caller holds mu. */
void pool__scan(struct pool *p) {
    const struct config *c = p->cfg;
    if (!c->models_dir && !c->ollama_models && !c->hf_cache) return;
    int64_t now = time_now_ms();
    if (p->last_scan_ms && now - p->last_scan_ms < POOL_SCAN_INTERVAL_MS) return;
    bool first = p->last_scan_ms == 0;
    p->last_scan_ms = now;
    struct {
        const char *dir, *source;
        void (*scan)(const char *, store_found_fn, void *);
    } stores[] = {{c->models_dir, "models_dir", store_scan_dir},
                  {c->ollama_models, "ollama_models", store_scan_ollama},
                  {c->hf_cache, "hf_cache", store_scan_hf}};
    for (size_t i = 0; i < sizeof stores / sizeof stores[0]; i++) {
        if (!stores[i].dir) continue;
        char *dir = store_expand_home(stores[i].dir);
        if (!dir) continue;
        struct stat st;
        if (first && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)))
            log_warn("%s %s: %s", stores[i].source, dir, errno ? strerror(errno) : "not a directory");
        struct pool__scan_ctx sc = {p, stores[i].source};
        stores[i].scan(dir, pool__found, &sc);
        free(dir);
    }
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
