/* admit.c - a model's bounded wait queue and its admission permits (see
 * admit.h).
 *
 * DESIGN
 * admit_take works in three steps so that the gate is never called under
 * the queue's lock (the gate's wake-up takes that lock):
 *   1. under the lock: drop cancelled requests and count how many could
 *      start in queue order (idle slots; one embedding without a slot when
 *      embed_free), noting the arrival time of the oldest;
 *   2. without it: take that many permits from the gate; with none free the
 *      queue stays registered as a waiter and the gate wakes it later;
 *   3. under the lock: pop the first `got` requests (only this thread
 *      pops, so they are still the first unless admit_stop emptied the
 *      queue meanwhile: the permits left over then go straight back to the
 *      gate), then fail what waited past its bound.
 * A queue that no longer wants permits withdraws from the gate, which hands
 * back any permit granted meanwhile.
 */
#include "engine/admit.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/log.h"
#include "util/time.h"

/* How often a waiting scheduler looks at deadlines and hang-ups. */
#define ADMIT_POLL_MS 20
/* A wait longer than this is logged. */
#define ADMIT_SLOW_WAIT_US 100000
/* Most sockets polled at once for hang-ups. */
#define ADMIT_POLL_MAX 512

/* News for the scheduler. Caller holds mu. */
static void admit__kick(struct admit *a) {
    a->kick++;
    pthread_cond_signal(&a->cv);
    if (a->p.notify) a->p.notify(a->p.notify_ctx);
}

/* The gate granted a permit (runs with the gate's lock held). */
static void admit__granted(void *ctx) {
    struct admit *a = ctx;
    pthread_mutex_lock(&a->mu);
    admit__kick(a);
    pthread_mutex_unlock(&a->mu);
}

int admit_init(struct admit *a, const struct admit_params *p) {
    memset(a, 0, sizeof *a);
    a->p = *p;
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);
    capacity_waiter_init(&a->waiter, admit__granted, a);
    atomic_init(&a->accepted, 0);
    if (waitq_init(&a->queue, (size_t)p->queue_size + (size_t)p->n_slots + 1) != 0) {
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        return -1;
    }
    return 0;
}

void admit_free(struct admit *a) {
    admit_stop(a, "the model was unloaded");
    if (a->p.gate) capacity_withdraw(a->p.gate, &a->waiter);
    waitq_free(&a->queue);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
}

static void admit__fail(struct engine_req *r, enum corral_status st, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void admit__fail(struct engine_req *r, enum corral_status st, const char *code, const char *fmt, ...) {
    struct corral_err err;
    corral_err_clear(&err);
    err.status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof err.message, fmt, ap);
    va_end(ap);
    if (code) snprintf(err.code, sizeof err.code, "%s", code);
    engine_req_fail(r, &err);
}

enum corral_status admit_submit(struct admit *a, struct engine_req *r, int busy, struct corral_err *err) {
    struct capacity *gate = a->p.gate;
    pthread_mutex_lock(&a->mu);
    if (a->stopping) {
        pthread_mutex_unlock(&a->mu);
        return corral_err_set(err, CORRAL_UNAVAILABLE, NULL, "model '%s' is shutting down", a->p.id);
    }
    /* requests that can start at once (a slot and a permit free) do not
     * count against the queue limit */
    int startable = a->p.n_slots - busy;
    if (gate && capacity_free_permits(gate) < startable) startable = capacity_free_permits(gate);
    int waiting = (int)waitq_len(&a->queue) - startable;
    if (waiting >= a->p.queue_size || waitq_full(&a->queue)) {
        pthread_mutex_unlock(&a->mu);
        if (gate) capacity_note_reject(gate, CAPACITY_REJECT_QUEUE_FULL);
        return corral_err_set(err, CORRAL_OVERLOADED, NULL,
                              "model '%s' is at capacity: %d of %d slots busy, %d requests waiting "
                              "(queue limit %d)%s; retry later",
                              a->p.id, busy, a->p.n_slots, waiting < 0 ? 0 : waiting, a->p.queue_size,
                              gate && capacity_free_permits(gate) == 0 ? ", host capacity in use" : "");
    }
    engine_req_retain(r);
    engine_req_set_queued_us(r, time_now_us());
    waitq_push(&a->queue, r);
    atomic_fetch_add(&a->accepted, 1);
    admit__kick(a);
    pthread_mutex_unlock(&a->mu);
    return CORRAL_OK;
}

/* Drop cancelled requests; with expire, also fail those past their bound.
 * Caller holds mu. */
static void admit__sweep(struct admit *a, bool expire) {
    struct capacity *gate = a->p.gate;
    int64_t now = time_now_us();
    for (size_t i = 0; i < waitq_len(&a->queue);) {
        struct engine_req *r = waitq_at(&a->queue, i);
        if (engine_req_cancelled(r)) {
            waitq_remove(&a->queue, r);
            admit__fail(r, CORRAL_CANCELLED, NULL, "request cancelled before it started");
            engine_req_release(r); /* queued: holds no permit */
            continue;
        }
        int64_t max_ms = engine_req_max_wait_ms(r);
        int64_t waited = now - engine_req_queued_us(r);
        if (expire && max_ms >= 0 && waited >= max_ms * 1000) {
            waitq_remove(&a->queue, r);
            if (gate) capacity_note_reject(gate, CAPACITY_REJECT_TIMEOUT); /* before the client hears */
            log_info("model %s: a request gave up after %lld ms in the queue (limit %lld ms)", a->p.id,
                     (long long)(waited / 1000), (long long)max_ms);
            admit__fail(r, CORRAL_OVERLOADED, "queue_timeout",
                        "model '%s' had no free generation slot within %lld ms (host capacity %d, effective "
                        "%d, %d free; %zu waiting here); retry later",
                        a->p.id, (long long)max_ms, gate ? capacity_host(gate) : a->p.n_slots,
                        gate ? capacity_effective(gate) : a->p.n_slots, gate ? capacity_free_permits(gate) : 0,
                        waitq_len(&a->queue));
            engine_req_release(r);
            continue;
        }
        i++;
    }
}

/* How many queued requests could start now, in queue order. Caller holds mu. */
static int admit__startable(struct admit *a, int idle) {
    int n = 0, gens = 0;
    bool embed = false;
    for (size_t i = 0; i < waitq_len(&a->queue); i++) {
        struct engine_req *r = waitq_at(&a->queue, i);
        if (a->p.embed_free && engine_req_input(r)->kind == ENGINE_EMBEDDING) {
            if (embed || a->embed_busy) break;
            embed = true;
        } else {
            if (gens >= idle) break;
            gens++;
        }
        n++;
    }
    return n;
}

/* Take up to `want` permits for requests queued since since_us. Called
 * without mu. */
static int admit__permits(struct admit *a, int want, int64_t since_us) {
    struct capacity *gate = a->p.gate;
    if (!gate) return want;
    if (want == 0) {
        if (a->waiting_permit || atomic_load(&a->waiter.granted) > 0) capacity_withdraw(gate, &a->waiter);
        a->waiting_permit = false;
        return 0;
    }
    int got = 0;
    while (got < want && capacity_acquire(gate, &a->waiter, since_us)) got++;
    a->waiting_permit = got < want;
    return got;
}

int admit_take(struct admit *a, int idle, struct engine_req **out, int max, uint64_t *seen) {
    struct capacity *gate = a->p.gate;
    pthread_mutex_lock(&a->mu);
    *seen = a->kick;
    if (a->stopping) {
        pthread_mutex_unlock(&a->mu);
        return -1;
    }
    admit__sweep(a, false);
    int want = admit__startable(a, idle);
    if (want > max) want = max;
    int64_t since = want ? engine_req_queued_us(waitq_peek(&a->queue)) : 0;
    pthread_mutex_unlock(&a->mu);

    int got = admit__permits(a, want, since);
    if (a->p.after_permits) a->p.after_permits(a->p.after_permits_ctx);

    pthread_mutex_lock(&a->mu);
    int n = 0;
    for (; n < got && !a->stopping && waitq_len(&a->queue) > 0; n++) {
        struct engine_req *r = waitq_pop(&a->queue);
        int64_t wait = time_now_us() - engine_req_queued_us(r);
        if (gate) {
            engine_req_set_permit(r, gate);
            capacity_note_admit(gate, wait);
            if (wait > ADMIT_SLOW_WAIT_US)
                log_info("model %s: a request waited %lld ms for a slot (host capacity %d, effective %d, %d free; "
                         "%d slots free here, %zu more waiting)",
                         a->p.id, (long long)(wait / 1000), capacity_host(gate), capacity_effective(gate),
                         capacity_free_permits(gate), idle - 1, waitq_len(&a->queue));
        }
        out[n] = r;
    }
    admit__sweep(a, true);
    pthread_mutex_unlock(&a->mu);
    /* permits for requests that are gone (stopped meanwhile) go back, after
     * the queue's lock: the gate's hand-out may wake this queue */
    for (int i = n; gate && i < got; i++) capacity_release(gate);
    return n;
}

void admit_wait(struct admit *a, uint64_t seen, int timeout_ms) {
    pthread_mutex_lock(&a->mu);
    if (!a->stopping && a->kick == seen && atomic_load(&a->waiter.granted) == 0) {
        if (waitq_len(&a->queue) > 0 && (timeout_ms < 0 || timeout_ms > ADMIT_POLL_MS)) timeout_ms = ADMIT_POLL_MS;
        if (timeout_ms < 0) {
            pthread_cond_wait(&a->cv, &a->mu);
        } else {
            struct timespec ts;
            time_deadline_ms(&ts, timeout_ms);
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        }
    }
    pthread_mutex_unlock(&a->mu);
}

void admit_poll_hangups(struct admit *a) {
    struct engine_req *who[ADMIT_POLL_MAX];
    size_t n = 0;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < waitq_len(&a->queue) && n < ADMIT_POLL_MAX; i++) who[n++] = waitq_at(&a->queue, i);
    engine_req_poll_hangups(who, n);
    pthread_mutex_unlock(&a->mu);
}

void admit_stop(struct admit *a, const char *msg) {
    pthread_mutex_lock(&a->mu);
    if (!a->stopping) snprintf(a->stop_msg, sizeof a->stop_msg, "%s", msg);
    a->stopping = true;
    struct engine_req *r;
    while ((r = waitq_pop(&a->queue))) {
        admit__fail(r, CORRAL_UNAVAILABLE, NULL, "%s", msg);
        engine_req_release(r);
    }
    admit__kick(a);
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void admit_stop_msg(struct admit *a, char *out, size_t out_len) {
    pthread_mutex_lock(&a->mu);
    snprintf(out, out_len, "%s", a->stopping ? a->stop_msg : "the model was unloaded");
    pthread_mutex_unlock(&a->mu);
}

int admit_queued(struct admit *a) {
    pthread_mutex_lock(&a->mu);
    int n = (int)waitq_len(&a->queue);
    pthread_mutex_unlock(&a->mu);
    return n;
}

int64_t admit_accepted(struct admit *a) { return atomic_load(&a->accepted); }
