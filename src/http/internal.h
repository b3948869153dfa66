/* internal.h - what the HTTP transport's files share (server.c: the
 * daemon, the handler and its rules; reply.c: responses; infer.c:
 * inference and streaming; upgrade.c: the WebSocket upgrade). Not for
 * other modules. */
#ifndef CORRAL_HTTP_INTERNAL_H
#define CORRAL_HTTP_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include <pthread.h>

#include "api/openai.h"
#include "http/conns.h"
#include "http/guard.h"
#include "http/server.h"
#include "service/service.h"
#include "util/buf.h"

struct ws_hub;

struct http_server {
    struct MHD_Daemon *d;
    int quiesced_fd; /* the listener after http_server_drain, closed once the daemon stopped; -1 = none */
    struct service *svc;
    struct guard guard;
    struct conns *conns;
    struct ws_hub *ws; /* the WebSocket sessions (rpc/ws.h); NULL until the first upgrade */
    pthread_mutex_t ws_mu;
    char *api_key;
    char *admin_api_key;
    size_t body_limit;
    size_t max_rpc_message;
    int rpc_max_inflight;
    int port;
    int max_connections;
};

/* Routes that are not service methods: the RPC upgrade, the status page. */
#define HTTP_RPC SVC_N_METHODS
#define HTTP_PAGE (SVC_N_METHODS + 1)

/* The status page (src/http/status.html, embedded at build time). */
extern const unsigned char http_status_page[];
extern const size_t http_status_page_len;

struct route {
    const char *path;
    int id; /* enum svc_method_id, HTTP_RPC or HTTP_PAGE */
    const char *method; /* the one HTTP method it answers */
};

/* What every response to one request carries besides its status and body. */
struct http_out {
    struct MHD_Connection *c;
    char allow_origin[GUARD_ORIGIN_MAX]; /* Access-Control-Allow-Origin, "" = none */
    bool vary;                           /* Vary: Origin */
    bool close;                          /* Connection: close */
    bool same_origin;                    /* no Origin, or a page corral served */
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

    struct svc_call *call; /* inference (service/call.c) */
    bool stream;
    bool stream_started; /* the 200 and the event stream are queued */
    bool ended;          /* the call's end was taken */

    /* streaming */
    struct buf sse;
    size_t sse_off;
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

/* Queue a service result: its JSON or text with its status, or its error. Frees res. */
enum MHD_Result http__reply_result(const struct http_out *o, struct svc_result *res);
/* The service's view of this transport (connections, responses by status). */
void http__stats(void *ctx, struct svc_http_stats *out);

/* ------------------------------------------------------------ server.c */

/* The API key rules (Authorization: Bearer or x-api-key). */
bool http__authorized(struct http_server *s, struct MHD_Connection *c);
/* The admin rules: CORRAL_OK, or the status to refuse with. */
enum corral_status http__admin_allowed(struct http_server *s, struct MHD_Connection *c);
bool http__is_loopback(struct MHD_Connection *c);

/* ------------------------------------------------------------ infer.c */

/* Start an inference call (chat, completion, embedding) and park it. */
enum MHD_Result http__inference(struct http_server *s, struct conn *k, const struct svc_method *m);
/* Resumed after the engine moved: send the whole response or start the stream. */
enum MHD_Result http__inference_resume(struct conn *k);

/* ------------------------------------------------------------ upgrade.c */

/* GET /v1/rpc: upgrade to a WebSocket carrying JSON-RPC (rpc/ws.h). */
enum MHD_Result http__rpc_upgrade(struct http_server *s, struct conn *k);
/* Close every WebSocket session (before the daemon stops). */
void http__rpc_close_all(struct http_server *s);

#endif
