/* session.c - one JSON-RPC connection over the service (see session.h).
 *
 * DESIGN
 * A call that infers becomes a "flight": the service's call plus the id
 * to answer with and, for a call of a batch, its batch. The engine wakes
 * the transport (the session's wake function) when a parked call has
 * news; rpc_session_pump then takes each flight's events until it has to
 * park again: chunks go out at once as stream.chunk notifications, the
 * end as the call's response (or into its batch, which goes out when its
 * last call ends). So a stream's chunks are always queued before its
 * response. Output is bounded: past out_limit queued bytes the pump stops
 * taking events, the engine's own buffer fills and a client that does
 * not read is cancelled like a slow HTTP client.
 */
#include "rpc/session.h"

#include <stdlib.h>
#include <string.h>

#include "rpc/jsonrpc.h"
#include "util/buf.h"
#include "util/log.h"

/* Longest max_wait_ms accepted (as X-Corral-Max-Wait). */
#define RPC_MAX_WAIT_MS 3600000LL

struct rpc_out {
    struct rpc_out *next;
    char *text;
    size_t len;
};

struct rpc_batch {
    struct buf resp; /* "[r1,r2" so far */
    int pending;     /* calls not yet answered (+1 while the batch is read) */
};

struct rpc_flight {
    struct rpc_flight *next, *prev;
    struct svc_call *call;
    char *id_json; /* NULL = notification */
    json_t *id;
    struct rpc_batch *batch;
};

struct rpc_session {
    struct rpc_session_params p;
    struct rpc_flight *flights;
    int n_flights;
    struct rpc_out *out_head, *out_tail;
    size_t out_bytes;
};

struct rpc_session *rpc_session_new(const struct rpc_session_params *p) {
    struct rpc_session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    if (s->p.max_inflight <= 0) s->p.max_inflight = 16;
    if (!s->p.out_limit) s->p.out_limit = 8u << 20;
    service_session(s->p.svc, 1);
    return s;
}

/* ------------------------------------------------------------ output */

static void rpc__queue(struct rpc_session *s, char *text) {
    if (!text) {
        log_warn("rpc: out of memory; a response was dropped");
        return;
    }
    struct rpc_out *o = malloc(sizeof *o);
    if (!o) {
        free(text);
        log_warn("rpc: out of memory; a response was dropped");
        return;
    }
    o->next = NULL;
    o->text = text;
    o->len = strlen(text);
    if (s->out_tail) s->out_tail->next = o;
    else s->out_head = o;
    s->out_tail = o;
    s->out_bytes += o->len;
}

char *rpc_session_pop(struct rpc_session *s, size_t *len) {
    struct rpc_out *o = s->out_head;
    if (!o) return NULL;
    s->out_head = o->next;
    if (!s->out_head) s->out_tail = NULL;
    s->out_bytes -= o->len;
    char *text = o->text;
    *len = o->len;
    free(o);
    return text;
}

size_t rpc_session_queued(const struct rpc_session *s) { return s->out_bytes; }
int rpc_session_inflight(const struct rpc_session *s) { return s->n_flights; }

static void rpc__batch_done(struct rpc_session *s, struct rpc_batch *b) {
    if (--b->pending > 0) return;
    if (b->resp.len > 0) {
        if (buf_append(&b->resp, "]", 1) == 0) {
            size_t n;
            rpc__queue(s, buf_steal(&b->resp, &n));
        } else {
            log_warn("rpc: out of memory; a batch response was dropped");
        }
    }
    buf_free(&b->resp);
    free(b);
}

/* Send a response (text malloc'd, taken over) for a call with id_json, or
 * add it to its batch; a notification's is dropped. */
static void rpc__respond(struct rpc_session *s, const char *id_json, struct rpc_batch *b, char *text) {
    if (!id_json || !text) {
        free(text);
        return;
    }
    if (!b) {
        rpc__queue(s, text);
        return;
    }
    int rc = buf_append(&b->resp, b->resp.len ? "," : "[", 1);
    if (rc == 0) rc = buf_append(&b->resp, text, strlen(text));
    if (rc != 0) log_warn("rpc: out of memory; a response was dropped");
    free(text);
}

static void rpc__fail(struct rpc_session *s, const char *id_json, struct rpc_batch *b, enum corral_status st,
                      const char *code, const char *msg) {
    struct corral_err err;
    corral_err_set(&err, st, NULL, "%s", msg);
    if (code) snprintf(err.code, sizeof err.code, "%s", code);
    rpc__respond(s, id_json, b, rpc_failure_text(id_json, &err));
}

/* The response of a service result. */
static char *rpc__result_text(const char *id_json, struct svc_result *res) {
    char *out;
    if (res->err.status != CORRAL_OK) {
        out = rpc_failure_text(id_json, &res->err);
    } else if (res->text) {
        json_t *str = json_stringn(res->text, res->text_len);
        char *j = str ? json_dumps(str, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(str);
        out = rpc_result_text(id_json, j);
        free(j);
    } else {
        out = rpc_result_text(id_json, res->json);
    }
    svc_result_free(res);
    return out;
}

/* ------------------------------------------------------------ flights */

static void rpc__land(struct rpc_session *s, struct rpc_flight *f) {
    if (f->prev) f->prev->next = f->next;
    else s->flights = f->next;
    if (f->next) f->next->prev = f->prev;
    s->n_flights--;
    svc_call_free(f->call);
    service_leave(s->p.svc);
    struct rpc_batch *b = f->batch;
    free(f->id_json);
    json_decref(f->id);
    free(f);
    if (b) rpc__batch_done(s, b);
}

/* Take f's events until it must park; false if it landed. */
static bool rpc__fly(struct rpc_session *s, struct rpc_flight *f) {
    for (;;) {
        if (s->out_bytes > s->p.out_limit) return true; /* the transport pumps again once it has written */
        char *json = NULL;
        struct svc_result res;
        switch (svc_call_next(f->call, &json, &res)) {
        case SVC_EV_CHUNK:
            if (f->id_json) rpc__queue(s, rpc_chunk_text(f->id_json, json));
            free(json);
            break;
        case SVC_EV_END:
            rpc__respond(s, f->id_json, f->batch, rpc__result_text(f->id_json, &res));
            rpc__land(s, f);
            return false;
        case SVC_EV_START: break;
        case SVC_EV_NONE:
            if (svc_call_park(f->call, NULL, NULL)) return true;
            break;
        }
    }
}

void rpc_session_pump(struct rpc_session *s) {
    struct rpc_flight *f = s->flights;
    while (f) {
        struct rpc_flight *next = f->next;
        rpc__fly(s, f);
        f = next;
    }
}

void rpc_session_cancel_all(struct rpc_session *s) {
    for (struct rpc_flight *f = s->flights; f; f = f->next) svc_call_cancel(f->call);
}

/* ------------------------------------------------------------ calls */

/* An inference call: start it as a flight. */
static void rpc__infer(struct rpc_session *s, const struct svc_method *m, const struct rpc_call *c,
                       struct rpc_batch *b) {
    if (s->n_flights >= s->p.max_inflight) {
        char msg[160];
        snprintf(msg, sizeof msg, "this connection has %d calls in flight, as many as rpc_max_inflight allows; "
                 "wait for one to end", s->n_flights);
        rpc__fail(s, c->id_json, b, CORRAL_OVERLOADED, "too_many_inflight", msg);
        return;
    }
    struct svc_call_params cp = {.transport = s->p.transport, .max_wait_ms = -1, .fd = s->p.fd,
                                 .notify = s->p.wake, .notify_ctx = s->p.wake_ctx};
    json_t *mw = json_object_get(c->params, "max_wait_ms");
    if (mw) {
        if (!json_is_integer(mw) || json_integer_value(mw) < 0 || json_integer_value(mw) > RPC_MAX_WAIT_MS) {
            struct corral_err err;
            corral_err_set(&err, CORRAL_INVALID_REQUEST, "max_wait_ms",
                           "'max_wait_ms' must be a whole number of milliseconds in 0..%lld", RPC_MAX_WAIT_MS);
            rpc__respond(s, c->id_json, b, rpc_failure_text(c->id_json, &err));
            return;
        }
        cp.max_wait_ms = json_integer_value(mw);
        json_object_del(c->params, "max_wait_ms"); /* not part of the OpenAI body */
    }
    char *body = c->params ? json_dumps(c->params, JSON_COMPACT) : NULL;
    struct rpc_flight *f = calloc(1, sizeof *f);
    if (!f || (c->params && !body)) {
        free(body);
        free(f);
        rpc__fail(s, c->id_json, b, CORRAL_NOMEM, NULL, "out of memory");
        return;
    }
    struct corral_err err;
    if (svc_call_start(s->p.svc, m, body, body ? strlen(body) : 0, &cp, &f->call, &err) != CORRAL_OK) {
        free(f);
        rpc__respond(s, c->id_json, b, rpc_failure_text(c->id_json, &err));
        return;
    }
    f->id_json = c->id_json ? strdup(c->id_json) : NULL;
    f->id = c->id ? json_incref(c->id) : NULL;
    f->batch = b;
    if (b) b->pending++;
    f->next = s->flights;
    if (s->flights) s->flights->prev = f;
    s->flights = f;
    s->n_flights++;
    service_enter(s->p.svc);
    rpc__fly(s, f);
}

/* cancel {"id": ...}: stop a call of this connection. */
static void rpc__cancel(struct rpc_session *s, const struct rpc_call *c, struct rpc_batch *b) {
    json_t *id = json_is_object(c->params) ? json_object_get(c->params, "id") : NULL;
    if (!id) {
        rpc__fail(s, c->id_json, b, CORRAL_INVALID_REQUEST, NULL, "cancel takes {\"id\": <the call's id>}");
        return;
    }
    bool found = false;
    for (struct rpc_flight *f = s->flights; f; f = f->next) {
        if (f->id && json_equal(f->id, id)) {
            svc_call_cancel(f->call);
            found = true;
        }
    }
    json_t *r = json_pack("{s:O, s:b}", "id", id, "cancelled", found);
    char *rj = r ? json_dumps(r, JSON_COMPACT) : NULL;
    json_decref(r);
    rpc__respond(s, c->id_json, b, rpc_result_text(c->id_json, rj));
    free(rj);
}

/* The model id of models.get: {"id": ...} or {"model": ...}. */
static const char *rpc__model_id(json_t *params) {
    json_t *v = json_object_get(params, "id");
    if (!json_is_string(v)) v = json_object_get(params, "model");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void rpc__call(struct rpc_session *s, const struct rpc_call *c, struct rpc_batch *b) {
    if (c->error) { /* answered even without an id (with id null) */
        const char *id = c->id_json ? c->id_json : "null";
        rpc__respond(s, id, b, rpc_error_text(id, c->error, c->error_msg, NULL));
        return;
    }
    service_count(s->p.svc, s->p.transport);
    if (strcmp(c->method, "cancel") == 0) {
        rpc__cancel(s, c, b);
        return;
    }
    const struct svc_method *m = svc_method_named(c->method);
    if (!m) {
        char msg[200];
        snprintf(msg, sizeof msg, "no such method: '%.120s'", c->method);
        rpc__respond(s, c->id_json, b, rpc_error_text(c->id_json, RPC_METHOD_NOT_FOUND, msg, NULL));
        return;
    }
    if (c->params && !json_is_object(c->params)) {
        rpc__respond(s, c->id_json, b,
                     rpc_error_text(c->id_json, RPC_INVALID_PARAMS, "params must be an object (the HTTP body)", NULL));
        return;
    }
    if (m->admin && !s->p.can_admin) {
        if (s->p.admin_keyed)
            rpc__fail(s, c->id_json, b, CORRAL_UNAUTHORIZED, NULL,
                      "invalid or missing admin API key (send it on the connection's upgrade request)");
        else
            rpc__fail(s, c->id_json, b, CORRAL_FORBIDDEN, NULL,
                      "the admin API answers loopback clients only unless admin_api_key is set");
        return;
    }
    if (m->auth && !s->p.can_infer) {
        rpc__fail(s, c->id_json, b, CORRAL_UNAUTHORIZED, NULL,
                  "invalid or missing API key (send 'Authorization: Bearer <key>' on the upgrade request)");
        return;
    }
    if (service_draining(s->p.svc) && m->id != SVC_HEALTH) {
        struct corral_err err;
        svc_shutting_down(&err);
        rpc__respond(s, c->id_json, b, rpc_failure_text(c->id_json, &err));
        return;
    }
    if (m->infer) {
        if (!c->params) {
            rpc__respond(s, c->id_json, b,
                         rpc_error_text(c->id_json, RPC_INVALID_PARAMS, "params are required (the HTTP body)", NULL));
            return;
        }
        rpc__infer(s, m, c, b);
        return;
    }
    const char *id = NULL;
    if (m->id == SVC_MODEL && !(id = rpc__model_id(c->params))) {
        rpc__respond(s, c->id_json, b,
                     rpc_error_text(c->id_json, RPC_INVALID_PARAMS, "models.get takes {\"id\": <model id>}", NULL));
        return;
    }
    char *body = !m->body ? NULL : c->params ? json_dumps(c->params, JSON_COMPACT) : strdup("{}");
    struct svc_result res;
    svc_simple(s->p.svc, m, id, body, body ? strlen(body) : 0, &res);
    free(body);
    rpc__respond(s, c->id_json, b, rpc__result_text(c->id_json, &res));
}

void rpc_session_input(struct rpc_session *s, const char *msg, size_t len) {
    struct rpc_message m;
    if (rpc_message_parse(msg, len, &m) != 0) {
        rpc_message_free(&m);
        rpc__fail(s, "null", NULL, CORRAL_NOMEM, NULL, "out of memory");
        return;
    }
    if (m.error) {
        rpc__queue(s, rpc_error_text(NULL, m.error, m.error_msg, NULL));
        rpc_message_free(&m);
        return;
    }
    struct rpc_batch *b = NULL;
    if (m.batch) {
        b = calloc(1, sizeof *b);
        if (!b) {
            rpc_message_free(&m);
            rpc__fail(s, "null", NULL, CORRAL_NOMEM, NULL, "out of memory");
            return;
        }
        buf_init(&b->resp, 0);
        b->pending = 1; /* while the batch is read */
    }
    for (size_t i = 0; i < m.n_calls; i++) rpc__call(s, &m.calls[i], b);
    if (b) rpc__batch_done(s, b);
    rpc_message_free(&m);
}

void rpc_session_refuse(struct rpc_session *s, const struct corral_err *err) {
    rpc__queue(s, rpc_failure_text(NULL, err));
}

void rpc_session_free(struct rpc_session *s) {
    if (!s) return;
    rpc_session_cancel_all(s);
    while (s->flights) rpc__land(s, s->flights); /* a batch they complete is queued, then dropped below */
    size_t n;
    char *t;
    while ((t = rpc_session_pop(s, &n))) free(t);
    service_session(s->p.svc, -1);
    free(s);
}
