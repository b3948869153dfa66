/* fuzz_sse_in.c - libFuzzer harness for the upstream event-stream reader:
 * the input is split into reads at points its first bytes choose (as curl
 * may deliver it), every "data:" payload is parsed as an OpenAI stream
 * event, and the text it yields must lie inside the event. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sse_in.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool on_data(void *ctx, const char *d, size_t len) {
    size_t *events = ctx;
    struct sse_event ev;
    sse_event_parse(d, len, &ev);
    if (ev.text && !ev.root) abort();
    if (!ev.text && ev.text_len) abort();
    sse_event_free(&ev);
    (*events)++;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t step = (size_t)data[0] % 64 + 1;
    data++;
    size--;
    struct sse_in in;
    sse_in_init(&in, 4096);
    size_t events = 0;
    for (size_t off = 0; off < size;) {
        size_t n = size - off < step ? size - off : step;
        (void)sse_in_feed(&in, (const char *)data + off, n, on_data, &events);
        off += n;
    }
    sse_in_free(&in);
    return 0;
}
