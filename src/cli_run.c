/* cli_run.c - `corral run MODEL [PROMPT]`: chat with a model of a running
 * server from the terminal.
 *
 * DESIGN
 * With a prompt (or text on stdin that is not a terminal) it streams one
 * answer to stdout and exits; with neither it is an interactive chat that
 * keeps the conversation. Each answer is one streaming chat request over
 * libcurl's multi interface, so the loop can draw a spinner while the
 * model loads (its load_progress from GET /v1/models/ID) and stop at once
 * on Ctrl-C: the transfer is dropped, the server sees the connection close
 * and cancels the request, and the chat goes on. The stream's events are
 * read by the same parser the proxy engine uses (engine/sse_in.c).
 *
 * It needs a running server and says so in one line with the command that
 * starts one: starting a hidden server per chat would load the model per
 * chat, and a model loaded in a server stays warm for the next one.
 */
#include "cli.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/sse_in.h"
#include "util/buf.h"

#define RUN_LINE_MAX (1u << 20)   /* one SSE line, one input */
#define RUN_BODY_MAX (4u << 20)   /* an error body */
#define RUN_HISTORY_MAX 256       /* messages kept (older turns are dropped) */

struct run {
    char url[512]; /* base, no trailing slash */
    char auth[600];
    const char *model;
    char *system;
    double temperature; /* < 0: the server's default */
    long max_tokens;    /* 0: the server's default */
    bool tty_out, tty_err;
    json_t *history; /* the conversation */
};

static volatile sig_atomic_t run__interrupted;

static void run__on_sigint(int sig) {
    (void)sig;
    run__interrupted = 1;
}

static double run__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run__usage(const char *fmt, const char *arg) {
    fprintf(stderr, "corral run: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: corral run MODEL [PROMPT] [--url URL] [--api-key K] [--system TEXT] "
                    "[--temperature X] [--max-tokens N]\n");
    return CLI_USAGE;
}

/* ------------------------------------------------------------ HTTP */

static struct curl_slist *run__headers(const struct run *r) {
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (r->auth[0]) h = curl_slist_append(h, r->auth);
    return h;
}

static size_t run__collect(char *p, size_t size, size_t n, void *ud) {
    return buf_append(ud, p, size * n) == 0 ? size * n : 0;
}

static long run__get(const struct run *r, const char *path, json_t **out, bool quiet) {
    return cli_get_json(r->url, r->auth, path, out, quiet ? NULL : "corral run");
}

long cli_get_json(const char *base, const char *auth, const char *path, json_t **out, const char *who) {
    *out = NULL;
    char url[1024];
    snprintf(url, sizeof url, "%s%s", base, path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    if (auth && *auth) h = curl_slist_append(h, auth);
    struct buf b;
    buf_init(&b, RUN_BODY_MAX);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, run__collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode cc = curl_easy_perform(c);
    long status = -1;
    if (cc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        *out = b.len ? json_loadb(b.data, b.len, 0, NULL) : NULL;
    } else if (who) {
        fprintf(stderr,
                "%s: no corral server at %s (%s); start one with `corral serve --model ID=PATH` "
                "(or `make run` for the demo model)\n",
                who, base, curl_easy_strerror(cc));
    }
    buf_free(&b);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

static const char *run__err_msg(json_t *j) {
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    return m ? m : "(no message)";
}

/* ------------------------------------------------------------ one answer */

struct answer {
    const struct run *r;
    CURL *c;
    long status;
    struct sse_in sse;
    struct buf err;    /* the body of a failed request */
    struct buf text;   /* the answer's content */
    bool any;          /* some output came */
    bool in_reasoning; /* printing thinking text (dim on a terminal) */
    char fail[512];    /* an error the stream reported */
};

static void answer__spin_clear(struct answer *a) {
    if (!a->any && a->r->tty_err) fprintf(stderr, "\r\033[K");
}

static bool answer__event(void *ctx, const char *d, size_t n) {
    struct answer *a = ctx;
    struct sse_event ev;
    sse_event_parse(d, n, &ev);
    if (ev.error) {
        snprintf(a->fail, sizeof a->fail, "%s", ev.message);
        sse_event_free(&ev);
        return false;
    }
    const char *reason = json_string_value(
        json_object_get(json_object_get(json_array_get(json_object_get(ev.root, "choices"), 0), "delta"),
                        "reasoning_content"));
    if (reason && *reason) {
        answer__spin_clear(a);
        a->any = true;
        if (!a->in_reasoning && a->r->tty_out) fputs("\033[2m", stdout);
        a->in_reasoning = true;
        if (a->r->tty_out) fputs(reason, stdout);
        else fputs(reason, stderr); /* plain output is the answer alone */
    }
    if (ev.text_len) {
        answer__spin_clear(a);
        a->any = true;
        if (a->in_reasoning && a->r->tty_out) fputs("\033[0m\n", stdout);
        a->in_reasoning = false;
        fwrite(ev.text, 1, ev.text_len, stdout);
        buf_append(&a->text, ev.text, ev.text_len);
    }
    fflush(stdout);
    sse_event_free(&ev);
    return true;
}

static size_t answer__on_data(char *p, size_t size, size_t n, void *ud) {
    struct answer *a = ud;
    size_t len = size * n;
    if (a->status == 0) curl_easy_getinfo(a->c, CURLINFO_RESPONSE_CODE, &a->status); /* the headers came */
    if (a->status >= 400) return buf_append(&a->err, p, len) == 0 ? len : 0;
    return sse_in_feed(&a->sse, p, len, answer__event, a) == 0 ? len : 0;
}

/* The spinner while nothing came yet: what the model is doing. */
static void answer__spin(struct answer *a, int tick, double *next_poll, char *what, size_t wlen) {
    static const char *const frames[] = {"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"};
    const struct run *r = a->r;
    if (a->any || !r->tty_err) return;
    double now = run__now();
    if (now >= *next_poll) {
        *next_poll = now + 0.5;
        char path[600];
        snprintf(path, sizeof path, "/v1/models/%s", r->model);
        json_t *m = NULL;
        if (run__get(r, path, &m, true) == 200) {
            const char *st = json_string_value(json_object_get(m, "status"));
            json_t *pr = json_object_get(m, "load_progress");
            if (st && strcmp(st, "loading") == 0 && json_is_number(pr))
                snprintf(what, wlen, "loading %s %d%%", r->model, (int)(json_number_value(pr) * 100));
            else if (st && (strcmp(st, "loading") == 0 || strcmp(st, "unloaded") == 0))
                snprintf(what, wlen, "loading %s", r->model);
            else
                snprintf(what, wlen, "thinking");
        }
        json_decref(m);
    }
    fprintf(stderr, "\r\033[K%s %s", frames[tick % 10], what);
    fflush(stderr);
}

/* Stream one answer to the conversation so far. CLI_OK with the answer's
 * text in *text (malloc'd), CLI_FAILED (message printed; *text NULL), or
 * CLI_CONNECT. An interrupted answer is CLI_OK with *text NULL. */
static int run__answer(struct run *r, char **text) {
    *text = NULL;
    json_t *msgs = json_array();
    if (r->system) json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", r->system));
    json_array_extend(msgs, r->history);
    json_t *body = json_pack("{s:s, s:o, s:b}", "model", r->model, "messages", msgs, "stream", 1);
    if (r->temperature >= 0) json_object_set_new(body, "temperature", json_real(r->temperature));
    if (r->max_tokens > 0) json_object_set_new(body, "max_tokens", json_integer(r->max_tokens));
    char *payload = json_dumps(body, JSON_COMPACT);
    json_decref(body);

    struct answer a;
    memset(&a, 0, sizeof a);
    a.r = r;
    sse_in_init(&a.sse, RUN_LINE_MAX);
    buf_init(&a.err, RUN_BODY_MAX);
    buf_init(&a.text, 0);
    char url[600];
    snprintf(url, sizeof url, "%s/v1/chat/completions", r->url);
    CURL *c = curl_easy_init();
    a.c = c;
    struct curl_slist *h = run__headers(r);
    h = curl_slist_append(h, "Accept: text/event-stream");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, answer__on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    CURLM *m = curl_multi_init();
    curl_multi_add_handle(m, c);

    int running = 1, tick = 0, rc = CLI_OK;
    double next_poll = run__now() + 0.3;
    char what[128] = "waiting";
    run__interrupted = 0;
    while (running && !run__interrupted) {
        if (curl_multi_perform(m, &running) != CURLM_OK) break;
        if (!running) break;
        curl_multi_poll(m, NULL, 0, 100, NULL);
        answer__spin(&a, tick++, &next_poll, what, sizeof what);
    }
    bool interrupted = run__interrupted;
    answer__spin_clear(&a);
    if (a.in_reasoning && r->tty_out) fputs("\033[0m", stdout);
    CURLcode cc = CURLE_OK;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE) cc = msg->data.result;
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (interrupted) {
        fputs(a.any ? "\n" : "", stdout);
        fprintf(stderr, "(stopped)\n");
    } else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST) {
        fprintf(stderr, "corral run: no corral server at %s; start one with `corral serve --model ID=PATH`\n",
                r->url);
        rc = CLI_CONNECT;
    } else if (status >= 400) {
        json_t *j = a.err.len ? json_loadb(a.err.data, a.err.len, 0, NULL) : NULL;
        fprintf(stderr, "corral run: %s\n", j ? run__err_msg(j) : "the server refused the request");
        json_decref(j);
        rc = CLI_FAILED;
    } else if (a.fail[0] || (cc != CURLE_OK && cc != CURLE_WRITE_ERROR)) {
        fprintf(stderr, "%scorral run: %s\n", a.any ? "\n" : "", a.fail[0] ? a.fail : curl_easy_strerror(cc));
        rc = CLI_FAILED;
    } else {
        if (!a.text.len || a.text.data[a.text.len - 1] != '\n') fputc('\n', stdout);
        size_t n;
        *text = buf_steal(&a.text, &n);
        if (!*text) *text = strdup("");
    }
    fflush(stdout);
    curl_multi_remove_handle(m, c);
    curl_easy_cleanup(c);
    curl_multi_cleanup(m);
    curl_slist_free_all(h);
    sse_in_free(&a.sse);
    buf_free(&a.err);
    buf_free(&a.text);
    free(payload);
    return rc;
}

/* ------------------------------------------------------------ the chat */

static void run__push(struct run *r, const char *role, const char *content) {
    json_array_append_new(r->history, json_pack("{s:s, s:s}", "role", role, "content", content));
    while (json_array_size(r->history) > RUN_HISTORY_MAX) json_array_remove(r->history, 0);
}

/* One turn of input: a line, lines joined while they end in '\', or a
 * block between lines of """. NULL at end of input; "" when Ctrl-C. */
static char *run__read(void) {
    struct buf in;
    buf_init(&in, RUN_LINE_MAX);
    char line[8192];
    bool block = false, more = false;
    for (;;) {
        fputs(block || more ? "... " : ">>> ", stdout);
        fflush(stdout);
        run__interrupted = 0;
        if (!fgets(line, sizeof line, stdin)) {
            bool intr = run__interrupted || errno == EINTR;
            clearerr(stdin);
            if (intr) {
                fputs("\n(use /bye or Ctrl-D to leave)\n", stdout);
                buf_free(&in);
                return strdup("");
            }
            if (in.len == 0) {
                buf_free(&in);
                return NULL;
            }
            break;
        }
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = '\0';
        if (strcmp(line, "\"\"\"") == 0 || (!block && in.len == 0 && strncmp(line, "\"\"\"", 3) == 0)) {
            if (block) break;
            block = true;
            if (n > 3) buf_append(&in, line + 3, n - 3), buf_append(&in, "\n", 1);
            continue;
        }
        more = !block && n && line[n - 1] == '\\';
        if (more) line[--n] = '\0';
        buf_append(&in, line, n);
        if (block || more) {
            buf_append(&in, "\n", 1);
            continue;
        }
        break;
    }
    size_t n;
    char *s = buf_steal(&in, &n);
    buf_free(&in);
    return s ? s : strdup("");
}

static void run__help(void) {
    puts("  /bye                 leave\n"
         "  /clear               forget the conversation\n"
         "  /set temperature X   sampling temperature (0 = greedy)\n"
         "  /set system TEXT     the system prompt (empty: none)\n"
         "  \"\"\" ... \"\"\"          a message of several lines (or end lines with \\)\n"
         "  Ctrl-C               stop the answer; Ctrl-D leaves");
}

/* A /command. Returns 1 to leave, 0 to go on. */
static int run__command(struct run *r, const char *in) {
    if (strcmp(in, "/bye") == 0 || strcmp(in, "/exit") == 0) return 1;
    if (strcmp(in, "/clear") == 0) {
        json_array_clear(r->history);
        puts("(conversation cleared)");
    } else if (strncmp(in, "/set temperature", 16) == 0) {
        char *end;
        double t = strtod(in + 16, &end);
        if (end == in + 16 || t < 0 || t > 2) puts("(temperature must be a number from 0 to 2)");
        else r->temperature = t, printf("(temperature %g)\n", t);
    } else if (strncmp(in, "/set system", 11) == 0) {
        const char *t = in + 11;
        while (*t == ' ') t++;
        free(r->system);
        r->system = *t ? strdup(t) : NULL;
        puts(*t ? "(system prompt set)" : "(system prompt cleared)");
    } else {
        run__help();
    }
    return 0;
}

static int run__interactive(struct run *r) {
    printf("chatting with %s at %s; /? for help, /bye to leave\n", r->model, r->url);
    for (;;) {
        char *in = run__read();
        if (!in) {
            fputc('\n', stdout);
            return CLI_OK;
        }
        if (!*in) {
            free(in);
            continue;
        }
        if (in[0] == '/') {
            int leave = run__command(r, in);
            free(in);
            if (leave) return CLI_OK;
            continue;
        }
        run__push(r, "user", in);
        free(in);
        char *answer = NULL;
        int rc = run__answer(r, &answer);
        if (rc == CLI_CONNECT) return rc;
        if (answer) run__push(r, "assistant", answer);
        else json_array_remove(r->history, json_array_size(r->history) - 1); /* failed or stopped: not kept */
        free(answer);
    }
}

void cli_base_url(const char *flag, char *out, size_t n) {
    const char *e;
    if (flag && *flag) {
        snprintf(out, n, "%s", flag);
    } else {
        const char *host = (e = getenv("CORRAL_HOST")) && *e ? e : "127.0.0.1";
        const char *port = (e = getenv("CORRAL_PORT")) && *e ? e : "8080";
        if (strcmp(host, "0.0.0.0") == 0) host = "127.0.0.1";
        if (strcmp(host, "::") == 0) host = "::1";
        snprintf(out, n, "http://%s%s%s:%s", strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    }
    size_t ul = strlen(out);
    while (ul && out[ul - 1] == '/') out[--ul] = '\0';
    if (ul > 3 && strcmp(out + ul - 3, "/v1") == 0) out[ul - 3] = '\0';
}

int cli_run(int argc, char **argv) {
    struct run r;
    memset(&r, 0, sizeof r);
    r.temperature = -1;
    const char *url = NULL, *key = getenv("CORRAL_API_KEY");
    struct buf prompt;
    buf_init(&prompt, RUN_LINE_MAX);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool val = i + 1 < argc;
        if (strcmp(a, "--url") == 0 && val) url = argv[++i];
        else if (strcmp(a, "--api-key") == 0 && val) key = argv[++i];
        else if (strcmp(a, "--system") == 0 && val) r.system = strdup(argv[++i]);
        else if (strcmp(a, "--temperature") == 0 && val) r.temperature = atof(argv[++i]);
        else if (strcmp(a, "--max-tokens") == 0 && val) r.max_tokens = atol(argv[++i]);
        else if (a[0] == '-' && a[1] == '-') {
            buf_free(&prompt);
            free(r.system);
            return run__usage("unknown option or missing value '%s'", a);
        } else if (!r.model) r.model = a;
        else {
            if (prompt.len) buf_append(&prompt, " ", 1);
            buf_append(&prompt, a, strlen(a));
        }
    }
    if (!r.model) {
        buf_free(&prompt);
        free(r.system);
        return run__usage("%s", "missing MODEL");
    }
    cli_base_url(url, r.url, sizeof r.url);
    if (key && *key) snprintf(r.auth, sizeof r.auth, "Authorization: Bearer %s", key);
    r.tty_out = isatty(STDOUT_FILENO);
    r.tty_err = isatty(STDERR_FILENO) && r.tty_out;
    r.history = json_array();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = run__on_sigint; /* no SA_RESTART: a read at the prompt returns */
    sigaction(SIGINT, &sa, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    int rc;
    char path[600];
    snprintf(path, sizeof path, "/v1/models/%s", r.model);
    json_t *m = NULL;
    long st = run__get(&r, path, &m, false);
    if (st < 0) {
        rc = CLI_CONNECT;
    } else if (st >= 400) {
        fprintf(stderr, "corral run: %s\n", run__err_msg(m));
        rc = CLI_FAILED;
    } else if (prompt.len || !isatty(STDIN_FILENO)) {
        if (!prompt.len) { /* the prompt from stdin */
            char chunk[8192];
            size_t n;
            while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
                if (buf_append(&prompt, chunk, n) != 0) break;
        }
        buf_append(&prompt, "", 1);
        run__push(&r, "user", prompt.data ? prompt.data : "");
        char *answer = NULL;
        rc = run__answer(&r, &answer);
        if (rc == CLI_OK && !answer) rc = CLI_FAILED; /* stopped */
        free(answer);
    } else {
        rc = run__interactive(&r);
    }
    json_decref(m);
    json_decref(r.history);
    buf_free(&prompt);
    free(r.system);
    curl_global_cleanup();
    return rc;
}
