/* test_config.c - unit tests for config.c: defaults, the INI file, the
 * environment, flags, their precedence, and every validation message. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* ------------------------------------------------------------ helpers */

/* Write content to a new file under /tmp; returns its malloc'd path. */
static char *tmp_write(const char *content)
{
    char tmpl[] = "/tmp/corral_test_config_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    size_t len = strlen(content);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    char *path = strdup(tmpl);
    assert_non_null(path);
    return path;
}

static void tmp_remove(char *path)
{
    unlink(path);
    free(path);
}

static char *no_env[] = {NULL};

/* Load with argv given as a NULL-terminated list. */
static int load(struct config *cfg, char **argv, char **envp, char *err, size_t errlen)
{
    int argc = 0;
    while (argv && argv[argc])
        argc++;
    return config_load(cfg, argc, argv, envp, err, errlen);
}

/* Load file content through --config; expect failure with a message that
 * starts with "PATH:LINE: " (line 0: "PATH: ") and contains every needle. */
static void expect_file_error(const char *content, int line, const char *n1, const char *n2)
{
    char *path = tmp_write(content);
    char *argv[] = {"--config", path, NULL};
    char err[512], prefix[256];
    struct config cfg;

    int rc = load(&cfg, argv, no_env, err, sizeof err);
    if (line > 0)
        snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    else
        snprintf(prefix, sizeof prefix, "%s: ", path);
    if (rc != -1 || strncmp(err, prefix, strlen(prefix)) != 0 || (n1 && !strstr(err, n1)) ||
        (n2 && !strstr(err, n2)))
        fail_msg("file:\n%s\nrc=%d err=\"%s\"\nwant prefix \"%s\" and \"%s\", \"%s\"", content,
                 rc, err, prefix, n1 ? n1 : "", n2 ? n2 : "");
    config_free(&cfg);
    tmp_remove(path);
}

/* Expect config_load(argv, envp) to fail with exactly the message want. */
static void expect_error_exact(char **argv, char **envp, const char *want)
{
    char err[512];
    struct config cfg;
    int rc = load(&cfg, argv, envp, err, sizeof err);
    assert_int_equal(rc, -1);
    assert_string_equal(err, want);
    config_free(&cfg);
}

static void expect_error_contains(char **argv, char **envp, const char *n1, const char *n2)
{
    char err[512];
    struct config cfg;
    int rc = load(&cfg, argv, envp, err, sizeof err);
    assert_int_equal(rc, -1);
    if (n1 && !strstr(err, n1))
        fail_msg("err=\"%s\" lacks \"%s\"", err, n1);
    if (n2 && !strstr(err, n2))
        fail_msg("err=\"%s\" lacks \"%s\"", err, n2);
    config_free(&cfg);
}

static const struct config_model *find_model(const struct config *cfg, const char *id)
{
    for (int i = 0; i < cfg->n_models; i++)
        if (strcmp(cfg->models[i].id, id) == 0)
            return &cfg->models[i];
    return NULL;
}

/* ------------------------------------------------------------ defaults */

static void test_defaults(void **state)
{
    (void)state;
    struct config cfg;
    char err[256] = "untouched";
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    if (ncpu > 1024)
        ncpu = 1024;

    assert_int_equal(config_load(&cfg, 0, NULL, no_env, err, sizeof err), 0);
    assert_string_equal(cfg.host, "127.0.0.1");
    assert_int_equal(cfg.port, 8080);
    assert_int_equal(cfg.threads, ncpu);
    assert_int_equal(cfg.http_threads, 2);
    assert_int_equal(cfg.parallel, 4);
    assert_int_equal(cfg.ctx, 2048);
    assert_int_equal(cfg.batch, 512);
    assert_int_equal(cfg.prompt_stall_ms, 200);
    assert_int_equal(cfg.n_gpu_layers, 0);
    assert_int_equal(cfg.queue_size, 64);
    assert_int_equal(cfg.body_limit, 8u * 1024 * 1024);
    assert_null(cfg.api_key);
    assert_string_equal(cfg.log_level, "info");
    assert_null(cfg.config_path);
    assert_null(cfg.models_dir);
    assert_int_equal(cfg.memory_budget, 0); /* auto */
    assert_int_equal(cfg.max_models, 8);
    assert_int_equal(cfg.keep_alive_ms, 5 * 60 * 1000);
    assert_int_equal(cfg.load_timeout_ms, 120 * 1000);
    assert_null(cfg.preload);
    assert_int_equal(cfg.n_preload, 0);
    assert_int_equal(cfg.n_models, 0);
    config_free(&cfg);
    config_free(&cfg); /* idempotent */

    /* NULL envp is an empty environment; defaults alone free cleanly */
    assert_int_equal(config_load(&cfg, 0, NULL, NULL, err, sizeof err), 0);
    config_free(&cfg);
    config_defaults(&cfg);
    assert_int_equal(cfg.port, 8080);
    config_free(&cfg);
}

/* ------------------------------------------------------------ full file */

static const char *full_ini =
    "\xEF\xBB\xBF[server]\n" /* a UTF-8 BOM before the first section */
    "; corral test configuration\n"
    "# another comment\n"
    "\n"
    "host = 0.0.0.0\n"
    "port = 9000\n"
    "threads = 3\n"
    "http_threads = 4\n"
    "parallel = 8 ; inline comment\n"
    "ctx = 4096\n"
    "batch = 256\n"
    "prompt_stall_ms = 0\n"
    "n_gpu_layers = 99\n"
    "queue_size = 0\n"
    "body_limit = 64k\n"
    "api_key = s3cret;x\n"
    "log_level = debug\n"
    "models_dir = /srv/models\n"
    "memory_budget = 8G\n"
    "max_models = 3\n"
    "keep_alive = 10m\n"
    "load_timeout = 45\n"
    "\n"
    "  [model.llama-3.1:8b_Q4]  ; indented header\n"
    "    path = /models/llama.gguf\n"
    "    ctx = 8192\n"
    "    parallel = 2\n"
    "    threads = 5\n"
    "    n_gpu_layers = 10\n"
    "    batch = 64\n"
    "    chat_template = chatml\n"
    "    preload = Yes\n"
    "    keep_alive = -1\n"
    "[model.tiny]\r\n"
    "path: /models/tiny.gguf\r\n";

static void test_full_file(void **state)
{
    (void)state;
    char *path = tmp_write(full_ini);
    char *argv[] = {"--config", path, NULL};
    char err[512] = "";
    struct config cfg;

    int rc = load(&cfg, argv, no_env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_string_equal(cfg.config_path, path);
    assert_string_equal(cfg.host, "0.0.0.0");
    assert_int_equal(cfg.port, 9000);
    assert_int_equal(cfg.threads, 3);
    assert_int_equal(cfg.http_threads, 4);
    assert_int_equal(cfg.parallel, 8);
    assert_int_equal(cfg.ctx, 4096);
    assert_int_equal(cfg.batch, 256);
    assert_int_equal(cfg.prompt_stall_ms, 0);
    assert_int_equal(cfg.n_gpu_layers, 99);
    assert_int_equal(cfg.queue_size, 0);
    assert_int_equal(cfg.body_limit, 65536);
    assert_string_equal(cfg.api_key, "s3cret;x");
    assert_string_equal(cfg.log_level, "debug");
    assert_string_equal(cfg.models_dir, "/srv/models");
    assert_int_equal(cfg.memory_budget, 8ull << 30);
    assert_int_equal(cfg.max_models, 3);
    assert_int_equal(cfg.keep_alive_ms, 600000);
    assert_int_equal(cfg.load_timeout_ms, 45000);
    assert_int_equal(cfg.n_preload, 0);
    assert_int_equal(cfg.n_models, 2);

    const struct config_model *m = &cfg.models[0];
    assert_string_equal(m->id, "llama-3.1:8b_Q4");
    assert_string_equal(m->path, "/models/llama.gguf");
    assert_int_equal(m->ctx, 8192);
    assert_int_equal(m->parallel, 2);
    assert_int_equal(m->threads, 5);
    assert_int_equal(m->n_gpu_layers, 10);
    assert_int_equal(m->batch, 64);
    assert_string_equal(m->chat_template, "chatml");
    assert_true(m->preload);
    assert_int_equal(m->keep_alive_ms, -1);

    m = &cfg.models[1];
    assert_string_equal(m->id, "tiny");
    assert_string_equal(m->path, "/models/tiny.gguf");
    assert_int_equal(m->ctx, -1);
    assert_int_equal(m->parallel, -1);
    assert_int_equal(m->threads, -1);
    assert_int_equal(m->n_gpu_layers, -1);
    assert_int_equal(m->batch, -1);
    assert_null(m->chat_template);
    assert_false(m->preload);
    assert_int_equal(m->keep_alive_ms, CONFIG_KEEP_ALIVE_INHERIT);

    config_free(&cfg);
    tmp_remove(path);
}

static void test_long_model_id(void **state)
{
    (void)state;
    /* 127 characters: longer than inih's own section-name buffer */
    char id[128], ini[512];
    for (int i = 0; i < 127; i++)
        id[i] = "abcdefghij"[i % 10];
    id[127] = '\0';
    snprintf(ini, sizeof ini, "[model.%s]\npath = /m.gguf\nctx = 64\n", id);
    char *path = tmp_write(ini);
    char *argv[] = {"--config", path, NULL};
    char err[512] = "";
    struct config cfg;
    int rc = load(&cfg, argv, no_env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(cfg.n_models, 1);
    assert_string_equal(cfg.models[0].id, id);
    assert_int_equal(cfg.models[0].ctx, 64);
    config_free(&cfg);
    tmp_remove(path);

    /* 128 characters is refused */
    snprintf(ini, sizeof ini, "[model.%sx]\npath = /m.gguf\n", id);
    expect_file_error(ini, 1, "invalid model id", NULL);
}

/* ------------------------------------------------------------ file errors */

static void test_file_value_errors(void **state)
{
    (void)state;
    static const struct {
        const char *ini;
        int line;
        const char *n1, *n2;
    } cases[] = {
        {"[server]\nport = abc\n", 2,
         "[server] port: expected an integer in 0..65535, got \"abc\"", NULL},
        {"[server]\nport = 65536\n", 2, "[server] port", "0..65535, got \"65536\""},
        {"[server]\nport = -1\n", 2, "[server] port", "got \"-1\""},
        {"[server]\nport = 80x\n", 2, "[server] port", "got \"80x\""},
        {"[server]\nport = 99999999999999999999\n", 2, "[server] port", "got \"9999"},
        {"[server]\nport = 0x50\n", 2, "[server] port", "got \"0x50\""},
        {"[server]\nport =\n", 2, "[server] port", "got \"\""},
        {"[server]\nthreads = 0\n", 2, "[server] threads", "1..1024, got \"0\""},
        {"[server]\nthreads = 1025\n", 2, "[server] threads", "1..1024"},
        {"[server]\nhttp_threads = 65\n", 2, "[server] http_threads", "1..64, got \"65\""},
        {"[server]\nparallel = 0\n", 2, "[server] parallel", "1..256, got \"0\""},
        {"[server]\nparallel = 257\n", 2, "[server] parallel", "1..256"},
        {"[server]\nctx = 15\n", 2, "[server] ctx", "16..1048576, got \"15\""},
        {"[server]\nctx = 1048577\n", 2, "[server] ctx", "16..1048576"},
        {"[server]\nbatch = 65537\n", 2, "[server] batch", "16..65536, got \"65537\""},
        {"[server]\nprompt_stall_ms = -1\n", 2, "[server] prompt_stall_ms", "0..600000"},
        {"[server]\nn_gpu_layers = -1\n", 2, "[server] n_gpu_layers", "0..100000"},
        {"[server]\nqueue_size = 100001\n", 2, "[server] queue_size", "0..100000"},
        {"[server]\nbody_limit = 512\n", 2, "[server] body_limit", "1K..1G, got \"512\""},
        {"[server]\nbody_limit = 2G\n", 2, "[server] body_limit", "got \"2G\""},
        {"[server]\nbody_limit = 8X\n", 2, "[server] body_limit", "got \"8X\""},
        {"[server]\nbody_limit = -8M\n", 2, "[server] body_limit", "got \"-8M\""},
        {"[server]\nlog_level = loud\n", 2, "[server] log_level", "got \"loud\""},
        {"[server]\nhost =\n", 2, "[server] host", "non-empty"},
        {"; c\n\n[model.a]\npath = /a\nctx = abc\n", 5,
         "[model.a] ctx: expected an integer in 16..1048576, got \"abc\"", NULL},
        {"[model.a]\npath = /a\nparallel = 300\n", 3, "[model.a] parallel", "1..256"},
        {"[model.a]\npath = /a\nthreads = 0\n", 3, "[model.a] threads", "1..1024"},
        {"[model.a]\npath = /a\nbatch = 8\n", 3, "[model.a] batch", "16..65536"},
        {"[model.a]\npath = /a\nn_gpu_layers = -5\n", 3, "[model.a] n_gpu_layers", "0..100000"},
        {"[model.a]\npath =\n", 2, "[model.a] path", "non-empty"},
        /* newer keys */
        {"[server]\nmax_models = 0\n", 2, "[server] max_models",
         "1..1024, got \"0\""},
        {"[server]\nmax_models = 1025\n", 2, "[server] max_models", "1..1024"},
        {"[server]\nmemory_budget = 512K\n", 2,
         "[server] memory_budget: expected a size in 1M..1T (or 0/auto), got \"512K\"", NULL},
        {"[server]\nmemory_budget = 2T\n", 2, "[server] memory_budget", "got \"2T\""},
        {"[server]\nmemory_budget = automatic\n", 2, "[server] memory_budget",
         "got \"automatic\""},
        {"[server]\nmemory_budget =\n", 2, "[server] memory_budget", "got \"\""},
        {"[server]\nkeep_alive = abc\n", 2,
         "[server] keep_alive: expected a duration (seconds, or with s/m/h; -1 = forever), "
         "got \"abc\"", NULL},
        {"[server]\nkeep_alive = -2\n", 2, "[server] keep_alive", "got \"-2\""},
        {"[server]\nkeep_alive = 5d\n", 2, "[server] keep_alive", "got \"5d\""},
        {"[server]\nload_timeout = 0\n", 2,
         "[server] load_timeout: expected a positive duration (seconds, or with s/m/h), "
         "got \"0\"", NULL},
        {"[server]\nload_timeout = -1\n", 2, "[server] load_timeout", "got \"-1\""},
        {"[server]\nload_timeout = 0s\n", 2, "[server] load_timeout", "got \"0s\""},
        {"[model.a]\npath = /a\nkeep_alive = 1y\n", 3,
         "[model.a] keep_alive: expected a duration", "got \"1y\""},
        {"[model.a]\npath = /a\n\n\n\n\npreload = maybe\n", 7,
         "[model.a] preload: expected a boolean, got \"maybe\"", NULL},
        {"[model.a]\npath = /a\npreload =\n", 3, "[model.a] preload", "got \"\""},
        {"[model.a]\npath = /a\npreload = 2\n", 3, "[model.a] preload", "got \"2\""},
        {"[server]\npreload = a\n", 2, "[server] preload", "unknown key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_file_error(cases[i].ini, cases[i].line, cases[i].n1, cases[i].n2);
}

static void test_file_structure_errors(void **state)
{
    (void)state;
    expect_file_error("[server]\nport = 1\ncolour = red\n", 3, "[server] colour", "unknown key");
    expect_file_error("[model.a]\npath = /a\nport = 1\n", 3, "[model.a] port", "unknown key");
    expect_file_error("[server]\n[foo]\nport = 1\n", 2, "unknown section [foo]", NULL);
    expect_file_error("[model]\n", 1, "unknown section [model]", NULL);
    expect_file_error("port = 1\n[server]\n", 1, "port", "outside any section");
    expect_file_error("[model.a b]\npath = /a\n", 1, "invalid model id \"a b\"", NULL);
    expect_file_error("[model.]\npath = /a\n", 1, "invalid model id \"\"", NULL);
    expect_file_error("[model.a/b]\npath = /a\n", 1, "invalid model id", NULL);
    expect_file_error("[model.a]\nctx = 64\n", 0, "[model.a]: path is required", NULL);
    expect_file_error("[model.a]\npath = /a\n\n[model.a]\npath = /b\n", 4,
                      "duplicate section [model.a]", "line 1");
    expect_file_error("[server]\nport = 1\n[server]\n", 3, "duplicate section [server]",
                      "line 1");
    /* syntax errors, from inih and from our own section parsing */
    expect_file_error("[server]\nport 8080\n", 2, "syntax error", NULL);
    expect_file_error("[server\nport = 1\n", 1, "syntax error", NULL);
    expect_file_error("[server] junk\n", 1, "syntax error", NULL);
    /* the first error by line wins */
    expect_file_error("[server]\nnonsense\nport = x\n", 2, "syntax error", NULL);
    expect_file_error("[server]\nport = x\nnonsense\n", 2, "[server] port", NULL);
    /* an indented line is a key, not a continuation of the previous value */
    expect_file_error("[server]\nhost = a\n  bogus = 1\n", 3, "[server] bogus", "unknown key");

    /* a line that inih could not hold whole */
    char ini[1024];
    snprintf(ini, sizeof ini, "[model.a]\npath = /%0600d\n", 0);
    expect_file_error(ini, 2, "line too long", NULL);
}

static void test_too_many_models(void **state)
{
    (void)state;
    char *ini = calloc(1, 8192);
    assert_non_null(ini);
    size_t len = 0;
    for (int i = 0; i <= CONFIG_MAX_MODELS; i++)
        len += (size_t)snprintf(ini + len, 8192 - len, "[model.m%d]\npath = /m%d\n", i, i);
    expect_file_error(ini, 2 * CONFIG_MAX_MODELS + 1, "too many models", NULL);
    free(ini);

    /* exactly the maximum is fine, and one more from a flag is refused */
    char *argv[CONFIG_MAX_MODELS * 2 + 3];
    char specs[CONFIG_MAX_MODELS + 1][32];
    int argc = 0;
    for (int i = 0; i <= CONFIG_MAX_MODELS; i++) {
        snprintf(specs[i], sizeof specs[i], "m%d=/p%d", i, i);
        argv[argc++] = "--model";
        argv[argc++] = specs[i];
    }
    argv[argc] = NULL;
    struct config cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, argc - 2, argv, no_env, err, sizeof err), 0);
    assert_int_equal(cfg.n_models, CONFIG_MAX_MODELS);
    config_free(&cfg);
    expect_error_exact(argv, no_env, "--model: too many models (at most 64)");
}

static void test_missing_file(void **state)
{
    (void)state;
    char *argv[] = {"--config", "/nonexistent/corral.ini", NULL};
    expect_error_exact(argv, no_env,
                       "/nonexistent/corral.ini: cannot read config file: "
                       "No such file or directory");
    char *env[] = {"CORRAL_CONFIG=/nonexistent/env.ini", NULL};
    expect_error_exact(NULL, env,
                       "/nonexistent/env.ini: cannot read config file: "
                       "No such file or directory");
    char *dir[] = {"--config=/tmp", NULL};
    expect_error_contains(dir, no_env, "/tmp: cannot read config file: ", NULL);
    char *empty[] = {"--config=", NULL};
    expect_error_contains(empty, no_env, "--config", NULL);

    /* an empty CORRAL_CONFIG means no file */
    char *env_empty[] = {"CORRAL_CONFIG=", NULL};
    struct config cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, 0, NULL, env_empty, err, sizeof err), 0);
    assert_null(cfg.config_path);
    config_free(&cfg);
}

/* ------------------------------------------------------------ precedence */

static void test_env_overrides_file(void **state)
{
    (void)state;
    char *path = tmp_write("[server]\nport = 1000\nctx = 4096\nhost = filehost\n"
                           "[model.a]\npath = /file/a\nctx = 512\n");
    char cfgenv[300];
    snprintf(cfgenv, sizeof cfgenv, "CORRAL_CONFIG=%s", path);
    char *env[] = {"HOME=/root",
                   cfgenv,
                   "CORRAL_PORT=2000",
                   "CORRAL_HOST=envhost",
                   "CORRAL_THREADS=7",
                   "CORRAL_PARALLEL=9",
                   "CORRAL_API_KEY=k",
                   "CORRAL_QUEUE_SIZE=5",
                   "CORRAL_BODY_LIMIT=1M",
                   "CORRAL_HTTP_THREADS=3",
                   "CORRAL_LOG_LEVEL=warn",
                   "CORRAL_N_GPU_LAYERS=12",
                   "CORRAL_BATCH=128",
                   "CORRAL_MODELS_DIR=/env/models",
                   "CORRAL_MEMORY_BUDGET=512M",
                   "CORRAL_MAX_MODELS=2",
                   "CORRAL_KEEP_ALIVE=90s",
                   "CORRAL_LOAD_TIMEOUT=1h",
                   "CORRAL_MODELS=a=/env/a",
                   "CORRAL_UNRELATED=whatever",
                   NULL};
    struct config cfg;
    char err[512] = "";
    int rc = config_load(&cfg, 0, NULL, env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_string_equal(cfg.config_path, path);
    assert_int_equal(cfg.port, 2000);
    assert_int_equal(cfg.ctx, 4096); /* from the file, not overridden */
    assert_string_equal(cfg.host, "envhost");
    assert_int_equal(cfg.threads, 7);
    assert_int_equal(cfg.parallel, 9);
    assert_string_equal(cfg.api_key, "k");
    assert_int_equal(cfg.queue_size, 5);
    assert_int_equal(cfg.body_limit, 1024 * 1024);
    assert_int_equal(cfg.http_threads, 3);
    assert_string_equal(cfg.log_level, "warn");
    assert_int_equal(cfg.n_gpu_layers, 12);
    assert_int_equal(cfg.batch, 128);
    assert_string_equal(cfg.models_dir, "/env/models");
    assert_int_equal(cfg.memory_budget, 512u << 20);
    assert_int_equal(cfg.max_models, 2);
    assert_int_equal(cfg.keep_alive_ms, 90000);
    assert_int_equal(cfg.load_timeout_ms, 3600000);
    assert_int_equal(cfg.n_models, 1);
    assert_string_equal(cfg.models[0].path, "/env/a"); /* path replaced */
    assert_int_equal(cfg.models[0].ctx, 512);          /* other fields kept */
    config_free(&cfg);
    tmp_remove(path);
}

static void test_flags_override_env(void **state)
{
    (void)state;
    char *path = tmp_write("[server]\nport = 1000\nparallel = 2\n");
    char cfgenv[300];
    snprintf(cfgenv, sizeof cfgenv, "CORRAL_CONFIG=%s", path);
    char *env[] = {cfgenv, "CORRAL_PORT=2000", "CORRAL_THREADS=7", "CORRAL_API_KEY=envkey",
                   NULL};
    char *argv[] = {"--port", "3000", "--api-key=flagkey", "--log-level", "error", NULL};
    struct config cfg;
    char err[512] = "";
    int rc = load(&cfg, argv, env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(cfg.port, 3000);
    assert_int_equal(cfg.parallel, 2); /* file */
    assert_int_equal(cfg.threads, 7);  /* env */
    assert_string_equal(cfg.api_key, "flagkey");
    assert_string_equal(cfg.log_level, "error");
    config_free(&cfg);

    /* empty api key turns auth off again */
    char *argv2[] = {"--api-key=", NULL};
    rc = load(&cfg, argv2, env, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_null(cfg.api_key);
    config_free(&cfg);
    tmp_remove(path);
}

static void test_config_flag_scanned_first(void **state)
{
    (void)state;
    char *file1 = tmp_write("[server]\nport = 1000\nctx = 111\n");
    char *file2 = tmp_write("[server]\nport = 1001\nctx = 222\n");
    char cfgenv[300];
    snprintf(cfgenv, sizeof cfgenv, "CORRAL_CONFIG=%s", file2);
    char *env[] = {cfgenv, NULL};
    /* --config after other flags still loads first; it beats CORRAL_CONFIG */
    char *argv[] = {"--port", "3000", "--config", file1, NULL};
    struct config cfg;
    char err[512] = "";
    int rc = load(&cfg, argv, env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_string_equal(cfg.config_path, file1);
    assert_int_equal(cfg.port, 3000);
    assert_int_equal(cfg.ctx, 111);
    config_free(&cfg);

    char cfgarg[300];
    snprintf(cfgarg, sizeof cfgarg, "--config=%s", file2);
    char *argv2[] = {cfgarg, NULL};
    assert_int_equal(load(&cfg, argv2, no_env, err, sizeof err), 0);
    assert_int_equal(cfg.ctx, 222);
    config_free(&cfg);
    tmp_remove(file1);
    tmp_remove(file2);
}

/* ------------------------------------------------------------ flags */

static void test_flag_forms(void **state)
{
    (void)state;
    char *argv[] = {"--host", "h1",         "--port=0",          "--threads", "2",
                    "--http-threads=5",     "--parallel", "6",   "--ctx=32",  "--batch",
                    "16",                   "--n-gpu-layers=100000", "--queue-size", "100000",
                    "--body-limit=1G",      "--log-level", "off", NULL};
    struct config cfg;
    char err[512] = "";
    int rc = load(&cfg, argv, no_env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_string_equal(cfg.host, "h1");
    assert_int_equal(cfg.port, 0);
    assert_int_equal(cfg.threads, 2);
    assert_int_equal(cfg.http_threads, 5);
    assert_int_equal(cfg.parallel, 6);
    assert_int_equal(cfg.ctx, 32);
    assert_int_equal(cfg.batch, 16);
    assert_int_equal(cfg.n_gpu_layers, 100000);
    assert_int_equal(cfg.queue_size, 100000);
    assert_int_equal(cfg.body_limit, 1024u * 1024 * 1024);
    assert_string_equal(cfg.log_level, "off");
    config_free(&cfg);

    /* a value may contain '=' and start with '-' in the two-word form */
    char *argv2[] = {"--api-key=a=b", "--host", "-x", NULL};
    assert_int_equal(load(&cfg, argv2, no_env, err, sizeof err), 0);
    assert_string_equal(cfg.api_key, "a=b");
    assert_string_equal(cfg.host, "-x");
    config_free(&cfg);

    /* the newer server flags, over a file and the environment */
    char *path = tmp_write("[server]\nmodels_dir = /file\nkeep_alive = 1h\nmax_models = 4\n"
                           "load_timeout = 10\nmemory_budget = 1G\n");
    char cfgenv[300];
    snprintf(cfgenv, sizeof cfgenv, "CORRAL_CONFIG=%s", path);
    char *env[] = {cfgenv, "CORRAL_KEEP_ALIVE=7", "CORRAL_MODELS_DIR=/env", NULL};
    char *argv3[] = {"--models-dir", "/flag", "--memory-budget=1T", "--max-models", "1024",
                     "--keep-alive", "0", "--load-timeout=2m", NULL};
    assert_int_equal(load(&cfg, argv3, env, err, sizeof err), 0);
    assert_string_equal(cfg.models_dir, "/flag");
    assert_int_equal(cfg.memory_budget, 1ull << 40);
    assert_int_equal(cfg.max_models, 1024);
    assert_int_equal(cfg.keep_alive_ms, 0);
    assert_int_equal(cfg.load_timeout_ms, 120000);
    config_free(&cfg);

    /* an empty models_dir means none, and turns a file's value off */
    char *argv4[] = {"--models-dir=", "--keep-alive=-1", NULL};
    assert_int_equal(load(&cfg, argv4, env, err, sizeof err), 0);
    assert_null(cfg.models_dir);
    assert_int_equal(cfg.keep_alive_ms, -1);
    assert_int_equal(cfg.max_models, 4);          /* file */
    assert_int_equal(cfg.load_timeout_ms, 10000); /* file */
    assert_int_equal(cfg.memory_budget, 1u << 30); /* file */
    config_free(&cfg);
    tmp_remove(path);
}

static void test_flag_errors(void **state)
{
    (void)state;
    char *a1[] = {"--parallel", "0", NULL};
    expect_error_exact(a1, no_env, "--parallel: expected an integer in 1..256, got \"0\"");
    char *a2[] = {"--parallel=abc", NULL};
    expect_error_exact(a2, no_env, "--parallel: expected an integer in 1..256, got \"abc\"");
    char *a3[] = {"--port", NULL};
    expect_error_exact(a3, no_env, "--port: missing value");
    char *a4[] = {"--bogus", "1", NULL};
    expect_error_exact(a4, no_env, "unknown flag \"--bogus\"");
    char *a5[] = {"--bogus=1", NULL};
    expect_error_exact(a5, no_env, "unknown flag \"--bogus\"");
    char *a6[] = {"serve", NULL};
    expect_error_exact(a6, no_env, "unexpected argument \"serve\"");
    char *a7[] = {"-p", "1", NULL};
    expect_error_exact(a7, no_env, "unknown flag \"-p\"");
    char *a8[] = {"--body-limit", "10Q", NULL};
    expect_error_contains(a8, no_env, "--body-limit: expected a size in 1K..1G", "got \"10Q\"");
    char *a9[] = {"--portx=1", NULL}; /* a prefix of a flag is not the flag */
    expect_error_exact(a9, no_env, "unknown flag \"--portx\"");
    char *a10[] = {"--host=", NULL};
    expect_error_contains(a10, no_env, "--host", "non-empty");
    /* flag errors win even when a config file is also named */
    char *a11[] = {"--config", "/nonexistent", "--nope", NULL};
    expect_error_exact(a11, no_env, "unknown flag \"--nope\"");

    char *b1[] = {"--memory-budget", "x", NULL};
    expect_error_exact(b1, no_env,
                       "--memory-budget: expected a size in 1M..1T (or 0/auto), got \"x\"");
    char *b2[] = {"--memory-budget=1025G", NULL};
    expect_error_exact(b2, no_env,
                       "--memory-budget: expected a size in 1M..1T (or 0/auto), got \"1025G\"");
    char *b3[] = {"--max-models=0", NULL};
    expect_error_exact(b3, no_env, "--max-models: expected an integer in 1..1024, got \"0\"");
    char *b4[] = {"--keep-alive", "10x", NULL};
    expect_error_exact(b4, no_env,
                       "--keep-alive: expected a duration (seconds, or with s/m/h; "
                       "-1 = forever), got \"10x\"");
    char *b5[] = {"--load-timeout", "-1", NULL};
    expect_error_exact(b5, no_env,
                       "--load-timeout: expected a positive duration (seconds, or with s/m/h), "
                       "got \"-1\"");
    char *b6[] = {"--keep-alive", NULL};
    expect_error_exact(b6, no_env, "--keep-alive: missing value");
    char *b7[] = {"--preload", NULL};
    expect_error_exact(b7, no_env, "--preload: missing value");
    char *b8[] = {"--preloadx=a", NULL};
    expect_error_exact(b8, no_env, "unknown flag \"--preloadx\"");
}

static void test_model_flag(void **state)
{
    (void)state;
    char *argv[] = {"--model", "a=/x.gguf", "--model=b=/y.gguf", "--model", "a=/z.gguf", NULL};
    struct config cfg;
    char err[512] = "";
    int rc = load(&cfg, argv, no_env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(cfg.n_models, 2);
    assert_string_equal(find_model(&cfg, "a")->path, "/z.gguf");
    assert_string_equal(find_model(&cfg, "b")->path, "/y.gguf");
    assert_int_equal(find_model(&cfg, "b")->ctx, -1);
    config_free(&cfg);

    /* a flag replaces a file model's path and keeps its settings; it also
     * supplies a path the file left out */
    char *path = tmp_write("[model.a]\npath = /file.gguf\nctx = 4096\n"
                           "[model.c]\nparallel = 3\n");
    char *argv2[] = {"--config", path, "--model", "a=/flag.gguf", "--model", "c=/c.gguf", NULL};
    char cfgenv[300];
    rc = load(&cfg, argv2, no_env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(cfg.n_models, 2);
    assert_string_equal(cfg.models[0].path, "/flag.gguf");
    assert_int_equal(cfg.models[0].ctx, 4096);
    assert_string_equal(cfg.models[1].path, "/c.gguf");
    assert_int_equal(cfg.models[1].parallel, 3);
    config_free(&cfg);

    /* flags beat CORRAL_MODELS */
    snprintf(cfgenv, sizeof cfgenv, "CORRAL_MODELS=a=/env.gguf,d=/d.gguf");
    char *env[] = {cfgenv, NULL};
    char *argv3[] = {"--model", "a=/flag.gguf", NULL};
    assert_int_equal(load(&cfg, argv3, env, err, sizeof err), 0);
    assert_int_equal(cfg.n_models, 2);
    assert_string_equal(find_model(&cfg, "a")->path, "/flag.gguf");
    assert_string_equal(find_model(&cfg, "d")->path, "/d.gguf");
    config_free(&cfg);
    tmp_remove(path);

    char *e1[] = {"--model", "foo", NULL};
    expect_error_exact(e1, no_env, "--model: expected ID=PATH, got \"foo\"");
    char *e2[] = {"--model", "a=", NULL};
    expect_error_exact(e2, no_env, "--model: expected ID=PATH, got \"a=\"");
    char *e3[] = {"--model", "=/p", NULL};
    expect_error_exact(e3, no_env, "--model: expected ID=PATH, got \"=/p\"");
    char *e4[] = {"--model", "a b=/p", NULL};
    expect_error_contains(e4, no_env, "--model: invalid model id \"a b\"", NULL);
}

static void test_corral_models_env(void **state)
{
    (void)state;
    char *env[] = {"CORRAL_MODELS= a=/a.gguf , b:1=/b c.gguf,,", NULL};
    struct config cfg;
    char err[512] = "";
    int rc = config_load(&cfg, 0, NULL, env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(cfg.n_models, 2);
    assert_string_equal(cfg.models[0].id, "a");
    assert_string_equal(cfg.models[0].path, "/a.gguf");
    assert_string_equal(cfg.models[1].id, "b:1");
    assert_string_equal(cfg.models[1].path, "/b c.gguf");
    config_free(&cfg);

    char *e1[] = {"CORRAL_MODELS=a=/a,foo", NULL};
    expect_error_exact(NULL, e1, "CORRAL_MODELS: expected ID=PATH, got \"foo\"");
    char *e2[] = {"CORRAL_MODELS=a!=/a", NULL};
    expect_error_contains(NULL, e2, "CORRAL_MODELS: invalid model id \"a!\"", NULL);
}

static void test_env_errors(void **state)
{
    (void)state;
    char *e1[] = {"CORRAL_PORT=x", NULL};
    expect_error_exact(NULL, e1, "CORRAL_PORT: expected an integer in 0..65535, got \"x\"");
    char *e2[] = {"CORRAL_CTX=", NULL};
    expect_error_exact(NULL, e2, "CORRAL_CTX: expected an integer in 16..1048576, got \"\"");
    char *e3[] = {"CORRAL_BODY_LIMIT=1T", NULL};
    expect_error_contains(NULL, e3, "CORRAL_BODY_LIMIT: expected a size", "got \"1T\"");
    char *e4[] = {"CORRAL_LOG_LEVEL=verbose", NULL};
    expect_error_contains(NULL, e4, "CORRAL_LOG_LEVEL: expected one of", "got \"verbose\"");
    char *e5[] = {"CORRAL_THREADS= 4", NULL};
    expect_error_exact(NULL, e5, "CORRAL_THREADS: expected an integer in 1..1024, got \" 4\"");
    char *e6[] = {"CORRAL_MEMORY_BUDGET=-1", NULL};
    expect_error_exact(NULL, e6,
                       "CORRAL_MEMORY_BUDGET: expected a size in 1M..1T (or 0/auto), "
                       "got \"-1\"");
    char *e7[] = {"CORRAL_MAX_MODELS=many", NULL};
    expect_error_exact(NULL, e7,
                       "CORRAL_MAX_MODELS: expected an integer in 1..1024, got \"many\"");
    char *e8[] = {"CORRAL_KEEP_ALIVE=", NULL};
    expect_error_exact(NULL, e8,
                       "CORRAL_KEEP_ALIVE: expected a duration (seconds, or with s/m/h; "
                       "-1 = forever), got \"\"");
    char *e9[] = {"CORRAL_LOAD_TIMEOUT=0m", NULL};
    expect_error_exact(NULL, e9,
                       "CORRAL_LOAD_TIMEOUT: expected a positive duration (seconds, or with "
                       "s/m/h), got \"0m\"");
    /* the env accepts blanks around a duration, like config_parse_duration */
    char *ok[] = {"CORRAL_KEEP_ALIVE= 2h ", "CORRAL_MODELS_DIR=", NULL};
    struct config cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, 0, NULL, ok, err, sizeof err), 0);
    assert_int_equal(cfg.keep_alive_ms, 2 * 3600 * 1000);
    assert_null(cfg.models_dir);
    config_free(&cfg);
}

/* ------------------------------------------------------------ misc API */

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int rc;
        size_t v;
    } cases[] = {
        {"0", 0, 0},
        {"1024", 0, 1024},
        {"8388608", 0, 8388608},
        {"64k", 0, 65536},
        {"64K", 0, 65536},
        {"8M", 0, 8u << 20},
        {"8m", 0, 8u << 20},
        {"1G", 0, 1u << 30},
        {"1g", 0, 1u << 30},
        {"2KB", 0, 2048},
        {"2KiB", 0, 2048},
        {"3MiB", 0, 3u << 20},
        {"100B", 0, 100},
        {"", -1, 0},
        {"k", -1, 0},
        {"-1", -1, 0},
        {"+1", -1, 0},
        {" 1", -1, 0},
        {"1 ", -1, 0},
        {"1.5M", -1, 0},
        {"10X", -1, 0},
        {"1T", -1, 0},
        {"1KK", -1, 0},
        {"1iB", -1, 0},
        {"1Kb", -1, 0},
        {"0x10", -1, 0},
        {"99999999999999999999999", -1, 0},
        {"18446744073709551615G", -1, 0},
        {"17179869184G", -1, 0}, /* 2^34 GiB = 2^64 bytes */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t v = 12345;
        int rc = config_parse_size(cases[i].s, &v);
        if (rc != cases[i].rc || (rc == 0 && v != cases[i].v))
            fail_msg("config_parse_size(\"%s\"): rc=%d v=%zu, want rc=%d v=%zu", cases[i].s,
                     rc, v, cases[i].rc, cases[i].v);
        if (rc != 0 && v != 12345)
            fail_msg("config_parse_size(\"%s\") wrote *out on failure", cases[i].s);
    }
    size_t v;
    assert_int_equal(config_parse_size("17179869183G", &v), 0);
    assert_int_equal(v, (size_t)17179869183u << 30);
}

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int rc;
        int64_t ms;
    } cases[] = {
        {"0", 0, 0},
        {"-1", 0, -1},
        {" -1 ", 0, -1},
        {"300", 0, 300000},
        {"90s", 0, 90000},
        {"10m", 0, 600000},
        {"1h", 0, 3600000},
        {" 5m ", 0, 300000},
        {"\t5M\n", 0, 300000},
        {"0s", 0, 0},
        {"007", 0, 7000},
        {"9223372036854775s", 0, INT64_C(9223372036854775000)},
        {"", -1, 0},
        {"   ", -1, 0},
        {"-5", -1, 0},
        {"-0", -1, 0},
        {"-1s", -1, 0},
        {"+5", -1, 0},
        {"10x", -1, 0},
        {"10ms", -1, 0},
        {"m", -1, 0},
        {"5 m", -1, 0},
        {"1.5h", -1, 0},
        {"0x10", -1, 0},
        {"99999999999999999999h", -1, 0},
        {"99999999999999999999", -1, 0},
        {"9223372036854776", -1, 0},  /* seconds: ms overflows */
        {"2562047788016h", -1, 0},    /* ms overflows */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t ms = 12345;
        int rc = config_parse_duration(cases[i].s, &ms);
        if (rc != cases[i].rc || (rc == 0 && ms != cases[i].ms))
            fail_msg("config_parse_duration(\"%s\"): rc=%d ms=%lld, want rc=%d ms=%lld",
                     cases[i].s, rc, (long long)ms, cases[i].rc, (long long)cases[i].ms);
        if (rc != 0 && ms != 12345)
            fail_msg("config_parse_duration(\"%s\") wrote *ms_out on failure", cases[i].s);
    }
    int64_t ms;
    assert_int_equal(config_parse_duration(NULL, &ms), -1);
    assert_int_equal(config_parse_duration("2562047788015h", &ms), 0);
    assert_int_equal(ms, INT64_C(2562047788015) * 3600000);
}

static void test_memory_budget(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t v;
    } ok[] = {
        {"0", 0},
        {"auto", 0},
        {"AUTO", 0},
        {"1M", 1u << 20},
        {"1048576", 1u << 20},
        {"512M", 512u << 20},
        {"8G", 8ull << 30},
        {"8GiB", 8ull << 30},
        {"1T", 1ull << 40},
        {"1t", 1ull << 40},
        {"1TB", 1ull << 40},
        {"1TiB", 1ull << 40},
        {"1024G", 1ull << 40},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char arg[64], err[256] = "";
        snprintf(arg, sizeof arg, "--memory-budget=%s", ok[i].s);
        char *argv[] = {arg, NULL};
        struct config cfg;
        if (load(&cfg, argv, no_env, err, sizeof err) != 0)
            fail_msg("%s: %s", arg, err);
        if (cfg.memory_budget != ok[i].v)
            fail_msg("%s: got %zu, want %zu", arg, cfg.memory_budget, ok[i].v);
        config_free(&cfg);
    }
    static const char *const bad[] = {"", " 1G", "1G ", "-1", "1", "1048575", "1023K",
                                      "1025G", "2T", "1.5G", "1TT", "1Tb", "T", "autox",
                                      "0x100000", "18446744073709551615T"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"--memory-budget", (char *)bad[i], NULL};
        char want[128];
        snprintf(want, sizeof want,
                 "--memory-budget: expected a size in 1M..1T (or 0/auto), got \"%s\"", bad[i]);
        expect_error_exact(argv, no_env, want);
    }
    /* "1T" stays invalid for the plain size parser and for body_limit */
    size_t v;
    assert_int_equal(config_parse_size("1T", &v), -1);
}

static void test_preload(void **state)
{
    (void)state;
    struct config cfg;
    char err[512] = "";
    /* flags, repeated and in both forms; ids need not be configured models */
    char *argv[] = {"--preload", "a", "--preload=llama-3.1:8b_Q4", "--model", "b=/b.gguf",
                    "--preload", "a", "--preload", "b", NULL};
    int rc = load(&cfg, argv, no_env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(cfg.n_preload, 3);
    assert_string_equal(cfg.preload[0], "a");
    assert_string_equal(cfg.preload[1], "llama-3.1:8b_Q4");
    assert_string_equal(cfg.preload[2], "b");
    assert_false(find_model(&cfg, "b")->preload); /* the list is separate */
    config_free(&cfg);
    assert_null(cfg.preload);
    assert_int_equal(cfg.n_preload, 0);

    /* the environment, with blanks and empty items; flags add to it */
    char *env[] = {"CORRAL_PRELOAD= x , y,,x ,", NULL};
    rc = config_load(&cfg, 0, NULL, env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(cfg.n_preload, 2);
    assert_string_equal(cfg.preload[0], "x");
    assert_string_equal(cfg.preload[1], "y");
    config_free(&cfg);
    char *argv2[] = {"--preload", "z", "--preload", "y", NULL};
    assert_int_equal(load(&cfg, argv2, env, err, sizeof err), 0);
    assert_int_equal(cfg.n_preload, 3);
    assert_string_equal(cfg.preload[0], "x");
    assert_string_equal(cfg.preload[1], "y");
    assert_string_equal(cfg.preload[2], "z");
    config_free(&cfg);

    /* an empty CORRAL_PRELOAD is an empty list */
    char *env_empty[] = {"CORRAL_PRELOAD=", NULL};
    assert_int_equal(config_load(&cfg, 0, NULL, env_empty, err, sizeof err), 0);
    assert_int_equal(cfg.n_preload, 0);
    config_free(&cfg);

    /* the [model.ID] preload boolean, in every spelling */
    static const struct {
        const char *v;
        bool b;
    } bools[] = {{"true", true}, {"TRUE", true}, {"yes", true}, {"On", true}, {"1", true},
                 {"false", false}, {"No", false}, {"off", false}, {"0", false},
                 {"FALSE", false}};
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
        char ini[128];
        snprintf(ini, sizeof ini, "[model.a]\npath = /a\npreload = %s\n", bools[i].v);
        char *path = tmp_write(ini);
        char *argv3[] = {"--config", path, NULL};
        rc = load(&cfg, argv3, no_env, err, sizeof err);
        if (rc != 0)
            fail_msg("preload = %s: %s", bools[i].v, err);
        assert_int_equal(cfg.models[0].preload, bools[i].b);
        config_free(&cfg);
        tmp_remove(path);
    }

    /* errors */
    char *e1[] = {"--preload", "a b", NULL};
    expect_error_exact(e1, no_env,
                       "--preload: invalid model id \"a b\" (expected 1..127 characters of "
                       "A-Z a-z 0-9 . _ : -)");
    char *e2[] = {"--preload=", NULL};
    expect_error_contains(e2, no_env, "--preload: invalid model id \"\"", NULL);
    char *e3[] = {"CORRAL_PRELOAD=a,b/c", NULL};
    expect_error_contains(NULL, e3, "CORRAL_PRELOAD: invalid model id \"b/c\"", NULL);
    /* an error after some ids were stored still frees cleanly */
    char *e4[] = {"--preload", "ok1", "--preload", "ok2", "--preload", "bad!", NULL};
    expect_error_contains(e4, e3, "CORRAL_PRELOAD", NULL);
    char *env_ok[] = {"CORRAL_PRELOAD=ok0", NULL};
    expect_error_contains(e4, env_ok, "--preload: invalid model id \"bad!\"", NULL);
}

static void test_model_keep_alive(void **state)
{
    (void)state;
    char *path = tmp_write("[server]\nkeep_alive = 30\n"
                           "[model.a]\npath = /a\n"
                           "[model.b]\npath = /b\nkeep_alive = 2h\n"
                           "[model.c]\npath = /c\nkeep_alive = -1\n"
                           "[model.d]\npath = /d\nkeep_alive = 0\n");
    char *argv[] = {"--config", path, NULL};
    struct config cfg;
    char err[512] = "";
    int rc = load(&cfg, argv, no_env, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    static const struct {
        const char *id;
        int64_t raw, resolved;
    } want[] = {
        {"a", CONFIG_KEEP_ALIVE_INHERIT, 30000},
        {"b", 7200000, 7200000},
        {"c", -1, -1},
        {"d", 0, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct config_model *m = find_model(&cfg, want[i].id);
        assert_non_null(m);
        assert_int_equal(m->keep_alive_ms, want[i].raw);
        struct config_model out;
        config_model_resolve(&cfg, m, &out);
        assert_int_equal(out.keep_alive_ms, want[i].resolved);
    }
    config_free(&cfg);

    /* a flag changes the server's value, which model a inherits; --model
     * models inherit too */
    char *argv2[] = {"--config", path, "--keep-alive=-1", "--model", "e=/e", NULL};
    assert_int_equal(load(&cfg, argv2, no_env, err, sizeof err), 0);
    struct config_model out;
    config_model_resolve(&cfg, find_model(&cfg, "a"), &out);
    assert_int_equal(out.keep_alive_ms, -1);
    config_model_resolve(&cfg, find_model(&cfg, "e"), &out);
    assert_int_equal(out.keep_alive_ms, -1);
    config_model_resolve(&cfg, find_model(&cfg, "b"), &out);
    assert_int_equal(out.keep_alive_ms, 7200000);
    config_free(&cfg);
    tmp_remove(path);
}

static void test_flash_attn(void **state)
{
    (void)state;
    char *path = tmp_write("[server]\nflash_attn = on\n"
                           "[model.a]\npath = /a\n"
                           "[model.b]\npath = /b\nflash_attn = off\n"
                           "[model.c]\npath = /c\nflash_attn = AUTO\n");
    char *argv[] = {"--config", path, NULL};
    struct config cfg;
    char err[512] = "";
    if (load(&cfg, argv, no_env, err, sizeof err) != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(cfg.flash_attn, 1);
    static const struct {
        const char *id;
        int raw, resolved;
    } want[] = {{"a", CONFIG_INHERIT, 1}, {"b", 0, 0}, {"c", CONFIG_AUTO, CONFIG_AUTO}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct config_model *m = find_model(&cfg, want[i].id);
        assert_non_null(m);
        assert_int_equal(m->flash_attn, want[i].raw);
        struct config_model out;
        config_model_resolve(&cfg, m, &out);
        assert_int_equal(out.flash_attn, want[i].resolved);
    }
    config_free(&cfg);

    /* the default is auto; the variable and the flag override the file */
    char *argv0[] = {NULL};
    assert_int_equal(load(&cfg, argv0, no_env, err, sizeof err), 0);
    assert_int_equal(cfg.flash_attn, CONFIG_AUTO);
    config_free(&cfg);
    char *env[] = {"CORRAL_FLASH_ATTN=0", NULL};
    assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
    assert_int_equal(cfg.flash_attn, 0);
    config_free(&cfg);
    char *argv2[] = {"--config", path, "--flash-attn", "auto", NULL};
    assert_int_equal(load(&cfg, argv2, env, err, sizeof err), 0);
    assert_int_equal(cfg.flash_attn, CONFIG_AUTO);
    config_free(&cfg);
    tmp_remove(path);

    expect_file_error("[server]\nflash_attn = maybe\n", 2, "[server] flash_attn",
                      "expected auto, on or off, got \"maybe\"");
    expect_file_error("[model.a]\npath = /a\nflash_attn = 2\n", 3, "[model.a] flash_attn",
                      "expected auto, on or off");
    char *bad[] = {"--flash-attn", "fast", NULL};
    expect_error_contains(bad, no_env, "--flash-attn", "expected auto, on or off");
}

static void test_model_resolve(void **state)
{
    (void)state;
    struct config cfg;
    config_defaults(&cfg);
    cfg.parallel = 3;
    cfg.ctx = 1000;
    cfg.threads = 5;
    cfg.n_gpu_layers = 7;
    cfg.batch = 99;

    struct config_model in = {.id = "m", .path = "/p", .parallel = -1, .ctx = 4096,
                              .threads = -1, .n_gpu_layers = 0, .batch = -1,
                              .chat_template = "chatml"};
    struct config_model out;
    memset(&out, 0xAA, sizeof out);
    config_model_resolve(&cfg, &in, &out);
    assert_string_equal(out.id, "m");
    assert_ptr_equal(out.path, in.path); /* borrowed */
    assert_ptr_equal(out.chat_template, in.chat_template);
    assert_int_equal(out.parallel, 3);
    assert_int_equal(out.ctx, 4096);
    assert_int_equal(out.threads, 5);
    assert_int_equal(out.n_gpu_layers, 0);
    assert_int_equal(out.batch, 99);
    assert_int_equal(out.keep_alive_ms, 0); /* 0 is a value, not "inherit" */

    in.keep_alive_ms = CONFIG_KEEP_ALIVE_INHERIT;
    in.preload = true;
    cfg.keep_alive_ms = 42000;
    config_model_resolve(&cfg, &in, &out);
    assert_int_equal(out.keep_alive_ms, 42000);
    assert_true(out.preload);
    config_free(&cfg);
}

static void test_errbuf_small(void **state)
{
    (void)state;
    char *argv[] = {"--parallel", "0", NULL};
    char err[8];
    struct config cfg;
    assert_int_equal(load(&cfg, argv, no_env, err, sizeof err), -1);
    assert_string_equal(err, "--paral");
    config_free(&cfg);
    assert_int_equal(load(&cfg, argv, no_env, NULL, 0), -1);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_long_model_id),
        cmocka_unit_test(test_file_value_errors),
        cmocka_unit_test(test_file_structure_errors),
        cmocka_unit_test(test_too_many_models),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_env_overrides_file),
        cmocka_unit_test(test_flags_override_env),
        cmocka_unit_test(test_config_flag_scanned_first),
        cmocka_unit_test(test_flag_forms),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_model_flag),
        cmocka_unit_test(test_corral_models_env),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_memory_budget),
        cmocka_unit_test(test_preload),
        cmocka_unit_test(test_model_keep_alive),
        cmocka_unit_test(test_flash_attn),
        cmocka_unit_test(test_model_resolve),
        cmocka_unit_test(test_errbuf_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
