/* buf.c - a growable byte buffer with a hard cap.
 *
 * DESIGN: the allocation grows geometrically but never past cap + 1 (the
 * NUL); an append is checked against the cap before anything is touched, so
 * a refused append leaves the buffer exactly as it was.
 */
#include "util/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

/* The cap in force: 0 means as much as a size_t allows (less the NUL). */
static size_t buf_limit(const struct buf *b)
{
    return b->cap ? b->cap : SIZE_MAX - 1;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* Make room for `need` content bytes plus the NUL. 0 or -1 (cap, no memory). */
static int buf_reserve(struct buf *b, size_t need)
{
    size_t cap = buf_limit(b);
    if (need > cap)
        return -1;
    if (need < b->alloc)
        return 0;
    size_t limit = cap + 1;
    size_t n = b->alloc ? b->alloc : 64;
    while (n <= need) {
        if (n > limit / 2) {
            n = limit;
            break;
        }
        n *= 2;
    }
    if (n > limit)
        n = limit;
    char *p = realloc(b->data, n);
    if (!p)
        return -1;
    b->data = p;
    b->alloc = n;
    return 0;
}

int buf_append(struct buf *b, const void *data, size_t n)
{
    size_t cap = buf_limit(b);
    if (n > cap || b->len > cap - n)
        return -1;
    if (buf_reserve(b, b->len + n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -1;
    size_t add = (size_t)n;
    size_t cap = buf_limit(b);
    if (add > cap || b->len > cap - add)
        return -1;
    if (buf_reserve(b, b->len + add) < 0)
        return -1;
    vsnprintf(b->data + b->len, add + 1, fmt, ap);
    b->len += add;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *buf_steal(struct buf *b, size_t *len_out)
{
    char *p = b->data;
    size_t len = b->len;
    if (!p) {
        p = malloc(1);
        if (!p)
            return NULL;
        p[0] = '\0';
        len = 0;
    }
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    if (len_out)
        *len_out = len;
    return p;
}
