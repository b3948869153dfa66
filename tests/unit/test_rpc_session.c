/* test_rpc_session.c - the dispatcher seen through a JSON-RPC session,
 * with the session's outgoing queue as the sink: methods, batches,
 * notifications, streams, cancel, access rules, the in-flight bound and
 * the drain.
 *
 * The service and the pool are the real ones (registry, loader, GGUF
 * estimate of the tiny test model); the engine is a stand-in that either
 * answers at once ("hello world", in two pieces) or holds its requests
 * until the test ends them. The end-to-end suite runs the same paths on
 * real llama.cpp over WebSocket and stdio. */
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
#include <time.h>

#include <jansson.h>

#include "config.h"
#include "engine/llama_engine.h"
#include "engine/proxy_engine.h"
#include "pool/pool.h"
#include "rpc/jsonrpc.h"
#include "rpc/session.h"
#include "service/service.h"
#include "util/time.h"

/* ------------------------------------------------------------ the fake engine */

#define FAKE_MAX 32

struct fake {
    struct engine base;
    pthread_mutex_t mu;
    struct engine_req *held[FAKE_MAX];
    int n_held;
    bool stopped;
};

static _Atomic bool hold_next; /* the engine holds requests instead of answering */
static struct fake *_Atomic the_fake;
static _Atomic int wakes;

static enum corral_status fake_submit(struct engine *b, struct engine_req *r, struct corral_err *err) {
    struct fake *f = (struct fake *)b;
    pthread_mutex_lock(&f->mu);
    if (f->stopped || f->n_held >= FAKE_MAX) {
        pthread_mutex_unlock(&f->mu);
        return corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "stopped");
    }
    engine_req_set_running(r);
    if (hold_next) {
        engine_req_retain(r);
        f->held[f->n_held++] = r;
    } else {
        const struct engine_input *in = engine_req_input(r);
        if (in->kind == ENGINE_EMBEDDING) {
            float **v = calloc(1, sizeof *v);
            v[0] = calloc(2, sizeof **v);
            v[0][0] = 1.0f;
            engine_req_set_embeddings(r, v, 1, 2);
        } else {
            engine_req_push(r, "hello", 5);
            engine_req_push(r, " world", 6);
        }
        struct engine_usage u = {.prompt_tokens = 3, .completion_tokens = 2};
        engine_req_set_usage(r, &u);
        engine_req_finish(r, ENGINE_FINISH_STOP);
    }
    pthread_mutex_unlock(&f->mu);
    return CORRAL_OK;
}

static void fake_stats(struct engine *b, struct engine_stats *out) {
    struct fake *f = (struct fake *)b;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&f->mu);
    out->slots_total = 2;
    out->slots_busy = f->n_held;
    pthread_mutex_unlock(&f->mu);
}

/* End every held request: cancelled ones fail as cancelled, the others finish. */
static int fake_end_held(void) {
    struct fake *f = the_fake;
    pthread_mutex_lock(&f->mu);
    int n = f->n_held, cancelled = 0;
    for (int i = 0; i < n; i++) {
        struct engine_req *r = f->held[i];
        if (engine_req_cancelled(r)) {
            struct corral_err err;
            corral_err_set(&err, CORRAL_CANCELLED, NULL, "cancelled");
            engine_req_fail(r, &err);
            cancelled++;
        } else {
            engine_req_push(r, "late", 4);
            engine_req_finish(r, ENGINE_FINISH_LENGTH);
        }
        engine_req_release(r);
    }
    f->n_held = 0;
    pthread_mutex_unlock(&f->mu);
    return cancelled;
}

static void fake_stop(struct engine *b, const char *why) {
    struct fake *f = (struct fake *)b;
    pthread_mutex_lock(&f->mu);
    f->stopped = true;
    for (int i = 0; i < f->n_held; i++) {
        struct corral_err err;
        corral_err_set(&err, CORRAL_UNAVAILABLE, NULL, "%s", why);
        engine_req_fail(f->held[i], &err);
        engine_req_release(f->held[i]);
    }
    f->n_held = 0;
    pthread_mutex_unlock(&f->mu);
}

static void fake_join(struct engine *b) { (void)b; }

static void fake_free(struct engine *b) {
    fake_stop(b, "unloaded");
    struct fake *f = (struct fake *)b;
    pthread_mutex_destroy(&f->mu);
    if (the_fake == f) the_fake = NULL;
    free(f);
}

static const struct engine_ops fake_ops = {
    .name = "fake", .submit = fake_submit, .stats = fake_stats, .stop = fake_stop, .join = fake_join, .free = fake_free,
};

static struct engine *fake_open_llama(const struct llama_engine_params *p, struct corral_err *err) {
    (void)p;
    (void)err;
    struct fake *f = calloc(1, sizeof *f);
    f->base.ops = &fake_ops;
    pthread_mutex_init(&f->mu, NULL);
    the_fake = f;
    return &f->base;
}

static struct engine *fake_open_proxy(const struct proxy_engine_params *p, struct corral_err *err) {
    (void)p;
    return corral_err_set(err, CORRAL_ENGINE, NULL, "no proxies here"), NULL;
}

static const struct pool_backends fake_backends = {.open_llama = fake_open_llama, .open_proxy = fake_open_proxy};

/* ------------------------------------------------------------ fixture */

struct fx {
    struct config cfg;
    struct pool *pool;
    struct service *svc;
    struct rpc_session *rpc;
};

static void wake(void *ctx) {
    (void)ctx;
    atomic_fetch_add(&wakes, 1);
}

static void fx_session(struct fx *x, bool can_infer, bool can_admin, bool admin_keyed, int max_inflight) {
    rpc_session_free(x->rpc);
    struct rpc_session_params p = {.svc = x->svc, .transport = SVC_STDIO, .can_infer = can_infer,
                                   .can_admin = can_admin, .admin_keyed = admin_keyed, .max_inflight = max_inflight,
                                   .fd = -1, .wake = wake};
    x->rpc = rpc_session_new(&p);
    assert_non_null(x->rpc);
}

static int fx_setup(void **state) {
    struct fx *x = calloc(1, sizeof *x);
    const char *model = getenv("CORRAL_TEST_MODEL");
    if (!model) fail_msg("CORRAL_TEST_MODEL is not set");
    config_defaults(&x->cfg);
    x->cfg.parallel = 2;
    x->cfg.ctx = 256;
    x->cfg.keep_alive_ms = -1;
    config_model_init(&x->cfg.models[0]);
    snprintf(x->cfg.models[0].id, sizeof x->cfg.models[0].id, "m");
    x->cfg.models[0].path = strdup(model);
    x->cfg.n_models = 1;
    struct corral_err err;
    x->pool = pool_new_with(&x->cfg, NULL, &fake_backends, &err);
    assert_non_null(x->pool);
    struct service_params sp = {.pool = x->pool, .queue_timeout_ms = -1};
    x->svc = service_new(&sp);
    fx_session(x, true, true, false, 4);
    hold_next = false;
    *state = x;
    return 0;
}

static int fx_teardown(void **state) {
    struct fx *x = *state;
    rpc_session_free(x->rpc);
    pool_stop(x->pool);
    assert_int_equal(service_active(x->svc), 0);
    pool_free(x->pool);
    service_free(x->svc);
    config_free(&x->cfg);
    free(x);
    return 0;
}

/* Pump until a message is out (the pool submits once the model has loaded). */
static json_t *next_msg(struct fx *x) {
    int64_t end = time_now_ms() + 10000;
    for (;;) {
        rpc_session_pump(x->rpc);
        size_t len;
        char *t = rpc_session_pop(x->rpc, &len);
        if (t) {
            json_error_t e;
            json_t *v = json_loadb(t, len, 0, &e);
            if (!v) fail_msg("not JSON: %s", t);
            free(t);
            return v;
        }
        if (time_now_ms() > end) fail_msg("no message came out");
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Pump until the engine holds n requests. */
static void wait_held(struct fx *x, int n) {
    int64_t end = time_now_ms() + 10000;
    for (;;) {
        struct engine_stats st = {0};
        if (the_fake) fake_stats(&the_fake->base, &st);
        if (st.slots_busy == n) return;
        if (time_now_ms() > end) fail_msg("the engine holds %d calls, not %d", st.slots_busy, n);
        rpc_session_pump(x->rpc);
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void no_msg(struct fx *x) {
    rpc_session_pump(x->rpc);
    size_t len;
    char *t = rpc_session_pop(x->rpc, &len);
    if (t) fail_msg("unexpected message: %s", t);
}

static void put(struct fx *x, const char *text) { rpc_session_input(x->rpc, text, strlen(text)); }

static int err_code(json_t *v) { return (int)json_integer_value(json_object_get(json_object_get(v, "error"), "code")); }

static const char *data_str(json_t *v, const char *key) {
    return json_string_value(json_object_get(json_object_get(json_object_get(v, "error"), "data"), key));
}

#define CHAT(id, extra)                                                                                               \
    "{\"jsonrpc\":\"2.0\",\"id\":" id ",\"method\":\"chat.completions\",\"params\":{\"model\":\"m\",\"messages\":[{" \
    "\"role\":\"user\",\"content\":\"hi\"}]" extra "}}"

/* ------------------------------------------------------------ tests */

static void test_chat_result(void **state) {
    struct fx *x = *state;
    put(x, CHAT("\"a\"", ""));
    json_t *v = next_msg(x);
    assert_string_equal(json_string_value(json_object_get(v, "id")), "a");
    json_t *r = json_object_get(v, "result");
    assert_string_equal(json_string_value(json_object_get(r, "object")), "chat.completion");
    json_t *msg = json_object_get(json_array_get(json_object_get(r, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "hello world");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "usage"), "completion_tokens")), 2);
    json_decref(v);
    assert_int_equal(rpc_session_inflight(x->rpc), 0);
    assert_int_equal(service_active(x->svc), 0);
}

static void test_stream_chunks_then_response(void **state) {
    struct fx *x = *state;
    put(x, CHAT("5", ",\"stream\":true,\"stream_options\":{\"include_usage\":true}"));
    char text[64] = "";
    int chunks = 0;
    bool finish = false, usage = false;
    for (;;) {
        json_t *v = next_msg(x);
        if (json_object_get(v, "method")) {
            assert_string_equal(json_string_value(json_object_get(v, "method")), "stream.chunk");
            assert_null(json_object_get(v, "id"));
            json_t *p = json_object_get(v, "params");
            assert_int_equal(json_integer_value(json_object_get(p, "id")), 5);
            json_t *ch = json_object_get(p, "chunk");
            assert_string_equal(json_string_value(json_object_get(ch, "object")), "chat.completion.chunk");
            json_t *c0 = json_array_get(json_object_get(ch, "choices"), 0);
            const char *piece = json_string_value(json_object_get(json_object_get(c0, "delta"), "content"));
            if (piece) strncat(text, piece, sizeof text - strlen(text) - 1);
            if (json_is_string(json_object_get(c0, "finish_reason"))) finish = true;
            if (json_array_size(json_object_get(ch, "choices")) == 0 && json_object_get(ch, "usage")) usage = true;
            chunks++;
            json_decref(v);
            continue;
        }
        /* the response comes last */
        assert_int_equal(json_integer_value(json_object_get(v, "id")), 5);
        json_t *r = json_object_get(v, "result");
        assert_string_equal(json_string_value(json_object_get(r, "finish_reason")), "stop");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "usage"), "total_tokens")), 5);
        json_decref(v);
        break;
    }
    assert_string_equal(text, "hello world");
    assert_true(chunks >= 4); /* role, text, finish, usage */
    assert_true(finish);
    assert_true(usage);
}

static void test_batch_mixed(void **state) {
    struct fx *x = *state;
    put(x, "[" CHAT("1", "") ",{\"jsonrpc\":\"2.0\",\"method\":\"health\"},"
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"nope\"},{\"foo\":1},"
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"models.list\"}]");
    json_t *v = next_msg(x);
    assert_true(json_is_array(v));
    assert_int_equal(json_array_size(v), 4); /* no entry for the notification */
    bool seen[4] = {false};
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        json_t *id = json_object_get(e, "id");
        if (json_is_null(id)) {
            assert_int_equal(err_code(e), RPC_INVALID_REQUEST);
            seen[0] = true;
        } else if (json_integer_value(id) == 1) {
            assert_non_null(json_object_get(e, "result"));
            seen[1] = true;
        } else if (json_integer_value(id) == 2) {
            assert_int_equal(err_code(e), RPC_METHOD_NOT_FOUND);
            seen[2] = true;
        } else {
            assert_int_equal(json_integer_value(id), 3);
            assert_string_equal(json_string_value(json_object_get(json_object_get(e, "result"), "object")), "list");
            seen[3] = true;
        }
    }
    assert_true(seen[0] && seen[1] && seen[2] && seen[3]);
    json_decref(v);
    no_msg(x);
    /* only notifications: nothing at all */
    put(x, "[{\"jsonrpc\":\"2.0\",\"method\":\"health\"},{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}]");
    no_msg(x);
}

static void test_errors(void **state) {
    struct fx *x = *state;
    put(x, "{oops");
    json_t *v = next_msg(x);
    assert_int_equal(err_code(v), RPC_PARSE_ERROR);
    assert_true(json_is_null(json_object_get(v, "id")));
    json_decref(v);
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"health\",\"params\":[1]}");
    v = next_msg(x);
    assert_int_equal(err_code(v), RPC_INVALID_PARAMS);
    json_decref(v);
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"chat.completions\",\"params\":{\"model\":\"m\"}}");
    v = next_msg(x);
    assert_int_equal(err_code(v), RPC_INVALID_PARAMS);
    assert_string_equal(data_str(v, "type"), "invalid_request_error");
    assert_string_equal(data_str(v, "param"), "messages");
    json_decref(v);
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"chat.completions\",\"params\":{\"model\":\"zz\","
            "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}");
    v = next_msg(x);
    assert_int_equal(err_code(v), RPC_NOT_FOUND);
    assert_string_equal(data_str(v, "code"), "model_not_found");
    json_decref(v);
    put(x, CHAT("1", ",\"max_wait_ms\":-5"));
    v = next_msg(x);
    assert_int_equal(err_code(v), RPC_INVALID_PARAMS);
    assert_string_equal(data_str(v, "param"), "max_wait_ms");
    json_decref(v);
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"models.get\",\"params\":{\"id\":\"m\"}}");
    v = next_msg(x);
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "result"), "id")), "m");
    json_decref(v);
}

static void test_access_rules(void **state) {
    struct fx *x = *state;
    fx_session(x, false, false, true, 4);
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"admin.pool\"}");
    json_t *v = next_msg(x);
    assert_int_equal(err_code(v), RPC_UNAUTHORIZED);
    json_decref(v);
    put(x, CHAT("2", ""));
    v = next_msg(x);
    assert_int_equal(err_code(v), RPC_UNAUTHORIZED);
    json_decref(v);
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"health\"}"); /* health needs no key */
    v = next_msg(x);
    assert_non_null(json_object_get(v, "result"));
    json_decref(v);
    fx_session(x, true, false, false, 4);
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"admin.unload\",\"params\":{\"model\":\"m\"}}");
    v = next_msg(x);
    assert_int_equal(err_code(v), RPC_FORBIDDEN);
    json_decref(v);
}

static void test_cancel_and_inflight_bound(void **state) {
    struct fx *x = *state;
    fx_session(x, true, true, false, 2);
    hold_next = true;
    put(x, CHAT("\"x\"", ",\"stream\":true"));
    put(x, CHAT("\"y\"", ""));
    put(x, CHAT("\"z\"", "")); /* a third: over the bound */
    json_t *v = next_msg(x);
    assert_string_equal(json_string_value(json_object_get(v, "id")), "z");
    assert_int_equal(err_code(v), RPC_OVERLOADED);
    assert_string_equal(data_str(v, "code"), "too_many_inflight");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(v, "error"), "data"),
                                                        "retry_after_ms")),
                     1000);
    json_decref(v);
    wait_held(x, 2); /* the model loads first */
    assert_int_equal(service_active(x->svc), 2);
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"cancel\",\"params\":{\"id\":\"x\"}}");
    /* the stream's role chunk may come first */
    for (;;) {
        v = next_msg(x);
        if (!json_object_get(v, "method")) break;
        json_decref(v);
    }
    assert_int_equal(json_integer_value(json_object_get(v, "id")), 9);
    assert_true(json_is_true(json_object_get(json_object_get(v, "result"), "cancelled")));
    json_decref(v);
    assert_int_equal(fake_end_held(), 1); /* the engine saw x cancelled, not y */
    bool got_x = false, got_y = false;
    while (!got_x || !got_y) {
        v = next_msg(x);
        const char *id = json_string_value(json_object_get(v, "id"));
        if (id && strcmp(id, "x") == 0) {
            assert_int_equal(err_code(v), RPC_CANCELLED);
            got_x = true;
        } else if (id && strcmp(id, "y") == 0) {
            assert_non_null(json_object_get(v, "result"));
            got_y = true;
        }
        json_decref(v);
    }
    assert_int_equal(rpc_session_inflight(x->rpc), 0);
    assert_int_equal(service_active(x->svc), 0);
    hold_next = false;
}

static void test_closed_session_cancels(void **state) {
    struct fx *x = *state;
    hold_next = true;
    put(x, CHAT("1", ",\"stream\":true"));
    wait_held(x, 1);
    assert_int_equal(rpc_session_inflight(x->rpc), 1);
    fx_session(x, true, true, false, 4); /* frees the old session */
    assert_int_equal(service_active(x->svc), 0);
    assert_int_equal(fake_end_held(), 1);
    hold_next = false;
}

static void test_draining(void **state) {
    struct fx *x = *state;
    service_drain(x->svc);
    put(x, CHAT("1", ""));
    json_t *v = next_msg(x);
    assert_int_equal(err_code(v), RPC_UNAVAILABLE);
    assert_string_equal(data_str(v, "code"), "shutting_down");
    json_decref(v);
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"health\"}");
    v = next_msg(x);
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "result"), "status")), "shutting_down");
    json_decref(v);
}

static void test_metrics_by_transport(void **state) {
    struct fx *x = *state;
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"health\"}");
    json_decref(next_msg(x));
    put(x, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"metrics\"}");
    json_t *v = next_msg(x);
    const char *text = json_string_value(json_object_get(v, "result"));
    assert_non_null(text);
    assert_non_null(strstr(text, "corral_transport_requests_total{transport=\"stdio\"} 2"));
    assert_non_null(strstr(text, "corral_transport_requests_total{transport=\"http\"} 0"));
    assert_non_null(strstr(text, "corral_rpc_sessions 1"));
    json_decref(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chat_result, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_stream_chunks_then_response, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_batch_mixed, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_access_rules, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_inflight_bound, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_closed_session_cancels, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_draining, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_by_transport, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
