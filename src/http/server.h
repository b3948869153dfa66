/* server.h - the HTTP transport: routing, auth, browser rules, limits,
 * SSE streaming, graceful shutdown.
 *
 * Built on libmicrohttpd's event loop (epoll, a small thread pool). The
 * handlers are the service's (service/service.h); this layer frames them.
 * Handlers never block on inference: a request waiting for the engine
 * suspends its connection, and the engine's wake-up resumes it. GET
 * /v1/rpc upgrades to a WebSocket carrying JSON-RPC (rpc/ws.h).
 */
#ifndef CORRAL_HTTP_SERVER_H
#define CORRAL_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct http_server;
struct service;

struct http_server_params {
    const char *host;    /* address to bind, e.g. "127.0.0.1", "0.0.0.0", "::1" */
    int port;            /* 0 = any free port (see http_server_port) */
    int listen_fd;       /* > 0: a listening socket to serve instead (socket activation); else bind host:port */
    int threads;         /* event-loop threads */
    size_t body_limit;   /* largest request body accepted, bytes */
    const char *api_key; /* NULL or "" = no authentication */
    const char *admin_api_key; /* guards /admin; NULL or "" = loopback clients only */
    struct service *svc; /* the handlers (service/service.h); borrowed, must outlive the server */
    const char *cors_origins;  /* browser origins granted CORS (config list); NULL = none */
    const char *allowed_hosts; /* Host names accepted besides local ones (config list); NULL = none */
    int64_t header_timeout_ms; /* a request's headers must arrive within this */
    int64_t body_timeout_ms;   /* longest pause between body reads */
    int max_connections;       /* 0 = auto; kept below the file-descriptor limit */
    int max_connections_per_ip; /* 0 = no limit */
    size_t request_memory;     /* request bytes held at once (at least body_limit) */
    size_t max_rpc_message;    /* largest JSON-RPC message over WebSocket; 0 = body_limit */
    int rpc_max_inflight;      /* JSON-RPC calls in flight per connection; 0 = 16 */
};

/* Bind and start serving. NULL with *err filled if the address cannot be
 * bound or the library fails to start. */
struct http_server *http_server_start(const struct http_server_params *p, struct corral_err *err);
/* The port actually bound. */
int http_server_port(const struct http_server *s);
/* Begin a graceful shutdown (after service_drain): close the listener, so
 * new connections are refused; new requests on open connections get 503,
 * Retry-After and Connection: close; requests in flight go on. */
void http_server_drain(struct http_server *s);
/* Close every connection and free the server. Engines must have been stopped
 * first (pool_stop), so no connection stays suspended. */
void http_server_stop(struct http_server *s);

#endif
