/* status.c - everything the status page shows, in one object: each
 * model's status, memory, slots, queue and keep-alive; capacity (host,
 * effective, in use, whether memory pressure lowered it); the pool; tokens
 * a second over the last minute; and the latest loads and evictions.
 *
 * The token rate needs no timer: each call samples the generated-token
 * count (once a second at most) and the rate is the growth since the
 * oldest sample within the last minute. The page polls every second, so
 * the samples are dense while someone looks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capacity/capacity.h"
#include "service/internal.h"
#include "util/time.h"

#define SVC_RATE_WINDOW_MS 60000

/* Tokens a second over the last minute (0 until two samples lie apart). */
static double svc__rate(struct service *s, int64_t tokens) {
    int64_t now = time_now_ms();
    pthread_mutex_lock(&s->rate_mu);
    size_t last = (s->rate_next + SVC_RATE_SAMPLES - 1) % SVC_RATE_SAMPLES;
    if (s->rate_n == 0 || now - s->rate_ms[last] >= 1000) {
        s->rate_ms[s->rate_next] = now;
        s->rate_tokens[s->rate_next] = tokens;
        s->rate_next = (s->rate_next + 1) % SVC_RATE_SAMPLES;
        if (s->rate_n < SVC_RATE_SAMPLES) s->rate_n++;
    }
    /* the oldest sample within the window */
    int64_t t0 = now, v0 = tokens;
    for (size_t i = 0; i < s->rate_n; i++) {
        size_t k = (s->rate_next + SVC_RATE_SAMPLES - 1 - i) % SVC_RATE_SAMPLES;
        if (now - s->rate_ms[k] > SVC_RATE_WINDOW_MS) break;
        t0 = s->rate_ms[k];
        v0 = s->rate_tokens[k];
    }
    pthread_mutex_unlock(&s->rate_mu);
    return now - t0 >= 500 && tokens >= v0 ? (double)(tokens - v0) * 1000.0 / (double)(now - t0) : 0.0;
}

void svc__status(struct service *s, struct svc_result *res) {
    json_t *models = json_array();
    size_t n = pool_count(s->pool);
    int64_t tokens = 0;
    for (size_t i = 0; i < n && models; i++) {
        struct pool_model_info mi;
        if (pool_info(s->pool, i, &mi) != 0) continue;
        tokens += mi.stats.tokens_generated;
        json_t *m = svc__model_json(&mi);
        if (m) {
            json_object_set_new(m, "requests", json_integer(mi.stats.requests_total));
            json_object_set_new(m, "tokens_generated", json_integer(mi.stats.tokens_generated));
            if (mi.error[0]) json_object_set_new(m, "error", json_string(mi.error));
            json_object_del(m, "path"); /* the page shows what a client may see */
            json_object_del(m, "log");
            json_array_append_new(models, m);
        }
    }
    struct pool_stats ps;
    pool_stats(s->pool, &ps);
    json_t *root = json_pack("{s:s, s:I, s:o*, s:{s:I, s:I, s:i, s:i, s:I, s:I, s:I}, s:f}", "version",
                             CORRAL_VERSION, "uptime_s", (json_int_t)((time_now_ms() - s->started_ms) / 1000),
                             "models", models, "pool", "memory_budget", (json_int_t)ps.budget, "memory_used",
                             (json_int_t)ps.used, "max_models", ps.max_models, "loaded", ps.loaded, "loads",
                             (json_int_t)ps.loads, "evictions", (json_int_t)ps.evictions, "load_failures",
                             (json_int_t)ps.load_failures, "tokens_per_s", svc__rate(s, tokens));
    if (root && s->gate) {
        struct capacity_snapshot cs;
        capacity_snapshot(s->gate, &cs);
        json_object_set_new(root, "capacity",
                            json_pack("{s:i, s:s, s:i, s:i, s:b}", "host", cs.host, "source",
                                      capacity_source_name(cs.host_source), "effective", cs.effective, "in_use",
                                      cs.in_use, "pressure", cs.reduced));
    }
    struct pool_event ev[POOL_EVENTS];
    size_t ne = pool_events(s->pool, ev, POOL_EVENTS);
    json_t *events = json_array();
    for (size_t i = 0; i < ne && events; i++)
        json_array_append_new(events, json_pack("{s:I, s:s, s:s, s:s}", "time", (json_int_t)ev[i].time_s, "model",
                                                ev[i].model, "event", ev[i].what, "detail", ev[i].detail));
    if (root) json_object_set_new(root, "events", events ? events : json_array());
    else json_decref(events);
    svc__result_obj(res, 200, root);
}
