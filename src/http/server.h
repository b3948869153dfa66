/* server.h - the HTTP transport: routing, auth, limits, SSE streaming.
 *
 * Built on libmicrohttpd's event loop (epoll, a small thread pool). Handlers
 * never block on inference: a request waiting for the engine suspends its
 * connection, and the engine's wake-up resumes it.
 */
#ifndef CORRAL_HTTP_SERVER_H
#define CORRAL_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"
#include "util/error.h"

struct http_server;

struct http_server_params {
    const char *host;    /* address to bind, e.g. "127.0.0.1", "0.0.0.0", "::1" */
    int port;            /* 0 = any free port (see http_server_port) */
    int threads;         /* event-loop threads */
    size_t body_limit;   /* largest request body accepted, bytes */
    const char *api_key; /* NULL or "" = no authentication */
    const char *admin_api_key; /* guards /admin; NULL or "" = loopback clients only */
    struct pool *pool;   /* borrowed; must outlive the server */
    struct capacity *gate; /* borrowed, for /capacity and /metrics; NULL = none */
    int64_t queue_timeout_ms; /* default queue-wait bound (X-Corral-Max-Wait overrides); -1 = none */
};

/* Bind and start serving. NULL with *err filled if the address cannot be
 * bound or the library fails to start. */
struct http_server *http_server_start(const struct http_server_params *p, struct corral_err *err);
/* The port actually bound. */
int http_server_port(const struct http_server *s);
/* Stop accepting new connections (in-flight ones go on). */
void http_server_quiesce(struct http_server *s);
/* Close every connection and free the server. Engines must have been stopped
 * first (pool_stop), so no connection stays suspended. */
void http_server_stop(struct http_server *s);

#endif
