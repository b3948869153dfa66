/* llama_prompt.c - a chat request's prompt: the chat template, and
 * tokenisation in which only the template's own text may become special
 * tokens.
 *
 * DESIGN
 * The template is the model's own Jinja text rendered by llama.cpp's
 * `common` library (chat_bridge.h), a Jinja file or text named by
 * `chat_template`, or a llama.cpp built-in template named there (llama.h's
 * llama_chat_apply_template; no Jinja). Rendering yields one string; the
 * request's text is found in it again (each message's content, in order,
 * as given or trimmed). Tokenising then follows llama.cpp's own algorithm
 * (llama-vocab.cpp: special tokens, longest first, split the raw text into
 * fragments; each raw fragment is tokenised alone) except that request
 * text is never split: a user who writes "<|im_start|>system" gets those
 * characters as text, not a role marker. Cutting at the same places as
 * llama.cpp keeps the tokens of a prompt without such text identical to
 * whole-prompt tokenisation (an SPM vocabulary's space prefix included).
 * A content the template rewrote beyond trimming is not found and stays
 * unprotected (as it is in llama-server); a debug line says so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/chat_bridge.h"
#include "engine/llama_internal.h"
#include "util/buf.h"
#include "util/log.h"

/* Largest Jinja template file read. */
#define PROMPT_TEMPLATE_MAX (1u << 20)

/* The first n-byte needle in hay[0..hn), or NULL (memmem is not POSIX). */
static const char *prompt__find(const char *hay, size_t hn, const char *needle, size_t n) {
    if (n == 0 || n > hn) return NULL;
    for (const char *p = hay, *end = hay + hn - n; p <= end; p++) {
        p = memchr(p, needle[0], (size_t)(end - p) + 1);
        if (!p) return NULL;
        if (memcmp(p, needle, n) == 0) return p;
    }
    return NULL;
}

/* ------------------------------------------------------------ special tokens */

static const struct llama_vocab *prompt__vocab_for_sort;

static int prompt__by_length(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    size_t lx = strlen(llama_vocab_get_text(prompt__vocab_for_sort, x));
    size_t ly = strlen(llama_vocab_get_text(prompt__vocab_for_sort, y));
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* The tokens llama.cpp matches in text when parsing specials, longest first. */
static int prompt__specials_init(struct llama_engine *e) {
    size_t n = 0;
    for (int32_t id = 0; id < e->n_vocab; id++)
        if (llama_vocab_get_attr(e->vocab, id) &
            (LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_USER_DEFINED | LLAMA_TOKEN_ATTR_UNKNOWN))
            n++;
    e->specials = malloc((n ? n : 1) * sizeof *e->specials);
    if (!e->specials) return -1;
    e->n_specials = 0;
    for (int32_t id = 0; id < e->n_vocab; id++)
        if (llama_vocab_get_attr(e->vocab, id) &
                (LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_USER_DEFINED | LLAMA_TOKEN_ATTR_UNKNOWN) &&
            llama_vocab_get_text(e->vocab, id)[0])
            e->specials[e->n_specials++] = id;
    prompt__vocab_for_sort = e->vocab; /* loads run one at a time, on the loader thread */
    qsort(e->specials, e->n_specials, sizeof *e->specials, prompt__by_length);
    return 0;
}

/* ------------------------------------------------------------ the template */

static char *prompt__read_file(const char *path, struct corral_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return corral_err_set(err, CORRAL_CONFIG, "chat_template", "cannot read %s", path), NULL;
    struct buf b;
    buf_init(&b, PROMPT_TEMPLATE_MAX);
    char chunk[8192];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0) rc = buf_append(&b, chunk, n);
    fclose(f);
    size_t len;
    char *text = rc == 0 ? buf_steal(&b, &len) : NULL;
    buf_free(&b);
    if (!text) corral_err_set(err, CORRAL_CONFIG, "chat_template", "%s is over 1 MiB or unreadable", path);
    return text;
}

static bool prompt__is_jinja(const char *s) { return strstr(s, "{{") || strstr(s, "{%"); }

/* A built-in template by name, else NULL (llama_chat_apply_template knows it). */
static bool prompt__builtin_ok(const char *name) {
    struct llama_chat_message probe = {"user", "hi"};
    char tmp[256];
    return llama_chat_apply_template(name, &probe, 1, true, tmp, sizeof tmp) >= 0;
}

int llama_engine__prompt_init(struct llama_engine *e, const char *want, const char *kwargs, struct corral_err *err) {
    if (prompt__specials_init(e) != 0) return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory"), -1;
    if (kwargs && !(e->tmpl_kwargs = strdup(kwargs))) return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory"), -1;
    char why[512] = "";
    struct stat st;
    if (want && !prompt__is_jinja(want) && stat(want, &st) == 0 && S_ISREG(st.st_mode)) {
        char *src = prompt__read_file(want, err);
        if (!src) return -1;
        e->jinja = chat_bridge_new(e->model, src, why, sizeof why);
        free(src);
        if (!e->jinja) return corral_err_set(err, CORRAL_CONFIG, "chat_template", "%s: %s", want, why), -1;
        e->tmpl_name = strdup(want);
    } else if (want && prompt__is_jinja(want)) {
        e->jinja = chat_bridge_new(e->model, want, why, sizeof why);
        if (!e->jinja) return corral_err_set(err, CORRAL_CONFIG, "chat_template", "%s", why), -1;
        e->tmpl_name = strdup("jinja (from the config)");
    } else if (want) {
        if (!prompt__builtin_ok(want))
            return corral_err_set(err, CORRAL_CONFIG, "chat_template",
                                  "chat_template '%s' is neither a file, Jinja text nor a built-in template", want),
                   -1;
        e->tmpl = strdup(want);
        e->tmpl_name = strdup(want);
    } else {
        e->jinja = chat_bridge_new(e->model, NULL, why, sizeof why);
        if (e->jinja) {
            e->tmpl_name = strdup(llama_model_chat_template(e->model, NULL) ? "the model's (jinja)" : "chatml");
        } else {
            log_warn("model %s: its chat template does not parse (%s); using chatml", e->id, why);
            e->tmpl = strdup("chatml");
            e->tmpl_name = strdup("chatml");
        }
    }
    if (!e->tmpl_name || (!e->jinja && !e->tmpl)) return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory"), -1;
    return 0;
}

void llama_engine__prompt_free(struct llama_engine *e) {
    chat_bridge_free(e->jinja);
    free(e->tmpl);
    free(e->tmpl_name);
    free(e->tmpl_kwargs);
    free(e->specials);
}

/* Render with a built-in template. Returns malloc'd text. */
static char *prompt__builtin(struct llama_engine *e, const struct llama_chat_message *msgs, size_t n, size_t total,
                             size_t *len, struct corral_err *err) {
    int32_t cap = (int32_t)(total * 2);
    char *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        char *nb = realloc(out, (size_t)cap + 1);
        if (!nb) break;
        out = nb;
        int32_t k = llama_chat_apply_template(e->tmpl, msgs, n, true, out, cap);
        if (k < 0) {
            free(out);
            corral_err_set(err, CORRAL_ENGINE, "messages", "the model's chat template could not be applied");
            return NULL;
        }
        if (k <= cap) {
            out[k] = '\0';
            *len = (size_t)k;
            return out;
        }
        cap = k;
    }
    free(out);
    corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory formatting the prompt");
    return NULL;
}

/* ------------------------------------------------------------ fragments */

/* A piece of the prompt: raw text (request text is never split), or a special token. */
struct frag {
    size_t off, len;
    int32_t token; /* -1 = raw */
    bool request;  /* raw request text */
};

struct frags {
    struct frag *v;
    size_t n, cap;
};

static int frags_push(struct frags *f, struct frag x) {
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 16;
        struct frag *nv = realloc(f->v, nc * sizeof *nv);
        if (!nv) return -1;
        f->v = nv;
        f->cap = nc;
    }
    f->v[f->n++] = x;
    return 0;
}

/* Split every raw template fragment at each special token, longest first. */
static int prompt__split(const struct llama_engine *e, const char *p, struct frags *f) {
    for (size_t t = 0; t < e->n_specials; t++) {
        const char *txt = llama_vocab_get_text(e->vocab, e->specials[t]);
        size_t tl = strlen(txt);
        enum llama_token_attr attr = llama_vocab_get_attr(e->vocab, e->specials[t]);
        struct frags out = {0};
        for (size_t i = 0; i < f->n; i++) {
            struct frag x = f->v[i];
            if (x.token >= 0 || x.request || x.len < tl) {
                if (frags_push(&out, x) != 0) goto nomem;
                continue;
            }
            size_t at = x.off, end = x.off + x.len;
            for (;;) {
                const char *hit = prompt__find(p + at, end - at, txt, tl);
                if (!hit) break;
                size_t h = (size_t)(hit - p), left_end = h, right = h + tl;
                if (attr & LLAMA_TOKEN_ATTR_LSTRIP)
                    while (left_end > at && (p[left_end - 1] == ' ' || p[left_end - 1] == '\n' || p[left_end - 1] == '\t'))
                        left_end--;
                if (attr & LLAMA_TOKEN_ATTR_RSTRIP)
                    while (right < end && (p[right] == ' ' || p[right] == '\n' || p[right] == '\t')) right++;
                if (left_end > at && frags_push(&out, (struct frag){at, left_end - at, -1, false}) != 0) goto nomem;
                if (frags_push(&out, (struct frag){h, tl, e->specials[t], false}) != 0) goto nomem;
                at = right;
            }
            if (at < end && frags_push(&out, (struct frag){at, end - at, -1, false}) != 0) goto nomem;
        }
        free(f->v);
        *f = out;
        continue;
    nomem:
        free(out.v);
        return -1;
    }
    return 0;
}

/* Room for `more` tokens past nt. */
static int prompt__room(int32_t **toks, size_t *cap, size_t nt, size_t more) {
    if (nt + more <= *cap) return 0;
    size_t nc = (nt + more) * 2;
    int32_t *nv = realloc(*toks, nc * sizeof **toks);
    if (!nv) return -1;
    *toks = nv;
    *cap = nc;
    return 0;
}

/* Append tokens of raw text p[0..n) (no special parsing, no BOS). */
static int prompt__raw(const struct llama_engine *e, const char *p, size_t n, int32_t **toks, size_t *nt,
                       size_t *cap) {
    if (n > INT32_MAX - 16 || prompt__room(toks, cap, *nt, n + 8) != 0) return -1;
    int32_t k = llama_tokenize(e->vocab, p, (int32_t)n, *toks + *nt, (int32_t)(*cap - *nt), false, false);
    if (k < 0) {
        if (prompt__room(toks, cap, *nt, (size_t)-k) != 0) return -1;
        k = llama_tokenize(e->vocab, p, (int32_t)n, *toks + *nt, (int32_t)(*cap - *nt), false, false);
        if (k < 0) return -1;
    }
    *nt += (size_t)k;
    return 0;
}

/* Tokenise prompt p (len bytes) with the request text at spans (pairs). */
static int32_t *prompt__tokenize(const struct llama_engine *e, const char *p, size_t len, const size_t *spans,
                                 size_t n_spans, size_t *n_out) {
    struct frags f = {0};
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i < n_spans && rc == 0; i++) {
        if (spans[2 * i] > at) rc |= frags_push(&f, (struct frag){at, spans[2 * i] - at, -1, false});
        rc |= frags_push(&f, (struct frag){spans[2 * i], spans[2 * i + 1], -1, true});
        at = spans[2 * i] + spans[2 * i + 1];
    }
    if (rc == 0 && at < len) rc = frags_push(&f, (struct frag){at, len - at, -1, false});
    if (rc != 0 || prompt__split(e, p, &f) != 0) {
        free(f.v);
        return NULL;
    }
    size_t cap = len + 16, nt = 0;
    int32_t *toks = malloc(cap * sizeof *toks);
    if (!toks) goto fail;
    if (llama_vocab_get_add_bos(e->vocab)) toks[nt++] = llama_vocab_bos(e->vocab);
    for (size_t i = 0; i < f.n;) {
        if (f.v[i].token >= 0) {
            if (prompt__room(&toks, &cap, nt, 1) != 0) goto fail;
            toks[nt++] = f.v[i].token;
            i++;
            continue;
        }
        /* adjacent raw fragments (template and request text) are one piece, as in llama.cpp */
        size_t j = i, end = f.v[i].off + f.v[i].len;
        while (j + 1 < f.n && f.v[j + 1].token < 0) {
            j++;
            end = f.v[j].off + f.v[j].len;
        }
        if (prompt__raw(e, p + f.v[i].off, end - f.v[i].off, &toks, &nt, &cap) != 0) goto fail;
        i = j + 1;
    }
    if (llama_vocab_get_add_eos(e->vocab)) {
        if (prompt__room(&toks, &cap, nt, 1) != 0) goto fail;
        toks[nt++] = llama_vocab_eos(e->vocab);
    }
    free(f.v);
    *n_out = nt;
    return toks;
fail:
    free(toks);
    free(f.v);
    return NULL;
}

/* Where each message's content landed in the prompt: in order, each after
 * the previous, as given or trimmed. Fills spans (2 per message at most). */
static size_t prompt__spans(const struct llama_engine *e, const char *p, const struct engine_input *in,
                            size_t *spans) {
    size_t n = 0, at = 0;
    for (size_t i = 0; i < in->n_messages; i++) {
        const char *c = in->messages[i].content;
        size_t cl = strlen(c);
        while (cl && strchr(" \t\r\n", c[cl - 1])) cl--;
        const char *t = c;
        while (t < c + cl && strchr(" \t\r\n", *t)) t++;
        size_t tl = cl - (size_t)(t - c);
        if (tl == 0) continue;
        const char *hit = strstr(p + at, c); /* as given */
        size_t hl = strlen(c);
        if (!hit) {
            hit = prompt__find(p + at, strlen(p + at), t, tl); /* trimmed */
            hl = tl;
        }
        if (!hit) {
            log_debug("model %s: the template rewrote message %zu; its text is tokenised as the template's", e->id,
                      i);
            continue;
        }
        spans[2 * n] = (size_t)(hit - p);
        spans[2 * n + 1] = hl;
        at = spans[2 * n] + hl;
        n++;
    }
    return n;
}

/* The output's thinking section: the template's tags, or (a template whose
 * analysis found none, or a built-in one) a prompt that ends by opening
 * <think> as the Qwen3, QwQ and DeepSeek-R1 templates do. */
static void prompt__thinking(struct engine_req *r, const char *prompt, size_t len, const struct chat_thinking *th) {
    const char *start = th && th->end[0] ? th->start : "<think>";
    const char *end = th && th->end[0] ? th->end : "</think>";
    while (len > 0 && strchr(" \t\r\n", prompt[len - 1])) len--;
    size_t sl = strlen(start);
    bool opened = sl > 0 && len >= sl && memcmp(prompt + len - sl, start, sl) == 0;
    if ((th && th->end[0]) || opened) engine_req_set_thinking(r, start, end, opened);
}

/* The tool-call syntax of a render with tools, on the request: its
 * grammar (checked by building it once) and triggers, and its parser. */
static int prompt__tool_syntax(struct llama_engine *e, struct engine_req *r, struct chat_bridge_out *bo,
                               struct corral_err *err) {
    if (bo->grammar) {
        struct llama_sampler *probe =
            bo->lazy ? llama_sampler_init_grammar_lazy_patterns(e->vocab, bo->grammar, "root",
                                                                (const char **)bo->triggers, bo->n_triggers, NULL, 0)
                     : llama_sampler_init_grammar(e->vocab, bo->grammar, "root");
        if (!probe)
            return corral_err_set(err, CORRAL_INVALID_REQUEST, "tools",
                                  "the tools' call grammar from model %s's chat template does not build (a "
                                  "parameters schema it cannot express?)",
                                  e->id),
                   -1;
        llama_sampler_free(probe);
        log_debug("model %s: tool-call grammar (%s):\n%s", e->id, bo->lazy ? "lazy" : "from the start", bo->grammar);
        engine_req_set_grammar(r, bo->grammar);
        bo->grammar = NULL;
        if (bo->lazy) {
            engine_req_set_triggers(r, bo->triggers, bo->n_triggers);
            bo->triggers = NULL;
            bo->n_triggers = 0;
        }
    }
    if (bo->syntax) {
        engine_req_set_syntax(r, bo->syntax, chat_syntax_free);
        bo->syntax = NULL;
    }
    return 0;
}

int32_t *llama_engine__chat_tokens(struct llama_engine *e, struct engine_req *r, const struct engine_input *in,
                                   size_t *n, struct corral_err *err) {
    size_t nm = in->n_messages, total = 64;
    struct chat_bridge_msg *bm = calloc(nm ? nm : 1, sizeof *bm);
    struct llama_chat_message *lm = calloc(nm ? nm : 1, sizeof *lm);
    size_t *spans = calloc(2 * (nm ? nm : 1), sizeof *spans);
    char *prompt = NULL;
    int32_t *toks = NULL;
    if (!bm || !lm || !spans) goto nomem;
    for (size_t i = 0; i < nm; i++) {
        const struct engine_message *m = &in->messages[i];
        bm[i].role = lm[i].role = strcmp(m->role, "developer") == 0 && !e->jinja ? "system" : m->role;
        bm[i].content = lm[i].content = m->content;
        bm[i].tool_calls = m->tool_calls;
        bm[i].tool_call_id = m->tool_call_id;
        bm[i].name = m->name;
        total += strlen(m->content) + strlen(m->role) + (m->tool_calls ? strlen(m->tool_calls) : 0) + 32;
    }
    if (total > INT32_MAX / 2) {
        corral_err_set(err, CORRAL_TOO_LARGE, "messages", "messages are too long");
        goto out;
    }
    size_t len = 0;
    if (e->jinja) {
        char why[512];
        struct chat_bridge_opts o = {.kwargs_json = e->tmpl_kwargs,
                                     .tools_json = in->tools.json,
                                     .tool_choice = (enum chat_tool_choice)in->tools.choice,
                                     .tool_name = in->tools.name,
                                     .parallel = in->tools.parallel,
                                     .reasoning = !in->reasoning_in_content};
        struct chat_bridge_out bo;
        if (chat_bridge_render(e->jinja, bm, nm, &o, &bo, why, sizeof why) != 0) {
            corral_err_set(err, CORRAL_INVALID_REQUEST,
                           in->tools.json ? "tools" : "messages", "%s", why);
            goto out;
        }
        prompt = bo.prompt;
        len = bo.len;
        bo.prompt = NULL;
        if (r) {
            prompt__thinking(r, prompt, len, &bo.th);
            if (prompt__tool_syntax(e, r, &bo, err) != 0) {
                chat_bridge_out_free(&bo);
                goto out;
            }
        }
        chat_bridge_out_free(&bo);
    } else if (in->tools.json && in->tools.choice != ENGINE_TOOLS_NONE) {
        corral_err_set(err, CORRAL_INVALID_REQUEST, "tools",
                       "model %s's chat template (the built-in '%s') cannot describe tools; set its chat_template "
                       "to a Jinja template",
                       e->id, e->tmpl_name);
        goto out;
    } else if (!(prompt = prompt__builtin(e, lm, nm, total, &len, err))) {
        goto out;
    } else if (r) {
        prompt__thinking(r, prompt, len, NULL);
    }
    if (len / (size_t)e->max_piece > (size_t)e->n_ctx_slot + 2) {
        corral_err_set(err, CORRAL_CONTEXT_LENGTH, "messages",
                       "this model's maximum context length is %d tokens, but the messages (%zu bytes) are far "
                       "longer; shorten them",
                       e->n_ctx_slot, len);
        goto out;
    }
    size_t ns = prompt__spans(e, prompt, in, spans);
    if (!(toks = prompt__tokenize(e, prompt, len, spans, ns, n))) goto nomem;
    goto out;
nomem:
    corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory formatting the prompt");
out:
    free(prompt);
    free(spans);
    free(bm);
    free(lm);
    return toks;
}
