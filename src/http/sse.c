/* sse.c - Server-Sent Events framing for streamed responses.
 *
 * DESIGN: each event is assembled in full in a scratch buffer and appended
 * to `out` with one buf_append, so an event that would pass out's cap is
 * refused whole and never leaves half a frame behind. Every line break in a
 * payload ("\n", "\r\n" or a lone "\r", all line ends per the SSE spec)
 * starts a new "data: " line; a client joins them back with "\n".
 */
#include "http/sse.h"

#include <string.h>

/* Append `prefix` + each line of s[0..n) + "\n" to tmp, then the blank line. */
static int sse_frame(struct buf *tmp, const char *prefix, const char *s, size_t n)
{
    size_t plen = strlen(prefix);
    size_t start = 0;
    for (size_t i = 0;; i++) {
        if (i == n || s[i] == '\n' || s[i] == '\r') {
            if (buf_append(tmp, prefix, plen) < 0 || buf_append(tmp, s + start, i - start) < 0 ||
                buf_append(tmp, "\n", 1) < 0)
                return -1;
            if (i == n)
                break;
            if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
                i++;
            start = i + 1;
        }
    }
    return buf_append(tmp, "\n", 1);
}

/* Frame and append to out, all or nothing. */
static int sse_emit(struct buf *out, const char *prefix, const char *s, size_t n)
{
    /* The event must fit in what is left under out's cap (0 = no cap). */
    size_t room = 0;
    if (out->cap) {
        if (out->len >= out->cap)
            return -1;
        room = out->cap - out->len;
    }
    struct buf tmp;
    buf_init(&tmp, room);
    int rc = sse_frame(&tmp, prefix, s ? s : "", s ? n : 0);
    if (rc == 0)
        rc = buf_append(out, tmp.data, tmp.len);
    buf_free(&tmp);
    return rc;
}

int sse_data(struct buf *out, const char *payload, size_t len)
{
    return sse_emit(out, "data: ", payload, len);
}

int sse_done(struct buf *out)
{
    return buf_append(out, "data: [DONE]\n\n", 14);
}

int sse_comment(struct buf *out, const char *text)
{
    return sse_emit(out, ": ", text, text ? strlen(text) : 0);
}
