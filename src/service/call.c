/* call.c - one inference call (chat, completion, embedding) for any
 * transport: parse, submit to the pool, then hand out its events.
 *
 * DESIGN
 * The call owns the engine request and the model's pin. Its transport
 * asks for the next event (svc_call_next) and, when there is none, parks
 * the call (svc_call_park): the engine's next matching change runs the
 * transport's notify, which brings it back to svc_call_next. What a park
 * waits for follows the call's phase: a whole response waits for the end,
 * a stream not yet admitted for its start (so a request refused while
 * queued still gets its own status), a running stream for output. Parking
 * and waking happen under the request's lock, so no wake-up is lost.
 *
 * The events are the same for every transport: the HTTP transport frames
 * a chunk as an SSE event, JSON-RPC as a stream.chunk notification.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/openai.h"
#include "pool/pool.h"
#include "service/internal.h"
#include "util/time.h"

/* Bytes of engine text turned into one chunk at most. */
#define SVC_TAKE_MAX 16384
/* Output an engine may hold for one call before its client is "too slow". */
#define SVC_OUT_CAP (4u << 20)

struct svc_call {
    struct service *svc;
    struct engine_req *req;
    struct pool_pin *pin;
    enum engine_kind kind;
    bool stream;
    bool include_usage;
    bool base64;
    bool logprobs;
    size_t taken; /* output bytes taken so far (the logprob records follow them) */
    char id[48];
    int64_t created;
    char *model;

    bool started;   /* SVC_EV_START was handed out */
    bool sent_role; /* the chat stream's first chunk */
    bool sent_finish;
    bool sent_usage;
    bool ended; /* SVC_EV_END was handed out */
    char *take;
};

static const char *svc__finish_name(enum engine_finish f) { return f == ENGINE_FINISH_LENGTH ? "length" : "stop"; }

enum corral_status svc_call_start(struct service *s, const struct svc_method *m, char *body, size_t len,
                                  const struct svc_call_params *p, struct svc_call **out, struct corral_err *err) {
    *out = NULL;
    struct api_request in;
    memset(&in, 0, sizeof in);
    enum engine_kind kind = m->id == SVC_CHAT ? ENGINE_CHAT : m->id == SVC_COMPLETIONS ? ENGINE_COMPLETION
                                                                                        : ENGINE_EMBEDDING;
    enum corral_status st = api_request_parse(kind, body ? body : "", body ? len : 0, &in, err);
    if (st != CORRAL_OK) {
        free(body);
        return st;
    }
    struct svc_call *c = calloc(1, sizeof *c);
    if (c) {
        c->svc = s;
        c->kind = kind;
        c->model = strdup(in.model);
        c->stream = in.stream && kind != ENGINE_EMBEDDING;
        c->include_usage = in.include_usage;
        c->base64 = in.encoding_base64;
        c->logprobs = in.in.sampling.logprobs;
        c->created = time_wall_s();
        api_make_id(kind == ENGINE_CHAT ? "chatcmpl-" : kind == ENGINE_COMPLETION ? "cmpl-" : "emb-", c->id,
                    sizeof c->id);
        c->req = engine_req_new(&in.in, SVC_OUT_CAP);
        if (c->stream) c->take = malloc(SVC_TAKE_MAX);
    }
    api_request_free(&in);
    if (!c || !c->model || !c->req || (c->stream && !c->take)) {
        free(body);
        svc_call_free(c);
        return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
    }
    /* the raw body rides along for backends that forward it; the pool
     * drops it for in-process models */
    engine_req_set_body(c->req, body, body ? len : 0);
    engine_req_set_fd(c->req, p->fd);
    engine_req_set_notify(c->req, p->notify, p->notify_ctx);
    engine_req_set_max_wait(c->req, p->max_wait_ms >= 0 ? p->max_wait_ms : s->queue_timeout_ms);
    /* submits now, or once the model is loaded; the model stays pinned
     * until the call is freed */
    st = pool_submit(s->pool, c->model, c->req, &c->pin, err);
    if (st != CORRAL_OK) {
        svc_call_free(c);
        return st;
    }
    *out = c;
    return CORRAL_OK;
}

const char *svc_call_id(const struct svc_call *c) { return c->id; }
bool svc_call_streaming(const struct svc_call *c) { return c->stream; }
void svc_call_cancel(struct svc_call *c) { engine_req_cancel(c->req); }

bool svc_call_park(struct svc_call *c, void (*suspend)(void *ctx), void *ctx) {
    if (c->ended) return false;
    enum engine_park mode = !c->stream ? ENGINE_PARK_DONE : !c->started ? ENGINE_PARK_START : ENGINE_PARK_OUTPUT;
    return engine_req_park(c->req, mode, suspend, ctx);
}

/* The logprobs object of the records for the first `upto` output bytes
 * taken (NULL when the request did not ask for them). */
static json_t *svc__logprobs(struct svc_call *c, size_t n) {
    if (!c->logprobs) return NULL;
    size_t from = c->taken;
    c->taken += n;
    struct engine_logprob *lp = NULL;
    size_t k = engine_req_take_logprobs(c->req, c->taken, &lp);
    json_t *o = api_logprobs_json(c->kind, lp, k, from);
    for (size_t i = 0; i < k; i++) engine_logprob_clear(&lp[i]);
    free(lp);
    return o;
}

/* A whole (non-streaming) response, once the request is done. */
static void svc__whole(struct svc_call *c, const struct engine_req_view *v, struct svc_result *res) {
    if (c->kind == ENGINE_EMBEDDING) {
        size_t n = 0, dim = 0;
        const float *const *vecs = engine_req_embeddings(c->req, &n, &dim);
        svc__result_json(res, 200, api_embeddings_json(c->model, vecs, n, dim, c->base64, v->usage.prompt_tokens));
        return;
    }
    size_t len = engine_req_pending(c->req);
    char *text = malloc(len + 1);
    if (!text) {
        svc__result_json(res, 200, NULL);
        return;
    }
    len = engine_req_take(c->req, text, len, NULL);
    svc__result_json(res, 200,
                     api_completion_json_lp(c->kind, c->id, c->created, c->model, text, len,
                                            svc__finish_name(v->finish), &v->usage, svc__logprobs(c, len)));
    free(text);
}

/* A stream's end: {"finish_reason", "usage"}. */
static void svc__stream_end(struct svc_call *c, const struct engine_req_view *v, struct svc_result *res) {
    json_t *o = json_pack("{s:s, s:s, s:{s:I, s:I, s:I}}", "id", c->id, "finish_reason",
                          svc__finish_name(v->finish), "usage", "prompt_tokens", (json_int_t)v->usage.prompt_tokens,
                          "completion_tokens", (json_int_t)v->usage.completion_tokens, "total_tokens",
                          (json_int_t)(v->usage.prompt_tokens + v->usage.completion_tokens));
    svc__result_obj(res, 200, o);
}

static enum svc_event svc__end(struct svc_call *c, const struct engine_req_view *v, struct svc_result *res) {
    memset(res, 0, sizeof *res);
    corral_err_clear(&res->err);
    c->ended = true;
    if (v->status != CORRAL_OK) {
        struct corral_err err;
        engine_req_error(c->req, &err);
        svc_result_fail(res, &err);
    } else if (c->stream) {
        svc__stream_end(c, v, res);
    } else {
        svc__whole(c, v, res);
    }
    return SVC_EV_END;
}

/* A chunk event: *json is the chunk (NULL = out of memory, which ends the call). */
static enum svc_event svc__chunk(struct svc_call *c, char *chunk, char **json, struct svc_result *res) {
    if (!chunk) {
        svc_call_cancel(c);
        struct corral_err err;
        corral_err_set(&err, CORRAL_NOMEM, NULL, "out of memory");
        memset(res, 0, sizeof *res);
        svc_result_fail(res, &err);
        c->ended = true;
        return SVC_EV_END;
    }
    *json = chunk;
    return SVC_EV_CHUNK;
}

enum svc_event svc_call_next(struct svc_call *c, char **json, struct svc_result *res) {
    *json = NULL;
    if (c->ended) return SVC_EV_NONE;
    struct engine_req_view v;
    if (!c->stream) {
        engine_req_take(c->req, NULL, 0, &v);
        return v.state == ENGINE_REQ_DONE ? svc__end(c, &v, res) : SVC_EV_NONE;
    }
    if (!c->started) {
        engine_req_take(c->req, NULL, 0, &v);
        if (v.state == ENGINE_REQ_QUEUED) return SVC_EV_NONE;
        if (v.state == ENGINE_REQ_DONE && v.status != CORRAL_OK) return svc__end(c, &v, res);
        c->started = true;
        return SVC_EV_START;
    }
    if (c->kind == ENGINE_CHAT && !c->sent_role) {
        c->sent_role = true;
        return svc__chunk(c, api_chunk_json(c->kind, c->id, c->created, c->model, true, "", 0, NULL,
                                            c->include_usage, NULL, false), json, res);
    }
    size_t n = engine_req_take(c->req, c->take, SVC_TAKE_MAX, &v);
    if (n > 0)
        return svc__chunk(c, api_chunk_json_lp(c->kind, c->id, c->created, c->model, false, c->take, n, NULL,
                                               c->include_usage, NULL, false, svc__logprobs(c, n)),
                          json, res);
    /* text still pending (taken before DONE was seen) comes before the end */
    if (v.state != ENGINE_REQ_DONE || engine_req_pending(c->req) > 0) return SVC_EV_NONE;
    if (v.status == CORRAL_OK && !c->sent_finish) {
        c->sent_finish = true;
        return svc__chunk(c, api_chunk_json(c->kind, c->id, c->created, c->model, false, NULL, 0,
                                            svc__finish_name(v.finish), c->include_usage, NULL, false), json, res);
    }
    if (v.status == CORRAL_OK && c->include_usage && !c->sent_usage) {
        c->sent_usage = true;
        return svc__chunk(c, api_chunk_json(c->kind, c->id, c->created, c->model, false, NULL, 0, NULL, false,
                                            &v.usage, true), json, res);
    }
    return svc__end(c, &v, res);
}

void svc_call_free(struct svc_call *c) {
    if (!c) return;
    if (c->req) {
        /* after this no wake-up can reach the transport, and the engine
         * stops polling a socket the transport is about to close */
        engine_req_set_notify(c->req, NULL, NULL);
        engine_req_set_fd(c->req, -1);
        struct engine_req_view v;
        engine_req_take(c->req, NULL, 0, &v);
        if (v.state != ENGINE_REQ_DONE) engine_req_cancel(c->req);
        engine_req_release(c->req);
    }
    if (c->pin) pool_release(c->svc->pool, c->pin);
    free(c->take);
    free(c->model);
    free(c);
}
