/* test_conns.c - connection records: per-address counts, phase deadlines,
 * end-of-stream detection and the request-memory bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/conns.h"
#include "util/time.h"

static struct sockaddr_in v4(const char *ip) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

#define SA(a) ((const struct sockaddr *)&(a)), sizeof(a)

static void test_per_address_counts(void **state) {
    (void)state;
    struct conns_params p = {.header_timeout_ms = 60000, .body_timeout_ms = 60000, .per_ip = 2, .mem_limit = 100};
    struct conns *cs = conns_new(&p);
    assert_non_null(cs);
    struct sockaddr_in far = v4("10.0.0.7"), other = v4("10.0.0.8"), loop = v4("127.0.0.1");
    struct sockaddr_in loop2 = v4("127.3.2.1");
    assert_true(conns_addr_loopback(SA(loop)));
    assert_true(conns_addr_loopback(SA(loop2)));
    assert_false(conns_addr_loopback(SA(far)));
    assert_false(conns_addr_loopback(NULL, 0));
    struct conn_rec *a = conns_open(cs, -1, SA(far));
    struct conn_rec *b = conns_open(cs, -1, SA(far));
    assert_true(conns_may_accept(cs, SA(other)));
    assert_false(conns_may_accept(cs, SA(far))); /* a remote address at its cap is refused */
    assert_false(conns_over_limit(cs, a));
    struct conn_rec *l[3];
    for (int i = 0; i < 3; i++) l[i] = conns_open(cs, -1, SA(loop));
    assert_true(conns_may_accept(cs, SA(loop))); /* loopback is not capped per address */
    assert_false(conns_over_limit(cs, l[0]));
    assert_int_equal(conns_count(cs), 5);
    /* a remote one that slipped past the accept check is over */
    struct conn_rec *c3 = conns_open(cs, -1, SA(far));
    assert_true(conns_over_limit(cs, c3));
    assert_true(conns_over_limit(cs, b)); /* the address is over, whichever record asks */
    conns_close(cs, c3);
    assert_false(conns_over_limit(cs, a));
    conns_close(cs, l[2]);
    conns_close(cs, b);
    assert_true(conns_may_accept(cs, SA(far)));
    conns_close(cs, a);
    conns_close(cs, l[0]);
    conns_close(cs, l[1]);
    conns_close(cs, NULL);
    assert_int_equal(conns_count(cs), 0);
    conns_free(cs);
}

static void test_memory_bound(void **state) {
    (void)state;
    struct conns_params p = {.header_timeout_ms = 1000, .body_timeout_ms = 1000, .mem_limit = 100};
    struct conns *cs = conns_new(&p);
    assert_true(conns_mem_take(cs, 60));
    assert_false(conns_mem_take(cs, 41));
    assert_true(conns_mem_take(cs, 40));
    assert_false(conns_mem_take(cs, 1));
    assert_false(conns_mem_take(cs, SIZE_MAX));
    assert_int_equal(conns_mem_used(cs), 100);
    conns_mem_give(cs, 100);
    assert_int_equal(conns_mem_used(cs), 0);
    conns_free(cs);
}

/* ms until fd reads end-of-stream, or -1 after limit_ms */
static int64_t until_eof(int fd, int limit_ms) {
    int64_t t0 = time_now_ms();
    while (time_now_ms() - t0 < limit_ms) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 20) > 0) {
            char c;
            if (read(fd, &c, 1) <= 0) return time_now_ms() - t0;
        }
    }
    return -1;
}

static void test_deadlines(void **state) {
    (void)state;
    struct conns_params p = {.header_timeout_ms = 300, .body_timeout_ms = 300, .mem_limit = 100};
    struct conns *cs = conns_new(&p);
    struct sockaddr_in loop = v4("127.0.0.1");
    int hd[2], bd[2], busy[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, hd), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, bd), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, busy), 0);
    struct conn_rec *h = conns_open(cs, hd[0], SA(loop));
    struct conn_rec *b = conns_open(cs, bd[0], SA(loop));
    struct conn_rec *k = conns_open(cs, busy[0], SA(loop));
    conns_busy(cs, k); /* dispatched: no deadline */
    /* the body keeps arriving for a while, then stops */
    for (int i = 0; i < 4; i++) {
        conns_body(cs, b);
        struct timespec ts = {0, 150 * 1000000L};
        nanosleep(&ts, NULL);
    }
    int64_t th = until_eof(hd[1], 2000);
    assert_true(th >= 0); /* headers never completed: closed */
    int64_t tb = until_eof(bd[1], 2000);
    assert_true(tb >= 0 && tb < 1000);
    assert_int_equal(until_eof(busy[1], 600), -1); /* still open */
    assert_int_equal(conns_timeouts(cs), 2);
    conns_close(cs, h);
    conns_close(cs, b);
    conns_close(cs, k);
    for (int i = 0; i < 2; i++) {
        close(hd[i]);
        close(bd[i]);
        close(busy[i]);
    }
    conns_free(cs);
}

static void test_client_end_of_stream(void **state) {
    (void)state;
    struct conns_params p = {.header_timeout_ms = 60000, .body_timeout_ms = 60000, .mem_limit = 100};
    struct conns *cs = conns_new(&p);
    struct sockaddr_in loop = v4("127.0.0.1");
    int a[2], busy[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, busy), 0);
    struct conn_rec *ra = conns_open(cs, a[0], SA(loop));
    struct conn_rec *rb = conns_open(cs, busy[0], SA(loop));
    conns_body(cs, ra);
    conns_busy(cs, rb);
    shutdown(a[1], SHUT_WR); /* the client half-closes mid-request */
    shutdown(busy[1], SHUT_WR); /* a dispatched request is the engine's to notice */
    int64_t t = until_eof(a[1], 2000);
    assert_true(t >= 0 && t < 1000);
    assert_int_equal(until_eof(busy[1], 500), -1);
    assert_int_equal(conns_timeouts(cs), 0);
    conns_close(cs, ra);
    conns_close(cs, rb);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(busy[i]);
    }
    conns_free(cs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_address_counts),
        cmocka_unit_test(test_memory_bound),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_client_end_of_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
