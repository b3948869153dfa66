/* lru.h - the pool's eviction rules as pure functions (no locks, no
 * llama.cpp), so every rule can be unit-tested on plain arrays. */
#ifndef CORRAL_POOL_LRU_H
#define CORRAL_POOL_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lru_entry {
    uint64_t bytes;       /* counted against the budget while resident */
    int64_t last_used_ms; /* monotonic time of the last request */
    int pins;             /* requests in flight or waiting; > 0 = never evict */
    bool resident;        /* loaded (evictable when unpinned) */
    bool counted;         /* counted in the budget and the model cap (loaded or loading) */
    bool refault;         /* the model to load was evicted for room lately (LRU_REFAULT_MS) */
};

/* An eviction for room this recent makes a reload a refault. */
#define LRU_REFAULT_MS 60000
/* Models used within this much of the latest use count as all in use. */
#define LRU_HOT_MS 30000

/* true when a model of `need` bytes fits beside what is counted: used + need
 * within budget and fewer than max_models counted. */
bool lru_fits(const struct lru_entry *e, size_t n, uint64_t need, uint64_t budget, int max_models);

/* The entry to evict next: the least recently used resident entry with no
 * pins, other than `except` (pass n for none). -1 if there is none: every
 * resident model is in use and the caller must wait.
 *
 * Except when the pool thrashes: when the model to load (`except`) is a
 * refault and even the least recently used candidate was used within
 * LRU_HOT_MS of the latest use, more models are in use than fit, as with
 * requests going round several models. LRU then evicts the very model
 * needed next (every request loads); the most recently used one is
 * evicted instead, so the others stay and every other request finds its
 * model (the best any policy does on a cycle). A model idle past
 * LRU_HOT_MS still goes first, as with LRU. */
long lru_victim(const struct lru_entry *e, size_t n, size_t except);

/* Bytes counted in the budget and the number of counted entries. */
uint64_t lru_used(const struct lru_entry *e, size_t n, int *counted);

#endif
