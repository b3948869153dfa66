/* server.c - the HTTP transport on libmicrohttpd.
 *
 * DESIGN
 * libmicrohttpd runs its own epoll threads. The access handler is called
 * once when headers arrive (route, auth and Content-Length are checked
 * then, so a refused request costs no body), once per body chunk (buffered
 * up to body_limit) and once at the end, when the request is dispatched.
 *
 * Inference never blocks an event thread. A non-streaming request parks its
 * engine_req "until done" and suspends the connection; the engine's finish
 * resumes it and the handler runs again to send the whole response. A
 * streaming request gets a chunked response at once whose content reader
 * turns the engine's text into SSE chunks and, when no text is pending,
 * suspends the connection inside the reader (libmicrohttpd's documented way
 * to say "no data yet"); each push from the engine resumes it. Parking and
 * waking happen under the request's lock, so no wake-up is lost.
 *
 * A suspended connection is never looked at by the library, so the engine
 * polls the client socket itself (engine_req_set_fd) and cancels requests
 * whose client hung up; the completion callback cancels too, and drops the
 * transport's reference and the model pin.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include "api/admin.h"
#include "api/openai.h"
#include "capacity/capacity.h"
#include "engine/engine.h"
#include "http/sse.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/time.h"

/* Bytes of engine text turned into one SSE chunk at most. */
#define HTTP_TAKE_MAX 16384
/* Bytes of an over-limit body read and dropped before the connection is closed. */
#define HTTP_DISCARD_MAX (64u << 20)
/* Output an engine may hold for one request before the client is "too slow". */
#define HTTP_OUT_CAP (4u << 20)
/* Longest X-Corral-Max-Wait accepted, ms. */
#define HTTP_MAX_WAIT_MS 3600000LL
/* Largest /metrics text. */
#define HTTP_METRICS_MAX (4u << 20)

/* Responses sent, by status code, for /metrics (process-wide, like the log
 * level: one server runs per process). The last entry counts other codes. */
static const int http__codes[] = {200, 201, 202, 204, 400, 401, 403, 404, 405, 413, 500, 502, 503, 504, 0};
#define HTTP_N_CODES (sizeof http__codes / sizeof http__codes[0])
static _Atomic int64_t http__code_counts[HTTP_N_CODES];

static void http__count(unsigned status) {
    size_t i = 0;
    while (i + 1 < HTTP_N_CODES && (unsigned)http__codes[i] != status) i++;
    atomic_fetch_add(&http__code_counts[i], 1);
}

/* MHD_queue_response, counted. */
static enum MHD_Result http__queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r) {
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    if (ret == MHD_YES) http__count(status);
    return ret;
}

struct http_server {
    struct MHD_Daemon *d;
    struct pool *pool;
    struct capacity *gate;
    int64_t queue_timeout_ms;
    char *api_key;
    char *admin_api_key;
    size_t body_limit;
    int port;
};

enum route_id {
    R_NONE = 0,
    R_HEALTH,
    R_MODELS,
    R_MODEL, /* /v1/models/{id} */
    R_CHAT,
    R_COMPLETIONS,
    R_EMBEDDINGS,
    R_ADMIN_MODELS,
    R_ADMIN_POOL,
    R_ADMIN_LOAD,
    R_ADMIN_UNLOAD,
    R_ADMIN_REGISTER,
    R_CAPACITY,
    R_METRICS,
};

struct route {
    const char *path;
    enum route_id id;
    const char *method; /* the one method it answers */
    bool auth;          /* needs the API key when one is set */
    bool admin;         /* needs the admin key, or a loopback client when none is set */
};

static const struct route http__routes[] = {
    {"/health", R_HEALTH, "GET", false, false},
    {"/v1/health", R_HEALTH, "GET", false, false},
    {"/capacity", R_CAPACITY, "GET", true, false},
    {"/metrics", R_METRICS, "GET", true, false},
    {"/v1/models", R_MODELS, "GET", true, false},
    {"/models", R_MODELS, "GET", true, false},
    {"/v1/chat/completions", R_CHAT, "POST", true, false},
    {"/chat/completions", R_CHAT, "POST", true, false},
    {"/v1/completions", R_COMPLETIONS, "POST", true, false},
    {"/completions", R_COMPLETIONS, "POST", true, false},
    {"/v1/embeddings", R_EMBEDDINGS, "POST", true, false},
    {"/embeddings", R_EMBEDDINGS, "POST", true, false},
    {"/admin/models", R_ADMIN_MODELS, "GET", false, true},
    {"/admin/pool", R_ADMIN_POOL, "GET", false, true},
    {"/admin/models/load", R_ADMIN_LOAD, "POST", false, true},
    {"/admin/models/unload", R_ADMIN_UNLOAD, "POST", false, true},
    {"/admin/models/register", R_ADMIN_REGISTER, "POST", false, true},
};

static const struct route http__route_model = {"/v1/models/", R_MODEL, "GET", true, false};

/* Per-request state, from the first call of the handler to completion. */
struct conn {
    struct http_server *srv;
    struct MHD_Connection *mhd;
    const struct route *route;
    struct buf body;
    size_t body_seen;
    bool too_large;
    bool dispatched;

    struct pool_model *pinned;
    struct engine_req *req;
    enum api_kind kind;
    bool stream;
    bool stream_started; /* the 200 and the event stream are queued */
    bool include_usage;
    char id[48];
    int64_t created;
    char *model;

    /* streaming */
    struct buf sse;
    size_t sse_off;
    bool sent_role;
    bool sent_end;
    char *take;
};

/* ------------------------------------------------------------ responses */

static void http__common_headers(struct MHD_Response *r, const char *ctype) {
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
}

/* Queue a response of len bytes of data (malloc'd; taken over). */
static enum MHD_Result http__reply_owned(struct MHD_Connection *c, unsigned status, const char *ctype, char *data,
                                         size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    http__common_headers(r, ctype);
    enum MHD_Result ret = http__queue(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Queue a JSON response; takes ownership of json (malloc'd). */
static enum MHD_Result http__reply_json(struct MHD_Connection *c, unsigned status, char *json) {
    if (!json) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        struct MHD_Response *r = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        http__common_headers(r, "application/json");
        enum MHD_Result ret = http__queue(c, MHD_HTTP_INTERNAL_SERVER_ERROR, r);
        MHD_destroy_response(r);
        return ret;
    }
    return http__reply_owned(c, status, "application/json", json, strlen(json));
}

static enum MHD_Result http__reply_error(struct MHD_Connection *c, const struct corral_err *err,
                                         const char *allow) {
    char *json = api_error_json(err);
    int status = corral_status_http(err->status);
    if (status == 499) status = 500;
    if (!json) return http__reply_json(c, (unsigned)status, NULL);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(json);
        return MHD_NO;
    }
    http__common_headers(r, "application/json");
    if (status == 503) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ret = http__queue(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result http__fail(struct MHD_Connection *c, enum corral_status st, const char *param,
                                  const char *allow, const char *fmt, const char *arg) {
    struct corral_err err;
    corral_err_clear(&err);
    corral_err_set(&err, st, param, fmt, arg);
    return http__reply_error(c, &err, allow);
}

/* ------------------------------------------------------------ auth, routes */

static bool http__consttime_eq(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++) diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0;
}

/* The token of an "Authorization: Bearer <token>" header, or NULL. */
static const char *http__bearer(struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return NULL;
    h += 7;
    while (*h == ' ') h++;
    return h;
}

static bool http__authorized(struct http_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *h = http__bearer(c);
    if (!h) h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    return h && http__consttime_eq(h, s->api_key);
}

static bool http__is_loopback(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return false;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
        return memcmp(in6->sin6_addr.s6_addr, v4mapped, 12) == 0 && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/* Admin access: the admin key when one is set, else loopback clients only.
 * Returns CORRAL_OK or the status to answer with. */
static enum corral_status http__admin_allowed(struct http_server *s, struct MHD_Connection *c) {
    if (s->admin_api_key) {
        const char *h = http__bearer(c);
        if (h && http__consttime_eq(h, s->admin_api_key)) return CORRAL_OK;
        return CORRAL_UNAUTHORIZED;
    }
    return http__is_loopback(c) ? CORRAL_OK : CORRAL_FORBIDDEN;
}

static const struct route *http__find_route(const char *url, bool *path_known) {
    for (size_t i = 0; i < sizeof http__routes / sizeof http__routes[0]; i++) {
        if (strcmp(url, http__routes[i].path) == 0) {
            *path_known = true;
            return &http__routes[i];
        }
    }
    if (strncmp(url, http__route_model.path, strlen(http__route_model.path)) == 0 &&
        url[strlen(http__route_model.path)] != '\0') {
        *path_known = true;
        return &http__route_model;
    }
    *path_known = false;
    return NULL;
}

/* ------------------------------------------------------------ simple GETs */

static enum MHD_Result http__health(struct http_server *s, struct MHD_Connection *c) {
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
    json_t *root = json_pack("{s:s, s:o, s:o*}", "status", failed ? "degraded" : "ok", "models", models, "pool", pool);
    if (root && s->gate) {
        struct capacity_snapshot cs;
        capacity_snapshot(s->gate, &cs);
        json_object_set_new(root, "capacity", json_pack("{s:i, s:i, s:i}", "host", cs.host, "effective", cs.effective,
                                                        "in_use", cs.in_use));
    }
    char *out = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return http__reply_json(c, MHD_HTTP_OK, out);
}

static enum MHD_Result http__models(struct http_server *s, struct MHD_Connection *c, const char *one) {
    size_t n = pool_count(s->pool);
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    const char **st = calloc(n ? n : 1, sizeof *st);
    int64_t *created = calloc(n ? n : 1, sizeof *created);
    size_t k = 0;
    if (!ids || !st || !created) goto done;
    for (size_t i = 0; i < n; i++) {
        struct pool_model_info mi;
        if (pool_info(s->pool, i, &mi) != 0) continue;
        if (one && strcmp(one, mi.id) != 0) continue;
        ids[k] = mi.id;
        st[k] = pool_status_name(mi.status);
        created[k] = mi.created;
        k++;
    }
done:;
    enum MHD_Result ret;
    if (one && k == 0) {
        ret = http__fail(c, CORRAL_MODEL_NOT_FOUND, "model", NULL, "the model '%.200s' does not exist", one);
    } else if (one) {
        /* a single model object: the first entry of the list form */
        char *list = api_models_json(ids, created, st, k);
        json_t *root = list ? json_loads(list, 0, NULL) : NULL;
        free(list);
        json_t *m = root ? json_array_get(json_object_get(root, "data"), 0) : NULL;
        char *out = m ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(root);
        ret = http__reply_json(c, MHD_HTTP_OK, out);
    } else {
        ret = http__reply_json(c, MHD_HTTP_OK, api_models_json(ids, created, st, k));
    }
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
    int64_t counts[HTTP_N_CODES];
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
    for (size_t i = 0; i < HTTP_N_CODES; i++) hv->counts[i] = atomic_load(&http__code_counts[i]);
    hv->v.cap = s->gate ? &hv->cap : NULL;
    hv->v.pool = &hv->pool;
    hv->v.models = hv->models;
    hv->v.n_models = hv->models ? k : 0;
    hv->v.queue_timeout_ms = s->queue_timeout_ms;
    hv->v.codes = http__codes;
    hv->v.counts = hv->counts;
    hv->v.n_codes = HTTP_N_CODES - 1; /* "other" is not a code */
}

static void http__view_free(struct http__view *hv) { free(hv->models); }

static enum MHD_Result http__capacity(struct http_server *s, struct MHD_Connection *c) {
    struct http__view hv;
    http__view_take(s, &hv);
    json_t *root = admin_capacity_json(&hv.v);
    http__view_free(&hv);
    char *out = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return http__reply_json(c, MHD_HTTP_OK, out);
}

static enum MHD_Result http__metrics(struct http_server *s, struct MHD_Connection *c) {
    struct http__view hv;
    http__view_take(s, &hv);
    struct buf b;
    buf_init(&b, HTTP_METRICS_MAX);
    int rc = admin_metrics_text(&hv.v, &b);
    http__view_free(&hv);
    size_t len = 0;
    char *text = rc == 0 ? buf_steal(&b, &len) : NULL;
    buf_free(&b);
    if (!text) return http__reply_json(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    return http__reply_owned(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
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

static enum MHD_Result http__reply_obj(struct MHD_Connection *c, unsigned status, json_t *root) {
    char *out = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return http__reply_json(c, status, out);
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

static enum MHD_Result http__admin(struct http_server *s, struct conn *k) {
    struct MHD_Connection *c = k->mhd;
    struct corral_err err;
    corral_err_clear(&err);
    if (k->route->id == R_ADMIN_MODELS)
        return http__reply_obj(c, MHD_HTTP_OK, json_pack("{s:s, s:o}", "object", "list", "data", http__models_array(s)));
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
        return http__reply_obj(c, MHD_HTTP_OK, root);
    }
    const char *model = NULL;
    json_t *body = http__admin_body(k, &model, &err);
    if (!body) return http__reply_error(c, &err, NULL);
    enum MHD_Result ret;
    if (k->route->id == R_ADMIN_LOAD) {
        enum pool_model_status st;
        if (pool_load(s->pool, model, &st, &err) != CORRAL_OK)
            ret = http__reply_error(c, &err, NULL);
        else
            ret = http__reply_obj(c, st == POOL_LOADED ? MHD_HTTP_OK : MHD_HTTP_ACCEPTED,
                                  json_pack("{s:s, s:s}", "id", model, "status", pool_status_name(st)));
    } else if (k->route->id == R_ADMIN_UNLOAD) {
        bool done = false;
        json_t *f = json_object_get(body, "force");
        if (f && !json_is_boolean(f)) {
            corral_err_set(&err, CORRAL_INVALID_REQUEST, "force", "'force' must be a boolean");
            ret = http__reply_error(c, &err, NULL);
        } else if (pool_unload(s->pool, model, json_is_true(f), &done, &err) != CORRAL_OK) {
            ret = http__reply_error(c, &err, NULL);
        } else {
            ret = http__reply_obj(c, done ? MHD_HTTP_OK : MHD_HTTP_ACCEPTED,
                                  json_pack("{s:s, s:s}", "id", model, "status", done ? "unloaded" : "unloading"));
        }
    } else {
        json_t *path = json_object_get(body, "path");
        if (!json_is_string(path)) {
            corral_err_set(&err, CORRAL_INVALID_REQUEST, "path", "missing required field 'path' (a string)");
            ret = http__reply_error(c, &err, NULL);
        } else if (pool_register(s->pool, model, json_string_value(path), &err) != CORRAL_OK) {
            ret = http__reply_error(c, &err, NULL);
        } else {
            ret = http__reply_obj(c, MHD_HTTP_CREATED, json_pack("{s:s, s:s}", "id", model, "status", "unloaded"));
        }
    }
    json_decref(body);
    return ret;
}

/* ------------------------------------------------------------ inference */

static void http__resume(void *ctx) { MHD_resume_connection(ctx); }
static void http__suspend(void *ctx) { MHD_suspend_connection(ctx); }

static const char *http__finish_name(enum engine_finish f) {
    return f == ENGINE_FINISH_LENGTH ? "length" : "stop";
}

/* Append the SSE events for text (and, at the end, the final chunks) to
 * conn->sse. Returns -1 if out of memory. */
static int http__stream_events(struct conn *k, const char *text, size_t n, const struct engine_req_view *v) {
    bool chat = k->kind == API_CHAT;
    if (chat && !k->sent_role) {
        char *j = api_chunk_json(k->kind, k->id, k->created, k->model, true, "", 0, NULL, k->include_usage,
                                 NULL, false);
        if (!j || sse_data(&k->sse, j, strlen(j)) != 0) goto oom;
        free(j);
        k->sent_role = true;
    }
    if (n > 0) {
        char *j = api_chunk_json(k->kind, k->id, k->created, k->model, false, text, n, NULL, k->include_usage,
                                 NULL, false);
        if (!j || sse_data(&k->sse, j, strlen(j)) != 0) {
            free(j);
            goto oom;
        }
        free(j);
    }
    if (v && v->state == ENGINE_REQ_DONE && !k->sent_end) {
        if (v->status != CORRAL_OK) {
            struct corral_err err;
            engine_req_error(k->req, &err);
            char *j = api_error_json(&err);
            if (!j || sse_data(&k->sse, j, strlen(j)) != 0) {
                free(j);
                goto oom;
            }
            free(j);
        } else {
            char *j = api_chunk_json(k->kind, k->id, k->created, k->model, false, NULL, 0,
                                     http__finish_name(v->finish), k->include_usage, NULL, false);
            if (!j || sse_data(&k->sse, j, strlen(j)) != 0) {
                free(j);
                goto oom;
            }
            free(j);
            if (k->include_usage) {
                j = api_chunk_json(k->kind, k->id, k->created, k->model, false, NULL, 0, NULL, false, &v->usage,
                                   true);
                if (!j || sse_data(&k->sse, j, strlen(j)) != 0) {
                    free(j);
                    goto oom;
                }
                free(j);
            }
        }
        if (sse_done(&k->sse) != 0) goto oom;
        k->sent_end = true;
    }
    return 0;
oom:
    return -1;
}

static ssize_t http__stream_reader(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    struct conn *k = cls;
    for (;;) {
        if (k->sse_off < k->sse.len) {
            size_t n = k->sse.len - k->sse_off;
            if (n > max) n = max;
            memcpy(out, k->sse.data + k->sse_off, n);
            k->sse_off += n;
            if (k->sse_off == k->sse.len) {
                buf_reset(&k->sse);
                k->sse_off = 0;
            }
            return (ssize_t)n;
        }
        if (k->sent_end) return MHD_CONTENT_READER_END_OF_STREAM;
        struct engine_req_view v;
        size_t n = engine_req_take(k->req, k->take, HTTP_TAKE_MAX, &v);
        if (n > 0 || v.state == ENGINE_REQ_DONE || (k->kind == API_CHAT && !k->sent_role)) {
            /* text taken before DONE was seen belongs before the end events */
            if (v.state == ENGINE_REQ_DONE && engine_req_pending(k->req) > 0) v.state = ENGINE_REQ_RUNNING;
            if (http__stream_events(k, k->take, n, &v) != 0) return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        if (engine_req_park(k->req, ENGINE_PARK_OUTPUT, http__suspend, k->mhd)) return 0;
    }
}

static void http__stream_free(void *cls) { (void)cls; /* the conn is freed on completion */ }

/* Send the whole response of a finished non-streaming request. */
static enum MHD_Result http__reply_done(struct conn *k) {
    struct engine_req_view v;
    engine_req_take(k->req, NULL, 0, &v);
    if (v.status != CORRAL_OK) {
        struct corral_err err;
        engine_req_error(k->req, &err);
        return http__reply_error(k->mhd, &err, NULL);
    }
    if (k->kind == API_EMBEDDING) {
        size_t n = 0, dim = 0;
        const float *const *vecs = engine_req_embeddings(k->req, &n, &dim);
        const struct api_request *in = engine_req_input(k->req);
        return http__reply_json(k->mhd, MHD_HTTP_OK,
                                api_embeddings_json(k->model, vecs, n, dim, in->encoding_base64, v.usage.prompt_tokens));
    }
    size_t len = engine_req_pending(k->req);
    char *text = malloc(len + 1);
    if (!text) return http__reply_json(k->mhd, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    len = engine_req_take(k->req, text, len, NULL);
    char *json = api_completion_json(k->kind, k->id, k->created, k->model, text, len, http__finish_name(v.finish),
                                     &v.usage);
    free(text);
    return http__reply_json(k->mhd, MHD_HTTP_OK, json);
}

/* Answer a stream once its request runs: 200 and the event stream, or, if
 * it failed before it started (queue timeout, failed load, ...), the error
 * with its own HTTP status. */
static enum MHD_Result http__stream_start(struct conn *k) {
    struct engine_req_view v;
    engine_req_take(k->req, NULL, 0, &v);
    if (v.state == ENGINE_REQ_DONE && v.status != CORRAL_OK) {
        struct corral_err err;
        engine_req_error(k->req, &err);
        return http__reply_error(k->mhd, &err, NULL);
    }
    k->stream_started = true;
    k->take = malloc(HTTP_TAKE_MAX);
    buf_init(&k->sse, 0);
    if (!k->take) return http__reply_json(k->mhd, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, http__stream_reader, k,
                                                               http__stream_free);
    if (!r) return MHD_NO;
    http__common_headers(r, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result ret = http__queue(k->mhd, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* The request's queue-wait bound: X-Corral-Max-Wait (ms) or the server's
 * queue_timeout. 0 with *ms set, or -1 for a malformed header. */
static int http__max_wait(struct http_server *s, struct MHD_Connection *c, int64_t *ms) {
    *ms = s->queue_timeout_ms;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Corral-Max-Wait");
    if (!h) return 0;
    while (*h == ' ' || *h == '\t') h++;
    long long v = 0;
    const char *p = h;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > HTTP_MAX_WAIT_MS) return -1;
    }
    while (*p == ' ' || *p == '\t') p++;
    if (*p) return -1;
    *ms = v;
    return 0;
}

static enum MHD_Result http__inference(struct http_server *s, struct conn *k) {
    struct corral_err err;
    corral_err_clear(&err);
    struct api_request in;
    memset(&in, 0, sizeof in);
    int64_t max_wait = -1;
    if (http__max_wait(s, k->mhd, &max_wait) != 0) {
        corral_err_set(&err, CORRAL_INVALID_REQUEST, "X-Corral-Max-Wait",
                       "X-Corral-Max-Wait must be a whole number of milliseconds in 0..%lld", HTTP_MAX_WAIT_MS);
        return http__reply_error(k->mhd, &err, NULL);
    }
    k->kind = k->route->id == R_CHAT ? API_CHAT : k->route->id == R_COMPLETIONS ? API_COMPLETION : API_EMBEDDING;
    if (api_request_parse(k->kind, k->body.data ? k->body.data : "", k->body.len, &in, &err) != CORRAL_OK)
        return http__reply_error(k->mhd, &err, NULL);

    k->model = strdup(in.model);
    k->stream = in.stream && k->kind != API_EMBEDDING;
    k->include_usage = in.include_usage;
    k->created = time_wall_s();
    api_make_id(k->kind == API_CHAT ? "chatcmpl-" : k->kind == API_COMPLETION ? "cmpl-" : "emb-", k->id, sizeof k->id);
    k->req = engine_req_new(&in, HTTP_OUT_CAP);
    if (!k->model || !k->req) {
        api_request_free(&in);
        return http__reply_json(k->mhd, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    }
    size_t body_len = 0;
    char *body = buf_steal(&k->body, &body_len); /* kept for backends that forward it */
    buf_free(&k->body);
    engine_req_set_body(k->req, body, body_len);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(k->mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) engine_req_set_fd(k->req, ci->connect_fd);
    engine_req_set_notify(k->req, http__resume, k->mhd);
    engine_req_set_max_wait(k->req, max_wait);

    /* submits now, or once the model is loaded; the model stays pinned until
     * the request completes */
    if (pool_submit(s->pool, k->model, k->req, &k->pinned, &err) != CORRAL_OK)
        return http__reply_error(k->mhd, &err, NULL);

    /* a whole response waits for the end; a stream waits until it runs
     * (so a request refused while queued still gets its HTTP status) */
    if (engine_req_park(k->req, k->stream ? ENGINE_PARK_START : ENGINE_PARK_DONE, http__suspend, k->mhd))
        return MHD_YES;
    return k->stream ? http__stream_start(k) : http__reply_done(k);
}

/* ------------------------------------------------------------ the handler */

static enum MHD_Result http__handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                     const char *version, const char *upload_data, size_t *upload_data_size,
                                     void **con_cls) {
    (void)version;
    struct http_server *s = cls;
    struct conn *k = *con_cls;

    if (!k) {
        /* headers are in: route, method, auth and declared size first */
        if (strcmp(method, "OPTIONS") == 0) {
            struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
            MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
            MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, X-Api-Key");
            MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
            enum MHD_Result ret = http__queue(c, MHD_HTTP_NO_CONTENT, r);
            MHD_destroy_response(r);
            return ret;
        }
        bool known = false;
        const struct route *rt = http__find_route(url, &known);
        if (!rt)
            return http__fail(c, CORRAL_NOT_FOUND, NULL, NULL, "no such endpoint: %.200s", url);
        bool head_ok = strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0;
        if (strcmp(method, rt->method) != 0 && !head_ok) {
            char msg[128];
            snprintf(msg, sizeof msg, "%s is not allowed here; use %s", method, rt->method);
            return http__fail(c, CORRAL_METHOD_NOT_ALLOWED, NULL, rt->method, "%s", msg);
        }
        if (rt->admin) {
            enum corral_status ast = http__admin_allowed(s, c);
            if (ast == CORRAL_UNAUTHORIZED)
                return http__fail(c, ast, NULL, NULL, "%s", "invalid or missing admin API key");
            if (ast != CORRAL_OK)
                return http__fail(c, ast, NULL, NULL, "%s",
                                  "the admin API answers loopback clients only unless admin_api_key is set");
        }
        if (rt->auth && !http__authorized(s, c))
            return http__fail(c, CORRAL_UNAUTHORIZED, NULL, NULL, "%s",
                              "invalid or missing API key (send 'Authorization: Bearer <key>')");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end = NULL;
            unsigned long long v = strtoull(cl, &end, 10);
            if (end && *end == '\0' && v > s->body_limit) {
                char msg[160];
                snprintf(msg, sizeof msg, "request body of %llu bytes is over the limit of %zu bytes", v,
                         s->body_limit);
                return http__fail(c, CORRAL_TOO_LARGE, NULL, NULL, "%s", msg);
            }
        }
        k = calloc(1, sizeof *k);
        if (!k) return MHD_NO;
        k->srv = s;
        k->mhd = c;
        k->route = rt;
        buf_init(&k->body, s->body_limit);
        *con_cls = k;
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        if (!k->too_large && buf_append(&k->body, upload_data, *upload_data_size) != 0) {
            k->too_large = true;
            buf_free(&k->body);
        }
        k->body_seen += *upload_data_size;
        *upload_data_size = 0;
        /* A body over the limit is read and dropped so the client gets its
         * 413 (the library cannot answer mid-body); one far over it is cut
         * off by closing the connection. */
        if (k->too_large && k->body_seen > HTTP_DISCARD_MAX && k->body_seen > 4 * s->body_limit) return MHD_NO;
        return MHD_YES;
    }

    if (k->dispatched) {
        /* resumed after the engine finished a non-streaming request */
        if (k->req && !k->stream) return http__reply_done(k);
        if (k->req && !k->stream_started) return http__stream_start(k);
        return MHD_YES;
    }
    k->dispatched = true;
    if (k->too_large) {
        char msg[160];
        snprintf(msg, sizeof msg, "request body is over the limit of %zu bytes", s->body_limit);
        return http__fail(c, CORRAL_TOO_LARGE, NULL, NULL, "%s", msg);
    }
    switch (k->route->id) {
    case R_HEALTH: return http__health(s, c);
    case R_CAPACITY: return http__capacity(s, c);
    case R_METRICS: return http__metrics(s, c);
    case R_MODELS: return http__models(s, c, NULL);
    case R_MODEL: return http__models(s, c, url + strlen(http__route_model.path));
    case R_CHAT:
    case R_COMPLETIONS:
    case R_EMBEDDINGS: return http__inference(s, k);
    case R_ADMIN_MODELS:
    case R_ADMIN_POOL:
    case R_ADMIN_LOAD:
    case R_ADMIN_UNLOAD:
    case R_ADMIN_REGISTER: return http__admin(s, k);
    case R_NONE: break;
    }
    return http__fail(c, CORRAL_NOT_FOUND, NULL, NULL, "no such endpoint: %.200s", url);
}

static void http__completed(void *cls, struct MHD_Connection *c, void **con_cls,
                            enum MHD_RequestTerminationCode toe) {
    (void)c;
    struct http_server *s = cls;
    struct conn *k = *con_cls;
    if (!k) return;
    *con_cls = NULL;
    if (k->req) {
        /* after this no wake-up can touch the connection, and the engine
         * stops polling a socket the library is about to close */
        engine_req_set_notify(k->req, NULL, NULL);
        engine_req_set_fd(k->req, -1);
        struct engine_req_view v;
        engine_req_take(k->req, NULL, 0, &v);
        if (v.state != ENGINE_REQ_DONE) {
            engine_req_cancel(k->req);
            if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
                log_info("request %s: client went away; cancelled", k->id);
        }
        engine_req_release(k->req);
    }
    if (k->pinned) pool_release(s->pool, k->pinned);
    buf_free(&k->body);
    buf_free(&k->sse);
    free(k->take);
    free(k->model);
    free(k);
}

static void http__mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = '\0';
    log_debug("http: %s", line);
}

/* ------------------------------------------------------------ lifecycle */

struct http_server *http_server_start(const struct http_server_params *p, struct corral_err *err) {
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        return NULL;
    }
    s->pool = p->pool;
    s->gate = p->gate;
    s->queue_timeout_ms = p->queue_timeout_ms;
    s->body_limit = p->body_limit;
    s->api_key = p->api_key && p->api_key[0] ? strdup(p->api_key) : NULL;
    s->admin_api_key = p->admin_api_key && p->admin_api_key[0] ? strdup(p->admin_api_key) : NULL;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    int gai = getaddrinfo(p->host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        corral_err_set(err, CORRAL_CONFIG, NULL, "cannot resolve host '%s': %s", p->host, gai_strerror(gai));
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, http__handler, s,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)p->threads,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
                            MHD_OPTION_NOTIFY_COMPLETED, http__completed, s,
                            MHD_OPTION_EXTERNAL_LOGGER, http__mhd_log, NULL,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        corral_err_set(err, CORRAL_CONFIG, NULL, "cannot listen on %s:%d (address in use or not available)", p->host,
                       p->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : p->port;
    return s;
fail:
    free(s->api_key);
    free(s->admin_api_key);
    free(s);
    return NULL;
}

int http_server_port(const struct http_server *s) { return s->port; }

void http_server_quiesce(struct http_server *s) {
    if (s && s->d) {
        MHD_socket fd = MHD_quiesce_daemon(s->d);
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
}

void http_server_stop(struct http_server *s) {
    if (!s) return;
    if (s->d) MHD_stop_daemon(s->d);
    free(s->api_key);
    free(s->admin_api_key);
    free(s);
}
