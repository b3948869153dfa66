/* infer.c - inference requests over HTTP: parse, submit to the pool, park
 * the connection, then send the whole response or stream it as SSE.
 *
 * A non-streaming request parks "until done" and suspends its connection;
 * the engine's finish resumes it and the handler runs again to send the
 * response. A stream parks until it runs (so a request refused while
 * queued still gets its own HTTP status), then gets a chunked response
 * whose content reader turns the engine's text into SSE chunks and, when
 * no text is pending, suspends the connection inside the reader (the
 * library's documented way to say "no data yet"); each push from the engine
 * resumes it. Parking and waking happen under the request's lock, so no
 * wake-up is lost.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"
#include "http/sse.h"
#include "pool/pool.h"
#include "util/time.h"

/* Bytes of engine text turned into one SSE chunk at most. */
#define HTTP_TAKE_MAX 16384
/* Output an engine may hold for one request before the client is "too slow". */
#define HTTP_OUT_CAP (4u << 20)
/* Longest X-Corral-Max-Wait accepted, ms. */
#define HTTP_MAX_WAIT_MS 3600000LL

static void http__resume(void *ctx) { MHD_resume_connection(ctx); }
static void http__suspend(void *ctx) { MHD_suspend_connection(ctx); }

static const char *http__finish_name(enum engine_finish f) { return f == ENGINE_FINISH_LENGTH ? "length" : "stop"; }

/* Append one event with JSON text j (taken over) to k->sse. -1 if out of memory. */
static int http__event(struct conn *k, char *j) {
    int rc = j && sse_data(&k->sse, j, strlen(j)) == 0 ? 0 : -1;
    free(j);
    return rc;
}

/* Append the SSE events for text (and, at the end, the final chunks) to
 * k->sse. Returns -1 if out of memory. */
static int http__stream_events(struct conn *k, const char *text, size_t n, const struct engine_req_view *v) {
    if (k->kind == ENGINE_CHAT && !k->sent_role) {
        if (http__event(k, api_chunk_json(k->kind, k->id, k->created, k->model, true, "", 0, NULL,
                                          k->include_usage, NULL, false)) != 0)
            return -1;
        k->sent_role = true;
    }
    if (n > 0 && http__event(k, api_chunk_json(k->kind, k->id, k->created, k->model, false, text, n, NULL,
                                               k->include_usage, NULL, false)) != 0)
        return -1;
    if (!v || v->state != ENGINE_REQ_DONE || k->sent_end) return 0;
    if (v->status != CORRAL_OK) {
        struct corral_err err;
        engine_req_error(k->req, &err);
        if (http__event(k, api_error_json(&err)) != 0) return -1;
    } else {
        if (http__event(k, api_chunk_json(k->kind, k->id, k->created, k->model, false, NULL, 0,
                                          http__finish_name(v->finish), k->include_usage, NULL, false)) != 0)
            return -1;
        if (k->include_usage &&
            http__event(k, api_chunk_json(k->kind, k->id, k->created, k->model, false, NULL, 0, NULL, false,
                                          &v->usage, true)) != 0)
            return -1;
    }
    if (sse_done(&k->sse) != 0) return -1;
    k->sent_end = true;
    return 0;
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
        if (n > 0 || v.state == ENGINE_REQ_DONE || (k->kind == ENGINE_CHAT && !k->sent_role)) {
            /* text taken before DONE was seen belongs before the end events */
            if (v.state == ENGINE_REQ_DONE && engine_req_pending(k->req) > 0) v.state = ENGINE_REQ_RUNNING;
            if (http__stream_events(k, k->take, n, &v) != 0) return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        if (engine_req_park(k->req, ENGINE_PARK_OUTPUT, http__suspend, k->out.c)) return 0;
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
        return http__reply_error(&k->out, &err, NULL);
    }
    if (k->kind == ENGINE_EMBEDDING) {
        size_t n = 0, dim = 0;
        const float *const *vecs = engine_req_embeddings(k->req, &n, &dim);
        return http__reply_json(&k->out, MHD_HTTP_OK,
                                api_embeddings_json(k->model, vecs, n, dim, k->base64, v.usage.prompt_tokens));
    }
    size_t len = engine_req_pending(k->req);
    char *text = malloc(len + 1);
    if (!text) return http__reply_json(&k->out, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    len = engine_req_take(k->req, text, len, NULL);
    char *json = api_completion_json(k->kind, k->id, k->created, k->model, text, len, http__finish_name(v.finish),
                                     &v.usage);
    free(text);
    return http__reply_json(&k->out, MHD_HTTP_OK, json);
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
        return http__reply_error(&k->out, &err, NULL);
    }
    k->stream_started = true;
    k->take = malloc(HTTP_TAKE_MAX);
    buf_init(&k->sse, 0);
    if (!k->take) return http__reply_json(&k->out, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, http__stream_reader, k,
                                                               http__stream_free);
    if (!r) return MHD_NO;
    http__headers(&k->out, r, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result ret = http__queue(&k->out, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result http__inference_resume(struct conn *k) {
    if (!k->stream) return http__reply_done(k);
    if (!k->stream_started) return http__stream_start(k);
    return MHD_YES;
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

enum MHD_Result http__inference(struct http_server *s, struct conn *k) {
    struct corral_err err;
    corral_err_clear(&err);
    struct api_request in;
    memset(&in, 0, sizeof in);
    int64_t max_wait = -1;
    if (http__max_wait(s, k->out.c, &max_wait) != 0) {
        corral_err_set(&err, CORRAL_INVALID_REQUEST, "X-Corral-Max-Wait",
                       "X-Corral-Max-Wait must be a whole number of milliseconds in 0..%lld", HTTP_MAX_WAIT_MS);
        return http__reply_error(&k->out, &err, NULL);
    }
    k->kind = k->route->id == R_CHAT ? ENGINE_CHAT : k->route->id == R_COMPLETIONS ? ENGINE_COMPLETION : ENGINE_EMBEDDING;
    if (api_request_parse(k->kind, k->body.data ? k->body.data : "", k->body.len, &in, &err) != CORRAL_OK)
        return http__reply_error(&k->out, &err, NULL);

    k->model = strdup(in.model);
    k->stream = in.stream && k->kind != ENGINE_EMBEDDING;
    k->include_usage = in.include_usage;
    k->base64 = in.encoding_base64;
    k->created = time_wall_s();
    api_make_id(k->kind == ENGINE_CHAT ? "chatcmpl-" : k->kind == ENGINE_COMPLETION ? "cmpl-" : "emb-", k->id, sizeof k->id);
    k->req = engine_req_new(&in.in, HTTP_OUT_CAP);
    api_request_free(&in); /* the model name and the rest were copied */
    if (!k->model || !k->req) {
        return http__reply_json(&k->out, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    }
    /* the raw body rides along for backends that forward it; the pool
     * drops it for in-process models */
    size_t body_len = 0;
    char *body = buf_steal(&k->body, &body_len);
    buf_free(&k->body);
    engine_req_set_body(k->req, body, body_len);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(k->out.c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) engine_req_set_fd(k->req, ci->connect_fd);
    engine_req_set_notify(k->req, http__resume, k->out.c);
    engine_req_set_max_wait(k->req, max_wait);

    /* submits now, or once the model is loaded; the model stays pinned until
     * the request completes */
    if (pool_submit(s->pool, k->model, k->req, &k->pinned, &err) != CORRAL_OK)
        return http__reply_error(&k->out, &err, NULL);

    /* a whole response waits for the end; a stream waits until it runs */
    if (engine_req_park(k->req, k->stream ? ENGINE_PARK_START : ENGINE_PARK_DONE, http__suspend, k->out.c))
        return MHD_YES;
    return http__inference_resume(k);
}
