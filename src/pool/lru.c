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
    long lru = -1, mru = -1;
    int64_t latest = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].last_used_ms > latest) latest = e[i].last_used_ms;
        if (i == except || !e[i].resident || e[i].pins > 0) continue;
        if (lru < 0 || e[i].last_used_ms < e[lru].last_used_ms) lru = (long)i;
        if (mru < 0 || e[i].last_used_ms > e[mru].last_used_ms) mru = (long)i;
    }
    bool thrashing = except < n && e[except].refault && lru >= 0 && latest - e[lru].last_used_ms <= LRU_HOT_MS;
    return thrashing ? mru : lru;
}
