/* cli.c - `corral ps`, `corral load ID`, `corral unload ID` over the admin API.
 *
 * DESIGN
 * Every command is one or more blocking libcurl requests against the admin
 * endpoints of a running server (GET /admin/pool, GET /admin/models,
 * POST /admin/models/load, POST /admin/models/unload). Loads and unloads that
 * answer 202 run in the background on the server; the CLI then polls
 * GET /admin/models every 200 ms until the model reaches the wanted state or
 * the --timeout deadline passes. Response bodies are capped at 4 MiB.
 *
 * Errors map to exit codes (see cli.h): a server answer >= 400 prints the
 * OpenAI error message and gives 1; a refused connection or unknown host
 * gives 3 with "cannot connect to HOST:PORT".
 */
#include "cli.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/buf.h"

#define CLI_BODY_CAP (4u << 20) /* largest response body we accept */
#define CLI_POLL_MS 200

const char cli_usage_text[] =
    "       corral run MODEL [PROMPT] [options]  chat with MODEL (streams one answer with a PROMPT or\n"
    "                                            text on stdin; else an interactive chat)\n"
    "       corral list [--url URL | serve options] every model: size, architecture, parameters, quantisation\n"
    "       corral show MODEL [--url URL]        a model's GGUF metadata and memory estimate\n"
    "       corral ps [options]                  show the models of a running server\n"
    "       corral load ID [options]             load model ID and wait until it is ready\n"
    "       corral unload ID [--force] [options] unload model ID (--force cancels its requests)\n"
    "\n"
    "options of ps, load and unload:\n"
    "  --host H              server address (default 127.0.0.1; CORRAL_HOST)\n"
    "  --port N              server port (default 8080; CORRAL_PORT)\n"
    "  --admin-api-key K     admin key, sent as 'Authorization: Bearer K' (CORRAL_ADMIN_API_KEY)\n"
    "  --timeout S           seconds to wait (default 120 for load, 30 otherwise)\n"
    "options of run:\n"
    "  --url URL             the server (default http://CORRAL_HOST:CORRAL_PORT, 127.0.0.1:8080)\n"
    "  --api-key K           API key (CORRAL_API_KEY)\n"
    "  --system TEXT, --temperature X, --max-tokens N\n";

/* ---------------------------------------------------------------- options */

struct cli_opts {
    const char *cmd;    /* "ps", "load", "unload" */
    const char *host;   /* not owned: argv, environ or a literal */
    int port;
    const char *key;    /* NULL = no Authorization header */
    double timeout_s;
    const char *id;     /* model id (load, unload) */
    bool force;         /* unload --force */
};

static int usage_err(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "corral %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: corral %s%s [--host H] [--port N] [--admin-api-key K] [--timeout S]\n", cmd,
            strcmp(cmd, "ps") == 0 ? "" : strcmp(cmd, "load") == 0 ? " ID" : " ID [--force]");
    return CLI_USAGE;
}

static int parse_port(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 65535) return -1;
    *out = (int)v;
    return 0;
}

static int parse_timeout(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 86400.0 * 365) return -1;
    *out = v;
    return 0;
}

/* Parse the options of CMD. want_id: the command takes one ID; allow_force:
 * --force is accepted. Returns CLI_OK or CLI_USAGE (message printed). */
static int parse_opts(struct cli_opts *o, const char *cmd, int argc, char **argv, bool want_id, bool allow_force) {
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    o->host = "127.0.0.1";
    o->port = 8080;
    o->timeout_s = strcmp(cmd, "load") == 0 ? 120 : 30;

    const char *e;
    if ((e = getenv("CORRAL_HOST")) && *e) o->host = e;
    if ((e = getenv("CORRAL_PORT")) && *e && parse_port(e, &o->port) != 0)
        return usage_err(cmd, "CORRAL_PORT '%s' is not a port (1-65535)", e);
    if ((e = getenv("CORRAL_ADMIN_API_KEY")) && *e) o->key = e;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        const char *name = a;
        char namebuf[32];
        /* --opt=value */
        if (strncmp(a, "--", 2) == 0 && strchr(a, '=')) {
            size_t n = (size_t)(strchr(a, '=') - a);
            if (n >= sizeof namebuf) return usage_err(cmd, "unknown option '%s'", a);
            memcpy(namebuf, a, n);
            namebuf[n] = '\0';
            name = namebuf;
            val = a + n + 1;
        }
        bool takes_val = strcmp(name, "--host") == 0 || strcmp(name, "--port") == 0 ||
                         strcmp(name, "--admin-api-key") == 0 || strcmp(name, "--timeout") == 0;
        if (takes_val && !val) {
            if (i + 1 >= argc) return usage_err(cmd, "option '%s' needs a value", name);
            val = argv[++i];
        }
        if (strcmp(name, "--host") == 0) {
            if (!*val) return usage_err(cmd, "%s", "--host needs a non-empty value");
            o->host = val;
        } else if (strcmp(name, "--port") == 0) {
            if (parse_port(val, &o->port) != 0) return usage_err(cmd, "--port '%s' is not a port (1-65535)", val);
        } else if (strcmp(name, "--admin-api-key") == 0) {
            o->key = *val ? val : NULL;
        } else if (strcmp(name, "--timeout") == 0) {
            if (parse_timeout(val, &o->timeout_s) != 0)
                return usage_err(cmd, "--timeout '%s' is not a positive number of seconds", val);
        } else if (strcmp(a, "--force") == 0 && allow_force) {
            o->force = true;
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_err(cmd, "unknown option '%s'", a);
        } else if (want_id && !o->id) {
            if (!*a) return usage_err(cmd, "%s", "empty model ID");
            o->id = a;
        } else {
            return usage_err(cmd, "unexpected argument '%s'", a);
        }
    }
    if (want_id && !o->id) return usage_err(cmd, "%s", "missing model ID");
    /* A server bound to the wildcard address is reached on loopback. */
    if (strcmp(o->host, "0.0.0.0") == 0) o->host = "127.0.0.1";
    else if (strcmp(o->host, "::") == 0) o->host = "::1";
    return CLI_OK;
}

/* ---------------------------------------------------------------- time */

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------- HTTP */

struct cli_http {
    struct cli_opts *o;
    CURL *curl;
    double deadline; /* monotonic seconds */
};

struct cli_resp {
    long status;
    json_t *json; /* parsed body, or NULL if it was not JSON; owned */
    struct buf body;
    bool too_big;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    struct cli_resp *r = ud;
    size_t len = size * n;
    if (buf_append(&r->body, p, len) != 0) {
        r->too_big = true;
        return 0; /* abort the transfer */
    }
    return len;
}

static void resp_free(struct cli_resp *r) {
    json_decref(r->json);
    r->json = NULL;
    buf_free(&r->body);
}

/* One request. body: JSON text for POST, NULL for GET. On success returns
 * CLI_OK with *r filled (any HTTP status); the caller frees it with
 * resp_free. On a transport failure prints the reason and returns CLI_CONNECT
 * or CLI_FAILED (r is then empty). */
static int http_do(struct cli_http *h, const char *method, const char *path, const char *body, struct cli_resp *r) {
    struct cli_opts *o = h->o;
    memset(r, 0, sizeof *r);
    buf_init(&r->body, CLI_BODY_CAP);

    double left = h->deadline - now_mono();
    if (left < 1) left = 1;
    bool v6 = strchr(o->host, ':') != NULL;
    char url[1024];
    int n = snprintf(url, sizeof url, "http://%s%s%s:%d%s", v6 ? "[" : "", o->host, v6 ? "]" : "", o->port, path);
    if (n < 0 || (size_t)n >= sizeof url) {
        fprintf(stderr, "corral %s: host name too long\n", o->cmd);
        return CLI_USAGE;
    }

    struct curl_slist *hdrs = NULL;
    char auth[1024];
    int rc = CLI_FAILED;
    if (o->key) {
        n = snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->key);
        if (n < 0 || (size_t)n >= sizeof auth) {
            fprintf(stderr, "corral %s: admin API key too long\n", o->cmd);
            return CLI_USAGE;
        }
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (body) hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (!hdrs) {
        fprintf(stderr, "corral %s: out of memory\n", o->cmd);
        goto done;
    }

    CURL *c = h->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(left * 1000));
    curl_easy_setopt(c, CURLOPT_USERAGENT, "corral/" CORRAL_VERSION);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
    }

    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        if (r->too_big) {
            fprintf(stderr, "corral %s: response from %s:%d is larger than %u MiB\n", o->cmd, o->host, o->port,
                    CLI_BODY_CAP >> 20);
        } else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST) {
            fprintf(stderr, "corral %s: cannot connect to %s:%d (%s); is `corral serve` running there?\n", o->cmd,
                    o->host, o->port, curl_easy_strerror(cc));
            rc = CLI_CONNECT;
        } else if (cc == CURLE_OPERATION_TIMEDOUT) {
            fprintf(stderr, "corral %s: %s %s on %s:%d timed out\n", o->cmd, method, path, o->host, o->port);
        } else {
            fprintf(stderr, "corral %s: %s %s on %s:%d failed: %s\n", o->cmd, method, path, o->host, o->port,
                    curl_easy_strerror(cc));
        }
        buf_free(&r->body);
        goto done;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->body.len) r->json = json_loadb(r->body.data, r->body.len, 0, NULL);
    rc = CLI_OK;
done:
    curl_slist_free_all(hdrs);
    return rc;
}

/* Print the error of an answer >= 400 (its OpenAI message if it has one).
 * Returns CLI_FAILED. */
static int report_http_error(struct cli_opts *o, const char *what, struct cli_resp *r) {
    const char *msg = NULL;
    json_t *e = r->json ? json_object_get(r->json, "error") : NULL;
    if (json_is_object(e)) msg = json_string_value(json_object_get(e, "message"));
    else if (json_is_string(e)) msg = json_string_value(e);
    if (msg) {
        fprintf(stderr, "corral %s: %s: %s (HTTP %ld)\n", o->cmd, what, msg, r->status);
    } else {
        int len = r->body.len > 200 ? 200 : (int)r->body.len;
        fprintf(stderr, "corral %s: %s: HTTP %ld%s%.*s\n", o->cmd, what, r->status, len ? ": " : "", len,
                r->body.data ? r->body.data : "");
    }
    return CLI_FAILED;
}

/* GET PATH and expect 200 with a JSON object. Returns CLI_OK with *r filled,
 * or an exit code (message printed, r empty). */
static int get_json(struct cli_http *h, const char *path, struct cli_resp *r) {
    int rc = http_do(h, "GET", path, NULL, r);
    if (rc != CLI_OK) return rc;
    if (r->status != 200) {
        char what[128];
        snprintf(what, sizeof what, "GET %s", path);
        rc = report_http_error(h->o, what, r);
        resp_free(r);
        return rc;
    }
    if (!json_is_object(r->json)) {
        fprintf(stderr, "corral %s: GET %s: the server's answer is not a JSON object\n", h->o->cmd, path);
        resp_free(r);
        return CLI_FAILED;
    }
    return CLI_OK;
}

static int http_open(struct cli_http *h, struct cli_opts *o) {
    h->o = o;
    h->deadline = now_mono() + o->timeout_s;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || !(h->curl = curl_easy_init())) {
        fprintf(stderr, "corral %s: cannot initialise libcurl\n", o->cmd);
        return CLI_FAILED;
    }
    return CLI_OK;
}

static void http_close(struct cli_http *h) {
    if (h->curl) curl_easy_cleanup(h->curl);
    h->curl = NULL;
    curl_global_cleanup();
}

/* ---------------------------------------------------------------- formatting */

static json_int_t jint(json_t *obj, const char *key, json_int_t dflt) {
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_real(v)) return (json_int_t)json_real_value(v);
    return dflt;
}

static const char *jstr(json_t *obj, const char *key, const char *dflt) {
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : dflt;
}

static void fmt_bytes(char *out, size_t n, json_int_t b) {
    double v = (double)b;
    if (b <= 0) snprintf(out, n, "-");
    else if (v < 1024) snprintf(out, n, "%lld B", (long long)b);
    else if (v < 1024.0 * 1024) snprintf(out, n, "%.1f KiB", v / 1024);
    else if (v < 1024.0 * 1024 * 1024) snprintf(out, n, "%.1f MiB", v / (1024.0 * 1024));
    else snprintf(out, n, "%.2f GiB", v / (1024.0 * 1024 * 1024));
}

/* A duration in the largest unit it divides into: 90 -> "90s", 300 -> "5m". */
static void fmt_dur(char *out, size_t n, long long s) {
    if (s != 0 && s % 86400 == 0) snprintf(out, n, "%lldd", s / 86400);
    else if (s != 0 && s % 3600 == 0) snprintf(out, n, "%lldh", s / 3600);
    else if (s != 0 && s % 60 == 0) snprintf(out, n, "%lldm", s / 60);
    else snprintf(out, n, "%llds", s);
}

static void fmt_ago(char *out, size_t n, json_t *last_used) {
    if (!json_is_number(last_used) || json_number_value(last_used) <= 0) {
        snprintf(out, n, "-");
        return;
    }
    long long d = (long long)time(NULL) - (long long)json_number_value(last_used);
    if (d < 0) d = 0;
    if (d < 60) snprintf(out, n, "%llds ago", d);
    else if (d < 3600) snprintf(out, n, "%lldm ago", d / 60);
    else if (d < 86400) snprintf(out, n, "%lldh ago", d / 3600);
    else snprintf(out, n, "%lldd ago", d / 86400);
}

static void fmt_keep_alive(char *out, size_t n, json_t *m) {
    json_t *v = json_object_get(m, "keep_alive");
    if (!json_is_number(v)) snprintf(out, n, "-");
    else if (json_number_value(v) < 0) snprintf(out, n, "forever");
    else fmt_dur(out, n, (long long)json_number_value(v));
}

/* ---------------------------------------------------------------- ps */

int cli_ps(int argc, char **argv) {
    struct cli_opts o;
    int rc = parse_opts(&o, "ps", argc, argv, false, false);
    if (rc != CLI_OK) return rc;
    struct cli_http h = {0};
    if ((rc = http_open(&h, &o)) != CLI_OK) goto out;
    struct cli_resp r;
    if ((rc = get_json(&h, "/admin/pool", &r)) != CLI_OK) goto out;

    json_t *pool = r.json;
    char budget[32], used[32];
    fmt_bytes(budget, sizeof budget, jint(pool, "memory_budget", 0));
    fmt_bytes(used, sizeof used, jint(pool, "memory_used", 0));
    if (strcmp(used, "-") == 0) snprintf(used, sizeof used, "0 B");
    json_t *models = json_object_get(pool, "models");
    printf("memory %s used of %s budget; %lld loaded (max %lld); %lld loads, %lld evictions, %lld failures\n",
           used, budget, (long long)jint(pool, "loaded", 0), (long long)jint(pool, "max_models", 0),
           (long long)jint(pool, "loads", 0), (long long)jint(pool, "evictions", 0),
           (long long)jint(pool, "load_failures", 0));
    json_t *cap = json_object_get(pool, "capacity");
    if (json_is_object(cap) && json_object_get(cap, "host"))
        printf("capacity %lld of %lld in use (host %lld, %s%s); %lld queued, %lld waiting for a load\n",
               (long long)jint(cap, "in_use", 0), (long long)jint(cap, "effective", 0),
               (long long)jint(cap, "host", 0), jstr(cap, "host_source", "?"),
               strcmp(jstr(cap, "effective_source", "host"), "pressure") == 0 ? "; lowered by memory pressure" : "",
               (long long)jint(cap, "queued", 0), (long long)jint(cap, "waiting_for_load", 0));

    int idw = 2; /* strlen("ID") */
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m) {
        int l = (int)strlen(jstr(m, "id", "?"));
        if (l > idw) idw = l;
    }
    if (idw > 48) idw = 48;
    printf("%-*s  %-11s  %-10s  %-9s  %-7s  %-10s  %s\n", idw, "ID", "STATUS", "MEMORY", "IN FLIGHT", "SLOTS",
           "LAST USED", "KEEP ALIVE");
    json_array_foreach(models, i, m) {
        char mem[32], slots[48], ago[32], ka[32], status[32];
        fmt_bytes(mem, sizeof mem, jint(m, "memory_estimated", 0));
        snprintf(slots, sizeof slots, "%lld/%lld", (long long)jint(m, "slots_busy", 0),
                 (long long)jint(m, "slots_total", 0));
        fmt_ago(ago, sizeof ago, json_object_get(m, "last_used"));
        fmt_keep_alive(ka, sizeof ka, m);
        const char *st = jstr(m, "status", "?");
        double prog = json_number_value(json_object_get(m, "load_progress"));
        if (strcmp(st, "loading") == 0 && prog > 0 && prog < 1)
            snprintf(status, sizeof status, "loading %d%%", (int)(prog * 100));
        else snprintf(status, sizeof status, "%s", st);
        long long q = (long long)jint(m, "queued", 0);
        char inflight[48];
        if (q > 0) snprintf(inflight, sizeof inflight, "%lld+%lldq", (long long)jint(m, "in_flight", 0), q);
        else snprintf(inflight, sizeof inflight, "%lld", (long long)jint(m, "in_flight", 0));
        printf("%-*s  %-11s  %-10s  %-9s  %-7s  %-10s  %s\n", idw, jstr(m, "id", "?"), status, mem, inflight, slots,
               ago, ka);
        const char *err = jstr(m, "error", NULL);
        if (err && *err) printf("%*s  error: %s\n", idw, "", err);
        if (jint(m, "pid", 0) > 0)
            printf("%*s  child pid %lld, port %lld, log %s\n", idw, "", (long long)jint(m, "pid", 0),
                   (long long)jint(m, "port", 0), jstr(m, "log", "-"));
        json_t *ups = json_object_get(m, "upstreams");
        size_t k;
        json_t *u;
        json_array_foreach(ups, k, u) {
            printf("%*s  upstream %s %s, %lld in flight, %lld requests, %lld failures\n", idw, "",
                   jstr(u, "url", "?"), json_is_true(json_object_get(u, "healthy")) ? "healthy" : "EJECTED",
                   (long long)jint(u, "outstanding", 0), (long long)jint(u, "requests", 0),
                   (long long)jint(u, "failures", 0));
        }
    }
    resp_free(&r);
    rc = CLI_OK;
out:
    http_close(&h);
    return rc;
}

/* ---------------------------------------------------------------- load / unload */

/* POST PATH with {"model": id[, "force": f]}. Returns CLI_OK with *status set
 * to the HTTP status (200 or 202), or an exit code (message printed). */
static int post_model(struct cli_http *h, const char *path, bool with_force, long *status) {
    json_t *req = json_pack("{s:s}", "model", h->o->id);
    if (req && with_force) json_object_set_new(req, "force", json_boolean(h->o->force));
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text) {
        fprintf(stderr, "corral %s: out of memory\n", h->o->cmd);
        return CLI_FAILED;
    }
    struct cli_resp r;
    int rc = http_do(h, "POST", path, text, &r);
    free(text);
    if (rc != CLI_OK) return rc;
    if (r.status == 200 || r.status == 202) {
        *status = r.status;
    } else {
        char what[256];
        snprintf(what, sizeof what, "%s", h->o->id);
        rc = report_http_error(h->o, what, &r);
    }
    resp_free(&r);
    return rc;
}

/* Fetch GET /admin/models and return a new reference to the entry of o->id
 * in *out (NULL if the list does not hold it). Returns CLI_OK or an exit code. */
static int fetch_model(struct cli_http *h, json_t **out) {
    struct cli_resp r;
    *out = NULL;
    int rc = get_json(h, "/admin/models", &r);
    if (rc != CLI_OK) return rc;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(r.json, "data"), i, m) {
        if (strcmp(jstr(m, "id", ""), h->o->id) == 0) {
            *out = json_incref(m);
            break;
        }
    }
    resp_free(&r);
    return CLI_OK;
}

int cli_load(int argc, char **argv) {
    struct cli_opts o;
    int rc = parse_opts(&o, "load", argc, argv, true, false);
    if (rc != CLI_OK) return rc;
    struct cli_http h = {0};
    json_t *m = NULL;
    bool tty = isatty(STDERR_FILENO);
    bool drew = false;
    long status = 0;
    if ((rc = http_open(&h, &o)) != CLI_OK) goto out;
    if ((rc = post_model(&h, "/admin/models/load", false, &status)) != CLI_OK) goto out;

    for (;;) {
        json_decref(m);
        if ((rc = fetch_model(&h, &m)) != CLI_OK) goto out;
        if (!m) {
            fprintf(stderr, "%scorral load: the server no longer lists model '%s'\n", drew ? "\n" : "", o.id);
            rc = CLI_FAILED;
            goto out;
        }
        const char *st = jstr(m, "status", "?");
        if (strcmp(st, "loaded") == 0) {
            if (drew) fprintf(stderr, "\r\033[K");
            printf("%s: loaded in %lld ms\n", o.id, (long long)jint(m, "load_ms", 0));
            rc = CLI_OK;
            goto out;
        }
        if (strcmp(st, "failed") == 0) {
            if (drew) fprintf(stderr, "\r\033[K");
            fprintf(stderr, "corral load: %s: load failed: %s\n", o.id, jstr(m, "error", "unknown error"));
            rc = CLI_FAILED;
            goto out;
        }
        if (now_mono() >= h.deadline) {
            if (drew) fprintf(stderr, "\r\033[K");
            fprintf(stderr, "corral load: %s: still %s after %g s (--timeout); the load goes on in the server\n",
                    o.id, st, o.timeout_s);
            rc = CLI_FAILED;
            goto out;
        }
        if (tty) {
            double p = json_number_value(json_object_get(m, "load_progress"));
            if (p < 0) p = 0;
            if (p > 1) p = 1;
            fprintf(stderr, "\r\033[K%s: %s %3d%%", o.id, st, (int)(p * 100));
            fflush(stderr);
            drew = true;
        }
        sleep_ms(CLI_POLL_MS);
    }
out:
    json_decref(m);
    http_close(&h);
    return rc;
}

int cli_unload(int argc, char **argv) {
    struct cli_opts o;
    int rc = parse_opts(&o, "unload", argc, argv, true, true);
    if (rc != CLI_OK) return rc;
    struct cli_http h = {0};
    json_t *m = NULL;
    long status = 0;
    if ((rc = http_open(&h, &o)) != CLI_OK) goto out;
    if ((rc = post_model(&h, "/admin/models/unload", true, &status)) != CLI_OK) goto out;

    /* 202: requests are still in flight; it unloads when they end. */
    while (status == 202) {
        json_decref(m);
        if ((rc = fetch_model(&h, &m)) != CLI_OK) goto out;
        const char *st = m ? jstr(m, "status", "?") : "unloaded";
        if (strcmp(st, "unloaded") == 0) break;
        if (now_mono() >= h.deadline) {
            fprintf(stderr, "corral unload: %s: still %s with %lld request(s) in flight after %g s (--timeout); "
                            "it unloads when they end (or use --force)\n",
                    o.id, st, (long long)jint(m, "in_flight", 0), o.timeout_s);
            rc = CLI_FAILED;
            goto out;
        }
        sleep_ms(CLI_POLL_MS);
    }
    printf("%s: unloaded\n", o.id);
    rc = CLI_OK;
out:
    json_decref(m);
    http_close(&h);
    return rc;
}
