/* llama_engine.c - in-process llama.cpp backend: one scheduler thread per
 * model doing continuous batching over `parallel` sequence slots.
 *
 * DESIGN
 * The scheduler thread is the only thread that touches the llama_context and
 * the slots. Other threads reach it through the wait queue (struct admit,
 * with its own lock and wake-up). Submit runs on the caller's thread: it formats
 * and tokenises the prompt (so a long prompt never stalls the decode loop)
 * and rejects what cannot fit before anything is queued.
 *
 * Each step the scheduler:
 *   1. takes from its queue (engine/admit.h) the requests that may start:
 *      one per idle slot, each holding a permit from the host's admission
 *      gate, and puts each into the idle slot whose cached tokens share the
 *      longest prefix with the prompt (only the rest is computed). With
 *      nothing to decode it sleeps until a submit, a permit or a stop;
 *   2. builds one llama_batch: one token for every generating slot, then
 *      prompt chunks of admitted slots up to the batch size, so a long prompt
 *      delays the other streams by at most one chunk;
 *   3. decodes, samples every slot that produced logits with its own sampler
 *      chain, and hands text out (whole UTF-8 characters, stop strings held
 *      back until they are known not to match).
 *
 * Slot states:
 *
 *        admit                 last prompt token decoded
 *   IDLE ------> PROMPT ---------------------------------> GEN
 *    ^             |                                        |
 *    |             +--- cancel / error ---------+           |
 *    +------------------------------------------+-----------+ eos / stop /
 *                                                             length / cancel
 *
 * An idle slot keeps its KV cells and the tokens they hold (`cache`), so the
 * next request that starts with the same tokens (a multi-turn chat, a shared
 * system prompt) reuses them.
 */
#include "engine/llama_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ggml-cpu.h>

#include "engine/llama_internal.h"
#include "util/log.h"
#include "util/time.h"

static const struct engine_ops llama_engine__ops;

/* ------------------------------------------------------------------ logging */

static void llama_engine__log_cb(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level != GGML_LOG_LEVEL_ERROR && log_get_level() > LOG_DEBUG) return;
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r')) n--;
    if (n == 0) return;
    log_msg(level == GGML_LOG_LEVEL_ERROR ? LOG_ERROR : LOG_DEBUG, "llama: %.*s", (int)n, text);
}

void llama_engine_global_init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, llama_backend_init);
    llama_log_set(llama_engine__log_cb, NULL);
}

/* --------------------------------------------------------------- lifecycle */

static void llama_engine__stats(struct engine *base, struct engine_stats *out) {
    struct llama_engine *e = (struct llama_engine *)base;
    memset(out, 0, sizeof *out);
    out->slots_total = e->n_slots;
    out->slots_busy = atomic_load(&e->busy);
    out->queued = admit_queued(&e->admit);
    out->queue_cap = e->queue_size;
    out->ctx_per_slot = e->n_ctx_slot;
    out->requests_total = atomic_load(&e->st_requests);
    out->tokens_prompt = atomic_load(&e->st_prompt);
    out->tokens_generated = atomic_load(&e->st_generated);
    out->tokens_cached = atomic_load(&e->st_cached);
    out->prompt_cache_hits = atomic_load(&e->st_pc_hits);
    out->prompt_cache_bytes = (uint64_t)atomic_load(&e->st_pc_bytes);
    out->memory_bytes = e->mem_bytes;
}

static void llama_engine__stop(struct engine *base, const char *why) {
    struct llama_engine *e = (struct llama_engine *)base;
    admit_stop(&e->admit, why ? why : "the model was unloaded");
}

static void llama_engine__join(struct engine *base) {
    struct llama_engine *e = (struct llama_engine *)base;
    pthread_mutex_lock(&e->join_mu);
    if (e->thread_started && !e->joined) {
        pthread_join(e->thread, NULL);
        e->joined = true;
    }
    pthread_mutex_unlock(&e->join_mu);
}

static void llama_engine__free(struct engine *base) {
    struct llama_engine *e = (struct llama_engine *)base;
    if (!e) return;
    llama_engine__stop(base, "the model was unloaded");
    llama_engine__join(base);
    for (int i = 0; e->slots && i < e->n_slots; i++) llama_engine__slot_free(&e->slots[i]);
    free(e->slots);
    free(e->took);
    pcache_free(&e->pc);
    if (e->batch.token) llama_batch_free(e->batch);
    llama_embed_free(e);
    if (e->ctx) llama_free(e->ctx);
    if (e->tp) ggml_threadpool_free(e->tp);
    if (e->model) llama_model_free(e->model);
    admit_free(&e->admit);
    pthread_mutex_destroy(&e->join_mu);
    llama_engine__prompt_free(e);
    free(e->id);
    free(e);
}

static const struct engine_ops llama_engine__ops = {
    .name = "llama",
    .submit = llama_engine__submit,
    .stats = llama_engine__stats,
    .stop = llama_engine__stop,
    .join = llama_engine__join,
    .free = llama_engine__free,
};

struct llama_engine__progress {
    bool (*fn)(float, void *);
    void *ctx;
};

static bool llama_engine__on_progress(float fraction, void *ud) {
    struct llama_engine__progress *pr = ud;
    return pr->fn(fraction, pr->ctx);
}

struct engine *llama_engine_open(const struct llama_engine_params *p, struct corral_err *err) {
    struct stat st;
    if (stat(p->path, &st) != 0) {
        corral_err_set(err, CORRAL_CONFIG, NULL, "model '%s': cannot open %s: %s", p->id, p->path, strerror(errno));
        return NULL;
    }
    struct llama_engine *e = calloc(1, sizeof *e);
    if (!e) {
        corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        return NULL;
    }
    e->base.ops = &llama_engine__ops;
    e->id = strdup(p->id);
    pthread_mutex_init(&e->join_mu, NULL);
    e->queue_size = p->queue_size;
    struct admit_params ap = {.id = e->id ? e->id : "?", .n_slots = p->parallel, .queue_size = p->queue_size,
                              .gate = p->gate, .embed_free = true};
    if (!e->id || admit_init(&e->admit, &ap) != 0) {
        pthread_mutex_destroy(&e->join_mu);
        free(e->id);
        free(e);
        corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        return NULL;
    }
    e->out_cap = p->out_cap;
    e->threads = p->threads;
    pcache_init(&e->pc, p->prompt_cache, LLAMA_ENGINE_PCACHE_ENTRIES);

    int64_t t0 = time_now_ms();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = p->n_gpu_layers;
    struct llama_engine__progress pr = {p->progress, p->progress_ctx};
    if (p->progress) {
        mp.progress_callback = llama_engine__on_progress;
        mp.progress_callback_user_data = &pr;
    }
    e->model = llama_model_load_from_file(p->path, mp);
    if (!e->model) {
        corral_err_set(err, CORRAL_ENGINE, NULL, "model '%s': llama.cpp could not load %s (not a valid GGUF model?)",
                       p->id, p->path);
        goto fail;
    }
    e->vocab = llama_model_get_vocab(e->model);
    e->n_vocab = llama_vocab_n_tokens(e->vocab);
    e->max_piece = 1;
    for (int t = 0; t < e->n_vocab; t++) {
        char piece[LLAMA_ENGINE_PIECE_MAX];
        int n = llama_token_to_piece(e->vocab, t, piece, sizeof piece, 0, true);
        if (n > e->max_piece) e->max_piece = n;
    }

    int train = llama_model_n_ctx_train(e->model);
    e->n_ctx_slot = p->ctx;
    if (train > 0 && e->n_ctx_slot > train) {
        log_warn("model %s: ctx %d is more than the model was trained for; using %d", p->id, p->ctx, train);
        e->n_ctx_slot = train;
    }
    e->n_slots = p->parallel;
    e->n_chunk = p->batch;
    e->stall_us = p->prompt_stall_ms > 0 ? p->prompt_stall_ms * 1000.0 : 0;
    e->n_batch = p->batch > LLAMA_ENGINE_MAX_BATCH ? p->batch : LLAMA_ENGINE_MAX_BATCH;

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)e->n_ctx_slot * (uint32_t)e->n_slots;
    cp.n_batch = (uint32_t)e->n_batch;
    cp.n_ubatch = (uint32_t)e->n_chunk;
    cp.n_seq_max = (uint32_t)e->n_slots;
    cp.n_threads = cp.n_threads_batch = p->threads;
    cp.kv_unified = false;
    bool fa = p->flash_attn != 0; /* auto: on (llama_engine.h says why) */
    cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    e->ctx = llama_init_from_model(e->model, cp);
    if (e->ctx) {
        /* persistent compute threads (llama.cpp otherwise starts threads for
         * every graph), as llama-server has */
        struct ggml_threadpool_params tpp = ggml_threadpool_params_default(p->threads);
        e->tp = ggml_threadpool_new(&tpp);
        if (e->tp) llama_attach_threadpool(e->ctx, e->tp, e->tp);
    }
    if (!e->ctx) {
        corral_err_set(err, CORRAL_ENGINE, NULL,
                       "model '%s': could not create a context of %d slots x %d tokens (out of memory?)", p->id,
                       e->n_slots, e->n_ctx_slot);
        goto fail;
    }
    /* llama.cpp may round the context up (to a multiple of 256) and caps the
     * batch at the context: enforce the configured context, use its batch. */
    if ((int)llama_n_ctx_seq(e->ctx) < e->n_ctx_slot) e->n_ctx_slot = (int)llama_n_ctx_seq(e->ctx);
    e->n_batch = (int)llama_n_batch(e->ctx);
    if (e->n_chunk > e->n_batch) e->n_chunk = e->n_batch;
    e->batch = llama_batch_init(e->n_batch, 0, 1);
    e->slots = calloc((size_t)e->n_slots, sizeof *e->slots);
    e->took = calloc((size_t)e->n_slots + 1, sizeof *e->took);
    if (!e->slots || !e->took) goto nomem;
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *s = &e->slots[i];
        s->seq = i;
        s->i_batch = -1;
        s->cache = malloc((size_t)e->n_ctx_slot * sizeof *s->cache);
        if (!s->cache) goto nomem;
        buf_init(&s->pend, 0);
        buf_init(&s->emit, 0);
    }
    if (llama_engine__prompt_init(e, p->chat_template, p->chat_template_kwargs, err) != 0) goto fail;
    e->mem_bytes = llama_model_size(e->model) + llama_state_get_size(e->ctx);

    if (pthread_create(&e->thread, NULL, llama_engine__run, e) != 0) {
        corral_err_set(err, CORRAL_INTERNAL, NULL, "could not start the scheduler thread");
        goto fail;
    }
    e->thread_started = true;
    log_info("model %s: loaded %s in %lld ms (%d slots x %d ctx, chunk %d, %d threads, flash attention %s, "
             "template %s)",
             p->id, p->path, (long long)(time_now_ms() - t0), e->n_slots, e->n_ctx_slot, e->n_chunk, p->threads,
             fa ? "on" : "off", e->tmpl_name);
    return &e->base;
nomem:
    corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
fail:
    llama_engine__free(&e->base);
    return NULL;
}

