/* internal.h - what the service's files share (service.c: methods, counts
 * and results; info.c: the answers that never queue; status.c: the status
 * page's data; call.c: inference).
 * Not for other modules. */
#ifndef CORRAL_SERVICE_INTERNAL_H
#define CORRAL_SERVICE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include <jansson.h>

#include "pool/pool.h"
#include "service/service.h"

/* Samples of the generated-token count the status keeps (one a second at
 * most: the last minute and a little). */
#define SVC_RATE_SAMPLES 64

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
    int64_t started_ms;
    /* generated tokens, sampled when the status is asked for (status.c) */
    pthread_mutex_t rate_mu;
    int64_t rate_ms[SVC_RATE_SAMPLES], rate_tokens[SVC_RATE_SAMPLES];
    size_t rate_n, rate_next;
};

/* status.c */
void svc__status(struct service *s, struct svc_result *res);
json_t *svc__model_json(const struct pool_model_info *mi);

extern const char *const svc__transport_names[SVC_N_TRANSPORTS];

/* Fill r with status and JSON text (malloc'd, taken over; NULL = out of memory). */
void svc__result_json(struct svc_result *r, unsigned status, char *json);
/* Same with a JSON value (reference taken over). */
void svc__result_obj(struct svc_result *r, unsigned status, json_t *obj);

#endif
