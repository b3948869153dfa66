/* test_estimate.c - GGUF header memory estimate: arithmetic and bad files.
 *
 * Each test writes a small GGUF (real tensors, a few hundred bytes) to /tmp
 * with ggml's gguf writer and checks estimate_gguf's figures exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <ggml.h>
#include <gguf.h>

#include "pool/estimate.h"

#define MiB (1024ull * 1024ull)

/* What a test GGUF holds; zero fields are left out of the file. */
struct spec {
    const char *arch;   /* NULL: no general.architecture */
    uint32_t n_layer;   /* 0: no block_count */
    uint32_t n_embd;
    uint32_t n_head;
    uint32_t n_head_kv; /* 0: key absent */
    const uint32_t *head_kv_arr; /* per-layer array instead of n_head_kv */
    uint32_t key_len, val_len;
    uint32_t ctx_train;
    int n_vocab_embd;   /* >0: add token_embd.weight [n_embd x n_vocab_embd] F32 */
    int n_tokens;       /* >0: add tokenizer.ggml.tokens with this many strings */
};

/* Weights added to every file besides token_embd: F16 [8,8] = 128 bytes and
 * Q8_0 [64,1] = 2 blocks of 34 = 68 bytes. */
#define EXTRA_WEIGHTS (128u + 68u)

static void tmp_path(char *buf, size_t n) {
    snprintf(buf, n, "/tmp/test_estimate_XXXXXX");
    int fd = mkstemp(buf);
    assert_true(fd >= 0);
    close(fd);
}

static void key(char *buf, size_t n, const char *arch, const char *suffix) {
    snprintf(buf, n, "%s.%s", arch, suffix);
}

/* Set "<arch>.<suffix>" = v, unless v is 0. */
static void set_u32(struct gguf_context *g, const char *arch, const char *suffix, uint32_t v) {
    char k[128];
    if (v == 0) return;
    key(k, sizeof k, arch, suffix);
    gguf_set_val_u32(g, k, v);
}

/* Write spec `s` to a new temp file; path into buf. */
static void write_gguf(const struct spec *s, char *buf, size_t n) {
    tmp_path(buf, n);
    struct gguf_context *g = gguf_init_empty();
    char k[128];
    const char *arch = s->arch ? s->arch : "llama";
    if (s->arch) gguf_set_val_str(g, "general.architecture", s->arch);
    set_u32(g, arch, "block_count", s->n_layer);
    set_u32(g, arch, "embedding_length", s->n_embd);
    set_u32(g, arch, "attention.head_count", s->n_head);
    if (s->head_kv_arr) {
        key(k, sizeof k, arch, "attention.head_count_kv");
        gguf_set_arr_data(g, k, GGUF_TYPE_UINT32, s->head_kv_arr, s->n_layer);
    } else {
        set_u32(g, arch, "attention.head_count_kv", s->n_head_kv);
    }
    set_u32(g, arch, "attention.key_length", s->key_len);
    set_u32(g, arch, "attention.value_length", s->val_len);
    set_u32(g, arch, "context_length", s->ctx_train);
    if (s->n_tokens > 0) {
        const char **toks = calloc((size_t)s->n_tokens, sizeof *toks);
        assert_non_null(toks);
        for (int i = 0; i < s->n_tokens; i++) toks[i] = "t";
        gguf_set_arr_str(g, "tokenizer.ggml.tokens", toks, (size_t)s->n_tokens);
        free(toks);
    }

    struct ggml_context *ctx = ggml_init((struct ggml_init_params){.mem_size = 1 << 20, .no_alloc = false});
    assert_non_null(ctx);
    if (s->n_vocab_embd > 0) {
        struct ggml_tensor *t = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, s->n_embd, s->n_vocab_embd);
        ggml_set_name(t, "token_embd.weight");
        memset(t->data, 0, ggml_nbytes(t));
        gguf_add_tensor(g, t);
    }
    struct ggml_tensor *a = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, 8, 8);
    ggml_set_name(a, "blk.0.attn_q.weight");
    memset(a->data, 0, ggml_nbytes(a));
    gguf_add_tensor(g, a);
    struct ggml_tensor *q = ggml_new_tensor_2d(ctx, GGML_TYPE_Q8_0, 64, 1);
    ggml_set_name(q, "blk.0.ffn_up.weight");
    memset(q->data, 0, ggml_nbytes(q));
    gguf_add_tensor(g, q);

    assert_true(gguf_write_to_file(g, buf, false));
    gguf_free(g);
    ggml_free(ctx);
}

static uint64_t compute_rule(uint64_t ub, uint64_t nv, uint64_t ne, uint64_t slots) {
    return 4 * (ub * (nv + 4 * ne) + slots * nv) + 16 * MiB;
}

/* ---- arithmetic ---- */

static void test_gqa_and_padding(void **state) {
    (void)state;
    struct spec s = {.arch = "llama", .n_layer = 2, .n_embd = 64, .n_head = 8, .n_head_kv = 2,
                     .ctx_train = 4096, .n_vocab_embd = 10};
    char path[64];
    write_gguf(&s, path, sizeof path);
    struct estimate e;
    char err[256] = "";
    /* 2 slots x 300: n_ctx 600 -> 768, 384 per slot -> 512 cells */
    struct estimate_params p = {.n_slots = 2, .ctx_per_slot = 300, .n_batch = 32};
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), 0);
    assert_string_equal(e.arch, "llama");
    assert_int_equal(e.n_layer, 2);
    assert_int_equal(e.n_embd, 64);
    assert_int_equal(e.n_head, 8);
    assert_int_equal(e.n_head_kv, 2);
    assert_int_equal(e.n_ctx_train, 4096);
    assert_int_equal(e.n_vocab, 10);
    assert_int_equal(e.kv_cells_per_slot, 512);
    assert_int_equal(e.weights_bytes, 64 * 10 * 4 + EXTRA_WEIGHTS);
    /* head dim 64/8 = 8 for K and V; F16 */
    assert_int_equal(e.kv_bytes, 2ull * 2 * 512 * 2 * (8 + 8) * 2);
    assert_int_equal(e.compute_bytes, compute_rule(32, 10, 64, 2));
    assert_int_equal(e.cache_bytes, 0);
    assert_int_equal(e.total_bytes, e.weights_bytes + e.kv_bytes + e.compute_bytes);

    /* a prompt cache counts in the total: a fixed size, or as much as the KV */
    p.prompt_cache = 12345;
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), 0);
    assert_int_equal(e.cache_bytes, 12345);
    assert_int_equal(e.total_bytes, e.weights_bytes + e.kv_bytes + e.compute_bytes + 12345);
    p.prompt_cache = ESTIMATE_CACHE_AS_KV;
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), 0);
    assert_int_equal(e.cache_bytes, e.kv_bytes);
    assert_int_equal(e.total_bytes, e.weights_bytes + 2 * e.kv_bytes + e.compute_bytes);
    unlink(path);
}

static void test_exact_multiple_not_padded(void **state) {
    (void)state;
    struct spec s = {.arch = "llama", .n_layer = 3, .n_embd = 32, .n_head = 4, .n_vocab_embd = 5};
    char path[64];
    write_gguf(&s, path, sizeof path);
    struct estimate e;
    char err[256] = "";
    struct estimate_params p = {.n_slots = 4, .ctx_per_slot = 1024, .n_batch = 512};
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), 0);
    assert_int_equal(e.kv_cells_per_slot, 1024);
    assert_int_equal(e.n_head_kv, 4); /* missing head_count_kv = head_count */
    assert_int_equal(e.n_ctx_train, 0);
    assert_int_equal(e.kv_bytes, 3ull * 4 * 1024 * 4 * (8 + 8) * 2);
    /* 1 x 1: padded up to 256 */
    p = (struct estimate_params){.n_slots = 1, .ctx_per_slot = 1, .n_batch = 1};
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), 0);
    assert_int_equal(e.kv_cells_per_slot, 256);
    assert_int_equal(e.kv_bytes, 3ull * 1 * 256 * 4 * (8 + 8) * 2);
    unlink(path);
}

static void test_per_layer_heads_and_explicit_head_dims(void **state) {
    (void)state;
    const uint32_t kv[3] = {2, 4, 1};
    struct spec s = {.arch = "qwen3", .n_layer = 3, .n_embd = 64, .n_head = 8, .head_kv_arr = kv,
                     .key_len = 16, .val_len = 12, .n_vocab_embd = 7};
    char path[64];
    write_gguf(&s, path, sizeof path);
    struct estimate e;
    char err[256] = "";
    struct estimate_params p = {.n_slots = 1, .ctx_per_slot = 512, .n_batch = 64};
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), 0);
    assert_string_equal(e.arch, "qwen3");
    assert_int_equal(e.n_head_kv, 4); /* max over layers */
    assert_int_equal(e.kv_bytes, 3ull * 512 * 4 * (16 + 12) * 2);
    unlink(path);
}

static void test_ctx_capped_at_train(void **state) {
    (void)state;
    struct spec s = {.arch = "llama", .n_layer = 1, .n_embd = 16, .n_head = 2, .ctx_train = 256,
                     .n_vocab_embd = 3};
    char path[64];
    write_gguf(&s, path, sizeof path);
    struct estimate e;
    char err[256] = "";
    struct estimate_params p = {.n_slots = 2, .ctx_per_slot = 4096, .n_batch = 16};
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), 0);
    assert_int_equal(e.kv_cells_per_slot, 256);
    assert_int_equal(e.kv_bytes, 1ull * 2 * 256 * 2 * (8 + 8) * 2);
    unlink(path);
}

static void test_vocab_from_tokenizer(void **state) {
    (void)state;
    struct spec s = {.arch = "llama", .n_layer = 1, .n_embd = 16, .n_head = 2, .n_tokens = 100};
    char path[64];
    write_gguf(&s, path, sizeof path);
    struct estimate e;
    char err[256] = "";
    struct estimate_params p = {.n_slots = 3, .ctx_per_slot = 256, .n_batch = 128};
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), 0);
    assert_int_equal(e.n_vocab, 100);
    assert_int_equal(e.weights_bytes, EXTRA_WEIGHTS);
    assert_int_equal(e.compute_bytes, compute_rule(128, 100, 16, 3));
    unlink(path);
}

/* ---- bad input ---- */

static void test_missing_file(void **state) {
    (void)state;
    struct estimate e;
    char err[256] = "";
    struct estimate_params p = {1, 512, 512, 0};
    assert_int_equal(estimate_gguf("/tmp/test_estimate_does_not_exist.gguf", &p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "No such file"));
    assert_null(strchr(err, '\n'));
}

static void test_junk_file(void **state) {
    (void)state;
    char path[64];
    tmp_path(path, sizeof path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("this is not a model at all\n", f);
    fclose(f);
    struct estimate e;
    char err[256] = "";
    struct estimate_params p = {1, 512, 512, 0};
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a GGUF"));
    /* empty file too */
    f = fopen(path, "wb");
    fclose(f);
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a GGUF"));
    unlink(path);
}

static void test_truncated(void **state) {
    (void)state;
    struct spec s = {.arch = "llama", .n_layer = 1, .n_embd = 16, .n_head = 2, .n_vocab_embd = 3};
    char path[64];
    write_gguf(&s, path, sizeof path);
    struct estimate e;
    char err[256] = "";
    struct estimate_params p = {1, 512, 512, 0};
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    /* the writer pads the last tensor (Q8_0, 68 bytes) to 96: losing only
     * padding is fine, losing data is not */
    assert_int_equal(truncate(path, size - 20), 0);
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), 0);
    assert_int_equal(truncate(path, size - 40), 0);
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "truncated"));
    /* cut inside the header */
    assert_int_equal(truncate(path, 40), 0);
    err[0] = '\0';
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "truncated"));
    unlink(path);
}

static void test_unknown_layout(void **state) {
    (void)state;
    struct estimate e;
    char err[256] = "";
    struct estimate_params p = {1, 512, 512, 0};
    char path[64];
    struct spec no_arch = {.n_layer = 1, .n_embd = 16, .n_head = 2};
    write_gguf(&no_arch, path, sizeof path);
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "general.architecture"));
    unlink(path);
    struct spec no_layers = {.arch = "llama", .n_embd = 16, .n_head = 2};
    write_gguf(&no_layers, path, sizeof path);
    assert_int_equal(estimate_gguf(path, &p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "llama.block_count"));
    unlink(path);
}

static void test_bad_params(void **state) {
    (void)state;
    struct estimate e;
    char err[256] = "";
    struct estimate_params p = {0, 512, 512, 0};
    assert_int_equal(estimate_gguf("/nonexistent", &p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "invalid"));
    assert_int_equal(estimate_gguf("/nonexistent", &p, &e, NULL, 0), -1); /* no errbuf is fine */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gqa_and_padding),
        cmocka_unit_test(test_exact_multiple_not_padded),
        cmocka_unit_test(test_per_layer_heads_and_explicit_head_dims),
        cmocka_unit_test(test_ctx_capped_at_train),
        cmocka_unit_test(test_vocab_from_tokenizer),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_junk_file),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_unknown_layout),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
