/* config.c - configuration from defaults, an INI file, CORRAL_* environment
 * variables and command-line flags, each value validated where it is read.
 *
 * DESIGN: every server setting is one row of server_opts[] (INI key, env
 * variable, flag, type, range, field offset), and every [model.ID] key one row
 * of model_opts[]; one function (opt_apply) parses and range-checks a value
 * for any row, so the INI file, the environment and the flags share one
 * validator and one message format: "SOURCE: expected ..., got \"VALUE\"".
 *
 * The files: config.c (this one: the options, the environment, the flags
 * and the public API), config_ini.c (the INI reader), config_value.c (the
 * value forms).
 *
 * The INI file goes through inih's ini_parse_stream with our own line reader
 * (ini_read_line), which works around three properties of inih:
 *  - the handler gets no line number (Debian builds without
 *    INI_HANDLER_LINENO): the reader counts physical lines, and since it
 *    hands inih exactly one chunk per line, inih's error line numbers match;
 *  - section names are truncated to 50 bytes, too short for a 127-character
 *    model id: the reader parses and validates "[...]" lines itself and hands
 *    inih an empty line instead, so inih only ever sees key lines;
 *  - an indented line continues the previous value, and a line longer than
 *    inih's buffer is silently split in two: the reader strips leading
 *    whitespace, and refuses an over-long line with an error.
 * The first error (ours or an inih syntax error, whichever line comes first)
 * is reported; the reader stops at our first one.
 *
 * Out of memory while copying strings aborts: the configuration is read once
 * at startup and there is nothing useful to fall back to.
 */
#include "config_internal.h"
#include "util/strlist.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

/* ------------------------------------------------------------ options table */

enum opt_type {
    OPT_INT,       /* int, strict decimal, in [min, max] */
    OPT_SIZE,      /* size_t via config_parse_size, in [min, max] */
    OPT_STR,       /* malloc'd char *, must not be empty */
    OPT_STR_NULL,  /* malloc'd char *, empty means NULL */
    OPT_LOG_LEVEL, /* malloc'd char *, one of log_levels[] */
    OPT_BOOL,      /* bool: true/false, yes/no, on/off, 1/0, any case */
    OPT_DURATION,  /* int64_t ms via config_parse_duration, in [min, max] */
    OPT_SIZE_AUTO, /* size_t via parse_size_t; 0 or "auto" = 0, else [min, max] */
    OPT_AUTO_BOOL, /* int: "auto" = CONFIG_AUTO, else a boolean (1/0) */
    OPT_SIZE_OR_AUTO, /* size_t: "auto" = CONFIG_SIZE_AUTO, else a size in [min, max] */
    OPT_ORIGINS,   /* malloc'd char *: a list of origins (config__check_origins); empty = NULL */
    OPT_HOSTS,     /* malloc'd char *: a list of host names (config__check_hosts); empty = NULL */
    OPT_JSON_OBJECT, /* malloc'd char *: a JSON object's text; empty = NULL */
};

struct opt {
    const char *key;  /* INI key */
    const char *env;  /* environment variable, or NULL */
    const char *flag; /* command-line flag, or NULL */
    enum opt_type type;
    size_t off; /* field offset in struct config / struct config_model */
    long long min, max;
};

#define SOPT(key, env, flag, type, field, min, max) \
    { key, env, flag, type, offsetof(struct config, field), min, max }
#define MOPT(key, type, field, min, max) \
    { key, NULL, NULL, type, offsetof(struct config_model, field), min, max }

static const struct opt server_opts[] = {
    SOPT("host", "CORRAL_HOST", "--host", OPT_STR, host, 0, 0),
    SOPT("port", "CORRAL_PORT", "--port", OPT_INT, port, 0, 65535),
    SOPT("threads", "CORRAL_THREADS", "--threads", OPT_INT, threads, 1, 1024),
    SOPT("http_threads", "CORRAL_HTTP_THREADS", "--http-threads", OPT_INT, http_threads, 1,
         64),
    SOPT("parallel", "CORRAL_PARALLEL", "--parallel", OPT_INT, parallel, 1, 256),
    SOPT("ctx", "CORRAL_CTX", "--ctx", OPT_INT, ctx, 16, 1048576),
    SOPT("batch", "CORRAL_BATCH", "--batch", OPT_INT, batch, 16, 65536),
    SOPT("prompt_stall_ms", "CORRAL_PROMPT_STALL_MS", "--prompt-stall-ms", OPT_INT, prompt_stall_ms, 0, 600000),
    SOPT("n_gpu_layers", "CORRAL_N_GPU_LAYERS", "--n-gpu-layers", OPT_INT, n_gpu_layers, 0,
         100000),
    SOPT("flash_attn", "CORRAL_FLASH_ATTN", "--flash-attn", OPT_AUTO_BOOL, flash_attn, 0, 0),
    SOPT("prompt_cache", "CORRAL_PROMPT_CACHE", "--prompt-cache", OPT_SIZE_OR_AUTO, prompt_cache, 0,
         1024LL * 1024 * 1024 * 1024),
    SOPT("queue_size", "CORRAL_QUEUE_SIZE", "--queue-size", OPT_INT, queue_size, 0, 100000),
    SOPT("body_limit", "CORRAL_BODY_LIMIT", "--body-limit", OPT_SIZE, body_limit, 1024,
         1024LL * 1024 * 1024),
    SOPT("api_key", "CORRAL_API_KEY", "--api-key", OPT_STR_NULL, api_key, 0, 0),
    SOPT("admin_api_key", "CORRAL_ADMIN_API_KEY", "--admin-api-key", OPT_STR_NULL, admin_api_key, 0, 0),
    SOPT("log_level", "CORRAL_LOG_LEVEL", "--log-level", OPT_LOG_LEVEL, log_level, 0, 0),
    SOPT("log_format", "CORRAL_LOG_FORMAT", "--log-format", OPT_STR_NULL, log_format, 0, 0),
    SOPT("models_dir", "CORRAL_MODELS_DIR", "--models-dir", OPT_STR_NULL, models_dir, 0, 0),
    SOPT("ollama_models", "CORRAL_OLLAMA_MODELS", "--ollama-models", OPT_STR_NULL, ollama_models, 0, 0),
    SOPT("hf_cache", "CORRAL_HF_CACHE", "--hf-cache", OPT_STR_NULL, hf_cache, 0, 0),
    SOPT("memory_budget", "CORRAL_MEMORY_BUDGET", "--memory-budget", OPT_SIZE_AUTO,
         memory_budget, 1024LL * 1024, 1024LL * 1024 * 1024 * 1024),
    SOPT("max_models", "CORRAL_MAX_MODELS", "--max-models", OPT_INT, max_models, 1, 1024),
    SOPT("keep_alive", "CORRAL_KEEP_ALIVE", "--keep-alive", OPT_DURATION, keep_alive_ms, -1,
         INT64_MAX),
    SOPT("load_timeout", "CORRAL_LOAD_TIMEOUT", "--load-timeout", OPT_DURATION,
         load_timeout_ms, 1, INT64_MAX),
    /* CORRAL_MAX_CONCURRENT is read by the capacity module, which warns
     * about an invalid value and ignores it (see max_concurrent_env) */
    SOPT("max_concurrent", NULL, "--max-concurrent", OPT_INT, max_concurrent, 0, 1024),
    SOPT("queue_timeout", "CORRAL_QUEUE_TIMEOUT", "--queue-timeout", OPT_DURATION,
         queue_timeout_ms, -1, INT64_MAX),
    SOPT("pressure_file", "CORRAL_PRESSURE_FILE", "--pressure-file", OPT_STR, pressure_file, 0, 0),
    SOPT("meminfo_file", "CORRAL_MEMINFO_FILE", "--meminfo-file", OPT_STR, meminfo_file, 0, 0),
    SOPT("state_dir", "CORRAL_STATE_DIR", "--state-dir", OPT_STR_NULL, state_dir, 0, 0),
    /* browsers, slow clients, connections, shutdown */
    SOPT("cors_origins", "CORRAL_CORS_ORIGINS", "--cors-origins", OPT_ORIGINS, cors_origins, 0, 0),
    SOPT("allowed_hosts", "CORRAL_ALLOWED_HOSTS", "--allowed-hosts", OPT_HOSTS, allowed_hosts, 0, 0),
    SOPT("header_timeout", "CORRAL_HEADER_TIMEOUT", "--header-timeout", OPT_DURATION, header_timeout_ms, 1,
         24LL * 3600 * 1000),
    SOPT("body_timeout", "CORRAL_BODY_TIMEOUT", "--body-timeout", OPT_DURATION, body_timeout_ms, 1,
         24LL * 3600 * 1000),
    SOPT("max_connections", "CORRAL_MAX_CONNECTIONS", "--max-connections", OPT_INT, max_connections, 0, 1000000),
    SOPT("max_connections_per_ip", "CORRAL_MAX_CONNECTIONS_PER_IP", "--max-connections-per-ip", OPT_INT,
         max_connections_per_ip, 0, 1000000),
    SOPT("request_memory", "CORRAL_REQUEST_MEMORY", "--request-memory", OPT_SIZE, request_memory, 1024LL * 1024,
         1024LL * 1024 * 1024 * 1024),
    SOPT("shutdown_timeout", "CORRAL_SHUTDOWN_TIMEOUT", "--shutdown-timeout", OPT_DURATION, shutdown_timeout_ms,
         0, 24LL * 3600 * 1000),
    /* JSON-RPC (WebSocket and stdio) */
    SOPT("max_rpc_message", "CORRAL_MAX_RPC_MESSAGE", "--max-rpc-message", OPT_SIZE, max_rpc_message, 0,
         1024LL * 1024 * 1024),
    SOPT("rpc_max_inflight", "CORRAL_RPC_MAX_INFLIGHT", "--rpc-max-inflight", OPT_INT, rpc_max_inflight, 1, 4096),
};

static const struct opt model_opts[] = {
    MOPT("path", OPT_STR, path, 0, 0),
    MOPT("parallel", OPT_INT, parallel, 1, 256),
    MOPT("ctx", OPT_INT, ctx, 16, 1048576),
    MOPT("threads", OPT_INT, threads, 1, 1024),
    MOPT("n_gpu_layers", OPT_INT, n_gpu_layers, 0, 100000),
    MOPT("flash_attn", OPT_AUTO_BOOL, flash_attn, 0, 0),
    MOPT("batch", OPT_INT, batch, 16, 65536),
    MOPT("chat_template", OPT_STR_NULL, chat_template, 0, 0),
    MOPT("chat_template_kwargs", OPT_JSON_OBJECT, chat_template_kwargs, 0, 0),
    MOPT("preload", OPT_BOOL, preload, 0, 0),
    MOPT("keep_alive", OPT_DURATION, keep_alive_ms, -1, INT64_MAX),
    /* a supervised child server, or remote upstream replicas */
    MOPT("command", OPT_STR, command, 0, 0),
    MOPT("health_path", OPT_STR, health_path, 0, 0),
    MOPT("startup_timeout", OPT_DURATION, startup_timeout_ms, 1, INT64_MAX),
    MOPT("memory_estimate", OPT_SIZE, memory_estimate, 0, 1024LL * 1024 * 1024 * 1024),
    MOPT("upstream", OPT_STR, upstream, 0, 0),
    MOPT("upstream_model", OPT_STR, upstream_model, 0, 0),
    MOPT("upstream_api_key", OPT_STR_NULL, upstream_api_key, 0, 0),
};

#define N_SERVER_OPTS (sizeof server_opts / sizeof server_opts[0])
#define N_MODEL_OPTS (sizeof model_opts / sizeof model_opts[0])

/* Same names as log_level_parse() in util/log.h, kept here so that config.c
 * depends on no other module. */
static const char *const log_levels[] = {"debug", "info", "warn", "error", "off"};

/* ------------------------------------------------------------ applying values */

int config__fail(struct load *ld, const char *fmt, ...)
{
    if (ld->err && ld->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err, ld->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Parse value for option o and store it into the struct at base. src names
 * where the value came from ("f.ini:3: [server] port", "CORRAL_PORT",
 * "--port"). Returns 0, or -1 with the message written. */
static int opt_apply(struct load *ld, const struct opt *o, void *base, const char *value,
                     const char *src)
{
    char *field = (char *)base + o->off;
    char q[80], a[32], b[32];

    switch (o->type) {
    case OPT_INT: {
        long long v;
        if (config__parse_ll(value, &v) < 0 || v < o->min || v > o->max)
            return config__fail(ld, "%s: expected an integer in %lld..%lld, got \"%s\"", src, o->min,
                        o->max, config__quote(value, q, sizeof q));
        *(int *)(void *)field = (int)v;
        return 0;
    }
    case OPT_SIZE: {
        size_t v;
        if (config_parse_size(value, &v) < 0 || v < (unsigned long long)o->min ||
            v > (unsigned long long)o->max)
            return config__fail(ld, "%s: expected a size in %s..%s, got \"%s\"",
                        src, config__size_str((unsigned long long)o->min, a, sizeof a),
                        config__size_str((unsigned long long)o->max, b, sizeof b),
                        config__quote(value, q, sizeof q));
        *(size_t *)(void *)field = v;
        return 0;
    }
    case OPT_STR:
        if (!*value)
            return config__fail(ld, "%s: expected a non-empty value", src);
        config__set_str((char **)(void *)field, value);
        return 0;
    case OPT_STR_NULL:
        config__set_str((char **)(void *)field, *value ? value : NULL);
        return 0;
    case OPT_JSON_OBJECT: {
        json_t *j = *value ? json_loads(value, 0, NULL) : NULL;
        bool obj = json_is_object(j);
        json_decref(j);
        if (*value && !obj)
            return config__fail(ld, "%s: expected a JSON object such as {\"enable_thinking\": false}, got \"%s\"",
                                src, config__quote(value, q, sizeof q));
        config__set_str((char **)(void *)field, *value ? value : NULL);
        return 0;
    }
    case OPT_LOG_LEVEL:
        for (size_t i = 0; i < sizeof log_levels / sizeof log_levels[0]; i++) {
            if (strcmp(value, log_levels[i]) == 0) {
                config__set_str((char **)(void *)field, value);
                return 0;
            }
        }
        return config__fail(ld, "%s: expected one of debug, info, warn, error, off, got \"%s\"", src,
                    config__quote(value, q, sizeof q));
    case OPT_AUTO_BOOL: {
        bool v;
        if (strcasecmp(value, "auto") == 0) {
            *(int *)(void *)field = CONFIG_AUTO;
            return 0;
        }
        if (config__parse_bool(value, &v) < 0)
            return config__fail(ld, "%s: expected auto, on or off, got \"%s\"", src, config__quote(value, q, sizeof q));
        *(int *)(void *)field = v;
        return 0;
    }
    case OPT_BOOL: {
        bool v;
        if (config__parse_bool(value, &v) < 0)
            return config__fail(ld, "%s: expected a boolean, got \"%s\"", src,
                        config__quote(value, q, sizeof q));
        *(bool *)(void *)field = v;
        return 0;
    }
    case OPT_DURATION: {
        int64_t v;
        if (config_parse_duration(value, &v) < 0 || v < o->min || v > o->max)
            return config__fail(ld, "%s: expected %s, got \"%s\"", src,
                        o->min < 0    ? "a duration (seconds, or with s/m/h; -1 = forever)"
                        : o->min == 0 ? "a duration (seconds, or with s/m/h)"
                                      : "a positive duration (seconds, or with s/m/h)",
                        config__quote(value, q, sizeof q));
        *(int64_t *)(void *)field = v;
        return 0;
    }
    case OPT_SIZE_AUTO: {
        size_t v = 0;
        if (strcasecmp(value, "auto") != 0 &&
            (config__parse_size_t(value, &v) < 0 ||
             (v != 0 && (v < (unsigned long long)o->min || v > (unsigned long long)o->max))))
            return config__fail(ld, "%s: expected a size in %s..%s (or 0/auto), got \"%s\"", src,
                        config__size_str((unsigned long long)o->min, a, sizeof a),
                        config__size_str((unsigned long long)o->max, b, sizeof b),
                        config__quote(value, q, sizeof q));
        *(size_t *)(void *)field = v;
        return 0;
    }
    case OPT_ORIGINS:
    case OPT_HOSTS: {
        char why[200];
        int rc = o->type == OPT_ORIGINS ? config__check_origins(value, why, sizeof why)
                                        : config__check_hosts(value, why, sizeof why);
        if (rc < 0)
            return config__fail(ld, "%s: %s", src, why);
        config__set_str((char **)(void *)field, *value ? value : NULL);
        return 0;
    }
    case OPT_SIZE_OR_AUTO: {
        size_t v = CONFIG_SIZE_AUTO;
        if (strcasecmp(value, "auto") != 0 &&
            (config__parse_size_t(value, &v) < 0 || v < (unsigned long long)o->min || v > (unsigned long long)o->max))
            return config__fail(ld, "%s: expected auto or a size in %s..%s, got \"%s\"", src,
                        config__size_str((unsigned long long)o->min, a, sizeof a),
                        config__size_str((unsigned long long)o->max, b, sizeof b),
                        config__quote(value, q, sizeof q));
        *(size_t *)(void *)field = v;
        return 0;
    }
    }
    return config__fail(ld, "%s: internal error: bad option type", src);
}

static const struct opt *opt_find(const struct opt *opts, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(opts[i].key, key) == 0)
            return &opts[i];
    return NULL;
}

int config__apply_key(struct load *ld, int model, const char *key, const char *value, const char *src)
{
    const struct opt *o = model < 0 ? opt_find(server_opts, N_SERVER_OPTS, key)
                                    : opt_find(model_opts, N_MODEL_OPTS, key);
    if (!o)
        return 1;
    void *base = model < 0 ? (void *)ld->cfg : (void *)&ld->cfg->models[model];
    return opt_apply(ld, o, base, value, src) < 0 ? -1 : 0;
}

int config__model_find(const struct config *cfg, const char *id, size_t len)
{
    for (int i = 0; i < cfg->n_models; i++)
        if (strlen(cfg->models[i].id) == len && memcmp(cfg->models[i].id, id, len) == 0)
            return i;
    return -1;
}

/* Append a model with everything inherited. id must be valid. Returns its
 * index, or -1 (message written, naming src) when the table is full. */
int config__model_add(struct load *ld, const char *id, size_t len, const char *src)
{
    struct config *cfg = ld->cfg;
    if (cfg->n_models >= CONFIG_MAX_MODELS)
        return config__fail(ld, "%s: too many models (at most %d)", src, CONFIG_MAX_MODELS);
    struct config_model *m = &cfg->models[cfg->n_models];
    config_model_init(m);
    memcpy(m->id, id, len);
    m->id[len] = '\0';
    return cfg->n_models++;
}

/* Apply one "ID=PATH" from src: a new id is added, a known one gets the new
 * path and keeps its other settings. */
static int model_spec_apply(struct load *ld, const char *spec, const char *src)
{
    char q[80];
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1])
        return config__fail(ld, "%s: expected ID=PATH, got \"%s\"", src, config__quote(spec, q, sizeof q));
    size_t idlen = (size_t)(eq - spec);
    if (!config__model_id_valid(spec, idlen)) {
        char id[CONFIG_ID_MAX + 8];
        snprintf(id, sizeof id, "%.*s", (int)(idlen < CONFIG_ID_MAX ? idlen : CONFIG_ID_MAX),
                 spec);
        return config__fail(ld, "%s: invalid model id \"%s\" (expected " MODEL_ID_RULE ")", src,
                    config__quote(id, q, sizeof q));
    }
    int i = config__model_find(ld->cfg, spec, idlen);
    if (i < 0)
        i = config__model_add(ld, spec, idlen, src);
    if (i < 0)
        return -1;
    config__set_str(&ld->cfg->models[i].path, eq + 1);
    return 0;
}

/* Add one id to cfg->preload (a repeat is ignored). The id must be valid but
 * need not name a configured model. */
static int preload_add(struct load *ld, const char *id, const char *src)
{
    struct config *cfg = ld->cfg;
    char q[80];
    size_t len = strlen(id);
    if (!config__model_id_valid(id, len)) {
        char cut[CONFIG_ID_MAX + 8];
        snprintf(cut, sizeof cut, "%.*s", (int)(len < CONFIG_ID_MAX ? len : CONFIG_ID_MAX), id);
        return config__fail(ld, "%s: invalid model id \"%s\" (expected " MODEL_ID_RULE ")", src,
                    config__quote(cut, q, sizeof q));
    }
    for (int i = 0; i < cfg->n_preload; i++)
        if (strcmp(cfg->preload[i], id) == 0)
            return 0;
    cfg->preload = config__xrealloc(cfg->preload, ((size_t)cfg->n_preload + 1) * sizeof *cfg->preload);
    cfg->preload[cfg->n_preload++] = config__xstrdup(id);
    return 0;
}

/* ------------------------------------------------------------ environment */

static const char *env_get(char **envp, const char *name)
{
    if (!name)
        return NULL;
    size_t n = strlen(name);
    for (char **p = envp; p && *p; p++)
        if (strncmp(*p, name, n) == 0 && (*p)[n] == '=')
            return *p + n + 1;
    return NULL;
}

struct env_list {
    struct load *ld;
    const char *src;
    int (*fn)(struct load *, const char *, const char *);
};

static int env_item(void *ctx, const char *item, size_t len)
{
    struct env_list *el = ctx;
    char *copy = config__xstrndup(item, len);
    int rc = el->fn(el->ld, copy, el->src);
    free(copy);
    return rc < 0 ? -1 : 0;
}

/* A comma-separated list from variable src: fn gets each item with blanks
 * around it removed; empty items are ignored. */
static int env_list_apply(struct load *ld, const char *list, const char *src,
                          int (*fn)(struct load *, const char *, const char *))
{
    struct env_list el = {ld, src, fn};
    return strlist_each(list, env_item, &el);
}

static int env_apply(struct load *ld, char **envp)
{
    for (size_t i = 0; i < N_SERVER_OPTS; i++) {
        const char *v = env_get(envp, server_opts[i].env);
        if (v && opt_apply(ld, &server_opts[i], ld->cfg, v, server_opts[i].env) < 0)
            return -1;
    }
    const char *mc = env_get(envp, "CORRAL_MAX_CONCURRENT");
    if (mc) {
        free(ld->cfg->max_concurrent_env);
        ld->cfg->max_concurrent_env = config__xstrdup(mc);
    }
    const char *models = env_get(envp, "CORRAL_MODELS");
    if (models && env_list_apply(ld, models, "CORRAL_MODELS", model_spec_apply) < 0)
        return -1;
    const char *preload = env_get(envp, "CORRAL_PRELOAD");
    if (preload && env_list_apply(ld, preload, "CORRAL_PRELOAD", preload_add) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------ flags */

enum { FLAG_CONFIG = -1, FLAG_MODEL = -2, FLAG_PRELOAD = -3 };

struct flag_item {
    int kind; /* index in server_opts, or FLAG_CONFIG / FLAG_MODEL / FLAG_PRELOAD */
    const char *value; /* borrowed from argv */
};

/* Split argv into (flag, value) items without applying anything, so that
 * --config is known before the file is read. */
static int flags_parse(struct load *ld, int argc, char **argv, struct flag_item *items,
                       int *n_items)
{
    char q[80];
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-')
            return config__fail(ld, "unexpected argument \"%s\"", config__quote(arg, q, sizeof q));
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        int kind = INT_MIN;
        const char *name = NULL;
        if (nlen == 8 && strncmp(arg, "--config", 8) == 0) {
            kind = FLAG_CONFIG;
            name = "--config";
        } else if (nlen == 7 && strncmp(arg, "--model", 7) == 0) {
            kind = FLAG_MODEL;
            name = "--model";
        } else if (nlen == 9 && strncmp(arg, "--preload", 9) == 0) {
            kind = FLAG_PRELOAD;
            name = "--preload";
        } else {
            for (size_t k = 0; k < N_SERVER_OPTS; k++) {
                if (strlen(server_opts[k].flag) == nlen &&
                    strncmp(arg, server_opts[k].flag, nlen) == 0) {
                    kind = (int)k;
                    name = server_opts[k].flag;
                }
            }
        }
        if (kind == INT_MIN) {
            char flag[64];
            snprintf(flag, sizeof flag, "%.*s", (int)(nlen < 63 ? nlen : 63), arg);
            return config__fail(ld, "unknown flag \"%s\"", config__quote(flag, q, sizeof q));
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return config__fail(ld, "%s: missing value", name);
        }
        if (kind == FLAG_CONFIG && !*value)
            return config__fail(ld, "--config: expected a file path, got \"\"");
        items[n].kind = kind;
        items[n].value = value;
        n++;
    }
    *n_items = n;
    return 0;
}

static int flags_apply(struct load *ld, const struct flag_item *items, int n)
{
    for (int i = 0; i < n; i++) {
        int kind = items[i].kind;
        if (kind == FLAG_CONFIG)
            continue;
        if (kind == FLAG_MODEL) {
            if (model_spec_apply(ld, items[i].value, "--model") < 0)
                return -1;
            continue;
        }
        if (kind == FLAG_PRELOAD) {
            if (preload_add(ld, items[i].value, "--preload") < 0)
                return -1;
            continue;
        }
        const struct opt *o = &server_opts[kind];
        if (opt_apply(ld, o, ld->cfg, items[i].value, o->flag) < 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ public API */

void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    if (ncpu > 1024)
        ncpu = 1024;

    cfg->host = config__xstrdup("127.0.0.1");
    cfg->port = 8080;
    cfg->threads = (int)ncpu;
    cfg->http_threads = 2;
    cfg->parallel = 4;
    cfg->ctx = 2048;
    cfg->batch = 512;
    cfg->prompt_stall_ms = 200;
    cfg->n_gpu_layers = 0;
    cfg->flash_attn = CONFIG_AUTO;
    cfg->prompt_cache = CONFIG_SIZE_AUTO;
    cfg->queue_size = 64;
    cfg->body_limit = 8 * MIB;
    cfg->api_key = NULL;
    cfg->admin_api_key = NULL;
    cfg->log_level = config__xstrdup("info");
    cfg->config_path = NULL;
    cfg->models_dir = NULL;
    cfg->ollama_models = cfg->hf_cache = NULL;
    cfg->log_format = NULL;
    cfg->memory_budget = 0; /* auto */
    cfg->max_models = 8;
    cfg->keep_alive_ms = 5 * 60 * 1000;
    cfg->load_timeout_ms = 120 * 1000;
    cfg->max_concurrent = 0; /* auto */
    cfg->max_concurrent_env = NULL;
    cfg->queue_timeout_ms = 60 * 1000;
    cfg->pressure_file = config__xstrdup("/proc/pressure/memory");
    cfg->meminfo_file = config__xstrdup("/proc/meminfo");
    cfg->state_dir = NULL;
    cfg->cors_origins = NULL;
    cfg->allowed_hosts = NULL;
    cfg->header_timeout_ms = 10 * 1000;
    cfg->body_timeout_ms = 30 * 1000;
    cfg->max_connections = 0; /* auto */
    cfg->max_connections_per_ip = 64;
    cfg->request_memory = 256 * MIB;
    cfg->shutdown_timeout_ms = 30 * 1000;
    cfg->max_rpc_message = 0; /* the body limit */
    cfg->rpc_max_inflight = 16;
    cfg->preload = NULL;
    cfg->n_preload = 0;
    cfg->n_models = 0;
}

int config_load(struct config *cfg, int argc, char **argv, char **envp, char *errbuf,
                size_t errlen)
{
    struct load ld = {cfg, errbuf, errlen};
    struct flag_item *items = NULL;
    int n_items = 0;
    int rc = -1;

    config_defaults(cfg);
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (argc < 0)
        argc = 0;
    items = config__xmalloc((size_t)argc * sizeof *items);
    if (flags_parse(&ld, argc, argv, items, &n_items) < 0)
        goto fail;

    const char *path = NULL;
    for (int i = 0; i < n_items; i++)
        if (items[i].kind == FLAG_CONFIG)
            path = items[i].value;
    if (!path) {
        path = env_get(envp, "CORRAL_CONFIG");
        if (path && !*path)
            path = NULL;
    }
    if (path) {
        cfg->config_path = config__xstrdup(path);
        if (config__file_load(&ld, cfg->config_path) < 0)
            goto fail;
    }
    if (env_apply(&ld, envp) < 0)
        goto fail;
    if (flags_apply(&ld, items, n_items) < 0)
        goto fail;

    /* Only a [model.ID] section can leave a model without a path, and a later
     * --model or CORRAL_MODELS entry may still have supplied one. A child
     * (command) or upstream model needs none; it cannot be both. */
    for (int i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        const char *src = cfg->config_path ? cfg->config_path : "config";
        if (m->command && m->upstream) {
            config__fail(&ld, "%s: [model.%s]: command and upstream exclude each other", src, m->id);
            goto fail;
        }
        if (!m->path && !m->command && !m->upstream) {
            config__fail(&ld, "%s: [model.%s]: path is required (or command, or upstream)", src, m->id);
            goto fail;
        }
        if (m->health_path && m->health_path[0] != '/') {
            config__fail(&ld, "%s: [model.%s] health_path: expected a path starting with /, got \"%s\"", src, m->id,
                 m->health_path);
            goto fail;
        }
    }
    rc = 0;
fail:
    free(items);
    return rc;
}

void config_model_init(struct config_model *m)
{
    memset(m, 0, sizeof *m);
    m->parallel = m->ctx = m->threads = m->n_gpu_layers = m->batch = -1;
    m->flash_attn = CONFIG_INHERIT;
    m->keep_alive_ms = CONFIG_KEEP_ALIVE_INHERIT;
    m->startup_timeout_ms = 120 * 1000;
}

void config_model_resolve(const struct config *cfg, const struct config_model *in,
                          struct config_model *out)
{
    *out = *in; /* strings are borrowed from *in */
    if (out->parallel < 0)
        out->parallel = cfg->parallel;
    if (out->ctx < 0)
        out->ctx = cfg->ctx;
    if (out->threads < 0)
        out->threads = cfg->threads;
    if (out->n_gpu_layers < 0)
        out->n_gpu_layers = cfg->n_gpu_layers;
    if (out->batch < 0)
        out->batch = cfg->batch;
    if (out->flash_attn == CONFIG_INHERIT)
        out->flash_attn = cfg->flash_attn;
    if (out->keep_alive_ms < CONFIG_KEEP_ALIVE_FOREVER)
        out->keep_alive_ms = cfg->keep_alive_ms;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    free(cfg->host);
    free(cfg->api_key);
    free(cfg->admin_api_key);
    cfg->admin_api_key = NULL;
    free(cfg->log_level);
    free(cfg->config_path);
    free(cfg->models_dir);
    free(cfg->ollama_models);
    free(cfg->hf_cache);
    free(cfg->log_format);
    cfg->ollama_models = cfg->hf_cache = cfg->log_format = NULL;
    free(cfg->max_concurrent_env);
    free(cfg->pressure_file);
    free(cfg->meminfo_file);
    free(cfg->state_dir);
    free(cfg->cors_origins);
    free(cfg->allowed_hosts);
    cfg->cors_origins = cfg->allowed_hosts = NULL;
    cfg->host = cfg->api_key = cfg->log_level = cfg->config_path = cfg->models_dir = NULL;
    cfg->max_concurrent_env = cfg->pressure_file = cfg->meminfo_file = cfg->state_dir = NULL;
    for (int i = 0; i < cfg->n_preload; i++)
        free(cfg->preload[i]);
    free(cfg->preload);
    cfg->preload = NULL;
    cfg->n_preload = 0;
    for (int i = 0; i < cfg->n_models && i < CONFIG_MAX_MODELS; i++) {
        struct config_model *m = &cfg->models[i];
        free(m->path);
        free(m->chat_template);
        free(m->chat_template_kwargs);
        free(m->command);
        free(m->health_path);
        free(m->upstream);
        free(m->upstream_model);
        free(m->upstream_api_key);
        m->path = m->chat_template = m->chat_template_kwargs = m->command = m->health_path = NULL;
        m->upstream = m->upstream_model = m->upstream_api_key = NULL;
    }
    cfg->n_models = 0;
}
