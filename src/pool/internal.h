/* internal.h - what the pool's files share (pool.c: requests, admin,
 * queries; loader.c: the loader thread, loads, unloads, room; registry.c:
 * model records and models_dir). Not for other modules.
 *
 * DESIGN: every model record is in exactly one state, and only these moves
 * happen (pool__set_state refuses any other and logs it as a bug):
 *
 *   from       to          when
 *   UNLOADED   QUEUED      a request, a preload or an admin load wants it
 *   QUEUED     LOADING     the loader takes it (oldest first)
 *   QUEUED     UNLOADED    an admin unload or shutdown (its waiting requests fail)
 *   LOADING    READY       the engine opened (waiting requests go to it)
 *   LOADING    FAILED      it did not (waiting requests fail; cooldown)
 *   LOADING    UNLOADED    the load was aborted (admin unload, shutdown)
 *   READY      DRAINING    its room is wanted (ROOM), its child server died (DEAD)
 *   READY      UNLOADING   an admin unload while requests are in flight
 *   READY      UNLOADED    idle past keep_alive, evicted idle, admin unload when idle
 *   READY      RETIRED     its file changed: a new record takes the id
 *   DRAINING   READY       the load that wanted its room ended without it
 *   DRAINING   UNLOADING   an admin unload
 *   DRAINING   QUEUED      drained and unloaded, and requests wait (or RELOAD)
 *   DRAINING   UNLOADED    drained and unloaded, nothing waits
 *   DRAINING   FAILED      its child server crashed too often (DEAD)
 *   DRAINING   RETIRED     its file changed (the waiting requests move to the new record)
 *   UNLOADING  DRAINING    an admin load: reload once drained (RELOAD)
 *   UNLOADING  UNLOADED    its last request ended
 *   FAILED     QUEUED      a request after the cooldown, or an admin load
 *   RETIRED    (freed)     its last request ended
 *
 * A record with an engine (READY, DRAINING, UNLOADING, RETIRED) counts
 * against the budget; so does a LOADING one once its room is made. In
 * READY, requests go to the engine; in QUEUED, LOADING and DRAINING they
 * wait on the record's pending list; in UNLOADING they are refused (503);
 * a RETIRED record is not found by id any more.
 *
 * Pins: a struct pool_pin per request, from pool_submit to pool_release.
 * `pins` counts them all; those still pending are also on the pending list
 * (the pool holds a reference to their request there). A record whose pins
 * are all pending ones has nothing left in its engine ("engine pins" 0):
 * a draining, unloading or retired record is then unloaded.
 */
#ifndef CORRAL_POOL_INTERNAL_H
#define CORRAL_POOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "pool/estimate.h"
#include "pool/pool.h"

#define POOL_OUT_CAP (4u << 20)
#define POOL_COOLDOWN_MIN_MS 10000
#define POOL_COOLDOWN_MAX_MS 300000
#define POOL_SCAN_INTERVAL_MS 1000
#define POOL_SCAN_DEPTH 8
#define POOL_MAX_MODELS_TOTAL 4096
/* A load waiting this long for room drains the least recently used busy
 * model, so its requests end and it can leave: a loaded model's waiting
 * requests go first, but no model starves. */
#define POOL_STARVE_MS 2000
/* A child server that crashes this often within POOL_CRASH_WINDOW_MS is
 * not restarted at once: it gets the load-failure cooldown. */
#define POOL_CRASH_LOOP 3
#define POOL_CRASH_WINDOW_MS (5 * 60 * 1000)
/* The loader looks at proxied models at least this often (a child's exit
 * is signalled without the pool's lock, so a wake-up may be missed). */
#define POOL_PROXY_CHECK_MS 1000

enum pool_backend { POOL_LLAMA = 0, POOL_CHILD, POOL_UPSTREAM };

enum pool__state { M_UNLOADED = 0, M_QUEUED, M_LOADING, M_READY, M_DRAINING, M_UNLOADING, M_FAILED, M_RETIRED };

/* Why a record drains, which says where it goes once unloaded. */
enum pool__drain {
    DRAIN_ROOM = 0, /* another model wants its memory: reload only if requests wait */
    DRAIN_DEAD,     /* its child server exited: count the crash, reload if requests wait */
    DRAIN_RELOAD,   /* an admin load after an unload: reload in any case */
};

struct pool_pin {
    struct pool_model *m;
    struct engine_req *req; /* the pool's reference while pending, else NULL */
    struct pool_pin *prev, *next; /* on m's pending list */
    bool pending;
};

struct pool_model {
    char *id;
    enum pool_backend backend;
    enum pool__state state;
    enum pool__drain drain; /* while DRAINING */
    _Atomic bool abort_load; /* LOADING: an unload or shutdown wants the load stopped */
    int crashes;             /* child exits in the current crash window */
    int64_t first_crash_ms;
    char *path;
    struct config_model cfg; /* resolved; strings borrowed from the config or owned (path) */
    char *owned_path;
    char error[CORRAL_ERR_MSG_MAX];
    int64_t created;
    struct engine *engine;
    int slots;               /* min(parallel, host capacity) */
    struct engine_stats acc; /* counters of engines already unloaded */
    int pins;
    struct pool_pin *pend_head, *pend_tail;
    size_t n_pending;
    uint64_t est;      /* bytes counted in the pool's `used` while loading or holding an engine; 0 otherwise */
    uint64_t est_last; /* the last estimate made, for display */
    struct estimate est_cache; /* the header's estimate, for reloads of an unchanged file */
    int est_cache_slots;       /* the slots it was made for; 0 = none */
    uint64_t measured;
    int64_t load_ms;
    int64_t last_used_ms;
    int64_t evicted_ms; /* when it was last evicted to make room (0 = never) */
    int64_t fail_until_ms;
    int64_t backoff_ms;
    int64_t keep_alive_ms;
    int64_t load_requested_ms;
    dev_t file_dev; /* identity of the file that was loaded */
    ino_t file_ino;
    off_t file_size;
    struct timespec file_mtime;
    _Atomic int progress_permille;
    struct pool *pool; /* for the load's abort check */
};

struct pool {
    const struct config *cfg;
    struct capacity *gate;
    struct pool_backends be;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* loader wake-ups: load requested, pin released, stop */
    pthread_t loader;
    bool loader_started;
    _Atomic bool stopping; /* pool_stop: everything ends */
    _Atomic bool closing;  /* pool_close: no new requests, no loads */

    struct pool_model **models;
    size_t n, cap;
    int64_t last_scan_ms;

    char *log_dir;           /* child servers' logs */
    _Atomic bool proxy_dead; /* a child exited: the loader should look */
    uint64_t budget;
    uint64_t used;
    int max_models;
    int64_t loads, evictions, load_failures;
    struct pool_event events[POOL_EVENTS]; /* a ring: next is where the next one goes */
    size_t n_events, next_event;
};

/* Record an event (caller holds mu). */
void pool__event(struct pool *p, const char *model, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------------------ pool.c */

/* Move m to state `to` (see the table above); why goes to the debug log.
 * Caller holds mu. */
void pool__set_state(struct pool_model *m, enum pool__state to, const char *why);
const char *pool__state_name(enum pool__state s);
/* Pins of m's requests that are in its engine (not pending). */
int pool__engine_pins(const struct pool_model *m);
/* Detach m's pending requests: returns the array of their references
 * (NULL when none) and their count in *n. Caller holds mu. */
struct engine_req **pool__take_pending(struct pool_model *m, size_t *n);
/* Hand waiting requests to an engine (a refusal fails the request), or fail
 * them all; both drop the references and free the array. Without mu. */
void pool__submit_all(struct engine *e, struct engine_req **reqs, size_t n);
void pool__fail_all(struct engine_req **reqs, size_t n, const struct corral_err *err);
/* Fail m's pending requests now with st and msg (unlocks while failing;
 * returns with mu held). */
void pool__fail_pending(struct pool *p, struct pool_model *m, enum corral_status st, const char *msg);
/* Detach m's engine (keeping its counters), free its room and move it to
 * `to`. Caller holds mu; returns the engine to free after unlocking. */
struct engine *pool__detach(struct pool *p, struct pool_model *m, enum pool__state to, const char *why);

/* ------------------------------------------------------------ loader.c */

void *pool__loader(void *arg);
int pool__n_resident(struct pool *p);

/* ------------------------------------------------------------ registry.c */

/* Add a model record (UNLOADED). path NULL: the command or upstream list is
 * shown instead. Caller holds mu (or is alone at start). NULL when full or
 * out of memory. */
struct pool_model *pool__add(struct pool *p, const struct config_model *resolved, const char *path, bool own_path);
/* Remove a record from the registry and free it (a retired one whose last
 * request ended). Caller holds mu. */
void pool__remove(struct pool *p, struct pool_model *m);
void pool__free_model(struct pool_model *m);
/* The record that answers to id (never a retired one), or NULL. */
struct pool_model *pool__find(struct pool *p, const char *id);
/* The i-th record that is not retired, or NULL. */
struct pool_model *pool__nth(struct pool *p, size_t i);
/* Look for new *.gguf files in models_dir (at most once a second). */
void pool__scan(struct pool *p);
/* true if a loaded model's file is no longer the one that was loaded. */
bool pool__file_changed(const struct pool_model *m);
/* Remember the identity of the file just loaded. */
void pool__note_file(struct pool_model *m);

#endif
