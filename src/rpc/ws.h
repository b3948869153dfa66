/* ws.h - JSON-RPC over WebSocket (RFC 6455): the sessions of one server.
 *
 * The HTTP transport does the handshake (http/upgrade.c) and hands each
 * upgraded socket here. Framing is libwslay's: masking of client frames
 * enforced, fragmented messages joined, pings answered, close codes sent
 * (1000 normal, 1001 going away, 1002 protocol error, 1007 invalid UTF-8,
 * 1009 too big, 1011 internal error). Each session has its own thread,
 * which owns its socket, its wslay context and its rpc_session.
 */
#ifndef CORRAL_RPC_WS_H
#define CORRAL_RPC_WS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/error.h"

struct service;
struct ws_hub;

struct ws_hub_params {
    struct service *svc;
    size_t max_message; /* largest message received (1009 past it) */
    int max_inflight;   /* calls in flight per session */
    int max_sessions;   /* sessions at once */
};

struct ws_session_params {
    int fd;              /* the upgraded socket (not to be closed here: see release) */
    const char *extra;   /* bytes already read past the HTTP request */
    size_t n_extra;
    bool can_infer, can_admin, admin_keyed; /* as rpc_session_params */
    /* Give the socket back (the HTTP library closes it); called once, from
     * the session's thread, as the session ends. */
    void (*release)(void *ctx);
    void *release_ctx;
};

struct ws_hub *ws_hub_new(const struct ws_hub_params *p);
/* Start a session. CORRAL_OVERLOADED when max_sessions are open,
 * CORRAL_NOMEM/INTERNAL otherwise; on failure release is not called. */
enum corral_status ws_hub_add(struct ws_hub *h, const struct ws_session_params *p, struct corral_err *err);
/* Sessions open now. */
int ws_hub_count(struct ws_hub *h);
/* Close every session (1001, going away: their calls in flight are
 * cancelled), wait for them to end and free the hub. */
void ws_hub_free(struct ws_hub *h);

#endif
