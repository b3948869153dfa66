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
    assert_int_equal(cfg.n_gpu_layers, 0);
    assert_int_equal(cfg.queue_size, 64);
    assert_int_equal(cfg.body_limit, 8u * 1024 * 1024);
    assert_null(cfg.api_key);
    assert_string_equal(cfg.log_level, "info");
    assert_null(cfg.config_path);
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
    "n_gpu_layers = 99\n"
    "queue_size = 0\n"
    "body_limit = 64k\n"
    "api_key = s3cret;x\n"
    "log_level = debug\n"
    "\n"
    "  [model.llama-3.1:8b_Q4]  ; indented header\n"
    "    path = /models/llama.gguf\n"
    "    ctx = 8192\n"
    "    parallel = 2\n"
    "    threads = 5\n"
    "    n_gpu_layers = 10\n"
    "    batch = 64\n"
    "    chat_template = chatml\n"
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
    assert_int_equal(cfg.n_gpu_layers, 99);
    assert_int_equal(cfg.queue_size, 0);
    assert_int_equal(cfg.body_limit, 65536);
    assert_string_equal(cfg.api_key, "s3cret;x");
    assert_string_equal(cfg.log_level, "debug");
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

    m = &cfg.models[1];
    assert_string_equal(m->id, "tiny");
    assert_string_equal(m->path, "/models/tiny.gguf");
    assert_int_equal(m->ctx, -1);
    assert_int_equal(m->parallel, -1);
    assert_int_equal(m->threads, -1);
    assert_int_equal(m->n_gpu_layers, -1);
    assert_int_equal(m->batch, -1);
    assert_null(m->chat_template);

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
        cmocka_unit_test(test_model_resolve),
        cmocka_unit_test(test_errbuf_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
