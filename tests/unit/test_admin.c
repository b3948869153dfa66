/* test_admin.c - the /capacity JSON and the Prometheus /metrics text.
 *
 * The sample and family helpers are checked byte for byte. The full views are
 * built from a hand-made struct admin_view (capacity snapshot, pool stats,
 * two models, response counts): the test looks for specific lines and
 * checks that every line of /metrics is valid text format 0.0.4 (HELP/TYPE
 * once per family, before its samples; names, labels, values well formed).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "api/admin.h"
#include "util/buf.h"

#define GiB (UINT64_C(1) << 30)

/* ------------------------------------------------------------ helpers */

static void sample_is(const char *name, const char *const *labels, size_t n, double v, const char *want) {
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(admin_prom_sample(&b, name, labels, n, v), 0);
    assert_non_null(b.data);
    if (strcmp(b.data, want) != 0) fail_msg("got \"%s\", want \"%s\"", b.data, want);
    buf_free(&b);
}

static void test_sample_labels(void **state) {
    (void)state;
    sample_is("corral_x", NULL, 0, 1, "corral_x 1\n");
    const char *one[] = {"model", "a"};
    sample_is("corral_x", one, 1, 2, "corral_x{model=\"a\"} 2\n");
    const char *two[] = {"model", "llama-3.2", "reason", "queue_full"};
    sample_is("corral_x_total", two, 2, 3, "corral_x_total{model=\"llama-3.2\",reason=\"queue_full\"} 3\n");
    const char *empty[] = {"model", ""};
    sample_is("m", empty, 1, 0, "m{model=\"\"} 0\n");
}

static void test_sample_escaping(void **state) {
    (void)state;
    const char *bs[] = {"path", "C:\\models\\a"};
    sample_is("m", bs, 1, 1, "m{path=\"C:\\\\models\\\\a\"} 1\n");
    const char *dq[] = {"id", "say \"hi\""};
    sample_is("m", dq, 1, 1, "m{id=\"say \\\"hi\\\"\"} 1\n");
    const char *nl[] = {"id", "two\nlines\n"};
    sample_is("m", nl, 1, 1, "m{id=\"two\\nlines\\n\"} 1\n");
    const char *all[] = {"a", "\\\"\n", "b", "x\\n"};
    sample_is("m", all, 2, 1, "m{a=\"\\\\\\\"\\n\",b=\"x\\\\n\"} 1\n");
    /* other bytes (UTF-8, tabs, braces) pass through untouched */
    const char *other[] = {"id", "mod\xc3\xa8le\t{x}"};
    sample_is("m", other, 1, 1, "m{id=\"mod\xc3\xa8le\t{x}\"} 1\n");
}

static void test_sample_values(void **state) {
    (void)state;
    /* integers print without decimals or exponent */
    sample_is("m", NULL, 0, 0, "m 0\n");
    sample_is("m", NULL, 0, 7, "m 7\n");
    sample_is("m", NULL, 0, -3, "m -3\n");
    sample_is("m", NULL, 0, 1024.0 * 1024 * 1024 * 64, "m 68719476736\n");
    sample_is("m", NULL, 0, 1e15, "m 1000000000000000\n");
    sample_is("m", NULL, 0, 8999999999999999.0, "m 8999999999999999\n");
    /* fractions */
    sample_is("m", NULL, 0, 0.5, "m 0.5\n");
    sample_is("m", NULL, 0, 12.25, "m 12.25\n");
    sample_is("m", NULL, 0, -2.5, "m -2.5\n");
    /* specials */
    sample_is("m", NULL, 0, NAN, "m NaN\n");
    sample_is("m", NULL, 0, INFINITY, "m +Inf\n");
    sample_is("m", NULL, 0, -INFINITY, "m -Inf\n");
    const char *lab[] = {"le", "+Inf"};
    sample_is("m_bucket", lab, 1, 9, "m_bucket{le=\"+Inf\"} 9\n");

    /* whatever the form, the value reads back exactly */
    static const double vals[] = {0.1, 1.0 / 3, 2.5e-7, 12345.678, 1e16, 3e20, -0.001, 123456789012.5};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        struct buf b;
        buf_init(&b, 0);
        assert_int_equal(admin_prom_sample(&b, "m", NULL, 0, vals[i]), 0);
        assert_true(strncmp(b.data, "m ", 2) == 0);
        char *end = NULL;
        double back = strtod(b.data + 2, &end);
        assert_string_equal(end, "\n");
        if (back != vals[i]) fail_msg("%.17g printed as \"%s\"", vals[i], b.data);
        buf_free(&b);
    }
}

static void test_sample_cap(void **state) {
    (void)state;
    struct buf b;
    buf_init(&b, 8);
    assert_int_equal(admin_prom_sample(&b, "a_very_long_metric_name", NULL, 0, 1), -1);
    buf_free(&b);
    buf_init(&b, 12);
    const char *lab[] = {"model", "abcdef"};
    assert_int_equal(admin_prom_sample(&b, "m", lab, 1, 1), -1);
    buf_free(&b);
}

static void test_family(void **state) {
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(admin_prom_family(&b, "corral_slots_busy", "gauge", "Sequence slots running a request."), 0);
    assert_string_equal(b.data,
                        "# HELP corral_slots_busy Sequence slots running a request.\n# TYPE corral_slots_busy gauge\n");
    buf_free(&b);
}

/* ------------------------------------------------------------ the view */

struct fixture {
    struct capacity_snapshot cap;
    struct pool_stats pool;
    struct pool_model_info models[2];
    int codes[4];
    int64_t counts[4];
    struct admin_view v;
};

static void fixture_init(struct fixture *f) {
    memset(f, 0, sizeof *f);
    static const int64_t buckets[CAPACITY_WAIT_BUCKETS] = {0, 1, 2, 3, 5, 6, 7, 8, 8, 8, 8, 8, 8};
    f->cap = (struct capacity_snapshot){
        .host = 4,
        .host_source = CAPACITY_SRC_CONFIG,
        .ram = 64 * GiB,
        .effective = 2,
        .reduced = true,
        .level = CAPACITY_PRESSURE,
        .reading = {.some_avg10 = 25.0, .full_avg10 = 1.5, .mem_total = 64 * GiB, .mem_available = 5 * GiB},
        .in_use = 2,
        .waiters = 1,
        .changes = 3,
        .admitted = 10,
        .rejected = {4, 1},
        .wait_count = 9,
        .wait_sum_s = 12.5,
    };
    snprintf(f->cap.why, sizeof f->cap.why, "PSI some 25.0%% full 1.5%%");
    memcpy(f->cap.wait_buckets, buckets, sizeof buckets);
    f->pool = (struct pool_stats){.budget = 32 * GiB,
                                  .used = 6 * GiB,
                                  .max_models = 4,
                                  .loaded = 2,
                                  .loads = 5,
                                  .evictions = 1,
                                  .load_failures = 2,
                                  .waiting_for_load = 3,
                                  .rss = 7 * GiB};
    f->models[0] = (struct pool_model_info){
        .id = "a",
        .path = "/m/a.gguf",
        .status = POOL_LOADED,
        .mem_estimated = 4 * GiB,
        .slots = 2,
        .waiting_for_load = 0,
        .stats = {.slots_total = 2,
                  .slots_busy = 1,
                  .queued = 3,
                  .queue_cap = 16,
                  .ctx_per_slot = 2048,
                  .requests_total = 100,
                  .tokens_prompt = 2000,
                  .tokens_generated = 500,
                  .tokens_cached = 300},
    };
    f->models[1] = (struct pool_model_info){
        .id = "b",
        .path = "/m/b.gguf",
        .status = POOL_LOADED,
        .mem_estimated = 2 * GiB,
        .slots = 3,
        .waiting_for_load = 0,
        .stats = {.slots_total = 3,
                  .slots_busy = 1,
                  .queued = 4,
                  .queue_cap = 32,
                  .requests_total = 7,
                  .tokens_prompt = 70,
                  .tokens_generated = 21,
                  .tokens_cached = 0},
    };
    static const int codes[4] = {200, 400, 429, 503};
    static const int64_t counts[4] = {40, 2, 0, 7};
    memcpy(f->codes, codes, sizeof codes);
    memcpy(f->counts, counts, sizeof counts);
    f->v = (struct admin_view){.cap = &f->cap,
                               .pool = &f->pool,
                               .models = f->models,
                               .n_models = 2,
                               .queue_timeout_ms = 30000,
                               .codes = f->codes,
                               .counts = f->counts,
                               .n_codes = 4,
                               .has_http = true,
                               .connections = 12,
                               .max_connections = 4096,
                               .connection_timeouts = 3,
                               .request_memory = 65536};
}

/* ------------------------------------------------------------ /metrics */

static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':'; }
static bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

/* Length of the metric name at s (0 if none). */
static size_t name_len(const char *s) {
    if (!is_name_start(*s)) return 0;
    size_t n = 1;
    while (is_name_char(s[n])) n++;
    return n;
}

#define MAX_FAMILIES 64

struct family {
    char name[96];
    char type[16];
    int help, types, samples;
};

struct families {
    struct family f[MAX_FAMILIES];
    int n;
};

static struct family *family_find(struct families *fs, const char *name, size_t len) {
    for (int i = 0; i < fs->n; i++)
        if (strlen(fs->f[i].name) == len && strncmp(fs->f[i].name, name, len) == 0) return &fs->f[i];
    return NULL;
}

static struct family *family_add(struct families *fs, const char *name, size_t len) {
    struct family *f = family_find(fs, name, len);
    if (f) return f;
    assert_true(fs->n < MAX_FAMILIES);
    assert_true(len < sizeof fs->f[0].name);
    f = &fs->f[fs->n++];
    memset(f, 0, sizeof *f);
    memcpy(f->name, name, len);
    return f;
}

/* Check one sample line (without its '\n'); fail with the line otherwise.
 * It must belong to cur, the family declared last. */
static void check_sample(const char *line, struct family *cur) {
    size_t n = name_len(line);
    if (n == 0) fail_msg("bad metric name: \"%s\"", line);
    const char *p = line + n;
    if (*p == '{') {
        p++;
        for (bool first = true; *p != '}'; first = false) {
            if (!first) {
                if (*p != ',') fail_msg("expected ',' in labels: \"%s\"", line);
                p++;
            }
            size_t ln = name_len(p);
            if (ln == 0 || (ln >= 2 && p[0] == '_' && p[1] == '_')) fail_msg("bad label name: \"%s\"", line);
            p += ln;
            if (p[0] != '=' || p[1] != '"') fail_msg("expected =\" after label name: \"%s\"", line);
            p += 2;
            while (*p != '"') {
                if (*p == '\0' || *p == '\n') fail_msg("unterminated label value: \"%s\"", line);
                if (*p == '\\') {
                    if (p[1] != '\\' && p[1] != '"' && p[1] != 'n') fail_msg("bad escape: \"%s\"", line);
                    p++;
                }
                p++;
            }
            p++;
        }
        p++;
    }
    if (*p != ' ') fail_msg("expected one space before the value: \"%s\"", line);
    p++;
    if (strcmp(p, "NaN") != 0 && strcmp(p, "+Inf") != 0 && strcmp(p, "-Inf") != 0) {
        char *end = NULL;
        if (*p == '\0' || *p == ' ' || *p == '+') fail_msg("bad value: \"%s\"", line);
        (void)strtod(p, &end);
        if (*end != '\0') fail_msg("bad value (or a timestamp): \"%s\"", line);
        if (strstr(p, "inf") || strstr(p, "nan")) fail_msg("unexpected value form: \"%s\"", line);
    }
    /* the sample belongs to the family declared just before */
    if (!cur) fail_msg("sample before any # TYPE: \"%s\"", line);
    size_t fl = strlen(cur->name);
    bool ok = n == fl && strncmp(line, cur->name, n) == 0;
    if (!ok && strcmp(cur->type, "histogram") == 0 && n > fl && strncmp(line, cur->name, fl) == 0) {
        const char *suf = line + fl;
        size_t sl = n - fl;
        ok = (sl == 7 && strncmp(suf, "_bucket", 7) == 0) || (sl == 4 && strncmp(suf, "_sum", 4) == 0) ||
             (sl == 6 && strncmp(suf, "_count", 6) == 0);
    }
    if (!ok) fail_msg("sample \"%s\" is not of family %s (%s)", line, cur->name, cur->type);
    cur->samples++;
}

/* Check the whole text; fills fs. */
static void check_exposition(const char *text, struct families *fs) {
    memset(fs, 0, sizeof *fs);
    struct family *cur = NULL;
    size_t len = strlen(text);
    assert_true(len > 0);
    assert_int_equal(text[len - 1], '\n'); /* the last line ends too */
    char line[512];
    for (const char *s = text; *s;) {
        const char *nl = strchr(s, '\n');
        assert_non_null(nl);
        size_t n = (size_t)(nl - s);
        assert_true(n < sizeof line);
        memcpy(line, s, n);
        line[n] = '\0';
        s = nl + 1;
        if (n == 0) fail_msg("empty line in the exposition");
        if (line[0] == '#') {
            bool help = strncmp(line, "# HELP ", 7) == 0, type = strncmp(line, "# TYPE ", 7) == 0;
            if (!help && !type) fail_msg("comment that is neither HELP nor TYPE: \"%s\"", line);
            const char *nm = line + 7;
            size_t nlen = name_len(nm);
            if (nlen == 0 || nm[nlen] != ' ') fail_msg("bad family name: \"%s\"", line);
            struct family *f = family_add(fs, nm, nlen);
            if (f->samples) fail_msg("%s declared after its samples", f->name);
            const char *rest = nm + nlen + 1;
            if (help) {
                f->help++;
                if (rest[0] == '\0') fail_msg("empty help: \"%s\"", line);
            } else {
                f->types++;
                if (strcmp(rest, "counter") && strcmp(rest, "gauge") && strcmp(rest, "histogram") &&
                    strcmp(rest, "summary") && strcmp(rest, "untyped"))
                    fail_msg("bad type: \"%s\"", line);
                snprintf(f->type, sizeof f->type, "%s", rest);
                if (strcmp(rest, "counter") == 0 && (nlen < 6 || strncmp(nm + nlen - 6, "_total", 6) != 0))
                    fail_msg("counter without _total: \"%s\"", line);
            }
            cur = f;
            continue;
        }
        check_sample(line, cur);
    }
    for (int i = 0; i < fs->n; i++) {
        if (fs->f[i].types != 1) fail_msg("# TYPE of %s appears %d times", fs->f[i].name, fs->f[i].types);
        if (fs->f[i].help != 1) fail_msg("# HELP of %s appears %d times", fs->f[i].name, fs->f[i].help);
    }
}

static void has_line(const char *text, const char *want) {
    size_t n = strlen(want);
    for (const char *s = text; (s = strstr(s, want)) != NULL; s++)
        if ((s == text || s[-1] == '\n') && s[n] == '\n') return;
    fail_msg("line \"%s\" missing from:\n%s", want, text);
}

static void lacks(const char *text, const char *what) {
    if (strstr(text, what)) fail_msg("\"%s\" should not be in:\n%s", what, text);
}

static char *metrics(const struct admin_view *v) {
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(admin_metrics_text(v, &b), 0);
    size_t len = 0;
    char *text = buf_steal(&b, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    buf_free(&b);
    return text;
}

static void test_metrics_full(void **state) {
    (void)state;
    struct fixture f;
    fixture_init(&f);
    char *t = metrics(&f.v);
    struct families fs;
    check_exposition(t, &fs);

    /* per model */
    has_line(t, "# TYPE corral_slots_busy gauge");
    has_line(t, "corral_slots_busy{model=\"a\"} 1");
    has_line(t, "corral_slots_busy{model=\"b\"} 1");
    has_line(t, "corral_slots_total{model=\"a\"} 2");
    has_line(t, "corral_slots_total{model=\"b\"} 3");
    has_line(t, "corral_queue_depth{model=\"a\"} 3");
    has_line(t, "corral_queue_depth{model=\"b\"} 4");
    has_line(t, "corral_waiting_for_load{model=\"a\"} 0");
    has_line(t, "# TYPE corral_requests_total counter");
    has_line(t, "corral_requests_total{model=\"a\"} 100");
    has_line(t, "corral_requests_total{model=\"b\"} 7");
    has_line(t, "corral_prompt_tokens_total{model=\"a\"} 2000");
    has_line(t, "corral_generated_tokens_total{model=\"a\"} 500");
    has_line(t, "corral_cached_prompt_tokens_total{model=\"a\"} 300");
    has_line(t, "corral_cached_prompt_tokens_total{model=\"b\"} 0");
    has_line(t, "corral_model_loaded{model=\"a\"} 1");
    has_line(t, "corral_model_memory_bytes{model=\"a\"} 4294967296");
    has_line(t, "corral_model_memory_bytes{model=\"b\"} 2147483648");

    /* capacity */
    has_line(t, "# TYPE corral_capacity_host gauge");
    has_line(t, "corral_capacity_host 4");
    has_line(t, "corral_capacity_effective 2");
    has_line(t, "corral_capacity_in_use 2");
    has_line(t, "# TYPE corral_capacity_changes_total counter");
    has_line(t, "corral_capacity_changes_total 3");
    has_line(t, "corral_admitted_total 10");
    has_line(t, "corral_rejected_total{reason=\"queue_full\"} 4");
    has_line(t, "corral_rejected_total{reason=\"queue_timeout\"} 1");
    has_line(t, "# TYPE corral_queue_wait_seconds histogram");
    has_line(t, "corral_queue_wait_seconds_bucket{le=\"0.005\"} 0");
    has_line(t, "corral_queue_wait_seconds_bucket{le=\"0.01\"} 1");
    has_line(t, "corral_queue_wait_seconds_bucket{le=\"0.025\"} 2");
    has_line(t, "corral_queue_wait_seconds_bucket{le=\"0.05\"} 3");
    has_line(t, "corral_queue_wait_seconds_bucket{le=\"0.1\"} 5");
    has_line(t, "corral_queue_wait_seconds_bucket{le=\"1\"} 8");
    has_line(t, "corral_queue_wait_seconds_bucket{le=\"2.5\"} 8");
    has_line(t, "corral_queue_wait_seconds_bucket{le=\"60\"} 8");
    has_line(t, "corral_queue_wait_seconds_bucket{le=\"+Inf\"} 9");
    has_line(t, "corral_queue_wait_seconds_sum 12.5");
    has_line(t, "corral_queue_wait_seconds_count 9");
    has_line(t, "corral_host_memory_available_bytes 5368709120");
    has_line(t, "corral_host_memory_pressure_some_avg10 25");
    has_line(t, "corral_host_memory_pressure_full_avg10 1.5");

    /* pool */
    has_line(t, "corral_models_loaded 2");
    has_line(t, "corral_model_loads_total 5");
    has_line(t, "corral_model_evictions_total 1");
    has_line(t, "corral_model_load_failures_total 2");
    has_line(t, "corral_memory_budget_bytes 34359738368");
    has_line(t, "corral_memory_used_bytes 6442450944");
    has_line(t, "corral_process_resident_memory_bytes 7516192768");

    /* responses */
    has_line(t, "# TYPE corral_http_responses_total counter");
    has_line(t, "corral_http_responses_total{code=\"200\"} 40");
    has_line(t, "corral_http_responses_total{code=\"400\"} 2");
    has_line(t, "corral_http_responses_total{code=\"429\"} 0");
    has_line(t, "corral_http_responses_total{code=\"503\"} 7");
    has_line(t, "corral_http_connections 12");
    has_line(t, "corral_http_connections_max 4096");
    has_line(t, "corral_http_connection_timeouts_total 3");
    has_line(t, "corral_http_request_memory_bytes 65536");

    /* the histogram: one bucket per bound plus +Inf, in order, cumulative,
     * +Inf equal to _count */
    struct family *h = family_find(&fs, "corral_queue_wait_seconds", strlen("corral_queue_wait_seconds"));
    assert_non_null(h);
    assert_string_equal(h->type, "histogram");
    assert_int_equal(h->samples, CAPACITY_WAIT_BUCKETS + 1 + 2);
    const char *s = t;
    double last_le = -1, last_v = -1;
    int nb = 0;
    while ((s = strstr(s, "corral_queue_wait_seconds_bucket{le=\"")) != NULL) {
        s += strlen("corral_queue_wait_seconds_bucket{le=\"");
        double le = strncmp(s, "+Inf\"", 5) == 0 ? INFINITY : strtod(s, NULL);
        if (nb < CAPACITY_WAIT_BUCKETS) assert_true(le == capacity_wait_bounds[nb]);
        assert_true(le > last_le);
        const char *val = strstr(s, "} ");
        assert_non_null(val);
        double v = strtod(val + 2, NULL);
        assert_true(v >= last_v);
        last_le = le;
        last_v = v;
        nb++;
    }
    assert_int_equal(nb, CAPACITY_WAIT_BUCKETS + 1);
    assert_true(isinf(last_le));
    assert_true(last_v == 9);

    /* every per-model family carries one sample per model */
    static const char *per_model[] = {"corral_requests_total",     "corral_prompt_tokens_total",
                                      "corral_generated_tokens_total", "corral_cached_prompt_tokens_total",
                                      "corral_queue_depth",        "corral_waiting_for_load",
                                      "corral_slots_busy",         "corral_slots_total",
                                      "corral_model_loaded",       "corral_model_memory_bytes"};
    for (size_t i = 0; i < sizeof per_model / sizeof per_model[0]; i++) {
        struct family *pf = family_find(&fs, per_model[i], strlen(per_model[i]));
        if (!pf) fail_msg("family %s missing", per_model[i]);
        assert_int_equal(pf->samples, 2);
    }
    free(t);
}

/* Model states, odd ids, unknown readings, no gate, no codes. */
static void test_metrics_variants(void **state) {
    (void)state;
    struct fixture f;
    fixture_init(&f);
    snprintf(f.models[1].id, sizeof f.models[1].id, "%s", "odd\"id\\x");
    f.models[1].status = POOL_LOADING;
    f.models[1].stats = (struct engine_stats){0};
    f.models[1].waiting_for_load = 2;
    f.cap.reading = (struct capacity_reading){.some_avg10 = -1, .full_avg10 = -1};
    char *t = metrics(&f.v);
    struct families fs;
    check_exposition(t, &fs);
    has_line(t, "corral_model_loaded{model=\"odd\\\"id\\\\x\"} 0");
    has_line(t, "corral_model_memory_bytes{model=\"odd\\\"id\\\\x\"} 2147483648"); /* loading counts */
    has_line(t, "corral_waiting_for_load{model=\"odd\\\"id\\\\x\"} 2");
    lacks(t, "corral_host_memory_available_bytes");
    lacks(t, "corral_host_memory_pressure_some_avg10");
    lacks(t, "corral_host_memory_pressure_full_avg10");
    free(t);

    /* unloaded and failed models hold no memory */
    f.models[1].status = POOL_FAILED;
    f.models[0].status = POOL_UNLOADED;
    t = metrics(&f.v);
    check_exposition(t, &fs);
    has_line(t, "corral_model_memory_bytes{model=\"a\"} 0");
    has_line(t, "corral_model_memory_bytes{model=\"odd\\\"id\\\\x\"} 0");
    has_line(t, "corral_model_loaded{model=\"a\"} 0");
    free(t);

    /* no gate, no pool, no codes, no models: still valid, families kept */
    struct admin_view bare = {.queue_timeout_ms = -1};
    t = metrics(&bare);
    check_exposition(t, &fs);
    has_line(t, "# TYPE corral_slots_busy gauge");
    lacks(t, "corral_capacity_");
    lacks(t, "corral_queue_wait_seconds");
    lacks(t, "corral_models_loaded");
    lacks(t, "corral_http_responses_total");
    free(t);

    /* a cap too small is reported */
    fixture_init(&f);
    struct buf b;
    buf_init(&b, 512);
    assert_int_equal(admin_metrics_text(&f.v, &b), -1);
    buf_free(&b);
}

/* ------------------------------------------------------------ /capacity */

static json_int_t jint(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("\"%s\" is not an integer", key);
    return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) fail_msg("\"%s\" is not a string", key);
    return json_string_value(v);
}

static void test_capacity_json(void **state) {
    (void)state;
    struct fixture f;
    fixture_init(&f);
    json_t *root = admin_capacity_json(&f.v);
    assert_non_null(root);
    assert_int_equal(jint(root, "host"), 4);
    assert_string_equal(jstr(root, "host_source"), "config");
    assert_true(jint(root, "host_memory") == (json_int_t)(64 * GiB));
    assert_int_equal(jint(root, "effective"), 2);
    assert_string_equal(jstr(root, "effective_source"), "pressure");
    assert_int_equal(jint(root, "in_use"), 2);
    assert_int_equal(jint(root, "queued"), 3 + 4);
    assert_int_equal(jint(root, "waiting_for_load"), 3);
    assert_int_equal(jint(root, "slots_busy"), 2);
    assert_int_equal(jint(root, "slots_total"), 5);
    assert_int_equal(jint(root, "queue_timeout_ms"), 30000);
    assert_int_equal(jint(root, "admitted"), 10);
    assert_int_equal(jint(root, "rejected_queue_full"), 4);
    assert_int_equal(jint(root, "rejected_timeout"), 1);

    json_t *pr = json_object_get(root, "pressure");
    assert_true(json_is_object(pr));
    assert_string_equal(jstr(pr, "level"), "pressure");
    assert_string_equal(jstr(pr, "reading"), "PSI some 25.0% full 1.5%");
    assert_true(json_number_value(json_object_get(pr, "some_avg10")) == 25.0);
    assert_true(json_number_value(json_object_get(pr, "full_avg10")) == 1.5);
    assert_true(jint(pr, "mem_total") == (json_int_t)(64 * GiB));
    assert_true(jint(pr, "mem_available") == (json_int_t)(5 * GiB));
    assert_int_equal(jint(pr, "changes"), 3);

    json_t *models = json_object_get(root, "models");
    assert_true(json_is_array(models));
    assert_int_equal(json_array_size(models), 2);
    json_t *a = json_array_get(models, 0), *b = json_array_get(models, 1);
    assert_string_equal(jstr(a, "id"), "a");
    assert_string_equal(jstr(a, "status"), "loaded");
    assert_int_equal(jint(a, "slots"), 2);
    assert_int_equal(jint(a, "slots_busy"), 1);
    assert_int_equal(jint(a, "slots_total"), 2);
    assert_int_equal(jint(a, "queued"), 3);
    assert_int_equal(jint(a, "queue_limit"), 16);
    assert_int_equal(jint(a, "waiting_for_load"), 0);
    assert_string_equal(jstr(b, "id"), "b");
    assert_int_equal(jint(b, "slots"), 3);
    assert_int_equal(jint(b, "queued"), 4);
    assert_int_equal(jint(b, "queue_limit"), 32);
    json_decref(root);

    /* not reduced, readings unknown, a model loading */
    f.cap.reduced = false;
    f.cap.effective = 4;
    f.cap.level = CAPACITY_RELIEVED;
    f.cap.host_source = CAPACITY_SRC_ENV;
    f.cap.reading = (struct capacity_reading){.some_avg10 = -1, .full_avg10 = -1};
    f.models[1].status = POOL_LOADING;
    f.models[1].stats = (struct engine_stats){0};
    f.models[1].waiting_for_load = 5;
    root = admin_capacity_json(&f.v);
    assert_non_null(root);
    assert_string_equal(jstr(root, "host_source"), "env");
    assert_int_equal(jint(root, "effective"), 4);
    assert_string_equal(jstr(root, "effective_source"), "host");
    assert_int_equal(jint(root, "queued"), 3);
    pr = json_object_get(root, "pressure");
    assert_string_equal(jstr(pr, "level"), "none");
    assert_true(json_is_null(json_object_get(pr, "some_avg10")));
    assert_true(json_is_null(json_object_get(pr, "full_avg10")));
    assert_true(json_is_null(json_object_get(pr, "mem_total")));
    assert_true(json_is_null(json_object_get(pr, "mem_available")));
    b = json_array_get(json_object_get(root, "models"), 1);
    assert_string_equal(jstr(b, "status"), "loading");
    assert_int_equal(jint(b, "waiting_for_load"), 5);
    assert_int_equal(jint(b, "slots_total"), 0);
    json_decref(root);

    /* no gate: in_use is the busy slots; no capacity fields */
    f.v.cap = NULL;
    root = admin_capacity_json(&f.v);
    assert_non_null(root);
    assert_int_equal(jint(root, "in_use"), 1);
    assert_null(json_object_get(root, "host"));
    assert_null(json_object_get(root, "effective"));
    assert_null(json_object_get(root, "pressure"));
    json_decref(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_labels),
        cmocka_unit_test(test_sample_escaping),
        cmocka_unit_test(test_sample_values),
        cmocka_unit_test(test_sample_cap),
        cmocka_unit_test(test_family),
        cmocka_unit_test(test_metrics_full),
        cmocka_unit_test(test_metrics_variants),
        cmocka_unit_test(test_capacity_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
