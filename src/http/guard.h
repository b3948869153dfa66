/* guard.h - who may talk to corral from a browser: the Host, Origin and
 * Content-Type rules, as pure functions over header values (no sockets, no
 * libmicrohttpd), so each rule has a unit test.
 *
 * The threats (see README "Browsers and other local programs"):
 *  - any web page the user opens can send requests to 127.0.0.1; a "simple"
 *    cross-origin POST (text/plain) is sent without a preflight, so without
 *    a check a page could unload models or run generations;
 *  - DNS rebinding: a page on evil.example points its name at 127.0.0.1 and
 *    is then same-origin with corral as far as the browser knows; only the
 *    Host header it sends (evil.example) tells it apart.
 * So: a request whose Host is not a local name is refused when corral is
 * bound to a loopback address (or allowed_hosts is set); a request whose
 * Origin is neither one the operator listed (cors_origins) nor corral's own
 * is refused; CORS headers are sent only for listed origins and never for
 * /admin; admin POSTs must be application/json, which a page cannot send
 * cross-origin without a preflight that corral does not grant.
 */
#ifndef CORRAL_HTTP_GUARD_H
#define CORRAL_HTTP_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#define GUARD_ORIGIN_MAX 256

struct guard {
    char **origins;      /* cors_origins items (lower case), NULL when none */
    size_t n_origins;
    bool any_origin;     /* cors_origins has "*" */
    char **hosts;        /* allowed_hosts items (lower case) */
    size_t n_hosts;
    bool any_host;       /* allowed_hosts has "*" */
    bool check_host;     /* bound to loopback, or allowed_hosts given (and not "*") */
    bool loopback_bind;
};

struct guard_params {
    const char *cors_origins;  /* config's list, NULL = none */
    const char *allowed_hosts; /* config's list, NULL = none */
    const char *bind_host;     /* the address served on ("127.0.0.1", "::", "localhost", ...) */
};

/* Parse the lists (already validated by the configuration). 0, or -1 when
 * out of memory. Free with guard_free. */
int guard_init(struct guard *g, const struct guard_params *p);
void guard_free(struct guard *g);

/* true if a Host header (NULL = absent, as HTTP/1.0 may send) is one corral
 * answers to: when the check applies, "localhost" and its subdomains, a
 * loopback IP literal (a loopback bind) or any IP literal (another bind), or
 * a name in allowed_hosts; any port. */
bool guard_host_ok(const struct guard *g, const char *host);

enum guard_origin {
    GUARD_NO_ORIGIN = 0, /* no Origin header: not a browser's cross-site request */
    GUARD_SAME_ORIGIN,   /* a page corral itself served (Origin matches a trusted Host) */
    GUARD_CORS,          /* a listed origin: answer with CORS headers */
    GUARD_FORBIDDEN,     /* refuse with 403 */
};

/* Classify a request's Origin (NULL = none) given its Host. admin: an
 * /admin route, where only same-origin pages are allowed and CORS is never
 * granted. For GUARD_CORS, allow (GUARD_ORIGIN_MAX bytes) gets the value for
 * Access-Control-Allow-Origin ("*" or the origin) and *vary whether the
 * answer depends on Origin (send "Vary: Origin"). */
enum guard_origin guard_origin(const struct guard *g, const char *origin, const char *host, bool admin,
                               char *allow, bool *vary);

/* true for "application/json" with any parameters, in any case. */
bool guard_is_json(const char *content_type);

/* true for a loopback bind address: 127.0.0.0/8, ::1, "localhost". */
bool guard_loopback_addr(const char *addr);

/* The Access-Control-Request-Headers value to grant in a preflight: the
 * requested list when it holds only header-name characters, commas and
 * blanks (and fits out), else a default list. */
const char *guard_allow_headers(const char *requested, char *out, size_t out_len);

#endif
