/* admin.c - /capacity and /metrics from snapshots (see admin.h). */
#include "api/admin.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ /capacity */

json_t *admin_capacity_json(const struct admin_view *v) {
    json_t *models = json_array();
    int queued = 0, busy = 0, total = 0;
    for (size_t i = 0; i < v->n_models && models; i++) {
        const struct pool_model_info *mi = &v->models[i];
        queued += mi->stats.queued;
        busy += mi->stats.slots_busy;
        total += mi->stats.slots_total;
        json_t *m = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i}", "id", mi->id, "status",
                              pool_status_name(mi->status), "slots", mi->slots, "slots_busy", mi->stats.slots_busy,
                              "slots_total", mi->stats.slots_total, "queued", mi->stats.queued, "queue_limit",
                              mi->stats.queue_cap, "waiting_for_load", mi->waiting_for_load);
        if (m) json_array_append_new(models, m);
    }
    json_t *root = json_object();
    if (!root || !models) {
        json_decref(root);
        json_decref(models);
        return NULL;
    }
    const struct capacity_snapshot *c = v->cap;
    if (c) {
        json_object_set_new(root, "host", json_integer(c->host));
        json_object_set_new(root, "host_source", json_string(capacity_source_name(c->host_source)));
        json_object_set_new(root, "host_memory", json_integer((json_int_t)c->ram));
        json_object_set_new(root, "effective", json_integer(c->effective));
        json_object_set_new(root, "effective_source", json_string(c->reduced ? "pressure" : "host"));
        json_object_set_new(root, "in_use", json_integer(c->in_use));
        json_t *pr = json_object();
        if (pr) {
            json_object_set_new(pr, "level", json_string(capacity_level_name(c->level)));
            json_object_set_new(pr, "reading", json_string(c->why));
            json_object_set_new(pr, "some_avg10",
                                c->reading.some_avg10 >= 0 ? json_real(c->reading.some_avg10) : json_null());
            json_object_set_new(pr, "full_avg10",
                                c->reading.full_avg10 >= 0 ? json_real(c->reading.full_avg10) : json_null());
            json_object_set_new(pr, "mem_total",
                                c->reading.mem_total ? json_integer((json_int_t)c->reading.mem_total) : json_null());
            json_object_set_new(pr, "mem_available", c->reading.mem_available
                                                         ? json_integer((json_int_t)c->reading.mem_available)
                                                         : json_null());
            json_object_set_new(pr, "changes", json_integer(c->changes));
            json_object_set_new(root, "pressure", pr);
        }
        json_object_set_new(root, "admitted", json_integer(c->admitted));
        json_object_set_new(root, "rejected_queue_full", json_integer(c->rejected[CAPACITY_REJECT_QUEUE_FULL]));
        json_object_set_new(root, "rejected_timeout", json_integer(c->rejected[CAPACITY_REJECT_TIMEOUT]));
    } else {
        json_object_set_new(root, "in_use", json_integer(busy));
    }
    json_object_set_new(root, "queued", json_integer(queued));
    json_object_set_new(root, "waiting_for_load", json_integer(v->pool ? v->pool->waiting_for_load : 0));
    json_object_set_new(root, "slots_busy", json_integer(busy));
    json_object_set_new(root, "slots_total", json_integer(total));
    json_object_set_new(root, "queue_timeout_ms", json_integer(v->queue_timeout_ms));
    json_object_set_new(root, "models", models);
    return root;
}

/* ------------------------------------------------------------ Prometheus */

int admin_prom_family(struct buf *out, const char *name, const char *type, const char *help) {
    return buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int admin__escape(struct buf *out, const char *s) {
    for (; *s; s++) {
        int rc;
        if (*s == '\\')
            rc = buf_puts(out, "\\\\");
        else if (*s == '"')
            rc = buf_puts(out, "\\\"");
        else if (*s == '\n')
            rc = buf_puts(out, "\\n");
        else
            rc = buf_append(out, s, 1);
        if (rc != 0) return -1;
    }
    return 0;
}

int admin_prom_sample(struct buf *out, const char *name, const char *const *labels, size_t n_labels, double value) {
    if (buf_puts(out, name) != 0) return -1;
    if (n_labels) {
        if (buf_puts(out, "{") != 0) return -1;
        for (size_t i = 0; i < n_labels; i++) {
            if (buf_printf(out, "%s%s=\"", i ? "," : "", labels[2 * i]) != 0) return -1;
            if (admin__escape(out, labels[2 * i + 1]) != 0) return -1;
            if (buf_puts(out, "\"") != 0) return -1;
        }
        if (buf_puts(out, "}") != 0) return -1;
    }
    if (isnan(value)) return buf_puts(out, " NaN\n");
    if (isinf(value)) return buf_puts(out, value > 0 ? " +Inf\n" : " -Inf\n");
    if (value == floor(value) && fabs(value) < 9e15) return buf_printf(out, " %.0f\n", value);
    return buf_printf(out, " %.17g\n", value);
}

/* A family with one unlabelled sample. */
static int admin__one(struct buf *out, const char *name, const char *type, const char *help, double value) {
    if (admin_prom_family(out, name, type, help) != 0) return -1;
    return admin_prom_sample(out, name, NULL, 0, value);
}

/* What one per-model family shows of a model. */
enum admin__field {
    F_REQUESTS, F_PROMPT, F_GENERATED, F_CACHED, F_PC_HITS, F_PC_BYTES, F_QUEUED, F_WAIT_LOAD, F_BUSY, F_SLOTS, F_LOADED, F_MEM
};

static double admin__field(const struct pool_model_info *mi, enum admin__field f) {
    switch (f) {
    case F_REQUESTS: return (double)mi->stats.requests_total;
    case F_PROMPT: return (double)mi->stats.tokens_prompt;
    case F_GENERATED: return (double)mi->stats.tokens_generated;
    case F_CACHED: return (double)mi->stats.tokens_cached;
    case F_PC_HITS: return (double)mi->stats.prompt_cache_hits;
    case F_PC_BYTES: return (double)mi->stats.prompt_cache_bytes;
    case F_QUEUED: return mi->stats.queued;
    case F_WAIT_LOAD: return mi->waiting_for_load;
    case F_BUSY: return mi->stats.slots_busy;
    case F_SLOTS: return mi->stats.slots_total;
    case F_LOADED: return mi->status == POOL_LOADED || mi->status == POOL_UNLOADING;
    case F_MEM: return mi->status != POOL_UNLOADED && mi->status != POOL_FAILED ? (double)mi->mem_estimated : 0;
    }
    return 0;
}

int admin_metrics_text(const struct admin_view *v, struct buf *out) {
    static const struct {
        const char *name, *type, *help;
        enum admin__field f;
    } per_model[] = {
        {"corral_requests_total", "counter", "Requests accepted by a model's engine.", F_REQUESTS},
        {"corral_prompt_tokens_total", "counter", "Prompt tokens processed (including cached ones).", F_PROMPT},
        {"corral_generated_tokens_total", "counter", "Tokens generated.", F_GENERATED},
        {"corral_cached_prompt_tokens_total", "counter", "Prompt tokens reused from the KV cache.", F_CACHED},
        {"corral_prompt_cache_hits_total", "counter", "Prompts that restored a prefix from the host prompt cache.",
         F_PC_HITS},
        {"corral_prompt_cache_bytes", "gauge", "KV state of finished sequences kept in host memory.", F_PC_BYTES},
        {"corral_queue_depth", "gauge", "Requests waiting in the model's queue.", F_QUEUED},
        {"corral_waiting_for_load", "gauge", "Requests waiting for the model to load.", F_WAIT_LOAD},
        {"corral_slots_busy", "gauge", "Sequence slots running a request.", F_BUSY},
        {"corral_slots_total", "gauge", "Sequence slots of the loaded model.", F_SLOTS},
        {"corral_model_loaded", "gauge", "1 if the model is loaded.", F_LOADED},
        {"corral_model_memory_bytes", "gauge", "Estimated memory of the loaded (or loading) model.", F_MEM},
    };
    int rc = 0;
    for (size_t k = 0; k < sizeof per_model / sizeof per_model[0]; k++) {
        rc |= admin_prom_family(out, per_model[k].name, per_model[k].type, per_model[k].help);
        for (size_t i = 0; i < v->n_models; i++) {
            const char *lab[] = {"model", v->models[i].id};
            rc |= admin_prom_sample(out, per_model[k].name, lab, 1, admin__field(&v->models[i], per_model[k].f));
        }
    }
    const struct capacity_snapshot *c = v->cap;
    if (c) {
        rc |= admin__one(out, "corral_capacity_host", "gauge", "Generations the host may run at once.", c->host);
        rc |= admin__one(out, "corral_capacity_effective", "gauge",
                         "Generations allowed now (lower under memory pressure).", c->effective);
        rc |= admin__one(out, "corral_capacity_in_use", "gauge", "Admission permits held.", c->in_use);
        rc |= admin__one(out, "corral_capacity_changes_total", "counter",
                         "Changes of effective capacity due to memory pressure.", (double)c->changes);
        rc |= admin__one(out, "corral_admitted_total", "counter", "Requests admitted to run.", (double)c->admitted);
        rc |= admin_prom_family(out, "corral_rejected_total", "counter", "Requests refused with 503, by reason.");
        const char *full[] = {"reason", "queue_full"}, *tmo[] = {"reason", "queue_timeout"};
        rc |= admin_prom_sample(out, "corral_rejected_total", full, 1, (double)c->rejected[CAPACITY_REJECT_QUEUE_FULL]);
        rc |= admin_prom_sample(out, "corral_rejected_total", tmo, 1, (double)c->rejected[CAPACITY_REJECT_TIMEOUT]);
        rc |= admin_prom_family(out, "corral_queue_wait_seconds", "histogram",
                                "Time admitted requests waited in their model's queue.");
        for (int i = 0; i < CAPACITY_WAIT_BUCKETS; i++) {
            char le[32];
            snprintf(le, sizeof le, "%g", capacity_wait_bounds[i]);
            const char *lab[] = {"le", le};
            rc |= admin_prom_sample(out, "corral_queue_wait_seconds_bucket", lab, 1, (double)c->wait_buckets[i]);
        }
        const char *inf[] = {"le", "+Inf"};
        rc |= admin_prom_sample(out, "corral_queue_wait_seconds_bucket", inf, 1, (double)c->wait_count);
        rc |= admin_prom_sample(out, "corral_queue_wait_seconds_sum", NULL, 0, c->wait_sum_s);
        rc |= admin_prom_sample(out, "corral_queue_wait_seconds_count", NULL, 0, (double)c->wait_count);
        if (c->reading.mem_available)
            rc |= admin__one(out, "corral_host_memory_available_bytes", "gauge", "MemAvailable of the host.",
                             (double)c->reading.mem_available);
        if (c->reading.some_avg10 >= 0)
            rc |= admin__one(out, "corral_host_memory_pressure_some_avg10", "gauge",
                             "PSI memory 'some' average over 10 s, percent.", c->reading.some_avg10);
        if (c->reading.full_avg10 >= 0)
            rc |= admin__one(out, "corral_host_memory_pressure_full_avg10", "gauge",
                             "PSI memory 'full' average over 10 s, percent.", c->reading.full_avg10);
    }
    if (v->pool) {
        const struct pool_stats *p = v->pool;
        rc |= admin__one(out, "corral_models_loaded", "gauge", "Models loaded or loading.", p->loaded);
        rc |= admin__one(out, "corral_model_loads_total", "counter", "Model loads completed.", (double)p->loads);
        rc |= admin__one(out, "corral_model_evictions_total", "counter", "Models unloaded to make room.",
                         (double)p->evictions);
        rc |= admin__one(out, "corral_model_load_failures_total", "counter", "Model loads that failed.",
                         (double)p->load_failures);
        rc |= admin__one(out, "corral_memory_budget_bytes", "gauge", "Memory budget for loaded models.",
                         (double)p->budget);
        rc |= admin__one(out, "corral_memory_used_bytes", "gauge", "Estimated memory of loaded models.",
                         (double)p->used);
        rc |= admin__one(out, "corral_process_resident_memory_bytes", "gauge", "Resident memory of the process.",
                         (double)p->rss);
    }
    if (v->has_http) {
        rc |= admin__one(out, "corral_http_connections", "gauge", "Client connections open.", (double)v->connections);
        rc |= admin__one(out, "corral_http_connections_max", "gauge", "Client connections allowed at once.",
                         (double)v->max_connections);
        rc |= admin__one(out, "corral_http_connection_timeouts_total", "counter",
                         "Connections closed because a request's headers or body did not arrive in time.",
                         (double)v->connection_timeouts);
        rc |= admin__one(out, "corral_http_request_memory_bytes", "gauge",
                         "Request bytes held (bodies being received and requests in flight).",
                         (double)v->request_memory);
    }
    if (v->n_transports) {
        rc |= admin_prom_family(out, "corral_transport_requests_total", "counter",
                                "Requests received (HTTP requests, JSON-RPC calls), by transport.");
        for (size_t i = 0; i < v->n_transports; i++) {
            const char *lab[] = {"transport", v->transports[i]};
            rc |= admin_prom_sample(out, "corral_transport_requests_total", lab, 1, (double)v->requests[i]);
        }
    }
    if (v->has_rpc)
        rc |= admin__one(out, "corral_rpc_sessions", "gauge", "JSON-RPC sessions open (WebSocket and stdio).",
                         (double)v->rpc_sessions);
    if (v->n_codes) {
        rc |= admin_prom_family(out, "corral_http_responses_total", "counter", "HTTP responses sent, by status code.");
        for (size_t i = 0; i < v->n_codes; i++) {
            char code[16];
            snprintf(code, sizeof code, "%d", v->codes[i]);
            const char *lab[] = {"code", code};
            rc |= admin_prom_sample(out, "corral_http_responses_total", lab, 1, (double)v->counts[i]);
        }
    }
    return rc ? -1 : 0;
}
