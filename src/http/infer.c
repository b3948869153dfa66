/* infer.c - inference over HTTP: the service's call (service/call.c) framed
 * as a whole JSON response or as an SSE stream.
 *
 * A non-streaming call parks until it ends and suspends its connection;
 * the engine's wake-up resumes it and the handler runs again to send the
 * response. A stream parks until it is admitted (so a request refused
 * while queued still gets its own HTTP status), then gets a chunked
 * response whose content reader turns the call's chunks into SSE events
 * and, when none is ready, suspends the connection inside the reader (the
 * library's documented way to say "no data yet"); the next wake-up
 * resumes it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"
#include "http/sse.h"

/* Longest X-Corral-Max-Wait accepted, ms. */
#define HTTP_MAX_WAIT_MS 3600000LL

static void http__resume(void *ctx) { MHD_resume_connection(ctx); }
static void http__suspend(void *ctx) { MHD_suspend_connection(ctx); }

/* Append one event with JSON text j (taken over) to k->sse. -1 if out of memory. */
static int http__event(struct conn *k, char *j) {
    int rc = j && sse_data(&k->sse, j, strlen(j)) == 0 ? 0 : -1;
    free(j);
    return rc;
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
        if (k->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        char *json = NULL;
        struct svc_result res;
        enum svc_event ev = svc_call_next(k->call, &json, &res);
        if (ev == SVC_EV_CHUNK) {
            if (http__event(k, json) != 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        } else if (ev == SVC_EV_END) {
            k->ended = true;
            int rc = res.err.status != CORRAL_OK ? http__event(k, api_error_json(&res.err)) : 0;
            svc_result_free(&res);
            if (rc != 0 || sse_done(&k->sse) != 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        } else if (ev == SVC_EV_NONE) {
            if (svc_call_park(k->call, http__suspend, k->out.c)) return 0;
        }
    }
}

static void http__stream_free(void *cls) { (void)cls; /* the conn is freed on completion */ }

/* Start the event stream of an admitted call. */
static enum MHD_Result http__stream_start(struct conn *k) {
    buf_init(&k->sse, 0);
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
    if (k->stream_started) return MHD_YES;
    for (;;) {
        char *json = NULL;
        struct svc_result res;
        enum svc_event ev = svc_call_next(k->call, &json, &res);
        if (ev == SVC_EV_START) {
            k->stream_started = true;
            return http__stream_start(k);
        }
        if (ev == SVC_EV_END) {
            k->ended = true;
            return http__reply_result(&k->out, &res);
        }
        free(json); /* no chunk comes before the start */
        if (svc_call_park(k->call, http__suspend, k->out.c)) return MHD_YES;
    }
}

/* The request's queue-wait bound: X-Corral-Max-Wait (ms), or -1 for the
 * server's queue_timeout. 0 with *ms set, or -1 for a malformed header. */
static int http__max_wait(struct MHD_Connection *c, int64_t *ms) {
    *ms = -1;
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

enum MHD_Result http__inference(struct http_server *s, struct conn *k, const struct svc_method *m) {
    struct corral_err err;
    corral_err_clear(&err);
    struct svc_call_params p = {.transport = SVC_HTTP, .fd = -1, .notify = http__resume, .notify_ctx = k->out.c};
    if (http__max_wait(k->out.c, &p.max_wait_ms) != 0) {
        corral_err_set(&err, CORRAL_INVALID_REQUEST, "X-Corral-Max-Wait",
                       "X-Corral-Max-Wait must be a whole number of milliseconds in 0..%lld", HTTP_MAX_WAIT_MS);
        return http__reply_error(&k->out, &err, NULL);
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(k->out.c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) p.fd = ci->connect_fd;
    size_t len = 0;
    char *body = buf_steal(&k->body, &len);
    buf_free(&k->body);
    if (svc_call_start(s->svc, m, body, len, &p, &k->call, &err) != CORRAL_OK)
        return http__reply_error(&k->out, &err, NULL);
    k->stream = svc_call_streaming(k->call);
    return http__inference_resume(k);
}
