/* strlist.c - comma-separated lists (see strlist.h). */
#include "util/strlist.h"

#include <ctype.h>
#include <string.h>

int strlist_each(const char *list, int (*fn)(void *ctx, const char *item, size_t len), void *ctx) {
    const char *p = list;
    while (p && *p) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if (a < b) {
            int rc = fn(ctx, a, (size_t)(b - a));
            if (rc) return rc;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}
