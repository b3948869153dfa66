/* llama_sched.c - the scheduler thread of an in-process model: admission
 * into slots with the longest cached prefix (own, copied from another slot,
 * or restored from the host prompt cache), one batch per step across slots,
 * sampling, text out, and embeddings between steps (llama_embed.c). See
 * llama_engine.c for the design and the slot states. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ggml-cpu.h>

#include "engine/llama_internal.h"
#include "util/log.h"
#include "util/time.h"
#include "util/utf8.h"

static const char llama_engine__json_grammar[] =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) )* \"\\\"\" ws\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static void slot__reset_sampling(struct slot *s) {
    if (s->smpl) llama_sampler_free(s->smpl);
    s->smpl = NULL;
    if (s->grmr) llama_sampler_free(s->grmr);
    s->grmr = NULL;
    llama_lp_free(s);
    stopmatch_free(&s->stop);
    buf_reset(&s->pend);
    buf_reset(&s->emit);
}

void llama_engine__slot_free(struct slot *s) {
    slot__reset_sampling(s);
    buf_free(&s->pend);
    buf_free(&s->emit);
    free(s->g_cur);
    free(s->cache);
}

/* The request's samplers: one chain, with the grammar apart in *grmr;
 * or with logprobs the grammar and penalties in *pre and the rest in the
 * returned chain. */
static struct llama_sampler *llama_engine__sampler(struct llama_engine *e, const struct engine_sampling *sp,
                                                   const struct engine_req *r, struct llama_sampler **pre,
                                                   struct llama_sampler **grmr, struct corral_err *err) {
    const char *grammar = engine_req_grammar(r);
    size_t n_trig = 0;
    const char *const *trig = engine_req_triggers(r, &n_trig);
    struct llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    struct llama_sampler *ch = llama_sampler_chain_init(cp), *first = ch;
    if (pre) *pre = NULL;
    *grmr = NULL;
    if (pre && ch && !(first = *pre = llama_sampler_chain_init(cp))) goto fail;
    if (!ch) goto fail;
    if (sp->json_object && !grammar) grammar = llama_engine__json_grammar;
    if (grammar) {
        struct llama_sampler *g =
            trig ? llama_sampler_init_grammar_lazy_patterns(e->vocab, grammar, "root", (const char **)trig, n_trig,
                                                             NULL, 0)
                 : llama_sampler_init_grammar(e->vocab, grammar, "root");
        if (!g) goto fail;
        if (pre) llama_sampler_chain_add(first, g);
        else *grmr = g;
    }
    if (sp->presence_penalty != 0.0f || sp->frequency_penalty != 0.0f)
        llama_sampler_chain_add(first, llama_sampler_init_penalties(e->n_vocab, 64, 1.0f, sp->frequency_penalty,
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
    if (pre && *pre) llama_sampler_free(*pre);
    if (pre) *pre = NULL;
    if (*grmr) llama_sampler_free(*grmr);
    *grmr = NULL;
    corral_err_set(err, CORRAL_ENGINE, NULL, "could not create the sampler");
    return NULL;
}

/* Sample with a grammar, as llama.cpp's common sampler does: the chain
 * picks from every token, and only when the grammar rejects that pick is
 * the grammar applied to the whole vocabulary and the chain run again.
 * Checking one token instead of ~150k makes a constrained token about as
 * cheap as a free one (the grammar runs over the vocabulary only where
 * it narrows the choice). */
static llama_token llama_engine__sample_grammar(struct llama_engine *e, struct slot *s, int idx) {
    const float *logits = llama_get_logits_ith(e->ctx, idx);
    int nv = e->n_vocab;
    for (int i = 0; i < nv; i++) s->g_cur[i] = (llama_token_data){i, logits[i], 0.0f};
    llama_token_data_array arr = {s->g_cur, (size_t)nv, -1, false};
    llama_sampler_apply(s->smpl, &arr);
    llama_token tok = arr.selected >= 0 ? arr.data[arr.selected].id : 0;
    llama_token_data one = {tok, 1.0f, 0.0f};
    llama_token_data_array check = {&one, 1, -1, false};
    llama_sampler_apply(s->grmr, &check);
    if (!isfinite(one.logit)) {
        for (int i = 0; i < nv; i++) s->g_cur[i] = (llama_token_data){i, logits[i], 0.0f};
        arr = (llama_token_data_array){s->g_cur, (size_t)nv, -1, false};
        llama_sampler_apply(s->grmr, &arr);
        llama_sampler_apply(s->smpl, &arr);
        tok = arr.selected >= 0 ? arr.data[arr.selected].id : tok;
    }
    llama_sampler_accept(s->grmr, tok);
    llama_sampler_accept(s->smpl, tok);
    return tok;
}

/* --------------------------------------------------------------- scheduler */

/* Streams that end in the same step usually belong to clients that send
 * their next request as soon as they have their answer (agents, batch
 * jobs, benchmarks). When several ended together and nothing generates,
 * the first of their next requests waits up to LLAMA_GATHER_US for the
 * others, so their prompts are computed in one step and the streams stay
 * in step; otherwise the first starts alone and the others' prompts, a
 * moment later, stall its tokens (measured: ITL p99 4.9x llama-server's at
 * 8 streams x 64 out without it). A lone request never waits. */
#define LLAMA_GATHER_END_US 20000 /* ends this close count as together (or 1.5 steps) */
#define LLAMA_GATHER_US 5000      /* the longest wait for the rest */

/* Ends this close to the previous one count as together: streams that end
 * in consecutive steps (a batch that drifted a step or two apart) too. */
static int64_t llama_engine__end_window(const struct llama_engine *e) {
    int64_t step = (int64_t)(1.5 * e->cost.step_us);
    return step > LLAMA_GATHER_END_US ? step : LLAMA_GATHER_END_US;
}

/* A prompt that arrives while every generating stream is at most
 * LLAMA_HOLD_STEPS tokens (and LLAMA_HOLD_US) from its max_tokens waits
 * for them to end: joining now would stall their last tokens, and after
 * them its prompt goes with their clients' next ones, in one step, so a
 * batch that drifted apart (a request that came a moment early, prompts
 * spread by the budget) falls back into step. A stream without a known
 * end (no max_tokens) never holds a prompt. */
#define LLAMA_HOLD_STEPS 4
#define LLAMA_HOLD_US 1000000 /* 4 steps of a big model on a CPU */

static bool llama_engine__hold_prompts(const struct llama_engine *e) {
    if (e->cost.step_us <= 0) return false;
    int most = 0;
    bool gen = false;
    for (int i = 0; i < e->n_slots; i++) {
        const struct slot *s = &e->slots[i];
        if (s->state != SLOT_GEN) continue;
        if (s->max_tokens == INT32_MAX) return false;
        int left = s->max_tokens - s->n_decoded;
        int room = e->n_ctx_slot - 1 - s->n_cache;
        if (room < left) left = room;
        if (left > most) most = left;
        gen = true;
    }
    return gen && most <= LLAMA_HOLD_STEPS && most * e->cost.step_us <= LLAMA_HOLD_US;
}

/* Whether a waiting prompt came after a generating stream had begun: the
 * prompt budget protects such streams. Requests of one burst (arrived
 * while the first of them was still in its prompt) are computed like
 * prompts with nothing generating, in as few steps as fit: spread by the
 * budget, every one of them would stall the streams of the burst that
 * started first, step after step (1.1B model, 4 streams x 64 out: ITL p99
 * 7.9x llama-server's). */
static bool llama_engine__joins_streams(const struct llama_engine *e) {
    int64_t latest = 0;
    for (int i = 0; i < e->n_slots; i++) {
        const struct slot *s = &e->slots[i];
        if (s->state != SLOT_PROMPT) continue;
        int64_t c = engine_req_created_us(s->req);
        if (c > latest) latest = c;
    }
    for (int i = 0; i < e->n_slots; i++)
        if (e->slots[i].state == SLOT_GEN && e->slots[i].t_first_us < latest) return true;
    return false;
}

/* Whether to wait a moment for more arrivals before computing prompts. */
static bool llama_engine__gather(struct llama_engine *e, int64_t *until) {
    if (e->ended_together < 2) return false;
    int prompts = 0;
    for (int i = 0; i < e->n_slots; i++) {
        if (e->slots[i].state == SLOT_GEN) return false; /* someone would wait on it */
        prompts += e->slots[i].state == SLOT_PROMPT;
    }
    int64_t now = time_now_us();
    if (prompts == 0 || prompts >= e->ended_together || prompts >= e->n_slots ||
        now - e->last_end_us > llama_engine__end_window(e) + LLAMA_GATHER_US) {
        e->ended_together = 0;
        return false;
    }
    if (!*until) *until = now + LLAMA_GATHER_US;
    if (now >= *until) {
        e->ended_together = 0;
        *until = 0;
        return false;
    }
    return true;
}


/* Hand released text to the request, with its tokens' logprob records. */
static int llama_engine__push(struct slot *s, const char *text, size_t n) {
    return s->lp_on ? llama_lp_push(s, text, n) : engine_req_push(s->req, text, n);
}

/* End a slot's request: report usage, finish or fail, go idle. The KV cells
 * and `cache` stay for prefix reuse. */
static void llama_engine__slot_end(struct llama_engine *e, struct slot *s, enum engine_finish finish,
                                   const struct corral_err *err) {
    if (s->req && !err) {
        int64_t now = time_now_us();
        e->ended_together = now - e->last_end_us <= llama_engine__end_window(e) ? e->ended_together + 1 : 1;
        e->last_end_us = now;
    }
    if (s->req) {
        if (!err && s->n_decoded > 0) { /* release text held back for a stop string */
            buf_reset(&s->emit);
            stopmatch_flush(&s->stop, &s->emit);
            if (s->emit.len) llama_engine__push(s, s->emit.data, s->emit.len);
        }
        struct engine_usage u = {.prompt_tokens = s->n_prompt,
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
    const struct engine_input *in = engine_req_input(r);
    bool want_lp = in->sampling.logprobs;
    struct llama_sampler *pre = NULL;
    s->smpl = llama_engine__sampler(e, &in->sampling, r, want_lp ? &pre : NULL, &s->grmr, &err);
    if (s->smpl && s->grmr && !s->g_cur && !(s->g_cur = malloc((size_t)e->n_vocab * sizeof *s->g_cur))) {
        corral_err_set(&err, CORRAL_NOMEM, NULL, "out of memory");
        llama_sampler_free(s->smpl);
        s->smpl = NULL;
    }
    if (s->smpl && want_lp && llama_lp_start(e, s, in->sampling.top_logprobs, pre) != 0) {
        corral_err_set(&err, CORRAL_NOMEM, NULL, "out of memory");
        llama_sampler_free(s->smpl);
        s->smpl = NULL;
        llama_lp_free(s);
    }
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
    if (e->embed.req) e->took[n++] = e->embed.req;
    engine_req_poll_hangups(e->took, (size_t)n);
}

/* Turn a sampled token into text for the slot; returns true if the slot ended. */
static bool llama_engine__on_token(struct llama_engine *e, struct slot *s, llama_token tok) {
    s->n_decoded++;
    atomic_fetch_add(&e->st_generated, 1);
    if (llama_vocab_is_eog(e->vocab, tok) && !s->ignore_eos) {
        if (s->lp_on) llama_lp_drop_last(s); /* the end is not part of the output */
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
    if (s->emit.len && llama_engine__push(s, s->emit.data, s->emit.len) != 0) {
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
    if (s->state != SLOT_GEN) s->t_first_us = time_now_us();
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

void *llama_engine__run(void *arg) {
    struct llama_engine *e = arg;
    int64_t last_poll = 0, gather_until = 0;
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
        int idle = e->n_slots - atomic_load(&e->busy) + (e->embed.req != NULL);
        e->admit.embed_busy = e->embed.req != NULL;
        int n = admit_take(&e->admit, idle, e->took, idle + 1, &seen);
        if (n < 0) break; /* stopping */
        for (int i = 0; i < n; i++) {
            if (engine_req_input(e->took[i])->kind == ENGINE_EMBEDDING)
                llama_embed_start(e, e->took[i]); /* at most one, and only when none runs */
            else
                llama_engine__admit(e, e->took[i]);
        }
        if (atomic_load(&e->busy) == 0) {
            /* idle: let the compute threads sleep instead of polling, so an
             * idle model takes no CPU from a busy one (the next decode
             * wakes them) */
            if (e->tp) ggml_threadpool_pause(e->tp);
            llama_engine__release_omp();
            admit_wait(&e->admit, seen, -1);
            continue;
        }

        if (!e->embed.req && llama_engine__gather(e, &gather_until)) {
            int64_t left_ms = (gather_until - time_now_us() + 999) / 1000;
            admit_wait(&e->admit, seen, left_ms > 0 ? (int)left_ms : 1);
            continue;
        }
        gather_until = 0;

        /* an embedding batch goes one chunk per step, between decodes, so
         * generating streams keep stepping */
        if (e->embed.req) llama_embed_step(e);

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
        int n_prompts = 0;
        for (int i = 0; i < e->n_slots; i++) {
            struct slot *s = &e->slots[i];
            s->i_batch = -1;
            n_prompts += s->state == SLOT_PROMPT;
            if (s->state != SLOT_GEN) continue;
            s->i_batch = b->n_tokens;
            llama_engine__batch_add(b, s->last, s->n_cache, s->seq, true);
        }
        /* while streams generate, prompts join their steps a budget at a
         * time (engine/stepcost.h); when nothing generates, nobody waits
         * on a step and whole prompts go at once (streams admitted
         * together then also stay in step) */
        int n_gen = b->n_tokens;
        int budget = n_prompts > 0 ? e->n_batch - b->n_tokens : 0;
        if (n_gen > 0 && budget > 0 && llama_engine__hold_prompts(e)) budget = 0;
        if (n_gen > 0 && budget > 0 && llama_engine__joins_streams(e)) {
            int cap = stepcost_budget(&e->cost, e->stall_us, e->n_chunk);
            if (budget > cap) budget = cap;
        }
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
        double dec_us = (double)(time_now_us() - t_dec);
        if (rc == 0) stepcost_learn(&e->cost, n_gen, b->n_tokens - n_gen, dec_us);
        if (log_get_level() <= LOG_DEBUG)
            log_debug("model %s: decoded %d tokens in %.1f ms", e->id, b->n_tokens, dec_us / 1000.0);
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
            llama_token tok = s->lp_on ? llama_lp_sample(e, s, s->i_batch)
                              : s->grmr ? llama_engine__sample_grammar(e, s, s->i_batch)
                                        : llama_sampler_sample(s->smpl, e->ctx, s->i_batch);
            llama_engine__on_token(e, s, tok);
        }
    }

    /* stopping (the queue was failed by admit_stop): fail the running */
    char why[sizeof e->admit.stop_msg];
    admit_stop_msg(&e->admit, why, sizeof why);
    if (e->embed.req) {
        struct corral_err err;
        corral_err_set(&err, CORRAL_UNAVAILABLE, NULL, "%s", why);
        llama_embed_abort(e, &err);
    }
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *s = &e->slots[i];
        if (s->state == SLOT_IDLE) continue;
        struct corral_err err;
        corral_err_set(&err, CORRAL_UNAVAILABLE, NULL, "%s", why);
        llama_engine__slot_end(e, s, ENGINE_FINISH_NONE, &err);
    }
    return NULL;
}
