/* llama_internal.h - what the in-process engine's files share
 * (llama_engine.c: open, ops and lifecycle; llama_submit.c: prompts and
 * tokens on the caller's thread; llama_sched.c: the scheduler thread;
 * llama_embed.c: embeddings in chunks). Not for other modules. */
#ifndef CORRAL_LLAMA_INTERNAL_H
#define CORRAL_LLAMA_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <llama.h>

#include "engine/admit.h"
#include "engine/llama_engine.h"
#include "engine/pcache.h"
#include "engine/stepcost.h"
#include "engine/stopmatch.h"
#include "util/buf.h"

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

/* Tokens of embedding inputs computed per scheduler step at most (at least
 * one input), so an embedding batch delays generating streams by about one
 * prompt chunk per step. */
#define LLAMA_ENGINE_EMBED_CHUNK 512

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

    struct llama_sampler *smpl; /* the whole chain, or with logprobs the part after them */
    struct llama_sampler *grmr; /* without logprobs: the grammar, checked after the chain picks (see sched) */
    llama_token_data *g_cur;    /* n_vocab scratch for grmr (kept across requests) */
    struct stopmatch stop;
    /* logprobs (llama_logprobs.c) */
    bool lp_on;
    int lp_top;                  /* alternatives wanted */
    struct llama_sampler *lp_pre; /* grammar and penalties, before the log-probabilities */
    llama_token_data *lp_cur;    /* n_vocab scratch */
    float *lp_logit;             /* n_vocab: logits after pre, by token */
    struct engine_logprob *lp_pend; /* records whose text is not yet released */
    size_t lp_n, lp_cap;
    size_t lp_budget;            /* bytes released and not yet matched to a record */
    struct buf pend; /* bytes of an unfinished UTF-8 character */
    struct buf emit; /* scratch for text released this step */

    int64_t t_admit_us;
    int64_t t_first_us; /* when its request's first token was sampled */
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

/* The embedding request being computed, a chunk of inputs per step
 * (scheduler thread only). */
struct embed_job {
    struct engine_req *req; /* NULL = none */
    size_t next;            /* the next input */
    float **vecs;           /* one per input, filled up to next */
    int64_t tokens;
};

struct chat_bridge;

struct llama_engine {
    struct engine base; /* must be first */
    char *id;

    struct llama_model *model;
    const struct llama_vocab *vocab;
    struct llama_context *ctx;
    struct llama_context *ectx; /* embeddings context, created on first use */
    struct llama_batch ebatch;  /* its batch (one input at a time) */
    struct ggml_threadpool *tp; /* the context's compute threads, paused while idle */
    struct chat_bridge *jinja;  /* the Jinja chat template (chat_bridge.h), or NULL for a built-in one */
    char *tmpl;                 /* a llama.cpp built-in template's name when jinja is NULL */
    char *tmpl_name;            /* what the load line says */
    char *tmpl_kwargs;          /* extra template variables (a JSON object), or NULL */
    int32_t *specials;          /* tokens parsed from the template's text, longest first */
    size_t n_specials;
    int n_vocab;
    int n_ctx_slot;
    int n_batch; /* most tokens in one decode call (logical batch) */
    int n_chunk; /* most prompt tokens per step while other slots generate */
    /* streams that ended together (llama_sched.c: gathering their clients' next requests) */
    int64_t last_end_us;
    int ended_together;
    struct stepcost cost; /* measured step costs, for the prompt budget (engine/stepcost.h) */
    double stall_us;      /* the prompt_stall_ms bound; 0 = none */
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
    struct admit admit; /* the bounded queue and the gate's permits */
    int queue_size;
    _Atomic int busy;   /* slots not idle, and an embedding job */
    struct embed_job embed;

    struct pcache pc; /* finished sequences' KV in host memory (scheduler thread only) */

    _Atomic int64_t st_requests, st_prompt, st_generated, st_cached;
    _Atomic int64_t st_pc_hits, st_pc_bytes; /* mirror pc for stats() */
    uint64_t mem_bytes;
};

/* llama_prompt.c: the chat template (want: the configured chat_template,
 * NULL = the model's own) and a chat prompt's tokens, request text never
 * parsed for special tokens; r (may be NULL) gets the output's thinking
 * section. */
int llama_engine__prompt_init(struct llama_engine *e, const char *want, const char *kwargs, struct corral_err *err);
void llama_engine__prompt_free(struct llama_engine *e);
int32_t *llama_engine__chat_tokens(struct llama_engine *e, struct engine_req *r, const struct engine_input *in,
                                   size_t *n, struct corral_err *err);

/* llama_logprobs.c (scheduler thread): sample with log-probabilities;
 * start takes over pre (NULL = none) and needs s->smpl to be the rest of
 * the chain; push is engine_req_push with the records of the tokens the
 * text completes. */
int llama_lp_start(struct llama_engine *e, struct slot *s, int n_top, struct llama_sampler *pre);
llama_token llama_lp_sample(struct llama_engine *e, struct slot *s, int idx);
void llama_lp_drop_last(struct slot *s);
int llama_lp_push(struct slot *s, const char *text, size_t n);
void llama_lp_free(struct slot *s);

/* llama_submit.c: format and tokenise on the caller's thread, then queue. */
enum corral_status llama_engine__submit(struct engine *base, struct engine_req *r, struct corral_err *err);

/* llama_sched.c: the scheduler thread's body. */
void *llama_engine__run(void *arg);
void llama_engine__slot_free(struct slot *s);

/* llama_embed.c (scheduler thread only): take r (queued, permit held) as
 * the embedding job; compute the next chunk of the job (true while it has
 * more); fail the job with err (stopping). */
void llama_embed_start(struct llama_engine *e, struct engine_req *r);
bool llama_embed_step(struct llama_engine *e);
void llama_embed_abort(struct llama_engine *e, const struct corral_err *err);
/* Free the embeddings context (at engine free). */
void llama_embed_free(struct llama_engine *e);

#endif
