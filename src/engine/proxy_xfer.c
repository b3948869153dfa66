/* proxy_xfer.c - one request upstream: the replica it goes to, the
 * request sent (model rewritten; chat and completions always as a stream),
 * the upstream's stream read back into the request object as it arrives
 * (sse_in.c), retries on another replica while nothing reached the client,
 * and the mapping of upstream errors to corral's. Runs on the proxy
 * engine's thread. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "engine/proxy_internal.h"
#include "util/log.h"
#include "util/time.h"

/* Map an upstream error answer to ours, with its message when it has one. */
static void proxy__upstream_error(struct proxy_engine *e, struct xfer *x, long code, struct corral_err *err) {
    const char *url = e->replicas[x->replica].url;
    char msg[CORRAL_ERR_MSG_MAX - 128];
    msg[0] = '\0';
    json_t *j = x->whole.len ? json_loadb(x->whole.data, x->whole.len, 0, NULL) : NULL;
    json_t *eo = j ? json_object_get(j, "error") : NULL;
    const char *m = json_is_object(eo) ? json_string_value(json_object_get(eo, "message"))
                    : json_is_string(eo) ? json_string_value(eo)
                                         : NULL;
    if (m)
        snprintf(msg, sizeof msg, "%s", m);
    else if (x->whole.len)
        snprintf(msg, sizeof msg, "%.*s", (int)(x->whole.len > 200 ? 200 : x->whole.len), x->whole.data);
    enum corral_status st = code == 400 || code == 413 || code == 422 ? CORRAL_INVALID_REQUEST
                            : code == 429 || code == 503           ? CORRAL_OVERLOADED
                                                                   : CORRAL_BAD_GATEWAY;
    if (st == CORRAL_INVALID_REQUEST)
        corral_err_set(err, st, NULL, "%s", msg[0] ? msg : "the upstream server refused the request");
    else
        corral_err_set(err, st, NULL, "model '%s': %s answered %ld%s%s", e->id, url, code, msg[0] ? ": " : "",
                       msg);
    json_decref(j);
}

/* ------------------------------------------------------------ SSE in */

/* One "data:" payload of the upstream stream (sse_in.c parses it). */
static bool proxy__event(void *ctx, const char *data, size_t n) {
    struct xfer *x = ctx;
    struct sse_event ev;
    sse_event_parse(data, n, &ev);
    if (ev.done) x->got_done = true;
    if (ev.error) {
        corral_err_set(&x->err, CORRAL_BAD_GATEWAY, NULL, "model '%s': the upstream server failed mid-stream: %s",
                       x->e->id, ev.message);
        x->failed = true;
    }
    if (!ev.error && ev.text_len > 0) {
        if (engine_req_push(x->req, ev.text, ev.text_len) != 0) {
            corral_err_set(&x->err, CORRAL_CANCELLED, NULL, "client too slow: output buffer full");
            x->failed = true;
        } else {
            x->streamed = true;
            x->chunks++;
        }
    }
    if (!x->failed && ev.extra) { /* tool calls, reasoning, logprobs: passed on as they came */
        char *j = json_dumps(ev.extra, JSON_COMPACT);
        if (j && engine_req_push_extra(x->req, j) == 0) x->streamed = true;
    }
    if (ev.finish != ENGINE_FINISH_NONE) x->finish = ev.finish;
    if (ev.have_usage) {
        x->have_usage = true;
        x->usage.prompt_tokens = ev.prompt_tokens;
        x->usage.completion_tokens = ev.completion_tokens;
        x->usage.cached_tokens = ev.cached_tokens;
    }
    sse_event_free(&ev);
    return !x->failed;
}

static size_t proxy__on_data(char *ptr, size_t size, size_t nmemb, void *ud) {
    struct xfer *x = ud;
    size_t n = size * nmemb;
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    /* the client's answer starts (200 and headers) once the upstream's has */
    if (code < 400 && !x->running) {
        engine_req_set_running(x->req);
        x->running = true;
    }
    if (code >= 400 || !x->sse) {
        if (buf_append(&x->whole, ptr, n) != 0) {
            if (code >= 400) return n; /* the start of an error body is enough */
            corral_err_set(&x->err, CORRAL_BAD_GATEWAY, NULL, "model '%s': the upstream answer is too large",
                           x->e->id);
            x->failed = true;
            return 0;
        }
        return n;
    }
    if (sse_in_feed(&x->in, ptr, n, proxy__event, x) != 0 && !x->failed) {
        corral_err_set(&x->err, CORRAL_BAD_GATEWAY, NULL, "model '%s': an upstream event is too large", x->e->id);
        x->failed = true;
    }
    return x->failed ? 0 : n;
}

size_t proxy__discard(char *ptr, size_t size, size_t nmemb, void *ud) {
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

/* ------------------------------------------------------------ requests */

/* The healthy replica with the fewest requests in flight among those not
 * yet tried (ties rotate); -1 if none. */
static int proxy__pick(struct proxy_engine *e, unsigned tried) {
    int best = -1;
    pthread_mutex_lock(&e->mu);
    for (int k = 0; k < e->n_replicas; k++) {
        int i = (int)((e->rr + (unsigned)k) % (unsigned)e->n_replicas);
        if ((tried >> i) & 1u || !e->replicas[i].healthy) continue;
        if (best < 0 || e->replicas[i].outstanding < e->replicas[best].outstanding) best = i;
    }
    if (best >= 0) {
        e->replicas[best].outstanding++;
        e->replicas[best].requests++;
        e->rr++;
    }
    pthread_mutex_unlock(&e->mu);
    return best;
}

void proxy__xfer_free(struct proxy_engine *e, struct xfer *x) {
    if (x->easy) {
        curl_multi_remove_handle(e->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->headers);
    free(x->body);
    sse_in_free(&x->in);
    buf_free(&x->whole);
    for (int i = 0; i < e->n_slots; i++)
        if (e->xfers[i] == x) e->xfers[i] = NULL;
    engine_req_release(x->req);
    atomic_fetch_sub(&e->busy, 1);
    free(x);
}

/* The request's replica no longer counts it. */
void proxy__unclaim(struct proxy_engine *e, struct xfer *x, bool failed) {
    pthread_mutex_lock(&e->mu);
    struct replica *r = &e->replicas[x->replica];
    if (r->outstanding > 0) r->outstanding--;
    if (failed) r->failures++;
    pthread_mutex_unlock(&e->mu);
}

void proxy__eject(struct proxy_engine *e, int i, const char *why) {
    struct replica *r = &e->replicas[i];
    pthread_mutex_lock(&e->mu);
    bool was = r->healthy;
    r->healthy = false;
    pthread_mutex_unlock(&e->mu);
    r->next_check_ms = time_now_ms() + PROXY_CHECK_EJECTED_MS;
    if (was && !e->child) log_warn("model %s: upstream %s ejected: %s", e->id, r->url, why);
}

/* Send x to a replica it has not tried. -1 if there is none left. */
static int proxy__issue(struct proxy_engine *e, struct xfer *x) {
    int i = proxy__pick(e, x->tried);
    if (i < 0) return -1;
    x->replica = i;
    x->tried |= 1u << i;
    if (x->easy) {
        curl_multi_remove_handle(e->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    sse_in_free(&x->in);
    sse_in_init(&x->in, PROXY_LINE_MAX);
    buf_reset(&x->whole);
    x->got_done = x->have_usage = false;
    x->chunks = 0;
    x->finish = ENGINE_FINISH_NONE;
    x->curl_err[0] = '\0';
    x->easy = curl_easy_init();
    if (!x->easy) return -1;
    char url[sizeof e->replicas[0].url + 32];
    snprintf(url, sizeof url, "%s%s", e->replicas[i].url, x->path);
    CURL *h = x->easy;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, proxy__on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_PRIVATE, x);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->curl_err);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)PROXY_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "identity");
    if (curl_multi_add_handle(e->multi, h) != CURLM_OK) return -1;
    return 0;
}

static void proxy__fail(struct engine_req *r, enum corral_status st, const char *fmt, const char *a, const char *b) {
    struct corral_err err;
    corral_err_set(&err, st, NULL, fmt, a, b);
    engine_req_fail(r, &err);
}

/* Start request r (taken from the queue with a permit). */
void proxy__start(struct proxy_engine *e, struct engine_req *r) {
    const struct engine_input *in = engine_req_input(r);
    int slot = -1;
    for (int i = 0; i < e->n_slots && slot < 0; i++)
        if (!e->xfers[i]) slot = i;
    struct xfer *x = slot >= 0 ? calloc(1, sizeof *x) : NULL;
    if (!x) {
        proxy__fail(r, CORRAL_NOMEM, "%s%s", "out of memory", "");
        engine_req_release(r);
        return;
    }
    atomic_fetch_add(&e->busy, 1);
    e->xfers[slot] = x;
    x->kind = H_XFER;
    x->e = e;
    x->req = r;
    x->sse = in->kind != ENGINE_EMBEDDING;
    x->path = in->kind == ENGINE_CHAT ? "/v1/chat/completions"
              : in->kind == ENGINE_COMPLETION ? "/v1/completions"
                                           : "/v1/embeddings";
    sse_in_init(&x->in, PROXY_LINE_MAX);
    buf_init(&x->whole, x->sse ? PROXY_ERR_BODY_MAX : PROXY_EMBED_BODY_MAX);

    /* the client's body, with our model name swapped for the upstream's */
    size_t blen = 0;
    const char *body = engine_req_body(r, &blen);
    json_t *j = body ? json_loadb(body, blen, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        proxy__fail(r, CORRAL_INTERNAL, "%s%s", "the request body is not available for forwarding", "");
        proxy__xfer_free(e, x);
        return;
    }
    json_object_set_new(j, "model", json_string(e->upstream_model));
    json_object_del(j, "keep_alive");
    if (x->sse) {
        json_object_set_new(j, "stream", json_true());
        json_object_set_new(j, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    x->body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    x->body_len = x->body ? strlen(x->body) : 0;
    x->headers = curl_slist_append(NULL, "Content-Type: application/json");
    x->headers = curl_slist_append(x->headers, x->sse ? "Accept: text/event-stream" : "Accept: application/json");
    x->headers = curl_slist_append(x->headers, "Expect:");
    if (e->auth_header) x->headers = curl_slist_append(x->headers, e->auth_header);
    if (!x->body || !x->headers) {
        proxy__fail(r, CORRAL_NOMEM, "%s%s", "out of memory", "");
        proxy__xfer_free(e, x);
        return;
    }
    if (proxy__issue(e, x) != 0) {
        if (e->child)
            proxy__fail(r, CORRAL_BAD_GATEWAY, "model '%s': %s", e->id, "its server cannot take the request");
        else
            proxy__fail(r, CORRAL_UNAVAILABLE, "model '%s': %s", e->id, "no upstream replica is healthy; retry later");
        proxy__xfer_free(e, x);
    }
}

/* Parse the embeddings answer into vectors for the request. */
static void proxy__embeddings(struct proxy_engine *e, struct xfer *x) {
    json_t *j = json_loadb(x->whole.data ? x->whole.data : "", x->whole.len, 0, NULL);
    json_t *data = j ? json_object_get(j, "data") : NULL;
    size_t n = json_array_size(data), dim = 0;
    float **vecs = n ? calloc(n, sizeof *vecs) : NULL;
    bool ok = json_is_array(data) && n > 0 && vecs;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *item = json_array_get(data, i);
        json_t *emb = json_object_get(item, "embedding");
        json_t *idx = json_object_get(item, "index");
        size_t at = json_is_integer(idx) ? (size_t)json_integer_value(idx) : i;
        size_t d = json_array_size(emb);
        if (!json_is_array(emb) || d == 0 || (dim && d != dim) || at >= n || vecs[at]) {
            ok = false;
            break;
        }
        dim = d;
        vecs[at] = malloc(d * sizeof(float));
        if (!vecs[at]) {
            ok = false;
            break;
        }
        for (size_t k = 0; k < d; k++) vecs[at][k] = (float)json_number_value(json_array_get(emb, k));
    }
    for (size_t i = 0; ok && i < n; i++) ok = vecs[i] != NULL;
    if (!ok) {
        if (vecs)
            for (size_t i = 0; i < n; i++) free(vecs[i]);
        free(vecs);
        json_decref(j);
        proxy__fail(x->req, CORRAL_BAD_GATEWAY, "model '%s': %s", e->id, "the upstream's embeddings answer is malformed");
        return;
    }
    json_t *u = json_object_get(j, "usage");
    struct engine_usage usage = {.prompt_tokens = u ? json_integer_value(json_object_get(u, "prompt_tokens")) : 0};
    json_decref(j);
    engine_req_set_embeddings(x->req, vecs, n, dim);
    engine_req_set_usage(x->req, &usage);
    atomic_fetch_add(&e->st_prompt, usage.prompt_tokens);
    engine_req_finish(x->req, ENGINE_FINISH_STOP);
}


/* A child's connection broke: if that is because the child is exiting, wait
 * (briefly) for its exit so that every request in flight gets the exit
 * status and log path rather than a bare transport error. The kernel closes
 * a dying process's sockets before it becomes waitable, so the broken
 * connection is nearly always seen first. True if it exited (the requests
 * in flight have then been failed and freed). */
static bool proxy__child_died(struct proxy_engine *e) {
    if (!e->child) return false;
    int64_t deadline = time_now_ms() + PROXY_CHILD_EXIT_WAIT_MS;
    int status = 0;
    while (!child_reap(e->child, &status)) {
        int64_t left = deadline - time_now_ms();
        if (left <= 0) return false;
        if (child_pidfd(e->child) >= 0) {
            struct pollfd pf = {.fd = child_pidfd(e->child), .events = POLLIN};
            poll(&pf, 1, (int)left);
        } else {
            struct timespec ts = {0, 5 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    while (child_out_fd(e->child) >= 0 && child_drain(e->child) > 0) {
    }
    proxy__child_exited(e, status);
    return true;
}

/* A transfer ended (CURLMSG_DONE). */
void proxy__xfer_done(struct proxy_engine *e, struct xfer *x, CURLcode res) {
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (e->child && !x->failed && (res != CURLE_OK || (x->sse && code < 400 && !x->got_done &&
                                                        x->finish == ENGINE_FINISH_NONE))) {
        if (proxy__child_died(e)) return;
    }
    if (x->failed) {
        proxy__unclaim(e, x, false);
        engine_req_fail(x->req, &x->err);
        proxy__xfer_free(e, x);
        return;
    }
    const char *url = e->replicas[x->replica].url;
    if (res != CURLE_OK) {
        proxy__unclaim(e, x, true);
        if (!e->child) proxy__eject(e, x->replica, x->curl_err[0] ? x->curl_err : curl_easy_strerror(res));
        if (!x->streamed && !e->child && proxy__issue(e, x) == 0) return; /* another replica */
        char msg[CORRAL_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s%s", x->streamed ? "the connection broke mid-stream: " : "",
                 x->curl_err[0] ? x->curl_err : curl_easy_strerror(res));
        struct corral_err err;
        corral_err_set(&err, CORRAL_BAD_GATEWAY, NULL, "model '%s': %s failed: %s", e->id, url, msg);
        engine_req_fail(x->req, &err);
        proxy__xfer_free(e, x);
        return;
    }
    if (code >= 400) {
        proxy__unclaim(e, x, code >= 500);
        if ((code >= 500 || code == 429) && !x->streamed && !e->child && proxy__issue(e, x) == 0) return;
        struct corral_err err;
        proxy__upstream_error(e, x, code, &err);
        engine_req_fail(x->req, &err);
        proxy__xfer_free(e, x);
        return;
    }
    proxy__unclaim(e, x, false);
    if (!x->sse) {
        proxy__embeddings(e, x);
    } else if (!x->got_done && x->finish == ENGINE_FINISH_NONE) {
        struct corral_err err;
        corral_err_set(&err, CORRAL_BAD_GATEWAY, NULL, "model '%s': %s ended the stream early", e->id, url);
        engine_req_fail(x->req, &err);
    } else {
        if (!x->have_usage) x->usage.completion_tokens = x->chunks;
        engine_req_set_usage(x->req, &x->usage);
        atomic_fetch_add(&e->st_prompt, x->usage.prompt_tokens);
        atomic_fetch_add(&e->st_generated, x->usage.completion_tokens);
        atomic_fetch_add(&e->st_cached, x->usage.cached_tokens);
        engine_req_finish(x->req, x->finish == ENGINE_FINISH_NONE ? ENGINE_FINISH_STOP : x->finish);
    }
    proxy__xfer_free(e, x);
}

