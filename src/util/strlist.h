/* strlist.h - walking a comma-separated list ("a, b,,c"): each item with
 * the blanks around it removed, empty items skipped. */
#ifndef CORRAL_STRLIST_H
#define CORRAL_STRLIST_H

#include <stddef.h>

/* Call fn(ctx, item, len) for each item of list (item is not
 * NUL-terminated). Stops at the first call that returns non-zero and
 * returns that; 0 when every item passed. */
int strlist_each(const char *list, int (*fn)(void *ctx, const char *item, size_t len), void *ctx);

#endif
