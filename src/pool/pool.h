/* pool.h - the registry of models and their engines.
 *
 * Models are keyed by id. pool_acquire pins a model's engine for one request
 * and pool_release lets it go; a pinned engine is never freed.
 */
#ifndef CORRAL_POOL_H
#define CORRAL_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "engine/engine.h"
#include "util/error.h"

struct pool;

enum pool_model_status { POOL_UNLOADED = 0, POOL_LOADING, POOL_LOADED, POOL_FAILED };

struct pool_model_info {
    const char *id;     /* borrowed: valid until pool_free */
    const char *path;   /* borrowed */
    enum pool_model_status status;
    const char *error;  /* last load error, "" if none (borrowed) */
    int64_t created;    /* wall-clock seconds the model was registered */
    int in_flight;      /* requests holding a pin */
    uint64_t mem_estimated; /* from the GGUF header before loading (0 if unknown) */
    uint64_t mem_measured;  /* process RSS growth across the load (approximate) */
    struct engine_stats stats; /* zeroed unless loaded */
};

/* Register every model of cfg and load them (in order). A model that fails to
 * load is kept with status FAILED and its reason; pool_new itself fails only
 * when out of memory. cfg must outlive the pool. */
struct pool *pool_new(const struct config *cfg, struct corral_err *err);
/* Stop every engine: requests in flight fail with CORRAL_UNAVAILABLE and new
 * ones are refused. Engines stay allocated until pool_free. */
void pool_stop(struct pool *p);
void pool_free(struct pool *p);

/* Pin model `id` for one request. NULL with CORRAL_MODEL_NOT_FOUND (the
 * message lists the known ids) or CORRAL_UNAVAILABLE (failed to load). */
struct engine *pool_acquire(struct pool *p, const char *id, struct corral_err *err);
void pool_release(struct pool *p, struct engine *e);

size_t pool_count(struct pool *p);
/* Describe model i (0 <= i < pool_count). 0 on success, -1 if out of range. */
int pool_info(struct pool *p, size_t i, struct pool_model_info *out);
const char *pool_status_name(enum pool_model_status s);

#endif
