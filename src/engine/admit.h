/* admit.h - a model's bounded wait queue and its admission permits.
 *
 * Every engine puts its requests through one of these. submit (any thread)
 * checks the queue bound and queues; the engine's scheduler thread calls
 * admit_take to get the requests that may start now, each holding a permit
 * from the host's gate (capacity.h), and admit_wait to sleep until there is
 * news (a submit, a permit granted, a stop). A request waits in exactly this
 * one queue: there is no other in front of the scheduler.
 *
 * admit_take also drops requests cancelled while queued and fails those that
 * waited past their bound (engine_req_max_wait_ms) with a 503 queue_timeout.
 *
 * Locks: the queue's own mutex. The gate's wake-up takes it (gate lock, then
 * queue lock), so admit never calls the gate while holding it, and callers
 * must not hold it (they never see it) when releasing a request that holds
 * a permit.
 */
#ifndef CORRAL_ADMIT_H
#define CORRAL_ADMIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "capacity/capacity.h"
#include "engine/engine.h"
#include "engine/waitq.h"

struct admit_params {
    const char *id;        /* model id for messages and logs (borrowed; must outlive the queue) */
    int n_slots;           /* requests the engine runs at once */
    int queue_size;        /* requests allowed to wait beyond those that can start at once */
    struct capacity *gate; /* NULL = start whenever a slot is free */
    /* An embedding request starts without a slot (the llama engine runs one
     * between decode steps); when false it takes a slot like any other. */
    bool embed_free;
    /* Called (under the queue's lock) whenever there is news for the
     * scheduler, besides signalling admit_wait's condvar: for an engine that
     * sleeps in something else (a curl multi poll). May be NULL. */
    void (*notify)(void *ctx);
    void *notify_ctx;
    /* For tests: called by admit_take after it has taken permits and
     * before it pops the requests they are for, without the queue's lock
     * (a test stops the queue there). NULL otherwise. */
    void (*after_permits)(void *ctx);
    void *after_permits_ctx;
};

/* Embedded in an engine; fields are private to admit.c. */
struct admit {
    struct admit_params p;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct waitq queue;
    bool stopping;
    char stop_msg[160]; /* the first admit_stop's message */
    uint64_t kick;
    struct capacity_waiter waiter;
    bool waiting_permit; /* scheduler thread only */
    /* Scheduler thread only: an embedding (embed_free) is still running, so
     * the next one waits its turn in the queue. */
    bool embed_busy;
    _Atomic int64_t accepted;
};

/* 0 on success, -1 if out of memory. */
int admit_init(struct admit *a, const struct admit_params *p);
/* Fail what is still queued (CORRAL_UNAVAILABLE), leave the gate, free. */
void admit_free(struct admit *a);

/* Queue r (taking a reference). busy: the engine's slots in use now.
 * CORRAL_UNAVAILABLE when stopping, CORRAL_OVERLOADED (503) when the queue
 * is full; r is untouched then. */
enum corral_status admit_submit(struct admit *a, struct engine_req *r, int busy, struct corral_err *err);

/* Scheduler side. Fill out[] (at most max) with the requests that start
 * now, in queue order, given `idle` free slots: each holds a permit (given
 * back when it is freed); the caller owns the queue's reference and marks
 * it RUNNING (engine_req_set_running) once it has really started.
 * -1 once the queue is stopping (admit_stop): the scheduler should end. *seen gets the news counter to pass to admit_wait.
 * Never blocks on other requests. */
int admit_take(struct admit *a, int idle, struct engine_req **out, int max, uint64_t *seen);
/* Sleep until news after `seen` (submit, grant, stop) or timeout_ms (-1 =
 * none; while requests wait it is at most the poll interval, so their
 * deadlines and hang-ups are checked). */
void admit_wait(struct admit *a, uint64_t seen, int timeout_ms);
/* Cancel queued requests whose client socket hung up (POLLRDHUP). */
void admit_poll_hangups(struct admit *a);

/* Refuse new requests and fail the queued ones with CORRAL_UNAVAILABLE and
 * msg; wakes the scheduler. Idempotent: the first msg is kept. */
void admit_stop(struct admit *a, const char *msg);
/* The first stop's message (for the requests an engine still runs), or
 * "the model was unloaded" when not stopped; copied into out. */
void admit_stop_msg(struct admit *a, char *out, size_t out_len);
int admit_queued(struct admit *a);
int64_t admit_accepted(struct admit *a);

#endif
