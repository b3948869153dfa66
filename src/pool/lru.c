/* lru.c - eviction rules of the pool (see header). */
#include "pool/lru.h"

uint64_t lru_used(const struct lru_entry *e, size_t n, int *counted) {
    uint64_t used = 0;
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!e[i].counted) continue;
        used += e[i].bytes;
        k++;
    }
    if (counted) *counted = k;
    return used;
}

bool lru_fits(const struct lru_entry *e, size_t n, uint64_t need, uint64_t budget, int max_models) {
    int counted = 0;
    uint64_t used = lru_used(e, n, &counted);
    return need <= budget && used <= budget - need && counted < max_models;
}

long lru_victim(const struct lru_entry *e, size_t n, size_t except) {
    long best = -1;
    for (size_t i = 0; i < n; i++) {
        if (i == except || !e[i].resident || e[i].pins > 0) continue;
        if (best < 0 || e[i].last_used_ms < e[best].last_used_ms) best = (long)i;
    }
    return best;
}
