/* stdio.h - JSON-RPC over a pipe: one JSON message per line on stdin,
 * one per line on stdout (corral rpc --stdio). */
#ifndef CORRAL_RPC_STDIO_H
#define CORRAL_RPC_STDIO_H

#include <stddef.h>
#include <stdint.h>

struct service;

struct rpc_stdio_params {
    struct service *svc;
    int in_fd;               /* messages in, one per line */
    int out_fd;              /* messages out, one per line (nothing else is written there) */
    int signal_fd;           /* a signalfd for SIGINT/SIGTERM, or -1 */
    size_t max_message;      /* longest line; a longer one is answered with an error and skipped */
    int max_inflight;
    int64_t shutdown_timeout_ms; /* after the input ends: how long calls in flight may finish */
};

/* Serve until the input ends or a signal comes, then let the calls in
 * flight finish (up to shutdown_timeout, then they are cancelled and
 * their errors sent). A second signal exits at once (128 + signal).
 * Returns 0, or 1 if the session could not start. */
int rpc_stdio_run(const struct rpc_stdio_params *p);

#endif
