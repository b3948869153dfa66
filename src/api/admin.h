/* admin.h - the operator's views: /capacity (JSON) and /metrics
 * (Prometheus text format 0.0.4).
 *
 * Pure functions over snapshots the transport takes (capacity, pool, each
 * model, response counts): nothing here locks or reads a file, so the
 * output for given numbers can be unit-tested.
 */
#ifndef CORRAL_API_ADMIN_H
#define CORRAL_API_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "capacity/capacity.h"
#include "pool/pool.h"
#include "util/buf.h"

/* Everything the views show, taken by the caller at one moment. */
struct admin_view {
    const struct capacity_snapshot *cap; /* NULL = no gate */
    const struct pool_stats *pool;
    const struct pool_model_info *models;
    size_t n_models;
    int64_t queue_timeout_ms; /* the server's default; -1 = none */
    /* HTTP responses sent, by status code: codes[i] was sent counts[i] times */
    const int *codes;
    const int64_t *counts;
    size_t n_codes;
    /* client connections (http/conns.h); has_http false = not shown */
    bool has_http;
    int connections;
    int max_connections;
    int64_t connection_timeouts;
    uint64_t request_memory;
    /* requests received by transport: names[i] received requests[i] */
    const char *const *transports;
    const int64_t *requests;
    size_t n_transports;
    /* websocket sessions open (has_rpc false = not shown) */
    bool has_rpc;
    int rpc_sessions;
};

/* The /capacity object: host and effective capacity and where each came
 * from, in use, queued, and per model its slots and queue. New reference;
 * NULL if out of memory. */
json_t *admin_capacity_json(const struct admin_view *v);

/* Append the /metrics text to out. 0 on success, -1 if out of memory or
 * out's cap was reached. */
int admin_metrics_text(const struct admin_view *v, struct buf *out);

/* Prometheus text helpers (exposed for the unit tests). */
/* "# HELP" and "# TYPE" lines of a metric family. */
int admin_prom_family(struct buf *out, const char *name, const char *type, const char *help);
/* One sample: name{k1="v1",...} value. labels holds n_labels key/value
 * pairs (2 × n_labels strings); values are escaped (\\, \", \n). */
int admin_prom_sample(struct buf *out, const char *name, const char *const *labels, size_t n_labels, double value);

#endif
