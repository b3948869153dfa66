/* fuzz_request.c - libFuzzer harness for the OpenAI request parser: the
 * first byte picks the kind (chat, completion, embedding), the rest is the
 * body. A parsed request must be freeable; a refused one must come with an
 * error that renders as an OpenAI error object. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    enum engine_kind kind = (enum engine_kind)(data[0] % 3);
    struct api_request req;
    struct corral_err err;
    corral_err_clear(&err);
    memset(&req, 0, sizeof req);
    enum corral_status st = api_request_parse(kind, (const char *)data + 1, size - 1, &req, &err);
    if (st == CORRAL_OK) {
        if (!req.model) abort(); /* every kind requires one */
        api_request_free(&req);
    } else {
        if (err.status != st || !err.message[0]) abort();
        char *j = api_error_json(&err);
        if (!j) abort();
        free(j);
    }
    return 0;
}
