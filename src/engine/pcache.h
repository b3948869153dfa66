/* pcache.h - a bounded host-memory cache of finished sequences' KV state.
 *
 * When a slot's KV is about to be overwritten by a prompt that does not
 * continue it, the engine saves the sequence (its tokens and llama.cpp's
 * sequence state) here; a later prompt sharing a long prefix with an entry
 * restores it instead of computing it again (a chat that comes back after
 * other conversations took its slot). This module holds the bookkeeping
 * only: entries, the byte bound, least-recently-used eviction and prefix
 * lookup. It never calls llama.cpp, so it is unit-tested on its own.
 *
 * Not thread-safe: one engine's scheduler thread owns its cache.
 */
#ifndef CORRAL_PCACHE_H
#define CORRAL_PCACHE_H

#include <stddef.h>
#include <stdint.h>

struct pcache_entry {
    int32_t *tokens; /* the sequence's tokens, positions 0..n_tokens-1 */
    int n_tokens;
    void *state; /* llama_state_seq_get_data bytes */
    size_t size;
    uint64_t last_used; /* pcache's clock at the last put or use */
};

struct pcache {
    struct pcache_entry *e;
    int n, cap;         /* entries, most entries */
    size_t bytes, max_bytes; /* state bytes held, their bound */
    uint64_t clock;
    uint64_t evictions; /* entries dropped to make room */
};

/* max_bytes 0 disables the cache (every put is refused). */
void pcache_init(struct pcache *c, size_t max_bytes, int max_entries);
void pcache_free(struct pcache *c);

/* The entry whose tokens start with all n of `tokens` (it already holds
 * this sequence, or a longer one), or NULL. */
struct pcache_entry *pcache_covering(struct pcache *c, const int32_t *tokens, int n);

/* The entry sharing the longest common prefix with `tokens`; its length in
 * *lcp (0 and NULL when none shares a token). */
struct pcache_entry *pcache_best(struct pcache *c, const int32_t *tokens, int n, int *lcp);

/* Mark an entry used now (it is evicted last). */
void pcache_touch(struct pcache *c, struct pcache_entry *en);

/* Whether a state of `size` bytes may be put at all (size <= max_bytes). */
int pcache_fits(const struct pcache *c, size_t size);

/* Add a sequence: copies `tokens`, takes ownership of `state` (malloc'd,
 * `size` bytes). Entries that are prefixes of it are dropped (it holds
 * them), then least recently used ones until it fits. Returns 0, or -1 if
 * it cannot fit or memory ran out (state is then freed). */
int pcache_put(struct pcache *c, const int32_t *tokens, int n, void *state, size_t size);

#endif
