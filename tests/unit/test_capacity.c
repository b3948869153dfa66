/* test_capacity.c - host capacity sizing, pressure readings and the
 * admission gate.
 *
 * The pure parts (sizing, parsing, classification, the next step) are
 * checked as tables. The pressure monitor is driven by hand: the test writes
 * a PSI file and a meminfo file into a temp dir, points a gate at them
 * (interval_ms 0: no thread) and calls capacity_tick after each rewrite. The
 * gate's hand-off is checked with waiters whose wake callback counts calls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "capacity/capacity.h"
#include "util/log.h"

#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)

/* ------------------------------------------------------------ sizing */

static void test_size_auto_from_ram(void **state) {
    (void)state;
    static const struct {
        uint64_t ram;
        int want;
    } cases[] = {
        {0, 1},                 /* unknown: counted as 8 GiB */
        {1, 1},                 /* tiny: at least 1 */
        {4 * GiB, 1},
        {8 * GiB - 1, 1},
        {8 * GiB, 1},
        {159 * GiB / 10, 1},    /* 15.9 GiB */
        {16 * GiB - 1, 1},
        {16 * GiB, 2},
        {24 * GiB, 3},
        {63 * GiB, 7},
        {64 * GiB, 8},
        {72 * GiB, 8},          /* at most CAPACITY_AUTO_MAX */
        {TiB, 8},
        {UINT64_MAX, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum capacity_source src = CAPACITY_SRC_ENV;
        char warn[160] = "stale";
        int n = capacity_size(NULL, 0, cases[i].ram, &src, warn, sizeof warn);
        if (n != cases[i].want) fail_msg("ram %llu: got %d, want %d", (unsigned long long)cases[i].ram, n, cases[i].want);
        assert_int_equal(src, CAPACITY_SRC_AUTO);
        assert_string_equal(warn, "");
    }
}

static void test_size_config(void **state) {
    (void)state;
    static const struct {
        int cfg;
        uint64_t ram;
        int want;
        enum capacity_source src;
    } cases[] = {
        {3, 64 * GiB, 3, CAPACITY_SRC_CONFIG},   /* config wins over auto (8) */
        {1, 64 * GiB, 1, CAPACITY_SRC_CONFIG},
        {20, 8 * GiB, 20, CAPACITY_SRC_CONFIG},  /* not bound by the auto maximum */
        {CAPACITY_MAX, 0, CAPACITY_MAX, CAPACITY_SRC_CONFIG},
        {CAPACITY_MAX + 1, 0, CAPACITY_MAX, CAPACITY_SRC_CONFIG}, /* capped */
        {5000, 0, CAPACITY_MAX, CAPACITY_SRC_CONFIG},
        {0, 24 * GiB, 3, CAPACITY_SRC_AUTO},     /* unset */
        {-4, 24 * GiB, 3, CAPACITY_SRC_AUTO},    /* nonsense counts as unset */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum capacity_source src = CAPACITY_SRC_ENV;
        char warn[160] = "stale";
        int n = capacity_size(NULL, cases[i].cfg, cases[i].ram, &src, warn, sizeof warn);
        if (n != cases[i].want || src != cases[i].src)
            fail_msg("cfg %d: got %d (%s), want %d (%s)", cases[i].cfg, n, capacity_source_name(src), cases[i].want,
                     capacity_source_name(cases[i].src));
        assert_string_equal(warn, "");
    }
}

static void test_size_env(void **state) {
    (void)state;
    static const struct {
        const char *env;
        int cfg;
        int want;
        enum capacity_source src;
        bool warns;
    } cases[] = {
        /* valid: env wins over config and auto */
        {"1", 0, 1, CAPACITY_SRC_ENV, false},
        {"1", 6, 1, CAPACITY_SRC_ENV, false},
        {"8", 3, 8, CAPACITY_SRC_ENV, false},
        {" 12 ", 3, 12, CAPACITY_SRC_ENV, false},
        {"\t5\t", 0, 5, CAPACITY_SRC_ENV, false},
        {"1024", 3, 1024, CAPACITY_SRC_ENV, false},
        {"32", 2000, 32, CAPACITY_SRC_ENV, false},
        /* invalid: ignored, config or auto decides, and a warning names it */
        {"0", 3, 3, CAPACITY_SRC_CONFIG, true},
        {"-1", 3, 3, CAPACITY_SRC_CONFIG, true},
        {"abc", 0, 8, CAPACITY_SRC_AUTO, true},
        {"", 0, 8, CAPACITY_SRC_AUTO, true},
        {"   ", 5, 5, CAPACITY_SRC_CONFIG, true},
        {"3x", 0, 8, CAPACITY_SRC_AUTO, true},
        {"3 4", 0, 8, CAPACITY_SRC_AUTO, true},
        {"1.5", 2, 2, CAPACITY_SRC_CONFIG, true},
        {"1025", 0, 8, CAPACITY_SRC_AUTO, true},
        {"99999999999999999999", 4, 4, CAPACITY_SRC_CONFIG, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum capacity_source src = CAPACITY_SRC_AUTO;
        char warn[160] = "stale";
        int n = capacity_size(cases[i].env, cases[i].cfg, 64 * GiB, &src, warn, sizeof warn);
        if (n != cases[i].want || src != cases[i].src)
            fail_msg("env \"%s\" cfg %d: got %d (%s), want %d (%s)", cases[i].env, cases[i].cfg, n,
                     capacity_source_name(src), cases[i].want, capacity_source_name(cases[i].src));
        if (cases[i].warns) {
            if (!strstr(warn, CAPACITY_ENV) || !strstr(warn, cases[i].env))
                fail_msg("env \"%s\": warning does not name it: \"%s\"", cases[i].env, warn);
            char quoted[64];
            snprintf(quoted, sizeof quoted, "\"%s\"", cases[i].env);
            assert_non_null(strstr(warn, quoted));
        } else {
            if (warn[0]) fail_msg("env \"%s\": unexpected warning \"%s\"", cases[i].env, warn);
        }
    }
    /* no warn buffer at all is allowed */
    enum capacity_source src = CAPACITY_SRC_AUTO;
    assert_int_equal(capacity_size("junk", 0, 16 * GiB, &src, NULL, 0), 2);
    assert_int_equal(src, CAPACITY_SRC_AUTO);
    /* a tiny warn buffer is NUL-terminated, not overrun */
    char small[8];
    memset(small, 'x', sizeof small);
    assert_int_equal(capacity_size("junk", 0, 16 * GiB, &src, small, 4), 2);
    assert_int_equal(strlen(small), 3);
    assert_int_equal(small[4], 'x');
}

static void test_source_and_level_names(void **state) {
    (void)state;
    assert_string_equal(capacity_source_name(CAPACITY_SRC_AUTO), "auto");
    assert_string_equal(capacity_source_name(CAPACITY_SRC_CONFIG), "config");
    assert_string_equal(capacity_source_name(CAPACITY_SRC_ENV), "env");
    assert_string_equal(capacity_level_name(CAPACITY_RELIEVED), "none");
    assert_string_equal(capacity_level_name(CAPACITY_STEADY), "steady");
    assert_string_equal(capacity_level_name(CAPACITY_PRESSURE), "pressure");
    assert_string_equal(capacity_level_name(CAPACITY_CRITICAL), "critical");
}

/* ------------------------------------------------------------ parsing */

static struct capacity_reading unknown_reading(void) {
    return (struct capacity_reading){.some_avg10 = -1, .full_avg10 = -1, .mem_total = 0, .mem_available = 0};
}

static void test_parse_psi(void **state) {
    (void)state;
    struct capacity_reading rd = unknown_reading();
    assert_int_equal(capacity_parse_psi("some avg10=12.50 avg60=1.00 avg300=0.10 total=123\n"
                                        "full avg10=3.25 avg60=0.00 avg300=0.00 total=4\n",
                                        &rd),
                     0);
    assert_true(rd.some_avg10 == 12.5);
    assert_true(rd.full_avg10 == 3.25);
    assert_true(rd.mem_total == 0 && rd.mem_available == 0); /* untouched */

    /* no trailing newline, zeros */
    rd = unknown_reading();
    assert_int_equal(capacity_parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                                        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0",
                                        &rd),
                     0);
    assert_true(rd.some_avg10 == 0.0);
    assert_true(rd.full_avg10 == 0.0);

    /* only "some" (older kernels' CPU file has no "full"): full stays unknown */
    rd = unknown_reading();
    assert_int_equal(capacity_parse_psi("some avg10=7.00 avg60=1.00 avg300=0.10 total=9\n", &rd), 0);
    assert_true(rd.some_avg10 == 7.0);
    assert_true(rd.full_avg10 == -1);

    /* only "full" */
    rd = unknown_reading();
    assert_int_equal(capacity_parse_psi("full avg10=99.99 avg60=0 avg300=0 total=1\n", &rd), 0);
    assert_true(rd.some_avg10 == -1);
    assert_true(rd.full_avg10 == 99.99);

    /* garbage: nothing found, nothing changed */
    static const char *bad[] = {"", "\n\n", "hello world\n", "some avg10=abc\nfull avg10=\n",
                                "avg10=12.5\n", "MemTotal: 100 kB\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rd = unknown_reading();
        if (capacity_parse_psi(bad[i], &rd) != -1) fail_msg("psi \"%s\" parsed", bad[i]);
        assert_true(rd.some_avg10 == -1 && rd.full_avg10 == -1);
    }
}

static void test_parse_meminfo(void **state) {
    (void)state;
    static const char *meminfo = "MemTotal:       65536000 kB\n"
                                 "MemFree:         1234567 kB\n"
                                 "MemAvailable:    3276800 kB\n"
                                 "Buffers:          123456 kB\n"
                                 "Cached:          2345678 kB\n"
                                 "SwapTotal:             0 kB\n";
    struct capacity_reading rd = unknown_reading();
    assert_int_equal(capacity_parse_meminfo(meminfo, &rd), 0);
    assert_true(rd.mem_total == UINT64_C(65536000) * 1024);
    assert_true(rd.mem_available == UINT64_C(3276800) * 1024);
    assert_true(rd.some_avg10 == -1 && rd.full_avg10 == -1); /* untouched */

    /* MemAvailable missing (very old kernels): stays unknown */
    rd = unknown_reading();
    assert_int_equal(capacity_parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\n", &rd), 0);
    assert_true(rd.mem_total == 1000 * 1024);
    assert_true(rd.mem_available == 0);

    /* large values do not wrap (1 TiB in kB) */
    rd = unknown_reading();
    assert_int_equal(capacity_parse_meminfo("MemTotal: 1073741824 kB\nMemAvailable: 1073741823 kB", &rd), 0);
    assert_true(rd.mem_total == TiB);
    assert_true(rd.mem_available == TiB - 1024);

    static const char *bad[] = {"", "garbage\n", "MemFree: 100 kB\n", "MemTotal: lots\n",
                                "some avg10=1.00 avg60=0 avg300=0 total=0\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rd = unknown_reading();
        if (capacity_parse_meminfo(bad[i], &rd) != -1) fail_msg("meminfo \"%s\" parsed", bad[i]);
        assert_true(rd.mem_total == 0 && rd.mem_available == 0);
    }
}

static void test_read_missing_files(void **state) {
    (void)state;
    struct capacity_reading rd = {.some_avg10 = 50, .full_avg10 = 50, .mem_total = 7, .mem_available = 7};
    capacity_read("/nonexistent/psi", NULL, &rd);
    assert_true(rd.some_avg10 == -1 && rd.full_avg10 == -1);
    assert_true(rd.mem_total == 0 && rd.mem_available == 0);
    rd.some_avg10 = 50;
    capacity_read("", "", &rd);
    assert_true(rd.some_avg10 == -1);
}

/* ------------------------------------------------------------ classify */

static struct capacity_reading R(double some, double full, uint64_t total, uint64_t avail) {
    return (struct capacity_reading){.some_avg10 = some, .full_avg10 = full, .mem_total = total, .mem_available = avail};
}

static void test_classify(void **state) {
    (void)state;
    static const struct {
        double some, full;
        uint64_t total, avail; /* avail/total*100 = percent available */
        enum capacity_level want;
    } cases[] = {
        /* all unknown: relieved */
        {-1, -1, 0, 0, CAPACITY_RELIEVED},
        {0, 0, 1000, 1000, CAPACITY_RELIEVED},
        /* full avg10: 10 critical, 2 pressure, 0.5 steady */
        {0, 10.0, 0, 0, CAPACITY_CRITICAL},
        {0, 50.0, 0, 0, CAPACITY_CRITICAL},
        {0, 9.99, 0, 0, CAPACITY_PRESSURE},
        {0, 2.0, 0, 0, CAPACITY_PRESSURE},
        {0, 1.99, 0, 0, CAPACITY_STEADY},
        {0, 0.5, 0, 0, CAPACITY_STEADY},
        {0, 0.49, 0, 0, CAPACITY_RELIEVED},
        /* some avg10: 20 pressure, 5 steady */
        {20.0, 0, 0, 0, CAPACITY_PRESSURE},
        {100.0, 0, 0, 0, CAPACITY_PRESSURE},
        {19.99, 0, 0, 0, CAPACITY_STEADY},
        {5.0, 0, 0, 0, CAPACITY_STEADY},
        {4.99, 0, 0, 0, CAPACITY_RELIEVED},
        {4.99, -1, 0, 0, CAPACITY_RELIEVED},
        {-1, 0.49, 0, 0, CAPACITY_RELIEVED},
        /* MemAvailable percent: < 5 critical, < 10 pressure, >= 15 relieved */
        {0, 0, 1000, 1, CAPACITY_CRITICAL},
        {0, 0, 1000, 49, CAPACITY_CRITICAL},
        {-1, -1, 1000, 49, CAPACITY_CRITICAL},
        {0, 0, 1000, 50, CAPACITY_PRESSURE},   /* exactly 5 % */
        {0, 0, 1000, 99, CAPACITY_PRESSURE},
        {0, 0, 1000, 100, CAPACITY_STEADY},    /* exactly 10 % */
        {0, 0, 1000, 149, CAPACITY_STEADY},
        {0, 0, 1000, 150, CAPACITY_RELIEVED},  /* exactly 15 % */
        {0, 0, 64 * GiB, 64 * GiB, CAPACITY_RELIEVED},
        /* huge byte counts do not overflow the percentage */
        {0, 0, UINT64_MAX, UINT64_MAX / 25, CAPACITY_CRITICAL}, /* 4 % */
        {0, 0, UINT64_MAX, UINT64_MAX / 5, CAPACITY_RELIEVED},  /* 20 % */
        /* MemTotal known, MemAvailable unknown: counts as relieved */
        {0, 0, 1000, 0, CAPACITY_RELIEVED},
        /* the worst signal wins */
        {30.0, 12.0, 1000, 500, CAPACITY_CRITICAL},
        {1.0, 0.1, 1000, 40, CAPACITY_CRITICAL},
        {25.0, 0.0, 1000, 900, CAPACITY_PRESSURE},
        {1.0, 0.1, 1000, 120, CAPACITY_STEADY},
        {6.0, 0.1, 1000, 900, CAPACITY_STEADY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct capacity_reading rd = R(cases[i].some, cases[i].full, cases[i].total, cases[i].avail);
        char why[128] = "stale";
        enum capacity_level l = capacity_classify(&rd, why, sizeof why);
        if (l != cases[i].want)
            fail_msg("case %zu (some %.2f full %.2f avail %llu/%llu): got %s, want %s (%s)", i, cases[i].some,
                     cases[i].full, (unsigned long long)cases[i].avail, (unsigned long long)cases[i].total,
                     capacity_level_name(l), capacity_level_name(cases[i].want), why);
        assert_true(why[0] != '\0' && strcmp(why, "stale") != 0);
        /* why may be NULL */
        assert_int_equal(capacity_classify(&rd, NULL, 0), cases[i].want);
    }
}

static void test_classify_why(void **state) {
    (void)state;
    char why[128];
    struct capacity_reading rd = R(-1, -1, 0, 0);
    capacity_classify(&rd, why, sizeof why);
    assert_string_equal(why, "no pressure data");
    rd = R(12.5, 3.25, 0, 0);
    capacity_classify(&rd, why, sizeof why);
    assert_non_null(strstr(why, "12.5"));
    assert_non_null(strstr(why, "PSI some 12.5% full 3."));
    assert_null(strstr(why, "MemAvailable"));
    rd = R(-1, -1, 1024 * 1048576ull, 512 * 1048576ull);
    capacity_classify(&rd, why, sizeof why);
    assert_non_null(strstr(why, "MemAvailable 512 MiB"));
    assert_non_null(strstr(why, "50.0%"));
    rd = R(1.0, 0.0, 1024 * 1048576ull, 512 * 1048576ull);
    capacity_classify(&rd, why, sizeof why);
    assert_non_null(strstr(why, "PSI some 1.0%"));
    assert_non_null(strstr(why, ", MemAvailable 512 MiB"));
    /* a short buffer is truncated, not overrun */
    char tiny[6];
    memset(tiny, 'x', sizeof tiny);
    capacity_classify(&rd, tiny, 5);
    assert_int_equal(strlen(tiny), 4);
    assert_int_equal(tiny[5], 'x');
}

static void test_next(void **state) {
    (void)state;
    static const struct {
        int host, cur;
        enum capacity_level level;
        int want;
    } cases[] = {
        {8, 8, CAPACITY_CRITICAL, 1},
        {8, 3, CAPACITY_CRITICAL, 1},
        {8, 1, CAPACITY_CRITICAL, 1},
        {8, 8, CAPACITY_PRESSURE, 4},
        {8, 4, CAPACITY_PRESSURE, 2},
        {8, 2, CAPACITY_PRESSURE, 1},
        {8, 1, CAPACITY_PRESSURE, 1}, /* floor 1 */
        {7, 7, CAPACITY_PRESSURE, 3},
        {3, 3, CAPACITY_PRESSURE, 1},
        {8, 1, CAPACITY_RELIEVED, 2},
        {8, 7, CAPACITY_RELIEVED, 8},
        {8, 8, CAPACITY_RELIEVED, 8}, /* capped at host */
        {1, 1, CAPACITY_RELIEVED, 1},
        {8, 1, CAPACITY_STEADY, 1},
        {8, 5, CAPACITY_STEADY, 5},
        {8, 8, CAPACITY_STEADY, 8},
        {1024, 1024, CAPACITY_PRESSURE, 512},
        {1024, 1023, CAPACITY_RELIEVED, 1024},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = capacity_next(cases[i].host, cases[i].cur, cases[i].level);
        if (n != cases[i].want)
            fail_msg("host %d cur %d %s: got %d, want %d", cases[i].host, cases[i].cur,
                     capacity_level_name(cases[i].level), n, cases[i].want);
    }
}

/* ------------------------------------------------------------ files */

struct files {
    char dir[64];
    char psi[96];
    char meminfo[96];
};

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* PSI with the given avg10s; meminfo of 64 GiB with `avail_pct` % available. */
static void write_psi(const struct files *fs, double some, double full) {
    char text[256];
    snprintf(text, sizeof text,
             "some avg10=%.2f avg60=0.00 avg300=0.00 total=100\nfull avg10=%.2f avg60=0.00 avg300=0.00 total=10\n",
             some, full);
    write_file(fs->psi, text);
}

#define MEM_TOTAL_KB (UINT64_C(64) * 1024 * 1024)

static void write_meminfo(const struct files *fs, int avail_pct) {
    char text[256];
    snprintf(text, sizeof text, "MemTotal:       %llu kB\nMemFree:        1024 kB\nMemAvailable:   %llu kB\n",
             (unsigned long long)MEM_TOTAL_KB, (unsigned long long)(MEM_TOTAL_KB * (uint64_t)avail_pct / 100));
    write_file(fs->meminfo, text);
}

static void files_make(struct files *fs) {
    snprintf(fs->dir, sizeof fs->dir, "/tmp/test_capacity_XXXXXX");
    assert_non_null(mkdtemp(fs->dir));
    snprintf(fs->psi, sizeof fs->psi, "%s/memory", fs->dir);
    snprintf(fs->meminfo, sizeof fs->meminfo, "%s/meminfo", fs->dir);
    write_psi(fs, 0, 0);
    write_meminfo(fs, 80);
}

static void files_remove(struct files *fs) {
    assert_int_equal(unlink(fs->psi), 0);
    assert_int_equal(unlink(fs->meminfo), 0);
    assert_int_equal(rmdir(fs->dir), 0);
}

static struct capacity *gate_on_files(const struct files *fs, int cfg_max) {
    struct capacity_params p = {
        .cfg_max = cfg_max, .psi_path = fs->psi, .meminfo_path = fs->meminfo, .interval_ms = 0, .ram = 64 * GiB};
    struct capacity *c = capacity_new(&p);
    assert_non_null(c);
    return c;
}

static void test_pressure_transitions(void **state) {
    (void)state;
    struct files fs;
    files_make(&fs);
    struct capacity *c = gate_on_files(&fs, 8);
    struct capacity_snapshot s;

    assert_int_equal(capacity_host(c), 8);
    assert_int_equal(capacity_effective(c), 8);
    capacity_snapshot(c, &s);
    assert_int_equal(s.host, 8);
    assert_int_equal(s.host_source, CAPACITY_SRC_CONFIG);
    assert_true(s.ram == 64 * GiB);
    assert_int_equal(s.effective, 8);
    assert_false(s.reduced);
    assert_int_equal(s.level, CAPACITY_RELIEVED);
    assert_int_equal(s.changes, 0);
    assert_true(s.reading.some_avg10 == 0.0 && s.reading.full_avg10 == 0.0);
    assert_true(s.reading.mem_total == MEM_TOTAL_KB * 1024);
    assert_true(s.reading.mem_available == MEM_TOTAL_KB * 80 / 100 * 1024);

    /* high PSI: halve each reading down to 1 */
    write_psi(&fs, 30.0, 0.0);
    assert_int_equal(capacity_tick(c), 4);
    assert_int_equal(capacity_effective(c), 4);
    capacity_snapshot(c, &s);
    assert_int_equal(s.effective, 4);
    assert_true(s.reduced);
    assert_int_equal(s.level, CAPACITY_PRESSURE);
    assert_int_equal(s.changes, 1);
    assert_true(s.reading.some_avg10 == 30.0);
    assert_non_null(strstr(s.why, "PSI some 30.0%"));
    assert_int_equal(capacity_tick(c), 2);
    assert_int_equal(capacity_tick(c), 1);
    assert_int_equal(capacity_tick(c), 1);
    assert_int_equal(capacity_tick(c), 1);
    capacity_snapshot(c, &s);
    assert_int_equal(s.effective, 1);
    assert_int_equal(s.changes, 3); /* 8->4->2->1; the stays are no change */
    assert_int_equal(capacity_free_permits(c), 1);

    /* relieved: one step per reading, up to the host and not beyond */
    write_psi(&fs, 1.0, 0.0);
    for (int want = 2; want <= 8; want++) assert_int_equal(capacity_tick(c), want);
    assert_int_equal(capacity_tick(c), 8);
    assert_int_equal(capacity_tick(c), 8);
    capacity_snapshot(c, &s);
    assert_int_equal(s.effective, 8);
    assert_false(s.reduced);
    assert_int_equal(s.level, CAPACITY_RELIEVED);
    assert_int_equal(s.changes, 3 + 7);

    /* full PSI critical: straight to 1 */
    write_psi(&fs, 0.0, 15.0);
    assert_int_equal(capacity_tick(c), 1);
    capacity_snapshot(c, &s);
    assert_int_equal(s.level, CAPACITY_CRITICAL);
    assert_int_equal(s.changes, 11);
    write_psi(&fs, 0.0, 0.0);
    for (int want = 2; want <= 8; want++) assert_int_equal(capacity_tick(c), want);

    /* MemAvailable under 5 %: straight to 1 */
    write_meminfo(&fs, 3);
    assert_int_equal(capacity_tick(c), 1);
    capacity_snapshot(c, &s);
    assert_int_equal(s.level, CAPACITY_CRITICAL);
    assert_true(s.reduced);
    assert_true(s.reading.mem_available == MEM_TOTAL_KB * 3 / 100 * 1024);
    assert_non_null(strstr(s.why, "MemAvailable"));
    int64_t changes = s.changes;

    /* MemAvailable 12 %: steady, holds at 1 */
    write_meminfo(&fs, 12);
    assert_int_equal(capacity_tick(c), 1);
    assert_int_equal(capacity_tick(c), 1);
    capacity_snapshot(c, &s);
    assert_int_equal(s.level, CAPACITY_STEADY);
    assert_int_equal(s.changes, changes);

    /* relieve to 3, then a steady PSI holds 3 */
    write_meminfo(&fs, 50);
    assert_int_equal(capacity_tick(c), 2);
    assert_int_equal(capacity_tick(c), 3);
    write_psi(&fs, 10.0, 0.0);
    assert_int_equal(capacity_tick(c), 3);
    assert_int_equal(capacity_tick(c), 3);
    capacity_snapshot(c, &s);
    assert_int_equal(s.level, CAPACITY_STEADY);
    assert_int_equal(s.effective, 3);
    assert_true(s.reduced);
    assert_int_equal(s.changes, changes + 2);

    /* MemAvailable 8 %: pressure halves 3 -> 1 */
    write_psi(&fs, 0.0, 0.0);
    write_meminfo(&fs, 8);
    assert_int_equal(capacity_tick(c), 1);
    capacity_snapshot(c, &s);
    assert_int_equal(s.level, CAPACITY_PRESSURE);

    /* the files vanish: unknown counts as relieved */
    files_remove(&fs);
    assert_int_equal(capacity_tick(c), 2);
    capacity_snapshot(c, &s);
    assert_int_equal(s.level, CAPACITY_RELIEVED);
    assert_true(s.reading.some_avg10 == -1 && s.reading.full_avg10 == -1);
    assert_true(s.reading.mem_total == 0 && s.reading.mem_available == 0);
    assert_string_equal(s.why, "no pressure data");
    capacity_free(c);
}

static void test_gate_starts_pressured(void **state) {
    (void)state;
    struct files fs;
    files_make(&fs);
    write_psi(&fs, 0.0, 20.0); /* critical before the gate exists */
    struct capacity *c = gate_on_files(&fs, 4);
    assert_int_equal(capacity_host(c), 4);
    assert_int_equal(capacity_effective(c), 1); /* the first reading applies at once */
    struct capacity_snapshot s;
    capacity_snapshot(c, &s);
    assert_true(s.reduced);
    assert_int_equal(s.changes, 1);
    capacity_free(c);
    files_remove(&fs);
}

/* ------------------------------------------------------------ the gate */

struct waker {
    int calls;
};

static void count_wake(void *ctx) { ((struct waker *)ctx)->calls++; }

static struct capacity *gate_without_pressure(int cfg_max) {
    struct capacity_params p = {.cfg_max = cfg_max, .psi_path = "", .meminfo_path = "", .interval_ms = 0, .ram = 64 * GiB};
    struct capacity *c = capacity_new(&p);
    assert_non_null(c);
    assert_int_equal(capacity_effective(c), cfg_max);
    return c;
}

static int in_use(struct capacity *c) {
    struct capacity_snapshot s;
    capacity_snapshot(c, &s);
    return s.in_use;
}

static int waiting(struct capacity *c) {
    struct capacity_snapshot s;
    capacity_snapshot(c, &s);
    return s.waiters;
}

static void test_gate_handoff_order(void **state) {
    (void)state;
    struct capacity *c = gate_without_pressure(2);
    struct waker k0 = {0}, k1 = {0}, k2 = {0};
    struct capacity_waiter w0, w1, w2;
    capacity_waiter_init(&w0, count_wake, &k0);
    capacity_waiter_init(&w1, count_wake, &k1);
    capacity_waiter_init(&w2, count_wake, &k2);

    assert_int_equal(capacity_free_permits(c), 2);
    assert_true(capacity_acquire(c, &w0, 10));
    assert_true(capacity_acquire(c, &w0, 20));
    assert_int_equal(in_use(c), 2);
    assert_int_equal(capacity_free_permits(c), 0);
    assert_int_equal(waiting(c), 0);

    /* full: w1 (oldest request at 100) waits, then w2 with an older one (50) */
    assert_false(capacity_acquire(c, &w1, 100));
    assert_false(capacity_acquire(c, &w2, 50));
    assert_int_equal(waiting(c), 2);
    assert_int_equal(k1.calls + k2.calls, 0);
    /* asking again while waiting does not queue twice */
    assert_false(capacity_acquire(c, &w1, 100));
    assert_int_equal(waiting(c), 2);

    /* a release goes to w2, whose request has waited longest */
    capacity_release(c);
    assert_int_equal(k2.calls, 1);
    assert_int_equal(atomic_load(&w2.granted), 1);
    assert_int_equal(k1.calls, 0);
    assert_int_equal(atomic_load(&w1.granted), 0);
    assert_int_equal(in_use(c), 2); /* the grant stays counted as in use */
    assert_int_equal(capacity_free_permits(c), 0);
    assert_int_equal(waiting(c), 1);

    /* the next release goes to w1 */
    capacity_release(c);
    assert_int_equal(k1.calls, 1);
    assert_int_equal(atomic_load(&w1.granted), 1);
    assert_int_equal(k2.calls, 1);
    assert_int_equal(in_use(c), 2);
    assert_int_equal(waiting(c), 0);

    /* taking a grant consumes it and holds the permit */
    assert_true(capacity_acquire(c, &w2, 50));
    assert_int_equal(atomic_load(&w2.granted), 0);
    assert_true(capacity_acquire(c, &w1, 100));
    assert_int_equal(atomic_load(&w1.granted), 0);
    assert_int_equal(in_use(c), 2);
    assert_int_equal(capacity_free_permits(c), 0);
    /* no grant left: w1 waits again */
    assert_false(capacity_acquire(c, &w1, 300));
    assert_int_equal(waiting(c), 1);

    /* withdrawing a waiter without a grant just removes it */
    capacity_withdraw(c, &w1);
    assert_int_equal(waiting(c), 0);
    assert_int_equal(in_use(c), 2);

    /* with nobody waiting, releases free permits */
    capacity_release(c);
    assert_int_equal(in_use(c), 1);
    assert_int_equal(capacity_free_permits(c), 1);
    capacity_release(c);
    assert_int_equal(in_use(c), 0);
    assert_int_equal(capacity_free_permits(c), 2);
    /* an extra release does not go below zero */
    capacity_release(c);
    assert_int_equal(in_use(c), 0);
    assert_int_equal(capacity_free_permits(c), 2);
    assert_int_equal(k0.calls, 0);

    capacity_withdraw(c, &w0);
    capacity_withdraw(c, &w2);
    capacity_free(c);
}

static void test_gate_withdraw_passes_grant_on(void **state) {
    (void)state;
    struct capacity *c = gate_without_pressure(2);
    struct waker k0 = {0}, k1 = {0}, k2 = {0};
    struct capacity_waiter w0, w1, w2;
    capacity_waiter_init(&w0, count_wake, &k0);
    capacity_waiter_init(&w1, count_wake, &k1);
    capacity_waiter_init(&w2, count_wake, &k2);

    assert_true(capacity_acquire(c, &w0, 1));
    assert_true(capacity_acquire(c, &w0, 2));
    assert_false(capacity_acquire(c, &w1, 10));
    assert_false(capacity_acquire(c, &w2, 20));
    capacity_release(c);
    assert_int_equal(atomic_load(&w1.granted), 1);
    assert_int_equal(in_use(c), 2);

    /* w1 goes away with its grant unused: the permit moves on to w2 */
    capacity_withdraw(c, &w1);
    assert_int_equal(atomic_load(&w1.granted), 0);
    assert_int_equal(k2.calls, 1);
    assert_int_equal(atomic_load(&w2.granted), 1);
    assert_int_equal(in_use(c), 2);
    assert_int_equal(waiting(c), 0);
    assert_int_equal(capacity_free_permits(c), 0);

    /* w2 goes away too: nobody waits, so the permit is freed */
    capacity_withdraw(c, &w2);
    assert_int_equal(atomic_load(&w2.granted), 0);
    assert_int_equal(in_use(c), 1);
    assert_int_equal(capacity_free_permits(c), 1);
    assert_int_equal(k2.calls, 1);

    /* a newcomer gets the freed permit at once */
    struct waker k3 = {0};
    struct capacity_waiter w3;
    capacity_waiter_init(&w3, count_wake, &k3);
    assert_true(capacity_acquire(c, &w3, 500));
    assert_int_equal(in_use(c), 2);
    assert_int_equal(k3.calls, 0);

    capacity_release(c);
    capacity_release(c);
    assert_int_equal(in_use(c), 0);
    capacity_withdraw(c, &w0);
    capacity_withdraw(c, &w3);
    capacity_free(c);
}

/* A permit given back while someone waits is handed to the waiter, never
 * left free for a newcomer to take, however new or old the newcomer's
 * request; among waiters the oldest request wins. */
static void test_gate_newcomer_cannot_jump_queue(void **state) {
    (void)state;
    struct capacity *c = gate_without_pressure(1);
    struct waker k0 = {0}, k1 = {0}, k2 = {0};
    struct capacity_waiter w0, w1, w2;
    capacity_waiter_init(&w0, count_wake, &k0);
    capacity_waiter_init(&w1, count_wake, &k1);
    capacity_waiter_init(&w2, count_wake, &k2);

    assert_true(capacity_acquire(c, &w0, 1));
    assert_false(capacity_acquire(c, &w1, 100)); /* w1 queues */
    capacity_release(c);                          /* handed straight to w1 */
    assert_int_equal(atomic_load(&w1.granted), 1);
    assert_int_equal(capacity_free_permits(c), 0);
    /* a newcomer, even with an older request, finds nothing free */
    assert_false(capacity_acquire(c, &w2, 5));
    assert_int_equal(atomic_load(&w2.granted), 0);
    assert_int_equal(waiting(c), 1);
    /* w1 takes its grant */
    assert_true(capacity_acquire(c, &w1, 100));
    assert_int_equal(in_use(c), 1);

    /* w0 comes back with a request older than w2's: it queues, and as the
     * oldest it gets the next permit; w2 waits on */
    assert_false(capacity_acquire(c, &w0, 2));
    assert_int_equal(waiting(c), 2);
    capacity_release(c);
    assert_int_equal(atomic_load(&w0.granted), 1);
    assert_int_equal(k0.calls, 1);
    assert_int_equal(atomic_load(&w2.granted), 0);
    assert_int_equal(k2.calls, 0);
    assert_int_equal(waiting(c), 1);
    /* w0 takes its grant and gives it back: now w2 is served */
    assert_true(capacity_acquire(c, &w0, 2));
    capacity_release(c);
    assert_int_equal(atomic_load(&w2.granted), 1);
    assert_int_equal(k2.calls, 1);
    assert_true(capacity_acquire(c, &w2, 5));
    capacity_release(c);
    assert_int_equal(in_use(c), 0);
    assert_int_equal(capacity_free_permits(c), 1);

    capacity_withdraw(c, &w0);
    capacity_withdraw(c, &w1);
    capacity_withdraw(c, &w2);
    capacity_free(c);
}

static void test_gate_capacity_rise_wakes_waiters(void **state) {
    (void)state;
    struct files fs;
    files_make(&fs);
    write_meminfo(&fs, 2); /* critical from the start */
    struct capacity *c = gate_on_files(&fs, 4);
    assert_int_equal(capacity_effective(c), 1);

    struct waker k0 = {0}, k1 = {0}, k2 = {0};
    struct capacity_waiter w0, w1, w2;
    capacity_waiter_init(&w0, count_wake, &k0);
    capacity_waiter_init(&w1, count_wake, &k1);
    capacity_waiter_init(&w2, count_wake, &k2);
    assert_true(capacity_acquire(c, &w0, 1));
    assert_false(capacity_acquire(c, &w1, 30));
    assert_false(capacity_acquire(c, &w2, 20));
    assert_int_equal(waiting(c), 2);

    /* a steady reading changes nothing */
    write_meminfo(&fs, 12);
    assert_int_equal(capacity_tick(c), 1);
    assert_int_equal(k1.calls + k2.calls, 0);

    /* relieved: 1 -> 2, the new permit goes to the oldest waiter (w2) */
    write_meminfo(&fs, 80);
    assert_int_equal(capacity_tick(c), 2);
    assert_int_equal(k2.calls, 1);
    assert_int_equal(atomic_load(&w2.granted), 1);
    assert_int_equal(k1.calls, 0);
    assert_int_equal(in_use(c), 2);
    assert_int_equal(waiting(c), 1);
    /* 2 -> 3: w1 */
    assert_int_equal(capacity_tick(c), 3);
    assert_int_equal(k1.calls, 1);
    assert_int_equal(atomic_load(&w1.granted), 1);
    assert_int_equal(in_use(c), 3);
    assert_int_equal(waiting(c), 0);
    /* 3 -> 4: nobody waits, the permit is free */
    assert_int_equal(capacity_tick(c), 4);
    assert_int_equal(in_use(c), 3);
    assert_int_equal(capacity_free_permits(c), 1);

    /* pressure back to 1 with 3 in use: nothing free, releases do not
     * hand out until in use drops under effective */
    write_meminfo(&fs, 2);
    assert_int_equal(capacity_tick(c), 1);
    assert_int_equal(capacity_free_permits(c), 0);
    assert_true(capacity_acquire(c, &w1, 30)); /* a grant made earlier is still good */
    assert_true(capacity_acquire(c, &w2, 20));
    assert_false(capacity_acquire(c, &w0, 40));
    capacity_release(c);
    capacity_release(c);
    assert_int_equal(in_use(c), 1);
    assert_int_equal(k0.calls, 0); /* still at capacity: no hand-off */
    capacity_release(c);
    assert_int_equal(k0.calls, 1);
    assert_int_equal(atomic_load(&w0.granted), 1);
    assert_int_equal(in_use(c), 1);
    assert_true(capacity_acquire(c, &w0, 40));
    capacity_release(c);
    assert_int_equal(in_use(c), 0);

    capacity_withdraw(c, &w0);
    capacity_withdraw(c, &w1);
    capacity_withdraw(c, &w2);
    capacity_free(c);
    files_remove(&fs);
}

/* ------------------------------------------------------------ numbers */

static void test_wait_histogram(void **state) {
    (void)state;
    struct capacity *c = gate_without_pressure(2);
    struct capacity_snapshot s;
    capacity_snapshot(c, &s);
    assert_int_equal(s.admitted, 0);
    assert_int_equal(s.wait_count, 0);
    assert_true(s.wait_sum_s == 0.0);
    for (int i = 0; i < CAPACITY_WAIT_BUCKETS; i++) assert_int_equal(s.wait_buckets[i], 0);

    /* bounds are increasing */
    for (int i = 1; i < CAPACITY_WAIT_BUCKETS; i++) assert_true(capacity_wait_bounds[i] > capacity_wait_bounds[i - 1]);

    capacity_note_admit(c, 30000); /* 30 ms */
    capacity_snapshot(c, &s);
    assert_int_equal(s.admitted, 1);
    assert_int_equal(s.wait_count, 1);
    assert_true(s.wait_sum_s > 0.0299999 && s.wait_sum_s < 0.0300001);
    for (int i = 0; i < CAPACITY_WAIT_BUCKETS; i++) {
        int64_t want = capacity_wait_bounds[i] >= 0.05 ? 1 : 0;
        if (s.wait_buckets[i] != want)
            fail_msg("30 ms: bucket le=%g holds %lld, want %lld", capacity_wait_bounds[i],
                     (long long)s.wait_buckets[i], (long long)want);
    }

    /* 0, exactly 25 ms (le is inclusive), 2 s, and past the last bound */
    capacity_note_admit(c, 0);
    capacity_note_admit(c, 25000);
    capacity_note_admit(c, 2000000);
    capacity_note_admit(c, 61000000);
    capacity_snapshot(c, &s);
    assert_int_equal(s.admitted, 5);
    assert_int_equal(s.wait_count, 5);
    assert_true(s.wait_sum_s > 63.054999 && s.wait_sum_s < 63.055001);
    for (int i = 0; i < CAPACITY_WAIT_BUCKETS; i++) {
        double b = capacity_wait_bounds[i];
        int64_t want = 1 /* 0 */ + (b >= 0.025) + (b >= 0.03) + (b >= 2.0); /* 61 s: only +Inf */
        if (s.wait_buckets[i] != want)
            fail_msg("bucket le=%g holds %lld, want %lld", b, (long long)s.wait_buckets[i], (long long)want);
        if (i > 0) assert_true(s.wait_buckets[i] >= s.wait_buckets[i - 1]); /* cumulative */
    }
    assert_true(s.wait_buckets[CAPACITY_WAIT_BUCKETS - 1] == 4); /* the 61 s one is only in the count */

    /* refusals by reason; an out-of-range reason is ignored (and writes
     * nothing next to the counters) */
    struct capacity_snapshot before = s;
    capacity_note_reject(c, CAPACITY_REJECT_QUEUE_FULL);
    capacity_note_reject(c, CAPACITY_REJECT_QUEUE_FULL);
    capacity_note_reject(c, CAPACITY_REJECT_TIMEOUT);
    capacity_note_reject(c, CAPACITY__REJECT_COUNT);
    capacity_note_reject(c, (enum capacity_reject)-1);
    capacity_snapshot(c, &s);
    assert_int_equal(s.rejected[CAPACITY_REJECT_QUEUE_FULL], 2);
    assert_int_equal(s.rejected[CAPACITY_REJECT_TIMEOUT], 1);
    assert_int_equal(s.admitted, 5); /* refusals are not admissions */
    assert_int_equal(s.wait_count, 5);
    assert_memory_equal(s.wait_buckets, before.wait_buckets, sizeof s.wait_buckets);
    assert_true(s.wait_sum_s == before.wait_sum_s);
    capacity_free(c);
}

static void test_env_param_and_defaults(void **state) {
    (void)state;
    /* the env value given in params wins; an invalid one is ignored */
    struct capacity_params p = {.cfg_max = 3, .env_value = "5", .psi_path = "", .meminfo_path = "", .ram = 8 * GiB};
    struct capacity *c = capacity_new(&p);
    assert_non_null(c);
    struct capacity_snapshot s;
    capacity_snapshot(c, &s);
    assert_int_equal(s.host, 5);
    assert_int_equal(s.host_source, CAPACITY_SRC_ENV);
    assert_int_equal(s.effective, 5);
    assert_int_equal(s.level, CAPACITY_RELIEVED);
    assert_string_equal(s.why, "no pressure data");
    capacity_free(c);

    p.env_value = "zero";
    c = capacity_new(&p);
    assert_non_null(c);
    assert_int_equal(capacity_host(c), 3);
    capacity_snapshot(c, &s);
    assert_int_equal(s.host_source, CAPACITY_SRC_CONFIG);
    capacity_free(c);

    /* ram 0: read from the host, at least 1 */
    struct capacity_params q = {.psi_path = "", .meminfo_path = ""};
    c = capacity_new(&q);
    assert_non_null(c);
    capacity_snapshot(c, &s);
    assert_true(s.ram > 0);
    assert_int_equal(s.host_source, CAPACITY_SRC_AUTO);
    assert_true(s.host >= 1 && s.host <= CAPACITY_AUTO_MAX);
    uint64_t want = s.ram / CAPACITY_BYTES_PER_GENERATION;
    if (want < 1) want = 1;
    if (want > CAPACITY_AUTO_MAX) want = CAPACITY_AUTO_MAX;
    assert_int_equal(s.host, (int)want);
    capacity_free(c);
}

static void nap_ms(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A monitor thread with a short interval notices a change on its own. */
static void test_monitor_thread(void **state) {
    (void)state;
    struct files fs;
    files_make(&fs);
    struct capacity_params p = {
        .cfg_max = 4, .psi_path = fs.psi, .meminfo_path = fs.meminfo, .interval_ms = 5, .ram = 64 * GiB};
    struct capacity *c = capacity_new(&p);
    assert_non_null(c);
    assert_int_equal(capacity_effective(c), 4);
    write_psi(&fs, 0.0, 50.0);
    for (int i = 0; i < 400 && capacity_effective(c) != 1; i++) nap_ms(5);
    assert_int_equal(capacity_effective(c), 1);
    write_psi(&fs, 0.0, 0.0);
    for (int i = 0; i < 400 && capacity_effective(c) != 4; i++) nap_ms(5);
    assert_int_equal(capacity_effective(c), 4);
    capacity_free(c); /* joins the thread promptly */
    files_remove(&fs);
}

int main(void) {
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_auto_from_ram),
        cmocka_unit_test(test_size_config),
        cmocka_unit_test(test_size_env),
        cmocka_unit_test(test_source_and_level_names),
        cmocka_unit_test(test_parse_psi),
        cmocka_unit_test(test_parse_meminfo),
        cmocka_unit_test(test_read_missing_files),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_classify_why),
        cmocka_unit_test(test_next),
        cmocka_unit_test(test_pressure_transitions),
        cmocka_unit_test(test_gate_starts_pressured),
        cmocka_unit_test(test_gate_handoff_order),
        cmocka_unit_test(test_gate_withdraw_passes_grant_on),
        cmocka_unit_test(test_gate_newcomer_cannot_jump_queue),
        cmocka_unit_test(test_gate_capacity_rise_wakes_waiters),
        cmocka_unit_test(test_wait_histogram),
        cmocka_unit_test(test_env_param_and_defaults),
        cmocka_unit_test(test_monitor_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
