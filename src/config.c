/* config.c - configuration from defaults, an INI file, CORRAL_* environment
 * variables and command-line flags, each value validated where it is read.
 *
 * DESIGN: every server setting is one row of server_opts[] (INI key, env
 * variable, flag, type, range, field offset), and every [model.ID] key one row
 * of model_opts[]; one function (opt_apply) parses and range-checks a value
 * for any row, so the INI file, the environment and the flags share one
 * validator and one message format: "SOURCE: expected ..., got \"VALUE\"".
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
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)
#define TIB (1024ULL * 1024 * 1024 * 1024) /* unsigned long long: > 32-bit size_t */

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
    SOPT("models_dir", "CORRAL_MODELS_DIR", "--models-dir", OPT_STR_NULL, models_dir, 0, 0),
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

/* ------------------------------------------------------------ small helpers */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("corral: out of memory reading the configuration\n", stderr);
        abort();
    }
    return p;
}

/* Returns a malloc'd copy of s[0..n). */
static char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fputs("corral: out of memory reading the configuration\n", stderr);
        abort();
    }
    return p;
}

/* Replace *slot (owned) by a copy of s, or by NULL when s is NULL. */
static void set_str(char **slot, const char *s)
{
    free(*slot);
    *slot = s ? xstrdup(s) : NULL;
}

/* Write a printable, length-limited copy of v into out for use inside quotes
 * in an error message: control characters become '?', a long value ends in
 * "...". */
static const char *quote(const char *v, char *out, size_t outlen)
{
    const size_t keep = outlen - 4; /* room for "..." and NUL */
    size_t i;
    for (i = 0; v[i] && i < keep; i++)
        out[i] = (iscntrl((unsigned char)v[i]) || v[i] == '"') ? '?' : v[i];
    if (v[i])
        memcpy(out + i, "...", 4);
    else
        out[i] = '\0';
    return out;
}

/* Format a size in the largest unit that divides it exactly ("1K", "8M"). */
static const char *size_str(unsigned long long n, char *out, size_t outlen)
{
    if (n && n % TIB == 0)
        snprintf(out, outlen, "%lluT", n / TIB);
    else if (n && n % GIB == 0)
        snprintf(out, outlen, "%lluG", n / GIB);
    else if (n && n % MIB == 0)
        snprintf(out, outlen, "%lluM", n / MIB);
    else if (n && n % KIB == 0)
        snprintf(out, outlen, "%lluK", n / KIB);
    else
        snprintf(out, outlen, "%llu", n);
    return out;
}

/* Strict decimal integer: optional sign, digits, nothing else. */
static int parse_ll(const char *s, long long *out)
{
    char *end;
    if (!*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

/* true/false, yes/no, on/off, 1/0 in any case. */
static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* config_parse_size, plus a T suffix ("1T", "2TB", "2TiB", any case of t). */
static int parse_size_t(const char *s, size_t *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    if (*end != 't' && *end != 'T')
        return config_parse_size(s, out);
    end++;
    if (*end == 'i' && end[1] == 'B')
        end += 2;
    else if (*end == 'B')
        end++;
    if (*end || v > SIZE_MAX / TIB)
        return -1;
    *out = (size_t)(v * TIB);
    return 0;
}

/* [A-Za-z0-9._:-]{1,127} */
static bool model_id_valid(const char *id, size_t len)
{
    if (len == 0 || len >= CONFIG_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
            return false;
    }
    return true;
}

#define MODEL_ID_RULE "1..127 characters of A-Z a-z 0-9 . _ : -"

/* ------------------------------------------------------------ load state */

struct load {
    struct config *cfg;
    char *err; /* caller's buffer, may be NULL */
    size_t errlen;
};

/* Write the error message (always overwrites) and return -1. */
__attribute__((format(printf, 2, 3))) static int fail(struct load *ld, const char *fmt, ...)
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
        if (parse_ll(value, &v) < 0 || v < o->min || v > o->max)
            return fail(ld, "%s: expected an integer in %lld..%lld, got \"%s\"", src, o->min,
                        o->max, quote(value, q, sizeof q));
        *(int *)(void *)field = (int)v;
        return 0;
    }
    case OPT_SIZE: {
        size_t v;
        if (config_parse_size(value, &v) < 0 || v < (unsigned long long)o->min ||
            v > (unsigned long long)o->max)
            return fail(ld, "%s: expected a size in %s..%s, got \"%s\"",
                        src, size_str((unsigned long long)o->min, a, sizeof a),
                        size_str((unsigned long long)o->max, b, sizeof b),
                        quote(value, q, sizeof q));
        *(size_t *)(void *)field = v;
        return 0;
    }
    case OPT_STR:
        if (!*value)
            return fail(ld, "%s: expected a non-empty value", src);
        set_str((char **)(void *)field, value);
        return 0;
    case OPT_STR_NULL:
        set_str((char **)(void *)field, *value ? value : NULL);
        return 0;
    case OPT_LOG_LEVEL:
        for (size_t i = 0; i < sizeof log_levels / sizeof log_levels[0]; i++) {
            if (strcmp(value, log_levels[i]) == 0) {
                set_str((char **)(void *)field, value);
                return 0;
            }
        }
        return fail(ld, "%s: expected one of debug, info, warn, error, off, got \"%s\"", src,
                    quote(value, q, sizeof q));
    case OPT_AUTO_BOOL: {
        bool v;
        if (strcasecmp(value, "auto") == 0) {
            *(int *)(void *)field = CONFIG_AUTO;
            return 0;
        }
        if (parse_bool(value, &v) < 0)
            return fail(ld, "%s: expected auto, on or off, got \"%s\"", src, quote(value, q, sizeof q));
        *(int *)(void *)field = v;
        return 0;
    }
    case OPT_BOOL: {
        bool v;
        if (parse_bool(value, &v) < 0)
            return fail(ld, "%s: expected a boolean, got \"%s\"", src,
                        quote(value, q, sizeof q));
        *(bool *)(void *)field = v;
        return 0;
    }
    case OPT_DURATION: {
        int64_t v;
        if (config_parse_duration(value, &v) < 0 || v < o->min || v > o->max)
            return fail(ld, "%s: expected %s, got \"%s\"", src,
                        o->min < 0    ? "a duration (seconds, or with s/m/h; -1 = forever)"
                        : o->min == 0 ? "a duration (seconds, or with s/m/h)"
                                      : "a positive duration (seconds, or with s/m/h)",
                        quote(value, q, sizeof q));
        *(int64_t *)(void *)field = v;
        return 0;
    }
    case OPT_SIZE_AUTO: {
        size_t v = 0;
        if (strcasecmp(value, "auto") != 0 &&
            (parse_size_t(value, &v) < 0 ||
             (v != 0 && (v < (unsigned long long)o->min || v > (unsigned long long)o->max))))
            return fail(ld, "%s: expected a size in %s..%s (or 0/auto), got \"%s\"", src,
                        size_str((unsigned long long)o->min, a, sizeof a),
                        size_str((unsigned long long)o->max, b, sizeof b),
                        quote(value, q, sizeof q));
        *(size_t *)(void *)field = v;
        return 0;
    }
    case OPT_SIZE_OR_AUTO: {
        size_t v = CONFIG_SIZE_AUTO;
        if (strcasecmp(value, "auto") != 0 &&
            (parse_size_t(value, &v) < 0 || v < (unsigned long long)o->min || v > (unsigned long long)o->max))
            return fail(ld, "%s: expected auto or a size in %s..%s, got \"%s\"", src,
                        size_str((unsigned long long)o->min, a, sizeof a),
                        size_str((unsigned long long)o->max, b, sizeof b),
                        quote(value, q, sizeof q));
        *(size_t *)(void *)field = v;
        return 0;
    }
    }
    return fail(ld, "%s: internal error: bad option type", src);
}

static const struct opt *opt_find(const struct opt *opts, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(opts[i].key, key) == 0)
            return &opts[i];
    return NULL;
}

static int model_find(const struct config *cfg, const char *id, size_t len)
{
    for (int i = 0; i < cfg->n_models; i++)
        if (strlen(cfg->models[i].id) == len && memcmp(cfg->models[i].id, id, len) == 0)
            return i;
    return -1;
}

/* Append a model with everything inherited. id must be valid. Returns its
 * index, or -1 (message written, naming src) when the table is full. */
static int model_add(struct load *ld, const char *id, size_t len, const char *src)
{
    struct config *cfg = ld->cfg;
    if (cfg->n_models >= CONFIG_MAX_MODELS)
        return fail(ld, "%s: too many models (at most %d)", src, CONFIG_MAX_MODELS);
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
        return fail(ld, "%s: expected ID=PATH, got \"%s\"", src, quote(spec, q, sizeof q));
    size_t idlen = (size_t)(eq - spec);
    if (!model_id_valid(spec, idlen)) {
        char id[CONFIG_ID_MAX + 8];
        snprintf(id, sizeof id, "%.*s", (int)(idlen < CONFIG_ID_MAX ? idlen : CONFIG_ID_MAX),
                 spec);
        return fail(ld, "%s: invalid model id \"%s\" (expected " MODEL_ID_RULE ")", src,
                    quote(id, q, sizeof q));
    }
    int i = model_find(ld->cfg, spec, idlen);
    if (i < 0)
        i = model_add(ld, spec, idlen, src);
    if (i < 0)
        return -1;
    set_str(&ld->cfg->models[i].path, eq + 1);
    return 0;
}

/* Add one id to cfg->preload (a repeat is ignored). The id must be valid but
 * need not name a configured model. */
static int preload_add(struct load *ld, const char *id, const char *src)
{
    struct config *cfg = ld->cfg;
    char q[80];
    size_t len = strlen(id);
    if (!model_id_valid(id, len)) {
        char cut[CONFIG_ID_MAX + 8];
        snprintf(cut, sizeof cut, "%.*s", (int)(len < CONFIG_ID_MAX ? len : CONFIG_ID_MAX), id);
        return fail(ld, "%s: invalid model id \"%s\" (expected " MODEL_ID_RULE ")", src,
                    quote(cut, q, sizeof q));
    }
    for (int i = 0; i < cfg->n_preload; i++)
        if (strcmp(cfg->preload[i], id) == 0)
            return 0;
    cfg->preload = xrealloc(cfg->preload, ((size_t)cfg->n_preload + 1) * sizeof *cfg->preload);
    cfg->preload[cfg->n_preload++] = xstrdup(id);
    return 0;
}

/* ------------------------------------------------------------ INI file */

enum ini_section { SEC_NONE, SEC_SERVER, SEC_MODEL };

struct ini_ctx {
    struct load *ld;
    const char *file;
    FILE *fp;
    char *line; /* getline buffer, owned */
    size_t cap;
    int lineno;    /* physical line last read */
    int err_line;  /* line of our first error, 0 = none yet */
    int read_errno;
    enum ini_section sec;
    int model; /* index in cfg->models when sec == SEC_MODEL */
    int server_line;
    int model_line[CONFIG_MAX_MODELS]; /* line of each model's section */
};

__attribute__((format(printf, 2, 3))) static void ini_fail(struct ini_ctx *ic, const char *fmt,
                                                           ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ic->err_line = ic->lineno;
    fail(ic->ld, "%s:%d: %s", ic->file, ic->lineno, msg);
}

/* A "[name]" line (s is trimmed, len > 0, s[0] == '['). */
static void ini_section_line(struct ini_ctx *ic, char *s, size_t len)
{
    char q[80];
    char *close = memchr(s, ']', len);
    if (!close) {
        ini_fail(ic, "syntax error");
        return;
    }
    /* after ']' only a comment may follow */
    const char *rest = close + 1;
    while (isspace((unsigned char)*rest))
        rest++;
    if (*rest && *rest != ';' && *rest != '#') {
        ini_fail(ic, "syntax error");
        return;
    }
    char *name = s + 1;
    *close = '\0';
    while (isspace((unsigned char)*name))
        name++;
    for (char *e = close; e > name && isspace((unsigned char)e[-1]);)
        *--e = '\0';

    if (strcmp(name, "server") == 0) {
        if (ic->server_line) {
            ini_fail(ic, "duplicate section [server] (first on line %d)", ic->server_line);
            return;
        }
        ic->server_line = ic->lineno;
        ic->sec = SEC_SERVER;
        return;
    }
    if (strncmp(name, "model.", 6) == 0) {
        const char *id = name + 6;
        size_t idlen = strlen(id);
        if (!model_id_valid(id, idlen)) {
            ini_fail(ic, "invalid model id \"%s\" (expected " MODEL_ID_RULE ")",
                     quote(id, q, sizeof q));
            return;
        }
        int i = model_find(ic->ld->cfg, id, idlen);
        if (i >= 0) {
            ini_fail(ic, "duplicate section [model.%s] (first on line %d)", id,
                     ic->model_line[i]);
            return;
        }
        if (ic->ld->cfg->n_models >= CONFIG_MAX_MODELS) {
            ini_fail(ic, "[model.%s]: too many models (at most %d)", id, CONFIG_MAX_MODELS);
            return;
        }
        i = model_add(ic->ld, id, idlen, ic->file);
        ic->model_line[i] = ic->lineno;
        ic->model = i;
        ic->sec = SEC_MODEL;
        return;
    }
    ini_fail(ic, "unknown section [%s] (expected [server] or [model.ID])",
             quote(name, q, sizeof q));
}

/* inih reader: one physical line per call, see DESIGN. */
static char *ini_read_line(char *str, int num, void *stream)
{
    struct ini_ctx *ic = stream;
    if (ic->err_line)
        return NULL;
    errno = 0;
    ssize_t n = getline(&ic->line, &ic->cap, ic->fp);
    if (n < 0) {
        if (ferror(ic->fp))
            ic->read_errno = errno ? errno : EIO;
        return NULL;
    }
    ic->lineno++;
    char *s = ic->line;
    size_t len = (size_t)n;
    if (memchr(s, '\0', len)) {
        ini_fail(ic, "syntax error (NUL byte)");
        return NULL;
    }
    if (ic->lineno == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        len -= 3;
    }
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    s[len] = '\0';

    str[0] = '\0'; /* what inih sees for blank, comment and section lines */
    if (len == 0 || *s == ';' || *s == '#')
        return str;
    if (*s == '[') {
        ini_section_line(ic, s, len);
        return ic->err_line ? NULL : str;
    }
    if (num < 2 || len > (size_t)num - 1) {
        ini_fail(ic, "line too long (%zu characters, at most %d)", len, num < 2 ? 0 : num - 1);
        return NULL;
    }
    memcpy(str, s, len + 1);
    return str;
}

/* inih handler: one "name = value" line; the section is ours, not inih's. */
static int ini_on_key(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *ic = user;
    struct config *cfg = ic->ld->cfg;
    char src[1024], q[80];
    const struct opt *o;

    (void)section;
    if (ic->err_line)
        return 1;
    if (!value)
        value = "";
    switch (ic->sec) {
    case SEC_NONE:
        ini_fail(ic, "%s: key outside any section (expected [server] or [model.ID] first)",
                 quote(name, q, sizeof q));
        return 0;
    case SEC_SERVER:
        o = opt_find(server_opts, N_SERVER_OPTS, name);
        if (!o) {
            ini_fail(ic, "[server] %s: unknown key", quote(name, q, sizeof q));
            return 0;
        }
        snprintf(src, sizeof src, "%s:%d: [server] %s", ic->file, ic->lineno, name);
        if (opt_apply(ic->ld, o, cfg, value, src) < 0) {
            ic->err_line = ic->lineno;
            return 0;
        }
        return 1;
    case SEC_MODEL: {
        struct config_model *m = &cfg->models[ic->model];
        o = opt_find(model_opts, N_MODEL_OPTS, name);
        if (!o) {
            ini_fail(ic, "[model.%s] %s: unknown key", m->id, quote(name, q, sizeof q));
            return 0;
        }
        snprintf(src, sizeof src, "%s:%d: [model.%s] %s", ic->file, ic->lineno, m->id, name);
        if (opt_apply(ic->ld, o, m, value, src) < 0) {
            ic->err_line = ic->lineno;
            return 0;
        }
        return 1;
    }
    }
    return 0;
}

static int file_load(struct load *ld, const char *path)
{
    struct ini_ctx *ic = xmalloc(sizeof *ic);
    int rc = -1;

    memset(ic, 0, sizeof *ic);
    ic->ld = ld;
    ic->file = path;
    ic->fp = fopen(path, "r");
    if (!ic->fp) {
        fail(ld, "%s: cannot read config file: %s", path, strerror(errno));
        goto fail;
    }
    int ret = ini_parse_stream(ini_read_line, ic, ini_on_key, ic);
    if (ic->read_errno) {
        fail(ld, "%s: cannot read config file: %s", path, strerror(ic->read_errno));
        goto fail;
    }
    if (ret > 0 && ret != ic->err_line) { /* inih's syntax error comes first */
        fail(ld, "%s:%d: syntax error", path, ret);
        goto fail;
    }
    if (ic->err_line)
        goto fail; /* message already written */
    if (ret < 0) {
        fail(ld, "%s: cannot parse config file (inih error %d)", path, ret);
        goto fail;
    }
    rc = 0;
fail:
    if (ic->fp)
        fclose(ic->fp);
    free(ic->line);
    free(ic);
    return rc;
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

/* A comma-separated list from variable src: fn gets each item with blanks
 * around it removed; empty items are ignored. */
static int env_list_apply(struct load *ld, const char *list, const char *src,
                          int (*fn)(struct load *, const char *, const char *))
{
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (a < b) {
            char *item = xstrndup(a, (size_t)(b - a));
            int rc = fn(ld, item, src);
            free(item);
            if (rc < 0)
                return -1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
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
        ld->cfg->max_concurrent_env = xstrdup(mc);
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
            return fail(ld, "unexpected argument \"%s\"", quote(arg, q, sizeof q));
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
            return fail(ld, "unknown flag \"%s\"", quote(flag, q, sizeof q));
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return fail(ld, "%s: missing value", name);
        }
        if (kind == FLAG_CONFIG && !*value)
            return fail(ld, "--config: expected a file path, got \"\"");
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

    cfg->host = xstrdup("127.0.0.1");
    cfg->port = 8080;
    cfg->threads = (int)ncpu;
    cfg->http_threads = 2;
    cfg->parallel = 4;
    cfg->ctx = 2048;
    cfg->batch = 512;
    cfg->n_gpu_layers = 0;
    cfg->flash_attn = CONFIG_AUTO;
    cfg->prompt_cache = CONFIG_SIZE_AUTO;
    cfg->queue_size = 64;
    cfg->body_limit = 8 * MIB;
    cfg->api_key = NULL;
    cfg->admin_api_key = NULL;
    cfg->log_level = xstrdup("info");
    cfg->config_path = NULL;
    cfg->models_dir = NULL;
    cfg->memory_budget = 0; /* auto */
    cfg->max_models = 8;
    cfg->keep_alive_ms = 5 * 60 * 1000;
    cfg->load_timeout_ms = 120 * 1000;
    cfg->max_concurrent = 0; /* auto */
    cfg->max_concurrent_env = NULL;
    cfg->queue_timeout_ms = 60 * 1000;
    cfg->pressure_file = xstrdup("/proc/pressure/memory");
    cfg->meminfo_file = xstrdup("/proc/meminfo");
    cfg->state_dir = NULL;
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
    items = xmalloc((size_t)argc * sizeof *items);
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
        cfg->config_path = xstrdup(path);
        if (file_load(&ld, cfg->config_path) < 0)
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
            fail(&ld, "%s: [model.%s]: command and upstream exclude each other", src, m->id);
            goto fail;
        }
        if (!m->path && !m->command && !m->upstream) {
            fail(&ld, "%s: [model.%s]: path is required (or command, or upstream)", src, m->id);
            goto fail;
        }
        if (m->health_path && m->health_path[0] != '/') {
            fail(&ld, "%s: [model.%s] health_path: expected a path starting with /, got \"%s\"", src, m->id,
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

int config_parse_duration(const char *s, int64_t *ms_out)
{
    if (!s)
        return -1;
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 2 && s[0] == '-' && s[1] == '1') {
        *ms_out = CONFIG_KEEP_ALIVE_FOREVER;
        return 0;
    }
    size_t i = 0;
    int64_t v = 0;
    for (; i < len && isdigit((unsigned char)s[i]); i++) {
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (i == 0)
        return -1; /* empty, a sign, or a unit alone */
    int64_t mul = 1000;
    if (i < len) {
        switch (s[i]) {
        case 's': case 'S': mul = 1000; break;
        case 'm': case 'M': mul = 60 * 1000; break;
        case 'h': case 'H': mul = 60 * 60 * 1000; break;
        default: return -1;
        }
        i++;
    }
    if (i != len || v > INT64_MAX / mul)
        return -1;
    *ms_out = v * mul;
    return 0;
}

int config_parse_size(const char *s, size_t *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return -1; /* no sign, no blanks, not empty */
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    unsigned long long mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = KIB; end++; break;
    case 'm': case 'M': mul = MIB; end++; break;
    case 'g': case 'G': mul = GIB; end++; break;
    default: break;
    }
    if (mul > 1 && *end == 'i' && end[1] == 'B')
        end += 2;
    else if (*end == 'B')
        end++;
    if (*end)
        return -1;
    if (v > SIZE_MAX / mul)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
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
    free(cfg->max_concurrent_env);
    free(cfg->pressure_file);
    free(cfg->meminfo_file);
    free(cfg->state_dir);
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
        free(m->command);
        free(m->health_path);
        free(m->upstream);
        free(m->upstream_model);
        free(m->upstream_api_key);
        m->path = m->chat_template = m->command = m->health_path = NULL;
        m->upstream = m->upstream_model = m->upstream_api_key = NULL;
    }
    cfg->n_models = 0;
}
