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
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ggml-cpu.h>
#include <llama.h>

#include "engine/admit.h"
#include "engine/pcache.h"
#include "engine/stopmatch.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/time.h"
#include "util/utf8.h"

/* How often the scheduler polls client sockets for hang-ups (and checks
 * queue deadlines) while it has work or waiters. */
#define LLAMA_ENGINE_POLL_US 20000
/* Logical batch: the most tokens one decode call takes when no stream is
 * waiting on it (llama.cpp splits it into physical batches of `batch`). */
#define LLAMA_ENGINE_MAX_BATCH 2048
/* Fewest extra prefix tokens worth copying another slot's KV stream for. */
#define LLAMA_ENGINE_MIN_COPY 64
/* A sequence is saved to the prompt cache only if at least 1/N of it
 * would be lost. */
#define LLAMA_ENGINE_SAVE_SHARE 4
/* Most sequences the prompt cache keeps (besides its byte bound). */
#define LLAMA_ENGINE_PCACHE_ENTRIES 64
/* Longest a token's text can be (pieces are short; this bounds a stack buffer). */
#define LLAMA_ENGINE_PIECE_MAX 256

static const char llama_engine__json_grammar[] =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) )* \"\\\"\" ws\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

enum slot_state { SLOT_IDLE = 0, SLOT_PROMPT, SLOT_GEN };

struct slot {
    int seq; /* llama sequence id */
    enum slot_state state;
    struct engine_req *req;

    llama_token *cache; /* tokens whose KV is in this sequence, positions 0..n_cache-1 */
    int n_cache;

    const int32_t *prompt;
    int n_prompt;
    int n_reused; /* prompt tokens taken from the cache */
    int n_decoded;
    int max_tokens;
    bool ignore_eos;
    llama_token last; /* sampled, not yet in the KV cache */
    int i_batch;      /* index of this slot's logits in the batch, -1 = none */

    struct llama_sampler *smpl;
    struct stopmatch stop;
    struct buf pend; /* bytes of an unfinished UTF-8 character */
    struct buf emit; /* scratch for text released this step */

    int64_t t_admit_us;
    int64_t last_used_us;
    bool copy_pending; /* its KV was just copied from another slot (applied at the next decode) */
    /* Waiting for another slot to compute a shared prefix, to copy it then:
     * wait_src, still on the request of admission wait_epoch, must reach
 * wait_lcp cached tokens. */
    struct slot *wait_src;
    uint64_t wait_epoch;
    int wait_lcp;
    uint64_t epoch; /* bumped at every admission: tells one request of a slot from the next */
};

struct llama_engine {
    struct engine base; /* must be first */
    char *id;

    struct llama_model *model;
    const struct llama_vocab *vocab;
    struct llama_context *ctx;
    struct llama_context *ectx; /* embeddings context, created on first use */
    struct ggml_threadpool *tp; /* the context's compute threads, paused while idle */
    char *tmpl;                 /* chat template text or a built-in name */
    int n_vocab;
    int n_ctx_slot;
    int n_batch; /* most tokens in one decode call (logical batch) */
    int n_chunk; /* most prompt tokens per step while other slots generate */
    int threads;
    int max_piece; /* longest token text in bytes, for quick prompt-size bounds */
    size_t out_cap;

    struct slot *slots;
    int n_slots;
    struct engine_req **took; /* scheduler scratch: requests admit_take hands over (n_slots + 1) */
    struct llama_batch batch;

    pthread_t thread;
    bool thread_started;
    bool joined;            /* guarded by join_mu */
    pthread_mutex_t join_mu;
    _Atomic bool stopped;   /* stop was called; stop_why is set */
    char stop_why[160];     /* written once, before admit_stop; read after admit_take saw it */
    struct admit admit; /* the bounded queue and the gate's permits */
    int queue_size;
    _Atomic int busy;   /* slots not idle */

    struct pcache pc; /* finished sequences' KV in host memory (scheduler thread only) */

    _Atomic int64_t st_requests, st_prompt, st_generated, st_cached;
    _Atomic int64_t st_pc_hits, st_pc_bytes; /* mirror pc for stats() */
    uint64_t mem_bytes;
};

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

/* ----------------------------------------------------------- small helpers */

static void slot__reset_sampling(struct slot *s) {
    if (s->smpl) llama_sampler_free(s->smpl);
    s->smpl = NULL;
    stopmatch_free(&s->stop);
    buf_reset(&s->pend);
    buf_reset(&s->emit);
}

static struct llama_sampler *llama_engine__sampler(struct llama_engine *e, const struct api_sampling *sp,
                                                   struct corral_err *err) {
    struct llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    struct llama_sampler *ch = llama_sampler_chain_init(cp);
    if (!ch) goto fail;
    if (sp->json_object) {
        struct llama_sampler *g = llama_sampler_init_grammar(e->vocab, llama_engine__json_grammar, "root");
        if (!g) goto fail;
        llama_sampler_chain_add(ch, g);
    }
    if (sp->presence_penalty != 0.0f || sp->frequency_penalty != 0.0f)
        llama_sampler_chain_add(ch, llama_sampler_init_penalties(e->n_vocab, 64, 1.0f, sp->frequency_penalty,
                                                                 sp->presence_penalty));
    if (sp->temperature <= 0.0f) {
        llama_sampler_chain_add(ch, llama_sampler_init_greedy());
    } else {
        if (sp->top_k > 0) llama_sampler_chain_add(ch, llama_sampler_init_top_k(sp->top_k));
        if (sp->top_p < 1.0f) llama_sampler_chain_add(ch, llama_sampler_init_top_p(sp->top_p, 1));
        if (sp->min_p > 0.0f) llama_sampler_chain_add(ch, llama_sampler_init_min_p(sp->min_p, 1));
        llama_sampler_chain_add(ch, llama_sampler_init_temp(sp->temperature));
        uint32_t seed = sp->has_seed ? (uint32_t)(sp->seed ^ (sp->seed >> 32)) : LLAMA_DEFAULT_SEED;
        llama_sampler_chain_add(ch, llama_sampler_init_dist(seed));
    }
    return ch;
fail:
    if (ch) llama_sampler_free(ch);
    corral_err_set(err, CORRAL_ENGINE, NULL, "could not create the sampler");
    return NULL;
}

/* Render chat messages with the model's template. Returns malloc'd text. */
static char *llama_engine__chat_prompt(struct llama_engine *e, const struct api_request *in,
                                       struct corral_err *err) {
    struct llama_chat_message *msgs = calloc(in->n_messages ? in->n_messages : 1, sizeof *msgs);
    size_t total = 64;
    if (!msgs) goto nomem;
    for (size_t i = 0; i < in->n_messages; i++) {
        const char *role = in->messages[i].role;
        msgs[i].role = strcmp(role, "developer") == 0 ? "system" : role;
        msgs[i].content = in->messages[i].content;
        total += strlen(msgs[i].content) + strlen(role) + 32;
    }
    if (total > INT32_MAX / 2) {
        free(msgs);
        corral_err_set(err, CORRAL_TOO_LARGE, "messages", "messages are too long");
        return NULL;
    }
    char *out = NULL;
    int32_t cap = (int32_t)(total * 2);
    for (int attempt = 0; attempt < 2; attempt++) {
        char *nb = realloc(out, (size_t)cap + 1);
        if (!nb) goto nomem_out;
        out = nb;
        int32_t n = llama_chat_apply_template(e->tmpl, msgs, in->n_messages, true, out, cap);
        if (n < 0) {
            free(out);
            free(msgs);
            corral_err_set(err, CORRAL_ENGINE, "messages", "the model's chat template could not be applied");
            return NULL;
        }
        if (n <= cap) {
            out[n] = '\0';
            free(msgs);
            return out;
        }
        cap = n;
    }
nomem_out:
    free(out);
nomem:
    free(msgs);
    corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory formatting the prompt");
    return NULL;
}

/* Tokenise text. Returns malloc'd tokens and their count in *n, or NULL. A
 * prompt that cannot fit `limit` tokens is refused before tokenising when its
 * byte length alone proves it (every token is at most max_piece bytes). */
static int32_t *llama_engine__tokenize(struct llama_engine *e, const char *text, size_t len, int limit,
                                       const char *param, size_t *n, struct corral_err *err) {
    if (len / (size_t)e->max_piece > (size_t)limit + 2) {
        corral_err_set(err, CORRAL_CONTEXT_LENGTH, param,
                       "this model's maximum context length is %d tokens, but the prompt (%zu bytes) "
                       "is far longer; shorten it",
                       e->n_ctx_slot, len);
        return NULL;
    }
    if (len > INT32_MAX - 16) {
        corral_err_set(err, CORRAL_TOO_LARGE, param, "prompt too long");
        return NULL;
    }
    int32_t cap = (int32_t)len + 8;
    int32_t *toks = malloc((size_t)cap * sizeof *toks);
    if (!toks) {
        corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory tokenising the prompt");
        return NULL;
    }
    int32_t k = llama_tokenize(e->vocab, text, (int32_t)len, toks, cap, true, true);
    if (k < 0) {
        int32_t need = -k;
        int32_t *nt = realloc(toks, (size_t)need * sizeof *toks);
        if (!nt) {
            free(toks);
            corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory tokenising the prompt");
            return NULL;
        }
        toks = nt;
        k = llama_tokenize(e->vocab, text, (int32_t)len, toks, need, true, true);
    }
    if (k < 0) {
        free(toks);
        corral_err_set(err, CORRAL_ENGINE, param, "tokenisation failed");
        return NULL;
    }
    *n = (size_t)k;
    return toks;
}

/* --------------------------------------------------------------- submit */

static enum corral_status llama_engine__submit(struct engine *base, struct engine_req *r,
                                               struct corral_err *err) {
    struct llama_engine *e = (struct llama_engine *)base;
    const struct api_request *in = engine_req_input(r);

    if (in->kind == API_EMBEDDING) {
        int32_t **lists = calloc(in->n_inputs, sizeof *lists);
        size_t *lens = calloc(in->n_inputs, sizeof *lens);
        if (!lists || !lens) {
            free(lists);
            free(lens);
            return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        }
        for (size_t i = 0; i < in->n_inputs; i++) {
            char param[32];
            snprintf(param, sizeof param, "input[%zu]", i);
            lists[i] = llama_engine__tokenize(e, in->inputs[i], strlen(in->inputs[i]), e->n_ctx_slot,
                                              in->n_inputs == 1 ? "input" : param, &lens[i], err);
            if (!lists[i]) goto embed_fail;
            if (lens[i] == 0) {
                corral_err_set(err, CORRAL_INVALID_REQUEST, in->n_inputs == 1 ? "input" : param,
                               "input %zu has no tokens", i);
                goto embed_fail;
            }
            if (lens[i] > (size_t)e->n_ctx_slot) {
                corral_err_set(err, CORRAL_CONTEXT_LENGTH, in->n_inputs == 1 ? "input" : param,
                               "this model's maximum context length is %d tokens, but input %zu has %zu tokens",
                               e->n_ctx_slot, i, lens[i]);
                goto embed_fail;
            }
        }
        engine_req_set_token_lists(r, lists, lens, in->n_inputs);
        goto enqueue;
    embed_fail:
        for (size_t i = 0; i < in->n_inputs; i++) free(lists[i]);
        free(lists);
        free(lens);
        return err->status;
    }

    int32_t *toks = NULL;
    size_t n = 0;
    if (in->kind == API_CHAT) {
        char *text = llama_engine__chat_prompt(e, in, err);
        if (!text) return err->status;
        toks = llama_engine__tokenize(e, text, strlen(text), e->n_ctx_slot, "messages", &n, err);
        free(text);
    } else if (in->prompt_tokens) {
        toks = malloc((in->n_prompt_tokens ? in->n_prompt_tokens : 1) * sizeof *toks);
        if (!toks) return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
        for (size_t i = 0; i < in->n_prompt_tokens; i++) {
            if (in->prompt_tokens[i] < 0 || in->prompt_tokens[i] >= e->n_vocab) {
                free(toks);
                return corral_err_set(err, CORRAL_INVALID_REQUEST, "prompt",
                                      "token %d at prompt[%zu] is outside the vocabulary (0..%d)",
                                      in->prompt_tokens[i], i, e->n_vocab - 1);
            }
            toks[i] = in->prompt_tokens[i];
        }
        n = in->n_prompt_tokens;
    } else {
        toks = llama_engine__tokenize(e, in->prompt, strlen(in->prompt), e->n_ctx_slot, "prompt", &n, err);
    }
    if (!toks) return err->status;
    if (n == 0) {
        llama_token bos = llama_vocab_bos(e->vocab);
        if (bos == LLAMA_TOKEN_NULL) {
            free(toks);
            return corral_err_set(err, CORRAL_INVALID_REQUEST, in->kind == API_CHAT ? "messages" : "prompt",
                                  "the prompt is empty");
        }
        toks[0] = bos;
        n = 1;
    }
    if (n >= (size_t)e->n_ctx_slot) {
        free(toks);
        return corral_err_set(err, CORRAL_CONTEXT_LENGTH, in->kind == API_CHAT ? "messages" : "prompt",
                              "this model's maximum context length is %d tokens, but the prompt has %zu "
                              "tokens (leave room for at least one generated token)",
                              e->n_ctx_slot, n);
    }
    engine_req_set_tokens(r, toks, n);

enqueue:;
    enum corral_status st = admit_submit(&e->admit, r, atomic_load(&e->busy), err);
    if (st == CORRAL_OK) atomic_fetch_add(&e->st_requests, 1);
    return st;
}

/* --------------------------------------------------------------- scheduler */


/* End a slot's request: report usage, finish or fail, go idle. The KV cells
 * and `cache` stay for prefix reuse. */
static void llama_engine__slot_end(struct llama_engine *e, struct slot *s, enum engine_finish finish,
                                   const struct corral_err *err) {
    if (s->req) {
        if (!err && s->n_decoded > 0) { /* release text held back for a stop string */
            buf_reset(&s->emit);
            stopmatch_flush(&s->stop, &s->emit);
            if (s->emit.len) engine_req_push(s->req, s->emit.data, s->emit.len);
        }
        struct api_usage u = {.prompt_tokens = s->n_prompt,
                              .completion_tokens = s->n_decoded,
                              .cached_tokens = s->n_reused};
        engine_req_set_usage(s->req, &u);
        if (err)
            engine_req_fail(s->req, err);
        else
            engine_req_finish(s->req, finish);
        engine_req_release(s->req);
        s->req = NULL;
    }
    slot__reset_sampling(s);
    s->state = SLOT_IDLE;
    s->i_batch = -1;
    s->last_used_us = time_now_us();
    atomic_fetch_sub(&e->busy, 1);
}

/* Length of the common prefix of two token arrays. */
static int llama_engine__lcp(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb, l = 0;
    while (l < n && a[l] == b[l]) l++;
    return l;
}

/* Make s's sequence a copy of src's first n tokens (the copy itself is done
 * by llama.cpp before the next decode). */
static void llama_engine__copy_prefix(struct llama_engine *e, struct slot *s, struct slot *src, int n) {
    llama_memory_t mem = llama_get_memory(e->ctx);
    llama_memory_seq_cp(mem, src->seq, s->seq, -1, -1);
    llama_memory_seq_rm(mem, s->seq, n, -1);
    memcpy(s->cache, src->cache, (size_t)n * sizeof *s->cache);
    s->n_cache = n;
    s->copy_pending = true;
    log_debug("model %s: slot %d takes a %d-token prefix from slot %d", e->id, s->seq, n, src->seq);
}

/* Keep s's sequence in the prompt cache before it is overwritten, unless
 * the cache or another slot already holds it (or a longer one). Costs a
 * copy of its KV on the scheduler thread (~0.75 ms per MiB on the 2-core
 * test VM). */
static void llama_engine__save(struct llama_engine *e, struct slot *s) {
    /* a copy into s still queued in llama.cpp: its KV is not what s->cache says yet */
    if (s->n_cache < LLAMA_ENGINE_MIN_COPY || e->pc.max_bytes == 0 || s->copy_pending) return;
    struct pcache_entry *have = pcache_covering(&e->pc, s->cache, s->n_cache);
    if (have) {
        pcache_touch(&e->pc, have);
        return;
    }
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *o = &e->slots[i];
        if (o != s && o->n_cache >= s->n_cache && !o->copy_pending &&
            llama_engine__lcp(o->cache, o->n_cache, s->cache, s->n_cache) == s->n_cache)
            return;
    }
    size_t size = llama_state_seq_get_size(e->ctx, s->seq);
    if (!pcache_fits(&e->pc, size)) return;
    void *buf = malloc(size);
    if (!buf) return;
    size_t got = llama_state_seq_get_data(e->ctx, buf, size, s->seq);
    if (got == 0 || got > size) {
        free(buf);
        return;
    }
    int rc = pcache_put(&e->pc, s->cache, s->n_cache, buf, got);
    atomic_store(&e->st_pc_bytes, (int64_t)e->pc.bytes);
    if (rc == 0)
        log_debug("model %s: kept slot %d's %d tokens in the prompt cache (%zu KiB; %d entries, %zu MiB)", e->id,
                  s->seq, s->n_cache, got / 1024, e->pc.n, e->pc.bytes >> 20);
}

/* Make s's sequence the cached one's first n tokens. Returns false (s
 * emptied) if llama.cpp refused the state. */
static bool llama_engine__restore(struct llama_engine *e, struct slot *s, struct pcache_entry *en, int n) {
    llama_memory_t mem = llama_get_memory(e->ctx);
    if (llama_state_seq_set_data(e->ctx, en->state, en->size, s->seq) == 0) {
        llama_memory_seq_rm(mem, s->seq, -1, -1);
        s->n_cache = 0;
        return false;
    }
    llama_memory_seq_rm(mem, s->seq, n, -1);
    memcpy(s->cache, en->tokens, (size_t)n * sizeof *s->cache);
    s->n_cache = n;
    pcache_touch(&e->pc, en);
    atomic_fetch_add(&e->st_pc_hits, 1);
    log_debug("model %s: slot %d takes a %d-token prefix from the prompt cache", e->id, s->seq, n);
    return true;
}

/* Put r (taken from the queue, holding a permit) into an idle slot, reusing
 * the longest cached prefix. If it cannot start (no idle slot, no sampler)
 * r is failed and released. */
static void llama_engine__admit(struct llama_engine *e, struct engine_req *r) {
    size_t np = 0;
    const int32_t *p = engine_req_tokens(r, &np);
    struct slot *best = NULL;
    int best_lcp = -1;
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *s = &e->slots[i];
        if (s->state != SLOT_IDLE) continue;
        int lcp = 0;
        while (lcp < s->n_cache && (size_t)lcp < np && s->cache[lcp] == p[lcp]) lcp++;
        if (lcp > best_lcp || (lcp == best_lcp && s->last_used_us < best->last_used_us)) {
            best = s;
            best_lcp = lcp;
        }
    }
    struct corral_err err;
    if (!best) {
        corral_err_set(&err, CORRAL_INTERNAL, NULL, "no free slot for an admitted request");
        engine_req_fail(r, &err);
        engine_req_release(r);
        return;
    }
    struct slot *s = best;
    const struct api_request *in = engine_req_input(r);
    s->smpl = llama_engine__sampler(e, &in->sampling, &err);
    if (!s->smpl) {
        engine_req_fail(r, &err);
        engine_req_release(r);
        return;
    }
    llama_memory_t mem = llama_get_memory(e->ctx);
    /* A longer prefix held by another slot, busy or idle, is copied instead
     * of computed (eight clients with one system prompt compute it once).
     * Across KV streams llama.cpp copies a whole stream (done before the
     * next decode); the tail past the common prefix is dropped below. A
     * slot that is itself a copy's target this step is not a source. */
    struct slot *src = NULL, *pend = NULL;
    int src_lcp = best_lcp, pend_lcp = best_lcp;
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *o = &e->slots[i];
        if (o == s || o->copy_pending) continue;
        int l = llama_engine__lcp(o->cache, o->n_cache, p, (int)np);
        if (l > src_lcp) {
            src = o;
            src_lcp = l;
        }
        /* a prompt being computed now that shares more: wait for it */
        if (o->state == SLOT_PROMPT && !o->wait_src) {
            int lp = llama_engine__lcp(o->prompt, o->n_prompt, p, (int)np);
            if (lp > pend_lcp) {
                pend = o;
                pend_lcp = lp;
            }
        }
    }
    int pc_lcp = 0;
    struct pcache_entry *pc = pcache_best(&e->pc, p, (int)np, &pc_lcp);
    /* what s holds past the part this prompt keeps is about to go; a save
     * copies the whole sequence (41 MiB for 1,146 tokens of the 134M model:
     * ~30 ms on a 2-core VM), so it is worth it only when the part lost is
     * a good share of it (not for eight chats that keep one long system
     * prompt and lose only their short questions) */
    int keeps = best_lcp;
    if (src_lcp > keeps || pend_lcp > keeps || pc_lcp > keeps) keeps = 0;
    int lost = s->n_cache - keeps;
    if (lost >= LLAMA_ENGINE_MIN_COPY && lost >= s->n_cache / LLAMA_ENGINE_SAVE_SHARE) {
        llama_engine__save(e, s);
        pc = pcache_best(&e->pc, p, (int)np, &pc_lcp); /* saving may have evicted */
    }
    s->wait_src = NULL;
    if (pc && pc_lcp >= best_lcp + LLAMA_ENGINE_MIN_COPY && pc_lcp >= src_lcp && pc_lcp >= pend_lcp) {
        if ((size_t)pc_lcp >= np) pc_lcp = (int)np - 1;
        best_lcp = llama_engine__restore(e, s, pc, pc_lcp) ? pc_lcp : 0;
    } else if (src && src_lcp >= best_lcp + LLAMA_ENGINE_MIN_COPY && src_lcp >= pend_lcp) {
        llama_engine__copy_prefix(e, s, src, src_lcp);
        best_lcp = src_lcp;
    } else if (pend && pend_lcp >= best_lcp + LLAMA_ENGINE_MIN_COPY) {
        /* several requests with one system prompt arrived together: this
         * one starts once the other has computed the shared part */
        s->wait_src = pend;
        s->wait_epoch = pend->epoch;
        s->wait_lcp = pend_lcp;
    }
    int lcp = best_lcp;
    if ((size_t)lcp >= np) lcp = (int)np - 1; /* recompute the last token for its logits */
    if (!llama_memory_seq_rm(mem, s->seq, lcp, -1)) {
        llama_memory_seq_rm(mem, s->seq, -1, -1);
        lcp = 0;
    }
    s->n_cache = lcp;
    s->req = r;
    s->prompt = p;
    s->n_prompt = (int)np;
    s->n_reused = lcp;
    s->n_decoded = 0;
    s->max_tokens = in->sampling.max_tokens > 0 ? in->sampling.max_tokens : INT32_MAX;
    s->ignore_eos = in->sampling.ignore_eos;
    s->i_batch = -1;
    s->t_admit_us = time_now_us();
    s->epoch++;
    stopmatch_init(&s->stop, (const char *const *)in->sampling.stop, in->sampling.n_stop);
    s->state = SLOT_PROMPT;
    atomic_fetch_add(&e->busy, 1);
    atomic_fetch_add(&e->st_cached, lcp);
    atomic_fetch_add(&e->st_prompt, (int64_t)np);
    engine_req_set_running(r);
}

/* Poll the sockets of the running requests for hang-ups and cancel those
 * whose client is gone (admit_poll_hangups does the queued ones). */
static void llama_engine__poll_clients(struct llama_engine *e) {
    int n = 0;
    for (int i = 0; i < e->n_slots; i++)
        if (e->slots[i].req) e->took[n++] = e->slots[i].req;
    engine_req_poll_hangups(e->took, (size_t)n);
}

/* Compute embeddings for one request on the embeddings context. */
static void llama_engine__embed(struct llama_engine *e, struct engine_req *r) {
    struct corral_err err;
    if (!e->ectx) {
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = (uint32_t)e->n_ctx_slot;
        cp.n_batch = cp.n_ubatch = (uint32_t)e->n_ctx_slot;
        cp.n_seq_max = 1;
        cp.n_threads = cp.n_threads_batch = e->threads;
        cp.embeddings = true;
        cp.pooling_type = LLAMA_POOLING_TYPE_MEAN;
        cp.no_perf = true;
        e->ectx = llama_init_from_model(e->model, cp);
        if (!e->ectx) {
            corral_err_set(&err, CORRAL_ENGINE, NULL, "could not create an embeddings context");
            engine_req_fail(r, &err);
            return;
        }
    }
    const struct api_request *in = engine_req_input(r);
    int dim = llama_model_n_embd(e->model);
    float **vecs = calloc(in->n_inputs, sizeof *vecs);
    struct llama_batch b = llama_batch_init(e->n_ctx_slot, 0, 1);
    int64_t ntok = 0;
    if (!vecs) goto nomem;
    for (size_t i = 0; i < in->n_inputs; i++) {
        if (engine_req_cancelled(r)) {
            corral_err_set(&err, CORRAL_CANCELLED, NULL, "request cancelled");
            goto fail;
        }
        size_t len = 0;
        const int32_t *t = engine_req_token_list(r, i, &len);
        llama_memory_clear(llama_get_memory(e->ectx), true);
        b.n_tokens = 0;
        for (size_t k = 0; k < len; k++) {
            b.token[k] = t[k];
            b.pos[k] = (llama_pos)k;
            b.n_seq_id[k] = 1;
            b.seq_id[k][0] = 0;
            b.logits[k] = true;
        }
        b.n_tokens = (int32_t)len;
        if (llama_decode(e->ectx, b) != 0) {
            corral_err_set(&err, CORRAL_ENGINE, NULL, "embedding decode failed");
            goto fail;
        }
        const float *v = llama_get_embeddings_seq(e->ectx, 0);
        vecs[i] = malloc((size_t)dim * sizeof(float));
        if (!v || !vecs[i]) {
            corral_err_set(&err, CORRAL_ENGINE, NULL, "the model produced no embeddings");
            goto fail;
        }
        double norm = 0;
        for (int k = 0; k < dim; k++) norm += (double)v[k] * v[k];
        norm = norm > 0 ? sqrt(norm) : 1.0;
        for (int k = 0; k < dim; k++) vecs[i][k] = (float)(v[k] / norm);
        ntok += (int64_t)len;
    }
    llama_batch_free(b);
    engine_req_set_embeddings(r, vecs, in->n_inputs, (size_t)dim);
    struct api_usage u = {.prompt_tokens = ntok};
    engine_req_set_usage(r, &u);
    atomic_fetch_add(&e->st_prompt, ntok);
    engine_req_finish(r, ENGINE_FINISH_STOP);
    return;
nomem:
    corral_err_set(&err, CORRAL_NOMEM, NULL, "out of memory");
fail:
    llama_batch_free(b);
    if (vecs)
        for (size_t i = 0; i < in->n_inputs; i++) free(vecs[i]);
    free(vecs);
    engine_req_fail(r, &err);
}

/* Turn a sampled token into text for the slot; returns true if the slot ended. */
static bool llama_engine__on_token(struct llama_engine *e, struct slot *s, llama_token tok) {
    s->n_decoded++;
    atomic_fetch_add(&e->st_generated, 1);
    if (llama_vocab_is_eog(e->vocab, tok) && !s->ignore_eos) {
        llama_engine__slot_end(e, s, ENGINE_FINISH_STOP, NULL);
        return true;
    }
    char piece[LLAMA_ENGINE_PIECE_MAX];
    int n = llama_token_to_piece(e->vocab, tok, piece, sizeof piece, 0, false);
    if (n < 0) n = 0;
    buf_append(&s->pend, piece, (size_t)n);
    size_t ready = utf8_complete_prefix(s->pend.data ? s->pend.data : "", s->pend.len);
    buf_reset(&s->emit);
    bool stopped = false;
    if (ready) {
        stopped = stopmatch_feed(&s->stop, s->pend.data, ready, &s->emit);
        buf_consume(&s->pend, ready);
    }
    if (s->emit.len && engine_req_push(s->req, s->emit.data, s->emit.len) != 0) {
        struct corral_err err;
        corral_err_set(&err, CORRAL_CANCELLED, NULL, "client too slow: output buffer full");
        log_warn("model %s: cancelling a request whose client does not read its output", e->id);
        llama_engine__slot_end(e, s, ENGINE_FINISH_NONE, &err);
        return true;
    }
    if (stopped) {
        buf_reset(&s->emit); /* nothing after the stop string is sent */
        s->stop.matched = true;
        llama_engine__slot_end(e, s, ENGINE_FINISH_STOP, NULL);
        return true;
    }
    if (s->n_decoded >= s->max_tokens || s->n_cache + 1 >= e->n_ctx_slot) {
        llama_engine__slot_end(e, s, ENGINE_FINISH_LENGTH, NULL);
        return true;
    }
    s->last = tok;
    s->state = SLOT_GEN;
    return false;
}

static void llama_engine__batch_add(struct llama_batch *b, llama_token t, llama_pos pos, int seq, bool logits) {
    int i = b->n_tokens++;
    b->token[i] = t;
    b->pos[i] = pos;
    b->n_seq_id[i] = 1;
    b->seq_id[i][0] = seq;
    b->logits[i] = logits;
}

/* When ggml computes with OpenMP (its default build), the threadpool above
 * is not used: each scheduler thread that runs a graph gets its own libgomp
 * team, kept after the graph. Once the idle teams of other loaded models
 * bring libgomp's thread count above the CPU count, libgomp throttles every
 * barrier wait in the process to ~100 spins before a futex sleep, and the
 * busy model's graphs (hundreds of barriers per token) slow down by half
 * (7.5 -> 11-12 ms per token with a second model loaded, 134M model, 2
 * cores). So an idle scheduler hands its team back; the next graph starts a
 * new one (one thread create per request). A weak reference: a build
 * without OpenMP has no such team and this is a no-op. */
extern int omp_pause_resource_all(int kind) __attribute__((weak));
#define LLAMA_ENGINE_OMP_PAUSE_SOFT 1 /* omp_pause_soft */

static void llama_engine__release_omp(void) {
    if (omp_pause_resource_all) (void)omp_pause_resource_all(LLAMA_ENGINE_OMP_PAUSE_SOFT);
}

static void *llama_engine__run(void *arg) {
    struct llama_engine *e = arg;
    int64_t last_poll = 0;
    struct engine_req *embed_req = NULL;
    for (;;) {
        /* 1. admission: the queued requests that may start now, each with
         *    a permit; with nothing to decode, sleep until there is news */
        int64_t now = time_now_us();
        if (now - last_poll >= LLAMA_ENGINE_POLL_US) {
            llama_engine__poll_clients(e);
            admit_poll_hangups(&e->admit);
            last_poll = now;
        }
        uint64_t seen = 0;
        int idle = e->n_slots - atomic_load(&e->busy);
        int n = admit_take(&e->admit, idle, e->took, idle + 1, &seen);
        if (n < 0) break; /* stopping */
        for (int i = 0; i < n; i++) {
            if (engine_req_input(e->took[i])->kind == API_EMBEDDING) {
                embed_req = e->took[i]; /* at most one per take */
                engine_req_set_running(embed_req);
            } else
                llama_engine__admit(e, e->took[i]);
        }
        if (atomic_load(&e->busy) == 0 && !embed_req) {
            /* idle: let the compute threads sleep instead of polling, so an
             * idle model takes no CPU from a busy one (the next decode
             * wakes them) */
            if (e->tp) ggml_threadpool_pause(e->tp);
            llama_engine__release_omp();
            admit_wait(&e->admit, seen, -1);
            continue;
        }

        if (embed_req) {
            atomic_fetch_add(&e->busy, 1);
            llama_engine__embed(e, embed_req);
            atomic_fetch_sub(&e->busy, 1);
            engine_req_release(embed_req);
            embed_req = NULL;
        }

        /* 2. cancelled slots end now: their cells are freed before the next decode */
        for (int i = 0; i < e->n_slots; i++) {
            struct slot *s = &e->slots[i];
            if (s->state != SLOT_IDLE && engine_req_cancelled(s->req)) {
                struct corral_err err;
                corral_err_set(&err, CORRAL_CANCELLED, NULL, "request cancelled");
                llama_engine__slot_end(e, s, ENGINE_FINISH_NONE, &err);
            }
        }

        /* 3. build the batch: generating slots first, then prompt chunks */
        struct llama_batch *b = &e->batch;
        b->n_tokens = 0;
        for (int i = 0; i < e->n_slots; i++) {
            struct slot *s = &e->slots[i];
            s->i_batch = -1;
            if (s->state != SLOT_GEN) continue;
            s->i_batch = b->n_tokens;
            llama_engine__batch_add(b, s->last, s->n_cache, s->seq, true);
        }
        /* While streams are generating, a prompt advances one chunk per
         * step so it delays them by at most one chunk; when nothing is
         * generating, nobody waits on a step and whole prompts go at once
         * (streams admitted together then also stay in step). */
        int budget = e->n_batch - b->n_tokens;
        if (b->n_tokens > 0 && budget > e->n_chunk) budget = e->n_chunk;
        for (int i = 0; i < e->n_slots && budget > 0; i++) {
            struct slot *s = &e->slots[i];
            if (s->state != SLOT_PROMPT) continue;
            if (s->wait_src) {
                struct slot *src = s->wait_src;
                if (src->epoch != s->wait_epoch || src->state == SLOT_IDLE) {
                    s->wait_src = NULL; /* it went away: compute the prefix here */
                } else if (src->n_cache >= s->wait_lcp && !src->copy_pending) {
                    int shared = s->wait_lcp < s->n_prompt ? s->wait_lcp : s->n_prompt - 1;
                    llama_engine__copy_prefix(e, s, src, shared);
                    atomic_fetch_add(&e->st_cached, shared - s->n_reused);
                    s->n_reused = shared;
                    s->wait_src = NULL;
                } else {
                    continue; /* not there yet */
                }
            }
            int left = s->n_prompt - s->n_cache;
            int take = left < budget ? left : budget;
            for (int k = 0; k < take; k++) {
                int pos = s->n_cache + k;
                bool last = pos == s->n_prompt - 1;
                if (last) s->i_batch = b->n_tokens;
                llama_engine__batch_add(b, s->prompt[pos], pos, s->seq, last);
            }
            budget -= take;
        }
        if (b->n_tokens == 0) continue;

        /* 4. decode */
        int64_t t_dec = time_now_us();
        int rc = llama_decode(e->ctx, *b);
        if (log_get_level() <= LOG_DEBUG)
            log_debug("model %s: decoded %d tokens in %.1f ms", e->id, b->n_tokens, (time_now_us() - t_dec) / 1000.0);
        if (rc != 0) {
            log_error("model %s: llama_decode failed (%d) on a batch of %d tokens", e->id, rc, b->n_tokens);
            struct corral_err err;
            corral_err_set(&err, CORRAL_ENGINE, NULL, "inference failed (llama_decode returned %d)", rc);
            llama_memory_t mem = llama_get_memory(e->ctx);
            for (int i = 0; i < e->n_slots; i++) {
                struct slot *s = &e->slots[i];
                if (s->state == SLOT_IDLE) continue;
                llama_memory_seq_rm(mem, s->seq, -1, -1);
                s->n_cache = 0;
                llama_engine__slot_end(e, s, ENGINE_FINISH_NONE, &err);
            }
            continue;
        }
        /* the batch's tokens are now in the KV cache, and pending copies done */
        for (int i = 0; i < e->n_slots; i++) e->slots[i].copy_pending = false;
        for (int i = 0; i < b->n_tokens; i++) {
            struct slot *s = &e->slots[b->seq_id[i][0]];
            s->cache[b->pos[i]] = b->token[i];
            if (b->pos[i] + 1 > s->n_cache) s->n_cache = b->pos[i] + 1;
        }

        /* 5. sample */
        for (int i = 0; i < e->n_slots; i++) {
            struct slot *s = &e->slots[i];
            if (s->i_batch < 0 || s->state == SLOT_IDLE) continue;
            if (s->state == SLOT_PROMPT && s->n_cache < s->n_prompt) continue;
            llama_token tok = llama_sampler_sample(s->smpl, e->ctx, s->i_batch);
            llama_engine__on_token(e, s, tok);
        }
    }

    /* stopping (the queue was failed by admit_stop): fail the running */
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *s = &e->slots[i];
        if (s->state == SLOT_IDLE) continue;
        struct corral_err err;
        corral_err_set(&err, CORRAL_UNAVAILABLE, NULL, "%s", e->stop_why);
        llama_engine__slot_end(e, s, ENGINE_FINISH_NONE, &err);
    }
    return NULL;
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
    bool was = false;
    if (atomic_compare_exchange_strong(&e->stopped, &was, true)) {
        snprintf(e->stop_why, sizeof e->stop_why, "%s", why ? why : "the model was unloaded");
        admit_stop(&e->admit, e->stop_why);
    }
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
    for (int i = 0; i < e->n_slots; i++) {
        slot__reset_sampling(&e->slots[i]);
        buf_free(&e->slots[i].pend);
        buf_free(&e->slots[i].emit);
        free(e->slots[i].cache);
    }
    free(e->slots);
    free(e->took);
    pcache_free(&e->pc);
    if (e->batch.token) llama_batch_free(e->batch);
    if (e->ectx) llama_free(e->ectx);
    if (e->ctx) llama_free(e->ctx);
    if (e->tp) ggml_threadpool_free(e->tp);
    if (e->model) llama_model_free(e->model);
    admit_free(&e->admit);
    pthread_mutex_destroy(&e->join_mu);
    free(e->tmpl);
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

/* Choose the chat template: the configured one, else the model's, else
 * chatml; each must be one llama_chat_apply_template understands. */
static char *llama_engine__pick_template(struct llama_engine *e, const char *want) {
    struct llama_chat_message probe = {"user", "hi"};
    char tmp[256];
    const char *cands[3] = {want, llama_model_chat_template(e->model, NULL), "chatml"};
    for (int i = 0; i < 3; i++) {
        if (!cands[i]) continue;
        if (llama_chat_apply_template(cands[i], &probe, 1, true, tmp, sizeof tmp) >= 0) {
            if (i == 2)
                log_warn("model %s: %s; using the chatml template", e->id,
                         cands[1] ? "its chat template is not recognised" : "it has no chat template");
            else if (i == 1 && want)
                log_warn("model %s: chat_template \"%s\" is not recognised; using the model's own", e->id, want);
            return strdup(cands[i]);
        }
    }
    return strdup("chatml");
}

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
    e->n_batch = p->batch > LLAMA_ENGINE_MAX_BATCH ? p->batch : LLAMA_ENGINE_MAX_BATCH;

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)e->n_ctx_slot * (uint32_t)e->n_slots;
    cp.n_batch = (uint32_t)e->n_batch;
    cp.n_ubatch = (uint32_t)e->n_chunk;
    cp.n_seq_max = (uint32_t)e->n_slots;
    cp.n_threads = cp.n_threads_batch = p->threads;
    cp.kv_unified = false;
    bool fa = p->flash_attn == 1 || (p->flash_attn != 0 && p->n_gpu_layers > 0);
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
    e->tmpl = llama_engine__pick_template(e, p->chat_template);
    e->mem_bytes = llama_model_size(e->model) + llama_state_get_size(e->ctx);

    if (pthread_create(&e->thread, NULL, llama_engine__run, e) != 0) {
        corral_err_set(err, CORRAL_INTERNAL, NULL, "could not start the scheduler thread");
        goto fail;
    }
    e->thread_started = true;
    log_info("model %s: loaded %s in %lld ms (%d slots x %d ctx, chunk %d, %d threads, flash attention %s, "
             "template %s)",
             p->id, p->path, (long long)(time_now_ms() - t0), e->n_slots, e->n_ctx_slot, e->n_chunk, p->threads,
             fa ? "on" : "off", strlen(e->tmpl) < 32 ? e->tmpl : "from the model");
    return &e->base;
nomem:
    corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
fail:
    llama_engine__free(&e->base);
    return NULL;
}
