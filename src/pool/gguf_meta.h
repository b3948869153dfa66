/* gguf_meta.h - what a GGUF file's header says about its model (name,
 * architecture, parameter count, quantisation, shape, context length,
 * whether it carries a chat template), read without loading it: corral
 * list and show, and the `meta` of GET /v1/models/ID. */
#ifndef CORRAL_POOL_GGUF_META_H
#define CORRAL_POOL_GGUF_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct gguf_meta {
    char name[96];  /* general.name, or "" */
    char arch[32];  /* general.architecture */
    char quant[16]; /* the tensor type holding most of the weights, e.g. "Q8_0" */
    uint64_t params;     /* elements of every tensor */
    uint64_t file_bytes; /* size on disk */
    int64_t ctx_train, layers, embd, heads, kv_heads; /* 0 when the header does not say */
    bool chat_template;
};

/* 0 with *m filled, or -1 with err (not a GGUF, truncated, unreadable). */
int gguf_meta_read(const char *path, struct gguf_meta *m, char *err, size_t errlen);
/* The meta as a JSON object (a new reference; NULL if out of memory). */
json_t *gguf_meta_json(const struct gguf_meta *m);

#endif
