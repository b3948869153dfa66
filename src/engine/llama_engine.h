/* llama_engine.h - in-process llama.cpp backend with continuous batching. */
#ifndef CORRAL_LLAMA_ENGINE_H
#define CORRAL_LLAMA_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/engine.h"

struct capacity;

struct llama_engine_params {
    const char *id;            /* model id, for logs */
    const char *path;          /* GGUF file */
    int parallel;              /* sequence slots (the pool passes min(parallel, host capacity)) */
    int ctx;                   /* context tokens per slot (capped at the model's training context) */
    int batch;                 /* tokens per decode step */
    int prompt_stall_ms;       /* longest step with prompt tokens while
                                * streams generate (llama_sched.c); 0 = a
                                * `batch` chunk a step */
    int threads;               /* CPU threads for decoding */
    int n_gpu_layers;          /* layers to offload (0 on CPU builds) */
    int flash_attn;            /* 1 on, 0 off, else auto: on (measured on the
                                * CPU too: prompts +10..30%, 8 batched streams
                                * +8..26%; one stream decodes 2-5% slower past
                                * ~512 tokens of context, 4-10% faster below
                                * ~256; see bench/RESULTS.md) */
    size_t prompt_cache;       /* bytes of finished sequences' KV kept in host
                                * memory for later prompts that share a prefix;
                                * 0 = none */
    int queue_size;            /* requests allowed to wait beyond those that can start now */
    struct capacity *gate;     /* admission gate: a permit per running request; NULL = none */
    const char *chat_template; /* a Jinja file, Jinja text or a llama.cpp built-in
                                * template's name; NULL = the model's own */
    const char *chat_template_kwargs; /* extra template variables (JSON object); NULL = none */
    size_t out_cap;            /* per-request output buffer bound */
    /* Called from the loading thread with 0..1 as weights are read; false
     * stops the load (llama_engine_open then fails). May be NULL. */
    bool (*progress)(float fraction, void *ctx);
    void *progress_ctx;
};

/* Call once before opening any model: initialises llama.cpp's backends and
 * routes its log into corral's log. */
void llama_engine_global_init(void);

/* Load the model, create its context and start its scheduler thread. On
 * failure returns NULL and fills *err (file missing, not a GGUF, load failed,
 * context creation failed). Free with engine_free(). */
struct engine *llama_engine_open(const struct llama_engine_params *p, struct corral_err *err);

#endif
