/* server.c - the HTTP transport on libmicrohttpd: the daemon, the access
 * handler and the rules every request passes before it is dispatched.
 *
 * DESIGN
 * libmicrohttpd runs its own poll threads. The access handler is called
 * once when headers arrive (Host, Origin, route, method, auth, content type
 * and declared size are checked then, so a refused request costs no body),
 * once per body chunk (buffered up to body_limit, counted against the
 * request-memory bound) and once at the end, when the request is dispatched
 * (info.c answers at once; infer.c parks the connection on the engine).
 *
 * Half-closed clients. The library's epoll mode is edge-triggered and,
 * after a read shorter than its buffer, takes the socket as drained
 * (connection.c, recv_param_adapter, 0.9.75): a client's FIN that arrives
 * with the last bytes of an unfinished request is never read, and the
 * connection waits for the idle timeout. Its poll mode reads the end of
 * the stream, but accepts one connection per pass over all of them: 2,000
 * connections opened at once (wrk on /health) saw p99 776 ms and 298
 * timeouts, against 54 ms and none with epoll, at the same 76-79k
 * requests/s. So epoll stays, and conns.c's watchdog looks for POLLRDHUP
 * on connections still waiting for request bytes.
 *
 * Header and body deadlines, per-address counts and the request-memory
 * bound live in conns.c; the connection's record is its socket context.
 * A suspended connection is never looked at by the library, so the engine
 * polls the client socket itself (engine_req_set_fd) and cancels requests
 * whose client hung up; the completion callback cancels too, and drops the
 * transport's reference and the model pin.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/internal.h"
#include "pool/pool.h"
#include "util/log.h"

/* Bytes of an over-limit body read and dropped before the connection is closed. */
#define HTTP_DISCARD_MAX (64u << 20)
/* Idle time after which the library closes a connection (keep-alive, or a
 * client that stopped reading its response). */
#define HTTP_IDLE_TIMEOUT_S 60
/* Connections at most when max_connections is auto. */
#define HTTP_AUTO_CONNECTIONS 4096
/* File descriptors kept for everything but client connections (models,
 * child servers' pipes, upstream sockets, logs). */
#define HTTP_FD_RESERVE 256

static const struct route http__routes[] = {
    {"/health", SVC_HEALTH, "GET"},
    {"/v1/health", SVC_HEALTH, "GET"},
    {"/capacity", SVC_CAPACITY, "GET"},
    {"/metrics", SVC_METRICS, "GET"},
    {"/v1/models", SVC_MODELS, "GET"},
    {"/models", SVC_MODELS, "GET"},
    {"/v1/chat/completions", SVC_CHAT, "POST"},
    {"/chat/completions", SVC_CHAT, "POST"},
    {"/v1/completions", SVC_COMPLETIONS, "POST"},
    {"/completions", SVC_COMPLETIONS, "POST"},
    {"/v1/embeddings", SVC_EMBEDDINGS, "POST"},
    {"/embeddings", SVC_EMBEDDINGS, "POST"},
    {"/admin/models", SVC_ADMIN_MODELS, "GET"},
    {"/admin/pool", SVC_ADMIN_POOL, "GET"},
    {"/admin/models/load", SVC_ADMIN_LOAD, "POST"},
    {"/admin/models/unload", SVC_ADMIN_UNLOAD, "POST"},
    {"/admin/models/register", SVC_ADMIN_REGISTER, "POST"},
    {"/v1/rpc", HTTP_RPC, "GET"},
    {"/v1/status", SVC_STATUS, "GET"},
    {"/", HTTP_PAGE, "GET"},
};

static const struct route http__route_model = {"/v1/models/", SVC_MODEL, "GET"};

/* A route's access rules are its method's (the RPC upgrade checks its own). */
static bool http__route_auth(const struct route *rt) { return rt->id < SVC_N_METHODS && svc_method(rt->id)->auth; }
static bool http__route_admin(const struct route *rt) { return rt->id < SVC_N_METHODS && svc_method(rt->id)->admin; }

/* The status page: no data in it (it asks /v1/status, with the API key
 * when one is set), nothing it loads from elsewhere. */
static enum MHD_Result http__page(const struct http_out *o) {
    struct MHD_Response *r = MHD_create_response_from_buffer(http_status_page_len, (void *)http_status_page,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    http__headers(o, r, "text/html; charset=utf-8");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                            "frame-ancestors 'none'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    enum MHD_Result ret = http__queue(o, 200, r);
    MHD_destroy_response(r);
    return ret;
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

/* The key in Authorization: Bearer or in x-api-key (so one request can
 * carry the admin key in the first and the API key in the second). */
bool http__authorized(struct http_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *b = http__bearer(c), *x = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    bool ok = b && http__consttime_eq(b, s->api_key);
    ok |= x && http__consttime_eq(x, s->api_key);
    return ok;
}

/* The client's address and its length, or NULL. */
static const struct sockaddr *http__client_addr(struct MHD_Connection *c, socklen_t *len) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    *len = !sa ? 0 : sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    return sa;
}

bool http__is_loopback(struct MHD_Connection *c) {
    socklen_t len;
    const struct sockaddr *sa = http__client_addr(c, &len);
    return conns_addr_loopback(sa, len);
}

/* Admin access: the admin key when one is set, else loopback clients only.
 * Returns CORRAL_OK or the status to answer with. */
enum corral_status http__admin_allowed(struct http_server *s, struct MHD_Connection *c) {
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

/* The record conns.c keeps for c's connection, or NULL. */
static struct conn_rec *http__rec(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static const char *http__header(struct MHD_Connection *c, const char *name) {
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* true when the request says a body follows. */
static bool http__has_body(struct MHD_Connection *c) {
    const char *cl = http__header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > 0) return true;
    return http__header(c, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

/* ------------------------------------------------------------ the rules */

/* While draining, every route but /health is refused. */
static bool http__draining(struct http_server *s, const struct route *rt) {
    return service_draining(s->svc) && rt->id != SVC_HEALTH;
}

static enum MHD_Result http__shutting_down(struct http_out *o) {
    o->close = true;
    struct corral_err err;
    svc_shutting_down(&err);
    return http__reply_error(o, &err, NULL);
}

/* OPTIONS: a CORS preflight for a listed origin, else the methods. */
static enum MHD_Result http__options(struct http_server *s, struct http_out *o, const struct route *rt,
                                     const char *origin, const char *host) {
    char allow[GUARD_ORIGIN_MAX];
    bool vary = false;
    enum guard_origin g = guard_origin(&s->guard, origin, host, rt && http__route_admin(rt), allow, &vary);
    if (g == GUARD_FORBIDDEN)
        return http__fail(o, CORRAL_FORBIDDEN, NULL, "origin_not_allowed", NULL,
                          "requests from the web origin '%.200s' are not allowed (see cors_origins)", origin);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, rt ? rt->method : "GET, POST, OPTIONS");
    if (g == GUARD_CORS) {
        char hdrs[512];
        snprintf(o->allow_origin, sizeof o->allow_origin, "%s", allow);
        o->vary = vary;
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                guard_allow_headers(http__header(o->c, "Access-Control-Request-Headers"), hdrs,
                                                    sizeof hdrs));
        MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    }
    http__headers(o, r, NULL);
    enum MHD_Result ret = http__queue(o, MHD_HTTP_NO_CONTENT, r);
    MHD_destroy_response(r);
    return ret;
}

/* Everything a request must pass once its headers are in. Returns MHD_YES
 * with *ok set when it may go on, else the refusal's result. */
static enum MHD_Result http__admit(struct http_server *s, struct http_out *o, const struct route *rt,
                                   const char *url, const char *method, bool *ok) {
    struct MHD_Connection *c = o->c;
    *ok = false;
    const char *host = http__header(c, MHD_HTTP_HEADER_HOST);
    if (!guard_host_ok(&s->guard, host))
        return http__fail(o, CORRAL_FORBIDDEN, NULL, "host_not_allowed", NULL,
                          "the Host '%.200s' is not one this server answers to; a name other than localhost must "
                          "be listed in allowed_hosts",
                          host ? host : "");
    const char *origin = http__header(c, "Origin");
    if (strcmp(method, "OPTIONS") == 0) return http__options(s, o, rt, origin, host);
    if (!rt) return http__fail(o, CORRAL_NOT_FOUND, NULL, NULL, NULL, "no such endpoint: %.200s", url);
    bool head_ok = strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0;
    bool health = rt->id == SVC_HEALTH && (strcmp(method, "GET") == 0 || head_ok);
    enum guard_origin g = guard_origin(&s->guard, origin, host, http__route_admin(rt), o->allow_origin, &o->vary);
    if (g == GUARD_FORBIDDEN && !health)
        return http__fail(o, CORRAL_FORBIDDEN, NULL, "origin_not_allowed", NULL,
                          http__route_admin(rt) ? "the admin API does not answer pages from other origins ('%.200s')"
                                    : "requests from the web origin '%.200s' are not allowed (see cors_origins)",
                          origin);
    if (g == GUARD_FORBIDDEN) o->allow_origin[0] = '\0';
    o->same_origin = g != GUARD_CORS;
    if (strcmp(method, rt->method) != 0 && !head_ok) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s is not allowed here; use %s", method, rt->method);
        return http__fail(o, CORRAL_METHOD_NOT_ALLOWED, NULL, NULL, rt->method, "%s", msg);
    }
    if (http__draining(s, rt)) return http__shutting_down(o);
    if (conns_over_limit(s->conns, http__rec(c))) {
        o->close = true;
        return http__fail(o, CORRAL_OVERLOADED, NULL, "too_many_connections", NULL, "%s",
                          "this client address holds more connections than max_connections_per_ip; "
                          "reuse connections or retry later");
    }
    if (http__route_admin(rt)) {
        enum corral_status ast = http__admin_allowed(s, c);
        if (ast == CORRAL_UNAUTHORIZED)
            return http__fail(o, ast, NULL, NULL, NULL, "%s", "invalid or missing admin API key");
        if (ast != CORRAL_OK)
            return http__fail(o, ast, NULL, NULL, NULL, "%s",
                              "the admin API answers loopback clients only unless admin_api_key is set");
        /* a page cannot send application/json cross-origin without a
         * preflight, which /admin never grants */
        if (strcmp(rt->method, "POST") == 0 && !guard_is_json(http__header(c, MHD_HTTP_HEADER_CONTENT_TYPE)))
            return http__fail(o, CORRAL_UNSUPPORTED_MEDIA, NULL, NULL, NULL, "%s",
                              "admin requests must be sent with Content-Type: application/json");
    }
    if (http__route_auth(rt) && !http__authorized(s, c))
        return http__fail(o, CORRAL_UNAUTHORIZED, NULL, NULL, NULL, "%s",
                          "invalid or missing API key (send 'Authorization: Bearer <key>')");
    const char *cl = http__header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end = NULL;
        unsigned long long v = strtoull(cl, &end, 10);
        if (end && *end == '\0' && v > s->body_limit) {
            char msg[160];
            snprintf(msg, sizeof msg, "request body of %llu bytes is over the limit of %zu bytes", v, s->body_limit);
            return http__fail(o, CORRAL_TOO_LARGE, NULL, NULL, NULL, "%s", msg);
        }
    }
    *ok = true;
    return MHD_YES;
}

/* ------------------------------------------------------------ the handler */

/* Take a body chunk: buffer it within body_limit and the request-memory
 * bound, or drop it (the answer is then 413 or 503 at the end). */
static enum MHD_Result http__body_chunk(struct http_server *s, struct conn *k, const char *data, size_t n) {
    conns_body(s->conns, k->rec);
    k->body_seen += n;
    if (!k->too_large && !k->no_memory) {
        if (!conns_mem_take(s->conns, n)) {
            k->no_memory = true;
        } else {
            k->mem_held += n;
            if (buf_append(&k->body, data, n) != 0) k->too_large = true;
        }
        if (k->too_large || k->no_memory) {
            buf_free(&k->body);
            conns_mem_give(s->conns, k->mem_held);
            k->mem_held = 0;
        }
    }
    /* A refused body is read and dropped so the client gets its answer
     * (the library cannot answer mid-body); one far over the limit is cut
     * off by closing the connection. */
    if ((k->too_large || k->no_memory) && k->body_seen > HTTP_DISCARD_MAX && k->body_seen > 4 * s->body_limit)
        return MHD_NO;
    return MHD_YES;
}

static enum MHD_Result http__dispatch(struct http_server *s, struct conn *k, const char *url) {
    const struct http_out *o = &k->out;
    conns_busy(s->conns, k->rec);
    if (k->too_large) {
        char msg[160];
        snprintf(msg, sizeof msg, "request body is over the limit of %zu bytes", s->body_limit);
        return http__fail(o, CORRAL_TOO_LARGE, NULL, NULL, NULL, "%s", msg);
    }
    if (k->no_memory)
        return http__fail(o, CORRAL_OVERLOADED, NULL, "server_overloaded", NULL, "%s",
                          "the server holds as many request bytes as request_memory allows; retry later");
    if (http__draining(s, k->route)) return http__shutting_down(&k->out); /* its body came in during the drain */
    service_count(s->svc, SVC_HTTP);
    if (k->route->id == HTTP_RPC) return http__rpc_upgrade(s, k);
    if (k->route->id == HTTP_PAGE) return http__page(o);
    const struct svc_method *m = svc_method(k->route->id);
    if (m->infer) return http__inference(s, k, m);
    struct svc_result res;
    svc_simple(s->svc, m, m->id == SVC_MODEL ? url + strlen(http__route_model.path) : NULL, k->body.data,
               k->body.len, &res);
    return http__reply_result(o, &res);
}

static enum MHD_Result http__handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                     const char *version, const char *upload_data, size_t *upload_data_size,
                                     void **con_cls) {
    (void)version;
    struct http_server *s = cls;
    struct conn *k = *con_cls;

    if (!k) {
        /* headers are in: every rule first, so a refused request costs no body */
        struct http_out o = {.c = c, .close = service_draining(s->svc)};
        bool known = false, ok = false;
        const struct route *rt = http__find_route(url, &known);
        enum MHD_Result ret = http__admit(s, &o, rt, url, method, &ok);
        if (!ok) return ret;
        k = calloc(1, sizeof *k);
        if (!k) return MHD_NO;
        k->srv = s;
        k->out = o;
        k->rec = http__rec(c);
        k->route = rt;
        buf_init(&k->body, s->body_limit);
        service_enter(s->svc);
        k->counted = true;
        *con_cls = k;
        if (http__has_body(c)) conns_body(s->conns, k->rec);
        else conns_busy(s->conns, k->rec);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return http__body_chunk(s, k, upload_data, n);
    }
    if (k->dispatched) return k->call ? http__inference_resume(k) : MHD_YES; /* resumed by the engine */
    k->dispatched = true;
    return http__dispatch(s, k, url);
}

static void http__completed(void *cls, struct MHD_Connection *c, void **con_cls,
                            enum MHD_RequestTerminationCode toe) {
    struct http_server *s = cls;
    conns_idle(s->conns, http__rec(c));
    struct conn *k = *con_cls;
    if (!k) return;
    *con_cls = NULL;
    if (k->call) {
        if (!k->ended && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            log_info("request %s: client went away; cancelled", svc_call_id(k->call));
        svc_call_free(k->call);
    }
    conns_mem_give(s->conns, k->mem_held);
    buf_free(&k->body);
    buf_free(&k->sse);
    if (k->counted) service_leave(s->svc);
    free(k);
}

/* The library's connection start and end: the record conns.c keeps. */
static void http__notify_conn(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe) {
    struct http_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        socklen_t len;
        const struct sockaddr *sa = http__client_addr(c, &len);
        *socket_context = fd ? conns_open(s->conns, fd->connect_fd, sa, len) : NULL;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        conns_close(s->conns, *socket_context);
        *socket_context = NULL;
    }
}

/* A request line arrived (on a new or a kept-alive connection). */
static void *http__uri_seen(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)uri;
    struct http_server *s = cls;
    conns_headers(s->conns, http__rec(c));
    return NULL; /* the handler's *con_cls starts NULL */
}

static enum MHD_Result http__accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    struct http_server *s = cls;
    return conns_may_accept(s->conns, addr, addrlen) ? MHD_YES : MHD_NO;
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

/* Connections at most: the configured number (0 = auto), kept below the
 * file-descriptor limit. */
static int http__max_connections(int want) {
    struct rlimit rl;
    long avail = 1 << 20;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) avail = (long)rl.rlim_cur - HTTP_FD_RESERVE;
    if (avail < 16) avail = 16;
    long n = want > 0 ? want : HTTP_AUTO_CONNECTIONS;
    if (n > avail) {
        if (want > 0)
            log_warn("max_connections %d is more than the file-descriptor limit allows; using %ld "
                     "(raise `ulimit -n`)", want, avail);
        n = avail;
    }
    return (int)n;
}

struct http_server *http_server_start(const struct http_server_params *p, struct corral_err *err) {
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        return NULL;
    }
    s->quiesced_fd = -1;
    s->svc = p->svc;
    s->body_limit = p->body_limit;
    s->max_rpc_message = p->max_rpc_message ? p->max_rpc_message : p->body_limit;
    s->rpc_max_inflight = p->rpc_max_inflight > 0 ? p->rpc_max_inflight : 16;
    pthread_mutex_init(&s->ws_mu, NULL);
    s->api_key = p->api_key && p->api_key[0] ? strdup(p->api_key) : NULL;
    s->admin_api_key = p->admin_api_key && p->admin_api_key[0] ? strdup(p->admin_api_key) : NULL;
    s->max_connections = http__max_connections(p->max_connections);
    /* a passed socket: the guard judges Host names by the address it is bound to */
    char bound[INET6_ADDRSTRLEN] = "";
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int family = AF_UNSPEC;
    if (p->listen_fd > 0 && getsockname(p->listen_fd, (struct sockaddr *)&ss, &sl) == 0) {
        family = ss.ss_family;
        if (family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, bound, sizeof bound);
        else if (family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, bound, sizeof bound);
    }
    struct guard_params gp = {.cors_origins = p->cors_origins, .allowed_hosts = p->allowed_hosts,
                              .bind_host = bound[0] ? bound : p->host};
    struct conns_params cp = {
        .header_timeout_ms = p->header_timeout_ms > 0 ? p->header_timeout_ms : 10000,
        .body_timeout_ms = p->body_timeout_ms > 0 ? p->body_timeout_ms : 30000,
        .per_ip = p->max_connections_per_ip,
        .mem_limit = p->request_memory > p->body_limit ? p->request_memory : p->body_limit,
    };
    if (guard_init(&s->guard, &gp) != 0 || !(s->conns = conns_new(&cp))) {
        corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        goto fail;
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    int gai = p->listen_fd > 0 ? 0 : getaddrinfo(p->host, port, &hints, &ai);
    if (p->listen_fd <= 0 && (gai != 0 || !ai)) {
        corral_err_set(err, CORRAL_CONFIG, NULL, "cannot resolve host '%s': %s", p->host, gai_strerror(gai));
        goto fail;
    }
    /* before the first request can ask for it */
    service_set_http_stats(s->svc, http__stats, s);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_TURBO | MHD_USE_ITC | MHD_ALLOW_UPGRADE;
    if ((ai ? ai->ai_family : family) == AF_INET6) flags |= MHD_USE_IPv6;
    /* where to listen: the address, or the passed socket */
    struct MHD_OptionItem where[] = {
        ai ? (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr}
           : (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, p->listen_fd, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->d = MHD_start_daemon(flags, (uint16_t)p->port, http__accept, s, http__handler, s,
                            MHD_OPTION_ARRAY, where,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)p->threads,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
                            MHD_OPTION_NOTIFY_COMPLETED, http__completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, http__notify_conn, s,
                            MHD_OPTION_URI_LOG_CALLBACK, http__uri_seen, s,
                            MHD_OPTION_EXTERNAL_LOGGER, http__mhd_log, NULL,
                            MHD_OPTION_END);
    if (ai) freeaddrinfo(ai);
    if (!s->d) {
        corral_err_set(err, CORRAL_CONFIG, NULL, "cannot listen on %s:%d (address in use or not available)", p->host,
                       p->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di && di->port ? di->port : p->port;
    if (family == AF_INET) s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (family == AF_INET6) s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return s;
fail:
    if (s->svc) service_set_http_stats(s->svc, NULL, NULL);
    conns_free(s->conns);
    guard_free(&s->guard);
    free(s->api_key);
    free(s->admin_api_key);
    pthread_mutex_destroy(&s->ws_mu);
    free(s);
    return NULL;
}

int http_server_port(const struct http_server *s) { return s->port; }

void http_server_drain(struct http_server *s) {
    if (!s || !s->d) return;
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    if (fd == MHD_INVALID_SOCKET) return;
    /* Stop listening now, so new connections are refused, but close the
     * descriptor only after MHD_stop_daemon: its worker threads may still be
     * taking it out of their epoll sets, and a number closed under them
     * could be reused by the next socket (ThreadSanitizer saw the race). */
    shutdown(fd, SHUT_RDWR);
    s->quiesced_fd = fd;
}

void http_server_stop(struct http_server *s) {
    if (!s) return;
    http__rpc_close_all(s); /* upgraded connections must be closed before the daemon stops */
    if (s->d) MHD_stop_daemon(s->d);
    if (s->quiesced_fd >= 0) close(s->quiesced_fd);
    service_set_http_stats(s->svc, NULL, NULL); /* nothing can ask any more */
    conns_free(s->conns);
    guard_free(&s->guard);
    free(s->api_key);
    free(s->admin_api_key);
    pthread_mutex_destroy(&s->ws_mu);
    free(s);
}
