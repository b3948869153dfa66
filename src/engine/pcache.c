/* pcache.c - see pcache.h. */
#include "engine/pcache.h"

#include <stdlib.h>
#include <string.h>

void pcache_init(struct pcache *c, size_t max_bytes, int max_entries) {
    memset(c, 0, sizeof *c);
    c->max_bytes = max_bytes;
    c->cap = max_entries > 0 ? max_entries : 1;
}

static void pcache__drop(struct pcache *c, int i) {
    struct pcache_entry *en = &c->e[i];
    c->bytes -= en->size;
    free(en->tokens);
    free(en->state);
    c->e[i] = c->e[--c->n];
}

void pcache_free(struct pcache *c) {
    while (c->n > 0) pcache__drop(c, c->n - 1);
    free(c->e);
    c->e = NULL;
}

static int pcache__lcp(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb, l = 0;
    while (l < n && a[l] == b[l]) l++;
    return l;
}

struct pcache_entry *pcache_covering(struct pcache *c, const int32_t *tokens, int n) {
    for (int i = 0; i < c->n; i++)
        if (c->e[i].n_tokens >= n && pcache__lcp(c->e[i].tokens, c->e[i].n_tokens, tokens, n) == n) return &c->e[i];
    return NULL;
}

struct pcache_entry *pcache_best(struct pcache *c, const int32_t *tokens, int n, int *lcp) {
    struct pcache_entry *best = NULL;
    int best_lcp = 0;
    for (int i = 0; i < c->n; i++) {
        int l = pcache__lcp(c->e[i].tokens, c->e[i].n_tokens, tokens, n);
        if (l > best_lcp) {
            best = &c->e[i];
            best_lcp = l;
        }
    }
    *lcp = best_lcp;
    return best;
}

void pcache_touch(struct pcache *c, struct pcache_entry *en) { en->last_used = ++c->clock; }

int pcache_fits(const struct pcache *c, size_t size) { return size > 0 && size <= c->max_bytes; }

int pcache_put(struct pcache *c, const int32_t *tokens, int n, void *state, size_t size) {
    if (!pcache_fits(c, size) || n <= 0) {
        free(state);
        return -1;
    }
    if (!c->e) {
        c->e = calloc((size_t)c->cap, sizeof *c->e);
        if (!c->e) {
            free(state);
            return -1;
        }
    }
    /* entries this one extends are redundant */
    for (int i = c->n - 1; i >= 0; i--)
        if (c->e[i].n_tokens <= n && pcache__lcp(c->e[i].tokens, c->e[i].n_tokens, tokens, n) == c->e[i].n_tokens)
            pcache__drop(c, i);
    /* then the least recently used until it fits */
    while (c->n > 0 && (c->n >= c->cap || c->bytes + size > c->max_bytes)) {
        int lru = 0;
        for (int i = 1; i < c->n; i++)
            if (c->e[i].last_used < c->e[lru].last_used) lru = i;
        pcache__drop(c, lru);
        c->evictions++;
    }
    int32_t *t = malloc((size_t)n * sizeof *t);
    if (!t) {
        free(state);
        return -1;
    }
    memcpy(t, tokens, (size_t)n * sizeof *t);
    struct pcache_entry *en = &c->e[c->n++];
    en->tokens = t;
    en->n_tokens = n;
    en->state = state;
    en->size = size;
    c->bytes += size;
    pcache_touch(c, en);
    return 0;
}
