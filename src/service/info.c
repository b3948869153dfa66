/* info.c - the answers that never queue behind inference: health,
 * capacity, metrics, models and the admin API, for every transport. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/admin.h"
#include "api/openai.h"
#include "capacity/capacity.h"
#include "service/internal.h"
#include "util/buf.h"
#include "pool/gguf_meta.h"
#include "pool/pool.h"
#include "util/log.h"
#include "util/time.h"

/* Largest /metrics text. */
#define SVC_METRICS_MAX (4u << 20)

/* ------------------------------------------------------------ simple GETs */

static void svc__health(struct service *s, struct svc_result *res) {
    json_t *models = json_array();
    size_t n = pool_count(s->pool);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        struct pool_model_info mi;
        if (pool_info(s->pool, i, &mi) != 0) continue;
        if (mi.status == POOL_FAILED) failed++;
        json_t *m = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i}", "id", mi.id, "status",
                              pool_status_name(mi.status), "slots_busy", mi.stats.slots_busy, "slots_total",
                              mi.stats.slots_total, "queued", mi.stats.queued, "in_flight", mi.in_flight);
        if (m) json_object_set_new(m, "backend", json_string(mi.backend));
        if (m && mi.error[0]) json_object_set_new(m, "error", json_string(mi.error));
        if (m && mi.mem_estimated) json_object_set_new(m, "memory_estimated", json_integer((json_int_t)mi.mem_estimated));
        if (m && mi.mem_measured) json_object_set_new(m, "memory_measured", json_integer((json_int_t)mi.mem_measured));
        if (m) json_array_append_new(models, m);
    }
    struct pool_stats ps;
    pool_stats(s->pool, &ps);
    json_t *pool = json_pack("{s:I, s:I, s:i, s:i, s:I, s:I, s:I}", "memory_budget", (json_int_t)ps.budget,
                             "memory_used", (json_int_t)ps.used, "max_models", ps.max_models, "loaded", ps.loaded,
                             "loads", (json_int_t)ps.loads, "evictions", (json_int_t)ps.evictions,
                             "load_failures", (json_int_t)ps.load_failures);
    /* a draining server answers 503, so a balancer stops sending it work */
    bool draining = atomic_load(&s->draining);
    const char *status = draining ? "shutting_down" : failed ? "degraded" : "ok";
    json_t *root = json_pack("{s:s, s:o, s:o*}", "status", status, "models", models, "pool", pool);
    if (root && s->gate) {
        struct capacity_snapshot cs;
        capacity_snapshot(s->gate, &cs);
        json_object_set_new(root, "capacity", json_pack("{s:i, s:i, s:i}", "host", cs.host, "effective", cs.effective,
                                                        "in_use", cs.in_use));
    }
    if (root && s->http_stats) {
        struct svc_http_stats hs;
        memset(&hs, 0, sizeof hs);
        s->http_stats(s->http_stats_ctx, &hs);
        json_object_set_new(root, "http", json_pack("{s:i, s:i, s:I}", "connections", hs.connections,
                                                    "max_connections", hs.max_connections, "request_memory",
                                                    (json_int_t)hs.request_memory));
    }
    svc__result_obj(res, draining ? 503 : 200, root);
}

static void svc__models(struct service *s, const char *one, struct svc_result *res) {
    size_t n = pool_count(s->pool);
    struct pool_model_info *mi = calloc(n ? n : 1, sizeof *mi);
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    const char **st = calloc(n ? n : 1, sizeof *st);
    int64_t *created = calloc(n ? n : 1, sizeof *created);
    size_t k = 0;
    if (!mi || !ids || !st || !created) goto done;
    for (size_t i = 0; i < n; i++) {
        if (pool_info(s->pool, i, &mi[k]) != 0) continue;
        if (one && strcmp(one, mi[k].id) != 0) continue;
        ids[k] = mi[k].id;
        st[k] = pool_status_name(mi[k].status);
        created[k] = mi[k].created;
        k++;
    }
done:
    if (one && k == 0) {
        struct corral_err err;
        corral_err_set(&err, CORRAL_MODEL_NOT_FOUND, "model", "the model '%.200s' does not exist", one);
        svc_result_fail(res, &err);
    } else if (one) {
        /* a single model object: the first entry of the list form */
        char *list = api_models_json(ids, created, st, k);
        json_t *root = list ? json_loads(list, 0, NULL) : NULL;
        free(list);
        json_t *m = root ? json_array_get(json_object_get(root, "data"), 0) : NULL;
        if (m && mi[0].status == POOL_LOADING) /* corral's: how far its load is (corral run shows it) */
            json_object_set_new(m, "load_progress", json_real(mi[0].load_progress));
        struct gguf_meta gm;
        char why[256];
        if (m && strcmp(mi[0].backend, "llama") == 0 && gguf_meta_read(mi[0].path, &gm, why, sizeof why) == 0) {
            /* corral's: what the file's header says, read without loading it */
            json_t *meta = gguf_meta_json(&gm);
            uint64_t est = mi[0].mem_estimated;
            if (meta && (est || pool_estimate(s->pool, mi[0].id, &est) == 0))
                json_object_set_new(meta, "memory_estimate", json_integer((json_int_t)est));
            json_object_set_new(m, "meta", meta);
        }
        char *out = m ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(root);
        svc__result_json(res, 200, out);
    } else {
        svc__result_json(res, 200, api_models_json(ids, created, st, k));
    }
    free(mi);
    free(ids);
    free(st);
    free(created);
}

/* ------------------------------------------------------------ admin */

/* Take the numbers /capacity, /metrics and /admin/pool show. Free with
 * svc__view_free. */
struct svc__view {
    struct admin_view v;
    struct capacity_snapshot cap;
    struct pool_stats pool;
    struct pool_model_info *models;
    struct svc_http_stats http;
    int64_t requests[SVC_N_TRANSPORTS];
};

static void svc__view_take(struct service *s, struct svc__view *hv) {
    memset(hv, 0, sizeof *hv);
    if (s->gate) capacity_snapshot(s->gate, &hv->cap);
    pool_stats(s->pool, &hv->pool);
    hv->pool.rss = pool_rss();
    size_t n = pool_count(s->pool);
    hv->models = calloc(n ? n : 1, sizeof *hv->models);
    size_t k = 0;
    for (size_t i = 0; i < n && hv->models; i++)
        if (pool_info(s->pool, i, &hv->models[k]) == 0) k++;
    hv->v.cap = s->gate ? &hv->cap : NULL;
    hv->v.pool = &hv->pool;
    hv->v.models = hv->models;
    hv->v.n_models = hv->models ? k : 0;
    hv->v.queue_timeout_ms = s->queue_timeout_ms;
    for (size_t i = 0; i < SVC_N_TRANSPORTS; i++) hv->requests[i] = atomic_load(&s->requests[i]);
    hv->v.transports = svc__transport_names;
    hv->v.requests = hv->requests;
    hv->v.n_transports = SVC_N_TRANSPORTS;
    hv->v.has_rpc = true;
    hv->v.rpc_sessions = atomic_load(&s->sessions);
    if (s->http_stats) {
        s->http_stats(s->http_stats_ctx, &hv->http);
        hv->v.codes = hv->http.codes;
        hv->v.counts = hv->http.counts;
        hv->v.n_codes = hv->http.n_codes;
        hv->v.has_http = true;
        hv->v.connections = hv->http.connections;
        hv->v.max_connections = hv->http.max_connections;
        hv->v.connection_timeouts = hv->http.connection_timeouts;
        hv->v.request_memory = hv->http.request_memory;
    }
}

static void svc__view_free(struct svc__view *hv) { free(hv->models); }

static void svc__capacity(struct service *s, struct svc_result *res) {
    struct svc__view hv;
    svc__view_take(s, &hv);
    json_t *root = admin_capacity_json(&hv.v);
    svc__view_free(&hv);
    svc__result_obj(res, 200, root);
}

static void svc__metrics(struct service *s, struct svc_result *res) {
    struct svc__view hv;
    svc__view_take(s, &hv);
    struct buf b;
    buf_init(&b, SVC_METRICS_MAX);
    int rc = admin_metrics_text(&hv.v, &b);
    svc__view_free(&hv);
    size_t len = 0;
    char *text = rc == 0 ? buf_steal(&b, &len) : NULL;
    buf_free(&b);
    if (!text) {
        struct corral_err err;
        corral_err_set(&err, CORRAL_NOMEM, NULL, "out of memory");
        svc_result_fail(res, &err);
        return;
    }
    res->status = 200;
    res->text = text;
    res->text_len = len;
}

json_t *svc__model_json(const struct pool_model_info *mi) {
    json_t *m = json_pack("{s:s, s:s, s:s, s:I, s:I, s:i, s:i, s:i, s:i, s:I, s:I, s:f}", "id", mi->id, "path",
                          mi->path, "status", pool_status_name(mi->status), "memory_estimated",
                          (json_int_t)mi->mem_estimated, "memory_measured", (json_int_t)mi->mem_measured,
                          "in_flight", mi->in_flight, "queued", mi->stats.queued, "slots_busy", mi->stats.slots_busy,
                          "slots_total", mi->stats.slots_total, "keep_alive",
                          (json_int_t)(mi->keep_alive_ms < 0 ? -1 : mi->keep_alive_ms / 1000), "load_ms",
                          (json_int_t)mi->load_ms, "load_progress", (double)mi->load_progress);
    if (!m) return NULL;
    json_object_set_new(m, "backend", json_string(mi->backend));
    if (mi->stats.pid > 0) {
        json_object_set_new(m, "pid", json_integer(mi->stats.pid));
        json_object_set_new(m, "port", json_integer(mi->stats.port));
    }
    if (mi->stats.log_path[0]) json_object_set_new(m, "log", json_string(mi->stats.log_path));
    if (mi->stats.n_replicas > 0) {
        json_t *ups = json_array();
        for (int i = 0; i < mi->stats.n_replicas && ups; i++) {
            const struct engine_replica *r = &mi->stats.replicas[i];
            json_array_append_new(ups, json_pack("{s:s, s:b, s:i, s:I, s:I}", "url", r->url, "healthy", r->healthy,
                                                 "outstanding", r->outstanding, "requests", (json_int_t)r->requests,
                                                 "failures", (json_int_t)r->failures));
        }
        json_object_set_new(m, "upstreams", ups);
    }
    if (mi->error[0]) json_object_set_new(m, "error", json_string(mi->error));
    if (mi->last_used_ms > 0)
        json_object_set_new(m, "last_used",
                            json_integer((json_int_t)(time_wall_s() - (time_now_ms() - mi->last_used_ms) / 1000)));
    else
        json_object_set_new(m, "last_used", json_null());
    return m;
}

static json_t *svc__models_array(struct service *s) {
    json_t *arr = json_array();
    size_t n = pool_count(s->pool);
    for (size_t i = 0; i < n && arr; i++) {
        struct pool_model_info mi;
        if (pool_info(s->pool, i, &mi) != 0) continue;
        json_t *m = svc__model_json(&mi);
        if (m) json_array_append_new(arr, m);
    }
    return arr;
}

/* Parse {"model": "...", ...} from an admin POST body. */
static json_t *svc__admin_body(const char *body, size_t len, const char **model, struct corral_err *err) {
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", body ? len : 0, 0, &jerr);
    if (!root) {
        corral_err_set(err, CORRAL_INVALID_JSON, NULL, "invalid JSON at line %d, column %d: %s", jerr.line,
                       jerr.column, jerr.text);
        return NULL;
    }
    json_t *m = json_object_get(root, "model");
    if (!json_is_string(m)) m = json_object_get(root, "id");
    if (!json_is_string(m) || !json_string_value(m)[0]) {
        corral_err_set(err, CORRAL_INVALID_REQUEST, "model", "missing required field 'model' (a string)");
        json_decref(root);
        return NULL;
    }
    *model = json_string_value(m);
    return root;
}

static void svc__admin(struct service *s, enum svc_method_id id, const char *body, size_t len,
                       struct svc_result *res) {
    struct corral_err err;
    corral_err_clear(&err);
    if (id == SVC_ADMIN_MODELS) {
        svc__result_obj(res, 200, json_pack("{s:s, s:o}", "object", "list", "data", svc__models_array(s)));
        return;
    }
    if (id == SVC_ADMIN_POOL) {
        struct svc__view hv;
        svc__view_take(s, &hv);
        const struct pool_stats *ps = &hv.pool;
        json_t *root = json_pack("{s:I, s:I, s:i, s:i, s:I, s:I, s:I, s:i, s:I, s:o, s:o*}", "memory_budget",
                                 (json_int_t)ps->budget, "memory_used", (json_int_t)ps->used, "max_models",
                                 ps->max_models, "loaded", ps->loaded, "loads", (json_int_t)ps->loads, "evictions",
                                 (json_int_t)ps->evictions, "load_failures", (json_int_t)ps->load_failures,
                                 "waiting_for_load", ps->waiting_for_load, "resident_memory", (json_int_t)ps->rss,
                                 "models", svc__models_array(s), "capacity", admin_capacity_json(&hv.v));
        svc__view_free(&hv);
        svc__result_obj(res, 200, root);
        return;
    }
    const char *model = NULL;
    json_t *root = svc__admin_body(body, len, &model, &err);
    if (!root) {
        svc_result_fail(res, &err);
        return;
    }
    if (id == SVC_ADMIN_LOAD) {
        enum pool_model_status st;
        if (pool_load(s->pool, model, &st, &err) != CORRAL_OK)
            svc_result_fail(res, &err);
        else
            svc__result_obj(res, st == POOL_LOADED ? 200 : 202,
                            json_pack("{s:s, s:s}", "id", model, "status", pool_status_name(st)));
    } else if (id == SVC_ADMIN_UNLOAD) {
        bool done = false;
        json_t *f = json_object_get(root, "force");
        if (f && !json_is_boolean(f)) {
            corral_err_set(&err, CORRAL_INVALID_REQUEST, "force", "'force' must be a boolean");
            svc_result_fail(res, &err);
        } else if (pool_unload(s->pool, model, json_is_true(f), &done, &err) != CORRAL_OK) {
            svc_result_fail(res, &err);
        } else {
            svc__result_obj(res, done ? 200 : 202,
                            json_pack("{s:s, s:s}", "id", model, "status", done ? "unloaded" : "unloading"));
        }
    } else {
        json_t *path = json_object_get(root, "path");
        if (!json_is_string(path)) {
            corral_err_set(&err, CORRAL_INVALID_REQUEST, "path", "missing required field 'path' (a string)");
            svc_result_fail(res, &err);
        } else if (pool_register(s->pool, model, json_string_value(path), &err) != CORRAL_OK) {
            svc_result_fail(res, &err);
        } else {
            svc__result_obj(res, 201, json_pack("{s:s, s:s}", "id", model, "status", "unloaded"));
        }
    }
    json_decref(root);
}

/* ------------------------------------------------------------ dispatch */

void svc_simple(struct service *s, const struct svc_method *m, const char *id, const char *body, size_t len,
                struct svc_result *res) {
    memset(res, 0, sizeof *res);
    corral_err_clear(&res->err);
    switch (m->id) {
    case SVC_HEALTH: svc__health(s, res); return;
    case SVC_CAPACITY: svc__capacity(s, res); return;
    case SVC_METRICS: svc__metrics(s, res); return;
    case SVC_MODELS: svc__models(s, NULL, res); return;
    case SVC_MODEL: svc__models(s, id ? id : "", res); return;
    case SVC_STATUS: svc__status(s, res); return;
    case SVC_ADMIN_MODELS:
    case SVC_ADMIN_POOL:
    case SVC_ADMIN_LOAD:
    case SVC_ADMIN_UNLOAD:
    case SVC_ADMIN_REGISTER: svc__admin(s, m->id, body, len, res); return;
    case SVC_CHAT:
    case SVC_COMPLETIONS:
    case SVC_EMBEDDINGS:
    case SVC_N_METHODS: break;
    }
    struct corral_err err;
    corral_err_set(&err, CORRAL_INTERNAL, NULL, "'%s' is not answered this way", m->name);
    svc_result_fail(res, &err);
}
