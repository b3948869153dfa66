/* capacity.h - how many generations the host may run at once: the one
 * number, computed here and read everywhere else.
 *
 * Host capacity is fixed at start: CORRAL_MAX_CONCURRENT (a positive integer)
 * wins, then the config's max_concurrent, else one generation per 8 GiB of
 * RAM, at least 1 and at most 8. Engines size their slots from it
 * (min(parallel, host capacity)).
 *
 * Effective capacity follows memory pressure: about once a second the
 * monitor reads PSI (/proc/pressure/memory) and MemAvailable (/proc/meminfo)
 * and halves it under pressure (down to 1), then gives it back one step per
 * reading once the pressure is gone. Every change is logged.
 *
 * The admission gate hands out permits against effective capacity. Requests
 * wait in their model's queue, never here: a model's scheduler asks for a
 * permit (capacity_acquire) when a slot is free and its queue is not empty.
 * When no permit is free the scheduler is remembered as a waiter with the
 * arrival time of its oldest request, and a permit that frees up later goes
 * straight to the waiter whose oldest request has waited longest (it is
 * granted, then the waiter's wake callback runs). A permit lives with its
 * request and is given back when the request is freed, i.e. after the
 * response (or the stream) has been sent.
 *
 * Threads: every function is thread-safe. Lock order: the gate's lock is
 * taken before any lock a wake callback takes, so a caller must not hold a
 * lock its own wake callback takes while calling into the gate.
 */
#ifndef CORRAL_CAPACITY_H
#define CORRAL_CAPACITY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CAPACITY_BYTES_PER_GENERATION ((uint64_t)8 << 30)
#define CAPACITY_AUTO_MAX 8
#define CAPACITY_MAX 1024
#define CAPACITY_ENV "CORRAL_MAX_CONCURRENT"

enum capacity_source { CAPACITY_SRC_AUTO = 0, CAPACITY_SRC_CONFIG, CAPACITY_SRC_ENV };

const char *capacity_source_name(enum capacity_source s); /* "auto", "config", "env" */

/* The sizing rule (pure). env: the value of CORRAL_MAX_CONCURRENT, or NULL
 * when unset. cfg_max: the config's max_concurrent, 0 when unset. ram: host
 * memory in bytes (0 = unknown, counted as 8 GiB). Returns the host capacity
 * and its source in *src. An env value that is not an integer in
 * 1..CAPACITY_MAX is ignored; then a message naming it is written to warn
 * (when warn is not NULL; else warn gets ""). */
int capacity_size(const char *env, int cfg_max, uint64_t ram, enum capacity_source *src, char *warn,
                  size_t warn_len);

/* ------------------------------------------------------------ pressure */

/* One look at the host's memory. Unknown values are negative (PSI) or 0. */
struct capacity_reading {
    double some_avg10; /* % of the last 10 s some task stalled on memory; -1 = unknown */
    double full_avg10; /* % of the last 10 s all tasks stalled on memory; -1 = unknown */
    uint64_t mem_total;     /* bytes, 0 = unknown */
    uint64_t mem_available; /* bytes, 0 = unknown */
};

enum capacity_level { CAPACITY_RELIEVED = 0, CAPACITY_STEADY, CAPACITY_PRESSURE, CAPACITY_CRITICAL };

const char *capacity_level_name(enum capacity_level l); /* "none", "steady", "pressure", "critical" */

/* Parse the text of /proc/pressure/memory and /proc/meminfo (pure). Fields
 * not found stay unknown. 0 if anything was found, -1 if nothing. */
int capacity_parse_psi(const char *text, struct capacity_reading *rd);
int capacity_parse_meminfo(const char *text, struct capacity_reading *rd);
/* Read both files (either path may be NULL or unreadable: its fields stay
 * unknown). */
void capacity_read(const char *psi_path, const char *meminfo_path, struct capacity_reading *rd);

/* Classify a reading (pure):
 *   CRITICAL  full avg10 >= 10 %, or MemAvailable < 5 % of MemTotal
 *   PRESSURE  some avg10 >= 20 %, full avg10 >= 2 %, or MemAvailable < 10 %
 *   RELIEVED  some avg10 < 5 %, full avg10 < 0.5 % and MemAvailable >= 15 %
 *             (unknown values count as relieved)
 *   STEADY    in between (hold the current value: hysteresis)
 * and write a short human reason into why (may be NULL). */
enum capacity_level capacity_classify(const struct capacity_reading *rd, char *why, size_t why_len);
/* The next effective capacity (pure): CRITICAL -> 1, PRESSURE -> half of
 * cur (at least 1), RELIEVED -> cur + 1 (at most host), STEADY -> cur. */
int capacity_next(int host, int cur, enum capacity_level level);

/* ------------------------------------------------------------ the gate */

struct capacity;

struct capacity_params {
    int cfg_max;              /* config max_concurrent; 0 = unset */
    const char *env_value;    /* CORRAL_MAX_CONCURRENT's value; NULL = unset */
    uint64_t ram;             /* host memory; 0 = read it (physical RAM, or a smaller cgroup limit) */
    const char *psi_path;     /* NULL = /proc/pressure/memory; "" = none */
    const char *meminfo_path; /* NULL = /proc/meminfo; "" = none */
    int interval_ms;          /* how often the monitor reads; 0 = no monitor thread (call capacity_tick) */
};

/* Size the host, take a first reading and start the monitor. NULL only when
 * out of memory or the thread cannot start. A rejected env value is logged
 * as a warning here. */
struct capacity *capacity_new(const struct capacity_params *p);
void capacity_free(struct capacity *c);

int capacity_host(const struct capacity *c);
int capacity_effective(const struct capacity *c);
/* Permits free now (effective - in use, at least 0); a lock-free glance. */
int capacity_free_permits(const struct capacity *c);
/* Read the files now and adjust effective capacity; returns the new value. */
int capacity_tick(struct capacity *c);

/* A party that waits for permits (one per model scheduler). Embed it, call
 * capacity_waiter_init, and capacity_withdraw before freeing it. */
struct capacity_waiter {
    void (*wake)(void *ctx); /* called with the gate's lock held: must only signal */
    void *ctx;
    _Atomic int granted;     /* permits handed to this waiter, not yet taken */
    /* the gate's bookkeeping; guarded by its lock */
    int64_t since_us;
    bool waiting;
    struct capacity_waiter *next;
};

void capacity_waiter_init(struct capacity_waiter *w, void (*wake)(void *ctx), void *ctx);
/* Take one permit for a request that arrived (or was queued) at since_us
 * (monotonic µs). true: a permit is held, give it back with
 * capacity_release. false: none is free; w now waits with since_us and is
 * granted the next free permit that no longer-waiting waiter gets (its wake
 * runs then; the next acquire takes the grant). */
bool capacity_acquire(struct capacity *c, struct capacity_waiter *w, int64_t since_us);
/* Give a permit back: it goes to the longest-waiting waiter, if any. */
void capacity_release(struct capacity *c);
/* Stop waiting and give back permits granted but not taken. */
void capacity_withdraw(struct capacity *c, struct capacity_waiter *w);

/* ------------------------------------------------------------ numbers */

enum capacity_reject { CAPACITY_REJECT_QUEUE_FULL = 0, CAPACITY_REJECT_TIMEOUT, CAPACITY__REJECT_COUNT };

/* Record an admission after `wait_us` in a queue, or a refusal. */
void capacity_note_admit(struct capacity *c, int64_t wait_us);
void capacity_note_reject(struct capacity *c, enum capacity_reject why);

#define CAPACITY_WAIT_BUCKETS 13
extern const double capacity_wait_bounds[CAPACITY_WAIT_BUCKETS]; /* seconds; +Inf is implicit */

struct capacity_snapshot {
    int host;
    enum capacity_source host_source;
    uint64_t ram;
    int effective;
    bool reduced; /* effective < host because of memory pressure */
    enum capacity_level level;
    char why[128]; /* the last reading, in words */
    struct capacity_reading reading;
    int in_use;
    int waiters;        /* schedulers waiting for a permit */
    int64_t changes;    /* effective capacity changes so far */
    int64_t admitted;
    int64_t rejected[CAPACITY__REJECT_COUNT];
    /* queue waits: cumulative counts per bucket (le bound), total count and sum */
    int64_t wait_buckets[CAPACITY_WAIT_BUCKETS];
    int64_t wait_count;
    double wait_sum_s;
};

void capacity_snapshot(struct capacity *c, struct capacity_snapshot *out);

#endif
