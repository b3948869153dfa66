/* test_admit.c - a model's bounded queue and the gate's permits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "capacity/capacity.h"
#include "engine/admit.h"

#define GiB ((uint64_t)1 << 30)

static struct capacity *gate_of(int n) {
    struct capacity_params p = {.cfg_max = n, .psi_path = "", .meminfo_path = "", .interval_ms = 0, .ram = 64 * GiB};
    struct capacity *c = capacity_new(&p);
    assert_non_null(c);
    return c;
}

static int in_use(struct capacity *c) {
    struct capacity_snapshot s;
    capacity_snapshot(c, &s);
    return s.in_use;
}

static struct engine_req *req_of(enum engine_kind kind) {
    struct engine_input in;
    memset(&in, 0, sizeof in);
    in.kind = kind;
    struct engine_req *r = engine_req_new(&in, 1024);
    assert_non_null(r);
    return r;
}

static enum engine_req_state state_of(struct engine_req *r, enum corral_status *st) {
    struct engine_req_view v;
    engine_req_take(r, NULL, 0, &v);
    if (st) *st = v.status;
    return v.state;
}

static void test_permits_live_with_their_requests(void **state) {
    (void)state;
    struct capacity *gate = gate_of(2);
    struct admit a;
    struct admit_params p = {.id = "m", .n_slots = 2, .queue_size = 4, .gate = gate};
    assert_int_equal(admit_init(&a, &p), 0);
    struct engine_req *r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = req_of(ENGINE_CHAT);
        assert_int_equal(admit_submit(&a, r[i], 0, NULL), CORRAL_OK);
    }
    struct engine_req *out[4];
    uint64_t seen;
    assert_int_equal(admit_take(&a, 2, out, 4, &seen), 2); /* two slots, two permits */
    assert_ptr_equal(out[0], r[0]);
    assert_ptr_equal(out[1], r[1]);
    assert_int_equal(in_use(gate), 2);
    assert_int_equal(admit_queued(&a), 1);
    /* the engine's reference goes; the transport's keeps the permit */
    engine_req_release(out[0]);
    assert_int_equal(in_use(gate), 2);
    engine_req_release(r[0]);
    assert_int_equal(in_use(gate), 1);
    engine_req_release(out[1]);
    engine_req_release(r[1]);
    assert_int_equal(in_use(gate), 0);
    admit_free(&a); /* fails the queued one */
    enum corral_status st;
    assert_int_equal(state_of(r[2], &st), ENGINE_REQ_DONE);
    assert_int_equal(st, CORRAL_UNAVAILABLE);
    engine_req_release(r[2]);
    assert_int_equal(in_use(gate), 0);
    capacity_free(gate);
}

static void stop_it(void *ctx) { admit_stop(ctx, "stopped between the permits and the pop"); }

static void test_stop_between_permits_and_pop_gives_permits_back(void **state) {
    (void)state;
    struct capacity *gate = gate_of(2);
    struct admit a;
    struct admit_params p = {.id = "m", .n_slots = 2, .queue_size = 4, .gate = gate, .after_permits = stop_it,
                             .after_permits_ctx = &a};
    assert_int_equal(admit_init(&a, &p), 0);
    struct engine_req *r[2];
    for (int i = 0; i < 2; i++) {
        r[i] = req_of(ENGINE_CHAT);
        assert_int_equal(admit_submit(&a, r[i], 0, NULL), CORRAL_OK);
    }
    struct engine_req *out[4];
    uint64_t seen;
    /* both permits are taken, then the queue is stopped and emptied: no
     * request is handed out, and no permit may stay taken */
    assert_int_equal(admit_take(&a, 2, out, 4, &seen), 0);
    assert_int_equal(in_use(gate), 0);
    assert_int_equal(admit_take(&a, 2, out, 4, &seen), -1);
    for (int i = 0; i < 2; i++) {
        enum corral_status st;
        assert_int_equal(state_of(r[i], &st), ENGINE_REQ_DONE);
        assert_int_equal(st, CORRAL_UNAVAILABLE);
        engine_req_release(r[i]);
    }
    admit_free(&a);
    assert_int_equal(in_use(gate), 0);
    capacity_free(gate);
}

static void test_queue_bound_refuses_at_once(void **state) {
    (void)state;
    struct admit a;
    struct admit_params p = {.id = "m", .n_slots = 1, .queue_size = 1};
    assert_int_equal(admit_init(&a, &p), 0);
    struct engine_req *r[3];
    struct corral_err err;
    for (int i = 0; i < 3; i++) r[i] = req_of(ENGINE_COMPLETION);
    /* one slot busy: one may wait */
    assert_int_equal(admit_submit(&a, r[0], 1, &err), CORRAL_OK);
    assert_int_equal(admit_submit(&a, r[1], 1, &err), CORRAL_OVERLOADED);
    assert_non_null(strstr(err.message, "queue limit 1"));
    assert_int_equal(state_of(r[1], NULL), ENGINE_REQ_QUEUED); /* untouched */
    char msg[64];
    admit_stop_msg(&a, msg, sizeof msg);
    assert_string_equal(msg, "the model was unloaded"); /* not stopped yet */
    admit_stop(&a, "bye");
    admit_stop(&a, "later"); /* the first message is kept */
    admit_stop_msg(&a, msg, sizeof msg);
    assert_string_equal(msg, "bye");
    assert_int_equal(admit_submit(&a, r[2], 0, &err), CORRAL_UNAVAILABLE);
    admit_free(&a);
    for (int i = 0; i < 3; i++) engine_req_release(r[i]);
}

static void test_cancelled_and_expired_leave_the_queue(void **state) {
    (void)state;
    struct admit a;
    struct admit_params p = {.id = "m", .n_slots = 1, .queue_size = 4};
    assert_int_equal(admit_init(&a, &p), 0);
    struct engine_req *gone = req_of(ENGINE_CHAT), *hurry = req_of(ENGINE_CHAT), *calm = req_of(ENGINE_CHAT);
    engine_req_set_max_wait(hurry, 0);
    assert_int_equal(admit_submit(&a, gone, 1, NULL), CORRAL_OK);
    assert_int_equal(admit_submit(&a, hurry, 1, NULL), CORRAL_OK);
    assert_int_equal(admit_submit(&a, calm, 1, NULL), CORRAL_OK);
    engine_req_cancel(gone);
    struct engine_req *out[2];
    uint64_t seen;
    assert_int_equal(admit_take(&a, 0, out, 2, &seen), 0); /* no idle slot */
    enum corral_status st;
    assert_int_equal(state_of(gone, &st), ENGINE_REQ_DONE);
    assert_int_equal(st, CORRAL_CANCELLED);
    assert_int_equal(state_of(hurry, &st), ENGINE_REQ_DONE);
    assert_int_equal(st, CORRAL_OVERLOADED);
    assert_int_equal(admit_queued(&a), 1);
    assert_int_equal(admit_take(&a, 1, out, 2, &seen), 1);
    assert_ptr_equal(out[0], calm);
    engine_req_release(out[0]);
    admit_free(&a);
    engine_req_release(gone);
    engine_req_release(hurry);
    engine_req_release(calm);
}

static void test_embedding_starts_without_a_slot(void **state) {
    (void)state;
    struct admit a;
    struct admit_params p = {.id = "m", .n_slots = 1, .queue_size = 4, .embed_free = true};
    assert_int_equal(admit_init(&a, &p), 0);
    struct engine_req *e1 = req_of(ENGINE_EMBEDDING), *e2 = req_of(ENGINE_EMBEDDING), *c = req_of(ENGINE_CHAT);
    admit_submit(&a, e1, 1, NULL);
    admit_submit(&a, e2, 1, NULL);
    admit_submit(&a, c, 1, NULL);
    struct engine_req *out[3];
    uint64_t seen;
    /* no idle slot: one embedding (at most one per take) */
    assert_int_equal(admit_take(&a, 0, out, 3, &seen), 1);
    assert_ptr_equal(out[0], e1);
    engine_req_release(out[0]);
    assert_int_equal(admit_take(&a, 1, out, 3, &seen), 2);
    assert_ptr_equal(out[0], e2);
    assert_ptr_equal(out[1], c);
    engine_req_release(out[0]);
    engine_req_release(out[1]);
    admit_free(&a);
    engine_req_release(e1);
    engine_req_release(e2);
    engine_req_release(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_permits_live_with_their_requests),
        cmocka_unit_test(test_stop_between_permits_and_pop_gives_permits_back),
        cmocka_unit_test(test_queue_bound_refuses_at_once),
        cmocka_unit_test(test_cancelled_and_expired_leave_the_queue),
        cmocka_unit_test(test_embedding_starts_without_a_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
