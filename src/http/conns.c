/* conns.c - connection tracking, per-address counts, phase deadlines and
 * the request-memory bound (see conns.h). */
#define _GNU_SOURCE /* POLLRDHUP */
#include "http/conns.h"

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util/log.h"
#include "util/time.h"

#define CONNS_BUCKETS 1024
/* The watchdog looks at deadlines at least this often. */
#define CONNS_TICK_MS 100

enum conn_phase { PH_HEADERS = 0, PH_BODY, PH_BUSY, PH_IDLE };

/* Connections of one client address. */
struct ip_count {
    unsigned char addr[16]; /* IPv6, IPv4 as ::ffff:a.b.c.d */
    bool loopback;
    int n;
    struct ip_count *next;
};

struct conn_rec {
    struct conn_rec *prev, *next;
    struct ip_count *ip; /* NULL for an address that is not IP */
    int fd;
    enum conn_phase phase;
    int64_t deadline_ms; /* 0 = none */
    bool shut;
    bool hup_seen; /* the peer's end of stream was seen by the last look, in this phase */
};

struct conns {
    struct conns_params p;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool stop;
    struct conn_rec *head;
    int n;
    int64_t timeouts;
    struct ip_count *buckets[CONNS_BUCKETS];
    _Atomic size_t mem;
    struct pollfd *pfd; /* watchdog scratch */
    struct conn_rec **who;
    size_t pfd_cap;
};

/* ------------------------------------------------------------ addresses */

static bool conns__key(const struct sockaddr *sa, socklen_t len, unsigned char key[16], bool *loopback) {
    if (!sa) return false;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else {
        return false;
    }
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char v6loop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    *loopback = memcmp(key, v6loop, 16) == 0 || (memcmp(key, v4mapped, 12) == 0 && key[12] == 127);
    return true;
}

bool conns_addr_loopback(const struct sockaddr *sa, socklen_t len) {
    unsigned char key[16];
    bool loop = false;
    return conns__key(sa, len, key, &loop) && loop;
}

static size_t conns__hash(const unsigned char key[16]) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++) h = (h ^ key[i]) * 16777619u;
    return h % CONNS_BUCKETS;
}

/* The count of key, or NULL. Caller holds mu. */
static struct ip_count *conns__find(struct conns *cs, const unsigned char key[16]) {
    for (struct ip_count *c = cs->buckets[conns__hash(key)]; c; c = c->next)
        if (memcmp(c->addr, key, 16) == 0) return c;
    return NULL;
}

/* ------------------------------------------------------------ watchdog */

static void conns__shut(struct conns *cs, struct conn_rec *c, const char *why) {
    /* the library sees the end of the stream and closes the connection;
     * the fd is still its own (conns_close runs before it is closed) */
    shutdown(c->fd, SHUT_RDWR);
    c->shut = true;
    log_debug("http: closed a connection: %s", why);
}

/* Connections that wait for bytes (a request not complete yet, or a quiet
 * keep-alive one) whose client has sent its end of stream: nothing more
 * can arrive, so they end now. libmicrohttpd's epoll mode misses such a
 * FIN when it comes with the last bytes (see server.c). Seen on two looks
 * in a row with no progress between them (any phase call resets it), so
 * the bytes that came before it have been read and handled. Caller holds
 * mu. */
static void conns__hangups(struct conns *cs) {
    if ((size_t)cs->n > cs->pfd_cap) {
        size_t cap = (size_t)cs->n * 2;
        struct pollfd *pfd = realloc(cs->pfd, cap * sizeof *pfd);
        if (pfd) cs->pfd = pfd;
        struct conn_rec **who = realloc(cs->who, cap * sizeof *who);
        if (who) cs->who = who;
        if (!pfd || !who) return;
        cs->pfd_cap = cap;
    }
    nfds_t k = 0;
    for (struct conn_rec *c = cs->head; c && k < cs->pfd_cap; c = c->next) {
        if (c->shut || c->phase == PH_BUSY) continue;
        cs->pfd[k] = (struct pollfd){.fd = c->fd, .events = POLLRDHUP};
        cs->who[k++] = c;
    }
    if (k == 0 || poll(cs->pfd, k, 0) <= 0) return;
    for (nfds_t i = 0; i < k; i++) {
        struct conn_rec *c = cs->who[i];
        if (!(cs->pfd[i].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            c->hup_seen = false;
            continue;
        }
        if (!c->hup_seen) {
            c->hup_seen = true;
            continue;
        }
        conns__shut(cs, c, c->phase == PH_IDLE ? "the client closed it" : "the client left mid-request");
    }
}

static void *conns__watch(void *arg) {
    struct conns *cs = arg;
    pthread_mutex_lock(&cs->mu);
    while (!cs->stop) {
        int64_t now = time_now_ms();
        for (struct conn_rec *c = cs->head; c; c = c->next) {
            if (!c->deadline_ms || c->shut || c->deadline_ms > now) continue;
            cs->timeouts++;
            conns__shut(cs, c, c->phase == PH_HEADERS ? "its request headers did not arrive in time"
                                                      : "its request body stopped arriving");
        }
        conns__hangups(cs);
        struct timespec ts;
        time_deadline_ms(&ts, CONNS_TICK_MS);
        pthread_cond_timedwait(&cs->cv, &cs->mu, &ts);
    }
    pthread_mutex_unlock(&cs->mu);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

struct conns *conns_new(const struct conns_params *p) {
    struct conns *cs = calloc(1, sizeof *cs);
    if (!cs) return NULL;
    cs->p = *p;
    pthread_mutex_init(&cs->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cs->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&cs->mem, 0);
    if (pthread_create(&cs->thread, NULL, conns__watch, cs) != 0) {
        pthread_mutex_destroy(&cs->mu);
        pthread_cond_destroy(&cs->cv);
        free(cs);
        return NULL;
    }
    return cs;
}

void conns_free(struct conns *cs) {
    if (!cs) return;
    pthread_mutex_lock(&cs->mu);
    cs->stop = true;
    pthread_cond_broadcast(&cs->cv);
    pthread_mutex_unlock(&cs->mu);
    pthread_join(cs->thread, NULL);
    while (cs->head) conns_close(cs, cs->head); /* none, unless the library lost one */
    for (size_t i = 0; i < CONNS_BUCKETS; i++) {
        while (cs->buckets[i]) {
            struct ip_count *c = cs->buckets[i];
            cs->buckets[i] = c->next;
            free(c);
        }
    }
    pthread_mutex_destroy(&cs->mu);
    pthread_cond_destroy(&cs->cv);
    free(cs->pfd);
    free(cs->who);
    free(cs);
}

bool conns_may_accept(struct conns *cs, const struct sockaddr *addr, socklen_t len) {
    unsigned char key[16];
    bool loop = false;
    if (cs->p.per_ip <= 0 || !conns__key(addr, len, key, &loop) || loop) return true;
    pthread_mutex_lock(&cs->mu);
    struct ip_count *c = conns__find(cs, key);
    bool ok = !c || c->n < cs->p.per_ip;
    pthread_mutex_unlock(&cs->mu);
    return ok;
}

struct conn_rec *conns_open(struct conns *cs, int fd, const struct sockaddr *addr, socklen_t len) {
    struct conn_rec *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = fd;
    c->phase = PH_HEADERS;
    c->deadline_ms = time_now_ms() + cs->p.header_timeout_ms;
    unsigned char key[16];
    bool loop = false;
    bool has_key = conns__key(addr, len, key, &loop);
    pthread_mutex_lock(&cs->mu);
    if (has_key) {
        struct ip_count *ic = conns__find(cs, key);
        if (!ic && (ic = calloc(1, sizeof *ic))) {
            memcpy(ic->addr, key, 16);
            ic->loopback = loop;
            size_t h = conns__hash(key);
            ic->next = cs->buckets[h];
            cs->buckets[h] = ic;
        }
        if (ic) ic->n++;
        c->ip = ic;
    }
    c->next = cs->head;
    if (cs->head) cs->head->prev = c;
    cs->head = c;
    cs->n++;
    pthread_mutex_unlock(&cs->mu);
    return c;
}

void conns_close(struct conns *cs, struct conn_rec *c) {
    if (!c) return;
    pthread_mutex_lock(&cs->mu);
    if (c->prev) c->prev->next = c->next;
    else cs->head = c->next;
    if (c->next) c->next->prev = c->prev;
    cs->n--;
    struct ip_count *ic = c->ip;
    if (ic && --ic->n == 0) {
        struct ip_count **pp = &cs->buckets[conns__hash(ic->addr)];
        while (*pp != ic) pp = &(*pp)->next;
        *pp = ic->next;
        free(ic);
    }
    pthread_mutex_unlock(&cs->mu);
    free(c);
}

bool conns_over_limit(struct conns *cs, const struct conn_rec *c) {
    if (!c || cs->p.per_ip <= 0) return false;
    pthread_mutex_lock(&cs->mu);
    bool over = c->ip && !c->ip->loopback && c->ip->n > cs->p.per_ip;
    pthread_mutex_unlock(&cs->mu);
    return over;
}

int conns_count(struct conns *cs) {
    pthread_mutex_lock(&cs->mu);
    int n = cs->n;
    pthread_mutex_unlock(&cs->mu);
    return n;
}

int64_t conns_timeouts(struct conns *cs) {
    pthread_mutex_lock(&cs->mu);
    int64_t n = cs->timeouts;
    pthread_mutex_unlock(&cs->mu);
    return n;
}

/* ------------------------------------------------------------ phases */

static void conns__phase(struct conns *cs, struct conn_rec *c, enum conn_phase ph, int64_t timeout_ms) {
    if (!c) return;
    int64_t deadline = timeout_ms > 0 ? time_now_ms() + timeout_ms : 0;
    pthread_mutex_lock(&cs->mu);
    /* a new request line restarts the header clock only on a connection
     * that finished its previous request */
    if (ph != PH_HEADERS || c->phase == PH_IDLE) {
        c->hup_seen = false; /* progress: look twice again */
        c->phase = ph;
        c->deadline_ms = deadline;
    }
    pthread_mutex_unlock(&cs->mu);
}

void conns_headers(struct conns *cs, struct conn_rec *c) { conns__phase(cs, c, PH_HEADERS, cs->p.header_timeout_ms); }
void conns_body(struct conns *cs, struct conn_rec *c) { conns__phase(cs, c, PH_BODY, cs->p.body_timeout_ms); }
void conns_busy(struct conns *cs, struct conn_rec *c) { conns__phase(cs, c, PH_BUSY, 0); }
void conns_idle(struct conns *cs, struct conn_rec *c) { conns__phase(cs, c, PH_IDLE, 0); }

/* ------------------------------------------------------------ memory */

bool conns_mem_take(struct conns *cs, size_t n) {
    size_t cur = atomic_load(&cs->mem);
    do {
        if (n > cs->p.mem_limit || cur > cs->p.mem_limit - n) return false;
    } while (!atomic_compare_exchange_weak(&cs->mem, &cur, cur + n));
    return true;
}

void conns_mem_give(struct conns *cs, size_t n) {
    if (n) atomic_fetch_sub(&cs->mem, n);
}

size_t conns_mem_used(struct conns *cs) { return atomic_load(&cs->mem); }
