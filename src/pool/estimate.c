/* estimate.c - predict a model's serving memory from its GGUF header alone.
 *
 * DESIGN
 * gguf_init_from_file with no_alloc and no ggml context parses the metadata
 * and tensor table and never touches tensor data, so estimating a 10 GB model
 * reads a few MB at most. Before parsing we check the magic ourselves (so a
 * junk file gets a clear reason); after parsing we check that the file is long
 * enough for the tensor table's last byte (gguf does not, without data).
 *
 * The figures mirror llama.cpp's own sizing (see llama-context.cpp): the KV
 * cache is F16, one stream per slot, n_ctx padded to 256 and then each slot's
 * share padded to 256 again. The compute allowance is a fitted rule, not a
 * graph plan; see ESTIMATE_COMPUTE_RULE below.
 */
#include "pool/estimate.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <ggml.h>
#include <gguf.h>

#define ESTIMATE_PAD 256u            /* llama.cpp pads n_ctx and n_ctx_seq to this */
#define ESTIMATE_KV_ELT 2u           /* bytes per F16 KV element */
#define ESTIMATE_SLACK (16ull << 20) /* fixed compute slack: graph metadata, small buffers */

static void estimate__err(char *errbuf, size_t errlen, const char *fmt, ...) {
    if (!errbuf || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t estimate__pad(uint64_t x, uint64_t n) { return (x + n - 1) / n * n; }

/* One integer of any GGUF integer type at raw pointer `d`; -1 if not an
 * integer type (or negative). */
static int64_t estimate__int_at(enum gguf_type t, const void *d) {
    int64_t v;
    switch (t) {
    case GGUF_TYPE_UINT8: v = *(const uint8_t *)d; break;
    case GGUF_TYPE_INT8: v = *(const int8_t *)d; break;
    case GGUF_TYPE_UINT16: v = *(const uint16_t *)d; break;
    case GGUF_TYPE_INT16: v = *(const int16_t *)d; break;
    case GGUF_TYPE_UINT32: v = *(const uint32_t *)d; break;
    case GGUF_TYPE_INT32: v = *(const int32_t *)d; break;
    case GGUF_TYPE_UINT64: v = *(const uint64_t *)d > INT64_MAX ? -1 : (int64_t)*(const uint64_t *)d; break;
    case GGUF_TYPE_INT64: v = *(const int64_t *)d; break;
    default: return -1;
    }
    return v < 0 ? -1 : v;
}

static size_t estimate__type_size(enum gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32: return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64: return 8;
    default: return 0;
    }
}

/* Key "<arch>.<suffix>" as an integer: a scalar, or the max of an integer
 * array (per-layer values). 0 = absent, 1 = found (*v set), -1 = wrong type. */
static int estimate__get_int(const struct gguf_context *g, const char *arch, const char *suffix, int64_t *v) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t id = gguf_find_key(g, key);
    if (id < 0) return 0;
    enum gguf_type t = gguf_get_kv_type(g, id);
    if (t != GGUF_TYPE_ARRAY) {
        if (estimate__type_size(t) == 0) return -1;
        *v = estimate__int_at(t, gguf_get_val_data(g, id));
        return *v < 0 ? -1 : 1;
    }
    enum gguf_type at = gguf_get_arr_type(g, id);
    size_t sz = estimate__type_size(at), n = gguf_get_arr_n(g, id);
    if (sz == 0 || n == 0) return -1;
    const unsigned char *d = gguf_get_arr_data(g, id);
    int64_t best = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t x = estimate__int_at(at, d + i * sz);
        if (x < 0) return -1;
        if (x > best) best = x;
    }
    *v = best;
    return 1;
}

/* Like estimate__get_int for a key that must be present and fit an int > 0. */
static int estimate__need_int(const struct gguf_context *g, const char *arch, const char *suffix, int *v,
                              char *errbuf, size_t errlen) {
    int64_t x = 0;
    int r = estimate__get_int(g, arch, suffix, &x);
    if (r <= 0 || x <= 0 || x > INT32_MAX) {
        estimate__err(errbuf, errlen, "unknown layout: %s %s.%s", r == 0 ? "missing" : "invalid", arch, suffix);
        return -1;
    }
    *v = (int)x;
    return 0;
}

/* Optional key: *v keeps its default when absent; -1 on a bad value. */
static int estimate__opt_int(const struct gguf_context *g, const char *arch, const char *suffix, int *v,
                             char *errbuf, size_t errlen) {
    int64_t x = 0;
    int r = estimate__get_int(g, arch, suffix, &x);
    if (r == 0) return 0;
    if (r < 0 || x > INT32_MAX) {
        estimate__err(errbuf, errlen, "unknown layout: invalid %s.%s", arch, suffix);
        return -1;
    }
    *v = (int)x;
    return 0;
}

/* n_vocab: token_embd.weight's second dim, else the tokenizer's token count,
 * else <arch>.vocab_size, else 0. */
static int estimate__n_vocab(const struct gguf_context *g, const char *arch) {
    int64_t t = gguf_find_tensor(g, "token_embd.weight");
    if (t >= 0) {
        int64_t nv = gguf_get_tensor_ne(g, t)[1];
        if (nv > 0 && nv <= INT32_MAX) return (int)nv;
    }
    int64_t id = gguf_find_key(g, "tokenizer.ggml.tokens");
    if (id >= 0 && gguf_get_kv_type(g, id) == GGUF_TYPE_ARRAY) {
        size_t n = gguf_get_arr_n(g, id);
        if (n > 0 && n <= INT32_MAX) return (int)n;
    }
    int64_t v = 0;
    if (estimate__get_int(g, arch, "vocab_size", &v) == 1 && v <= INT32_MAX) return (int)v;
    return 0;
}

int estimate_gguf(const char *path, const struct estimate_params *p, struct estimate *out, char *errbuf,
                  size_t errlen) {
    struct gguf_context *g = NULL;
    FILE *f = NULL;
    struct estimate e;
    memset(&e, 0, sizeof e);
    if (!path || !p || !out || p->n_slots < 1 || p->ctx_per_slot < 1 || p->n_batch < 1) {
        estimate__err(errbuf, errlen, "invalid arguments (need a path and n_slots, ctx_per_slot, n_batch >= 1)");
        goto fail;
    }

    /* ---- file checks: exists, is a GGUF ---- */
    struct stat st;
    if (stat(path, &st) != 0) {
        estimate__err(errbuf, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        estimate__err(errbuf, errlen, "%s: not a regular file", path);
        goto fail;
    }
    f = fopen(path, "rb");
    if (!f) {
        estimate__err(errbuf, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    char magic[4];
    if (fread(magic, 1, sizeof magic, f) != sizeof magic || memcmp(magic, "GGUF", 4) != 0) {
        estimate__err(errbuf, errlen, "%s: not a GGUF file (bad magic)", path);
        goto fail;
    }
    fclose(f);
    f = NULL;

    g = gguf_init_from_file(path, (struct gguf_init_params){.no_alloc = true, .ctx = NULL});
    if (!g) {
        estimate__err(errbuf, errlen, "%s: truncated or corrupt GGUF header", path);
        goto fail;
    }

    /* ---- weights, and a check that the data section is all there ---- */
    uint64_t data_end = 0;
    int64_t nt = gguf_get_n_tensors(g);
    for (int64_t i = 0; i < nt; i++) {
        uint64_t sz = gguf_get_tensor_size(g, i);
        uint64_t end = (uint64_t)gguf_get_tensor_offset(g, i) + sz;
        e.weights_bytes += sz;
        if (end > data_end) data_end = end;
    }
    if (nt > 0 && (uint64_t)gguf_get_data_offset(g) + data_end > (uint64_t)st.st_size) {
        estimate__err(errbuf, errlen, "%s: truncated (tensor data needs %llu bytes, file has %llu)", path,
                      (unsigned long long)(gguf_get_data_offset(g) + data_end), (unsigned long long)st.st_size);
        goto fail;
    }

    /* ---- hyperparameters ---- */
    int64_t aid = gguf_find_key(g, "general.architecture");
    if (aid < 0 || gguf_get_kv_type(g, aid) != GGUF_TYPE_STRING) {
        estimate__err(errbuf, errlen, "unknown layout: no general.architecture");
        goto fail;
    }
    const char *arch = gguf_get_val_str(g, aid);
    if (strlen(arch) == 0 || strlen(arch) >= sizeof e.arch) {
        estimate__err(errbuf, errlen, "unknown layout: bad general.architecture");
        goto fail;
    }
    snprintf(e.arch, sizeof e.arch, "%s", arch);

    if (estimate__need_int(g, arch, "block_count", &e.n_layer, errbuf, errlen) != 0) goto fail;
    if (estimate__need_int(g, arch, "embedding_length", &e.n_embd, errbuf, errlen) != 0) goto fail;
    if (estimate__need_int(g, arch, "attention.head_count", &e.n_head, errbuf, errlen) != 0) goto fail;
    e.n_head_kv = e.n_head;
    if (estimate__opt_int(g, arch, "attention.head_count_kv", &e.n_head_kv, errbuf, errlen) != 0) goto fail;
    int key_len = e.n_embd / e.n_head, val_len = e.n_embd / e.n_head;
    if (estimate__opt_int(g, arch, "attention.key_length", &key_len, errbuf, errlen) != 0) goto fail;
    if (estimate__opt_int(g, arch, "attention.value_length", &val_len, errbuf, errlen) != 0) goto fail;
    if (estimate__opt_int(g, arch, "context_length", &e.n_ctx_train, errbuf, errlen) != 0) goto fail;
    e.n_vocab = estimate__n_vocab(g, arch);

    /* ---- KV cache: what llama_context sizes for kv_unified = false ---- */
    uint64_t slots = (uint64_t)p->n_slots;
    uint64_t ctx = (uint64_t)p->ctx_per_slot;
    if (e.n_ctx_train > 0 && ctx > (uint64_t)e.n_ctx_train) ctx = (uint64_t)e.n_ctx_train;
    uint64_t n_ctx = estimate__pad(slots * ctx, ESTIMATE_PAD);
    uint64_t cells = estimate__pad(n_ctx / slots, ESTIMATE_PAD);
    e.kv_cells_per_slot = (int)cells;
    e.kv_bytes = (uint64_t)e.n_layer * slots * cells * (uint64_t)e.n_head_kv * ((uint64_t)key_len + (uint64_t)val_len) *
                 ESTIMATE_KV_ELT;

    /* ---- compute allowance (ESTIMATE_COMPUTE_RULE) ----
     * llama.cpp reserves its CPU compute buffer for one ubatch of n_batch
     * tokens all producing logits, so it is dominated by n_batch x n_vocab
     * F32; the activations add about 2 x n_batch x n_embd F32 (measured with
     * flash attention on, which is llama.cpp's CPU default; with it off the
     * buffer grew by ~2%). The output buffer holds one logits row per slot.
     * Rule, rounded up for safety:
     *   4 * (n_batch * (n_vocab + 4 * n_embd) + n_slots * n_vocab) + 16 MiB
     * The 16 MiB covers the vocab tables and small runtime allocations
     * (measured at ~7 MiB). */
    uint64_t ub = (uint64_t)p->n_batch, nv = (uint64_t)e.n_vocab, ne = (uint64_t)e.n_embd;
    e.compute_bytes = 4 * (ub * (nv + 4 * ne) + slots * nv) + ESTIMATE_SLACK;

    e.cache_bytes = p->prompt_cache;
    if (p->prompt_cache == ESTIMATE_CACHE_AS_KV)
        e.cache_bytes = e.kv_bytes < ESTIMATE_CACHE_AUTO_MAX ? e.kv_bytes : ESTIMATE_CACHE_AUTO_MAX;
    e.total_bytes = e.weights_bytes + e.kv_bytes + e.compute_bytes + e.cache_bytes;
    gguf_free(g);
    *out = e;
    return 0;

fail:
    if (f) fclose(f);
    if (g) gguf_free(g);
    return -1;
}
