/* test_config_guard.c - the configuration of browsers, slow clients,
 * connections and shutdown: defaults, forms and their error messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "config.h"

static char *no_env[] = {NULL};

static int load(struct config *cfg, char **argv, char **envp, char *err, size_t errlen)
{
    int argc = 0;
    while (argv && argv[argc])
        argc++;
    return config_load(cfg, argc, argv, envp, err, errlen);
}

static void expect_error(char **argv, char **envp, const char *n1, const char *n2)
{
    char err[512] = "";
    struct config cfg;
    int rc = load(&cfg, argv, envp, err, sizeof err);
    if (rc != -1 || (n1 && !strstr(err, n1)) || (n2 && !strstr(err, n2)))
        fail_msg("rc=%d err=\"%s\", want \"%s\" and \"%s\"", rc, err, n1 ? n1 : "", n2 ? n2 : "");
    config_free(&cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    struct config cfg;
    char *argv[] = {NULL};
    char err[256];
    assert_int_equal(load(&cfg, argv, no_env, err, sizeof err), 0);
    assert_null(cfg.cors_origins);
    assert_null(cfg.allowed_hosts);
    assert_int_equal(cfg.header_timeout_ms, 10000);
    assert_int_equal(cfg.body_timeout_ms, 30000);
    assert_int_equal(cfg.max_connections, 0);
    assert_int_equal(cfg.max_connections_per_ip, 64);
    assert_int_equal(cfg.request_memory, (size_t)256 << 20);
    assert_int_equal(cfg.shutdown_timeout_ms, 30000);
    config_free(&cfg);
}

static void test_values(void **state)
{
    (void)state;
    struct config cfg;
    char err[256] = "";
    char *argv[] = {"--cors-origins", "http://localhost:3000, https://app.example , app://x", "--allowed-hosts",
                    "myhost,.lan,[fe80::1]", "--header-timeout", "2s", "--body-timeout", "1m",
                    "--max-connections", "100", "--max-connections-per-ip", "0", "--request-memory", "64M",
                    "--shutdown-timeout", "0", NULL};
    if (load(&cfg, argv, no_env, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg.cors_origins, "http://localhost:3000, https://app.example , app://x");
    assert_string_equal(cfg.allowed_hosts, "myhost,.lan,[fe80::1]");
    assert_int_equal(cfg.header_timeout_ms, 2000);
    assert_int_equal(cfg.body_timeout_ms, 60000);
    assert_int_equal(cfg.max_connections, 100);
    assert_int_equal(cfg.max_connections_per_ip, 0);
    assert_int_equal(cfg.request_memory, (size_t)64 << 20);
    assert_int_equal(cfg.shutdown_timeout_ms, 0);
    config_free(&cfg);

    /* "*" must be asked for, and works in both; empty means none */
    char *env[] = {"CORRAL_CORS_ORIGINS=*", "CORRAL_ALLOWED_HOSTS=*", NULL};
    char *none[] = {NULL};
    assert_int_equal(load(&cfg, none, env, err, sizeof err), 0);
    assert_string_equal(cfg.cors_origins, "*");
    assert_string_equal(cfg.allowed_hosts, "*");
    config_free(&cfg);
    char *empty[] = {"--cors-origins", "", "--allowed-hosts", "", NULL};
    assert_int_equal(load(&cfg, empty, env, err, sizeof err), 0);
    assert_null(cfg.cors_origins);
    assert_null(cfg.allowed_hosts);
    config_free(&cfg);
    char *null_origin[] = {"--cors-origins", "null", NULL};
    assert_int_equal(load(&cfg, null_origin, no_env, err, sizeof err), 0);
    config_free(&cfg);
}

static void test_errors(void **state)
{
    (void)state;
    char *a[] = {"--cors-origins", "http://localhost:3000/", NULL};
    expect_error(a, no_env, "--cors-origins", "got \"http://localhost:3000/\"");
    char *b[] = {"--cors-origins", "localhost:3000", NULL};
    expect_error(b, no_env, "--cors-origins", "scheme://host[:port]");
    char *c[] = {"--cors-origins", "http://ok, http://bad:port", NULL};
    expect_error(c, no_env, "got \"http://bad:port\"", NULL);
    char *d[] = {"--allowed-hosts", "http://myhost", NULL};
    expect_error(d, no_env, "--allowed-hosts", "no scheme, no port");
    char *e[] = {"--allowed-hosts", "myhost:8080", NULL};
    expect_error(e, no_env, "got \"myhost:8080\"", NULL);
    char *f[] = {"--header-timeout", "0", NULL};
    expect_error(f, no_env, "--header-timeout", "positive duration");
    char *g[] = {"--max-connections-per-ip", "-1", NULL};
    expect_error(g, no_env, "--max-connections-per-ip", "0..1000000");
    char *h[] = {"--request-memory", "1k", NULL};
    expect_error(h, no_env, "--request-memory", "expected a size in 1M..");
    char *env[] = {"CORRAL_SHUTDOWN_TIMEOUT=soon", NULL};
    char *none[] = {NULL};
    expect_error(none, env, "CORRAL_SHUTDOWN_TIMEOUT", "expected a duration");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
