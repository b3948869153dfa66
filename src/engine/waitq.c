/* waitq.c - bounded FIFO ring of pointers (see header). */
#include "engine/waitq.h"

#include <stdlib.h>

int waitq_init(struct waitq *q, size_t cap) {
    q->cap = cap;
    q->head = 0;
    q->len = 0;
    q->items = NULL;
    if (cap == 0) return 0;
    q->items = calloc(cap, sizeof *q->items);
    return q->items ? 0 : -1;
}

void waitq_free(struct waitq *q) {
    free(q->items);
    q->items = NULL;
    q->cap = q->len = q->head = 0;
}

int waitq_push(struct waitq *q, void *item) {
    if (q->len >= q->cap) return -1;
    q->items[(q->head + q->len) % q->cap] = item;
    q->len++;
    return 0;
}

void *waitq_pop(struct waitq *q) {
    if (q->len == 0) return NULL;
    void *it = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return it;
}

void *waitq_peek(const struct waitq *q) { return q->len ? q->items[q->head] : NULL; }

void *waitq_at(const struct waitq *q, size_t i) {
    return i < q->len ? q->items[(q->head + i) % q->cap] : NULL;
}

bool waitq_remove(struct waitq *q, void *item) {
    for (size_t i = 0; i < q->len; i++) {
        if (q->items[(q->head + i) % q->cap] != item) continue;
        for (size_t j = i; j + 1 < q->len; j++)
            q->items[(q->head + j) % q->cap] = q->items[(q->head + j + 1) % q->cap];
        q->len--;
        return true;
    }
    return false;
}

size_t waitq_len(const struct waitq *q) { return q->len; }

bool waitq_full(const struct waitq *q) { return q->len >= q->cap; }
