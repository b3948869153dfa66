/* config.h - server and model configuration from file, environment and flags.
 *
 * Precedence, lowest first: built-in defaults < INI config file < CORRAL_*
 * environment variables < command-line flags. Every value is validated; an
 * invalid one yields an error message that names its source (file:line and
 * key, the variable, or the flag) and config_load fails.
 *
 * INI layout:
 *   [server]          host, port, threads, parallel, ctx, api_key, admin_api_key, queue_size,
 *                     body_limit, http_threads, log_level, n_gpu_layers, batch,
 *                     prompt_stall_ms, flash_attn, prompt_cache,
 *                     models_dir, memory_budget, max_models, keep_alive,
 *                     load_timeout, max_concurrent, queue_timeout,
 *                     pressure_file, meminfo_file, state_dir,
 *                     cors_origins, allowed_hosts, header_timeout,
 *                     body_timeout, max_connections, max_connections_per_ip,
 *                     request_memory, shutdown_timeout, max_rpc_message,
 *                     rpc_max_inflight
 *   [model.ID]        path (required unless command or upstream), parallel,
 *                     ctx, threads, n_gpu_layers, flash_attn, chat_template,
 *                     chat_template_kwargs, batch,
 *                     preload, keep_alive; a child server: command,
 *                     health_path, startup_timeout, memory_estimate; remote
 *                     replicas: upstream, upstream_model, upstream_api_key,
 *                     health_path
 * Environment: CORRAL_CONFIG, CORRAL_HOST, CORRAL_PORT, CORRAL_THREADS,
 *   CORRAL_PARALLEL, CORRAL_CTX, CORRAL_API_KEY, CORRAL_QUEUE_SIZE,
 *   CORRAL_BODY_LIMIT, CORRAL_HTTP_THREADS, CORRAL_LOG_LEVEL,
 *   CORRAL_N_GPU_LAYERS, CORRAL_FLASH_ATTN, CORRAL_PROMPT_CACHE, CORRAL_BATCH,
 *   CORRAL_PROMPT_STALL_MS,
 *   CORRAL_MODELS_DIR,
 *   CORRAL_MEMORY_BUDGET, CORRAL_MAX_MODELS, CORRAL_KEEP_ALIVE,
 *   CORRAL_LOAD_TIMEOUT, CORRAL_QUEUE_TIMEOUT, CORRAL_PRESSURE_FILE,
 *   CORRAL_MEMINFO_FILE, CORRAL_CORS_ORIGINS, CORRAL_ALLOWED_HOSTS,
 *   CORRAL_HEADER_TIMEOUT, CORRAL_BODY_TIMEOUT, CORRAL_MAX_CONNECTIONS,
 *   CORRAL_MAX_CONNECTIONS_PER_IP, CORRAL_REQUEST_MEMORY,
 *   CORRAL_SHUTDOWN_TIMEOUT, CORRAL_MAX_CONCURRENT (kept as text in
 *   max_concurrent_env, never an error here), CORRAL_MODELS (ID=PATH[,ID=PATH...]) and
 *   CORRAL_PRELOAD (ID[,ID...]); in both lists blanks around items and empty
 *   items are ignored. An empty CORRAL_CONFIG means no file; an empty api_key
 *   means no auth; an empty models_dir means none.
 * Flags (for `corral serve`): --config FILE, --model ID=PATH (repeatable),
 *   --preload ID (repeatable), --host, --port, --threads, --parallel, --ctx,
 *   --api-key, --queue-size, --body-limit, --http-threads, --log-level,
 *   --n-gpu-layers, --flash-attn, --prompt-cache, --batch, --prompt-stall-ms, --models-dir, --memory-budget, --max-models,
 *   --keep-alive, --load-timeout, --max-concurrent, --queue-timeout,
 *   --pressure-file, --meminfo-file, --cors-origins, --allowed-hosts,
 *   --header-timeout, --body-timeout, --max-connections,
 *   --max-connections-per-ip, --request-memory, --shutdown-timeout.
 *   "--flag value" and "--flag=value" both work.
 *
 * Value forms: sizes as in config_parse_size ("8388608", "64k", "8M", "1G";
 * memory_budget also takes "1T", and "0" or "auto" for automatic); durations
 * as in config_parse_duration ("300", "90s", "10m", "1h"; "-1" = forever where
 * allowed); booleans true/false, yes/no, on/off, 1/0 (any case).
 */
#ifndef CORRAL_CONFIG_H
#define CORRAL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_ID_MAX 128
#define CONFIG_MAX_MODELS 64

/* flash_attn values besides 0 (off) and 1 (on) */
#define CONFIG_AUTO (-1)    /* corral decides (see llama_engine.h) */
#define CONFIG_INHERIT (-2) /* model: use the server's */
#define CONFIG_SIZE_AUTO ((size_t)-1) /* a size corral chooses */

/* keep_alive_ms special values */
#define CONFIG_KEEP_ALIVE_FOREVER ((int64_t)-1) /* never unload when idle */
#define CONFIG_KEEP_ALIVE_INHERIT ((int64_t)-2) /* model: use the server's */

/* Per-model settings. Numeric fields left at -1 (or NULL strings) inherit the
 * [server] value when the model is opened. */
struct config_model {
    char id[CONFIG_ID_MAX]; /* [A-Za-z0-9._:-]+, 1..127 chars */
    char *path;             /* GGUF file (required) */
    int parallel;           /* sequence slots; -1 = inherit */
    int ctx;                /* context tokens per slot; -1 = inherit */
    int threads;            /* -1 = inherit */
    int n_gpu_layers;       /* -1 = inherit */
    int batch;              /* -1 = inherit */
    int flash_attn;         /* 0 off, 1 on, CONFIG_AUTO; CONFIG_INHERIT (default) */
    char *chat_template;    /* a Jinja file, Jinja text or a llama.cpp built-in
                             * template's name; NULL = the model's own */
    char *chat_template_kwargs; /* extra template variables, a JSON object; NULL = none */
    bool preload;           /* load at start; default false */
    int64_t keep_alive_ms;  /* idle time before unloading, ms; -1 = forever,
                             * 0 = as soon as idle, -2 (default) = inherit */
    /* A supervised child server: started with `command` (split into argv
     * without a shell; {port} and {model} substituted, {model} being path
     * when set, else the id), ready when health_path answers 200. */
    char *command;            /* NULL = not a child */
    char *health_path;        /* NULL = "/health"; child and upstream */
    int64_t startup_timeout_ms; /* default 120 s */
    size_t memory_estimate;   /* bytes counted against the budget (child) */
    /* Remote replicas of an OpenAI-compatible server: "URL[, URL...]". */
    char *upstream;           /* NULL = not an upstream */
    char *upstream_model;     /* the model name sent upstream; NULL = the id */
    char *upstream_api_key;   /* sent as a Bearer token; NULL = none */
};

struct config {
    char *host;          /* default "127.0.0.1" */
    int port;            /* default 8080; 0 = pick a free port; 0..65535 */
    int threads;         /* default: online CPUs; 1..1024 */
    int http_threads;    /* HTTP event threads; default 2; 1..64 */
    int parallel;        /* slots per model; default 4; 1..256 */
    int ctx;             /* context tokens per slot; default 2048; 16..1048576 */
    int batch;           /* tokens per decode step; default 512; 16..65536 */
    int prompt_stall_ms; /* how long a step carrying prompt tokens may take
                          * while streams generate (at least 8 of their
                          * steps); default 200; 0 = one `batch` chunk a
                          * step, however long; 0..600000 */
    int n_gpu_layers;    /* default 0 (99 = all); 0..100000 */
    int flash_attn;      /* 0 off, 1 on, CONFIG_AUTO (default): on */
    size_t prompt_cache; /* bytes of finished sequences' KV kept per model
                          * in host memory; 0 = off; CONFIG_SIZE_AUTO
                          * (default) = as much as the model's KV cache,
                          * at most 2 GiB */
    int queue_size;      /* waiting requests per model; default 64; 0..100000 */
    size_t body_limit;   /* default 8 MiB; accepts 1024, 64k, 8M, 1G; 1k..1G */
    char *api_key;       /* NULL = no auth */
    char *admin_api_key; /* guards /admin; NULL = /admin answers loopback clients only */
    char *log_level;     /* default "info" */
    char *log_format;    /* "text" or "json"; NULL = text (without times when stderr is the journal) */
    char *config_path;   /* the file read, or NULL */
    char *models_dir;    /* directory whose *.gguf (recursively) become
                          * models; NULL = none */
    char *ollama_models; /* Ollama's store (~/.ollama/models): its models by NAME:TAG; NULL = none */
    char *hf_cache;      /* the Hugging Face hub cache (~/.cache/huggingface/hub); NULL = none */
    size_t memory_budget; /* bytes for loaded models; 0 = auto (default);
                           * else 1M..1T */
    int max_models;      /* models loaded at once; default 8; 1..1024 */
    int64_t keep_alive_ms;   /* idle time before a model is unloaded, ms;
                              * default 5 min; -1 = forever, 0 = at once */
    int64_t load_timeout_ms; /* model load timeout, ms; default 120 s; > 0 */
    int max_concurrent;  /* generations the host runs at once; 0 = auto
                          * (default); 1..1024. See capacity.h. */
    char *max_concurrent_env; /* CORRAL_MAX_CONCURRENT as given (unchecked:
                               * the capacity module validates it, warns
                               * and ignores a bad value); NULL = unset */
    int64_t queue_timeout_ms; /* longest a request waits in its model's
                               * queue, ms; default 60 s; -1 = no limit,
                               * 0 = never wait */
    char *pressure_file; /* PSI memory file; default /proc/pressure/memory */
    char *meminfo_file;  /* default /proc/meminfo */
    char *state_dir;     /* child logs go to state_dir/logs; NULL = $XDG_STATE_HOME/corral */
    /* Browsers and clients (see http/guard.h and http/conns.h). */
    char *cors_origins;  /* origins a browser page may call from: "origin[, ...]"
                          * (scheme://host[:port], or "null"), "*" = any;
                          * NULL (default) = none: no CORS headers */
    char *allowed_hosts; /* Host names accepted besides localhost and IP
                          * literals: "name[, .domain ...]", "*" = any; NULL
                          * = none. Checked when bound to a loopback address,
                          * or on any address once set */
    int64_t header_timeout_ms; /* a request's headers must arrive within this; default 10 s */
    int64_t body_timeout_ms;   /* longest pause between body reads; default 30 s */
    int max_connections;       /* open connections at most; 0 = auto (default): 4096, or
                                * less to stay below the file-descriptor limit */
    int max_connections_per_ip; /* per client address; default 64; 0 = no limit */
    size_t request_memory;     /* request bytes held while receiving, all connections
                                * together; default 256 MiB (at least body_limit) */
    int64_t shutdown_timeout_ms; /* SIGTERM: how long requests in flight may finish; default 30 s */
    size_t max_rpc_message; /* largest JSON-RPC message (WebSocket or stdio line); 0 (default) = body_limit */
    int rpc_max_inflight;   /* JSON-RPC calls in flight per connection; default 16 */
    char **preload;      /* ids from CORRAL_PRELOAD then --preload (both
                          * count), deduplicated, in order; valid ids but not
                          * checked against models (models_dir models are
                          * found later). A model is preloaded when its id is
                          * here or its preload field is true. */
    int n_preload;

    struct config_model models[CONFIG_MAX_MODELS];
    int n_models;
};

/* Fill *cfg with defaults. Overwrites *cfg without freeing what it held.
 * Allocates (free with config_free); aborts when out of memory. */
void config_defaults(struct config *cfg);

/* Load in order: defaults, the config file (from --config, else CORRAL_CONFIG),
 * env (envp: NULL-terminated "K=V" array, usually `environ`), then flags
 * argv[0..argc) (argv holds only the flags, no program or command name).
 * Returns 0 on success. On failure returns -1 and writes a one-line message
 * into errbuf (e.g. "corral.ini:12: [model.a] ctx: expected an integer in
 * 16..1048576, got \"abc\""); *cfg must still be freed with config_free.
 * A positional argument or unknown flag is an error; --help is handled by the
 * caller before this. Duplicate model ids: a later source replaces the path
 * of an earlier one; two sections with one id in one file are an error. A
 * [model.ID] section without a path is an error unless CORRAL_MODELS or
 * --model supplies one. *cfg is overwritten as by config_defaults. */
int config_load(struct config *cfg, int argc, char **argv, char **envp, char *errbuf,
                size_t errlen);

/* A model entry with everything inherited from the server (id empty). */
void config_model_init(struct config_model *m);

/* Resolve a model's effective numbers: -1 fields take the server's value,
 * and keep_alive_ms CONFIG_KEEP_ALIVE_INHERIT (-2) the server's keep_alive_ms.
 * out's strings (path, chat_template) are borrowed from in, not copied: do not
 * free them, and do not use them after config_free. */
void config_model_resolve(const struct config *cfg, const struct config_model *in,
                          struct config_model *out);

/* Parse a size like "8388608", "64k", "8M", "1G" (powers of 1024). 0 on
 * success, -1 on junk or overflow. */
int config_parse_size(const char *s, size_t *out);

/* Parse a duration into milliseconds: integer seconds ("300"), or digits with
 * a unit s, m or h ("90s", "10m", "1h"); "-1" gives -1 (forever), no other
 * negative is accepted. Blanks around the value are allowed. 0 on success, -1
 * (*ms_out untouched) on junk or overflow. */
int config_parse_duration(const char *s, int64_t *ms_out);

/* Free every string (and the preload list) of *cfg and leave it empty; safe to call twice, after a
 * failed config_load, or on a defaults-only config. */
void config_free(struct config *cfg);

#endif
