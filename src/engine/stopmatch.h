/* stopmatch.h - stop strings matched across token boundaries.
 *
 * Text arrives a token at a time. Text that might be the start of a stop
 * string is held back until it is known not to be; when a stop string
 * completes, the text before it is released and the rest is dropped.
 */
#ifndef CORRAL_STOPMATCH_H
#define CORRAL_STOPMATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

#define STOPMATCH_MAX 4

struct stopmatch {
    const char *stops[STOPMATCH_MAX]; /* borrowed: must outlive the matcher */
    size_t lens[STOPMATCH_MAX];
    int n;
    bool matched;
    struct buf held; /* text held back: a suffix that is a prefix of a stop */
};

/* Start a matcher over n stop strings (empty strings are ignored). The
 * strings are borrowed. Allocates nothing until text is fed. */
void stopmatch_init(struct stopmatch *m, const char *const *stops, int n);
void stopmatch_free(struct stopmatch *m);

/* Feed n bytes of new text. Appends to *out what can be released now.
 * Returns true once a stop string has matched (out then ends right before it;
 * later feeds are ignored). Returns false otherwise. If out refuses bytes
 * (its cap), the text is dropped and the function returns false; callers cap
 * out generously and treat a refused append as their own error. */
bool stopmatch_feed(struct stopmatch *m, const char *s, size_t n, struct buf *out);

/* At the end of generation: release any held-back text into *out. */
void stopmatch_flush(struct stopmatch *m, struct buf *out);

#endif
