/* guard.c - the Host, Origin and Content-Type rules (see guard.h). */
#include "http/guard.h"
#include "util/strlist.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GUARD_HOST_MAX 256
#define GUARD_DEFAULT_HEADERS "Authorization, Content-Type, X-Api-Key, X-Corral-Max-Wait"

/* ------------------------------------------------------------ lists */

static void guard__lower(char *s) {
    for (; *s; s++) *s = (char)tolower((unsigned char)*s);
}

struct guard__list {
    char **items;
    size_t n;
    bool any;
};

static int guard__item(void *ctx, const char *item, size_t len) {
    struct guard__list *l = ctx;
    if (len == 1 && *item == '*') {
        l->any = true;
        return 0;
    }
    char *it = strndup(item, len);
    if (!it) return -1;
    guard__lower(it);
    l->items[l->n++] = it;
    return 0;
}

/* Split a comma-separated list into lower-case items (blanks trimmed,
 * empty items dropped); "*" sets *any instead. 0, or -1 out of memory. */
static int guard__split(const char *list, char ***out, size_t *n, bool *any) {
    *out = NULL;
    *n = 0;
    *any = false;
    if (!list) return 0;
    size_t cap = 1;
    for (const char *p = list; *p; p++) cap += *p == ',';
    struct guard__list l = {calloc(cap, sizeof(char *)), 0, false};
    if (!l.items) return -1;
    if (strlist_each(list, guard__item, &l) != 0) {
        for (size_t i = 0; i < l.n; i++) free(l.items[i]);
        free(l.items);
        return -1;
    }
    *out = l.items;
    *n = l.n;
    *any = l.any;
    return 0;
}

static void guard__free_list(char **items, size_t n) {
    for (size_t i = 0; i < n; i++) free(items[i]);
    free(items);
}

int guard_init(struct guard *g, const struct guard_params *p) {
    memset(g, 0, sizeof *g);
    if (guard__split(p->cors_origins, &g->origins, &g->n_origins, &g->any_origin) != 0) return -1;
    if (guard__split(p->allowed_hosts, &g->hosts, &g->n_hosts, &g->any_host) != 0) {
        guard_free(g);
        return -1;
    }
    g->loopback_bind = p->bind_host && guard_loopback_addr(p->bind_host);
    g->check_host = !g->any_host && (g->loopback_bind || g->n_hosts > 0);
    return 0;
}

void guard_free(struct guard *g) {
    guard__free_list(g->origins, g->n_origins);
    guard__free_list(g->hosts, g->n_hosts);
    memset(g, 0, sizeof *g);
}

/* ------------------------------------------------------------ names */

/* The name part of a Host value ("name[:port]", "[v6][:port]"), lower
 * case, without a trailing dot and without brackets. false if malformed. */
static bool guard__host_name(const char *host, char *out, size_t out_len) {
    while (*host == ' ' || *host == '\t') host++;
    size_t n = strlen(host);
    while (n && (host[n - 1] == ' ' || host[n - 1] == '\t')) n--;
    const char *name = host, *rest;
    size_t len;
    if (n && *host == '[') {
        const char *close = memchr(host, ']', n);
        if (!close) return false;
        name = host + 1;
        len = (size_t)(close - name);
        rest = close + 1;
    } else {
        const char *colon = memchr(host, ':', n);
        len = colon ? (size_t)(colon - host) : n;
        rest = host + len;
    }
    /* what follows the name is nothing or ":digits" */
    size_t rl = n - (size_t)(rest - host);
    if (rl) {
        if (*rest != ':' || rl == 1) return false;
        for (size_t i = 1; i < rl; i++)
            if (!isdigit((unsigned char)rest[i])) return false;
    }
    if (len && name[len - 1] == '.') len--;
    if (len == 0 || len >= out_len) return false;
    memcpy(out, name, len);
    out[len] = '\0';
    guard__lower(out);
    return true;
}

/* 1 for a loopback IP literal, 0 for another IP literal, -1 for a name. */
static int guard__ip_kind(const char *name) {
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, name, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, name, &a6) == 1) {
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (IN6_IS_ADDR_LOOPBACK(&a6)) return 1;
        return memcmp(a6.s6_addr, v4mapped, 12) == 0 && a6.s6_addr[12] == 127;
    }
    return -1;
}

static bool guard__ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* "localhost" and its subdomains resolve to loopback by definition (RFC
 * 6761), so no one else can point them at corral. */
static bool guard__is_localhost(const char *name) {
    return strcmp(name, "localhost") == 0 || guard__ends_with(name, ".localhost");
}

bool guard_loopback_addr(const char *addr) {
    if (!addr) return false;
    if (strcasecmp(addr, "localhost") == 0) return true;
    return guard__ip_kind(addr) == 1;
}

static bool guard__listed_host(const struct guard *g, const char *name) {
    for (size_t i = 0; i < g->n_hosts; i++) {
        const char *h = g->hosts[i];
        if (strcmp(name, h) == 0) return true;
        if (h[0] == '.' && (strcmp(name, h + 1) == 0 || guard__ends_with(name, h))) return true;
    }
    return false;
}

bool guard_host_ok(const struct guard *g, const char *host) {
    if (!g->check_host || !host) return true;
    char name[GUARD_HOST_MAX];
    if (!guard__host_name(host, name, sizeof name)) return false;
    if (guard__is_localhost(name)) return true;
    int ip = guard__ip_kind(name);
    if (ip >= 0) return g->loopback_bind ? ip == 1 : true;
    return guard__listed_host(g, name);
}

/* ------------------------------------------------------------ origins */

enum guard_origin guard_origin(const struct guard *g, const char *origin, const char *host, bool admin,
                               char *allow, bool *vary) {
    allow[0] = '\0';
    *vary = false;
    if (!origin) return GUARD_NO_ORIGIN;
    char o[GUARD_ORIGIN_MAX];
    while (*origin == ' ' || *origin == '\t') origin++;
    size_t n = strlen(origin);
    while (n && (origin[n - 1] == ' ' || origin[n - 1] == '\t')) n--;
    if (n == 0 || n >= sizeof o) return GUARD_FORBIDDEN;
    memcpy(o, origin, n);
    o[n] = '\0';
    guard__lower(o);

    if (!admin) {
        if (g->any_origin) {
            snprintf(allow, GUARD_ORIGIN_MAX, "*");
            return GUARD_CORS;
        }
        for (size_t i = 0; i < g->n_origins; i++) {
            if (strcmp(o, g->origins[i]) == 0) {
                snprintf(allow, GUARD_ORIGIN_MAX, "%s", origin);
                allow[n] = '\0';
                *vary = true;
                return GUARD_CORS;
            }
        }
    }
    /* same origin: a page corral served itself, on a Host that no other
     * site can point at it (a checked Host, a local name or an IP literal) */
    const char *auth = NULL;
    if (strncmp(o, "http://", 7) == 0) auth = o + 7;
    else if (strncmp(o, "https://", 8) == 0) auth = o + 8;
    if (auth && host) {
        char h[GUARD_ORIGIN_MAX], name[GUARD_HOST_MAX];
        while (*host == ' ' || *host == '\t') host++;
        snprintf(h, sizeof h, "%s", host);
        size_t hl = strlen(h);
        while (hl && (h[hl - 1] == ' ' || h[hl - 1] == '\t')) h[--hl] = '\0';
        guard__lower(h);
        bool trusted = g->check_host ? guard_host_ok(g, h)
                                     : guard__host_name(h, name, sizeof name) &&
                                           (guard__is_localhost(name) || guard__ip_kind(name) >= 0);
        if (strcmp(auth, h) == 0 && trusted) return GUARD_SAME_ORIGIN;
    }
    return GUARD_FORBIDDEN;
}

/* ------------------------------------------------------------ content type */

bool guard_is_json(const char *ct) {
    if (!ct) return false;
    while (*ct == ' ' || *ct == '\t') ct++;
    if (strncasecmp(ct, "application/json", 16) != 0) return false;
    char c = ct[16];
    return c == '\0' || c == ';' || c == ' ' || c == '\t';
}

const char *guard_allow_headers(const char *requested, char *out, size_t out_len) {
    if (!requested || !requested[0] || strlen(requested) >= out_len) return GUARD_DEFAULT_HEADERS;
    for (const char *p = requested; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!(isalnum(c) || c == '-' || c == '_' || c == ',' || c == ' ' || c == '\t')) return GUARD_DEFAULT_HEADERS;
    }
    snprintf(out, out_len, "%s", requested);
    return out;
}
