/* think.h - splitting a reasoning model's output into its thinking text
 * (reasoning_content) and its answer (content), as it streams in. Pure. */
#ifndef CORRAL_SERVICE_THINK_H
#define CORRAL_SERVICE_THINK_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

enum think_state { THINK_START, THINK_IN, THINK_OUT };

struct think {
    enum think_state state;
    char start[32], end[32]; /* the tags, e.g. <think> and </think> */
    bool strip;              /* drop whitespace next (after a tag) */
    struct buf hold;         /* bytes that may be the start of a tag */
};

/* opened: the prompt already opened the thinking section (the output
 * starts inside it); else the output may open it with the start tag,
 * after whitespace. */
void think_init(struct think *t, const char *start, const char *end, bool opened);
void think_free(struct think *t);
/* Take n more bytes of output; thinking text goes to r, the answer to c
 * (either may get nothing: bytes that could begin a tag are held). 0, or
 * -1 if out of memory. */
int think_feed(struct think *t, const char *text, size_t n, struct buf *r, struct buf *c);
/* The output ended: what is held goes where it stands. */
int think_flush(struct think *t, struct buf *r, struct buf *c);

#endif
