/* sse.h - Server-Sent Events framing for streamed responses. */
#ifndef CORRAL_HTTP_SSE_H
#define CORRAL_HTTP_SSE_H

#include <stddef.h>

#include "util/buf.h"

/* Append one event "data: <payload>\n\n" to out. A payload with newlines is
 * split into several data: lines (per the SSE spec) so it cannot break the
 * framing. Returns 0, or -1 if out's cap would be exceeded (out unchanged). */
int sse_data(struct buf *out, const char *payload, size_t len);
/* Append the closing "data: [DONE]\n\n". Same return. */
int sse_done(struct buf *out);
/* Append an SSE comment line ": <text>\n\n" (keep-alive). Same return. */
int sse_comment(struct buf *out, const char *text);

#endif
