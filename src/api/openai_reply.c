/* openai_reply.c - OpenAI response building: completions, stream chunks,
 * embeddings, errors, model lists and ids (openai.c parses requests).
 *
 * DESIGN: builders make jansson trees and dump them compact. Text from the
 * model is supposed to be UTF-8 but a model can emit anything, so every
 * string goes through json_str(), which validates and replaces each invalid
 * sequence with U+FFFD: the JSON we send is always valid. Embeddings are
 * written straight into a buf instead, since a tree of millions of
 * json_real nodes would cost far more memory than the text it becomes.
 */
#include "api/openai.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "util/buf.h"

/* ================================================================ UTF-8 */

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 if it is not
 * one; *bad_len is then the number of bytes to replace with one U+FFFD (the
 * maximal subpart of a sequence, at least 1, as Unicode recommends). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad_len)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    *bad_len = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlongs */
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* <= U+10FFFF */
    } else {
        return 0;
    }
    for (size_t k = 1; k < need; k++) {
        if (k >= n)
            return 0;
        unsigned char b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return 0;
        *bad_len = k + 1;
    }
    return need;
}

/* A JSON string from s[0..n), with invalid UTF-8 replaced by U+FFFD.
 * NULL only when out of memory. Returns a new reference. */
static json_t *json_str(const char *s, size_t n)
{
    if (!s)
        return json_string("");
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, bad;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i, &bad);
        if (!k)
            break;
        i += k;
    }
    if (i == n)
        return json_stringn_nocheck(s, n);

    /* Rare path: copy with replacements. Each bad byte grows to at most 3. */
    struct buf b;
    buf_init(&b, 0);
    if (buf_append(&b, s, i) < 0)
        goto fail;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i, &bad);
        if (k) {
            if (buf_append(&b, s + i, k) < 0)
                goto fail;
            i += k;
        } else {
            if (buf_append(&b, "\xEF\xBF\xBD", 3) < 0)
                goto fail;
            i += bad;
        }
    }
    json_t *j = json_stringn_nocheck(b.data, b.len);
    buf_free(&b);
    return j;
fail:
    buf_free(&b);
    return NULL;
}

static json_t *json_cstr(const char *s)
{
    return json_str(s, s ? strlen(s) : 0);
}

/* ================================================================ builders */

/* Set obj[key] = v, taking v's reference; fails on a NULL v. */
static int put(json_t *obj, const char *key, json_t *v)
{
    return v ? json_object_set_new(obj, key, v) : -1;
}

static json_t *finish_json(const char *finish_reason)
{
    return finish_reason ? json_cstr(finish_reason) : json_null();
}

/* A choice's finish_reason and logprobs (reference taken; NULL = null). */
static int put_end(json_t *choice, const char *finish_reason, json_t *logprobs)
{
    if (put(choice, "finish_reason", finish_json(finish_reason)) < 0) {
        json_decref(logprobs);
        return -1;
    }
    return put(choice, "logprobs", logprobs ? logprobs : json_null());
}

static json_t *usage_json(const struct engine_usage *u)
{
    struct engine_usage zero = {0, 0, 0};
    if (!u)
        u = &zero;
    json_t *o = json_object();
    json_t *details = json_object();
    if (!o || !details ||
        put(details, "cached_tokens", json_integer(u->cached_tokens)) < 0 ||
        put(o, "prompt_tokens", json_integer(u->prompt_tokens)) < 0 ||
        put(o, "completion_tokens", json_integer(u->completion_tokens)) < 0 ||
        put(o, "total_tokens", json_integer(u->prompt_tokens + u->completion_tokens)) < 0)
        goto fail;
    if (put(o, "prompt_tokens_details", details) < 0) {
        details = NULL; /* put consumed it */
        goto fail;
    }
    return o;
fail:
    json_decref(details);
    json_decref(o);
    return NULL;
}

/* The common head of completion objects. */
static json_t *head_json(const char *id, const char *object, int64_t created, const char *model)
{
    json_t *o = json_object();
    if (!o || put(o, "id", json_cstr(id)) < 0 || put(o, "object", json_string(object)) < 0 ||
        put(o, "created", json_integer(created)) < 0 || put(o, "model", json_cstr(model)) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Dump and drop a tree; NULL in gives NULL out. */
static char *dump_json(json_t *root)
{
    if (!root)
        return NULL;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

char *api_completion_json(enum engine_kind kind, const char *id, int64_t created,
                          const char *model, const char *text, size_t text_len,
                          const char *finish_reason, const struct engine_usage *usage)
{
    return api_completion_json_lp(kind, id, created, model, text, text_len, finish_reason, usage, NULL);
}

char *api_completion_json_lp(enum engine_kind kind, const char *id, int64_t created, const char *model,
                             const char *text, size_t text_len, const char *finish_reason,
                             const struct engine_usage *usage, json_t *logprobs)
{
    struct api_choice one = {.text = text, .len = text_len, .finish_reason = finish_reason, .logprobs = logprobs};
    return api_choices_json(kind, id, created, model, &one, 1, usage);
}

static json_t *choice_json(enum engine_kind kind, int index, struct api_choice *c)
{
    json_t *choice = json_object();
    json_t *lp = c->logprobs;
    c->logprobs = NULL;
    if (!choice || put(choice, "index", json_integer(index)) < 0)
        goto fail;
    if (kind == ENGINE_CHAT && c->message) {
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        int rc = msg ? json_object_update(msg, c->message) : -1;
        json_decref(c->message);
        c->message = NULL;
        if (rc < 0) {
            json_decref(msg);
            goto fail;
        }
        if (put(choice, "message", msg) < 0)
            goto fail;
    } else if (kind == ENGINE_CHAT) {
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        if (!msg || put(msg, "content", json_str(c->text, c->text ? c->len : 0)) < 0 ||
            (c->reasoning && put(msg, "reasoning_content", json_str(c->reasoning, c->reasoning_len)) < 0)) {
            json_decref(msg);
            goto fail;
        }
        if (put(choice, "message", msg) < 0)
            goto fail;
    } else if (put(choice, "text", json_str(c->text, c->text ? c->len : 0)) < 0) {
        goto fail;
    }
    json_t *l = lp;
    lp = NULL;
    if (put_end(choice, c->finish_reason, l) < 0)
        goto fail;
    return choice;
fail:
    json_decref(lp);
    json_decref(choice);
    return NULL;
}

char *api_choices_json(enum engine_kind kind, const char *id, int64_t created, const char *model,
                       struct api_choice *choices, size_t n, const struct engine_usage *usage)
{
    bool chat = kind == ENGINE_CHAT;
    json_t *root = head_json(id, chat ? "chat.completion" : "text_completion", created, model);
    json_t *arr = json_array();
    size_t i = 0;
    if (!root || !arr)
        goto fail;
    for (; i < n; i++) {
        json_t *c = choice_json(kind, (int)i, &choices[i]);
        if (!c || json_array_append_new(arr, c) < 0)
            goto fail;
    }
    json_t *cs = arr;
    arr = NULL;
    if (put(root, "choices", cs) < 0 || put(root, "usage", usage_json(usage)) < 0 ||
        put(root, "system_fingerprint", json_string("corral")) < 0)
        goto fail;
    return dump_json(root);
fail:
    for (; i < n; i++) {
        json_decref(choices[i].logprobs);
        json_decref(choices[i].message);
        choices[i].logprobs = choices[i].message = NULL;
    }
    json_decref(arr);
    json_decref(root);
    return NULL;
}

char *api_chunk_json(enum engine_kind kind, const char *id, int64_t created, const char *model,
                     bool role_delta, const char *text, size_t text_len,
                     const char *finish_reason, bool include_usage_null,
                     const struct engine_usage *usage, bool choices_empty)
{
    return api_chunk_json_lp(kind, id, created, model, 0, role_delta, text, text_len, finish_reason,
                             include_usage_null, usage, choices_empty, NULL);
}

/* A chunk; fields (taken over, may be NULL) join a chat chunk's delta. */
static char *chunk_json(enum engine_kind kind, const char *id, int64_t created, const char *model, int index,
                        bool role_delta, const char *text, size_t text_len, const char *finish_reason,
                        bool include_usage_null, const struct engine_usage *usage, bool choices_empty,
                        json_t *logprobs, json_t *fields)
{
    bool chat = kind == ENGINE_CHAT;
    json_t *root =
        head_json(id, chat ? "chat.completion.chunk" : "text_completion", created, model);
    json_t *choices = json_array();
    json_t *choice = NULL;
    if (!root || !choices)
        goto fail;
    if (!choices_empty) {
        choice = json_object();
        if (!choice || put(choice, "index", json_integer(index)) < 0)
            goto fail;
        if (chat) {
            json_t *delta = json_object();
            if (!delta)
                goto fail;
            if ((role_delta && put(delta, "role", json_string("assistant")) < 0) ||
                (text && put(delta, "content", json_str(text, text_len)) < 0) ||
                (fields && json_object_update(delta, fields) < 0)) {
                json_decref(delta);
                goto fail;
            }
            if (put(choice, "delta", delta) < 0)
                goto fail;
        } else if (put(choice, "text", json_str(text, text ? text_len : 0)) < 0) {
            goto fail;
        }
        json_t *lp = logprobs;
        logprobs = NULL;
        if (put_end(choice, finish_reason, lp) < 0)
            goto fail;
        json_t *c = choice;
        choice = NULL;
        if (json_array_append_new(choices, c) < 0)
            goto fail;
    }
    json_t *cs = choices;
    choices = NULL;
    if (put(root, "choices", cs) < 0 ||
        put(root, "system_fingerprint", json_string("corral")) < 0)
        goto fail;
    if (usage) {
        if (put(root, "usage", usage_json(usage)) < 0)
            goto fail;
    } else if (include_usage_null) {
        if (put(root, "usage", json_null()) < 0)
            goto fail;
    }
    json_decref(fields);
    return dump_json(root);
fail:
    json_decref(fields);
    json_decref(logprobs);
    json_decref(choice);
    json_decref(choices);
    json_decref(root);
    return NULL;
}

char *api_chunk_json_lp(enum engine_kind kind, const char *id, int64_t created, const char *model, int index,
                        bool role_delta, const char *text, size_t text_len, const char *finish_reason,
                        bool include_usage_null, const struct engine_usage *usage, bool choices_empty,
                        json_t *logprobs)
{
    return chunk_json(kind, id, created, model, index, role_delta, text, text_len, finish_reason, include_usage_null,
                      usage, choices_empty, logprobs, NULL);
}

char *api_chunk_json_delta(const char *id, int64_t created, const char *model, int index, json_t *fields,
                           bool include_usage_null, json_t *logprobs)
{
    if (!fields) {
        json_decref(logprobs);
        return NULL;
    }
    return chunk_json(ENGINE_CHAT, id, created, model, index, false, NULL, 0, NULL, include_usage_null, NULL, false,
                      logprobs, fields);
}

/* ------------------------------------------------------------------ logprobs */

static json_t *bytes_json(const char *s, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

static json_t *lp_entry_json(const char *piece, size_t len, float logprob)
{
    return json_pack("{s:o, s:f, s:o}", "token", json_str(piece, len), "logprob", (double)logprob, "bytes",
                     bytes_json(piece, len));
}

json_t *api_logprobs_json(enum engine_kind kind, const struct engine_logprob *lp, size_t n, size_t offset)
{
    if (kind == ENGINE_CHAT) {
        json_t *content = json_array();
        for (size_t i = 0; content && i < n; i++) {
            json_t *e = lp_entry_json(lp[i].piece, lp[i].len, lp[i].logprob);
            json_t *top = json_array();
            for (int k = 0; top && k < lp[i].n_top; k++)
                json_array_append_new(top, lp_entry_json(lp[i].top[k].piece, lp[i].top[k].len, lp[i].top[k].logprob));
            if (e)
                json_object_set_new(e, "top_logprobs", top ? top : json_array());
            else
                json_decref(top);
            if (e)
                json_array_append_new(content, e);
        }
        return json_pack("{s:o*, s:n}", "content", content, "refusal");
    }
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (size_t i = 0; tokens && lps && tops && offs && i < n; i++) {
        json_array_append_new(tokens, json_str(lp[i].piece, lp[i].len));
        json_array_append_new(lps, json_real(lp[i].logprob));
        json_t *t = json_object();
        for (int k = 0; t && k < lp[i].n_top; k++) {
            json_t *key = json_str(lp[i].top[k].piece, lp[i].top[k].len);
            if (key)
                json_object_set_new(t, json_string_value(key), json_real(lp[i].top[k].logprob));
            json_decref(key);
        }
        json_array_append_new(tops, t ? t : json_object());
        json_array_append_new(offs, json_integer((json_int_t)offset));
        offset += lp[i].len;
    }
    return json_pack("{s:o*, s:o*, s:o*, s:o*}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

/* Append a float as a JSON number: 9 significant digits round-trip a float;
 * a non-finite value (which JSON cannot hold) is written as 0. */
static int append_float(struct buf *b, float f)
{
    char tmp[32];
    if (!isfinite(f))
        f = 0.0f;
    int n = snprintf(tmp, sizeof tmp, "%.9g", (double)f);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -1;
    for (int i = 0; i < n; i++)
        if (tmp[i] == ',')
            tmp[i] = '.'; /* in case a locale with a decimal comma is set */
    return buf_append(b, tmp, (size_t)n);
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Append the base64 of a vector's little-endian float32 bytes. */
static int append_base64_floats(struct buf *b, const float *v, size_t dim)
{
    unsigned char in[3];
    size_t have = 0;
    char quad[4];
    for (size_t i = 0; i < dim; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        for (int k = 0; k < 4; k++) {
            in[have++] = (unsigned char)(u >> (8 * k));
            if (have == 3) {
                quad[0] = b64_alphabet[in[0] >> 2];
                quad[1] = b64_alphabet[((in[0] & 3) << 4) | (in[1] >> 4)];
                quad[2] = b64_alphabet[((in[1] & 15) << 2) | (in[2] >> 6)];
                quad[3] = b64_alphabet[in[2] & 63];
                if (buf_append(b, quad, 4) < 0)
                    return -1;
                have = 0;
            }
        }
    }
    if (have) {
        if (have == 1)
            in[1] = 0;
        quad[0] = b64_alphabet[in[0] >> 2];
        quad[1] = b64_alphabet[((in[0] & 3) << 4) | (in[1] >> 4)];
        quad[2] = have == 2 ? b64_alphabet[(in[1] & 15) << 2] : '=';
        quad[3] = '=';
        if (buf_append(b, quad, 4) < 0)
            return -1;
    }
    return 0;
}

/* Append a JSON-escaped string (with its quotes). */
static int append_json_string(struct buf *b, const char *s)
{
    json_t *j = json_cstr(s);
    char *txt = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    if (!txt)
        return -1;
    int rc = buf_puts(b, txt);
    free(txt);
    return rc;
}

char *api_embeddings_json(const char *model, const float *const *vectors, size_t n, size_t dim,
                          bool base64, int64_t prompt_tokens)
{
    struct buf b;
    buf_init(&b, 0);
    if (buf_puts(&b, "{\"object\":\"list\",\"data\":[") < 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (buf_printf(&b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":",
                       i ? "," : "", i) < 0)
            goto fail;
        if (base64) {
            if (buf_append(&b, "\"", 1) < 0 || append_base64_floats(&b, vectors[i], dim) < 0 ||
                buf_append(&b, "\"", 1) < 0)
                goto fail;
        } else {
            if (buf_append(&b, "[", 1) < 0)
                goto fail;
            for (size_t k = 0; k < dim; k++)
                if ((k && buf_append(&b, ",", 1) < 0) || append_float(&b, vectors[i][k]) < 0)
                    goto fail;
            if (buf_append(&b, "]", 1) < 0)
                goto fail;
        }
        if (buf_append(&b, "}", 1) < 0)
            goto fail;
    }
    if (buf_puts(&b, "],\"model\":") < 0 || append_json_string(&b, model) < 0 ||
        buf_printf(&b, ",\"usage\":{\"prompt_tokens\":%" PRId64 ",\"total_tokens\":%" PRId64 "}}",
                   prompt_tokens, prompt_tokens) < 0)
        goto fail;
    return buf_steal(&b, NULL);
fail:
    buf_free(&b);
    return NULL;
}

char *api_error_json(const struct corral_err *err)
{
    enum corral_status st = err ? err->status : CORRAL_INTERNAL;
    const char *code = err && err->code[0] ? err->code : corral_status_openai_code(st);
    json_t *root = json_object();
    json_t *e = json_object();
    if (!root || !e ||
        put(e, "message", json_cstr(err ? err->message : "internal error")) < 0 ||
        put(e, "type", json_cstr(corral_status_openai_type(st))) < 0 ||
        put(e, "param", err && err->param[0] ? json_cstr(err->param) : json_null()) < 0 ||
        put(e, "code", code ? json_cstr(code) : json_null()) < 0)
        goto fail;
    json_t *ee = e;
    e = NULL;
    if (put(root, "error", ee) < 0)
        goto fail;
    return dump_json(root);
fail:
    json_decref(e);
    json_decref(root);
    return NULL;
}

char *api_models_json(const char *const *ids, const int64_t *created, const char *const *status,
                      size_t n)
{
    json_t *root = json_object();
    json_t *data = json_array();
    json_t *m = NULL;
    if (!root || !data)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        m = json_object();
        if (!m || put(m, "id", json_cstr(ids[i])) < 0 ||
            put(m, "object", json_string("model")) < 0 ||
            put(m, "created", json_integer(created ? created[i] : 0)) < 0 ||
            put(m, "owned_by", json_string("corral")) < 0 ||
            (status && status[i] && put(m, "status", json_cstr(status[i])) < 0))
            goto fail;
        json_t *mm = m;
        m = NULL;
        if (json_array_append_new(data, mm) < 0)
            goto fail;
    }
    json_t *d = data;
    data = NULL;
    if (put(root, "object", json_string("list")) < 0 || put(root, "data", d) < 0)
        goto fail;
    return dump_json(root);
fail:
    json_decref(m);
    json_decref(data);
    json_decref(root);
    return NULL;
}

/* ================================================================ ids */

/* Fill p[0..n) with random bytes: getrandom(), then /dev/urandom. 0 or -1. */
static int random_bytes(unsigned char *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
    if (got == n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    return got == n ? 0 : -1;
}

void api_make_id(const char *prefix, char *out, size_t out_size)
{
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    enum { ID_CHARS = 24 };
    if (!out || out_size == 0)
        return;
    if (!prefix)
        prefix = "";
    size_t plen = strlen(prefix);
    if (plen >= out_size)
        plen = out_size - 1;
    memcpy(out, prefix, plen);
    size_t pos = plen;
    char chars[ID_CHARS];
    size_t have = 0;
    unsigned char rnd[64];
    while (have < ID_CHARS) {
        if (random_bytes(rnd, sizeof rnd) < 0) {
            /* No entropy source at all: still unique enough per process. */
            static _Atomic uint64_t counter;
            uint64_t x = ++counter * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
            for (size_t k = 0; k < sizeof rnd; k++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                rnd[k] = (unsigned char)x;
            }
        }
        /* Rejection sampling: 248 = 4 * 62 keeps the choice unbiased. */
        for (size_t k = 0; k < sizeof rnd && have < ID_CHARS; k++)
            if (rnd[k] < 248)
                chars[have++] = alnum[rnd[k] % 62];
    }
    for (size_t k = 0; k < ID_CHARS && pos + 1 < out_size; k++)
        out[pos++] = chars[k];
    out[pos] = '\0';
}
