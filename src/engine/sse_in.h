/* sse_in.h - reading an upstream's event stream (OpenAI streaming): lines
 * into "data:" payloads, and a payload into what it says (text, finish,
 * usage, an error, the end). Pure functions over bytes, so every input can
 * be fuzzed; the proxy engine applies the result to its request.
 */
#ifndef CORRAL_SSE_IN_H
#define CORRAL_SSE_IN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "engine/engine.h"
#include "util/buf.h"

/* A line splitter with a bound on one line. */
struct sse_in {
    struct buf line; /* the unfinished line */
    size_t scanned;  /* bytes of line already known to hold no newline */
};

/* line_max bounds one line (a longer one is an error). */
void sse_in_init(struct sse_in *s, size_t line_max);
void sse_in_free(struct sse_in *s);
/* Feed n bytes: on_data(ctx, payload, len) runs for every complete
 * "data:" line (one leading blank removed; other fields and comments are
 * skipped; a line ends at \n, a \r before it is dropped). on_data returns
 * false to stop early. Returns 0, or -1 when a line passed line_max (the
 * splitter is then empty) or on_data stopped. */
int sse_in_feed(struct sse_in *s, const char *p, size_t n, bool (*on_data)(void *ctx, const char *d, size_t len),
                void *ctx);

/* What one payload of an OpenAI stream says. */
struct sse_event {
    bool done;        /* "[DONE]" */
    bool json;        /* it was a JSON object (anything else is ignored, as OpenAI clients do) */
    bool error;       /* {"error": ...}: the upstream failed mid-stream */
    char message[256];
    const char *text; /* delta.content or text of the first choice; borrowed from the event, NULL if none */
    size_t text_len;
    enum engine_finish finish; /* ENGINE_FINISH_NONE unless a finish_reason came */
    bool have_usage;
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    /* what the first choice carried besides text: {"delta": {its fields
     * but content and role: tool_calls, reasoning_content, ...},
     * "logprobs": ...} with only the keys present; NULL when nothing */
    json_t *extra;
    json_t *root; /* owns text */
};

/* Parse one payload into *ev (free with sse_event_free). */
void sse_event_parse(const char *data, size_t n, struct sse_event *ev);
void sse_event_free(struct sse_event *ev);

#endif
