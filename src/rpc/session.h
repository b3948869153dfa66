/* session.h - one JSON-RPC connection (a WebSocket, or stdin/stdout):
 * its calls in flight, their streams and its outgoing messages.
 *
 * The session runs on its transport's thread only. The transport hands it
 * each message it reads (rpc_session_input), runs rpc_session_pump when
 * the session's wake function was called (an engine has news for a call)
 * or when it has written out what was queued, and writes out what
 * rpc_session_pop gives, in order. Methods and their results are the
 * service's (service/service.h); this layer only frames them.
 */
#ifndef CORRAL_RPC_SESSION_H
#define CORRAL_RPC_SESSION_H

#include <stdbool.h>
#include <stddef.h>

#include "service/service.h"

struct rpc_session;

struct rpc_session_params {
    struct service *svc;
    enum svc_transport transport;
    bool can_infer;   /* passed the API key rules */
    bool can_admin;   /* passed the admin rules */
    bool admin_keyed; /* an admin key is configured (refusals say "unauthorized", not "forbidden") */
    int max_inflight; /* calls in flight at once; past it the call is refused */
    size_t out_limit; /* bytes of outgoing messages queued before calls stop being read */
    int fd;           /* the client's socket (engines poll it for hang-ups); -1 = none */
    /* Run from any thread (under a request's lock) when a call has news:
     * must be cheap and must not call back into the session. */
    void (*wake)(void *ctx);
    void *wake_ctx;
};

struct rpc_session *rpc_session_new(const struct rpc_session_params *p);
/* Cancel every call in flight and free the session. */
void rpc_session_free(struct rpc_session *s);

/* Take one message (a request, a notification or a batch). */
void rpc_session_input(struct rpc_session *s, const char *msg, size_t len);
/* Answer a message that could not be read whole (too large). */
void rpc_session_refuse(struct rpc_session *s, const struct corral_err *err);
/* Move what the calls in flight have ready into the outgoing queue. */
void rpc_session_pump(struct rpc_session *s);
/* The next outgoing message (malloc'd; caller frees), or NULL. */
char *rpc_session_pop(struct rpc_session *s, size_t *len);
/* Bytes queued for output. */
size_t rpc_session_queued(const struct rpc_session *s);
/* Calls in flight (requests and notifications). */
int rpc_session_inflight(const struct rpc_session *s);
/* Cancel every call in flight (the client left, or the deadline passed);
 * they still end, with an error. */
void rpc_session_cancel_all(struct rpc_session *s);

#endif
