/* waitq.h - a bounded FIFO of pointers (the per-model wait queue).
 *
 * Not thread-safe: its owner (the engine) guards it with its own mutex. A
 * full queue refuses a push at once; the caller turns that into a 503.
 */
#ifndef CORRAL_WAITQ_H
#define CORRAL_WAITQ_H

#include <stdbool.h>
#include <stddef.h>

struct waitq {
    void **items;
    size_t cap;
    size_t head;
    size_t len;
};

/* 0 on success, -1 if out of memory. cap may be 0 (every push is refused). */
int waitq_init(struct waitq *q, size_t cap);
void waitq_free(struct waitq *q);
/* 0 on success, -1 when full. */
int waitq_push(struct waitq *q, void *item);
/* Oldest item, or NULL when empty. */
void *waitq_pop(struct waitq *q);
void *waitq_peek(const struct waitq *q);
/* The i-th oldest item (i < len), or NULL. */
void *waitq_at(const struct waitq *q, size_t i);
/* Remove item wherever it is, keeping the order of the rest. true if found. */
bool waitq_remove(struct waitq *q, void *item);
size_t waitq_len(const struct waitq *q);
bool waitq_full(const struct waitq *q);

#endif
