/* service.c - the method table, the process-wide counts every transport
 * shares (drain, requests in flight, requests by transport) and results. */
#include "service/service.h"

#include <stdlib.h>
#include <string.h>

#include "util/time.h"

#include "service/internal.h"

/*  id                  JSON-RPC name         auth   admin  infer  body */
static const struct svc_method svc__methods[SVC_N_METHODS] = {
    {SVC_HEALTH,         "health",             false, false, false, false},
    {SVC_CAPACITY,       "capacity",           true,  false, false, false},
    {SVC_METRICS,        "metrics",            true,  false, false, false},
    {SVC_MODELS,         "models.list",        true,  false, false, false},
    {SVC_MODEL,          "models.get",         true,  false, false, false},
    {SVC_CHAT,           "chat.completions",   true,  false, true,  true},
    {SVC_COMPLETIONS,    "completions",        true,  false, true,  true},
    {SVC_EMBEDDINGS,     "embeddings",         true,  false, true,  true},
    {SVC_ADMIN_MODELS,   "admin.models",       false, true,  false, false},
    {SVC_ADMIN_POOL,     "admin.pool",         false, true,  false, false},
    {SVC_ADMIN_LOAD,     "admin.load",         false, true,  false, true},
    {SVC_ADMIN_UNLOAD,   "admin.unload",       false, true,  false, true},
    {SVC_ADMIN_REGISTER, "admin.register",     false, true,  false, true},
    {SVC_STATUS,         "status",             true,  false, false, false},
};

static const struct {
    const char *name;
    enum svc_method_id id;
} svc__aliases[] = {
    {"inference/capacity", SVC_CAPACITY},
};

const struct svc_method *svc_method(enum svc_method_id id) {
    return (unsigned)id < SVC_N_METHODS ? &svc__methods[id] : NULL;
}

const struct svc_method *svc_method_named(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < SVC_N_METHODS; i++)
        if (strcmp(svc__methods[i].name, name) == 0) return &svc__methods[i];
    for (size_t i = 0; i < sizeof svc__aliases / sizeof svc__aliases[0]; i++)
        if (strcmp(svc__aliases[i].name, name) == 0) return &svc__methods[svc__aliases[i].id];
    return NULL;
}

const char *const svc__transport_names[SVC_N_TRANSPORTS] = {"http", "websocket", "stdio"};

/* ------------------------------------------------------------ lifecycle */

struct service *service_new(const struct service_params *p) {
    struct service *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->pool = p->pool;
    s->gate = p->gate;
    s->queue_timeout_ms = p->queue_timeout_ms;
    atomic_init(&s->draining, false);
    atomic_init(&s->active, 0);
    atomic_init(&s->sessions, 0);
    for (size_t i = 0; i < SVC_N_TRANSPORTS; i++) atomic_init(&s->requests[i], 0);
    pthread_mutex_init(&s->rate_mu, NULL);
    s->started_ms = time_now_ms();
    return s;
}

void service_free(struct service *s) {
    if (s) pthread_mutex_destroy(&s->rate_mu);
    free(s);
}

void service_set_http_stats(struct service *s, svc_http_stats_fn fn, void *ctx) {
    s->http_stats = fn;
    s->http_stats_ctx = ctx;
}

void service_drain(struct service *s) { atomic_store(&s->draining, true); }
bool service_draining(struct service *s) { return atomic_load(&s->draining); }
void service_enter(struct service *s) { atomic_fetch_add(&s->active, 1); }
void service_leave(struct service *s) { atomic_fetch_sub(&s->active, 1); }
int service_active(struct service *s) { return s ? atomic_load(&s->active) : 0; }
void service_session(struct service *s, int delta) { atomic_fetch_add(&s->sessions, delta); }

void service_count(struct service *s, enum svc_transport t) {
    if ((unsigned)t < SVC_N_TRANSPORTS) atomic_fetch_add(&s->requests[t], 1);
}

void svc_shutting_down(struct corral_err *err) {
    corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "the server is shutting down; retry on another instance or once it is back");
    strcpy(err->code, "shutting_down");
}

/* ------------------------------------------------------------ results */

void svc_result_free(struct svc_result *r) {
    if (!r) return;
    free(r->json);
    free(r->text);
    r->json = r->text = NULL;
    r->text_len = 0;
}

void svc_result_fail(struct svc_result *r, const struct corral_err *err) {
    svc_result_free(r);
    r->err = *err;
    int st = corral_status_http(err->status);
    r->status = (unsigned)(st == 499 ? 500 : st);
}

void svc__result_json(struct svc_result *r, unsigned status, char *json) {
    if (!json) {
        struct corral_err err;
        corral_err_set(&err, CORRAL_NOMEM, NULL, "out of memory");
        svc_result_fail(r, &err);
        return;
    }
    r->status = status;
    r->json = json;
}

void svc__result_obj(struct svc_result *r, unsigned status, json_t *obj) {
    char *json = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    svc__result_json(r, status, json);
}
