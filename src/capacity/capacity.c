/* capacity.c - host capacity, memory pressure and the admission gate (see
 * capacity.h).
 *
 * DESIGN
 * One mutex guards the gate: permits in use, the effective capacity and the
 * list of waiting schedulers. in_use and effective are mirrored in atomics
 * so that schedulers and the HTTP layer can glance at them without the lock
 * (a glance may be a moment stale; every decision is made under the lock).
 *
 * Hand-off keeps the order fair across models: a permit given back while
 * someone waits is not returned to the pool of free permits, where any
 * newcomer could take it, but granted directly to the waiter whose oldest
 * request arrived first. The grant stays counted as in use.
 *
 * The monitor thread sleeps on a condvar (so capacity_free wakes it at
 * once), reads the two files, and applies capacity_next.
 */
#define _GNU_SOURCE
#include "capacity/capacity.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"
#include "util/time.h"

#define CAPACITY_PSI_DEFAULT "/proc/pressure/memory"
#define CAPACITY_MEMINFO_DEFAULT "/proc/meminfo"
#define CAPACITY_FILE_MAX 8192

const double capacity_wait_bounds[CAPACITY_WAIT_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                            1,     2.5,  5,     10,   30,  60};

struct capacity {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the monitor's sleep */
    pthread_t monitor;
    bool monitor_started;
    bool stopping;
    int interval_ms;
    char *psi_path;
    char *meminfo_path;

    int host;
    enum capacity_source host_source;
    uint64_t ram;

    /* guarded by mu; effective and in_use mirrored for glances */
    int effective;
    int in_use;
    _Atomic int effective_seen;
    _Atomic int in_use_seen;
    struct capacity_waiter *waiters; /* unordered; few (one per loaded model) */
    enum capacity_level level;
    char why[128];
    struct capacity_reading reading;
    int64_t changes;

    /* statistics, guarded by stats_mu (a leaf lock: callers may hold any
     * other lock, including one a wake callback takes) */
    pthread_mutex_t stats_mu;
    int64_t admitted;
    int64_t rejected[CAPACITY__REJECT_COUNT];
    int64_t wait_buckets[CAPACITY_WAIT_BUCKETS];
    int64_t wait_count;
    double wait_sum_s;
};

const char *capacity_source_name(enum capacity_source s) {
    switch (s) {
    case CAPACITY_SRC_AUTO: return "auto";
    case CAPACITY_SRC_CONFIG: return "config";
    case CAPACITY_SRC_ENV: return "env";
    }
    return "auto";
}

const char *capacity_level_name(enum capacity_level l) {
    switch (l) {
    case CAPACITY_RELIEVED: return "none";
    case CAPACITY_STEADY: return "steady";
    case CAPACITY_PRESSURE: return "pressure";
    case CAPACITY_CRITICAL: return "critical";
    }
    return "none";
}

/* ------------------------------------------------------------ sizing */

int capacity_size(const char *env, int cfg_max, uint64_t ram, enum capacity_source *src, char *warn,
                  size_t warn_len) {
    if (warn && warn_len) warn[0] = '\0';
    if (env) {
        const char *s = env;
        while (*s == ' ' || *s == '\t') s++;
        char *end = NULL;
        errno = 0;
        long v = (*s >= '0' && *s <= '9') ? strtol(s, &end, 10) : -1;
        if (end)
            while (*end == ' ' || *end == '\t') end++;
        if (end && *end == '\0' && errno == 0 && v >= 1 && v <= CAPACITY_MAX) {
            *src = CAPACITY_SRC_ENV;
            return (int)v;
        }
        if (warn && warn_len)
            snprintf(warn, warn_len, "%s=\"%.64s\" is not an integer in 1..%d; ignored", CAPACITY_ENV, env,
                     CAPACITY_MAX);
    }
    if (cfg_max > 0) {
        *src = CAPACITY_SRC_CONFIG;
        return cfg_max > CAPACITY_MAX ? CAPACITY_MAX : cfg_max;
    }
    *src = CAPACITY_SRC_AUTO;
    if (ram == 0) ram = CAPACITY_BYTES_PER_GENERATION;
    uint64_t n = ram / CAPACITY_BYTES_PER_GENERATION;
    if (n < 1) n = 1;
    if (n > CAPACITY_AUTO_MAX) n = CAPACITY_AUTO_MAX;
    return (int)n;
}

/* Physical RAM, or the cgroup (v2) memory limit when that is smaller. */
static uint64_t capacity__host_ram(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
    if (f) {
        unsigned long long lim = 0;
        if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && (ram == 0 || lim < ram)) ram = lim;
        fclose(f);
    }
    return ram;
}

/* ------------------------------------------------------------ pressure */

int capacity_parse_psi(const char *text, struct capacity_reading *rd) {
    int found = 0;
    for (const char *line = text; line && *line;) {
        double avg10;
        if (sscanf(line, "some avg10=%lf", &avg10) == 1) {
            rd->some_avg10 = avg10;
            found++;
        } else if (sscanf(line, "full avg10=%lf", &avg10) == 1) {
            rd->full_avg10 = avg10;
            found++;
        }
        line = strchr(line, '\n');
        if (line) line++;
    }
    return found ? 0 : -1;
}

int capacity_parse_meminfo(const char *text, struct capacity_reading *rd) {
    int found = 0;
    for (const char *line = text; line && *line;) {
        unsigned long long kb;
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) {
            rd->mem_total = (uint64_t)kb * 1024;
            found++;
        } else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
            rd->mem_available = (uint64_t)kb * 1024;
            found++;
        }
        line = strchr(line, '\n');
        if (line) line++;
    }
    return found ? 0 : -1;
}

/* Read a small file into buf (NUL-terminated). 0 on success. */
static int capacity__slurp(const char *path, char *buf, size_t cap) {
    if (!path || !path[0]) return -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

void capacity_read(const char *psi_path, const char *meminfo_path, struct capacity_reading *rd) {
    char text[CAPACITY_FILE_MAX];
    rd->some_avg10 = rd->full_avg10 = -1;
    rd->mem_total = rd->mem_available = 0;
    if (capacity__slurp(psi_path, text, sizeof text) == 0) capacity_parse_psi(text, rd);
    if (capacity__slurp(meminfo_path, text, sizeof text) == 0) capacity_parse_meminfo(text, rd);
}

enum capacity_level capacity_classify(const struct capacity_reading *rd, char *why, size_t why_len) {
    bool mem = rd->mem_total > 0 && rd->mem_available > 0;
    /* percent of memory available, as a double so no product overflows */
    double avail_pct = mem ? 100.0 * (double)rd->mem_available / (double)rd->mem_total : 100.0;
    char tmp[128];
    int n = 0;
    if (rd->some_avg10 >= 0)
        n = snprintf(tmp, sizeof tmp, "PSI some %.1f%% full %.1f%%", rd->some_avg10,
                     rd->full_avg10 >= 0 ? rd->full_avg10 : 0.0);
    if (mem && n >= 0 && (size_t)n < sizeof tmp)
        snprintf(tmp + n, sizeof tmp - (size_t)n, "%sMemAvailable %.0f MiB (%.1f%%)", n ? ", " : "",
                 rd->mem_available / 1048576.0, avail_pct);
    if (n == 0 && !mem) snprintf(tmp, sizeof tmp, "no pressure data");
    if (why && why_len) snprintf(why, why_len, "%s", tmp);

    if (rd->full_avg10 >= 10.0 || avail_pct < 5.0) return CAPACITY_CRITICAL;
    if (rd->some_avg10 >= 20.0 || rd->full_avg10 >= 2.0 || avail_pct < 10.0) return CAPACITY_PRESSURE;
    if (rd->some_avg10 < 5.0 && rd->full_avg10 < 0.5 && avail_pct >= 15.0) return CAPACITY_RELIEVED;
    return CAPACITY_STEADY;
}

int capacity_next(int host, int cur, enum capacity_level level) {
    int next = cur;
    switch (level) {
    case CAPACITY_CRITICAL: next = 1; break;
    case CAPACITY_PRESSURE: next = cur / 2; break;
    case CAPACITY_RELIEVED: next = cur + 1; break;
    case CAPACITY_STEADY: break;
    }
    if (next > host) next = host;
    if (next < 1) next = 1;
    return next;
}

/* ------------------------------------------------------------ the gate */

/* Hand free permits to waiters, longest-waiting first. Caller holds mu. */
static void capacity__hand_out(struct capacity *c) {
    while (c->in_use < c->effective) {
        struct capacity_waiter *best = NULL;
        for (struct capacity_waiter *w = c->waiters; w; w = w->next)
            if (!best || w->since_us < best->since_us) best = w;
        if (!best) break;
        /* unlink best */
        for (struct capacity_waiter **pp = &c->waiters; *pp; pp = &(*pp)->next) {
            if (*pp == best) {
                *pp = best->next;
                break;
            }
        }
        best->waiting = false;
        best->next = NULL;
        c->in_use++;
        atomic_fetch_add(&best->granted, 1);
        best->wake(best->ctx);
    }
    atomic_store(&c->in_use_seen, c->in_use);
}

void capacity_waiter_init(struct capacity_waiter *w, void (*wake)(void *ctx), void *ctx) {
    memset(w, 0, sizeof *w);
    w->wake = wake;
    w->ctx = ctx;
    atomic_init(&w->granted, 0);
}

bool capacity_acquire(struct capacity *c, struct capacity_waiter *w, int64_t since_us) {
    pthread_mutex_lock(&c->mu);
    bool ok = false;
    int g = atomic_load(&w->granted);
    if (g > 0) {
        atomic_store(&w->granted, g - 1); /* a grant is already counted in in_use */
        ok = true;
    } else if (c->in_use < c->effective) {
        /* free permits imply no waiters: every release, withdraw and rise
         * of effective capacity hands permits to waiters first */
        c->in_use++;
        atomic_store(&c->in_use_seen, c->in_use);
        ok = true;
    } else {
        w->since_us = since_us;
        if (!w->waiting) {
            w->waiting = true;
            w->next = c->waiters;
            c->waiters = w;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void capacity_release(struct capacity *c) {
    pthread_mutex_lock(&c->mu);
    if (c->in_use > 0) c->in_use--;
    capacity__hand_out(c);
    pthread_mutex_unlock(&c->mu);
}

void capacity_withdraw(struct capacity *c, struct capacity_waiter *w) {
    pthread_mutex_lock(&c->mu);
    if (w->waiting) {
        for (struct capacity_waiter **pp = &c->waiters; *pp; pp = &(*pp)->next) {
            if (*pp == w) {
                *pp = w->next;
                break;
            }
        }
        w->waiting = false;
        w->next = NULL;
    }
    int g = atomic_exchange(&w->granted, 0);
    c->in_use -= g <= c->in_use ? g : c->in_use;
    capacity__hand_out(c);
    pthread_mutex_unlock(&c->mu);
}

/* ------------------------------------------------------------ monitor */

int capacity_tick(struct capacity *c) {
    struct capacity_reading rd;
    capacity_read(c->psi_path, c->meminfo_path, &rd);
    char why[128];
    enum capacity_level level = capacity_classify(&rd, why, sizeof why);
    pthread_mutex_lock(&c->mu);
    int before = c->effective;
    int after = capacity_next(c->host, before, level);
    c->reading = rd;
    c->level = level;
    snprintf(c->why, sizeof c->why, "%s", why);
    if (after != before) {
        c->effective = after;
        c->changes++;
        atomic_store(&c->effective_seen, after);
        capacity__hand_out(c);
    }
    int in_use = c->in_use;
    pthread_mutex_unlock(&c->mu);
    if (after < before)
        log_warn("capacity: memory pressure (%s): effective capacity %d -> %d of %d (%d in use)", why, before,
                 after, c->host, in_use);
    else if (after > before)
        log_info("capacity: pressure easing (%s): effective capacity %d -> %d of %d", why, before, after, c->host);
    return after;
}

static void *capacity__monitor(void *arg) {
    struct capacity *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stopping) {
        struct timespec ts;
        time_deadline_ms(&ts, c->interval_ms);
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        if (c->stopping) break;
        pthread_mutex_unlock(&c->mu);
        capacity_tick(c);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

struct capacity *capacity_new(const struct capacity_params *p) {
    struct capacity *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->stats_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->psi_path = strdup(p->psi_path ? p->psi_path : CAPACITY_PSI_DEFAULT);
    c->meminfo_path = strdup(p->meminfo_path ? p->meminfo_path : CAPACITY_MEMINFO_DEFAULT);
    if (!c->psi_path || !c->meminfo_path) goto fail;
    c->interval_ms = p->interval_ms;
    c->ram = p->ram ? p->ram : capacity__host_ram();
    char warn[160];
    c->host = capacity_size(p->env_value, p->cfg_max, c->ram, &c->host_source, warn, sizeof warn);
    if (warn[0]) log_warn("capacity: %s", warn);
    c->effective = c->host;
    atomic_init(&c->effective_seen, c->host);
    atomic_init(&c->in_use_seen, 0);
    snprintf(c->why, sizeof c->why, "no reading yet");
    log_info("capacity: %d concurrent generations (%s%s%.1f GiB RAM)", c->host, capacity_source_name(c->host_source),
             c->host_source == CAPACITY_SRC_AUTO ? ": one per 8 GiB of " : "; host has ", c->ram / 1073741824.0);
    capacity_tick(c);
    if (c->interval_ms > 0) {
        if (pthread_create(&c->monitor, NULL, capacity__monitor, c) != 0) goto fail;
        c->monitor_started = true;
    }
    return c;
fail:
    capacity_free(c);
    return NULL;
}

void capacity_free(struct capacity *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->monitor_started) pthread_join(c->monitor, NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->stats_mu);
    pthread_cond_destroy(&c->cv);
    free(c->psi_path);
    free(c->meminfo_path);
    free(c);
}

int capacity_host(const struct capacity *c) { return c->host; }
int capacity_effective(const struct capacity *c) { return atomic_load(&c->effective_seen); }

int capacity_free_permits(const struct capacity *c) {
    int f = atomic_load(&c->effective_seen) - atomic_load(&c->in_use_seen);
    return f > 0 ? f : 0;
}

/* ------------------------------------------------------------ numbers */

void capacity_note_admit(struct capacity *c, int64_t wait_us) {
    double s = (double)wait_us / 1e6;
    pthread_mutex_lock(&c->stats_mu);
    c->admitted++;
    c->wait_count++;
    c->wait_sum_s += s;
    for (int i = 0; i < CAPACITY_WAIT_BUCKETS; i++)
        if (s <= capacity_wait_bounds[i]) c->wait_buckets[i]++;
    pthread_mutex_unlock(&c->stats_mu);
}

void capacity_note_reject(struct capacity *c, enum capacity_reject why) {
    if ((int)why < 0 || why >= CAPACITY__REJECT_COUNT) return;
    pthread_mutex_lock(&c->stats_mu);
    c->rejected[why]++;
    pthread_mutex_unlock(&c->stats_mu);
}

void capacity_snapshot(struct capacity *c, struct capacity_snapshot *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&c->mu);
    out->host = c->host;
    out->host_source = c->host_source;
    out->ram = c->ram;
    out->effective = c->effective;
    out->reduced = c->effective < c->host;
    out->level = c->level;
    snprintf(out->why, sizeof out->why, "%s", c->why);
    out->reading = c->reading;
    out->in_use = c->in_use;
    for (struct capacity_waiter *w = c->waiters; w; w = w->next) out->waiters++;
    out->changes = c->changes;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&c->stats_mu);
    out->admitted = c->admitted;
    memcpy(out->rejected, c->rejected, sizeof out->rejected);
    memcpy(out->wait_buckets, c->wait_buckets, sizeof out->wait_buckets);
    out->wait_count = c->wait_count;
    out->wait_sum_s = c->wait_sum_s;
    pthread_mutex_unlock(&c->stats_mu);
}
