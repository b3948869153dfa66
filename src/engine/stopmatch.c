/* stopmatch.c - stop-string matching across token boundaries (see header). */
#include "engine/stopmatch.h"

#include <string.h>

void stopmatch_init(struct stopmatch *m, const char *const *stops, int n) {
    memset(m, 0, sizeof *m);
    buf_init(&m->held, 0);
    for (int i = 0; i < n && m->n < STOPMATCH_MAX; i++) {
        if (!stops[i] || !stops[i][0]) continue;
        m->stops[m->n] = stops[i];
        m->lens[m->n] = strlen(stops[i]);
        m->n++;
    }
}

void stopmatch_free(struct stopmatch *m) { buf_free(&m->held); }

/* Earliest position of any stop string in s[0..n), or n if none. */
static size_t stopmatch__find(const struct stopmatch *m, const char *s, size_t n) {
    size_t best = n;
    for (int i = 0; i < m->n; i++) {
        size_t L = m->lens[i];
        if (L > n) continue;
        for (size_t p = 0; p + L <= n && p < best; p++) {
            if (s[p] == m->stops[i][0] && memcmp(s + p, m->stops[i], L) == 0) {
                best = p;
                break;
            }
        }
    }
    return best;
}

/* Longest k < n such that the last k bytes of s are a proper prefix of a stop. */
static size_t stopmatch__partial(const struct stopmatch *m, const char *s, size_t n) {
    size_t best = 0;
    for (int i = 0; i < m->n; i++) {
        size_t L = m->lens[i];
        size_t k = L - 1 < n ? L - 1 : n;
        for (; k > best; k--) {
            if (memcmp(s + n - k, m->stops[i], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

bool stopmatch_feed(struct stopmatch *m, const char *s, size_t n, struct buf *out) {
    if (m->matched) return true;
    if (m->n == 0) {
        buf_append(out, s, n);
        return false;
    }
    if (buf_append(&m->held, s, n) != 0) return false;
    const char *t = m->held.data;
    size_t len = m->held.len;
    size_t at = stopmatch__find(m, t, len);
    if (at < len) {
        buf_append(out, t, at);
        buf_reset(&m->held);
        m->matched = true;
        return true;
    }
    size_t keep = stopmatch__partial(m, t, len);
    buf_append(out, t, len - keep);
    buf_consume(&m->held, len - keep);
    return false;
}

void stopmatch_flush(struct stopmatch *m, struct buf *out) {
    if (!m->matched && m->held.len) buf_append(out, m->held.data, m->held.len);
    buf_reset(&m->held);
}
