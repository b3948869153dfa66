/* config_value.c - the value forms of the configuration: sizes, durations,
 * booleans, integers, model ids and lists, and the small string helpers the
 * reader shares. Pure functions (no state). */
#include "config_internal.h"
#include "util/strlist.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void *config__xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("corral: out of memory reading the configuration\n", stderr);
        abort();
    }
    return p;
}

/* Returns a malloc'd copy of s[0..n). */
char *config__xstrndup(const char *s, size_t n)
{
    char *p = config__xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *config__xstrdup(const char *s)
{
    return config__xstrndup(s, strlen(s));
}

void *config__xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fputs("corral: out of memory reading the configuration\n", stderr);
        abort();
    }
    return p;
}

/* Replace *slot (owned) by a copy of s, or by NULL when s is NULL. */
void config__set_str(char **slot, const char *s)
{
    free(*slot);
    *slot = s ? config__xstrdup(s) : NULL;
}

/* Write a printable, length-limited copy of v into out for use inside quotes
 * in an error message: control characters become '?', a long value ends in
 * "...". */
const char *config__quote(const char *v, char *out, size_t outlen)
{
    const size_t keep = outlen - 4; /* room for "..." and NUL */
    size_t i;
    for (i = 0; v[i] && i < keep; i++)
        out[i] = (iscntrl((unsigned char)v[i]) || v[i] == '"') ? '?' : v[i];
    if (v[i])
        memcpy(out + i, "...", 4);
    else
        out[i] = '\0';
    return out;
}

/* Format a size in the largest unit that divides it exactly ("1K", "8M"). */
const char *config__size_str(unsigned long long n, char *out, size_t outlen)
{
    if (n && n % TIB == 0)
        snprintf(out, outlen, "%lluT", n / TIB);
    else if (n && n % GIB == 0)
        snprintf(out, outlen, "%lluG", n / GIB);
    else if (n && n % MIB == 0)
        snprintf(out, outlen, "%lluM", n / MIB);
    else if (n && n % KIB == 0)
        snprintf(out, outlen, "%lluK", n / KIB);
    else
        snprintf(out, outlen, "%llu", n);
    return out;
}

/* Strict decimal integer: optional sign, digits, nothing else. */
int config__parse_ll(const char *s, long long *out)
{
    char *end;
    if (!*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

/* true/false, yes/no, on/off, 1/0 in any case. */
int config__parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* config_parse_size, plus a T suffix ("1T", "2TB", "2TiB", any case of t). */
int config__parse_size_t(const char *s, size_t *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    if (*end != 't' && *end != 'T')
        return config_parse_size(s, out);
    end++;
    if (*end == 'i' && end[1] == 'B')
        end += 2;
    else if (*end == 'B')
        end++;
    if (*end || v > SIZE_MAX / TIB)
        return -1;
    *out = (size_t)(v * TIB);
    return 0;
}

/* [A-Za-z0-9._:-]{1,127} */
bool config__model_id_valid(const char *id, size_t len)
{
    if (len == 0 || len >= CONFIG_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
            return false;
    }
    return true;
}

#define MODEL_ID_RULE "1..127 characters of A-Z a-z 0-9 . _ : -"

/* ------------------------------------------------------------ public parsers */

int config_parse_duration(const char *s, int64_t *ms_out)
{
    if (!s)
        return -1;
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 2 && s[0] == '-' && s[1] == '1') {
        *ms_out = CONFIG_KEEP_ALIVE_FOREVER;
        return 0;
    }
    size_t i = 0;
    int64_t v = 0;
    for (; i < len && isdigit((unsigned char)s[i]); i++) {
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (i == 0)
        return -1; /* empty, a sign, or a unit alone */
    int64_t mul = 1000;
    if (i < len) {
        switch (s[i]) {
        case 's': case 'S': mul = 1000; break;
        case 'm': case 'M': mul = 60 * 1000; break;
        case 'h': case 'H': mul = 60 * 60 * 1000; break;
        default: return -1;
        }
        i++;
    }
    if (i != len || v > INT64_MAX / mul)
        return -1;
    *ms_out = v * mul;
    return 0;
}

int config_parse_size(const char *s, size_t *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return -1; /* no sign, no blanks, not empty */
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    unsigned long long mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = KIB; end++; break;
    case 'm': case 'M': mul = MIB; end++; break;
    case 'g': case 'G': mul = GIB; end++; break;
    default: break;
    }
    if (mul > 1 && *end == 'i' && end[1] == 'B')
        end += 2;
    else if (*end == 'B')
        end++;
    if (*end)
        return -1;
    if (v > SIZE_MAX / mul)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

/* ------------------------------------------------------------ lists */

/* What an item check reports into. */
struct list_why {
    char *why;
    size_t len;
};

static bool host_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

/* "*", "null" or scheme://host[:port]: no path, no trailing slash. */
static int origin_ok(void *ctx, const char *s, size_t n)
{
    char *why = ((struct list_why *)ctx)->why;
    size_t why_len = ((struct list_why *)ctx)->len;
    char q[80], item[128];
    snprintf(item, sizeof item, "%.*s", (int)(n < 120 ? n : 120), s);
    if ((n == 1 && *s == '*') || (n == 4 && strncasecmp(s, "null", 4) == 0))
        return 0;
    size_t i = 0;
    while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.'))
        i++;
    bool ok = i > 0 && isalpha((unsigned char)s[0]) && i + 3 < n && strncmp(s + i, "://", 3) == 0;
    if (ok) {
        i += 3;
        size_t h = i;
        if (i < n && s[i] == '[') { /* an IPv6 literal */
            while (i < n && s[i] != ']')
                i++;
            ok = i < n;
            i++;
        } else {
            while (i < n && host_char(s[i]))
                i++;
        }
        ok = ok && i > h;
        if (ok && i < n && s[i] == ':') {
            size_t d = ++i;
            while (i < n && isdigit((unsigned char)s[i]))
                i++;
            ok = i > d && i - d <= 5;
        }
        ok = ok && i == n;
    }
    if (!ok) {
        snprintf(why, why_len,
                 "expected origins like http://localhost:3000 (scheme://host[:port], no path), \"null\" "
                 "or \"*\", got \"%s\"",
                 config__quote(item, q, sizeof q));
        return -1;
    }
    return 0;
}

/* "*", a host name, ".domain" (it and its subdomains) or an IP literal; no
 * port, no scheme. */
static int host_ok(void *ctx, const char *s, size_t n)
{
    char *why = ((struct list_why *)ctx)->why;
    size_t why_len = ((struct list_why *)ctx)->len;
    char q[80], item[128];
    snprintf(item, sizeof item, "%.*s", (int)(n < 120 ? n : 120), s);
    if (n == 1 && *s == '*')
        return 0;
    bool ok = true;
    if (*s == '[') {
        ok = n > 2 && s[n - 1] == ']';
        for (size_t i = 1; ok && i + 1 < n; i++)
            ok = isxdigit((unsigned char)s[i]) || s[i] == ':' || s[i] == '.';
    } else {
        for (size_t i = 0; ok && i < n; i++)
            ok = host_char(s[i]);
        ok = ok && !(n == 1 && *s == '.');
    }
    if (!ok) {
        snprintf(why, why_len,
                 "expected host names like myhost, myhost.lan or .example.com (no scheme, no port), or "
                 "\"*\", got \"%s\"",
                 config__quote(item, q, sizeof q));
        return -1;
    }
    return 0;
}

int config__check_origins(const char *list, char *why, size_t why_len)
{
    struct list_why w = {why, why_len};
    return strlist_each(list, origin_ok, &w);
}

int config__check_hosts(const char *list, char *why, size_t why_len)
{
    struct list_why w = {why, why_len};
    return strlist_each(list, host_ok, &w);
}
