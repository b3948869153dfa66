/* internal.h - what the service's files share (service.c: methods, counts
 * and results; info.c: the answers that never queue; call.c: inference).
 * Not for other modules. */
#ifndef CORRAL_SERVICE_INTERNAL_H
#define CORRAL_SERVICE_INTERNAL_H

#include <stdatomic.h>

#include <jansson.h>

#include "service/service.h"

struct service {
    struct pool *pool;
    struct capacity *gate;
    int64_t queue_timeout_ms;
    svc_http_stats_fn http_stats;
    void *http_stats_ctx;
    _Atomic bool draining;
    _Atomic int active;
    _Atomic int sessions;
    _Atomic int64_t requests[SVC_N_TRANSPORTS];
};

extern const char *const svc__transport_names[SVC_N_TRANSPORTS];

/* Fill r with status and JSON text (malloc'd, taken over; NULL = out of memory). */
void svc__result_json(struct svc_result *r, unsigned status, char *json);
/* Same with a JSON value (reference taken over). */
void svc__result_obj(struct svc_result *r, unsigned status, json_t *obj);

#endif
