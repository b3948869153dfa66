/* engine.c - the request object shared by a transport and an engine.
 *
 * DESIGN
 * One mutex per request guards its output buffer, state and the transport's
 * parked flag. The engine appends text and finishes; the transport takes
 * text and parks when there is none. Wake-ups happen under the same lock as
 * parking, so none is lost. Two references exist while both parties hold
 * the request; the last release frees it.
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include "engine/engine.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capacity/capacity.h"
#include "util/buf.h"
#include "util/time.h"

struct engine_req {
    pthread_mutex_t mu;
    _Atomic int refs;
    _Atomic bool cancelled;
    _Atomic int fd;
    int64_t created_us;
    int64_t queued_us;
    int64_t max_wait_ms;
    struct capacity *permit; /* gate of the permit this request holds, or NULL */

    struct engine_input in;
    char *body;
    size_t body_len;

    /* guarded by mu */
    enum engine_req_state state;
    enum engine_finish finish;
    struct corral_err err;
    struct engine_usage usage;
    struct buf out;
    bool parked;
    enum engine_park park_mode;
    engine_notify_fn notify;
    void *notify_ctx;

    /* engine-owned data */
    int32_t *tokens;
    size_t n_tokens;
    char *grammar;
    char **triggers;
    size_t n_triggers;
    struct chat_syntax *syntax;
    void (*free_syntax)(struct chat_syntax *);
    char think_start[32], think_end[32];
    bool think_opened;
    struct engine_logprob *lps; /* guarded by mu */
    size_t n_lps, cap_lps;
    size_t pushed; /* output bytes pushed so far (guarded by mu) */
    struct engine_extra *extras; /* guarded by mu */
    size_t n_extras, cap_extras;
    _Atomic bool any_extra; /* a record was ever pushed: the per-chunk check skips the lock otherwise */
    int32_t **lists;
    size_t *list_lens;
    size_t n_lists;
    float **vecs;
    size_t n_vecs;
    size_t dim;
};

struct engine_req *engine_req_new(struct engine_input *in, size_t out_cap) {
    struct engine_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancelled, false);
    atomic_init(&r->fd, -1);
    atomic_init(&r->any_extra, false);
    r->created_us = r->queued_us = time_now_us();
    r->max_wait_ms = -1;
    r->in = *in;
    memset(in, 0, sizeof *in);
    buf_init(&r->out, out_cap);
    corral_err_clear(&r->err);
    return r;
}

void engine_req_retain(struct engine_req *r) { atomic_fetch_add(&r->refs, 1); }

void engine_req_release(struct engine_req *r) {
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
    if (r->permit) capacity_release(r->permit);
    engine_input_free(&r->in);
    free(r->body);
    buf_free(&r->out);
    free(r->tokens);
    free(r->grammar);
    for (size_t i = 0; i < r->n_triggers; i++) free(r->triggers[i]);
    free(r->triggers);
    if (r->syntax) r->free_syntax(r->syntax);
    for (size_t i = 0; i < r->n_lps; i++) engine_logprob_clear(&r->lps[i]);
    free(r->lps);
    for (size_t i = 0; i < r->n_extras; i++) free(r->extras[i].json);
    free(r->extras);
    for (size_t i = 0; i < r->n_lists; i++) free(r->lists[i]);
    free(r->lists);
    free(r->list_lens);
    for (size_t i = 0; i < r->n_vecs; i++) free(r->vecs[i]);
    free(r->vecs);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void engine_input_free(struct engine_input *in) {
    if (!in) return;
    /* a message that failed half-way is not counted in n_messages */
    for (size_t i = 0; i < in->n_messages; i++) {
        free(in->messages[i].role);
        free(in->messages[i].content);
        free(in->messages[i].tool_calls);
        free(in->messages[i].tool_call_id);
        free(in->messages[i].name);
    }
    free(in->tools.json);
    free(in->tools.name);
    free(in->messages);
    free(in->prompt);
    free(in->prompt_tokens);
    for (size_t i = 0; in->inputs && i < in->n_inputs; i++) free(in->inputs[i]);
    free(in->inputs);
    for (int i = 0; i < in->sampling.n_stop && i < ENGINE_MAX_STOP; i++) free(in->sampling.stop[i]);
    free(in->sampling.json_schema);
    free(in->sampling.grammar);
    memset(in, 0, sizeof *in);
}

static int engine__dup(char **dst, const char *src) {
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? -1 : 0;
}

int engine_input_copy(struct engine_input *dst, const struct engine_input *src) {
    *dst = *src;
    dst->messages = NULL;
    dst->prompt = NULL;
    dst->prompt_tokens = NULL;
    dst->inputs = NULL;
    dst->n_messages = dst->n_inputs = 0;
    dst->tools.json = dst->tools.name = NULL;
    for (int i = 0; i < ENGINE_MAX_STOP; i++) dst->sampling.stop[i] = NULL;
    dst->sampling.n_stop = 0;
    dst->sampling.json_schema = dst->sampling.grammar = NULL;
    int rc = 0;
    if (src->n_messages && !(dst->messages = calloc(src->n_messages, sizeof *dst->messages))) rc = -1;
    for (size_t i = 0; rc == 0 && i < src->n_messages; i++) {
        rc |= engine__dup(&dst->messages[i].role, src->messages[i].role);
        rc |= engine__dup(&dst->messages[i].content, src->messages[i].content);
        rc |= engine__dup(&dst->messages[i].tool_calls, src->messages[i].tool_calls);
        rc |= engine__dup(&dst->messages[i].tool_call_id, src->messages[i].tool_call_id);
        rc |= engine__dup(&dst->messages[i].name, src->messages[i].name);
        dst->n_messages = i + 1;
    }
    if (rc == 0) rc = engine__dup(&dst->tools.json, src->tools.json);
    if (rc == 0) rc = engine__dup(&dst->tools.name, src->tools.name);
    if (rc == 0) rc = engine__dup(&dst->prompt, src->prompt);
    if (rc == 0 && src->prompt_tokens) {
        dst->prompt_tokens = malloc((src->n_prompt_tokens ? src->n_prompt_tokens : 1) * sizeof *dst->prompt_tokens);
        if (!dst->prompt_tokens) rc = -1;
        else memcpy(dst->prompt_tokens, src->prompt_tokens, src->n_prompt_tokens * sizeof *dst->prompt_tokens);
    }
    if (rc == 0 && src->n_inputs && !(dst->inputs = calloc(src->n_inputs, sizeof *dst->inputs))) rc = -1;
    for (size_t i = 0; rc == 0 && i < src->n_inputs; i++) {
        rc |= engine__dup(&dst->inputs[i], src->inputs[i]);
        dst->n_inputs = i + 1;
    }
    for (int i = 0; rc == 0 && i < src->sampling.n_stop; i++) {
        rc |= engine__dup(&dst->sampling.stop[i], src->sampling.stop[i]);
        dst->sampling.n_stop = i + 1;
    }
    if (rc == 0) rc = engine__dup(&dst->sampling.json_schema, src->sampling.json_schema);
    if (rc == 0) rc = engine__dup(&dst->sampling.grammar, src->sampling.grammar);
    if (rc != 0) engine_input_free(dst);
    return rc;
}

const struct engine_input *engine_req_input(const struct engine_req *r) { return &r->in; }

void engine_req_set_body(struct engine_req *r, char *body, size_t len) {
    free(r->body);
    r->body = body;
    r->body_len = len;
}

const char *engine_req_body(const struct engine_req *r, size_t *len) {
    *len = r->body_len;
    return r->body;
}

void engine_req_set_notify(struct engine_req *r, engine_notify_fn fn, void *ctx) {
    pthread_mutex_lock(&r->mu);
    r->notify = fn;
    r->notify_ctx = ctx;
    pthread_mutex_unlock(&r->mu);
}

void engine_req_set_fd(struct engine_req *r, int fd) { atomic_store(&r->fd, fd); }
int engine_req_fd(const struct engine_req *r) { return atomic_load(&r->fd); }
int64_t engine_req_created_us(const struct engine_req *r) { return r->created_us; }
void engine_req_set_queued_us(struct engine_req *r, int64_t us) { r->queued_us = us; }
int64_t engine_req_queued_us(const struct engine_req *r) { return r->queued_us; }
void engine_req_set_max_wait(struct engine_req *r, int64_t ms) { r->max_wait_ms = ms; }
int64_t engine_req_max_wait_ms(const struct engine_req *r) { return r->max_wait_ms; }
void engine_req_set_permit(struct engine_req *r, struct capacity *gate) {
    pthread_mutex_lock(&r->mu);
    r->permit = gate;
    pthread_mutex_unlock(&r->mu);
}

void engine_req_drop_permit(struct engine_req *r) {
    pthread_mutex_lock(&r->mu);
    struct capacity *gate = r->state == ENGINE_REQ_DONE ? r->permit : NULL;
    if (gate) r->permit = NULL;
    pthread_mutex_unlock(&r->mu);
    if (gate) capacity_release(gate);
}

void engine_req_cancel(struct engine_req *r) { atomic_store(&r->cancelled, true); }

void engine_req_poll_hangups(struct engine_req *const *reqs, size_t n) {
    enum { CHUNK = 256 };
    struct pollfd pfd[CHUNK];
    struct engine_req *who[CHUNK];
    for (size_t i = 0; i < n;) {
        nfds_t k = 0;
        for (; i < n && k < CHUNK; i++) {
            int fd = engine_req_fd(reqs[i]);
            if (fd < 0) continue;
            pfd[k] = (struct pollfd){.fd = fd, .events = POLLRDHUP};
            who[k++] = reqs[i];
        }
        if (k == 0 || poll(pfd, k, 0) <= 0) continue;
        for (nfds_t j = 0; j < k; j++)
            if (pfd[j].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) engine_req_cancel(who[j]);
    }
}
bool engine_req_cancelled(struct engine_req *r) { return atomic_load(&r->cancelled); }

/* Wake the transport if it is parked for `what`. Caller holds r->mu. */
static void engine_req__wake(struct engine_req *r, enum engine_park what) {
    if (r->parked && (what == ENGINE_PARK_DONE || r->park_mode == what)) {
        r->parked = false;
        if (r->notify) r->notify(r->notify_ctx);
    }
}

size_t engine_req_take(struct engine_req *r, char *dst, size_t cap, struct engine_req_view *view) {
    pthread_mutex_lock(&r->mu);
    size_t n = 0;
    if (dst) {
        n = r->out.len < cap ? r->out.len : cap;
        if (n < r->out.len) {
            /* Never split a UTF-8 character between two takes: back off to
             * its lead byte, at most 3 bytes back. Bytes that are no
             * character (a run of continuation bytes, which byte tokens can
             * produce) are split where they fall, and a character longer
             * than cap is split rather than never taken: a take always
             * moves something while output is pending. */
            size_t k = n;
            while (k > 0 && n - k < 3 && ((unsigned char)r->out.data[k] & 0xC0) == 0x80) k--;
            if (k > 0 && ((unsigned char)r->out.data[k] & 0xC0) != 0x80) n = k;
        }
        if (n) {
            memcpy(dst, r->out.data, n);
            buf_consume(&r->out, n);
        }
    }
    if (view) {
        view->state = r->state;
        view->finish = r->finish;
        view->status = r->err.status;
        view->usage = r->usage;
        view->cancelled = atomic_load(&r->cancelled);
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

size_t engine_req_pending(struct engine_req *r) {
    pthread_mutex_lock(&r->mu);
    size_t n = r->out.len;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void engine_req_error(struct engine_req *r, struct corral_err *err) {
    pthread_mutex_lock(&r->mu);
    *err = r->err;
    pthread_mutex_unlock(&r->mu);
}

bool engine_req_park(struct engine_req *r, enum engine_park mode, void (*suspend)(void *ctx), void *ctx) {
    pthread_mutex_lock(&r->mu);
    bool park = r->state != ENGINE_REQ_DONE;
    if (mode == ENGINE_PARK_OUTPUT) park = park && r->out.len == 0 && r->n_extras == 0;
    if (mode == ENGINE_PARK_START) park = park && r->state == ENGINE_REQ_QUEUED;
    if (park) {
        r->parked = true;
        r->park_mode = mode;
        if (suspend) suspend(ctx);
    }
    pthread_mutex_unlock(&r->mu);
    return park;
}

void engine_req_set_running(struct engine_req *r) {
    pthread_mutex_lock(&r->mu);
    if (r->state == ENGINE_REQ_QUEUED) {
        r->state = ENGINE_REQ_RUNNING;
        engine_req__wake(r, ENGINE_PARK_START);
    }
    pthread_mutex_unlock(&r->mu);
}

int engine_req_push(struct engine_req *r, const char *text, size_t n) { return engine_req_push_lp(r, text, n, NULL, 0); }

void engine_req_set_usage(struct engine_req *r, const struct engine_usage *usage) {
    pthread_mutex_lock(&r->mu);
    r->usage = *usage;
    pthread_mutex_unlock(&r->mu);
}

void engine_req_finish(struct engine_req *r, enum engine_finish finish) {
    pthread_mutex_lock(&r->mu);
    if (r->state != ENGINE_REQ_DONE) {
        r->state = ENGINE_REQ_DONE;
        r->finish = finish;
        engine_req__wake(r, ENGINE_PARK_DONE);
    }
    pthread_mutex_unlock(&r->mu);
}

void engine_req_fail(struct engine_req *r, const struct corral_err *err) {
    pthread_mutex_lock(&r->mu);
    if (r->state != ENGINE_REQ_DONE) {
        r->state = ENGINE_REQ_DONE;
        r->err = *err;
        if (r->err.status == CORRAL_OK) r->err.status = CORRAL_INTERNAL;
        engine_req__wake(r, ENGINE_PARK_DONE);
    }
    pthread_mutex_unlock(&r->mu);
}

void engine_req_set_embeddings(struct engine_req *r, float **vecs, size_t n, size_t dim) {
    pthread_mutex_lock(&r->mu);
    r->vecs = vecs;
    r->n_vecs = n;
    r->dim = dim;
    pthread_mutex_unlock(&r->mu);
}

const float *const *engine_req_embeddings(struct engine_req *r, size_t *n, size_t *dim) {
    pthread_mutex_lock(&r->mu);
    *n = r->n_vecs;
    *dim = r->dim;
    const float *const *v = (const float *const *)r->vecs;
    pthread_mutex_unlock(&r->mu);
    return v;
}

void engine_logprob_clear(struct engine_logprob *lp) {
    if (!lp) return;
    free(lp->piece);
    for (int i = 0; i < lp->n_top; i++) free(lp->top[i].piece);
    free(lp->top);
    memset(lp, 0, sizeof *lp);
}

/* Token records a request holds at most (a bound like the output buffer's). */
#define ENGINE_MAX_LOGPROBS (1u << 16)

int engine_req_push_lp(struct engine_req *r, const char *text, size_t n, struct engine_logprob *lps, size_t k) {
    if (n == 0 && k == 0) return 0;
    pthread_mutex_lock(&r->mu);
    int rc = n ? buf_append(&r->out, text, n) : 0;
    if (rc == 0) {
        r->pushed += n;
        if (r->n_lps + k > r->cap_lps && r->n_lps + k <= ENGINE_MAX_LOGPROBS) {
            size_t nc = (r->n_lps + k) * 2;
            struct engine_logprob *nv = realloc(r->lps, nc * sizeof *nv);
            if (nv) {
                r->lps = nv;
                r->cap_lps = nc;
            }
        }
        for (size_t i = 0; i < k; i++) {
            if (r->n_lps < r->cap_lps) { /* past the bound the records are dropped, the text is not */
                lps[i].end = r->pushed;
                r->lps[r->n_lps++] = lps[i];
                memset(&lps[i], 0, sizeof lps[i]);
            }
        }
        engine_req__wake(r, ENGINE_PARK_OUTPUT);
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < k; i++) engine_logprob_clear(&lps[i]);
    return rc;
}

/* Side records a request holds at most. */
#define ENGINE_MAX_EXTRAS (1u << 16)

int engine_req_push_extra(struct engine_req *r, char *json) {
    pthread_mutex_lock(&r->mu);
    int rc = -1;
    if (r->n_extras == r->cap_extras && r->cap_extras < ENGINE_MAX_EXTRAS) {
        size_t nc = r->cap_extras ? r->cap_extras * 2 : 8;
        struct engine_extra *nv = realloc(r->extras, nc * sizeof *nv);
        if (nv) {
            r->extras = nv;
            r->cap_extras = nc;
        }
    }
    if (r->n_extras < r->cap_extras) {
        r->extras[r->n_extras++] = (struct engine_extra){.at = r->pushed, .json = json};
        atomic_store(&r->any_extra, true);
        json = NULL;
        rc = 0;
        engine_req__wake(r, ENGINE_PARK_OUTPUT);
    }
    pthread_mutex_unlock(&r->mu);
    free(json);
    return rc;
}

size_t engine_req_next_extra(struct engine_req *r) {
    if (!atomic_load(&r->any_extra)) return SIZE_MAX; /* in-process engines never push any */
    pthread_mutex_lock(&r->mu);
    size_t at = r->n_extras ? r->extras[0].at : SIZE_MAX;
    pthread_mutex_unlock(&r->mu);
    return at;
}

char *engine_req_take_extra(struct engine_req *r, size_t upto) {
    char *json = NULL;
    if (!atomic_load(&r->any_extra)) return NULL;
    pthread_mutex_lock(&r->mu);
    if (r->n_extras && r->extras[0].at <= upto) {
        json = r->extras[0].json;
        memmove(r->extras, r->extras + 1, (r->n_extras - 1) * sizeof *r->extras);
        r->n_extras--;
    }
    pthread_mutex_unlock(&r->mu);
    return json;
}

size_t engine_req_take_logprobs(struct engine_req *r, size_t upto, struct engine_logprob **out) {
    *out = NULL;
    pthread_mutex_lock(&r->mu);
    size_t n = 0;
    while (n < r->n_lps && r->lps[n].end <= upto) n++;
    if (n > 0 && (*out = malloc(n * sizeof **out))) {
        memcpy(*out, r->lps, n * sizeof **out);
        memmove(r->lps, r->lps + n, (r->n_lps - n) * sizeof *r->lps);
        r->n_lps -= n;
    } else {
        n = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

void engine_req_set_thinking(struct engine_req *r, const char *start, const char *end, bool opened) {
    snprintf(r->think_start, sizeof r->think_start, "%s", start ? start : "");
    snprintf(r->think_end, sizeof r->think_end, "%s", end ? end : "");
    r->think_opened = opened;
}

bool engine_req_thinking(const struct engine_req *r, const char **start, const char **end, bool *opened) {
    if (!r->think_end[0]) return false;
    *start = r->think_start;
    *end = r->think_end;
    *opened = r->think_opened;
    return true;
}

void engine_req_set_grammar(struct engine_req *r, char *grammar) {
    free(r->grammar);
    r->grammar = grammar;
}

const char *engine_req_grammar(const struct engine_req *r) { return r->grammar; }

void engine_req_set_triggers(struct engine_req *r, char **patterns, size_t n) {
    for (size_t i = 0; i < r->n_triggers; i++) free(r->triggers[i]);
    free(r->triggers);
    r->triggers = patterns;
    r->n_triggers = n;
}

const char *const *engine_req_triggers(const struct engine_req *r, size_t *n) {
    *n = r->n_triggers;
    return (const char *const *)r->triggers;
}

void engine_req_set_syntax(struct engine_req *r, struct chat_syntax *syntax,
                           void (*free_syntax)(struct chat_syntax *)) {
    if (r->syntax) r->free_syntax(r->syntax);
    r->syntax = syntax;
    r->free_syntax = free_syntax;
}

const struct chat_syntax *engine_req_syntax(const struct engine_req *r) { return r->syntax; }

void engine_req_set_tokens(struct engine_req *r, int32_t *tokens, size_t n) {
    free(r->tokens);
    r->tokens = tokens;
    r->n_tokens = n;
}

const int32_t *engine_req_tokens(const struct engine_req *r, size_t *n) {
    *n = r->n_tokens;
    return r->tokens;
}

void engine_req_set_token_lists(struct engine_req *r, int32_t **lists, size_t *lens, size_t n) {
    r->lists = lists;
    r->list_lens = lens;
    r->n_lists = n;
}

const int32_t *engine_req_token_list(const struct engine_req *r, size_t i, size_t *len) {
    if (i >= r->n_lists) {
        *len = 0;
        return NULL;
    }
    *len = r->list_lens[i];
    return r->lists[i];
}
