/* info.c - the answers that never queue behind inference: /health,
 * /capacity, /metrics, /v1/models and the admin API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/admin.h"
#include "capacity/capacity.h"
#include "http/internal.h"
#include "pool/pool.h"
#include "util/log.h"
#include "util/time.h"

/* Largest /metrics text. */
#define HTTP_METRICS_MAX (4u << 20)

/* ------------------------------------------------------------ simple GETs */

enum MHD_Result http__health(struct http_server *s, const struct http_out *o) {
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
    if (root && s->conns)
        json_object_set_new(root, "http", json_pack("{s:i, s:i, s:I}", "connections", conns_count(s->conns),
                                                    "max_connections", s->max_connections, "request_memory",
                                                    (json_int_t)conns_mem_used(s->conns)));
    return http__reply_obj(o, draining ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK, root);
}

enum MHD_Result http__models(struct http_server *s, const struct http_out *o, const char *one) {
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
done:;
    enum MHD_Result ret;
    if (one && k == 0) {
        ret = http__fail(o, CORRAL_MODEL_NOT_FOUND, "model", NULL, NULL, "the model '%.200s' does not exist", one);
    } else if (one) {
        /* a single model object: the first entry of the list form */
        char *list = api_models_json(ids, created, st, k);
        json_t *root = list ? json_loads(list, 0, NULL) : NULL;
        free(list);
        json_t *m = root ? json_array_get(json_object_get(root, "data"), 0) : NULL;
        char *out = m ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(root);
        ret = http__reply_json(o, MHD_HTTP_OK, out);
    } else {
        ret = http__reply_json(o, MHD_HTTP_OK, api_models_json(ids, created, st, k));
    }
    free(mi);
    free(ids);
    free(st);
    free(created);
    return ret;
}

/* ------------------------------------------------------------ admin */

/* Take the numbers /capacity, /metrics and /admin/pool show. Free with
 * http__view_free. */
struct http__view {
    struct admin_view v;
    struct capacity_snapshot cap;
    struct pool_stats pool;
    struct pool_model_info *models;
    int64_t counts[32]; /* http__n_codes */
};

static void http__view_take(struct http_server *s, struct http__view *hv) {
    memset(hv, 0, sizeof *hv);
    if (s->gate) capacity_snapshot(s->gate, &hv->cap);
    pool_stats(s->pool, &hv->pool);
    hv->pool.rss = pool_rss();
    size_t n = pool_count(s->pool);
    hv->models = calloc(n ? n : 1, sizeof *hv->models);
    size_t k = 0;
    for (size_t i = 0; i < n && hv->models; i++)
        if (pool_info(s->pool, i, &hv->models[k]) == 0) k++;
    http__code_counts(hv->counts);
    hv->v.cap = s->gate ? &hv->cap : NULL;
    hv->v.pool = &hv->pool;
    hv->v.models = hv->models;
    hv->v.n_models = hv->models ? k : 0;
    hv->v.queue_timeout_ms = s->queue_timeout_ms;
    hv->v.codes = http__codes;
    hv->v.counts = hv->counts;
    hv->v.n_codes = http__n_codes - 1; /* "other" is not a code */
    if (s->conns) {
        hv->v.has_http = true;
        hv->v.connections = conns_count(s->conns);
        hv->v.max_connections = s->max_connections;
        hv->v.connection_timeouts = conns_timeouts(s->conns);
        hv->v.request_memory = conns_mem_used(s->conns);
    }
}

static void http__view_free(struct http__view *hv) { free(hv->models); }

enum MHD_Result http__capacity(struct http_server *s, const struct http_out *o) {
    struct http__view hv;
    http__view_take(s, &hv);
    json_t *root = admin_capacity_json(&hv.v);
    http__view_free(&hv);
    char *out = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return http__reply_json(o, MHD_HTTP_OK, out);
}

enum MHD_Result http__metrics(struct http_server *s, const struct http_out *o) {
    struct http__view hv;
    http__view_take(s, &hv);
    struct buf b;
    buf_init(&b, HTTP_METRICS_MAX);
    int rc = admin_metrics_text(&hv.v, &b);
    http__view_free(&hv);
    size_t len = 0;
    char *text = rc == 0 ? buf_steal(&b, &len) : NULL;
    buf_free(&b);
    if (!text) return http__reply_json(o, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    return http__reply_owned(o, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static json_t *http__model_json(const struct pool_model_info *mi) {
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

static json_t *http__models_array(struct http_server *s) {
    json_t *arr = json_array();
    size_t n = pool_count(s->pool);
    for (size_t i = 0; i < n && arr; i++) {
        struct pool_model_info mi;
        if (pool_info(s->pool, i, &mi) != 0) continue;
        json_t *m = http__model_json(&mi);
        if (m) json_array_append_new(arr, m);
    }
    return arr;
}

/* Parse {"model": "...", ...} from an admin POST body. */
static json_t *http__admin_body(struct conn *k, const char **model, struct corral_err *err) {
    json_error_t jerr;
    json_t *root = json_loadb(k->body.data ? k->body.data : "", k->body.len, 0, &jerr);
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

enum MHD_Result http__admin(struct http_server *s, struct conn *k) {
    const struct http_out *o = &k->out;
    struct corral_err err;
    corral_err_clear(&err);
    if (k->route->id == R_ADMIN_MODELS)
        return http__reply_obj(o, MHD_HTTP_OK, json_pack("{s:s, s:o}", "object", "list", "data", http__models_array(s)));
    if (k->route->id == R_ADMIN_POOL) {
        struct http__view hv;
        http__view_take(s, &hv);
        const struct pool_stats *ps = &hv.pool;
        json_t *root = json_pack("{s:I, s:I, s:i, s:i, s:I, s:I, s:I, s:i, s:I, s:o, s:o*}", "memory_budget",
                                 (json_int_t)ps->budget, "memory_used", (json_int_t)ps->used, "max_models",
                                 ps->max_models, "loaded", ps->loaded, "loads", (json_int_t)ps->loads, "evictions",
                                 (json_int_t)ps->evictions, "load_failures", (json_int_t)ps->load_failures,
                                 "waiting_for_load", ps->waiting_for_load, "resident_memory", (json_int_t)ps->rss,
                                 "models", http__models_array(s), "capacity", admin_capacity_json(&hv.v));
        http__view_free(&hv);
        return http__reply_obj(o, MHD_HTTP_OK, root);
    }
    const char *model = NULL;
    json_t *body = http__admin_body(k, &model, &err);
    if (!body) return http__reply_error(o, &err, NULL);
    enum MHD_Result ret;
    if (k->route->id == R_ADMIN_LOAD) {
        enum pool_model_status st;
        if (pool_load(s->pool, model, &st, &err) != CORRAL_OK)
            ret = http__reply_error(o, &err, NULL);
        else
            ret = http__reply_obj(o, st == POOL_LOADED ? MHD_HTTP_OK : MHD_HTTP_ACCEPTED,
                                  json_pack("{s:s, s:s}", "id", model, "status", pool_status_name(st)));
    } else if (k->route->id == R_ADMIN_UNLOAD) {
        bool done = false;
        json_t *f = json_object_get(body, "force");
        if (f && !json_is_boolean(f)) {
            corral_err_set(&err, CORRAL_INVALID_REQUEST, "force", "'force' must be a boolean");
            ret = http__reply_error(o, &err, NULL);
        } else if (pool_unload(s->pool, model, json_is_true(f), &done, &err) != CORRAL_OK) {
            ret = http__reply_error(o, &err, NULL);
        } else {
            ret = http__reply_obj(o, done ? MHD_HTTP_OK : MHD_HTTP_ACCEPTED,
                                  json_pack("{s:s, s:s}", "id", model, "status", done ? "unloaded" : "unloading"));
        }
    } else {
        json_t *path = json_object_get(body, "path");
        if (!json_is_string(path)) {
            corral_err_set(&err, CORRAL_INVALID_REQUEST, "path", "missing required field 'path' (a string)");
            ret = http__reply_error(o, &err, NULL);
        } else if (pool_register(s->pool, model, json_string_value(path), &err) != CORRAL_OK) {
            ret = http__reply_error(o, &err, NULL);
        } else {
            ret = http__reply_obj(o, MHD_HTTP_CREATED, json_pack("{s:s, s:s}", "id", model, "status", "unloaded"));
        }
    }
    json_decref(body);
    return ret;
}
