/* daemon.c - see daemon.h. The status thread wakes every few seconds (or
 * at half the watchdog interval when systemd set one) and sends the
 * watchdog ping with a fresh STATUS= line. */
#include "daemon.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"
#include "util/sdnotify.h"
#include "util/time.h"

#define DAEMON_STATUS_MS 5000

struct daemon {
    struct pool *pool;
    struct capacity *gate;
    int port;
    int64_t watchdog_us;
    pthread_t th;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

static const char *daemon__mib(uint64_t b, char *out, size_t n) {
    if (b >= (1ull << 30)) snprintf(out, n, "%.1f GiB", (double)b / (double)(1ull << 30));
    else snprintf(out, n, "%.0f MiB", (double)b / (double)(1ull << 20));
    return out;
}

void daemon_banner(const struct config *cfg, struct pool *pool, struct capacity *gate, const char *url) {
    (void)cfg;
    char list[512] = "";
    size_t n = pool_count(pool), shown = 0, len = 0;
    for (size_t i = 0; i < n; i++) {
        struct pool_model_info mi;
        if (pool_info(pool, i, &mi) != 0) continue;
        const char *st = mi.status == POOL_LOADED ? "loaded" : mi.status == POOL_LOADING ? "loading" : "lazy";
        if (shown < 8 && len + strlen(mi.id) + 16 < sizeof list) {
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s (%s)", shown ? ", " : "", mi.id, st);
            shown++;
        }
    }
    if (shown < n) snprintf(list + len, sizeof list - len, ", and %zu more", n - shown);
    struct capacity_snapshot cs;
    memset(&cs, 0, sizeof cs);
    if (gate) capacity_snapshot(gate, &cs);
    struct pool_stats ps;
    pool_stats(pool, &ps);
    char ram[32], budget[32];
    log_info("corral %s serving on %s", CORRAL_VERSION, url);
    log_info("  models    %zu: %s", n, n ? list : "none yet (models_dir and the stores are scanned on demand)");
    log_info("  capacity  %d generations at once (%s%s%s)", cs.host, capacity_source_name(cs.host_source),
             cs.host_source == CAPACITY_SRC_AUTO ? ", from " : "",
             cs.host_source == CAPACITY_SRC_AUTO ? daemon__mib(cs.ram, ram, sizeof ram) : "");
    log_info("  memory    %s for models, at most %d loaded", daemon__mib(ps.budget, budget, sizeof budget),
             ps.max_models);
    log_info("  status    %s/ (JSON at %s/v1/status)", url, url);
}

/* Whether model id is preloaded and still on its way. */
static bool daemon__pending(struct pool *pool, const char *id) {
    size_t n = pool_count(pool);
    for (size_t i = 0; i < n; i++) {
        struct pool_model_info mi;
        if (pool_info(pool, i, &mi) == 0 && strcmp(mi.id, id) == 0)
            return mi.status == POOL_LOADING || mi.status == POOL_UNLOADED;
    }
    return false;
}

int daemon_wait_preloads(const struct config *cfg, struct pool *pool, const sigset_t *signals) {
    int64_t deadline = time_now_ms() + cfg->load_timeout_ms;
    for (;;) {
        bool pending = false;
        for (int i = 0; i < cfg->n_preload && !pending; i++) pending = daemon__pending(pool, cfg->preload[i]);
        for (int i = 0; i < cfg->n_models && !pending; i++)
            pending = cfg->models[i].preload && daemon__pending(pool, cfg->models[i].id);
        if (!pending || time_now_ms() >= deadline) return 0;
        struct timespec ts = {0, 50 * 1000000L};
        int sig = sigtimedwait(signals, NULL, &ts);
        if (sig > 0) return sig;
    }
}

static void daemon__status(struct daemon *d, char *out, size_t n, const char *extra) {
    size_t models = pool_count(d->pool), loaded = 0;
    for (size_t i = 0; i < models; i++) {
        struct pool_model_info mi;
        if (pool_info(d->pool, i, &mi) == 0 && mi.status == POOL_LOADED) loaded++;
    }
    struct capacity_snapshot cs;
    memset(&cs, 0, sizeof cs);
    if (d->gate) capacity_snapshot(d->gate, &cs);
    snprintf(out, n, "%sSTATUS=port %d; %zu models, %zu loaded; capacity %d of %d in use%s", extra, d->port, models,
             loaded, cs.in_use, cs.effective, cs.reduced ? " (lowered by memory pressure)" : "");
}

static void *daemon__run(void *arg) {
    struct daemon *d = arg;
    int64_t every_ms = d->watchdog_us ? d->watchdog_us / 2000 : DAEMON_STATUS_MS;
    if (every_ms < 1) every_ms = 1;
    if (every_ms > DAEMON_STATUS_MS) every_ms = DAEMON_STATUS_MS;
    pthread_mutex_lock(&d->mu);
    while (!d->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += every_ms / 1000;
        ts.tv_nsec += (every_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        if (pthread_cond_timedwait(&d->cv, &d->mu, &ts) != ETIMEDOUT || d->stop) continue;
        pthread_mutex_unlock(&d->mu);
        char msg[512];
        daemon__status(d, msg, sizeof msg, d->watchdog_us ? "WATCHDOG=1\n" : "");
        sd_notify_msg(msg);
        pthread_mutex_lock(&d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

struct daemon *daemon_ready(struct pool *pool, struct capacity *gate, int port) {
    struct daemon *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->pool = pool;
    d->gate = gate;
    d->port = port;
    d->watchdog_us = sd_watchdog_usec();
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    char msg[512];
    daemon__status(d, msg, sizeof msg, "READY=1\n");
    sd_notify_msg(msg);
    const char *ns = getenv("NOTIFY_SOCKET");
    if (ns && *ns) d->running = pthread_create(&d->th, NULL, daemon__run, d) == 0;
    return d;
}

static void daemon__join(struct daemon *d) {
    if (!d || !d->running) return;
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->th, NULL);
    d->running = false;
}

void daemon_stopping(struct daemon *d) {
    sd_notify_msg("STOPPING=1\nSTATUS=draining");
    daemon__join(d);
}

void daemon_free(struct daemon *d) {
    if (!d) return;
    daemon__join(d);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}
