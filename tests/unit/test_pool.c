/* test_pool.c - the pool's state machine with a fake engine the test
 * drives: forced unloads and reloads, engines stopping outside the lock,
 * files replaced while a model drains, keep_alive bounds, the bound on
 * requests waiting for a load, and loads stopped by an unload or a
 * shutdown.
 *
 * The pool is the real one (registry, loader thread, LRU, GGUF estimates of
 * the real tiny test model); only the engine is a stand-in, so a test can
 * hold requests in flight, finish them and see exactly when the pool stops,
 * joins and frees an engine. The end-to-end suite runs the same paths on
 * real llama.cpp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "engine/llama_engine.h"
#include "engine/proxy_engine.h"
#include "pool/estimate.h"
#include "pool/pool.h"
#include "util/log.h"
#include "util/time.h"

/* ------------------------------------------------------------ the fake engine */

#define FAKE_MAX 64

struct fake {
    struct engine base;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char id[64];
    struct engine_req *held[FAKE_MAX];
    int n_held;
    bool stopped;
    bool hold_join; /* join waits until the test lets go */
    bool in_join;
    int64_t submitted;
    int serial; /* tells engines apart (a freed one's address may be reused) */
};

static pthread_mutex_t fakes_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fakes_cv = PTHREAD_COND_INITIALIZER;
static struct fake *fakes[32];
static int n_fakes;
static int frees;
static int serials;
/* open behaviour: block until `open_gate` is set, or until the load's
 * progress callback says stop */
static bool open_wait;
static bool open_gate;
static bool hold_join_next;

static enum corral_status fake_submit(struct engine *b, struct engine_req *r, struct corral_err *err) {
    struct fake *f = (struct fake *)b;
    pthread_mutex_lock(&f->mu);
    if (f->stopped || f->n_held >= FAKE_MAX) {
        pthread_mutex_unlock(&f->mu);
        return corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "model '%s' is shutting down", f->id);
    }
    engine_req_retain(r);
    f->held[f->n_held++] = r;
    f->submitted++;
    engine_req_set_running(r);
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return CORRAL_OK;
}

static void fake_stats(struct engine *b, struct engine_stats *out) {
    struct fake *f = (struct fake *)b;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&f->mu);
    out->slots_total = 2;
    out->slots_busy = f->n_held;
    out->requests_total = f->submitted;
    pthread_mutex_unlock(&f->mu);
}

/* Finish (ok) or fail every request it holds. Caller holds f->mu. */
static void fake__end_all(struct fake *f, const char *fail_why) {
    for (int i = 0; i < f->n_held; i++) {
        if (fail_why) {
            struct corral_err err;
            corral_err_set(&err, CORRAL_UNAVAILABLE, NULL, "%s", fail_why);
            engine_req_fail(f->held[i], &err);
        } else {
            engine_req_finish(f->held[i], ENGINE_FINISH_STOP);
        }
        engine_req_release(f->held[i]);
    }
    f->n_held = 0;
}

static void fake_stop(struct engine *b, const char *why) {
    struct fake *f = (struct fake *)b;
    pthread_mutex_lock(&f->mu);
    f->stopped = true;
    fake__end_all(f, why);
    pthread_mutex_unlock(&f->mu);
}

static void fake_join(struct engine *b) {
    struct fake *f = (struct fake *)b;
    pthread_mutex_lock(&f->mu);
    f->in_join = true;
    pthread_cond_broadcast(&f->cv);
    while (f->hold_join) pthread_cond_wait(&f->cv, &f->mu);
    f->in_join = false;
    pthread_mutex_unlock(&f->mu);
}

static void fake_free(struct engine *b) {
    struct fake *f = (struct fake *)b;
    fake_stop(b, "the model was unloaded");
    fake_join(b);
    pthread_mutex_lock(&fakes_mu);
    for (int i = 0; i < n_fakes; i++)
        if (fakes[i] == f) fakes[i] = NULL;
    frees++;
    pthread_cond_broadcast(&fakes_cv);
    pthread_mutex_unlock(&fakes_mu);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

static const struct engine_ops fake_ops = {
    .name = "fake", .submit = fake_submit, .stats = fake_stats, .stop = fake_stop, .join = fake_join, .free = fake_free,
};

static struct engine *fake_open_llama(const struct llama_engine_params *p, struct corral_err *err) {
    pthread_mutex_lock(&fakes_mu);
    while (open_wait && !open_gate) {
        pthread_mutex_unlock(&fakes_mu);
        if (p->progress && !p->progress(0.5f, p->progress_ctx)) {
            corral_err_set(err, CORRAL_ENGINE, NULL, "model '%s': load stopped", p->id);
            return NULL;
        }
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&fakes_mu);
    }
    struct fake *f = calloc(1, sizeof *f);
    f->base.ops = &fake_ops;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    snprintf(f->id, sizeof f->id, "%s", p->id);
    f->hold_join = hold_join_next;
    hold_join_next = false;
    f->serial = ++serials;
    fakes[n_fakes++] = f;
    pthread_cond_broadcast(&fakes_cv);
    pthread_mutex_unlock(&fakes_mu);
    return &f->base;
}

static struct engine *fake_open_proxy(const struct proxy_engine_params *p, struct corral_err *err) {
    (void)p;
    return corral_err_set(err, CORRAL_ENGINE, NULL, "no proxies here"), NULL;
}

static const struct pool_backends fake_backends = {.open_llama = fake_open_llama, .open_proxy = fake_open_proxy};

/* The live fake engine of model id other than serial `not` (waits up to
 * 10 s for one to open). */
static struct fake *fake_other(const char *id, int not) {
    int64_t end = time_now_ms() + 10000;
    pthread_mutex_lock(&fakes_mu);
    for (;;) {
        for (int i = n_fakes - 1; i >= 0; i--) {
            if (fakes[i] && strcmp(fakes[i]->id, id) == 0 && fakes[i]->serial != not) {
                struct fake *f = fakes[i];
                pthread_mutex_unlock(&fakes_mu);
                return f;
            }
        }
        if (time_now_ms() > end) break;
        struct timespec ts;
        time_deadline_ms(&ts, 50);
        pthread_cond_timedwait(&fakes_cv, &fakes_mu, &ts);
    }
    pthread_mutex_unlock(&fakes_mu);
    fail_msg("no engine opened for %s", id);
    return NULL;
}

static struct fake *fake_of(const char *id) { return fake_other(id, 0); }

static int held(struct fake *f) {
    pthread_mutex_lock(&f->mu);
    int n = f->n_held;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* Wait until f holds n requests. */
static void wait_held(struct fake *f, int n) {
    int64_t end = time_now_ms() + 10000;
    pthread_mutex_lock(&f->mu);
    while (f->n_held < n && time_now_ms() < end) {
        struct timespec ts;
        time_deadline_ms(&ts, 50);
        pthread_cond_timedwait(&f->cv, &f->mu, &ts);
    }
    int got = f->n_held;
    pthread_mutex_unlock(&f->mu);
    if (got < n) fail_msg("engine %s holds %d requests, wanted %d", f->id, got, n);
}

static void finish_all(struct fake *f) {
    pthread_mutex_lock(&f->mu);
    fake__end_all(f, NULL);
    pthread_mutex_unlock(&f->mu);
}

/* ------------------------------------------------------------ fixture */

struct fx {
    struct config cfg;
    char dir[64];
    char path[4][128];
    struct pool *pool;
    uint64_t est; /* one model's estimate */
};

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    assert_non_null(a);
    assert_non_null(b);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) assert_int_equal(fwrite(buf, 1, n, b), n);
    fclose(a);
    fclose(b);
}

/* n models a, b, ... (copies of the tiny test model); the budget holds
 * `fit` of them. */
static void fx_start(struct fx *x, int n, int fit, int queue_size) {
    memset(x, 0, sizeof *x);
    const char *model = getenv("CORRAL_TEST_MODEL");
    if (!model) fail_msg("CORRAL_TEST_MODEL is not set");
    snprintf(x->dir, sizeof x->dir, "/tmp/corral_test_pool_XXXXXX");
    assert_non_null(mkdtemp(x->dir));
    config_defaults(&x->cfg);
    x->cfg.parallel = 2;
    x->cfg.ctx = 256;
    x->cfg.queue_size = queue_size;
    x->cfg.keep_alive_ms = -1;
    x->cfg.load_timeout_ms = 20000;
    for (int i = 0; i < n; i++) {
        snprintf(x->path[i], sizeof x->path[i], "%s/%c.gguf", x->dir, 'a' + i);
        copy_file(model, x->path[i]);
        struct config_model *m = &x->cfg.models[i];
        config_model_init(m);
        snprintf(m->id, sizeof m->id, "%c", 'a' + i);
        m->path = strdup(x->path[i]);
    }
    x->cfg.n_models = n;
    struct estimate_params ep = {.n_slots = 2, .ctx_per_slot = 256, .n_batch = x->cfg.batch,
                                 .prompt_cache = ESTIMATE_CACHE_AS_KV};
    struct estimate est;
    char why[256];
    assert_int_equal(estimate_gguf(x->path[0], &ep, &est, why, sizeof why), 0);
    x->est = est.total_bytes;
    x->cfg.memory_budget = (size_t)(x->est * (uint64_t)fit + x->est / 2);
    pthread_mutex_lock(&fakes_mu);
    open_wait = open_gate = hold_join_next = false;
    frees = 0;
    pthread_mutex_unlock(&fakes_mu);
    struct corral_err err;
    x->pool = pool_new_with(&x->cfg, NULL, &fake_backends, &err);
    assert_non_null(x->pool);
}

static void fx_stop(struct fx *x) {
    pool_free(x->pool);
    for (int i = 0; i < x->cfg.n_models; i++) unlink(x->path[i]);
    rmdir(x->dir);
    config_free(&x->cfg);
    pthread_mutex_lock(&fakes_mu);
    n_fakes = 0;
    pthread_mutex_unlock(&fakes_mu);
}

struct call {
    struct engine_req *req;
    struct pool_pin *pin;
    enum corral_status st;
    struct corral_err err;
};

/* Submit a completion (with a raw body when body is set) as a transport would. */
static void submit_body(struct fx *x, const char *id, struct call *c, int64_t keep_alive_ms, const char *body) {
    struct engine_input in;
    memset(&in, 0, sizeof in);
    in.kind = ENGINE_COMPLETION;
    in.keep_alive_ms = keep_alive_ms;
    c->req = engine_req_new(&in, 1024);
    assert_non_null(c->req);
    if (body) engine_req_set_body(c->req, strdup(body), strlen(body));
    corral_err_clear(&c->err);
    c->pin = NULL;
    c->st = pool_submit(x->pool, id, c->req, &c->pin, &c->err);
}

static void submit(struct fx *x, const char *id, struct call *c, int64_t keep_alive_ms) {
    submit_body(x, id, c, keep_alive_ms, NULL);
}

static void done(struct fx *x, struct call *c) {
    pool_release(x->pool, c->pin);
    engine_req_release(c->req);
    c->pin = NULL;
    c->req = NULL;
}

/* The request's final status; waits up to 10 s for it to be DONE. */
static enum corral_status outcome(struct call *c) {
    int64_t end = time_now_ms() + 10000;
    struct engine_req_view v;
    for (;;) {
        engine_req_take(c->req, NULL, 0, &v);
        if (v.state == ENGINE_REQ_DONE || time_now_ms() > end) break;
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (v.state != ENGINE_REQ_DONE) fail_msg("request not done after 10 s");
    return v.status;
}

static enum pool_model_status status_of(struct fx *x, const char *id) {
    struct pool_model_info mi;
    for (size_t i = 0; pool_info(x->pool, i, &mi) == 0; i++)
        if (strcmp(mi.id, id) == 0) return mi.status;
    fail_msg("no model %s", id);
    return POOL_FAILED;
}

static void wait_status(struct fx *x, const char *id, enum pool_model_status want) {
    int64_t end = time_now_ms() + 10000;
    while (status_of(x, id) != want) {
        if (time_now_ms() > end) fail_msg("model %s is %s, wanted %s", id, pool_status_name(status_of(x, id)),
                                          pool_status_name(want));
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void set_open(bool wait, bool gate, bool hold_join) {
    pthread_mutex_lock(&fakes_mu);
    open_wait = wait;
    open_gate = gate;
    hold_join_next = hold_join;
    pthread_mutex_unlock(&fakes_mu);
}

static int frees_now(void) {
    pthread_mutex_lock(&fakes_mu);
    int n = frees;
    pthread_mutex_unlock(&fakes_mu);
    return n;
}

/* ------------------------------------------------------------ tests */

static void test_load_serve_unload(void **state) {
    (void)state;
    struct fx x;
    fx_start(&x, 1, 1, 4);
    struct call c;
    submit(&x, "a", &c, ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(c.st, CORRAL_OK);
    struct fake *f = fake_of("a");
    wait_held(f, 1);
    wait_status(&x, "a", POOL_LOADED);
    /* an in-process model keeps no raw body */
    struct call k;
    submit_body(&x, "a", &k, ENGINE_KEEP_ALIVE_UNSET, "{\"model\":\"a\",\"prompt\":\"x\"}");
    assert_int_equal(k.st, CORRAL_OK);
    size_t blen = 1;
    assert_null(engine_req_body(k.req, &blen));
    assert_int_equal(blen, 0);
    wait_held(f, 2);
    bool unloaded = true;
    struct corral_err err;
    assert_int_equal(pool_unload(x.pool, "a", false, &unloaded, &err), CORRAL_OK);
    assert_false(unloaded); /* in flight: unloads when it ends */
    assert_int_equal(status_of(&x, "a"), POOL_UNLOADING);
    struct call refused;
    submit(&x, "a", &refused, ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(refused.st, CORRAL_UNAVAILABLE);
    assert_null(refused.pin);
    engine_req_release(refused.req);
    finish_all(f);
    assert_int_equal(outcome(&c), CORRAL_OK);
    done(&x, &c);
    done(&x, &k);
    wait_status(&x, "a", POOL_UNLOADED);
    fx_stop(&x);
}

static void test_forced_unload_then_load_serves_again(void **state) {
    (void)state;
    struct fx x;
    fx_start(&x, 1, 1, 4);
    struct call c;
    submit(&x, "a", &c, ENGINE_KEEP_ALIVE_UNSET);
    struct fake *f = fake_of("a");
    wait_held(f, 1);
    bool unloaded;
    struct corral_err err;
    assert_int_equal(pool_unload(x.pool, "a", true, &unloaded, &err), CORRAL_OK);
    assert_int_equal(outcome(&c), CORRAL_UNAVAILABLE); /* cancelled by the forced unload */
    enum pool_model_status st;
    assert_int_equal(pool_load(x.pool, "a", &st, &err), CORRAL_OK); /* before the transport lets go */
    /* a request now waits for the reload instead of meeting the stopped engine */
    struct call next;
    submit(&x, "a", &next, ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(next.st, CORRAL_OK);
    int first = f->serial;
    done(&x, &c); /* the cancelled request's transport lets go: unload, then load again */
    struct fake *f2 = fake_other("a", first);
    wait_held(f2, 1);
    finish_all(f2);
    assert_int_equal(outcome(&next), CORRAL_OK);
    done(&x, &next);
    assert_int_equal(status_of(&x, "a"), POOL_LOADED);
    fx_stop(&x);
}

struct prober {
    struct fx *x;
    _Atomic bool answered;
};

static void *probe_info(void *arg) {
    struct prober *pr = arg;
    struct pool_stats ps;
    pool_stats(pr->x->pool, &ps);
    struct pool_model_info mi;
    pool_info(pr->x->pool, 0, &mi);
    pr->answered = true;
    return NULL;
}

static void test_engine_stops_without_the_pool_lock(void **state) {
    (void)state;
    struct fx x;
    fx_start(&x, 2, 2, 4);
    struct call b;
    submit(&x, "b", &b, ENGINE_KEEP_ALIVE_UNSET); /* b is loaded and stays */
    struct fake *fb = fake_of("b");
    wait_held(fb, 1);
    finish_all(fb);
    done(&x, &b);
    set_open(false, false, true); /* a's engine takes "for ever" to stop */
    struct call c;
    submit(&x, "a", &c, ENGINE_KEEP_ALIVE_UNSET);
    struct fake *f = fake_of("a");
    wait_held(f, 1);
    bool unloaded;
    struct corral_err err;
    assert_int_equal(pool_unload(x.pool, "a", true, &unloaded, &err), CORRAL_OK); /* returns at once */
    assert_int_equal(outcome(&c), CORRAL_UNAVAILABLE);
    done(&x, &c); /* the loader now frees a's engine, which blocks in join */
    int64_t end = time_now_ms() + 10000;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        bool in = f->in_join;
        pthread_mutex_unlock(&f->mu);
        if (in) break;
        if (time_now_ms() > end) fail_msg("the engine was never joined");
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* meanwhile the pool answers, and the other model serves */
    struct prober pr = {.x = &x};
    pthread_t t;
    pthread_create(&t, NULL, probe_info, &pr);
    for (int i = 0; i < 200 && !pr.answered; i++) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_true(pr.answered);
    pthread_join(t, NULL);
    submit(&x, "b", &b, ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(b.st, CORRAL_OK);
    wait_held(fb, 1);
    finish_all(fb);
    assert_int_equal(outcome(&b), CORRAL_OK);
    done(&x, &b);
    pthread_mutex_lock(&f->mu);
    f->hold_join = false;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    wait_status(&x, "a", POOL_UNLOADED);
    fx_stop(&x);
}

static void test_replaced_file_while_draining_moves_waiting_requests(void **state) {
    (void)state;
    struct fx x;
    fx_start(&x, 2, 1, 4); /* room for one model */
    struct call a1;
    submit(&x, "a", &a1, ENGINE_KEEP_ALIVE_UNSET);
    struct fake *fa = fake_of("a");
    wait_held(fa, 1);
    /* b waits for a's room; after POOL_STARVE_MS a drains and new requests
     * for a wait for its reload */
    struct call b1;
    submit(&x, "b", &b1, ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(b1.st, CORRAL_OK);
    struct timespec ts = {2, 300 * 1000000L};
    nanosleep(&ts, NULL);
    struct call a2;
    submit(&x, "a", &a2, ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(a2.st, CORRAL_OK);
    assert_int_equal(held(fa), 1); /* waiting, not in the draining engine */
    /* a's file changes: the next request retires the old record */
    struct timespec later = {0, 20 * 1000000L};
    nanosleep(&later, NULL);
    copy_file(getenv("CORRAL_TEST_MODEL"), x.path[0]);
    struct call a3;
    submit(&x, "a", &a3, ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(a3.st, CORRAL_OK);
    /* a's first request ends: the old engine goes, b loads, serves, then
     * the new a loads and serves both waiting requests */
    int old_a = fa->serial;
    finish_all(fa);
    done(&x, &a1);
    struct fake *fb = fake_of("b");
    wait_held(fb, 1);
    finish_all(fb);
    assert_int_equal(outcome(&b1), CORRAL_OK);
    done(&x, &b1);
    struct fake *fa2 = fake_other("a", old_a);
    wait_held(fa2, 2);
    finish_all(fa2);
    assert_int_equal(outcome(&a2), CORRAL_OK);
    assert_int_equal(outcome(&a3), CORRAL_OK);
    done(&x, &a2);
    done(&x, &a3);
    size_t n = pool_count(x.pool);
    assert_int_equal(n, 2); /* the retired record is gone from the listing */
    fx_stop(&x);
}

static void test_huge_keep_alive_does_not_overflow(void **state) {
    (void)state;
    struct fx x;
    fx_start(&x, 1, 1, 4);
    struct call c;
    submit(&x, "a", &c, (INT64_MAX / 1000) * 1000); /* the largest a request can say */
    struct fake *f = fake_of("a");
    wait_held(f, 1);
    finish_all(f);
    done(&x, &c);
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(status_of(&x, "a"), POOL_LOADED);
    assert_int_equal(frees_now(), 0);
    /* and keep_alive 0 unloads as soon as it is idle */
    submit(&x, "a", &c, 0);
    wait_held(f, 1);
    finish_all(f);
    done(&x, &c);
    wait_status(&x, "a", POOL_UNLOADED);
    fx_stop(&x);
}

static void test_waiting_for_a_load_is_bounded(void **state) {
    (void)state;
    struct fx x;
    fx_start(&x, 1, 1, 1); /* queue_size 1 + 2 slots: 3 may wait */
    set_open(true, false, false);
    struct call c[4];
    for (int i = 0; i < 3; i++) {
        submit(&x, "a", &c[i], ENGINE_KEEP_ALIVE_UNSET);
        assert_int_equal(c[i].st, CORRAL_OK);
    }
    submit(&x, "a", &c[3], ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(c[3].st, CORRAL_OVERLOADED);
    assert_non_null(strstr(c[3].err.message, "waiting for model 'a' to load"));
    engine_req_release(c[3].req);
    /* a client that leaves frees its place */
    done(&x, &c[0]);
    submit(&x, "a", &c[0], ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(c[0].st, CORRAL_OK);
    set_open(true, true, false);
    struct fake *f = fake_of("a");
    wait_held(f, 3);
    finish_all(f);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(outcome(&c[i]), CORRAL_OK);
        done(&x, &c[i]);
    }
    fx_stop(&x);
}

static void test_unload_and_shutdown_stop_a_load(void **state) {
    (void)state;
    struct fx x;
    fx_start(&x, 2, 2, 4);
    set_open(true, false, false); /* loads hang until stopped */
    struct call a;
    submit(&x, "a", &a, ENGINE_KEEP_ALIVE_UNSET);
    wait_status(&x, "a", POOL_LOADING);
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    bool unloaded;
    struct corral_err err;
    assert_int_equal(pool_unload(x.pool, "a", false, &unloaded, &err), CORRAL_OK);
    assert_int_equal(outcome(&a), CORRAL_UNAVAILABLE);
    wait_status(&x, "a", POOL_UNLOADED); /* not FAILED: no cooldown */
    done(&x, &a);

    struct call b;
    submit(&x, "b", &b, ENGINE_KEEP_ALIVE_UNSET);
    nanosleep(&ts, NULL);
    int64_t t0 = time_now_ms();
    pool_close(x.pool);
    assert_int_equal(outcome(&b), CORRAL_UNAVAILABLE);
    struct corral_err e2;
    engine_req_error(b.req, &e2);
    assert_non_null(strstr(e2.message, "shutting down"));
    struct call late;
    submit(&x, "a", &late, ENGINE_KEEP_ALIVE_UNSET);
    assert_int_equal(late.st, CORRAL_UNAVAILABLE);
    engine_req_release(late.req);
    done(&x, &b);
    assert_int_equal(pool_in_flight(x.pool), 0);
    pool_stop(x.pool);
    assert_true(time_now_ms() - t0 < 3000);
    fx_stop(&x);
}

int main(void) {
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_serve_unload),
        cmocka_unit_test(test_forced_unload_then_load_serves_again),
        cmocka_unit_test(test_engine_stops_without_the_pool_lock),
        cmocka_unit_test(test_replaced_file_while_draining_moves_waiting_requests),
        cmocka_unit_test(test_huge_keep_alive_does_not_overflow),
        cmocka_unit_test(test_waiting_for_a_load_is_bounded),
        cmocka_unit_test(test_unload_and_shutdown_stop_a_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
