/* call.c - one inference call (chat, completion, embedding) for any
 * transport: parse, submit to the pool, then hand out its events.
 *
 * DESIGN
 * The call owns one engine request and model pin per choice (`n`). Its
 * transport asks for the next event (svc_call_next) and, when there is
 * none, parks the call (svc_call_park): the engine's next matching change
 * runs the transport's notify, which brings it back to svc_call_next. What
 * a park waits for follows the call's phase: a whole response waits for
 * the end, a stream not yet admitted for its start (so a request refused
 * while queued still gets its own status), a running stream for output.
 *
 * With several choices (as many as API_MAX_CHOICES; past the free slots
 * they run in turn, each finished one giving its permit back at once)
 * the call parks every request that has nothing to say, with the call's
 * own notify: under the call's lock it either finds an event that came in
 * meanwhile (`news`) or marks itself parked and
 * suspends its transport, and a request's wake-up takes the same lock, so
 * no wake-up is lost. Each choice is its own request: it takes its own
 * admission permit, its prompt is shared through the engine's prefix
 * reuse (a slot copies another's KV), and it samples with its own seed.
 *
 * The events are the same for every transport: the HTTP transport frames
 * a chunk as an SSE event, JSON-RPC as a stream.chunk notification.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/openai.h"
#include "engine/chat_bridge.h"
#include "pool/pool.h"
#include "service/delta.h"
#include "service/internal.h"
#include "service/think.h"
#include "util/time.h"

/* Bytes of engine text turned into one chunk at most. */
#define SVC_TAKE_MAX 16384
/* Output an engine may hold for one call before its client is "too slow". */
#define SVC_OUT_CAP (4u << 20)

struct svc_choice {
    struct engine_req *req;
    struct pool_pin *pin;
    size_t taken; /* output bytes taken so far (the logprob records follow them) */
    bool sent_role, sent_finish;
    bool done; /* seen DONE by svc_call_next (whole responses) */
    /* a reasoning model's thinking apart from its answer (think.h) */
    int think_on; /* 0 = not looked yet, 1 = split, -1 = no */
    struct think think;
    struct buf reason, answer; /* split text not yet sent */
    /* a chat with tools: the output parsed with the template's call syntax */
    int tools_on; /* 0 = not looked yet, 1 = parsed, -1 = no */
    struct chat_parse *parse;
    struct buf all;    /* the whole output so far */
    size_t owed;       /* output bytes whose logprobs have not gone out */
    bool parsed_final; /* the whole output was parsed */
    /* an upstream's side records (tool calls, reasoning, logprobs) */
    size_t out_taken;    /* output bytes taken so far */
    bool upstream_calls; /* a side record carried tool calls */
};

struct svc_call {
    struct service *svc;
    struct svc_choice ch[API_MAX_CHOICES];
    int n;
    int next; /* the choice a stream looks at first (round robin) */
    enum engine_kind kind;
    bool stream;
    bool include_usage;
    bool base64;
    bool logprobs;
    bool reasoning_none;
    char id[48];
    int64_t created;
    char *model;

    bool started; /* SVC_EV_START was handed out */
    bool sent_usage;
    bool ended; /* SVC_EV_END was handed out */
    char *take;

    /* the transport's wake-up, behind the call's own (see DESIGN) */
    engine_notify_fn notify;
    void *notify_ctx;
    pthread_mutex_t mu;
    bool parked, news;
};

static const char *svc__finish_name(enum engine_finish f) { return f == ENGINE_FINISH_LENGTH ? "length" : "stop"; }

/* A choice's request has news (the engine's thread, under its lock). */
static void svc__notify(void *ctx) {
    struct svc_call *c = ctx;
    pthread_mutex_lock(&c->mu);
    bool wake = c->parked;
    c->parked = false;
    if (!wake) c->news = true;
    if (wake && c->notify) c->notify(c->notify_ctx);
    pthread_mutex_unlock(&c->mu);
}

/* The raw body for choice i of n: as sent, or with n 1 and its own seed
 * for backends that forward it. */
static char *svc__body_for(const char *body, size_t len, int i, int n, size_t *out_len) {
    if (n == 1) {
        *out_len = len;
        return (char *)body;
    }
    json_t *root = json_loadb(body, len, 0, NULL);
    if (!root) return NULL;
    json_object_set_new(root, "n", json_integer(1));
    json_t *seed = json_object_get(root, "seed");
    if (json_is_integer(seed)) json_object_set_new(root, "seed", json_integer(json_integer_value(seed) + i));
    char *out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    *out_len = out ? strlen(out) : 0;
    return out;
}

enum corral_status svc_call_start(struct service *s, const struct svc_method *m, char *body, size_t len,
                                  const struct svc_call_params *p, struct svc_call **out, struct corral_err *err) {
    *out = NULL;
    struct api_request in;
    memset(&in, 0, sizeof in);
    enum engine_kind kind = m->id == SVC_CHAT ? ENGINE_CHAT : m->id == SVC_COMPLETIONS ? ENGINE_COMPLETION
                                                                                        : ENGINE_EMBEDDING;
    enum corral_status st = api_request_parse(kind, body ? body : "", body ? len : 0, &in, err);
    if (st != CORRAL_OK) {
        free(body);
        return st;
    }
    struct svc_call *c = calloc(1, sizeof *c);
    bool nomem = !c;
    if (c) {
        pthread_mutex_init(&c->mu, NULL);
        c->svc = s;
        c->kind = kind;
        c->n = in.n > 0 ? in.n : 1;
        c->model = strdup(in.model);
        c->stream = in.stream && kind != ENGINE_EMBEDDING;
        c->include_usage = in.include_usage;
        c->base64 = in.encoding_base64;
        c->logprobs = in.in.sampling.logprobs;
        c->reasoning_none = in.reasoning_none;
        c->created = time_wall_s();
        c->notify = p->notify;
        c->notify_ctx = p->notify_ctx;
        api_make_id(kind == ENGINE_CHAT ? "chatcmpl-" : kind == ENGINE_COMPLETION ? "cmpl-" : "emb-", c->id,
                    sizeof c->id);
        for (int i = 0; i < c->n && !nomem; i++) {
            struct engine_input copy;
            if (i + 1 < c->n) {
                if (engine_input_copy(&copy, &in.in) != 0) {
                    nomem = true;
                    break;
                }
                if (copy.sampling.has_seed) copy.sampling.seed += (uint64_t)(c->n - 1 - i);
            }
            /* the last choice takes the parsed input itself (choice 0 keeps the request's seed) */
            int idx = c->n - 1 - i;
            c->ch[idx].req = engine_req_new(i + 1 < c->n ? &copy : &in.in, SVC_OUT_CAP);
            if (!c->ch[idx].req) nomem = true;
        }
        if (c->stream) c->take = malloc(SVC_TAKE_MAX);
        nomem |= !c->model || (c->stream && !c->take);
    }
    api_request_free(&in);
    if (nomem) {
        free(body);
        svc_call_free(c);
        return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
    }
    for (int i = 0; i < c->n; i++) {
        struct engine_req *r = c->ch[i].req;
        /* the raw body rides along for backends that forward it; the pool
         * drops it for in-process models */
        size_t blen = 0;
        char *b = body ? svc__body_for(body, len, i, c->n, &blen) : NULL; /* n == 1: body itself */
        engine_req_set_body(r, b, b ? blen : 0);
        engine_req_set_fd(r, p->fd);
        engine_req_set_notify(r, svc__notify, c);
        engine_req_set_max_wait(r, p->max_wait_ms >= 0 ? p->max_wait_ms : s->queue_timeout_ms);
    }
    if (c->n > 1) free(body); /* each choice has its own copy */
    /* each submits now, or once the model is loaded; the model stays
     * pinned until the call is freed */
    for (int i = 0; i < c->n; i++) {
        st = pool_submit(s->pool, c->model, c->ch[i].req, &c->ch[i].pin, err);
        if (st != CORRAL_OK) {
            svc_call_free(c);
            return st;
        }
    }
    *out = c;
    return CORRAL_OK;
}

const char *svc_call_id(const struct svc_call *c) { return c->id; }
bool svc_call_streaming(const struct svc_call *c) { return c->stream; }

void svc_call_cancel(struct svc_call *c) {
    for (int i = 0; i < c->n; i++) engine_req_cancel(c->ch[i].req);
}

bool svc_call_park(struct svc_call *c, void (*suspend)(void *ctx), void *ctx) {
    if (c->ended) return false;
    enum engine_park mode = !c->stream ? ENGINE_PARK_DONE : !c->started ? ENGINE_PARK_START : ENGINE_PARK_OUTPUT;
    int parked = 0;
    for (int i = 0; i < c->n; i++) {
        /* a finished choice has nothing more to wait for (svc_call_next saw it) */
        if ((mode == ENGINE_PARK_DONE && c->ch[i].done) || (mode == ENGINE_PARK_OUTPUT && c->ch[i].sent_finish))
            continue;
        if (!engine_req_park(c->ch[i].req, mode, NULL, NULL)) return false;
        parked++;
    }
    if (parked == 0) return false; /* every choice is done: the end is there to take */
    pthread_mutex_lock(&c->mu);
    bool news = c->news;
    c->news = false;
    if (!news) {
        c->parked = true;
        if (suspend) suspend(ctx);
    }
    pthread_mutex_unlock(&c->mu);
    return !news;
}

/* The logprobs object of choice i's records for its next n output bytes
 * (NULL when the request did not ask for them). */
static json_t *svc__logprobs(struct svc_call *c, int i, size_t n) {
    if (!c->logprobs) return NULL;
    struct svc_choice *ch = &c->ch[i];
    size_t from = ch->taken;
    ch->taken += n;
    struct engine_logprob *lp = NULL;
    size_t k = engine_req_take_logprobs(ch->req, ch->taken, &lp);
    json_t *o = api_logprobs_json(c->kind, lp, k, from);
    for (size_t j = 0; j < k; j++) engine_logprob_clear(&lp[j]);
    free(lp);
    return o;
}

/* Whether a choice's request was submitted (the engine sets its output's
 * shape then): it left the queue. Until then it has no output to shape. */
static bool svc__submitted(struct svc_choice *ch) {
    struct engine_req_view v;
    engine_req_take(ch->req, NULL, 0, &v);
    return v.state != ENGINE_REQ_QUEUED;
}

/* Whether a choice's output is parsed for tool calls (a chat whose
 * template gave the request a call syntax). */
static bool svc__tools(struct svc_call *c, struct svc_choice *ch) {
    if (ch->tools_on == 0 && (c->kind != ENGINE_CHAT || svc__submitted(ch))) {
        const struct chat_syntax *syn = c->kind == ENGINE_CHAT ? engine_req_syntax(ch->req) : NULL;
        ch->tools_on = -1;
        if (syn && (ch->parse = chat_parse_new(syn))) {
            buf_init(&ch->all, 0);
            ch->tools_on = 1;
        }
    }
    return ch->tools_on > 0;
}

/* finish_reason of choice i: "tool_calls" when it called a tool. */
static const char *svc__finish(struct svc_call *c, int i, enum engine_finish f) {
    struct svc_choice *ch = &c->ch[i];
    if (f != ENGINE_FINISH_LENGTH &&
        ((ch->tools_on > 0 && chat_parse_calls(ch->parse) > 0) || ch->upstream_calls))
        return "tool_calls";
    return svc__finish_name(f);
}

/* Whether choice i's output is split into thinking and answer (known
 * once its request was submitted: the engine finds the section). A chat
 * with tools is split by its call syntax instead. */
static bool svc__thinks(struct svc_call *c, struct svc_choice *ch) {
    if (svc__tools(c, ch)) return false;
    if (ch->think_on == 0 && (c->kind != ENGINE_CHAT || svc__submitted(ch))) {
        const char *start, *end;
        bool opened;
        ch->think_on = -1;
        if (c->kind == ENGINE_CHAT && !c->reasoning_none && engine_req_thinking(ch->req, &start, &end, &opened)) {
            think_init(&ch->think, start, end, opened);
            buf_init(&ch->reason, 0);
            buf_init(&ch->answer, 0);
            ch->think_on = 1;
        }
    }
    return ch->think_on > 0;
}

/* A chat chunk whose delta holds fields (reasoning_content, content,
 * tool_calls; taken over). Takes over logprobs. */
static char *svc__delta_chunk(struct svc_call *c, int i, json_t *fields, json_t *logprobs) {
    return api_chunk_json_delta(c->id, c->created, c->model, i, fields, c->include_usage, logprobs);
}

/* A chat chunk whose delta is reasoning text. Takes over logprobs. */
static char *svc__reasoning_chunk(struct svc_call *c, int i, const char *text, size_t n, json_t *logprobs) {
    json_t *fields = json_pack("{s:s%}", "reasoning_content", text, n);
    if (!fields) {
        json_decref(logprobs);
        return NULL;
    }
    return svc__delta_chunk(c, i, fields, logprobs);
}

/* Usage over every choice: the prompt once, every choice's completion. */
static struct engine_usage svc__usage(struct svc_call *c) {
    struct engine_usage u = {0};
    for (int i = 0; i < c->n; i++) {
        struct engine_req_view v;
        engine_req_take(c->ch[i].req, NULL, 0, &v);
        if (i == 0) {
            u.prompt_tokens = v.usage.prompt_tokens;
            u.cached_tokens = v.usage.cached_tokens;
        }
        u.completion_tokens += v.usage.completion_tokens;
    }
    return u;
}

/* An upstream's side records of choice i, put together with its text
 * into the whole response's message and logprobs. */
static void svc__extras_whole(struct svc_call *c, int i, const char *text, size_t len, struct api_choice *out) {
    struct delta_acc acc;
    delta_acc_init(&acc);
    char *x;
    while ((x = engine_req_take_extra(c->ch[i].req, SIZE_MAX))) {
        json_t *j = json_loads(x, 0, NULL);
        free(x);
        delta_acc_add(&acc, j);
        json_decref(j);
    }
    c->ch[i].upstream_calls = delta_acc_calls(&acc) > 0;
    if (c->kind == ENGINE_CHAT) out->message = delta_acc_message(&acc, text, len);
    json_t *lp = delta_acc_logprobs(&acc);
    if (lp) {
        json_decref(out->logprobs);
        out->logprobs = lp;
    }
    delta_acc_free(&acc);
}

/* A whole (non-streaming) response, once every choice is done. */
static void svc__whole(struct svc_call *c, struct svc_result *res) {
    struct engine_req_view v;
    engine_req_take(c->ch[0].req, NULL, 0, &v);
    if (c->kind == ENGINE_EMBEDDING) {
        size_t n = 0, dim = 0;
        const float *const *vecs = engine_req_embeddings(c->ch[0].req, &n, &dim);
        svc__result_json(res, 200, api_embeddings_json(c->model, vecs, n, dim, c->base64, v.usage.prompt_tokens));
        return;
    }
    struct api_choice choices[API_MAX_CHOICES];
    char *texts[API_MAX_CHOICES] = {0};
    bool nomem = false;
    for (int i = 0; i < c->n; i++) {
        engine_req_take(c->ch[i].req, NULL, 0, &v);
        size_t len = engine_req_pending(c->ch[i].req);
        texts[i] = malloc(len + 1);
        if (!texts[i]) {
            nomem = true;
            len = 0;
        } else {
            len = engine_req_take(c->ch[i].req, texts[i], len, NULL);
        }
        choices[i] = (struct api_choice){.text = texts[i] ? texts[i] : "", .len = len,
                                         .finish_reason = svc__finish_name(v.finish),
                                         .logprobs = svc__logprobs(c, i, len)};
        struct svc_choice *ch = &c->ch[i];
        if (texts[i] && engine_req_next_extra(ch->req) != SIZE_MAX) {
            svc__extras_whole(c, i, texts[i], len, &choices[i]);
            if (!choices[i].message && c->kind == ENGINE_CHAT) nomem = true;
            choices[i].finish_reason = svc__finish(c, i, v.finish);
        } else if (texts[i] && svc__tools(c, ch)) {
            free(chat_parse_delta(ch->parse, texts[i], len, true));
            char *m = chat_parse_message(ch->parse);
            choices[i].message = m ? json_loads(m, 0, NULL) : NULL;
            free(m);
            if (!choices[i].message) nomem = true;
            choices[i].finish_reason = svc__finish(c, i, v.finish);
        } else if (texts[i] && svc__thinks(c, ch)) {
            if (think_feed(&ch->think, texts[i], len, &ch->reason, &ch->answer) != 0 ||
                think_flush(&ch->think, &ch->reason, &ch->answer) != 0)
                nomem = true;
            choices[i].text = ch->answer.data ? ch->answer.data : "";
            choices[i].len = ch->answer.len;
            if (ch->reason.len) {
                choices[i].reasoning = ch->reason.data;
                choices[i].reasoning_len = ch->reason.len;
            }
        }
    }
    struct engine_usage u = svc__usage(c);
    char *json = api_choices_json(c->kind, c->id, c->created, c->model, choices, (size_t)c->n, &u);
    if (nomem) {
        free(json);
        json = NULL;
    }
    svc__result_json(res, 200, json);
    for (int i = 0; i < c->n; i++) free(texts[i]);
}

/* A stream's end: {"finish_reason", "usage"} (the first choice's finish). */
static void svc__stream_end(struct svc_call *c, struct svc_result *res) {
    struct engine_req_view v;
    engine_req_take(c->ch[0].req, NULL, 0, &v);
    struct engine_usage u = svc__usage(c);
    json_t *o = json_pack("{s:s, s:s, s:{s:I, s:I, s:I}}", "id", c->id, "finish_reason", svc__finish(c, 0, v.finish),
                          "usage", "prompt_tokens", (json_int_t)u.prompt_tokens, "completion_tokens",
                          (json_int_t)u.completion_tokens, "total_tokens",
                          (json_int_t)(u.prompt_tokens + u.completion_tokens));
    svc__result_obj(res, 200, o);
}

/* The end: the first failed choice's error, or the response. */
static enum svc_event svc__end(struct svc_call *c, struct svc_result *res) {
    memset(res, 0, sizeof *res);
    corral_err_clear(&res->err);
    c->ended = true;
    for (int i = 0; i < c->n; i++) {
        struct engine_req_view v;
        engine_req_take(c->ch[i].req, NULL, 0, &v);
        if (v.status != CORRAL_OK) {
            struct corral_err err;
            engine_req_error(c->ch[i].req, &err);
            svc_result_fail(res, &err);
            svc_call_cancel(c); /* the other choices have no one to go to */
            return SVC_EV_END;
        }
    }
    if (c->stream) svc__stream_end(c, res);
    else svc__whole(c, res);
    return SVC_EV_END;
}

/* A chunk event: *json is the chunk (NULL = out of memory, which ends the call). */
static enum svc_event svc__chunk(struct svc_call *c, char *chunk, char **json, struct svc_result *res) {
    if (!chunk) {
        svc_call_cancel(c);
        struct corral_err err;
        corral_err_set(&err, CORRAL_NOMEM, NULL, "out of memory");
        memset(res, 0, sizeof *res);
        svc_result_fail(res, &err);
        c->ended = true;
        return SVC_EV_END;
    }
    *json = chunk;
    return SVC_EV_CHUNK;
}

/* A stream chunk of choice i: text (NULL = none) and its logprobs (taken over). */
static enum svc_event svc__text_chunk(struct svc_call *c, int i, const char *text, size_t n, const char *finish,
                                      json_t *lp, char **json, struct svc_result *res) {
    return svc__chunk(c, api_chunk_json_lp(c->kind, c->id, c->created, c->model, i, false, text, n, finish,
                                           c->include_usage, NULL, false, lp),
                      json, res);
}

/* A stream chunk of choice i from an upstream's side record (its delta
 * fields and logprobs as they came), with the text that came with it. */
static enum svc_event svc__extra_chunk(struct svc_call *c, int i, const char *text, size_t n, char **json,
                                       struct svc_result *res) {
    struct svc_choice *ch = &c->ch[i];
    char *x = engine_req_take_extra(ch->req, ch->out_taken);
    json_t *j = x ? json_loads(x, 0, NULL) : NULL;
    free(x);
    json_t *fields = json_object_get(j, "delta");
    fields = json_is_object(fields) ? json_deep_copy(fields) : json_object();
    if (json_object_get(fields, "tool_calls")) ch->upstream_calls = true;
    if (fields && text && c->kind == ENGINE_CHAT) json_object_set_new(fields, "content", json_stringn(text, n));
    json_t *lp = json_object_get(j, "logprobs");
    lp = lp ? json_incref(lp) : svc__logprobs(c, i, n);
    json_decref(j);
    if (c->kind != ENGINE_CHAT) {
        json_decref(fields);
        return svc__text_chunk(c, i, text, n, NULL, lp, json, res);
    }
    return svc__chunk(c, svc__delta_chunk(c, i, fields, lp), json, res);
}

/* Choice i's next stream chunk when its output is parsed for tool calls:
 * the whole output is parsed again as it grows, and what is new goes out
 * (content, reasoning, a call's id and name, then its arguments). */
static enum svc_event svc__tool_chunk(struct svc_call *c, int i, char **json, struct svc_result *res) {
    struct svc_choice *ch = &c->ch[i];
    struct engine_req_view v;
    size_t n = engine_req_take(ch->req, c->take, SVC_TAKE_MAX, &v);
    if (n > 0) {
        if (buf_append(&ch->all, c->take, n) != 0) return svc__chunk(c, NULL, json, res);
        ch->owed += n;
    }
    bool done = v.state == ENGINE_REQ_DONE && engine_req_pending(ch->req) == 0;
    if (done && v.status != CORRAL_OK) return svc__end(c, res);
    if (n > 0 || (done && !ch->parsed_final)) {
        ch->parsed_final = done;
        char *d = chat_parse_delta(ch->parse, ch->all.data ? ch->all.data : "", ch->all.len, done);
        if (d) {
            json_t *fields = json_loads(d, 0, NULL);
            free(d);
            json_t *lp = svc__logprobs(c, i, ch->owed);
            ch->owed = 0;
            return svc__chunk(c, svc__delta_chunk(c, i, fields, lp), json, res);
        }
    }
    if (!done) return SVC_EV_NONE; /* held back (a call may be starting): the transport parks */
    ch->sent_finish = true;
    if (c->n > 1) engine_req_drop_permit(ch->req); /* so its siblings can run */
    json_t *lp = ch->owed ? svc__logprobs(c, i, ch->owed) : NULL;
    ch->owed = 0;
    return svc__text_chunk(c, i, NULL, 0, svc__finish(c, i, v.finish), lp, json, res);
}

/* Choice i's next stream chunk, or NULL with *done when it has sent its
 * finish, or NULL when it has nothing now. *failed: it ended in error. */
static enum svc_event svc__choice_chunk(struct svc_call *c, int i, char **json, struct svc_result *res,
                                        bool *idle) {
    struct svc_choice *ch = &c->ch[i];
    struct engine_req_view v;
    *idle = false;
    if (ch->sent_finish) {
        *idle = true;
        return SVC_EV_NONE;
    }
    if (c->kind == ENGINE_CHAT && !ch->sent_role) {
        ch->sent_role = true;
        return svc__chunk(c, api_chunk_json_lp(c->kind, c->id, c->created, c->model, i, true, "", 0, NULL,
                                               c->include_usage, NULL, false, NULL), json, res);
    }
    if (svc__tools(c, ch)) return svc__tool_chunk(c, i, json, res);
    bool split = svc__thinks(c, ch);
    if (split && ch->answer.len) { /* the answer part of a piece whose thinking went first */
        enum svc_event ev = svc__text_chunk(c, i, ch->answer.data, ch->answer.len, NULL, NULL, json, res);
        buf_reset(&ch->answer);
        return ev;
    }
    size_t at = split ? SIZE_MAX : engine_req_next_extra(ch->req);
    if (at != SIZE_MAX && at <= ch->out_taken) /* an upstream's side record stands here */
        return svc__extra_chunk(c, i, NULL, 0, json, res);
    size_t n = engine_req_take(ch->req, c->take, at != SIZE_MAX && at - ch->out_taken < SVC_TAKE_MAX
                                                     ? at - ch->out_taken
                                                     : SVC_TAKE_MAX,
                               &v);
    ch->out_taken += n;
    if (n > 0 && at == ch->out_taken) /* the record that came with this text goes with it */
        return svc__extra_chunk(c, i, c->take, n, json, res);
    if (n > 0 && !split) return svc__text_chunk(c, i, c->take, n, NULL, svc__logprobs(c, i, n), json, res);
    bool flushed = false;
    if (split && n == 0 && v.state == ENGINE_REQ_DONE && engine_req_pending(ch->req) == 0 && ch->think.hold.len) {
        if (think_flush(&ch->think, &ch->reason, &ch->answer) != 0) ch->think_on = -1;
        flushed = true;
    }
    if (split && (n > 0 || flushed)) {
        json_t *lp = n > 0 ? svc__logprobs(c, i, n) : NULL;
        if (n > 0 && think_feed(&ch->think, c->take, n, &ch->reason, &ch->answer) != 0) {
            json_decref(lp);
            return svc__chunk(c, NULL, json, res);
        }
        if (ch->reason.len) {
            char *j = svc__reasoning_chunk(c, i, ch->reason.data, ch->reason.len, lp);
            buf_reset(&ch->reason);
            return svc__chunk(c, j, json, res);
        }
        if (ch->answer.len) {
            enum svc_event ev = svc__text_chunk(c, i, ch->answer.data, ch->answer.len, NULL, lp, json, res);
            buf_reset(&ch->answer);
            return ev;
        }
        json_decref(lp); /* all held back: a tag may be starting */
        if (n > 0) return SVC_EV_NONE; /* the transport parks; more text or the end comes */
    }
    /* text still pending (taken before DONE was seen) comes before the end */
    if (v.state != ENGINE_REQ_DONE || engine_req_pending(ch->req) > 0) return SVC_EV_NONE;
    if (v.status != CORRAL_OK) return svc__end(c, res);
    ch->sent_finish = true;
    if (c->n > 1) engine_req_drop_permit(ch->req); /* so its siblings can run */
    return svc__text_chunk(c, i, NULL, 0, svc__finish(c, i, v.finish), NULL, json, res);
}

enum svc_event svc_call_next(struct svc_call *c, char **json, struct svc_result *res) {
    *json = NULL;
    if (c->ended) return SVC_EV_NONE;
    struct engine_req_view v;
    if (!c->stream) {
        bool all = true;
        for (int i = 0; i < c->n; i++) {
            if (c->ch[i].done) continue;
            engine_req_take(c->ch[i].req, NULL, 0, &v);
            if (v.state != ENGINE_REQ_DONE) {
                all = false;
                continue;
            }
            c->ch[i].done = true;
            if (c->n > 1) engine_req_drop_permit(c->ch[i].req); /* so its siblings can run */
        }
        return all ? svc__end(c, res) : SVC_EV_NONE;
    }
    if (!c->started) {
        /* once one choice runs (more choices than free slots run in turn,
         * so waiting for all could wait forever) */
        bool any = false;
        for (int i = 0; i < c->n; i++) {
            engine_req_take(c->ch[i].req, NULL, 0, &v);
            if (v.state == ENGINE_REQ_DONE && v.status != CORRAL_OK) return svc__end(c, res);
            if (v.state != ENGINE_REQ_QUEUED) any = true;
        }
        if (!any) return SVC_EV_NONE;
        c->started = true;
        return SVC_EV_START;
    }
    /* choices take turns, so one long answer does not hold the others back */
    int finished = 0;
    for (int k = 0; k < c->n; k++) {
        int i = (c->next + k) % c->n;
        bool idle;
        enum svc_event ev = svc__choice_chunk(c, i, json, res, &idle);
        if (idle) finished++;
        if (ev != SVC_EV_NONE) {
            c->next = (i + 1) % c->n;
            return ev;
        }
    }
    if (finished < c->n) return SVC_EV_NONE;
    if (c->include_usage && !c->sent_usage) {
        c->sent_usage = true;
        struct engine_usage u = svc__usage(c);
        return svc__chunk(c, api_chunk_json(c->kind, c->id, c->created, c->model, false, NULL, 0, NULL, false, &u,
                                            true), json, res);
    }
    return svc__end(c, res);
}

void svc_call_free(struct svc_call *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        struct engine_req *r = c->ch[i].req;
        if (!r) continue;
        /* after this no wake-up can reach the transport, and the engine
         * stops polling a socket the transport is about to close */
        engine_req_set_notify(r, NULL, NULL);
        engine_req_set_fd(r, -1);
        struct engine_req_view v;
        engine_req_take(r, NULL, 0, &v);
        if (v.state != ENGINE_REQ_DONE) engine_req_cancel(r);
        engine_req_release(r);
        if (c->ch[i].pin) pool_release(c->svc->pool, c->ch[i].pin);
        if (c->ch[i].think_on > 0) {
            think_free(&c->ch[i].think);
            buf_free(&c->ch[i].reason);
            buf_free(&c->ch[i].answer);
        }
        if (c->ch[i].tools_on > 0) {
            chat_parse_free(c->ch[i].parse);
            buf_free(&c->ch[i].all);
        }
    }
    pthread_mutex_destroy(&c->mu);
    free(c->take);
    free(c->model);
    free(c);
}
