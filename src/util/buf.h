/* buf.h - a growable byte buffer with a hard cap.
 *
 * A buf never grows past its cap: an append that would is refused whole and
 * returns -1, so callers can turn "too much" into a clear error instead of an
 * unbounded allocation. The data is always NUL-terminated (not counted in len).
 */
#ifndef CORRAL_BUF_H
#define CORRAL_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;   /* NULL until the first append; always NUL-terminated after */
    size_t len;   /* bytes used, not counting the NUL */
    size_t alloc; /* bytes allocated */
    size_t cap;   /* most bytes it may hold; 0 = SIZE_MAX */
};

/* Zero-initialise with a cap (0 = unlimited). Allocates nothing. */
void buf_init(struct buf *b, size_t cap);
/* Free the data; the buf may be reused after buf_init. */
void buf_free(struct buf *b);
/* Forget the contents, keep the allocation. */
void buf_reset(struct buf *b);
/* Append n bytes. 0 on success; -1 if it would pass the cap or memory ran out
 * (the buf is unchanged then). */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Drop the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Hand the data to the caller (who frees it with free()); the buf is left empty.
 * Returns an empty allocated string if nothing was appended; NULL if out of memory. */
char *buf_steal(struct buf *b, size_t *len_out);

#endif
