/* gguf_meta.c - see gguf_meta.h. gguf_init_from_file with no_alloc reads
 * the metadata and the tensor table only, as estimate.c does. */
#include "pool/gguf_meta.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <ggml.h>
#include <gguf.h>

static void meta__str(const struct gguf_context *g, const char *key, char *out, size_t n) {
    int64_t id = gguf_find_key(g, key);
    if (id >= 0 && gguf_get_kv_type(g, id) == GGUF_TYPE_STRING) snprintf(out, n, "%s", gguf_get_val_str(g, id));
}

static int64_t meta__int(const struct gguf_context *g, const char *arch, const char *suffix) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t id = gguf_find_key(g, key);
    if (id < 0) return 0;
    switch (gguf_get_kv_type(g, id)) {
    case GGUF_TYPE_UINT8: return gguf_get_val_u8(g, id);
    case GGUF_TYPE_INT8: return gguf_get_val_i8(g, id);
    case GGUF_TYPE_UINT16: return gguf_get_val_u16(g, id);
    case GGUF_TYPE_INT16: return gguf_get_val_i16(g, id);
    case GGUF_TYPE_UINT32: return gguf_get_val_u32(g, id);
    case GGUF_TYPE_INT32: return gguf_get_val_i32(g, id);
    case GGUF_TYPE_UINT64: return (int64_t)gguf_get_val_u64(g, id);
    case GGUF_TYPE_INT64: return gguf_get_val_i64(g, id);
    case GGUF_TYPE_ARRAY: /* per-layer values (e.g. head counts): the first */
        if (gguf_get_arr_n(g, id) > 0 && gguf_get_arr_type(g, id) == GGUF_TYPE_INT32)
            return ((const int32_t *)gguf_get_arr_data(g, id))[0];
        if (gguf_get_arr_n(g, id) > 0 && gguf_get_arr_type(g, id) == GGUF_TYPE_UINT32)
            return ((const uint32_t *)gguf_get_arr_data(g, id))[0];
        return 0;
    default: return 0;
    }
}

int gguf_meta_read(const char *path, struct gguf_meta *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    struct stat st;
    if (stat(path, &st) != 0) return snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1;
    m->file_bytes = (uint64_t)st.st_size;
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    bool ok = f && fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
    if (f) fclose(f);
    if (!ok) return snprintf(err, errlen, "%s: not a GGUF file", path), -1;
    struct gguf_context *g = gguf_init_from_file(path, (struct gguf_init_params){.no_alloc = true, .ctx = NULL});
    if (!g) return snprintf(err, errlen, "%s: truncated or corrupt GGUF header", path), -1;
    meta__str(g, "general.name", m->name, sizeof m->name);
    meta__str(g, "general.architecture", m->arch, sizeof m->arch);
    m->chat_template = gguf_find_key(g, "tokenizer.chat_template") >= 0;
    uint64_t by_type[GGML_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < gguf_get_n_tensors(g); i++) {
        const int64_t *ne = gguf_get_tensor_ne(g, i);
        uint64_t n = 1;
        for (int d = 0; d < GGML_MAX_DIMS; d++) n *= (uint64_t)(ne[d] > 0 ? ne[d] : 1);
        m->params += n;
        enum ggml_type t = gguf_get_tensor_type(g, i);
        if ((int)t >= 0 && t < GGML_TYPE_COUNT) by_type[t] += gguf_get_tensor_size(g, i);
    }
    int best = -1;
    for (int t = 0; t < GGML_TYPE_COUNT; t++)
        if (by_type[t] && (best < 0 || by_type[t] > by_type[best])) best = t;
    if (best >= 0) {
        snprintf(m->quant, sizeof m->quant, "%s", ggml_type_name((enum ggml_type)best));
        for (char *p = m->quant; *p; p++) *p = (char)toupper((unsigned char)*p);
    }
    if (m->arch[0]) {
        m->ctx_train = meta__int(g, m->arch, "context_length");
        m->layers = meta__int(g, m->arch, "block_count");
        m->embd = meta__int(g, m->arch, "embedding_length");
        m->heads = meta__int(g, m->arch, "attention.head_count");
        m->kv_heads = meta__int(g, m->arch, "attention.head_count_kv");
        if (!m->kv_heads) m->kv_heads = m->heads;
    }
    gguf_free(g);
    return 0;
}

json_t *gguf_meta_json(const struct gguf_meta *m) {
    return json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "name", m->name, "architecture",
                     m->arch, "parameters", (json_int_t)m->params, "quantization", m->quant, "file_bytes",
                     (json_int_t)m->file_bytes, "context_length", (json_int_t)m->ctx_train, "layers",
                     (json_int_t)m->layers, "embedding_length", (json_int_t)m->embd, "heads",
                     (json_int_t)m->heads, "kv_heads", (json_int_t)m->kv_heads, "chat_template",
                     m->chat_template);
}
