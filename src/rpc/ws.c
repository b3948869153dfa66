/* ws.c - WebSocket sessions on libwslay (see ws.h).
 *
 * DESIGN
 * One thread per session polls two descriptors: the socket (made
 * non-blocking; wslay reads and writes it through the callbacks below) and
 * an eventfd that the engines' wake-ups write to. Each pass feeds wslay
 * what the socket has, runs the session's pump, moves the session's
 * outgoing messages into wslay while it holds less than WS_OUT_QUEUE bytes,
 * and sends what wslay has queued. Calls in flight poll the socket for
 * hang-ups themselves (the engine's POLLRDHUP check), so a client that
 * leaves frees its slots within one decode step even while its thread
 * waits. A session with no traffic is pinged every WS_PING_MS and closed
 * when nothing (not even a pong) arrived for WS_DEAD_MS.
 */
#include "rpc/ws.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <wslay/wslay.h>

#include "rpc/session.h"
#include "service/service.h"
#include "util/log.h"
#include "util/time.h"
#include "util/utf8.h"

/* Bytes handed to wslay and not yet sent, at most (beyond it, messages wait in the session). */
#define WS_OUT_QUEUE (1u << 20)
/* Bytes of answers waiting in the session past which the socket is not read. */
#define WS_SESSION_OUT_MAX (8u << 20)
#define WS_PING_MS 30000
#define WS_DEAD_MS 75000
/* After a close frame went out, how long the peer has to answer it. */
#define WS_CLOSE_WAIT_MS 2000

struct ws_session {
    struct ws_hub *hub;
    struct ws_session *next, *prev;
    int fd;
    int wake_fd;
    char *extra;
    size_t n_extra, extra_off;
    struct ws_session_params p;
    wslay_event_context_ptr ctx;
    struct rpc_session *rpc;
    int64_t last_rx_ms;
    int64_t last_ping_ms;
    int64_t close_sent_ms;
    bool peer_gone;
};

struct ws_hub {
    struct ws_hub_params p;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ws_session *sessions;
    int n;
    bool stopping;
};

/* ------------------------------------------------------------ wslay callbacks */

static ssize_t ws__recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user) {
    (void)flags;
    struct ws_session *w = user;
    if (w->extra_off < w->n_extra) {
        size_t n = w->n_extra - w->extra_off;
        if (n > len) n = len;
        memcpy(buf, w->extra + w->extra_off, n);
        w->extra_off += n;
        return (ssize_t)n;
    }
    ssize_t n = recv(w->fd, buf, len, 0);
    if (n > 0) {
        w->last_rx_ms = time_now_ms();
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
        w->peer_gone = true;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
}

static ssize_t ws__send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user) {
    struct ws_session *w = user;
    /* a frame's header and payload come as two calls: MSG_MORE keeps them in one segment */
    ssize_t n = send(w->fd, data, len, MSG_NOSIGNAL | (flags & WSLAY_MSG_MORE ? MSG_MORE : 0));
    if (n >= 0) return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
        w->peer_gone = true;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
}

static void ws__on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user) {
    struct ws_session *w = user;
    if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME) return; /* ping, pong, close: wslay's */
    if (arg->opcode == WSLAY_TEXT_FRAME && !utf8_valid((const char *)arg->msg, arg->msg_length)) {
        static const char why[] = "text message is not valid UTF-8";
        wslay_event_queue_close(ctx, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, (const uint8_t *)why, sizeof why - 1);
        return;
    }
    rpc_session_input(w->rpc, (const char *)arg->msg, arg->msg_length);
}

/* ------------------------------------------------------------ the session thread */

static void ws__wake(void *ctx) {
    struct ws_session *w = ctx;
    uint64_t one = 1;
    ssize_t n = write(w->wake_fd, &one, sizeof one);
    (void)n; /* a full counter still wakes the thread */
}

static void ws__close(struct ws_session *w, uint16_t code, const char *why) {
    if (wslay_event_get_close_sent(w->ctx)) return;
    wslay_event_queue_close(w->ctx, code, (const uint8_t *)why, strlen(why));
    w->close_sent_ms = time_now_ms();
}

/* Hand the session's messages to wslay while it holds little. */
static void ws__feed(struct ws_session *w) {
    while (!wslay_event_get_close_sent(w->ctx) && wslay_event_get_queued_msg_length(w->ctx) < WS_OUT_QUEUE) {
        size_t len = 0;
        char *text = rpc_session_pop(w->rpc, &len);
        if (!text) return;
        struct wslay_event_msg m = {.opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *)text, .msg_length = len};
        int rc = wslay_event_queue_msg(w->ctx, &m); /* copies */
        free(text);
        if (rc != 0) {
            ws__close(w, WSLAY_CODE_INTERNAL_SERVER_ERROR, "out of memory");
            return;
        }
    }
}

static bool ws__hub_stopping(struct ws_hub *h) {
    pthread_mutex_lock(&h->mu);
    bool s = h->stopping;
    pthread_mutex_unlock(&h->mu);
    return s;
}

static void ws__run(struct ws_session *w) {
    w->last_rx_ms = w->last_ping_ms = time_now_ms();
    if (w->n_extra > 0 && wslay_event_recv(w->ctx) != 0) return;
    for (;;) {
        int64_t now = time_now_ms();
        if (ws__hub_stopping(w->hub)) ws__close(w, WSLAY_CODE_GOING_AWAY, "server shutting down");
        if (!wslay_event_get_close_sent(w->ctx)) {
            if (now - w->last_rx_ms > WS_DEAD_MS) {
                ws__close(w, WSLAY_CODE_GOING_AWAY, "no answer to pings");
            } else if (now - w->last_ping_ms >= WS_PING_MS && now - w->last_rx_ms >= WS_PING_MS) {
                struct wslay_event_msg ping = {.opcode = WSLAY_PING, .msg = NULL, .msg_length = 0};
                wslay_event_queue_msg(w->ctx, &ping);
                w->last_ping_ms = now;
            }
        }
        rpc_session_pump(w->rpc);
        ws__feed(w);
        if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx) != 0) return;
        if (w->peer_gone) return;
        bool want_read = wslay_event_want_read(w->ctx), want_write = wslay_event_want_write(w->ctx);
        if (!want_read && !want_write) return; /* closed both ways */
        /* a client that sends without reading its answers is read no further
         * until they have gone out (TCP holds the rest) */
        bool take = want_read && rpc_session_queued(w->rpc) < WS_SESSION_OUT_MAX;
        if (w->close_sent_ms && now - w->close_sent_ms > WS_CLOSE_WAIT_MS) return;
        struct pollfd pf[2] = {
            {.fd = w->fd, .events = (short)((take ? POLLIN : 0) | (want_write ? POLLOUT : 0))},
            {.fd = w->wake_fd, .events = POLLIN},
        };
        int rc = poll(pf, 2, 1000);
        if (rc < 0 && errno != EINTR) return;
        if (pf[1].revents & POLLIN) {
            uint64_t v;
            ssize_t n = read(w->wake_fd, &v, sizeof v);
            (void)n;
        }
        if (take && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (wslay_event_recv(w->ctx) != 0) return;
        }
        if (!take && (pf[0].revents & (POLLHUP | POLLERR))) return; /* gone while we held off reading */
    }
}

/* After the close frame: send our end of stream and read (and drop) what
 * the peer still sends until it closes too, so a peer caught mid-message
 * reads the close frame instead of a reset. At most WS_CLOSE_WAIT_MS. */
static void ws__linger(struct ws_session *w) {
    if (w->peer_gone || !wslay_event_get_close_sent(w->ctx)) return;
    shutdown(w->fd, SHUT_WR);
    int64_t end = time_now_ms() + WS_CLOSE_WAIT_MS;
    char sink[4096];
    for (int64_t now = time_now_ms(); now < end; now = time_now_ms()) {
        struct pollfd pf = {.fd = w->fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(end - now)) <= 0) return;
        ssize_t n = recv(w->fd, sink, sizeof sink, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return;
    }
}

static void ws__free(struct ws_session *w) {
    if (w->ctx) wslay_event_context_free(w->ctx);
    if (w->wake_fd >= 0) close(w->wake_fd);
    free(w->extra);
    free(w);
}

static void *ws__thread(void *arg) {
    struct ws_session *w = arg;
    ws__run(w);
    ws__linger(w);
    if (wslay_event_get_close_received(w->ctx) == 0 && !w->peer_gone && !wslay_event_get_close_sent(w->ctx))
        log_debug("rpc: websocket session ended without a close");
    rpc_session_free(w->rpc); /* cancels what is still in flight */
    w->rpc = NULL;
    w->p.release(w->p.release_ctx);
    struct ws_hub *h = w->hub;
    pthread_mutex_lock(&h->mu);
    if (w->prev) w->prev->next = w->next;
    else h->sessions = w->next;
    if (w->next) w->next->prev = w->prev;
    h->n--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    ws__free(w);
    return NULL;
}

/* ------------------------------------------------------------ the hub */

struct ws_hub *ws_hub_new(const struct ws_hub_params *p) {
    struct ws_hub *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->p = *p;
    if (h->p.max_sessions <= 0) h->p.max_sessions = 1024;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    return h;
}

int ws_hub_count(struct ws_hub *h) {
    pthread_mutex_lock(&h->mu);
    int n = h->n;
    pthread_mutex_unlock(&h->mu);
    return n;
}

enum corral_status ws_hub_add(struct ws_hub *h, const struct ws_session_params *p, struct corral_err *err) {
    struct ws_session *w = calloc(1, sizeof *w);
    if (!w) return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
    w->hub = h;
    w->p = *p;
    w->fd = p->fd;
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->n_extra) {
        w->extra = malloc(p->n_extra);
        if (w->extra) memcpy(w->extra, p->extra, p->n_extra);
        w->n_extra = p->n_extra;
    }
    struct wslay_event_callbacks cb = {.recv_callback = ws__recv, .send_callback = ws__send,
                                       .on_msg_recv_callback = ws__on_msg};
    struct rpc_session_params rp = {
        .svc = h->p.svc, .transport = SVC_WEBSOCKET, .can_infer = p->can_infer, .can_admin = p->can_admin,
        .admin_keyed = p->admin_keyed, .max_inflight = h->p.max_inflight, .fd = p->fd, .wake = ws__wake,
        .wake_ctx = w,
    };
    if (w->wake_fd < 0 || (p->n_extra && !w->extra) || wslay_event_context_server_init(&w->ctx, &cb, w) != 0 ||
        !(w->rpc = rpc_session_new(&rp))) {
        if (w->ctx) wslay_event_context_free(w->ctx);
        w->ctx = NULL;
        ws__free(w);
        return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
    }
    wslay_event_config_set_max_recv_msg_length(w->ctx, h->p.max_message);
    int fl = fcntl(w->fd, F_GETFL);
    if (fl >= 0) fcntl(w->fd, F_SETFL, fl | O_NONBLOCK);
    int one = 1; /* small messages, each answered at once: no Nagle delay */
    setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    pthread_mutex_lock(&h->mu);
    if (h->stopping || h->n >= h->p.max_sessions) {
        bool stopping = h->stopping;
        pthread_mutex_unlock(&h->mu);
        rpc_session_free(w->rpc);
        ws__free(w);
        return stopping ? corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "the server is shutting down")
                        : corral_err_set(err, CORRAL_OVERLOADED, NULL, "too many WebSocket sessions are open (%d)",
                                         h->p.max_sessions);
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t t;
    w->next = h->sessions;
    if (h->sessions) h->sessions->prev = w;
    h->sessions = w;
    h->n++;
    int rc = pthread_create(&t, &attr, ws__thread, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        h->sessions = w->next;
        if (w->next) w->next->prev = NULL;
        h->n--;
        pthread_mutex_unlock(&h->mu);
        rpc_session_free(w->rpc);
        ws__free(w);
        return corral_err_set(err, CORRAL_INTERNAL, NULL, "cannot start a session thread");
    }
    pthread_mutex_unlock(&h->mu);
    return CORRAL_OK;
}

void ws_hub_free(struct ws_hub *h) {
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    for (struct ws_session *w = h->sessions; w; w = w->next) ws__wake(w);
    while (h->n > 0) pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
