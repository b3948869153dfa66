/* llama_embed.c - embeddings on a second llama context (mean pooling, made
 * on first use), owned by the scheduler thread like the main one.
 *
 * DESIGN
 * An embedding request is a job computed a chunk per scheduler step: inputs
 * one decode each, until LLAMA_ENGINE_EMBED_CHUNK tokens (at least one
 * input) per step, then the step's decode for the generating slots runs.
 * So a batch of 2,048 inputs no longer stalls every stream of the model for
 * the whole batch: a stream waits at most one chunk (or one input longer
 * than a chunk: a pooled input must be one decode) per token. One job runs
 * at a time; the next embedding waits its turn in the queue
 * (admit.embed_busy). A cancelled job, or one of a stopping engine, ends
 * between inputs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/llama_internal.h"
#include "util/log.h"

static bool llama_embed__context(struct llama_engine *e, struct corral_err *err) {
    if (e->ectx) return true;
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
        corral_err_set(err, CORRAL_ENGINE, NULL, "could not create an embeddings context");
        return false;
    }
    e->ebatch = llama_batch_init(e->n_ctx_slot, 0, 1);
    return true;
}

/* End the job: hand over the vectors (ok) or fail it, let the request go. */
static void llama_embed__end(struct llama_engine *e, const struct corral_err *err) {
    struct embed_job *j = &e->embed;
    const struct engine_input *in = engine_req_input(j->req);
    if (!err) {
        engine_req_set_embeddings(j->req, j->vecs, in->n_inputs, (size_t)llama_model_n_embd(e->model));
        struct engine_usage u = {.prompt_tokens = j->tokens};
        engine_req_set_usage(j->req, &u);
        atomic_fetch_add(&e->st_prompt, j->tokens);
        engine_req_finish(j->req, ENGINE_FINISH_STOP);
    } else {
        for (size_t i = 0; j->vecs && i < in->n_inputs; i++) free(j->vecs[i]);
        free(j->vecs);
        engine_req_fail(j->req, err);
    }
    engine_req_release(j->req);
    memset(j, 0, sizeof *j);
    atomic_fetch_sub(&e->busy, 1);
}

void llama_embed_start(struct llama_engine *e, struct engine_req *r) {
    struct embed_job *j = &e->embed;
    j->req = r;
    j->next = 0;
    j->tokens = 0;
    atomic_fetch_add(&e->busy, 1);
    engine_req_set_running(r);
    j->vecs = calloc(engine_req_input(r)->n_inputs, sizeof *j->vecs);
    if (!j->vecs) {
        struct corral_err err;
        corral_err_set(&err, CORRAL_NOMEM, NULL, "out of memory");
        llama_embed__end(e, &err);
    }
}

bool llama_embed_step(struct llama_engine *e) {
    struct embed_job *j = &e->embed;
    if (!j->req) return false;
    struct corral_err err;
    const struct engine_input *in = engine_req_input(j->req);
    if (!llama_embed__context(e, &err)) goto fail;
    int dim = llama_model_n_embd(e->model);
    int64_t done = 0;
    while (j->next < in->n_inputs && (done == 0 || done < LLAMA_ENGINE_EMBED_CHUNK)) {
        if (engine_req_cancelled(j->req)) {
            corral_err_set(&err, CORRAL_CANCELLED, NULL, "request cancelled");
            goto fail;
        }
        size_t len = 0;
        const int32_t *t = engine_req_token_list(j->req, j->next, &len);
        struct llama_batch *b = &e->ebatch;
        llama_memory_clear(llama_get_memory(e->ectx), true);
        for (size_t k = 0; k < len; k++) {
            b->token[k] = t[k];
            b->pos[k] = (llama_pos)k;
            b->n_seq_id[k] = 1;
            b->seq_id[k][0] = 0;
            b->logits[k] = true;
        }
        b->n_tokens = (int32_t)len;
        if (llama_decode(e->ectx, *b) != 0) {
            corral_err_set(&err, CORRAL_ENGINE, NULL, "embedding decode failed");
            goto fail;
        }
        const float *v = llama_get_embeddings_seq(e->ectx, 0);
        float *out = v ? malloc((size_t)dim * sizeof *out) : NULL;
        if (!out) {
            corral_err_set(&err, CORRAL_ENGINE, NULL, "the model produced no embeddings");
            goto fail;
        }
        double norm = 0;
        for (int k = 0; k < dim; k++) norm += (double)v[k] * v[k];
        norm = norm > 0 ? sqrt(norm) : 1.0;
        for (int k = 0; k < dim; k++) out[k] = (float)(v[k] / norm);
        j->vecs[j->next++] = out;
        j->tokens += (int64_t)len;
        done += (int64_t)len;
    }
    if (j->next < in->n_inputs) return true;
    llama_embed__end(e, NULL);
    return false;
fail:
    llama_embed__end(e, &err);
    return false;
}

void llama_embed_abort(struct llama_engine *e, const struct corral_err *err) {
    if (e->embed.req) llama_embed__end(e, err);
}

void llama_embed_free(struct llama_engine *e) {
    if (e->ebatch.token) llama_batch_free(e->ebatch);
    if (e->ectx) llama_free(e->ectx);
    e->ectx = NULL;
}
