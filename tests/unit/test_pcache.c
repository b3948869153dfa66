/* test_pcache.c - the host prompt cache's bookkeeping: byte bound, LRU
 * eviction, superseded prefixes, longest-prefix lookup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/pcache.h"

/* A sequence of n tokens: `base` then base+1, ... (distinct bases give
 * sequences that share nothing). */
static int32_t *seq(int32_t base, int n) {
    int32_t *t = malloc((size_t)n * sizeof *t);
    for (int i = 0; i < n; i++) t[i] = base + i;
    return t;
}

static void *blob(size_t size) {
    void *b = malloc(size);
    memset(b, 0x5A, size);
    return b;
}

static void test_put_and_best(void **state) {
    (void)state;
    struct pcache c;
    pcache_init(&c, 1000, 8);
    int32_t *a = seq(100, 50), *b = seq(200, 80);
    assert_int_equal(pcache_put(&c, a, 50, blob(100), 100), 0);
    assert_int_equal(pcache_put(&c, b, 80, blob(200), 200), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.bytes, 300);

    /* a prompt continuing b finds b with the whole of b shared */
    int32_t q[100];
    memcpy(q, b, 80 * sizeof *q);
    for (int i = 80; i < 100; i++) q[i] = -i;
    int lcp = -1;
    struct pcache_entry *en = pcache_best(&c, q, 100, &lcp);
    assert_non_null(en);
    assert_int_equal(lcp, 80);
    assert_int_equal(en->n_tokens, 80);
    assert_memory_equal(en->tokens, b, 80 * sizeof *b);

    /* a prompt diverging inside a: the shared part only */
    memcpy(q, a, 30 * sizeof *q);
    q[30] = -1;
    en = pcache_best(&c, q, 31, &lcp);
    assert_non_null(en);
    assert_int_equal(lcp, 30);
    assert_int_equal(en->n_tokens, 50);

    /* nothing shared */
    q[0] = 7;
    assert_null(pcache_best(&c, q, 31, &lcp));
    assert_int_equal(lcp, 0);

    /* covering: a itself and any prefix of it, not something longer */
    assert_non_null(pcache_covering(&c, a, 50));
    assert_non_null(pcache_covering(&c, a, 10));
    memcpy(q, a, 50 * sizeof *q);
    q[50] = 1;
    assert_null(pcache_covering(&c, q, 51));
    free(a);
    free(b);
    pcache_free(&c);
}

static void test_lru_eviction_by_bytes(void **state) {
    (void)state;
    struct pcache c;
    pcache_init(&c, 1000, 8);
    int32_t *s1 = seq(1000, 10), *s2 = seq(2000, 10), *s3 = seq(3000, 10), *s4 = seq(4000, 10);
    assert_int_equal(pcache_put(&c, s1, 10, blob(400), 400), 0);
    assert_int_equal(pcache_put(&c, s2, 10, blob(400), 400), 0);
    /* using s1 makes s2 the least recently used */
    pcache_touch(&c, pcache_covering(&c, s1, 10));
    assert_int_equal(pcache_put(&c, s3, 10, blob(400), 400), 0);
    assert_int_equal(c.n, 2);
    assert_true(c.bytes <= 1000);
    assert_non_null(pcache_covering(&c, s1, 10));
    assert_null(pcache_covering(&c, s2, 10));
    assert_non_null(pcache_covering(&c, s3, 10));
    assert_int_equal(c.evictions, 1);

    /* bigger than the whole cache: refused, nothing evicted */
    assert_int_equal(pcache_put(&c, s4, 10, blob(1001), 1001), -1);
    assert_int_equal(c.n, 2);
    assert_false(pcache_fits(&c, 1001));
    assert_true(pcache_fits(&c, 1000));

    /* one that needs all the room evicts everything else */
    assert_int_equal(pcache_put(&c, s4, 10, blob(1000), 1000), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.bytes, 1000);
    free(s1);
    free(s2);
    free(s3);
    free(s4);
    pcache_free(&c);
}

static void test_entry_bound(void **state) {
    (void)state;
    struct pcache c;
    pcache_init(&c, 1 << 20, 3);
    for (int i = 0; i < 10; i++) {
        int32_t *s = seq(10000 * (i + 1), 5);
        assert_int_equal(pcache_put(&c, s, 5, blob(10), 10), 0);
        free(s);
        assert_true(c.n <= 3);
    }
    assert_int_equal(c.n, 3);
    assert_int_equal(c.bytes, 30);
    /* the three newest are kept */
    for (int i = 7; i < 10; i++) {
        int32_t *s = seq(10000 * (i + 1), 5);
        assert_non_null(pcache_covering(&c, s, 5));
        free(s);
    }
    pcache_free(&c);
}

static void test_longer_supersedes_prefix(void **state) {
    (void)state;
    struct pcache c;
    pcache_init(&c, 1 << 20, 8);
    int32_t *turn2 = seq(500, 120);
    /* turn 1 of a chat is a prefix of turn 2 */
    assert_int_equal(pcache_put(&c, turn2, 60, blob(60), 60), 0);
    assert_int_equal(pcache_put(&c, turn2, 120, blob(120), 120), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.bytes, 120);
    assert_int_equal(c.e[0].n_tokens, 120);
    free(turn2);
    pcache_free(&c);
}

static void test_disabled(void **state) {
    (void)state;
    struct pcache c;
    pcache_init(&c, 0, 8);
    int32_t *s = seq(1, 5);
    assert_false(pcache_fits(&c, 1));
    assert_int_equal(pcache_put(&c, s, 5, blob(1), 1), -1);
    int lcp = -1;
    assert_null(pcache_best(&c, s, 5, &lcp));
    assert_int_equal(lcp, 0);
    free(s);
    pcache_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_and_best),
        cmocka_unit_test(test_lru_eviction_by_bytes),
        cmocka_unit_test(test_entry_bound),
        cmocka_unit_test(test_longer_supersedes_prefix),
        cmocka_unit_test(test_disabled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
