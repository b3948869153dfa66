/* reply.c - queueing responses: headers every response gets, OpenAI error
 * objects, and the count of responses by status for /metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"

/* Responses sent, by status code (process-wide, like the log level: one
 * server runs per process). The last entry counts other codes. */
const int http__codes[] = {200, 201, 202, 204, 400, 401, 403, 404, 405, 413, 415, 500, 502, 503, 504, 0};
const size_t http__n_codes = sizeof http__codes / sizeof http__codes[0];
static _Atomic int64_t http__counts[sizeof http__codes / sizeof http__codes[0]];

static void http__count(unsigned status) {
    size_t i = 0;
    while (i + 1 < http__n_codes && (unsigned)http__codes[i] != status) i++;
    atomic_fetch_add(&http__counts[i], 1);
}

void http__code_counts(int64_t *out) {
    for (size_t i = 0; i < http__n_codes; i++) out[i] = atomic_load(&http__counts[i]);
}

void http__headers(const struct http_out *o, struct MHD_Response *r, const char *ctype) {
    if (ctype) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (o->allow_origin[0]) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", o->allow_origin);
        MHD_add_response_header(r, "Access-Control-Expose-Headers", "Retry-After");
    }
    if (o->vary) MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Origin");
    if (o->close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
}

enum MHD_Result http__queue(const struct http_out *o, unsigned status, struct MHD_Response *r) {
    enum MHD_Result ret = MHD_queue_response(o->c, status, r);
    if (ret == MHD_YES) http__count(status);
    return ret;
}

enum MHD_Result http__reply_owned(const struct http_out *o, unsigned status, const char *ctype, char *data,
                                  size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    http__headers(o, r, ctype);
    enum MHD_Result ret = http__queue(o, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result http__reply_json(const struct http_out *o, unsigned status, char *json) {
    if (!json) {
        static const char oom[] =
            "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        struct MHD_Response *r = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        http__headers(o, r, "application/json");
        enum MHD_Result ret = http__queue(o, MHD_HTTP_INTERNAL_SERVER_ERROR, r);
        MHD_destroy_response(r);
        return ret;
    }
    return http__reply_owned(o, status, "application/json", json, strlen(json));
}

enum MHD_Result http__reply_obj(const struct http_out *o, unsigned status, json_t *root) {
    char *out = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return http__reply_json(o, status, out);
}

enum MHD_Result http__reply_error(const struct http_out *o, const struct corral_err *err, const char *allow) {
    char *json = api_error_json(err);
    int status = corral_status_http(err->status);
    if (status == 499) status = 500;
    if (!json) return http__reply_json(o, (unsigned)status, NULL);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(json);
        return MHD_NO;
    }
    http__headers(o, r, "application/json");
    if (status == 503) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ret = http__queue(o, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result http__fail(const struct http_out *o, enum corral_status st, const char *param, const char *code,
                           const char *allow, const char *fmt, const char *arg) {
    struct corral_err err;
    corral_err_clear(&err);
    corral_err_set(&err, st, param, fmt, arg);
    if (code) snprintf(err.code, sizeof err.code, "%s", code);
    return http__reply_error(o, &err, allow);
}

enum MHD_Result http__reply_result(const struct http_out *o, struct svc_result *res) {
    enum MHD_Result ret;
    if (res->err.status != CORRAL_OK) {
        ret = http__reply_error(o, &res->err, NULL);
    } else if (res->text) {
        ret = http__reply_owned(o, res->status, "text/plain; version=0.0.4; charset=utf-8", res->text, res->text_len);
        res->text = NULL;
    } else {
        ret = http__reply_json(o, res->status, res->json);
        res->json = NULL;
    }
    svc_result_free(res);
    return ret;
}

void http__stats(void *ctx, struct svc_http_stats *out) {
    struct http_server *s = ctx;
    out->connections = conns_count(s->conns);
    out->max_connections = s->max_connections;
    out->connection_timeouts = conns_timeouts(s->conns);
    out->request_memory = conns_mem_used(s->conns);
    out->codes = http__codes;
    out->n_codes = http__n_codes - 1; /* "other" is not a code */
    http__code_counts(out->counts);
}
