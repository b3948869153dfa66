/* test_guard.c - the Host, Origin and Content-Type rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "http/guard.h"

static void make(struct guard *g, const char *origins, const char *hosts, const char *bind) {
    struct guard_params p = {.cors_origins = origins, .allowed_hosts = hosts, .bind_host = bind};
    assert_int_equal(guard_init(g, &p), 0);
}

static void test_loopback_bind_hosts(void **state) {
    (void)state;
    struct guard g;
    make(&g, NULL, NULL, "127.0.0.1");
    static const char *const ok[] = {"localhost", "localhost:8080", "LOCALHOST:1", "127.0.0.1", "127.0.0.1:8080",
                                     "127.1.2.3:80", "[::1]", "[::1]:8080", "app.localhost:3000", "localhost.",
                                     " localhost:8080 "};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!guard_host_ok(&g, ok[i])) fail_msg("refused %s", ok[i]);
    static const char *const bad[] = {"evil.example",  "evil.example:8080", "localhost.evil.example",
                                      "10.0.0.1:8080", "[fe80::1]:80",      "",
                                      "localhost:",    "localhost:80x",     "[::1",
                                      "a:b:c",         "127.0.0.1.nip.io"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (guard_host_ok(&g, bad[i])) fail_msg("accepted %s", bad[i]);
    assert_true(guard_host_ok(&g, NULL)); /* HTTP/1.0 without Host: not a browser */
    guard_free(&g);

    make(&g, NULL, "myhost, .lan", "::1");
    assert_true(guard_host_ok(&g, "MyHost:8080"));
    assert_true(guard_host_ok(&g, "lan"));
    assert_true(guard_host_ok(&g, "box.lan:1"));
    assert_false(guard_host_ok(&g, "boxlan"));
    assert_false(guard_host_ok(&g, "myhost.evil"));
    guard_free(&g);

    make(&g, NULL, "*", "localhost");
    assert_true(guard_host_ok(&g, "evil.example"));
    guard_free(&g);
}

static void test_other_binds(void **state) {
    (void)state;
    struct guard g;
    /* bound to every address and no allowed_hosts: no Host check */
    make(&g, NULL, NULL, "0.0.0.0");
    assert_true(guard_host_ok(&g, "anything.example"));
    guard_free(&g);
    /* once names are listed, they are checked; IP literals pass */
    make(&g, NULL, "gpu-box", "0.0.0.0");
    assert_true(guard_host_ok(&g, "gpu-box:8080"));
    assert_true(guard_host_ok(&g, "192.168.1.5:8080"));
    assert_true(guard_host_ok(&g, "[fe80::1]"));
    assert_true(guard_host_ok(&g, "localhost"));
    assert_false(guard_host_ok(&g, "evil.example"));
    guard_free(&g);
}

static void test_origins(void **state) {
    (void)state;
    struct guard g;
    char allow[GUARD_ORIGIN_MAX];
    bool vary;
    make(&g, NULL, NULL, "127.0.0.1");
    assert_int_equal(guard_origin(&g, NULL, "localhost:8080", false, allow, &vary), GUARD_NO_ORIGIN);
    assert_int_equal(guard_origin(&g, "http://evil.example", "127.0.0.1:8080", false, allow, &vary),
                     GUARD_FORBIDDEN);
    /* DNS rebinding: same origin as far as the browser knows, but not a local Host */
    assert_int_equal(guard_origin(&g, "http://evil.example:8080", "evil.example:8080", false, allow, &vary),
                     GUARD_FORBIDDEN);
    assert_int_equal(guard_origin(&g, "http://127.0.0.1:8080", "127.0.0.1:8080", false, allow, &vary),
                     GUARD_SAME_ORIGIN);
    assert_int_equal(guard_origin(&g, "http://localhost:8080", "LocalHost:8080", true, allow, &vary),
                     GUARD_SAME_ORIGIN);
    assert_int_equal(guard_origin(&g, "http://localhost:3000", "localhost:8080", false, allow, &vary),
                     GUARD_FORBIDDEN);
    assert_int_equal(guard_origin(&g, "null", "localhost:8080", false, allow, &vary), GUARD_FORBIDDEN);
    guard_free(&g);

    make(&g, "http://localhost:3000, https://App.Example, null", NULL, "127.0.0.1");
    assert_int_equal(guard_origin(&g, "http://localhost:3000", "localhost:8080", false, allow, &vary), GUARD_CORS);
    assert_string_equal(allow, "http://localhost:3000");
    assert_true(vary);
    assert_int_equal(guard_origin(&g, "https://app.example", "localhost:8080", false, allow, &vary), GUARD_CORS);
    assert_string_equal(allow, "https://app.example");
    assert_int_equal(guard_origin(&g, "null", "localhost:8080", false, allow, &vary), GUARD_CORS);
    assert_int_equal(guard_origin(&g, "http://localhost:3001", "localhost:8080", false, allow, &vary),
                     GUARD_FORBIDDEN);
    /* never CORS on /admin, even for a listed origin */
    assert_int_equal(guard_origin(&g, "http://localhost:3000", "localhost:8080", true, allow, &vary),
                     GUARD_FORBIDDEN);
    assert_string_equal(allow, "");
    guard_free(&g);

    make(&g, "*", NULL, "127.0.0.1");
    assert_int_equal(guard_origin(&g, "http://anything.example", "localhost:8080", false, allow, &vary),
                     GUARD_CORS);
    assert_string_equal(allow, "*");
    assert_false(vary);
    assert_int_equal(guard_origin(&g, "http://anything.example", "localhost:8080", true, allow, &vary),
                     GUARD_FORBIDDEN);
    guard_free(&g);

    /* a 0.0.0.0 bind without allowed_hosts: same origin only on local names and IP literals */
    make(&g, NULL, NULL, "0.0.0.0");
    assert_int_equal(guard_origin(&g, "http://192.168.1.5:8080", "192.168.1.5:8080", false, allow, &vary),
                     GUARD_SAME_ORIGIN);
    assert_int_equal(guard_origin(&g, "http://evil.example:8080", "evil.example:8080", false, allow, &vary),
                     GUARD_FORBIDDEN);
    guard_free(&g);
}

static void test_json_and_headers(void **state) {
    (void)state;
    assert_true(guard_is_json("application/json"));
    assert_true(guard_is_json("Application/JSON; charset=utf-8"));
    assert_true(guard_is_json(" application/json ;"));
    assert_false(guard_is_json(NULL));
    assert_false(guard_is_json("text/plain"));
    assert_false(guard_is_json("application/jsonp"));
    assert_false(guard_is_json("application/x-www-form-urlencoded"));
    assert_true(guard_loopback_addr("127.0.0.1"));
    assert_true(guard_loopback_addr("::1"));
    assert_true(guard_loopback_addr("localhost"));
    assert_false(guard_loopback_addr("0.0.0.0"));
    assert_false(guard_loopback_addr("::"));
    assert_false(guard_loopback_addr("192.168.1.5"));
    char out[128];
    assert_string_equal(guard_allow_headers("content-type, x-stainless-os", out, sizeof out),
                        "content-type, x-stainless-os");
    assert_string_equal(guard_allow_headers("content-type\r\nx: y", out, sizeof out),
                        "Authorization, Content-Type, X-Api-Key, X-Corral-Max-Wait");
    assert_string_equal(guard_allow_headers(NULL, out, sizeof out),
                        "Authorization, Content-Type, X-Api-Key, X-Corral-Max-Wait");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback_bind_hosts),
        cmocka_unit_test(test_other_binds),
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_json_and_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
