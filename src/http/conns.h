/* conns.h - the client connections, as corral tracks them beside
 * libmicrohttpd: how many each address holds, the phase each is in with its
 * deadline, and the request bytes held in memory across all of them.
 *
 * libmicrohttpd 0.9.75 has one idle timeout per connection; it cannot bound
 * the whole time a request's headers take (a client sending a byte every
 * few seconds stays "active" for ever) and it does not tell a pause in a
 * body from a quiet keep-alive connection. So each connection is in a phase:
 *
 *   HEADERS --headers in, a body follows--> BODY --body in--> BUSY --response sent--> IDLE
 *      ^          \--headers in, no body------------------->/                         |
 *      +------------------------------ next request line ----------------------------+
 *
 * HEADERS has a deadline from its start (header_timeout), BODY one from its
 * last read (body_timeout); a watchdog thread shuts the socket of a
 * connection past its deadline (the library then sees the end of the
 * stream and closes it). BUSY and IDLE have none here: a suspended
 * connection waits for the engine, and the library's idle timeout bounds a
 * quiet keep-alive connection or a client that stops reading.
 *
 * The watchdog also ends a connection in HEADERS, BODY or IDLE whose client
 * has sent its end of stream (POLLRDHUP on two looks 100 ms apart with no
 * progress between): nothing more can arrive on it, and libmicrohttpd's
 * epoll mode would not notice (server.c says why).
 *
 * Threads: every function is thread-safe. A record lives from conns_open
 * (the library's "connection started") to conns_close ("closed"), which the
 * library calls before it closes the socket, so the watchdog never touches
 * a descriptor that has been reused.
 */
#ifndef CORRAL_HTTP_CONNS_H
#define CORRAL_HTTP_CONNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct conns;
struct conn_rec;

struct conns_params {
    int64_t header_timeout_ms; /* > 0 */
    int64_t body_timeout_ms;   /* > 0 */
    int per_ip;                /* connections one address may hold; 0 = no limit */
    size_t mem_limit;          /* request bytes held at once, all connections */
};

/* Start tracking (and the watchdog thread). NULL if out of memory. */
struct conns *conns_new(const struct conns_params *p);
/* Stop the watchdog and free; every record must have been closed. */
void conns_free(struct conns *cs);

/* May a new connection from addr be accepted? false for a non-loopback
 * address that already holds per_ip connections. Loopback clients are not
 * capped per address: every process of this machine shares one, and the
 * total connection limit bounds them. */
bool conns_may_accept(struct conns *cs, const struct sockaddr *addr, socklen_t len);
/* A connection started (phase HEADERS). NULL if out of memory (then it is
 * not tracked). */
struct conn_rec *conns_open(struct conns *cs, int fd, const struct sockaddr *addr, socklen_t len);
/* It closed (NULL is ignored). */
void conns_close(struct conns *cs, struct conn_rec *c);
/* true when its (non-loopback) address holds more than per_ip connections:
 * one that slipped past conns_may_accept while another thread accepted. */
bool conns_over_limit(struct conns *cs, const struct conn_rec *c);
/* Connections open now, and how many timed out so far. */
int conns_count(struct conns *cs);
int64_t conns_timeouts(struct conns *cs);

/* Phases (NULL c is ignored). */
void conns_headers(struct conns *cs, struct conn_rec *c); /* a request line arrived */
void conns_body(struct conns *cs, struct conn_rec *c);    /* body bytes expected or just read */
void conns_busy(struct conns *cs, struct conn_rec *c);    /* the request is complete */
void conns_idle(struct conns *cs, struct conn_rec *c);    /* its response has been sent */

/* true for a loopback client address (127.0.0.0/8, ::1, ::ffff:127.x). */
bool conns_addr_loopback(const struct sockaddr *sa, socklen_t len);

/* Reserve n bytes of request memory: false (nothing reserved) when that
 * would pass mem_limit. */
bool conns_mem_take(struct conns *cs, size_t n);
void conns_mem_give(struct conns *cs, size_t n);
size_t conns_mem_used(struct conns *cs);

#endif
