/* llama_submit.c - a request's prompt, made on the caller's thread: chat
 * messages rendered with the model's template (llama_prompt.c), text
 * tokenised, the context bound checked, then queued (engine/admit.h). A long prompt so never
 * stalls the decode loop, and what cannot fit is refused before anything
 * is queued. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat_bridge.h"
#include "engine/llama_internal.h"

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

/* The request's output grammar: its own GBNF or one made from its JSON
 * schema, checked by building it once (a bad one is the client's 400, not
 * a failure after admission). */
static enum corral_status llama_engine__grammar(struct llama_engine *e, struct engine_req *r,
                                                const struct engine_input *in, struct corral_err *err) {
    const struct engine_sampling *sp = &in->sampling;
    char *g = NULL;
    const char *param = "grammar";
    if (sp->json_schema) {
        char why[512];
        param = "response_format";
        if (!(g = chat_bridge_schema_grammar(sp->json_schema, why, sizeof why)))
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "response_format.json_schema.schema", "%s", why);
    } else if (sp->grammar) {
        if (!(g = strdup(sp->grammar))) return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
    } else {
        return CORRAL_OK;
    }
    struct llama_sampler *probe = llama_sampler_init_grammar(e->vocab, g, "root");
    if (!probe) {
        free(g);
        return corral_err_set(err, CORRAL_INVALID_REQUEST, param,
                              "the grammar does not parse as GBNF with a 'root' rule");
    }
    llama_sampler_free(probe);
    engine_req_set_grammar(r, g);
    return CORRAL_OK;
}

/* --------------------------------------------------------------- submit */

enum corral_status llama_engine__submit(struct engine *base, struct engine_req *r,
                                               struct corral_err *err) {
    struct llama_engine *e = (struct llama_engine *)base;
    const struct engine_input *in = engine_req_input(r);

    if (in->kind == ENGINE_EMBEDDING) {
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

    if (llama_engine__grammar(e, r, in, err) != CORRAL_OK) return err->status;
    int32_t *toks = NULL;
    size_t n = 0;
    if (in->kind == ENGINE_CHAT) {
        toks = llama_engine__chat_tokens(e, r, in, &n, err);
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
            return corral_err_set(err, CORRAL_INVALID_REQUEST, in->kind == ENGINE_CHAT ? "messages" : "prompt",
                                  "the prompt is empty");
        }
        toks[0] = bos;
        n = 1;
    }
    if (n >= (size_t)e->n_ctx_slot) {
        free(toks);
        return corral_err_set(err, CORRAL_CONTEXT_LENGTH, in->kind == ENGINE_CHAT ? "messages" : "prompt",
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
