/* internal.h - what the HTTP transport's files share (server.c: the
 * daemon, the handler and its rules; reply.c: responses; info.c: health,
 * capacity, metrics, models and admin; infer.c: inference and streaming).
 * Not for other modules. */
#ifndef CORRAL_HTTP_INTERNAL_H
#define CORRAL_HTTP_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "api/openai.h"
#include "engine/engine.h"
#include "http/conns.h"
#include "http/guard.h"
#include "http/server.h"
#include "util/buf.h"

struct http_server {
    struct MHD_Daemon *d;
    struct pool *pool;
    struct capacity *gate;
    struct guard guard;
    struct conns *conns;
    int64_t queue_timeout_ms;
    char *api_key;
    char *admin_api_key;
    size_t body_limit;
    int port;
    int max_connections;
    _Atomic bool draining; /* shutting down: new requests get 503 */
    _Atomic int active;    /* requests dispatched, not yet completed */
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

/* What every response to one request carries besides its status and body. */
struct http_out {
    struct MHD_Connection *c;
    char allow_origin[GUARD_ORIGIN_MAX]; /* Access-Control-Allow-Origin, "" = none */
    bool vary;                           /* Vary: Origin */
    bool close;                          /* Connection: close */
};

/* Per-request state, from the first call of the handler to completion. */
struct conn {
    struct http_server *srv;
    struct http_out out;
    struct conn_rec *rec; /* its connection's record (conns.h); may be NULL */
    const struct route *route;
    const char *url_id; /* R_MODEL: the id in the URL (the library's string) */
    struct buf body;
    size_t body_seen;
    size_t mem_held; /* bytes of body counted in the request-memory bound */
    bool too_large;
    bool no_memory; /* the request-memory bound was reached: 503 */
    bool dispatched;
    bool counted; /* in srv->active */

    struct pool_pin *pinned;
    struct engine_req *req;
    enum engine_kind kind;
    bool stream;
    bool stream_started; /* the 200 and the event stream are queued */
    bool include_usage;
    bool base64; /* embeddings as base64 */
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

/* ------------------------------------------------------------ reply.c */

/* Status codes counted for /metrics; the last entry counts the others. */
extern const int http__codes[];
extern const size_t http__n_codes;
/* Copy the counts (http__n_codes entries) into out. */
void http__code_counts(int64_t *out);

/* The headers every response gets (content type, CORS, Connection). */
void http__headers(const struct http_out *o, struct MHD_Response *r, const char *ctype);
/* Queue r with status, counted. */
enum MHD_Result http__queue(const struct http_out *o, unsigned status, struct MHD_Response *r);
/* Queue len bytes of data (malloc'd; taken over). */
enum MHD_Result http__reply_owned(const struct http_out *o, unsigned status, const char *ctype, char *data,
                                  size_t len);
/* Queue a JSON text (malloc'd; taken over); NULL answers 500 out of memory. */
enum MHD_Result http__reply_json(const struct http_out *o, unsigned status, char *json);
/* Queue a JSON value (reference taken over); NULL answers 500. */
enum MHD_Result http__reply_obj(const struct http_out *o, unsigned status, json_t *root);
/* Queue the OpenAI error object of err with its HTTP status (Retry-After on
 * 503, WWW-Authenticate on 401, Allow when allow is set). */
enum MHD_Result http__reply_error(const struct http_out *o, const struct corral_err *err, const char *allow);
/* Build an error and queue it. fmt takes one string argument. */
enum MHD_Result http__fail(const struct http_out *o, enum corral_status st, const char *param, const char *code,
                           const char *allow, const char *fmt, const char *arg);

/* ------------------------------------------------------------ info.c */

enum MHD_Result http__health(struct http_server *s, const struct http_out *o);
enum MHD_Result http__capacity(struct http_server *s, const struct http_out *o);
enum MHD_Result http__metrics(struct http_server *s, const struct http_out *o);
/* GET /v1/models (one = NULL) or /v1/models/{one}. */
enum MHD_Result http__models(struct http_server *s, const struct http_out *o, const char *one);
/* Every /admin route. */
enum MHD_Result http__admin(struct http_server *s, struct conn *k);

/* ------------------------------------------------------------ infer.c */

/* Parse, submit and park an inference request (chat, completion, embedding). */
enum MHD_Result http__inference(struct http_server *s, struct conn *k);
/* Resumed after the engine moved: send the whole response or start the stream. */
enum MHD_Result http__inference_resume(struct conn *k);

#endif
