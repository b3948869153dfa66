/* main.c - the corral command line: serve, rpc, models, ps, load, unload, version. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "capacity/capacity.h"
#include "cli.h"
#include "pool/stores.h"
#include "config.h"
#include "http/server.h"
#include "pool/pool.h"
#include "rpc/stdio.h"
#include "service/service.h"
#include "daemon.h"
#include "util/log.h"
#include "util/sdnotify.h"
#include "util/time.h"

extern char **environ;

static void usage(FILE *f) {
    fprintf(f,
            "corral %s - a local LLM inference server with an OpenAI-compatible API\n"
            "\n"
            "usage: corral serve [options]     run the server\n"
            "       corral rpc --stdio [options]  run the server with JSON-RPC on stdin/stdout\n"
            "       corral models [options]    list the configured models\n"
            "       corral version             print the version\n"
            "%s"
            "\n"
            "options of serve and models (also settable in an INI file and as CORRAL_* variables):\n"
            "  --config FILE         INI config ([server] and [model.ID] sections)\n"
            "  --model ID=PATH       serve the GGUF at PATH as model ID (repeatable)\n"
            "  --host ADDR           address to bind (default 127.0.0.1)\n"
            "  --port N              port (default 8080; 0 = any free port)\n"
            "  --threads N           CPU threads for inference (default: all cores)\n"
            "  --parallel N          concurrent sequences per model (default 4)\n"
            "  --ctx N               context tokens per sequence (default 2048)\n"
            "  --batch N             tokens per decode step (default 512)\n"
            "  --prompt-stall-ms N   longest step with prompt work while streams generate\n"
            "                        (default 200, at least 8 of their steps; 0 = one batch a step)\n"
            "  --n-gpu-layers N      layers to offload to a GPU (default 0)\n"
            "  --flash-attn MODE     auto, on or off (default auto: on)\n"
            "  --prompt-cache SIZE   host memory per model for finished sequences' KV (default auto; 0 = off)\n"
            "  --queue-size N        requests allowed to wait per model (default 64)\n"
            "  --max-concurrent N    generations the host runs at once, all models together\n"
            "                        (default: one per 8 GiB of RAM, 1..8; CORRAL_MAX_CONCURRENT wins)\n"
            "  --queue-timeout DUR   longest a request waits in its model's queue (default 60s;\n"
            "                        -1 = no limit); a request may send X-Corral-Max-Wait: MS\n"
            "  --pressure-file FILE  PSI memory file (default /proc/pressure/memory)\n"
            "  --meminfo-file FILE   meminfo file (default /proc/meminfo)\n"
            "  --models-dir DIR      serve every *.gguf below DIR (id = file name stem)\n"
            "  --ollama-models DIR   serve Ollama's models (~/.ollama/models; id = NAME:TAG)\n"
            "  --hf-cache DIR        serve the Hugging Face cache's GGUF files (~/.cache/huggingface/hub;\n"
            "                        id = ORG/REPO/FILE-STEM)\n"
            "  --memory-budget SIZE  memory for loaded models, e.g. 8G (default: 3/4 of RAM)\n"
            "  --max-models N        models loaded at once (default 8)\n"
            "  --keep-alive DUR      unload a model idle this long (default 5m; -1 = never)\n"
            "  --load-timeout DUR    longest wait for room to load a model (default 120s)\n"
            "  --preload ID          load ID at start instead of on first use (repeatable)\n"
            "  --log-format F        text (default) or json (one object a line, for log shippers)\n"
            "  --body-limit SIZE     largest request body (default 8M)\n"
            "  --http-threads N      HTTP event threads (default 2)\n"
            "  --api-key KEY         require 'Authorization: Bearer KEY'\n"
            "  --admin-api-key KEY   guards /admin (default: loopback clients only)\n"
            "  --cors-origins LIST   web origins allowed to call from a browser (default none; * = any)\n"
            "  --allowed-hosts LIST  Host names accepted besides localhost and IP literals\n"
            "  --header-timeout DUR  a request's headers must arrive within this (default 10s)\n"
            "  --body-timeout DUR    longest pause between body reads (default 30s)\n"
            "  --max-connections N   open connections at most (default 4096, below the fd limit)\n"
            "  --max-connections-per-ip N  per client address (default 64; 0 = no limit)\n"
            "  --request-memory SIZE request bytes held at once, all clients (default 256M)\n"
            "  --shutdown-timeout DUR  SIGTERM: how long requests in flight may finish (default 30s)\n"
            "  --max-rpc-message SIZE  largest JSON-RPC message (default: the body limit)\n"
            "  --rpc-max-inflight N  JSON-RPC calls in flight per connection (default 16)\n"
            "  --log-level LEVEL     debug, info, warn, error (default info)\n",
            CORRAL_VERSION, cli_usage_text);
}

static int load_config(struct config *cfg, int argc, char **argv) {
    char err[1024];
    if (config_load(cfg, argc, argv, environ, err, sizeof err) != 0) {
        fprintf(stderr, "corral: %s\n", err);
        return -1;
    }
    int lvl = log_level_parse(cfg->log_level ? cfg->log_level : "info");
    log_set_level(lvl < 0 ? LOG_INFO : (enum log_level)lvl);
    if (cfg->log_format && strcmp(cfg->log_format, "json") == 0) {
        log_set_format(LOG_FORMAT_JSON);
    } else if (cfg->log_format && strcmp(cfg->log_format, "text") != 0) {
        fprintf(stderr, "corral: log_format must be text or json, got '%s'\n", cfg->log_format);
        return -1;
    } else if (sd_stderr_is_journal()) {
        log_set_format(LOG_FORMAT_JOURNAL); /* journald stamps each line itself */
    }
    return 0;
}

/* corral list: the server's models, or with serve options the configured
 * ones (and what the stores hold) read from their files. */
struct list_acc {
    char **ids, **paths;
    size_t n, cap;
};

static void list_found(void *ctx, const char *id, const char *path) {
    struct list_acc *a = ctx;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->ids[i], id) == 0) return;
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 16;
        char **ni = realloc(a->ids, nc * sizeof *ni);
        if (!ni) return;
        a->ids = ni;
        char **np = realloc(a->paths, nc * sizeof *np);
        if (!np) return;
        a->paths = np;
        a->cap = nc;
    }
    a->ids[a->n] = strdup(id);
    a->paths[a->n] = strdup(path);
    if (a->ids[a->n] && a->paths[a->n]) a->n++;
}

static int cmd_list(int argc, char **argv) {
    bool offline = false;
    for (int i = 0; i < argc; i++)
        offline |= strncmp(argv[i], "--config", 8) == 0 || strncmp(argv[i], "--model", 7) == 0 ||
                   strncmp(argv[i], "--ollama-models", 15) == 0 || strncmp(argv[i], "--hf-cache", 10) == 0;
    if (!offline) return cli_list(argc, argv);
    struct config cfg;
    if (load_config(&cfg, argc, argv) != 0) {
        config_free(&cfg);
        return 2;
    }
    struct list_acc a = {0};
    for (int i = 0; i < cfg.n_models; i++)
        if (cfg.models[i].path) list_found(&a, cfg.models[i].id, cfg.models[i].path);
    const char *dirs[3] = {cfg.models_dir, cfg.ollama_models, cfg.hf_cache};
    void (*scans[3])(const char *, store_found_fn, void *) = {store_scan_dir, store_scan_ollama, store_scan_hf};
    for (int i = 0; i < 3; i++) {
        char *d = dirs[i] ? store_expand_home(dirs[i]) : NULL;
        if (d) scans[i](d, list_found, &a);
        free(d);
    }
    cli_list_offline((const char *const *)a.ids, (const char *const *)a.paths, a.n);
    for (size_t i = 0; i < a.n; i++) {
        free(a.ids[i]);
        free(a.paths[i]);
    }
    free(a.ids);
    free(a.paths);
    config_free(&cfg);
    return 0;
}

static int cmd_models(int argc, char **argv) {
    struct config cfg;
    if (load_config(&cfg, argc, argv) != 0) {
        config_free(&cfg);
        return 2;
    }
    for (int i = 0; i < cfg.n_models; i++) printf("%s\t%s\n", cfg.models[i].id, cfg.models[i].path);
    config_free(&cfg);
    return 0;
}

/* Raise the soft limit on open files to the hard one (at most 1M): every
 * client connection is a descriptor. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (1u << 20) ? (1u << 20) : rl.rlim_max;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) log_warn("could not raise the open-file limit to %llu",
                                                         (unsigned long long)want);
    }
}

/* Wait until no request is left or the monotonic deadline passes; a
 * signal meanwhile exits at once. Returns the requests left. */
static int wait_idle(struct service *svc, const sigset_t *set, int64_t deadline_ms) {
    int active;
    while ((active = service_active(svc)) > 0 && time_now_ms() < deadline_ms) {
        struct timespec ts = {0, 20 * 1000000L};
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0) {
            log_warn("signal %d again: exiting now, %d request(s) cut off", sig, active);
            fflush(stderr);
            _exit(128 + sig);
        }
    }
    return active;
}

/* What every way of serving runs: the capacity gate, the pool and the
 * service over them. */
struct core {
    struct config cfg;
    struct capacity *gate;
    struct pool *pool;
    struct service *svc;
    sigset_t signals; /* SIGINT and SIGTERM, blocked in every thread */
};

static void core_stop(struct core *c) {
    if (c->svc) service_drain(c->svc);
    if (c->pool) pool_stop(c->pool);
}

static void core_free(struct core *c) {
    pool_free(c->pool);
    service_free(c->svc);
    capacity_free(c->gate);
    config_free(&c->cfg);
}

/* Load the config and start the core. 0, or the exit status. */
static int core_start(struct core *c, int argc, char **argv) {
    memset(c, 0, sizeof *c);
    if (load_config(&c->cfg, argc, argv) != 0) return 2;
    if (c->cfg.n_models == 0 && !c->cfg.models_dir && !c->cfg.ollama_models && !c->cfg.hf_cache) {
        fprintf(stderr, "corral: no models configured; use --model ID=PATH, a [model.ID] section, --models-dir, "
                        "--ollama-models or --hf-cache\n");
        return 2;
    }
    /* Signals are taken synchronously; every other thread inherits the mask. */
    sigemptyset(&c->signals);
    sigaddset(&c->signals, SIGINT);
    sigaddset(&c->signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &c->signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    struct corral_err err;
    corral_err_clear(&err);
    struct capacity_params cp = {
        .cfg_max = c->cfg.max_concurrent,
        .env_value = c->cfg.max_concurrent_env,
        .psi_path = c->cfg.pressure_file,
        .meminfo_path = c->cfg.meminfo_file,
        .interval_ms = 1000,
    };
    c->gate = capacity_new(&cp);
    if (!c->gate) {
        fprintf(stderr, "corral: cannot start the capacity monitor\n");
        return 1;
    }
    c->pool = pool_new(&c->cfg, c->gate, &err);
    if (!c->pool) {
        fprintf(stderr, "corral: %s\n", err.message);
        return 1;
    }
    struct service_params sp = {.pool = c->pool, .gate = c->gate, .queue_timeout_ms = c->cfg.queue_timeout_ms};
    c->svc = service_new(&sp);
    if (!c->svc) {
        fprintf(stderr, "corral: out of memory\n");
        return 1;
    }
    return 0;
}

/* Graceful shutdown after the first signal: stop accepting, let requests
 * in flight finish up to shutdown_timeout, then cancel the rest (their
 * clients get an error event) and give their transports a moment to send
 * it. A second signal exits at once. Returns the exit status. */
static int drain(struct core *c, struct http_server *srv) {
    service_drain(c->svc);
    http_server_drain(srv);
    pool_close(c->pool);
    int64_t t0 = time_now_ms(), timeout_ms = c->cfg.shutdown_timeout_ms;
    int active = service_active(c->svc);
    if (active > 0)
        log_info("draining: %d request(s) in flight, up to %lld ms (a second signal stops at once)", active,
                 (long long)timeout_ms);
    active = wait_idle(c->svc, &c->signals, t0 + timeout_ms);
    if (active > 0) log_warn("shutdown_timeout reached: cancelling %d request(s) still running", active);
    pool_stop(c->pool);
    wait_idle(c->svc, &c->signals, time_now_ms() + 2000); /* the cancelled ones' error events go out */
    log_info("drained in %lld ms", (long long)(time_now_ms() - t0));
    return 0;
}

static int cmd_serve(int argc, char **argv) {
    struct core c;
    int rc = core_start(&c, argc, argv);
    struct http_server *srv = NULL;
    if (rc != 0) goto out;
    rc = 1;
    const struct config *cfg = &c.cfg;
    struct corral_err err;
    corral_err_clear(&err);
    struct http_server_params hp = {
        .host = cfg->host,
        .port = cfg->port,
        .listen_fd = sd_listen_socket(),
        .threads = cfg->http_threads,
        .body_limit = cfg->body_limit,
        .api_key = cfg->api_key,
        .admin_api_key = cfg->admin_api_key,
        .svc = c.svc,
        .cors_origins = cfg->cors_origins,
        .allowed_hosts = cfg->allowed_hosts,
        .header_timeout_ms = cfg->header_timeout_ms,
        .body_timeout_ms = cfg->body_timeout_ms,
        .max_connections = cfg->max_connections,
        .max_connections_per_ip = cfg->max_connections_per_ip,
        .request_memory = cfg->request_memory,
        .max_rpc_message = cfg->max_rpc_message,
        .rpc_max_inflight = cfg->rpc_max_inflight,
    };
    srv = http_server_start(&hp, &err);
    if (!srv) {
        fprintf(stderr, "corral: %s\n", err.message);
        goto out;
    }
    const char *h = strcmp(cfg->host, "0.0.0.0") == 0 ? "127.0.0.1" : strcmp(cfg->host, "::") == 0 ? "::1" : cfg->host;
    char url[300];
    snprintf(url, sizeof url, "http://%s%s%s:%d", strchr(h, ':') ? "[" : "", h, strchr(h, ':') ? "]" : "",
             http_server_port(srv));
    daemon_banner(cfg, c.pool, c.gate, url);
    /* A line a parent process can wait for. */
    printf("corral: listening on port %d\n", http_server_port(srv));
    fflush(stdout);

    /* ready (for systemd) once the preloaded models are in */
    int sig = daemon_wait_preloads(cfg, c.pool, &c.signals);
    struct daemon *dm = daemon_ready(c.pool, c.gate, http_server_port(srv));
    if (!sig) sigwait(&c.signals, &sig);
    log_info("signal %d: shutting down", sig);
    daemon_stopping(dm);
    rc = drain(&c, srv);
    daemon_free(dm);
out:
    if (srv) http_server_drain(srv);
    core_stop(&c);
    http_server_stop(srv);
    core_free(&c);
    return rc;
}

/* corral rpc --stdio [serve options]: the whole server, JSON-RPC on
 * stdin/stdout, logs on stderr. */
static int cmd_rpc(int argc, char **argv) {
    bool stdio_mode = false;
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--stdio") == 0) stdio_mode = true;
        else argv[n++] = argv[i];
    }
    if (!stdio_mode) {
        fprintf(stderr, "corral rpc: say --stdio (JSON-RPC on stdin/stdout); over the network, `corral serve` "
                        "answers JSON-RPC on ws://HOST:PORT/v1/rpc\n");
        return 2;
    }
    /* The protocol owns stdout: anything else a library prints goes to stderr. */
    int out_fd = dup(STDOUT_FILENO);
    if (out_fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        fprintf(stderr, "corral: cannot set up stdout\n");
        return 1;
    }
    fcntl(out_fd, F_SETFD, FD_CLOEXEC);
    struct core c;
    int rc = core_start(&c, n, argv);
    if (rc == 0) {
        int sfd = signalfd(-1, &c.signals, SFD_CLOEXEC | SFD_NONBLOCK);
        struct rpc_stdio_params p = {
            .svc = c.svc,
            .in_fd = STDIN_FILENO,
            .out_fd = out_fd,
            .signal_fd = sfd,
            .max_message = c.cfg.max_rpc_message ? c.cfg.max_rpc_message : c.cfg.body_limit,
            .max_inflight = c.cfg.rpc_max_inflight,
            .shutdown_timeout_ms = c.cfg.shutdown_timeout_ms,
        };
        log_info("corral %s serving JSON-RPC on stdin/stdout (%zu models)", CORRAL_VERSION, pool_count(c.pool));
        rc = rpc_stdio_run(&p);
        if (sfd >= 0) close(sfd);
        pool_close(c.pool);
    }
    core_stop(&c);
    core_free(&c);
    close(out_fd);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("corral %s\n", CORRAL_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "rpc") == 0) return cmd_rpc(argc - 2, argv + 2);
    if (strcmp(cmd, "models") == 0) return cmd_models(argc - 2, argv + 2);
    if (strcmp(cmd, "ps") == 0) return cli_ps(argc - 2, argv + 2);
    if (strcmp(cmd, "run") == 0) return cli_run(argc - 2, argv + 2);
    if (strcmp(cmd, "list") == 0) return cmd_list(argc - 2, argv + 2);
    if (strcmp(cmd, "show") == 0) return cli_show(argc - 2, argv + 2);
    if (strcmp(cmd, "load") == 0) return cli_load(argc - 2, argv + 2);
    if (strcmp(cmd, "unload") == 0) return cli_unload(argc - 2, argv + 2);
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "corral: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
