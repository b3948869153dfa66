/* think.c - thinking text and answer, apart (see think.h).
 *
 * Three states: at the start the output may open the section (its start
 * tag after whitespace), inside it everything up to the end tag is
 * thinking, after it everything is the answer. Whitespace right after a
 * tag is dropped, as templates put a newline there. A tag split across
 * two pieces of output is held until it is whole or cannot be one. */
#include "service/think.h"

#include <stdio.h>
#include <string.h>

void think_init(struct think *t, const char *start, const char *end, bool opened) {
    memset(t, 0, sizeof *t);
    snprintf(t->start, sizeof t->start, "%s", start ? start : "");
    snprintf(t->end, sizeof t->end, "%s", end ? end : "");
    t->state = opened ? THINK_IN : t->start[0] ? THINK_START : THINK_OUT;
    t->strip = opened;
    buf_init(&t->hold, 0);
}

void think_free(struct think *t) { buf_free(&t->hold); }

static bool is_ws(char ch) { return ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t'; }

/* Longest suffix of s[0..n) that is a proper prefix of tag. */
static size_t partial_tag(const char *s, size_t n, const char *tag) {
    size_t tl = strlen(tag);
    if (tl == 0) return 0;
    for (size_t k = tl > n ? n : tl - 1; k > 0; k--)
        if (memcmp(s + n - k, tag, k) == 0) return k;
    return 0;
}

static const char *find(const char *h, size_t hn, const char *needle) {
    size_t nn = strlen(needle);
    for (size_t i = 0; nn && i + nn <= hn; i++)
        if (memcmp(h + i, needle, nn) == 0) return h + i;
    return NULL;
}

int think_feed(struct think *t, const char *text, size_t n, struct buf *r, struct buf *c) {
    if (n && buf_append(&t->hold, text, n) != 0) return -1;
    for (;;) {
        const char *h = t->hold.data ? t->hold.data : "";
        size_t hn = t->hold.len, ws = 0;
        if (t->strip || t->state == THINK_START) {
            while (ws < hn && is_ws(h[ws])) ws++;
            if (t->strip) {
                buf_consume(&t->hold, ws);
                if (ws == hn) return 0; /* only whitespace so far */
                t->strip = false;
                continue;
            }
        }
        switch (t->state) {
        case THINK_START: {
            size_t sl = strlen(t->start), left = hn - ws;
            if (left >= sl && memcmp(h + ws, t->start, sl) == 0) {
                buf_consume(&t->hold, ws + sl);
                t->state = THINK_IN;
                t->strip = true;
                continue;
            }
            if (left < sl && memcmp(h + ws, t->start, left) == 0) return 0; /* may still become the tag */
            t->state = THINK_OUT;
            continue;
        }
        case THINK_IN: {
            const char *e = find(h, hn, t->end);
            if (e) {
                size_t at = (size_t)(e - h);
                if (buf_append(r, h, at) != 0) return -1;
                buf_consume(&t->hold, at + strlen(t->end));
                t->state = THINK_OUT;
                t->strip = true;
                continue;
            }
            size_t keep = partial_tag(h, hn, t->end);
            if (buf_append(r, h, hn - keep) != 0) return -1;
            buf_consume(&t->hold, hn - keep);
            return 0;
        }
        case THINK_OUT:
            if (hn && buf_append(c, h, hn) != 0) return -1;
            buf_reset(&t->hold);
            return 0;
        }
    }
}

int think_flush(struct think *t, struct buf *r, struct buf *c) {
    int rc = 0;
    if (t->hold.len && !t->strip) rc = buf_append(t->state == THINK_IN ? r : c, t->hold.data, t->hold.len);
    buf_reset(&t->hold);
    t->state = THINK_OUT;
    return rc;
}
