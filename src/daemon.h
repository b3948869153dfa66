/* daemon.h - what `corral serve` tells whoever started it: a short banner
 * (URL, models, capacity and where it comes from, the memory budget, the
 * status page), and under systemd its readiness, status, watchdog pings
 * and stop (util/sdnotify.h). */
#ifndef CORRAL_DAEMON_H
#define CORRAL_DAEMON_H

#include <signal.h>

#include "capacity/capacity.h"
#include "config.h"
#include "pool/pool.h"

struct daemon;

/* Log the banner for a server listening on url. */
void daemon_banner(const struct config *cfg, struct pool *pool, struct capacity *gate, const char *url);
/* Wait until every preloaded model is loaded or failed (at most
 * load_timeout). Returns a signal from `signals` that came meanwhile, or 0. */
int daemon_wait_preloads(const struct config *cfg, struct pool *pool, const sigset_t *signals);
/* Tell systemd the service is ready, with its status; pings its watchdog
 * and refreshes the status from a thread until daemon_stopping. NULL when
 * out of memory (nothing is sent then). */
struct daemon *daemon_ready(struct pool *pool, struct capacity *gate, int port);
/* STOPPING=1, and the thread ends. Safe on NULL. */
void daemon_stopping(struct daemon *d);
void daemon_free(struct daemon *d);

#endif
