/* loadgen.c -- corral-loadgen: a streaming load generator for OpenAI-style
 * inference servers (corral, llama-server).
 *
 * It sends `--requests` streamed completions ("stream": true, temperature 0,
 * "ignore_eos": true, stream_options.include_usage) with `--concurrency`
 * requests in flight, and measures each one from the client side:
 *
 *   TTFT   time from issuing the request to the first chunk that carries
 *          content (chat: choices[0].delta.content or reasoning_content;
 *          completions: choices[0].text; empty strings do not count);
 *   ITL    the gaps between consecutive content chunks;
 *   E2E    time from issuing the request to the end of the transfer;
 *   tokens usage.completion_tokens from the final usage chunk when the
 *          server sends one, otherwise the number of content chunks.
 *
 * A request is "ok" only if the transfer succeeded, the status was 200, no
 * error event arrived and the stream ended with "data: [DONE]". Everything
 * else is counted as failed, by HTTP status or transport error, and the first
 * few error messages are kept for the report: nothing is dropped silently.
 *
 * DESIGN
 * One thread drives a curl multi handle with one easy handle per concurrent
 * "slot"; a slot runs requests back to back (keep-alive, like a real client
 * pool). Timestamps are taken in the write callback, which curl calls from
 * curl_multi_perform() as soon as bytes are read; the loop waits in
 * curl_multi_poll() so it wakes on socket activity, not on a tick.
 * Everything that grows with the server's output is capped: the SSE line
 * buffer, the reply text kept for multi-turn history, the error body kept
 * for the report; the ITL samples are a fixed-size reservoir.
 *
 * Multi-turn (--turns N): a conversation is N requests on one slot; each turn
 * resends the whole history plus the assistant's previous reply and a new
 * user message. --requests counts HTTP requests, not conversations.
 */

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ limits */

#define LG_MAX_LINE        (1u << 20)   /* one SSE line */
#define LG_MAX_REPLY       (256u << 10) /* reply text kept per request */
#define LG_MAX_ERRBODY     (4u << 10)   /* non-200 body kept per request */
#define LG_MAX_ERRBODY_RX  (1u << 20)   /* non-200 body read before aborting */
#define LG_MAX_ERRMSGS     8            /* distinct error messages reported */
#define LG_ITL_RESERVOIR   (4u << 20)   /* ITL samples kept (reservoir) */
#define LG_MAX_MODELS      64
#define LG_MAX_PROMPT_FILE (8u << 20)

/* ------------------------------------------------------------------ options */

enum lg_endpoint { LG_CHAT, LG_COMPLETIONS };

struct lg_opts {
    const char *url;
    const char *model_list; /* --model or --models, comma separated */
    char *models[LG_MAX_MODELS];
    int n_models;
    int concurrency;
    long requests;
    int max_tokens;
    int prompt_tokens;
    int system_prompt_tokens;
    int turn_tokens;
    int turns;
    int warmup;
    enum lg_endpoint endpoint;
    bool endpoint_set;
    const char *prompt_file;
    char *prompt_file_text;
    const char *api_key;
    const char *extra_json; /* merged into every request body */
    json_t *extra;
    bool json_out;
    bool ignore_eos;
    long timeout_s;
    uint64_t seed;
    const char *label;
    const char *trace; /* --trace FILE: every measured gap as "seconds<TAB>gap ms<TAB>slot" */
};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: corral-loadgen --url http://HOST:PORT [options]\n"
        "  --url URL               server base URL (or a full /v1/... URL)\n"
        "  --model ID              model name to send (default \"bench\")\n"
        "  --models a,b,c          round-robin over these models (per conversation)\n"
        "  --concurrency N         requests in flight (default 1)\n"
        "  --requests N            total HTTP requests measured (default 8)\n"
        "  --max-tokens N          max_tokens per request (default 128)\n"
        "  --prompt-tokens N       prompt of ~N tokens from a fixed word list (default 128)\n"
        "  --prompt-file FILE      use this file's text as the prompt instead\n"
        "  --system-prompt-tokens N  shared system prompt of ~N tokens, identical\n"
        "                          across requests; the user message is then a\n"
        "                          distinct question of --prompt-tokens words (chat)\n"
        "  --turns N               multi-turn conversations of N requests (default 1)\n"
        "  --turn-tokens N         words in each follow-up user message (default 32)\n"
        "  --chat | --completions  endpoint (default chat; completions for prompts)\n"
        "  --api-key KEY           send Authorization: Bearer KEY\n"
        "  --extra-json '{...}'    merge these fields into every request body\n"
        "  --no-ignore-eos         do not send \"ignore_eos\": true\n"
        "  --warmup N              unmeasured requests first (default 0)\n"
        "  --trace FILE            write every measured inter-token gap as a line\n"
        "                          \"SECONDS<TAB>GAP_MS<TAB>STREAM\" (seconds since the\n"
        "                          first measured request), for a plot over time\n"
        "  --timeout S             per-request timeout in seconds (default 600)\n"
        "  --seed N                prompt word seed (default 1)\n"
        "  --label TEXT            label echoed in the report\n"
        "  --json                  print one JSON object instead of text\n"
        "exit status: 0 all requests ok, 3 some failed, 2 usage error, 1 fatal\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv, struct lg_opts *o)
{
    memset(o, 0, sizeof *o);
    o->model_list = "bench";
    o->concurrency = 1;
    o->requests = 8;
    o->max_tokens = 128;
    o->prompt_tokens = 128;
    o->turn_tokens = 32;
    o->turns = 1;
    o->endpoint = LG_CHAT;
    o->ignore_eos = true;
    o->timeout_s = 600;
    o->seed = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
        long n = 0;
#define NEED_VAL()                                                       \
    do {                                                                 \
        if (!v) {                                                        \
            fprintf(stderr, "corral-loadgen: %s needs a value\n", a);    \
            return -1;                                                   \
        }                                                                \
        i++;                                                             \
    } while (0)
#define NUM(lo, hi)                                                      \
    do {                                                                 \
        NEED_VAL();                                                      \
        if (!parse_long(v, (lo), (hi), &n)) {                            \
            fprintf(stderr, "corral-loadgen: bad value for %s: %s\n", a, v); \
            return -1;                                                   \
        }                                                                \
    } while (0)
        if (!strcmp(a, "--url")) { NEED_VAL(); o->url = v; }
        else if (!strcmp(a, "--model") || !strcmp(a, "--models")) { NEED_VAL(); o->model_list = v; }
        else if (!strcmp(a, "--concurrency")) { NUM(1, 1024); o->concurrency = (int)n; }
        else if (!strcmp(a, "--requests")) { NUM(1, 1000000); o->requests = n; }
        else if (!strcmp(a, "--max-tokens")) { NUM(1, 1000000); o->max_tokens = (int)n; }
        else if (!strcmp(a, "--prompt-tokens")) { NUM(1, 1000000); o->prompt_tokens = (int)n; }
        else if (!strcmp(a, "--system-prompt-tokens")) { NUM(0, 1000000); o->system_prompt_tokens = (int)n; }
        else if (!strcmp(a, "--turn-tokens")) { NUM(1, 1000000); o->turn_tokens = (int)n; }
        else if (!strcmp(a, "--turns")) { NUM(1, 1000); o->turns = (int)n; }
        else if (!strcmp(a, "--warmup")) { NUM(0, 100000); o->warmup = (int)n; }
        else if (!strcmp(a, "--timeout")) { NUM(1, 86400); o->timeout_s = n; }
        else if (!strcmp(a, "--seed")) { NUM(0, LONG_MAX); o->seed = (uint64_t)n; }
        else if (!strcmp(a, "--trace") && i + 1 < argc) o->trace = argv[++i];
        else if (!strcmp(a, "--prompt-file")) { NEED_VAL(); o->prompt_file = v; }
        else if (!strcmp(a, "--api-key")) { NEED_VAL(); o->api_key = v; }
        else if (!strcmp(a, "--extra-json")) { NEED_VAL(); o->extra_json = v; }
        else if (!strcmp(a, "--label")) { NEED_VAL(); o->label = v; }
        else if (!strcmp(a, "--chat")) { o->endpoint = LG_CHAT; o->endpoint_set = true; }
        else if (!strcmp(a, "--completions")) { o->endpoint = LG_COMPLETIONS; o->endpoint_set = true; }
        else if (!strcmp(a, "--no-ignore-eos")) { o->ignore_eos = false; }
        else if (!strcmp(a, "--json")) { o->json_out = true; }
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        else {
            fprintf(stderr, "corral-loadgen: unknown option %s\n", a);
            return -1;
        }
#undef NUM
#undef NEED_VAL
    }
    if (!o->url) {
        fprintf(stderr, "corral-loadgen: --url is required\n");
        return -1;
    }
    if (o->system_prompt_tokens > 0) {
        if (o->endpoint_set && o->endpoint != LG_CHAT) {
            fprintf(stderr, "corral-loadgen: --system-prompt-tokens needs --chat\n");
            return -1;
        }
        o->endpoint = LG_CHAT;
    }
    /* split the model list in place (a private copy) */
    char *copy = strdup(o->model_list);
    if (!copy)
        return -1;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (!*tok)
            continue;
        if (o->n_models == LG_MAX_MODELS) {
            fprintf(stderr, "corral-loadgen: at most %d models\n", LG_MAX_MODELS);
            free(copy);
            return -1;
        }
        o->models[o->n_models] = strdup(tok);
        if (!o->models[o->n_models]) {
            free(copy);
            return -1;
        }
        o->n_models++;
    }
    free(copy);
    if (o->n_models == 0) {
        fprintf(stderr, "corral-loadgen: empty model list\n");
        return -1;
    }
    if (o->extra_json) {
        json_error_t err;
        o->extra = json_loads(o->extra_json, 0, &err);
        if (!o->extra || !json_is_object(o->extra)) {
            fprintf(stderr, "corral-loadgen: --extra-json is not a JSON object\n");
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ utils */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* splitmix64: a small deterministic PRNG for prompts and the reservoir */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A growable byte buffer with a hard cap; always NUL-terminated. */
struct lg_buf {
    char *p;
    size_t len, cap, max;
};

static void buf_init(struct lg_buf *b, size_t max)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

static void buf_free(struct lg_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Append n bytes. Returns false (and appends nothing) past the cap or on OOM. */
static bool buf_add(struct lg_buf *b, const char *s, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return false;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np)
            return false;
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

static bool buf_adds(struct lg_buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

/* ------------------------------------------------------------------ prompts */

/* Short common English words; each is one token ("▁word") in the llama SPM
 * vocabulary, so N words make a prompt of about N tokens. */
static const char *const lg_words[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as",
    "was", "with", "be", "by", "on", "not", "he", "this", "are", "or",
    "his", "from", "at", "which", "but", "have", "an", "had", "they", "you",
    "were", "their", "one", "all", "we", "can", "her", "has", "there", "been",
    "if", "more", "when", "will", "would", "who", "so", "no", "time", "new",
    "also", "other", "some", "what", "about", "out", "up", "into", "them", "only",
    "its", "than", "first", "then", "two", "could", "these", "may", "any", "like",
    "over", "such", "our", "most", "many", "made", "after", "she", "him", "my",
    "year", "your", "well", "must", "should", "where", "way", "each", "work", "people",
    "much", "great", "three", "good", "world", "because", "just", "even", "life", "same",
    "long", "day", "part", "under", "state", "down", "back", "own", "place", "right",
    "still", "water", "house", "city", "light", "small", "large", "high", "old", "man",
    "war", "home", "end", "school", "while", "number", "name", "power", "line", "point",
};
#define LG_N_WORDS (sizeof lg_words / sizeof lg_words[0])

/* Append n pseudo-random words drawn with the given stream seed. */
static bool add_words(struct lg_buf *b, int n, uint64_t seed)
{
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        const char *w = lg_words[rng_next(&s) % LG_N_WORDS];
        if ((i > 0 && !buf_add(b, " ", 1)) || !buf_adds(b, w))
            return false;
    }
    return buf_add(b, ".", 1);
}

static uint64_t seed_for(const struct lg_opts *o, uint64_t stream, uint64_t idx)
{
    uint64_t s = o->seed * 0x100000001b3ull ^ (stream << 48) ^ idx;
    (void)rng_next(&s);
    return s;
}

/* ------------------------------------------------------------------ stats */

struct lg_reservoir {
    double *v;
    size_t n, cap;
    uint64_t seen;
    uint64_t rng;
};

static void res_add(struct lg_reservoir *r, double x)
{
    r->seen++;
    if (r->n < r->cap) {
        r->v[r->n++] = x;
        return;
    }
    uint64_t j = rng_next(&r->rng) % r->seen;
    if (j < r->cap)
        r->v[j] = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct lg_summary {
    size_t n;
    double mean, min, max, p50, p90, p95, p99;
};

/* Percentile by linear interpolation between closest ranks; sorts v. */
static double pct_sorted(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    double r = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(r), hi = (size_t)ceil(r);
    return v[lo] + (v[hi] - v[lo]) * (r - (double)lo);
}

static struct lg_summary summarize(double *v, size_t n)
{
    struct lg_summary s = { .n = n, .mean = NAN, .min = NAN, .max = NAN,
                            .p50 = NAN, .p90 = NAN, .p95 = NAN, .p99 = NAN };
    if (n == 0)
        return s;
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    s.mean = sum / (double)n;
    s.min = v[0];
    s.max = v[n - 1];
    s.p50 = pct_sorted(v, n, 50);
    s.p90 = pct_sorted(v, n, 90);
    s.p95 = pct_sorted(v, n, 95);
    s.p99 = pct_sorted(v, n, 99);
    return s;
}

struct lg_model_stats {
    long ok, failed;
    long long tokens;
    double ttft_sum;
};

struct lg_stats {
    long ok, failed, short_ok; /* short_ok: ok but fewer tokens than max_tokens */
    long status[600];          /* HTTP status counts, [0] = no status */
    long http_errors;          /* a status other than 200 */
    long transport_errors;     /* curl failures (connect, timeout, reset...) */
    long stream_errors;        /* 200 but an error event, bad JSON or no [DONE] */
    char *errmsgs[LG_MAX_ERRMSGS];
    long errcounts[LG_MAX_ERRMSGS];
    int n_errmsgs;
    long errmsgs_other;
    long long tokens;          /* best count per ok request, summed */
    long long chunks;          /* content chunks over ok requests */
    long long prompt_tokens;   /* usage.prompt_tokens over ok requests */
    long usage_seen;           /* ok requests that reported usage */
    double *ttft, *e2e, *stream_tps; /* per ok request, ms / ms / tok/s */
    size_t n_ttft, n_e2e, n_tps;
    struct lg_reservoir itl;   /* ms */
    struct lg_model_stats models[LG_MAX_MODELS];
    double t_first_start, t_last_end;
};

static void stats_errmsg(struct lg_stats *st, const char *msg)
{
    for (int i = 0; i < st->n_errmsgs; i++) {
        if (!strcmp(st->errmsgs[i], msg)) {
            st->errcounts[i]++;
            return;
        }
    }
    if (st->n_errmsgs == LG_MAX_ERRMSGS) {
        st->errmsgs_other++;
        return;
    }
    char *c = strdup(msg);
    if (!c) {
        st->errmsgs_other++;
        return;
    }
    st->errmsgs[st->n_errmsgs] = c;
    st->errcounts[st->n_errmsgs] = 1;
    st->n_errmsgs++;
}

/* ------------------------------------------------------------------ slots */

/* One concurrent client: an easy handle running requests back to back. */
struct lg_slot {
    int id;
    CURL *easy;
    struct curl_slist *hdrs;
    char *body;              /* request body, owned */
    bool busy;
    bool warmup;             /* current request is not measured */

    /* conversation */
    long conv;               /* conversation index (model round-robin key) */
    int turn;                /* turns done in this conversation */
    json_t *history;         /* chat: messages array, owned */
    struct lg_buf comp_hist; /* completions: the running prompt text */
    int model_idx;

    /* current request */
    double t_start, t_first, t_last;
    long http_status;
    bool got_done, stream_error;
    char stream_errmsg[256];
    long chunks;
    long usage_completion, usage_prompt; /* -1: not reported */
    struct lg_buf line;      /* partial SSE line */
    struct lg_buf reply;     /* assistant text of this request */
    struct lg_buf errbody;   /* first bytes of a non-200 body */
    size_t errbody_rx;
    double *itl;             /* gaps of this request (ms), up to max_tokens */
    size_t n_itl, cap_itl;
    bool reply_truncated;
};

struct lg_run {
    struct lg_opts *o;
    CURLM *multi;
    struct lg_slot *slots;
    char *endpoint_url;
    char *system_prompt;     /* shared, NULL if none */
    long issued, target;     /* requests issued / to issue in this phase */
    long conv_next;          /* next conversation index */
    bool warmup;
    FILE *trace;             /* --trace, or NULL */
    struct lg_stats st;
};

static void slot_set_error(struct lg_slot *s, const char *fmt, ...)
{
    if (s->stream_error)
        return; /* keep the first */
    s->stream_error = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->stream_errmsg, sizeof s->stream_errmsg, fmt, ap);
    va_end(ap);
}

/* Handle one complete SSE data payload (text after "data:"). */
static void on_sse_data(struct lg_run *run, struct lg_slot *s, const char *data, double t)
{
    if (!strcmp(data, "[DONE]")) {
        s->got_done = true;
        return;
    }
    json_error_t jerr;
    json_t *ev = json_loads(data, 0, &jerr);
    if (!ev) {
        slot_set_error(s, "bad JSON in stream: %s", jerr.text);
        return;
    }
    json_t *err = json_object_get(ev, "error");
    if (err) {
        const char *m = json_string_value(json_object_get(err, "message"));
        if (!m)
            m = json_string_value(err);
        slot_set_error(s, "error event: %s", m ? m : "(no message)");
    }
    json_t *usage = json_object_get(ev, "usage");
    if (json_is_object(usage)) {
        json_t *ct = json_object_get(usage, "completion_tokens");
        json_t *pt = json_object_get(usage, "prompt_tokens");
        if (json_is_integer(ct))
            s->usage_completion = (long)json_integer_value(ct);
        if (json_is_integer(pt))
            s->usage_prompt = (long)json_integer_value(pt);
    }
    json_t *choices = json_object_get(ev, "choices");
    json_t *c0 = json_is_array(choices) ? json_array_get(choices, 0) : NULL;
    if (c0) {
        const char *text = NULL;
        size_t tlen = 0;
        if (run->o->endpoint == LG_CHAT) {
            json_t *delta = json_object_get(c0, "delta");
            json_t *content = json_object_get(delta, "content");
            if (!json_is_string(content) || json_string_length(content) == 0)
                content = json_object_get(delta, "reasoning_content");
            if (json_is_string(content)) {
                text = json_string_value(content);
                tlen = json_string_length(content);
            }
        } else {
            json_t *jt = json_object_get(c0, "text");
            if (json_is_string(jt)) {
                text = json_string_value(jt);
                tlen = json_string_length(jt);
            }
        }
        if (text && tlen > 0) {
            if (s->chunks == 0) {
                s->t_first = t;
            } else if (s->n_itl < s->cap_itl) {
                s->itl[s->n_itl++] = (t - s->t_last) * 1e3;
                if (run->trace && !s->warmup)
                    fprintf(run->trace, "%.4f\t%.3f\t%ld\n", t - run->st.t_first_start, (t - s->t_last) * 1e3,
                            (long)(s - run->slots));
            }
            s->t_last = t;
            s->chunks++;
            if (!buf_add(&s->reply, text, tlen))
                s->reply_truncated = true;
        }
    }
    json_decref(ev);
}

static void on_sse_line(struct lg_run *run, struct lg_slot *s, char *line, size_t len, double t)
{
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len == 0 || line[0] == ':')
        return; /* event separator or comment */
    if (!strncmp(line, "data:", 5)) {
        const char *d = line + 5;
        if (*d == ' ')
            d++;
        on_sse_data(run, s, d, t);
    } else if (!strncmp(line, "error:", 6)) {
        const char *d = line + 6;
        if (*d == ' ')
            d++;
        slot_set_error(s, "error event: %.200s", d);
    }
    /* event:, id:, retry: are ignored */
}

struct lg_cbctx {
    struct lg_run *run;
    struct lg_slot *slot;
};

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct lg_cbctx *cx = ud;
    struct lg_slot *s = cx->slot;
    size_t n = size * nmemb;
    double t = now_s();

    if (s->http_status == 0)
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &s->http_status);
    if (s->http_status != 200) {
        s->errbody_rx += n;
        if (s->errbody_rx > LG_MAX_ERRBODY_RX)
            return 0; /* abort: an error body this large is a failure anyway */
        size_t room = s->errbody.max - s->errbody.len;
        (void)buf_add(&s->errbody, ptr, n < room ? n : room);
        return n;
    }
    /* split into lines; keep the unterminated tail in s->line */
    size_t i = 0;
    while (i < n) {
        char *nl = memchr(ptr + i, '\n', n - i);
        size_t seg = nl ? (size_t)(nl - (ptr + i)) : n - i;
        if (!buf_add(&s->line, ptr + i, seg)) {
            slot_set_error(s, "SSE line longer than %u bytes", LG_MAX_LINE);
            return 0;
        }
        if (!nl)
            break;
        on_sse_line(cx->run, s, s->line.p ? s->line.p : (char *)"", s->line.len, t);
        s->line.len = 0;
        if (s->line.p)
            s->line.p[0] = '\0';
        i += seg + 1;
    }
    return n;
}

/* Build the next request of slot s and add it to the multi handle.
 * Returns false on a local failure (OOM), which is fatal for the run. */
static bool slot_start(struct lg_run *run, struct lg_slot *s, struct lg_cbctx *cx)
{
    const struct lg_opts *o = run->o;
    bool new_conv = (s->turn == 0);
    uint64_t stream_tag = run->warmup ? 2 : 1;

    if (new_conv) {
        s->conv = run->conv_next++;
        s->model_idx = (int)(s->conv % o->n_models);
        json_decref(s->history);
        s->history = NULL;
        s->comp_hist.len = 0;
    }

    /* the new user text for this turn */
    struct lg_buf user;
    buf_init(&user, (size_t)LG_MAX_PROMPT_FILE + 64u * 1000000u);
    bool ok = true;
    if (s->turn == 0 && o->prompt_file_text)
        ok = buf_adds(&user, o->prompt_file_text);
    else if (s->turn == 0)
        ok = add_words(&user, o->prompt_tokens, seed_for(o, stream_tag, (uint64_t)s->conv));
    else
        ok = add_words(&user, o->turn_tokens,
                       seed_for(o, stream_tag + 16 + (uint64_t)s->turn, (uint64_t)s->conv));
    if (!ok) {
        buf_free(&user);
        return false;
    }

    json_t *req = json_object();
    if (!req) {
        buf_free(&user);
        return false;
    }
    json_object_set_new(req, "model", json_string(o->models[s->model_idx]));
    if (o->endpoint == LG_CHAT) {
        if (new_conv) {
            s->history = json_array();
            if (run->system_prompt) {
                json_t *m = json_pack("{s:s, s:s}", "role", "system", "content", run->system_prompt);
                json_array_append_new(s->history, m);
            }
        } else {
            json_t *m = json_pack("{s:s, s:s}", "role", "assistant",
                                  "content", s->reply.p ? s->reply.p : "");
            json_array_append_new(s->history, m);
        }
        json_array_append_new(s->history,
                              json_pack("{s:s, s:s}", "role", "user", "content", user.p));
        json_object_set(req, "messages", s->history);
    } else {
        if (!new_conv) {
            ok = buf_adds(&s->comp_hist, s->reply.p ? s->reply.p : "") &&
                 buf_adds(&s->comp_hist, "\n");
        }
        ok = ok && buf_adds(&s->comp_hist, user.p);
        if (!ok) {
            buf_free(&user);
            json_decref(req);
            return false;
        }
        json_object_set_new(req, "prompt", json_string(s->comp_hist.p));
    }
    buf_free(&user);
    json_object_set_new(req, "max_tokens", json_integer(o->max_tokens));
    json_object_set_new(req, "temperature", json_real(0.0));
    json_object_set_new(req, "stream", json_true());
    json_object_set_new(req, "stream_options", json_pack("{s:b}", "include_usage", 1));
    if (o->ignore_eos)
        json_object_set_new(req, "ignore_eos", json_true());
    if (o->extra)
        json_object_update(req, o->extra);

    free(s->body);
    s->body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!s->body)
        return false;

    /* reset per-request state */
    s->http_status = 0;
    s->got_done = s->stream_error = false;
    s->stream_errmsg[0] = '\0';
    s->chunks = 0;
    s->usage_completion = s->usage_prompt = -1;
    s->line.len = 0;
    s->reply.len = 0;
    if (s->reply.p)
        s->reply.p[0] = '\0';
    s->reply_truncated = false;
    s->errbody.len = 0;
    s->errbody_rx = 0;
    s->n_itl = 0;
    s->warmup = run->warmup;

    CURL *e = s->easy;
    curl_easy_setopt(e, CURLOPT_URL, run->endpoint_url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->hdrs);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, s->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(s->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, cx);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, o->timeout_s);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);

    s->busy = true;
    s->t_start = now_s();
    s->t_first = s->t_last = 0;
    if (!run->warmup && run->st.t_first_start == 0)
        run->st.t_first_start = s->t_start;
    run->issued++;
    if (curl_multi_add_handle(run->multi, e) != CURLM_OK)
        return false;
    return true;
}

/* Record the finished request of slot s. */
static void slot_finish(struct lg_run *run, struct lg_slot *s, CURLcode rc)
{
    const struct lg_opts *o = run->o;
    struct lg_stats *st = &run->st;
    double t_end = now_s();
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    s->busy = false;

    bool ok = rc == CURLE_OK && status == 200 && !s->stream_error && s->got_done;
    char msg[512];
    msg[0] = '\0';
    /* classify: an HTTP error status wins, then a transport failure that is
     * not our own abort of a broken stream, then the stream's own error */
    enum { K_OK, K_HTTP, K_TRANSPORT, K_STREAM } kind = K_OK;
    if (!ok) {
        if (status != 0 && status != 200)
            kind = K_HTTP;
        else if (rc != CURLE_OK && !(s->stream_error && rc == CURLE_WRITE_ERROR))
            kind = K_TRANSPORT;
        else
            kind = K_STREAM;
        if (kind == K_HTTP)
            snprintf(msg, sizeof msg, "HTTP %ld: %.300s", status,
                     s->errbody.p ? s->errbody.p : "");
        else if (kind == K_TRANSPORT)
            snprintf(msg, sizeof msg, "transport: %s", curl_easy_strerror(rc));
        else if (s->stream_error)
            snprintf(msg, sizeof msg, "%s", s->stream_errmsg);
        else
            snprintf(msg, sizeof msg, "stream ended without [DONE]");
        for (char *p = msg; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
    if (s->turn + 1 < o->turns && ok)
        s->turn++;
    else
        s->turn = 0; /* conversation over (or broken): next one starts fresh */

    if (s->warmup) {
        if (!ok)
            fprintf(stderr, "corral-loadgen: warmup request failed: %s\n", msg);
        return;
    }
    st->t_last_end = t_end;
    struct lg_model_stats *ms = &st->models[s->model_idx];
    st->status[status >= 0 && status < 600 ? status : 0]++;
    if (!ok) {
        st->failed++;
        ms->failed++;
        if (kind == K_HTTP)
            st->http_errors++;
        else if (kind == K_TRANSPORT)
            st->transport_errors++;
        else if (kind == K_STREAM)
            st->stream_errors++;
        stats_errmsg(st, msg);
        return;
    }
    st->ok++;
    ms->ok++;
    long tokens = s->usage_completion >= 0 ? s->usage_completion : s->chunks;
    if (s->usage_completion >= 0)
        st->usage_seen++;
    if (s->usage_prompt >= 0)
        st->prompt_tokens += s->usage_prompt;
    if (tokens < o->max_tokens)
        st->short_ok++;
    st->tokens += tokens;
    st->chunks += s->chunks;
    ms->tokens += tokens;
    st->e2e[st->n_e2e++] = (t_end - s->t_start) * 1e3;
    if (s->chunks > 0) {
        double ttft = (s->t_first - s->t_start) * 1e3;
        st->ttft[st->n_ttft++] = ttft;
        ms->ttft_sum += ttft;
        for (size_t i = 0; i < s->n_itl; i++)
            res_add(&st->itl, s->itl[i]);
        /* per-stream decode rate: tokens after the first over the time from
         * the first to the last content chunk */
        double span = s->t_last - s->t_first;
        if (tokens >= 2 && span > 0)
            st->stream_tps[st->n_tps++] = (double)(tokens - 1) / span;
    }
}

/* Run `count` requests at the configured concurrency. Returns 0, or -1 on a
 * local (not server) failure. */
static int run_phase(struct lg_run *run, long count, bool warmup)
{
    struct lg_cbctx *cxs = calloc((size_t)run->o->concurrency, sizeof *cxs);
    if (!cxs)
        return -1;
    run->issued = 0;
    run->target = count;
    run->warmup = warmup;
    int active = 0;
    int n = run->o->concurrency;
    for (int i = 0; i < n; i++) {
        struct lg_slot *s = &run->slots[i];
        s->turn = 0;
        cxs[i].run = run;
        cxs[i].slot = s;
    }
    for (int i = 0; i < n && run->issued < run->target; i++) {
        if (!slot_start(run, &run->slots[i], &cxs[i]))
            goto fail;
        active++;
    }
    while (active > 0) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(run->multi, &running);
        if (mc != CURLM_OK) {
            fprintf(stderr, "corral-loadgen: curl_multi_perform: %s\n", curl_multi_strerror(mc));
            goto fail;
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(run->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *e = msg->easy_handle;
            CURLcode rc = msg->data.result;
            struct lg_slot *s = NULL;
            int idx = 0;
            for (int i = 0; i < n; i++) {
                if (run->slots[i].easy == e) {
                    s = &run->slots[i];
                    idx = i;
                    break;
                }
            }
            curl_multi_remove_handle(run->multi, e);
            if (!s)
                continue;
            slot_finish(run, s, rc);
            active--;
            if (run->issued < run->target) {
                if (!slot_start(run, s, &cxs[idx]))
                    goto fail;
                active++;
            }
        }
        if (active > 0) {
            mc = curl_multi_poll(run->multi, NULL, 0, 100, NULL);
            if (mc != CURLM_OK) {
                fprintf(stderr, "corral-loadgen: curl_multi_poll: %s\n", curl_multi_strerror(mc));
                goto fail;
            }
        }
    }
    free(cxs);
    return 0;
fail:
    for (int i = 0; i < n; i++)
        if (run->slots[i].busy) {
            curl_multi_remove_handle(run->multi, run->slots[i].easy);
            run->slots[i].busy = false;
        }
    free(cxs);
    return -1;
}

/* ------------------------------------------------------------------ report */

static json_t *summary_json(const struct lg_summary *s)
{
    json_t *o = json_object();
#define F(k, v) json_object_set_new(o, k, isnan(v) ? json_null() : json_real(v))
    json_object_set_new(o, "n", json_integer((json_int_t)s->n));
    F("mean", s->mean);
    F("min", s->min);
    F("p50", s->p50);
    F("p90", s->p90);
    F("p95", s->p95);
    F("p99", s->p99);
    F("max", s->max);
#undef F
    return o;
}

static void print_summary_line(const char *name, const char *unit, const struct lg_summary *s)
{
    if (s->n == 0) {
        printf("  %-18s (no samples)\n", name);
        return;
    }
    printf("  %-18s p50 %9.2f  p95 %9.2f  p99 %9.2f  mean %9.2f  max %9.2f %s (n=%zu)\n",
           name, s->p50, s->p95, s->p99, s->mean, s->max, unit, s->n);
}

static void report(struct lg_run *run)
{
    const struct lg_opts *o = run->o;
    struct lg_stats *st = &run->st;
    double wall = st->t_last_end > st->t_first_start ? st->t_last_end - st->t_first_start : 0;
    double tps = wall > 0 ? (double)st->tokens / wall : 0;
    double rps = wall > 0 ? (double)(st->ok + st->failed) / wall : 0;
    struct lg_summary ttft = summarize(st->ttft, st->n_ttft);
    struct lg_summary itl = summarize(st->itl.v, st->itl.n);
    struct lg_summary e2e = summarize(st->e2e, st->n_e2e);
    struct lg_summary stps = summarize(st->stream_tps, st->n_tps);
    const char *ep = o->endpoint == LG_CHAT ? "chat" : "completions";

    if (o->json_out) {
        json_t *root = json_object();
        json_t *cfg = json_object();
        if (o->label)
            json_object_set_new(root, "label", json_string(o->label));
        json_object_set_new(cfg, "url", json_string(run->endpoint_url));
        json_object_set_new(cfg, "endpoint", json_string(ep));
        json_t *ml = json_array();
        for (int i = 0; i < o->n_models; i++)
            json_array_append_new(ml, json_string(o->models[i]));
        json_object_set_new(cfg, "models", ml);
        json_object_set_new(cfg, "concurrency", json_integer(o->concurrency));
        json_object_set_new(cfg, "requests", json_integer(o->requests));
        json_object_set_new(cfg, "max_tokens", json_integer(o->max_tokens));
        json_object_set_new(cfg, "prompt_tokens", json_integer(o->prompt_file ? -1 : o->prompt_tokens));
        json_object_set_new(cfg, "system_prompt_tokens", json_integer(o->system_prompt_tokens));
        json_object_set_new(cfg, "turns", json_integer(o->turns));
        json_object_set_new(cfg, "warmup", json_integer(o->warmup));
        json_object_set_new(root, "config", cfg);

        json_t *rq = json_object();
        json_object_set_new(rq, "total", json_integer(st->ok + st->failed));
        json_object_set_new(rq, "ok", json_integer(st->ok));
        json_object_set_new(rq, "failed", json_integer(st->failed));
        json_object_set_new(rq, "short", json_integer(st->short_ok));
        json_object_set_new(rq, "http_errors", json_integer(st->http_errors));
        json_object_set_new(rq, "transport_errors", json_integer(st->transport_errors));
        json_object_set_new(rq, "stream_errors", json_integer(st->stream_errors));
        json_t *hs = json_object();
        for (int c = 0; c < 600; c++) {
            if (st->status[c]) {
                char k[16];
                snprintf(k, sizeof k, "%d", c);
                json_object_set_new(hs, k, json_integer(st->status[c]));
            }
        }
        json_object_set_new(rq, "http_status", hs);
        json_t *em = json_array();
        for (int i = 0; i < st->n_errmsgs; i++)
            json_array_append_new(em, json_pack("{s:s, s:i}", "message", st->errmsgs[i],
                                                "count", (int)st->errcounts[i]));
        if (st->errmsgs_other)
            json_array_append_new(em, json_pack("{s:s, s:i}", "message", "(other)",
                                                "count", (int)st->errmsgs_other));
        json_object_set_new(rq, "errors", em);
        json_object_set_new(root, "requests", rq);

        json_object_set_new(root, "wall_s", json_real(wall));
        json_object_set_new(root, "completion_tokens", json_integer(st->tokens));
        json_object_set_new(root, "content_chunks", json_integer(st->chunks));
        json_object_set_new(root, "usage_reported", json_integer(st->usage_seen));
        json_object_set_new(root, "prompt_tokens", json_integer(st->prompt_tokens));
        json_object_set_new(root, "tokens_per_s", json_real(tps));
        json_object_set_new(root, "requests_per_s", json_real(rps));
        json_object_set_new(root, "stream_tokens_per_s", summary_json(&stps));
        json_object_set_new(root, "ttft_ms", summary_json(&ttft));
        json_object_set_new(root, "itl_ms", summary_json(&itl));
        json_object_set_new(root, "e2e_ms", summary_json(&e2e));
        json_object_set_new(root, "itl_samples_seen", json_integer((json_int_t)st->itl.seen));
        if (o->n_models > 1) {
            json_t *ma = json_array();
            for (int i = 0; i < o->n_models; i++) {
                const struct lg_model_stats *m = &st->models[i];
                json_array_append_new(ma, json_pack("{s:s, s:I, s:I, s:I, s:o}",
                    "model", o->models[i], "ok", (json_int_t)m->ok,
                    "failed", (json_int_t)m->failed, "tokens", (json_int_t)m->tokens,
                    "ttft_mean_ms", m->ok ? json_real(m->ttft_sum / (double)m->ok) : json_null()));
            }
            json_object_set_new(root, "per_model", ma);
        }
        char *s = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(root);
        return;
    }

    printf("corral-loadgen%s%s: %s  endpoint=%s  models=%s\n", o->label ? " " : "",
           o->label ? o->label : "", run->endpoint_url, ep, o->model_list);
    printf("  concurrency %d, requests %ld, max_tokens %d, ", o->concurrency, o->requests,
           o->max_tokens);
    if (o->prompt_file)
        printf("prompt file %s", o->prompt_file);
    else
        printf("prompt ~%d words", o->prompt_tokens);
    if (o->system_prompt_tokens)
        printf(", system prompt ~%d words", o->system_prompt_tokens);
    if (o->turns > 1)
        printf(", %d turns", o->turns);
    printf("\n");
    printf("requests: %ld ok, %ld failed (%ld http, %ld transport, %ld stream), "
           "%ld short of max_tokens\n", st->ok, st->failed, st->http_errors,
           st->transport_errors, st->stream_errors, st->short_ok);
    printf("  HTTP status:");
    if (st->status[0])
        printf(" none=%ld", st->status[0]);
    for (int c = 1; c < 600; c++)
        if (st->status[c])
            printf(" %d=%ld", c, st->status[c]);
    printf("\n");
    for (int i = 0; i < st->n_errmsgs; i++)
        printf("  error x%ld: %s\n", st->errcounts[i], st->errmsgs[i]);
    if (st->errmsgs_other)
        printf("  error x%ld: (other messages)\n", st->errmsgs_other);
    printf("wall %.3f s; completion tokens %lld (usage reported by %ld/%ld, chunks %lld); "
           "prompt tokens %lld\n",
           wall, st->tokens, st->usage_seen, st->ok, st->chunks, st->prompt_tokens);
    printf("throughput: %.2f tok/s aggregate, %.3f req/s\n", tps, rps);
    print_summary_line("stream tok/s", "tok/s", &stps);
    print_summary_line("TTFT", "ms", &ttft);
    print_summary_line("ITL", "ms", &itl);
    print_summary_line("E2E latency", "ms", &e2e);
    if (o->n_models > 1) {
        for (int i = 0; i < o->n_models; i++) {
            const struct lg_model_stats *m = &st->models[i];
            printf("  model %-20s ok %ld failed %ld tokens %lld ttft mean %.1f ms\n",
                   o->models[i], m->ok, m->failed, m->tokens,
                   m->ok ? m->ttft_sum / (double)m->ok : NAN);
        }
    }
}

/* ------------------------------------------------------------------ main */

static char *read_file_capped(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct lg_buf b;
    buf_init(&b, max);
    char tmp[65536];
    size_t n;
    bool ok = true;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (!buf_add(&b, tmp, n)) {
            ok = false;
            break;
        }
    }
    if (ferror(f))
        ok = false;
    fclose(f);
    if (!ok || !b.p) {
        buf_free(&b);
        return NULL;
    }
    return b.p;
}

static char *make_endpoint_url(const struct lg_opts *o)
{
    const char *path = o->endpoint == LG_CHAT ? "/v1/chat/completions" : "/v1/completions";
    if (strstr(o->url, "/v1/"))
        return strdup(o->url);
    size_t n = strlen(o->url);
    while (n > 0 && o->url[n - 1] == '/')
        n--;
    size_t total = n + strlen(path) + 1;
    char *u = malloc(total);
    if (!u)
        return NULL;
    memcpy(u, o->url, n);
    memcpy(u + n, path, strlen(path) + 1);
    return u;
}

int main(int argc, char **argv)
{
    struct lg_opts o;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    if (o.prompt_file) {
        o.prompt_file_text = read_file_capped(o.prompt_file, LG_MAX_PROMPT_FILE);
        if (!o.prompt_file_text) {
            fprintf(stderr, "corral-loadgen: cannot read %s (or larger than %u bytes)\n",
                    o.prompt_file, LG_MAX_PROMPT_FILE);
            return 2;
        }
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "corral-loadgen: curl_global_init failed\n");
        return 1;
    }

    int rc = 1;
    struct lg_run run;
    memset(&run, 0, sizeof run);
    run.o = &o;
    run.endpoint_url = make_endpoint_url(&o);
    run.multi = curl_multi_init();
    run.slots = calloc((size_t)o.concurrency, sizeof *run.slots);
    size_t nreq = (size_t)o.requests;
    run.st.ttft = calloc(nreq, sizeof(double));
    run.st.e2e = calloc(nreq, sizeof(double));
    run.st.stream_tps = calloc(nreq, sizeof(double));
    uint64_t itl_need = (uint64_t)o.requests * (uint64_t)o.max_tokens;
    run.st.itl.cap = itl_need < LG_ITL_RESERVOIR ? (size_t)itl_need : LG_ITL_RESERVOIR;
    run.st.itl.v = calloc(run.st.itl.cap ? run.st.itl.cap : 1, sizeof(double));
    run.st.itl.rng = 0x1234567;
    if (o.trace && !(run.trace = fopen(o.trace, "w"))) {
        fprintf(stderr, "corral-loadgen: cannot write %s\n", o.trace);
        return 2;
    }
    if (!run.endpoint_url || !run.multi || !run.slots || !run.st.ttft || !run.st.e2e ||
        !run.st.stream_tps || !run.st.itl.v) {
        fprintf(stderr, "corral-loadgen: out of memory\n");
        goto out;
    }
    curl_multi_setopt(run.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o.concurrency);

    if (o.system_prompt_tokens > 0) {
        struct lg_buf sp;
        buf_init(&sp, (size_t)o.system_prompt_tokens * 16 + 64);
        if (!buf_adds(&sp, "You are a helpful assistant. ") ||
            !add_words(&sp, o.system_prompt_tokens, seed_for(&o, 99, 0))) {
            buf_free(&sp);
            goto out;
        }
        run.system_prompt = sp.p;
    }

    for (int i = 0; i < o.concurrency; i++) {
        struct lg_slot *s = &run.slots[i];
        s->id = i;
        s->easy = curl_easy_init();
        if (!s->easy)
            goto out;
        s->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        s->hdrs = curl_slist_append(s->hdrs, "Accept: text/event-stream");
        /* no "Expect: 100-continue" wait on larger bodies */
        s->hdrs = curl_slist_append(s->hdrs, "Expect:");
        if (o.api_key) {
            char h[1024];
            snprintf(h, sizeof h, "Authorization: Bearer %s", o.api_key);
            s->hdrs = curl_slist_append(s->hdrs, h);
        }
        if (!s->hdrs)
            goto out;
        buf_init(&s->line, LG_MAX_LINE);
        buf_init(&s->reply, LG_MAX_REPLY);
        buf_init(&s->errbody, LG_MAX_ERRBODY);
        buf_init(&s->comp_hist, (size_t)LG_MAX_PROMPT_FILE +
                                (size_t)o.turns * (LG_MAX_REPLY + (size_t)o.turn_tokens * 16 + 64) +
                                (size_t)o.prompt_tokens * 16);
        s->cap_itl = 2 * (size_t)o.max_tokens + 64; /* chunks may split tokens */
        s->itl = calloc(s->cap_itl, sizeof(double));
        if (!s->itl)
            goto out;
    }

    if (o.warmup > 0) {
        if (run_phase(&run, o.warmup, true) != 0)
            goto out;
    }
    if (run_phase(&run, o.requests, false) != 0)
        goto out;
    report(&run);
    fflush(stdout);
    rc = run.st.failed > 0 ? 3 : 0;

out:
    if (run.slots) {
        for (int i = 0; i < o.concurrency; i++) {
            struct lg_slot *s = &run.slots[i];
            if (s->easy)
                curl_easy_cleanup(s->easy);
            curl_slist_free_all(s->hdrs);
            free(s->body);
            json_decref(s->history);
            buf_free(&s->comp_hist);
            buf_free(&s->line);
            buf_free(&s->reply);
            buf_free(&s->errbody);
            free(s->itl);
        }
    }
    free(run.slots);
    if (run.multi)
        curl_multi_cleanup(run.multi);
    free(run.endpoint_url);
    free(run.system_prompt);
    free(run.st.ttft);
    free(run.st.e2e);
    free(run.st.stream_tps);
    if (run.trace) fclose(run.trace);
    free(run.st.itl.v);
    for (int i = 0; i < run.st.n_errmsgs; i++)
        free(run.st.errmsgs[i]);
    for (int i = 0; i < o.n_models; i++)
        free(o.models[i]);
    free(o.prompt_file_text);
    json_decref(o.extra);
    curl_global_cleanup();
    return rc;
}
