/* estimate.h - predict a model's serving memory from its GGUF header alone.
 *
 * Reads only the GGUF metadata and tensor table (no tensor data) and returns
 * the bytes corral will need to serve the model with a given slot layout:
 * weights + KV cache + a compute-buffer allowance. Meant for admission
 * decisions ("does this fit?") before a model is loaded; it aims a little
 * high rather than low, within ~25% of what llama.cpp really allocates.
 */
#ifndef CORRAL_POOL_ESTIMATE_H
#define CORRAL_POOL_ESTIMATE_H

#include <stddef.h>
#include <stdint.h>

struct estimate_params {
    int n_slots;      /* parallel sequences (llama n_seq_max), >= 1 */
    int ctx_per_slot; /* tokens of context per slot, >= 1 */
    int n_batch;      /* physical batch (llama n_ubatch), >= 1 */
    uint64_t prompt_cache; /* bytes of host prompt cache; ESTIMATE_CACHE_AS_KV = kv_bytes */
};

#define ESTIMATE_CACHE_AS_KV UINT64_MAX
#define ESTIMATE_CACHE_AUTO_MAX (2ULL << 30) /* ESTIMATE_CACHE_AS_KV's cap: 2 GiB */

struct estimate {
    uint64_t weights_bytes; /* sum of tensor data sizes */
    uint64_t kv_bytes;      /* F16 KV cache for n_slots * padded ctx_per_slot cells */
    uint64_t compute_bytes; /* compute-buffer + logits allowance */
    uint64_t cache_bytes;   /* the host prompt cache's bound (see estimate_params) */
    uint64_t total_bytes;   /* sum of the four */
    int n_layer, n_embd, n_head, n_head_kv, n_ctx_train; /* n_ctx_train 0 if absent */
    int n_vocab;            /* 0 if the header does not say */
    int kv_cells_per_slot;  /* ctx_per_slot after capping at n_ctx_train and padding to 256 */
    char arch[32];
};

/* Estimate the memory to serve the GGUF model at `path` with layout `p`.
 *
 * weights = sum of every tensor's data size (what llama_model_size reports).
 * kv      = n_layer * n_slots * cells * n_head_kv * (key_length + value_length) * 2
 *           where cells = ctx_per_slot, capped at n_ctx_train when the header
 *           has it (the engine does the same), padded as llama.cpp pads it
 *           (to a multiple of 256 per slot); key/value_length default to
 *           n_embd / n_head; per-layer head_count_kv arrays use their max.
 * compute = 4 * (n_batch * (n_vocab + 4 * n_embd) + n_slots * n_vocab) + 16 MiB
 *           (logits of one ubatch dominate; see ESTIMATE_COMPUTE_RULE in
 *           estimate.c).
 * cache   = prompt_cache, or kv (at most 2 GiB) when it is ESTIMATE_CACHE_AS_KV: finished
 *           sequences' KV kept in host memory (filled only as they finish).
 *
 * Weights are the bytes llama.cpp keeps live. On CPU, Q4_0/IQ4_NL/Q4_K-type
 * weights may be repacked into an anonymous copy at load; the mmapped file
 * pages they came from stay in RSS (clean and reclaimable) until evicted, so
 * RSS right after load can read up to ~2x weights_bytes for such files.
 *
 * Returns 0 and fills *out; or -1 with a one-line reason in errbuf (file
 * missing or unreadable, not a GGUF file, truncated, unknown layout such as a
 * missing general.architecture or block_count). errbuf may be NULL. */
int estimate_gguf(const char *path, const struct estimate_params *p, struct estimate *out, char *errbuf,
                  size_t errlen);

#endif
