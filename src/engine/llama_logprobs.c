/* llama_logprobs.c - sampling that also reports log-probabilities
 * (scheduler thread only).
 *
 * DESIGN
 * A request that asks for logprobs samples in two chains instead of one:
 * `pre` (the grammar and the penalties) shapes the logits, the
 * log-probabilities are taken from that distribution (a log-softmax over
 * the whole vocabulary, before temperature and truncation, which would make
 * most alternatives -inf), then `post` (top-k, top-p, min-p, temperature,
 * the draw; or greedy) picks the token, and both chains accept it. Each
 * token's record waits in the slot until its text is released (a stop
 * string or an unfinished UTF-8 character holds text back), so a record
 * goes out in the same push as the last byte of its token's text; records
 * of text a stop string cut off are dropped with it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/llama_internal.h"

void llama_lp_free(struct slot *s) {
    if (s->lp_pre) llama_sampler_free(s->lp_pre);
    s->lp_pre = NULL;
    free(s->lp_cur);
    free(s->lp_logit);
    s->lp_cur = NULL;
    s->lp_logit = NULL;
    for (size_t i = 0; i < s->lp_n; i++) engine_logprob_clear(&s->lp_pend[i]);
    free(s->lp_pend);
    s->lp_pend = NULL;
    s->lp_n = s->lp_cap = s->lp_budget = 0;
    s->lp_on = false;
}

int llama_lp_start(struct llama_engine *e, struct slot *s, int n_top, struct llama_sampler *pre) {
    s->lp_on = true;
    s->lp_top = n_top < 0 ? 0 : n_top > ENGINE_MAX_TOP_LOGPROBS ? ENGINE_MAX_TOP_LOGPROBS : n_top;
    s->lp_pre = pre;
    s->lp_cur = malloc((size_t)e->n_vocab * sizeof *s->lp_cur);
    s->lp_logit = malloc((size_t)e->n_vocab * sizeof *s->lp_logit);
    return s->lp_cur && s->lp_logit ? 0 : -1;
}

static char *lp__piece(struct llama_engine *e, llama_token t, size_t *len) {
    char buf[LLAMA_ENGINE_PIECE_MAX];
    int n = llama_token_to_piece(e->vocab, t, buf, sizeof buf, 0, false);
    if (n < 0) n = 0;
    char *p = malloc((size_t)n + 1);
    if (p) {
        memcpy(p, buf, (size_t)n);
        p[n] = '\0';
    }
    *len = p ? (size_t)n : 0;
    return p;
}

llama_token llama_lp_sample(struct llama_engine *e, struct slot *s, int idx) {
    const float *logits = llama_get_logits_ith(e->ctx, idx);
    int nv = e->n_vocab;
    for (int i = 0; i < nv; i++) s->lp_cur[i] = (llama_token_data){i, logits[i], 0.0f};
    llama_token_data_array arr = {s->lp_cur, (size_t)nv, -1, false};
    if (s->lp_pre) llama_sampler_apply(s->lp_pre, &arr);
    for (int i = 0; i < nv; i++) s->lp_logit[i] = -INFINITY;
    float mx = -INFINITY;
    for (size_t i = 0; i < arr.size; i++) {
        s->lp_logit[arr.data[i].id] = arr.data[i].logit;
        if (arr.data[i].logit > mx) mx = arr.data[i].logit;
    }
    double sum = 0.0;
    for (size_t i = 0; i < arr.size; i++)
        if (isfinite(arr.data[i].logit)) sum += exp((double)(arr.data[i].logit - mx));
    float lse = mx + (float)log(sum > 0 ? sum : 1.0);
    /* the n_top most likely, by insertion (n_top <= 20) */
    llama_token best[ENGINE_MAX_TOP_LOGPROBS];
    int nb = 0;
    for (int i = 0; i < nv && s->lp_top > 0; i++) {
        float l = s->lp_logit[i];
        if (!isfinite(l) || (nb == s->lp_top && l <= s->lp_logit[best[nb - 1]])) continue;
        int at = nb < s->lp_top ? nb++ : nb - 1;
        while (at > 0 && s->lp_logit[best[at - 1]] < l) {
            best[at] = best[at - 1];
            at--;
        }
        best[at] = i;
    }
    llama_sampler_apply(s->smpl, &arr); /* post: may sort and truncate arr */
    llama_token tok = arr.selected >= 0 ? arr.data[arr.selected].id : (nb ? best[0] : 0);
    if (s->lp_pre) llama_sampler_accept(s->lp_pre, tok);
    llama_sampler_accept(s->smpl, tok);

    if (s->lp_n == s->lp_cap) {
        size_t nc = s->lp_cap ? s->lp_cap * 2 : 16;
        struct engine_logprob *np = realloc(s->lp_pend, nc * sizeof *np);
        if (!np) return tok; /* no record for this one */
        s->lp_pend = np;
        s->lp_cap = nc;
    }
    struct engine_logprob *lp = &s->lp_pend[s->lp_n];
    memset(lp, 0, sizeof *lp);
    lp->piece = lp__piece(e, tok, &lp->len);
    lp->logprob = isfinite(s->lp_logit[tok]) ? s->lp_logit[tok] - lse : -9999.0f;
    if (nb > 0 && (lp->top = calloc((size_t)nb, sizeof *lp->top))) {
        for (int i = 0; i < nb; i++) {
            lp->top[i].piece = lp__piece(e, best[i], &lp->top[i].len);
            lp->top[i].logprob = s->lp_logit[best[i]] - lse;
        }
        lp->n_top = nb;
    }
    s->lp_n++;
    return tok;
}

void llama_lp_drop_last(struct slot *s) {
    if (s->lp_n > 0) engine_logprob_clear(&s->lp_pend[--s->lp_n]);
}

int llama_lp_push(struct slot *s, const char *text, size_t n) {
    s->lp_budget += n;
    size_t k = 0;
    while (k < s->lp_n && s->lp_pend[k].len <= s->lp_budget) s->lp_budget -= s->lp_pend[k++].len;
    int rc = engine_req_push_lp(s->req, text, n, s->lp_pend, k); /* takes the first k records */
    memmove(s->lp_pend, s->lp_pend + k, (s->lp_n - k) * sizeof *s->lp_pend);
    s->lp_n -= k;
    return rc;
}
