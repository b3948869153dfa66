/* stdio.c - JSON-RPC over stdin/stdout (see stdio.h).
 *
 * DESIGN
 * One thread (the caller's) polls stdin, the session's eventfd (engine
 * wake-ups), the signalfd and, while output is pending, stdout (made
 * non-blocking when it is a pipe or a socket, so a reader that stops
 * reading cannot block the loop: the output queue then fills and the
 * session stops taking engine output, and the engines cancel calls whose
 * buffers overflow). Input is cut at newlines; a line longer than
 * max_message is dropped up to its newline and answered with an error.
 */
#include "rpc/stdio.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rpc/session.h"
#include "service/service.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/time.h"

#define STDIO_READ_CHUNK 65536
/* After the deadline's cancel, how long the cancelled calls have to send their errors. */
#define STDIO_CANCEL_GRACE_MS 2000

struct rpc_stdio {
    const struct rpc_stdio_params *p;
    struct rpc_session *rpc;
    int wake_fd;
    struct buf line;
    bool discarding; /* inside a line that is over max_message */
    bool eof;
    char *out;       /* the message being written (with its newline) */
    size_t out_len, out_off;
    bool out_broken; /* stdout closed: nothing more can be written */
};

static void stdio__wake(void *ctx) {
    struct rpc_stdio *x = ctx;
    uint64_t one = 1;
    ssize_t n = write(x->wake_fd, &one, sizeof one);
    (void)n;
}

/* Take the bytes read: complete lines go to the session. */
static void stdio__input(struct rpc_stdio *x, const char *data, size_t n) {
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl ? (size_t)(nl - data) : n;
        if (!x->discarding && buf_append(&x->line, data, take) != 0) {
            x->discarding = true;
            buf_reset(&x->line);
        }
        data += take;
        n -= take;
        if (!nl) return;
        data++;
        n--;
        if (x->discarding) {
            struct corral_err err;
            corral_err_set(&err, CORRAL_TOO_LARGE, NULL, "a message is over the limit of %zu bytes (max_rpc_message)",
                           x->p->max_message);
            rpc_session_refuse(x->rpc, &err);
            x->discarding = false;
        } else {
            size_t len = x->line.len;
            while (len > 0 && (x->line.data[len - 1] == '\r' || x->line.data[len - 1] == ' ' ||
                               x->line.data[len - 1] == '\t'))
                len--;
            if (len > 0) rpc_session_input(x->rpc, x->line.data, len);
        }
        buf_reset(&x->line);
    }
}

/* Write what can be written now. */
static void stdio__flush(struct rpc_stdio *x) {
    while (!x->out_broken) {
        if (!x->out) {
            size_t len;
            char *t = rpc_session_pop(x->rpc, &len);
            if (!t) return;
            char *o = realloc(t, len + 1);
            if (!o) {
                free(t);
                log_warn("rpc: out of memory; a response was dropped");
                continue;
            }
            o[len] = '\n';
            x->out = o;
            x->out_len = len + 1;
            x->out_off = 0;
        }
        ssize_t n = write(x->p->out_fd, x->out + x->out_off, x->out_len - x->out_off);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            log_warn("rpc: stdout closed (%s); cancelling the calls in flight", strerror(errno));
            x->out_broken = true;
            rpc_session_cancel_all(x->rpc);
            return;
        }
        x->out_off += (size_t)n;
        if (x->out_off == x->out_len) {
            free(x->out);
            x->out = NULL;
        }
    }
}

static bool stdio__pending(struct rpc_stdio *x) { return !x->out_broken && (x->out || rpc_session_queued(x->rpc) > 0); }

/* A signal: the first stops reading (and drains the service), a second exits. */
static void stdio__signal(struct rpc_stdio *x) {
    struct signalfd_siginfo si;
    if (read(x->p->signal_fd, &si, sizeof si) != (ssize_t)sizeof si) return;
    if (x->eof) {
        log_warn("signal %u again: exiting now", si.ssi_signo);
        fflush(stderr);
        _exit(128 + (int)si.ssi_signo);
    }
    log_info("signal %u: shutting down (a second signal stops at once)", si.ssi_signo);
    x->eof = true;
}

static void stdio__loop(struct rpc_stdio *x) {
    char *chunk = malloc(STDIO_READ_CHUNK);
    if (!chunk) return;
    int64_t deadline = 0, cancelled_at = 0;
    for (;;) {
        rpc_session_pump(x->rpc);
        stdio__flush(x);
        int64_t now = time_now_ms();
        if (x->eof) {
            if (!deadline) {
                service_drain(x->p->svc);
                deadline = now + x->p->shutdown_timeout_ms;
                if (rpc_session_inflight(x->rpc) > 0)
                    log_info("input closed: %d call(s) in flight, up to %lld ms", rpc_session_inflight(x->rpc),
                             (long long)x->p->shutdown_timeout_ms);
            }
            if (rpc_session_inflight(x->rpc) == 0 && !stdio__pending(x)) break;
            if (!cancelled_at && now >= deadline) {
                log_warn("shutdown_timeout reached: cancelling %d call(s)", rpc_session_inflight(x->rpc));
                rpc_session_cancel_all(x->rpc);
                cancelled_at = now;
            }
            if (cancelled_at && now - cancelled_at > STDIO_CANCEL_GRACE_MS) break;
        }
        bool read_more = !x->eof && rpc_session_queued(x->rpc) < (8u << 20);
        struct pollfd pf[4] = {
            {.fd = read_more ? x->p->in_fd : -1, .events = POLLIN},
            {.fd = x->wake_fd, .events = POLLIN},
            {.fd = x->p->signal_fd, .events = POLLIN},
            {.fd = stdio__pending(x) ? x->p->out_fd : -1, .events = POLLOUT},
        };
        int rc = poll(pf, 4, x->eof ? 50 : 1000);
        if (rc < 0 && errno != EINTR) break;
        if (pf[1].revents & POLLIN) {
            uint64_t v;
            ssize_t n = read(x->wake_fd, &v, sizeof v);
            (void)n;
        }
        if (pf[2].revents & POLLIN) stdio__signal(x);
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(x->p->in_fd, chunk, STDIO_READ_CHUNK);
            if (n > 0) stdio__input(x, chunk, (size_t)n);
            else if (n == 0 || (errno != EINTR && errno != EAGAIN)) x->eof = true;
        }
    }
    free(chunk);
}

int rpc_stdio_run(const struct rpc_stdio_params *p) {
    struct rpc_stdio x = {.p = p};
    x.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct rpc_session_params rp = {.svc = p->svc, .transport = SVC_STDIO, .can_infer = true, .can_admin = true,
                                    .max_inflight = p->max_inflight, .fd = -1, .wake = stdio__wake, .wake_ctx = &x};
    if (x.wake_fd < 0 || !(x.rpc = rpc_session_new(&rp))) {
        if (x.wake_fd >= 0) close(x.wake_fd);
        return 1;
    }
    buf_init(&x.line, p->max_message);
    struct stat st;
    if (fstat(p->out_fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
        int fl = fcntl(p->out_fd, F_GETFL);
        if (fl >= 0) fcntl(p->out_fd, F_SETFL, fl | O_NONBLOCK);
    }
    stdio__loop(&x);
    rpc_session_free(x.rpc);
    free(x.out);
    buf_free(&x.line);
    close(x.wake_fd);
    return 0;
}
