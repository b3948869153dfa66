/* corral-mkmodel.c - write a llama-architecture GGUF with seeded random weights.
 *
 * No model can be downloaded where corral is tested and benchmarked, so this
 * tool makes one: a real llama graph (RMS norm, GQA attention with RoPE,
 * SwiGLU FFN) with deterministic random weights, and a real tokenizer copied
 * from a vocabulary GGUF that ships in llama.cpp's source tree. The text it
 * generates is gibberish, but loading, tokenizing, batching and timing are
 * exactly what a trained model of the same shape would cost.
 *
 * DESIGN
 *
 * - Metadata first, data streamed. The header (KV pairs + tensor infos) is
 *   built in a gguf_context whose tensors have no data (no_alloc), serialized
 *   with gguf_get_meta_data(), and the tensor data is then generated chunk by
 *   chunk and appended in the same order, each tensor padded to the GGUF
 *   alignment. Memory stays at a few MiB whatever the shape; the ~1B shape is
 *   a 2.2 GB F16 file written at disk speed.
 * - Deterministic. Each tensor has its own splitmix64 stream seeded from
 *   (--seed, tensor name), so the bytes depend only on the flags.
 * - Sane activations. Matrices are uniform with standard deviation
 *   1/sqrt(fan_in) (fan_in = ne[0], the row length), norms are 1.0, so every
 *   matmul keeps unit scale and logits stay finite in F16 and quantized form.
 * - Quantized types go through llama.cpp's own quantizer: the F16 file is
 *   written to a temporary path next to --out, llama_model_quantize() turns it
 *   into another temporary file, which is renamed onto --out. --out therefore
 *   never holds a partial file, even when several processes race to make the
 *   same fixture; temporaries are removed on failure and on SIGINT/SIGTERM.
 *
 * Exit status: 0 done, 1 failure while producing the output (I/O error,
 * quantizer error), 2 bad command line or unusable vocabulary file. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

#define MK_PROG "corral-mkmodel"

enum {
    MK_EXIT_OK = 0,
    MK_EXIT_FAIL = 1,  /* could not produce the output */
    MK_EXIT_USAGE = 2, /* bad flag, value or vocabulary */
};

/* chatml turns, and with tools (a Hermes/Qwen-style template, as
 * tests/templates/hermes-tools.jinja): the functions listed in the system
 * turn, calls as JSON in <tool_call> tags, results in <tool_response>.
 * Without tools it renders plain chatml. */
static const char mk__chatml_template[] =
    "{%- if tools %}\n"
    "{{- '<|im_start|>system\\n' }}\n"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}\n"
    "{{- '# Tools\\n\\nYou may call one or more functions to help with the request.\\n\\nThe functions are listed within <tools></tools> tags:\\n<tools>' }}\n"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}\n"
    "{{- '\\n</tools>\\n\\nFor each call, reply with a JSON object with the function name and arguments within <tool_call></tool_call> tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}\n"
    "{%- elif messages[0].role == 'system' %}\n"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) or (message.role == 'assistant' and not message.tool_calls) %}\n"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "{%- elif message.role == 'assistant' %}\n"
    "{{- '<|im_start|>assistant' }}\n"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}\n"
    "{%- for tool_call in message.tool_calls %}\n"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}\n"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}\n"
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}\n"
    "{{- '}\\n</tool_call>' }}\n"
    "{%- endfor %}\n"
    "{{- '<|im_end|>\\n' }}\n"
    "{%- elif message.role == 'tool' %}\n"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}\n"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}\n"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}\n"
    "{%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n";

/* ------------------------------------------------------------------ options */

enum mk_type { MK_TYPE_F16, MK_TYPE_Q8_0, MK_TYPE_Q4_0 };

static const char *const mk__type_names[] = {"f16", "q8_0", "q4_0"};

struct mk_opts {
    const char *out;
    long dim, layers, ffn, heads, kv_heads, ctx; /* ffn, kv_heads: 0 = default */
    uint64_t seed;
    const char *vocab;
    enum mk_type type;
    const char *chat_template; /* NULL = none */
    const char *name;
    bool verbose;
};

static void mk__usage(FILE *f) {
    fprintf(f,
            "usage: " MK_PROG " --out PATH [options]\n"
            "\n"
            "Write a llama-architecture GGUF with seeded random weights and a real\n"
            "tokenizer copied from a vocabulary GGUF. Same flags, same bytes.\n"
            "\n"
            "  --out PATH            output file (required); written atomically\n"
            "  --dim N               embedding length (default 64)\n"
            "  --layers N            transformer blocks (default 2)\n"
            "  --ffn N               feed-forward length (default 4*dim, rounded up to 32)\n"
            "  --heads N             attention heads (default 4)\n"
            "  --kv-heads N          key/value heads, divides --heads (default = heads)\n"
            "  --ctx N               llama.context_length metadata (default 4096)\n"
            "  --seed N              weight seed, 0..2^64-1 (default 1)\n"
            "  --vocab PATH          GGUF to copy tokenizer.* from (default $CORRAL_VOCAB,\n"
            "                        else %s)\n"
            "  --type T              f16 | q8_0 | q4_0 (default f16)\n"
            "  --chat-template T     chatml | none | a literal Jinja template (default chatml)\n"
            "  --name NAME           general.name (default " MK_PROG ")\n"
            "  --verbose             show llama.cpp's log (quantizer progress)\n"
            "  --help                this text\n"
            "\n"
            "Flags take `--flag value` or `--flag=value`. Exit status: 0 ok, 1 write or\n"
            "quantize failure, 2 bad arguments or vocabulary.\n"
            "\n"
            "Shapes used by corral's tests and benchmarks:\n"
            "  tiny  --dim 64 --layers 2 --ffn 128 --heads 4 --kv-heads 2 --seed 7\n"
            "  134M  --dim 768 --layers 12 --ffn 2048 --heads 12 --type q8_0\n"
            "  1.1B  --dim 2048 --layers 16 --ffn 8192 --heads 32 --kv-heads 8 --type q4_0\n",
#ifdef CORRAL_DEFAULT_VOCAB
            CORRAL_DEFAULT_VOCAB
#else
            "(none compiled in)"
#endif
    );
}

/* Prints "corral-mkmodel: <message>" and exits with MK_EXIT_USAGE. */
static _Noreturn void mk__die_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs(MK_PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(MK_EXIT_USAGE);
}

static long mk__parse_long(const char *flag, const char *s, long min, long max) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno == ERANGE || v < min || v > max)
        mk__die_usage("%s: expected an integer in [%ld, %ld], got '%s'", flag, min, max, s);
    return v;
}

static uint64_t mk__parse_u64(const char *flag, const char *s) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno == ERANGE)
        mk__die_usage("%s: expected an integer in [0, 2^64-1], got '%s'", flag, s);
    return (uint64_t)v;
}

static void mk__parse_args(int argc, char **argv, struct mk_opts *o) {
    *o = (struct mk_opts){
        .dim = 64,
        .layers = 2,
        .heads = 4,
        .ctx = 4096,
        .seed = 1,
        .type = MK_TYPE_F16,
        .chat_template = mk__chatml_template,
        .name = MK_PROG,
    };
#ifdef CORRAL_DEFAULT_VOCAB
    o->vocab = CORRAL_DEFAULT_VOCAB;
#endif
    const char *env_vocab = getenv("CORRAL_VOCAB");
    if (env_vocab && *env_vocab) o->vocab = env_vocab;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            mk__die_usage("unexpected argument '%s' (see --help)", arg);

        /* Split "--flag=value"; the flag name is copied out for messages. */
        char flag[64];
        const char *eq = strchr(arg, '=');
        size_t flen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (flen >= sizeof flag) mk__die_usage("unknown option '%s' (see --help)", arg);
        memcpy(flag, arg, flen);
        flag[flen] = '\0';

        if (strcmp(flag, "--help") == 0) {
            if (eq) mk__die_usage("--help takes no value");
            mk__usage(stdout);
            exit(MK_EXIT_OK);
        }
        if (strcmp(flag, "--verbose") == 0) {
            if (eq) mk__die_usage("--verbose takes no value");
            o->verbose = true;
            continue;
        }

        static const char *const valued[] = {
            "--out", "--dim",  "--layers", "--ffn",  "--heads",         "--kv-heads",
            "--ctx", "--seed", "--vocab",  "--type", "--chat-template", "--name",
        };
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
            if (strcmp(flag, valued[k]) == 0) known = true;
        if (!known) mk__die_usage("unknown option '%s' (see --help)", flag);

        const char *val;
        if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) mk__die_usage("%s needs a value", flag);
            val = argv[++i];
        }

        if (strcmp(flag, "--out") == 0) {
            if (!*val) mk__die_usage("--out: empty path");
            o->out = val;
        } else if (strcmp(flag, "--dim") == 0) {
            o->dim = mk__parse_long(flag, val, 1, 65536);
        } else if (strcmp(flag, "--layers") == 0) {
            o->layers = mk__parse_long(flag, val, 1, 1024);
        } else if (strcmp(flag, "--ffn") == 0) {
            o->ffn = mk__parse_long(flag, val, 1, 1L << 20);
        } else if (strcmp(flag, "--heads") == 0) {
            o->heads = mk__parse_long(flag, val, 1, 4096);
        } else if (strcmp(flag, "--kv-heads") == 0) {
            o->kv_heads = mk__parse_long(flag, val, 1, 4096);
        } else if (strcmp(flag, "--ctx") == 0) {
            o->ctx = mk__parse_long(flag, val, 1, 1L << 24);
        } else if (strcmp(flag, "--seed") == 0) {
            o->seed = mk__parse_u64(flag, val);
        } else if (strcmp(flag, "--vocab") == 0) {
            if (!*val) mk__die_usage("--vocab: empty path");
            o->vocab = val;
        } else if (strcmp(flag, "--type") == 0) {
            size_t t = 0;
            while (t < 3 && strcmp(val, mk__type_names[t]) != 0) t++;
            if (t == 3) mk__die_usage("--type: expected f16, q8_0 or q4_0, got '%s'", val);
            o->type = (enum mk_type)t;
        } else if (strcmp(flag, "--chat-template") == 0) {
            if (!*val) mk__die_usage("--chat-template: empty (use 'none' for no template)");
            if (strcmp(val, "chatml") == 0)
                o->chat_template = mk__chatml_template;
            else if (strcmp(val, "none") == 0)
                o->chat_template = NULL;
            else
                o->chat_template = val;
        } else { /* --name */
            if (!*val) mk__die_usage("--name: empty");
            o->name = val;
        }
    }

    if (!o->out) mk__die_usage("--out PATH is required (see --help)");
    if (!o->vocab) mk__die_usage("no vocabulary: pass --vocab PATH or set CORRAL_VOCAB");
    if (o->kv_heads == 0) o->kv_heads = o->heads;
    if (o->ffn == 0) o->ffn = (4 * o->dim + 31) / 32 * 32;

    if (o->dim % o->heads != 0)
        mk__die_usage("--dim %ld is not divisible by --heads %ld", o->dim, o->heads);
    if (o->heads % o->kv_heads != 0)
        mk__die_usage("--heads %ld is not divisible by --kv-heads %ld", o->heads, o->kv_heads);
    if ((o->dim / o->heads) % 2 != 0)
        mk__die_usage("head dim (--dim / --heads = %ld) must be even for RoPE", o->dim / o->heads);
    if (o->type != MK_TYPE_F16 && (o->dim % 32 != 0 || o->ffn % 32 != 0))
        mk__die_usage("--type %s needs --dim and --ffn to be multiples of 32 (got %ld, %ld)",
                      mk__type_names[o->type], o->dim, o->ffn);
}

/* ------------------------------------------------------------------ logging */

static bool mk__verbose;
static bool mk__mute;                                /* drop even errors (vocab probing) */
static enum ggml_log_level mk__last_level = GGML_LOG_LEVEL_INFO;

/* llama.cpp's and ggml's log: errors only, unless --verbose. */
static void mk__log_cb(enum ggml_log_level level, const char *text, void *user) {
    if (level != GGML_LOG_LEVEL_CONT) mk__last_level = level;
    if (mk__mute) return;
    if (mk__verbose || mk__last_level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

/* ------------------------------------------------------------------ temporaries */

/* Paths removed on failure or on SIGINT/SIGTERM; fixed buffers so the signal
 * handler only calls unlink(2). */
static char mk__tmp_f16[4096];
static char mk__tmp_out[4096];
static volatile sig_atomic_t mk__tmp_live;

static void mk__remove_temps(void) {
    if (mk__tmp_f16[0]) unlink(mk__tmp_f16);
    if (mk__tmp_out[0]) unlink(mk__tmp_out);
}

static void mk__on_signal(int sig) {
    if (mk__tmp_live) mk__remove_temps();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ------------------------------------------------------------------ random weights */

static uint64_t mk__splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The stream of one tensor: seed and name mixed (FNV-1a over the name). */
static uint64_t mk__tensor_seed(uint64_t seed, const char *name) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001B3ULL;
    uint64_t s = seed ^ h;
    mk__splitmix64(&s);
    return s;
}

/* Fills n floats (n even) uniform in [-a, a). */
static void mk__fill_uniform(float *dst, size_t n, float a, uint64_t *state) {
    const float scale = a / 2147483648.0f;
    for (size_t i = 0; i < n; i += 2) {
        uint64_t r = mk__splitmix64(state);
        dst[i] = (float)((int64_t)(r >> 32) - 2147483648LL) * scale;
        dst[i + 1] = (float)((int64_t)(r & 0xFFFFFFFFu) - 2147483648LL) * scale;
    }
}

/* ------------------------------------------------------------------ model layout */

struct mk_tensor {
    struct ggml_tensor *t; /* metadata only: name, type, shape */
    bool is_norm;          /* F32 ones; else a random F16 matrix */
};

struct mk_model {
    struct ggml_context *gctx; /* owns the tensor metadata */
    struct gguf_context *gguf; /* header being written */
    struct mk_tensor *tensors;
    int n_tensors;
    int64_t n_params;
    uint32_t n_vocab;
};

static struct ggml_tensor *mk__add(struct mk_model *m, bool is_norm, int64_t ne0, int64_t ne1,
                                   const char *fmt, int layer) {
    char name[GGML_MAX_NAME];
    snprintf(name, sizeof name, fmt, layer);
    struct ggml_tensor *t = is_norm ? ggml_new_tensor_1d(m->gctx, GGML_TYPE_F32, ne0)
                                    : ggml_new_tensor_2d(m->gctx, GGML_TYPE_F16, ne0, ne1);
    ggml_set_name(t, name);
    gguf_add_tensor(m->gguf, t);
    m->tensors[m->n_tensors++] = (struct mk_tensor){.t = t, .is_norm = is_norm};
    m->n_params += ggml_nelements(t);
    return t;
}

/* Loads the vocabulary GGUF and copies its tokenizer.* keys into m->gguf.
 * Returns MK_EXIT_OK, or MK_EXIT_USAGE after printing why. */
static int mk__copy_tokenizer(struct mk_model *m, const char *path) {
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        fprintf(stderr, MK_PROG ": cannot open vocabulary %s: %s\n", path, strerror(errno));
        return MK_EXIT_USAGE;
    }
    fclose(probe);

    mk__mute = !mk__verbose;
    struct gguf_context *src =
        gguf_init_from_file(path, (struct gguf_init_params){.no_alloc = true, .ctx = NULL});
    mk__mute = false;
    if (!src) {
        fprintf(stderr, MK_PROG ": vocabulary %s is not a readable GGUF file\n", path);
        return MK_EXIT_USAGE;
    }

    int64_t tok = gguf_find_key(src, "tokenizer.ggml.tokens");
    if (tok < 0 || gguf_get_kv_type(src, tok) != GGUF_TYPE_ARRAY ||
        gguf_get_arr_type(src, tok) != GGUF_TYPE_STRING || gguf_get_arr_n(src, tok) == 0 ||
        gguf_get_arr_n(src, tok) > INT32_MAX || gguf_find_key(src, "tokenizer.ggml.model") < 0) {
        fprintf(stderr, MK_PROG ": vocabulary %s has no tokenizer (tokenizer.ggml.model/tokens)\n", path);
        gguf_free(src);
        return MK_EXIT_USAGE;
    }
    m->n_vocab = (uint32_t)gguf_get_arr_n(src, tok);

    /* Copy everything into a scratch context, drop what is not tokenizer.*
     * (the vocab file's own general.* and <arch>.* keys describe some other
     * model), then append the rest after our own keys. */
    struct gguf_context *tmp = gguf_init_empty();
    gguf_set_kv(tmp, src);
    for (int64_t i = gguf_get_n_kv(tmp) - 1; i >= 0; i--) {
        const char *key = gguf_get_key(tmp, i);
        if (strncmp(key, "tokenizer.", 10) != 0) gguf_remove_key(tmp, key);
    }
    gguf_set_kv(m->gguf, tmp);
    gguf_free(tmp);
    gguf_free(src);
    return MK_EXIT_OK;
}

/* Builds header and tensor list. Returns MK_EXIT_OK, or an exit code after
 * printing why. */
static int mk__build(struct mk_model *m, const struct mk_opts *o) {
    const int64_t dim = o->dim, ffn = o->ffn, head_dim = o->dim / o->heads;
    const int64_t kv_dim = head_dim * o->kv_heads;

    m->gguf = gguf_init_empty();
    struct gguf_context *g = m->gguf;
    gguf_set_val_str(g, "general.architecture", "llama");
    gguf_set_val_str(g, "general.name", o->name);
    char desc[128];
    snprintf(desc, sizeof desc, "random weights from " MK_PROG ", seed %" PRIu64, o->seed);
    gguf_set_val_str(g, "general.description", desc);
    gguf_set_val_u32(g, "general.file_type", LLAMA_FTYPE_MOSTLY_F16);
    gguf_set_val_u32(g, "llama.context_length", (uint32_t)o->ctx);
    gguf_set_val_u32(g, "llama.embedding_length", (uint32_t)dim);
    gguf_set_val_u32(g, "llama.block_count", (uint32_t)o->layers);
    gguf_set_val_u32(g, "llama.feed_forward_length", (uint32_t)ffn);
    gguf_set_val_u32(g, "llama.attention.head_count", (uint32_t)o->heads);
    gguf_set_val_u32(g, "llama.attention.head_count_kv", (uint32_t)o->kv_heads);
    gguf_set_val_u32(g, "llama.rope.dimension_count", (uint32_t)head_dim);
    gguf_set_val_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_set_val_f32(g, "llama.rope.freq_base", 10000.0f);

    int rc = mk__copy_tokenizer(m, o->vocab);
    if (rc != MK_EXIT_OK) return rc;
    gguf_set_val_u32(g, "llama.vocab_size", m->n_vocab);
    if (o->chat_template)
        gguf_set_val_str(g, "tokenizer.chat_template", o->chat_template);
    else
        gguf_remove_key(g, "tokenizer.chat_template");

    const int n_tensors = 3 + 9 * (int)o->layers;
    m->tensors = calloc((size_t)n_tensors, sizeof *m->tensors);
    m->gctx = ggml_init((struct ggml_init_params){
        .mem_size = (size_t)(n_tensors + 1) * ggml_tensor_overhead(),
        .mem_buffer = NULL,
        .no_alloc = true,
    });
    if (!m->tensors || !m->gctx) {
        fprintf(stderr, MK_PROG ": out of memory\n");
        return MK_EXIT_FAIL;
    }

    /* Same order as llama.cpp's converter: embeddings, blocks, head. */
    mk__add(m, false, dim, m->n_vocab, "token_embd.weight", 0);
    for (int l = 0; l < (int)o->layers; l++) {
        mk__add(m, true, dim, 1, "blk.%d.attn_norm.weight", l);
        mk__add(m, false, dim, dim, "blk.%d.attn_q.weight", l);
        mk__add(m, false, dim, kv_dim, "blk.%d.attn_k.weight", l);
        mk__add(m, false, dim, kv_dim, "blk.%d.attn_v.weight", l);
        mk__add(m, false, dim, dim, "blk.%d.attn_output.weight", l);
        mk__add(m, true, dim, 1, "blk.%d.ffn_norm.weight", l);
        mk__add(m, false, dim, ffn, "blk.%d.ffn_gate.weight", l);
        mk__add(m, false, dim, ffn, "blk.%d.ffn_up.weight", l);
        mk__add(m, false, ffn, dim, "blk.%d.ffn_down.weight", l);
    }
    mk__add(m, true, dim, 1, "output_norm.weight", 0);
    mk__add(m, false, dim, m->n_vocab, "output.weight", 0);
    return MK_EXIT_OK;
}

/* ------------------------------------------------------------------ writing */

#define MK_CHUNK (1u << 16) /* elements generated per fwrite */

static bool mk__write_zeros(FILE *f, size_t n) {
    static const char zeros[64];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (fwrite(zeros, 1, k, f) != k) return false;
        n -= k;
    }
    return true;
}

/* Streams one tensor's data. Returns false on a write error (errno set). */
static bool mk__write_tensor(FILE *f, const struct mk_tensor *mt, uint64_t seed, float *fbuf,
                             ggml_fp16_t *hbuf) {
    const int64_t n = ggml_nelements(mt->t);
    if (mt->is_norm) {
        for (size_t i = 0; i < MK_CHUNK; i++) fbuf[i] = 1.0f;
        for (int64_t done = 0; done < n;) {
            size_t k = (size_t)(n - done < MK_CHUNK ? n - done : MK_CHUNK);
            if (fwrite(fbuf, sizeof *fbuf, k, f) != k) return false;
            done += (int64_t)k;
        }
        return true;
    }

    /* Uniform on [-a, a) has standard deviation a/sqrt(3). */
    const float a = sqrtf(3.0f / (float)mt->t->ne[0]);
    uint64_t state = mk__tensor_seed(seed, ggml_get_name(mt->t));
    for (int64_t done = 0; done < n;) {
        size_t k = (size_t)(n - done < MK_CHUNK ? n - done : MK_CHUNK);
        mk__fill_uniform(fbuf, (k + 1) & ~(size_t)1, a, &state);
        ggml_fp32_to_fp16_row(fbuf, hbuf, (int64_t)k);
        if (fwrite(hbuf, sizeof *hbuf, k, f) != k) return false;
        done += (int64_t)k;
    }
    return true;
}

/* Writes the F16 model to path. Returns false after printing why (errno). */
static bool mk__write_file(const struct mk_model *m, const char *path, const char *shown, uint64_t seed) {
    bool ok = false;
    FILE *f = NULL;
    void *meta = NULL;
    float *fbuf = malloc((MK_CHUNK + 1) * sizeof *fbuf);
    ggml_fp16_t *hbuf = malloc(MK_CHUNK * sizeof *hbuf);
    if (!fbuf || !hbuf) {
        errno = ENOMEM;
        goto end;
    }

    f = fopen(path, "wbx");
    if (!f) goto end;
    setvbuf(f, NULL, _IOFBF, 1u << 20);

    const size_t meta_size = gguf_get_meta_size(m->gguf);
    meta = malloc(meta_size);
    if (!meta) {
        errno = ENOMEM;
        goto end;
    }
    gguf_get_meta_data(m->gguf, meta);
    if (fwrite(meta, 1, meta_size, f) != meta_size) goto end;

    const size_t align = gguf_get_alignment(m->gguf);
    size_t pos = 0; /* bytes written into the data section */
    for (int i = 0; i < m->n_tensors; i++) {
        const size_t off = gguf_get_tensor_offset(m->gguf, i);
        if (off < pos) { /* cannot happen unless gguf's layout rules change */
            fprintf(stderr, MK_PROG ": internal error: tensor %d offset %zu < %zu\n", i, off, pos);
            errno = EINVAL;
            goto end;
        }
        if (!mk__write_zeros(f, off - pos)) goto end;
        if (!mk__write_tensor(f, &m->tensors[i], seed, fbuf, hbuf)) goto end;
        pos = off + ggml_nbytes(m->tensors[i].t);
    }
    if (!mk__write_zeros(f, (align - pos % align) % align)) goto end;

    FILE *closing = f;
    f = NULL;
    if (fclose(closing) != 0) goto end;
    ok = true;

end:
    if (!ok) {
        int err = errno;
        fprintf(stderr, MK_PROG ": cannot write %s: %s\n", shown, strerror(err ? err : EIO));
        if (f) fclose(f);
    }
    free(meta);
    free(hbuf);
    free(fbuf);
    return ok;
}

/* Quantizes src into dst with llama.cpp's defaults for the type. */
static bool mk__quantize(const char *src, const char *dst, enum mk_type type) {
    llama_backend_init();
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = type == MK_TYPE_Q8_0 ? LLAMA_FTYPE_MOSTLY_Q8_0 : LLAMA_FTYPE_MOSTLY_Q4_0;
    qp.nthread = 0; /* all cores */
    uint32_t rc = llama_model_quantize(src, dst, &qp);
    llama_backend_free();
    if (rc != 0) fprintf(stderr, MK_PROG ": quantizing to %s failed\n", mk__type_names[type]);
    return rc == 0;
}

/* ------------------------------------------------------------------ main */

static double mk__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    struct mk_opts o;
    mk__parse_args(argc, argv, &o);
    mk__verbose = o.verbose;
    llama_log_set(mk__log_cb, NULL);

    const double t0 = mk__now();
    struct mk_model m = {0};
    int rc = mk__build(&m, &o);
    if (rc != MK_EXIT_OK) goto done;
    rc = MK_EXIT_FAIL;

    const long pid = (long)getpid();
    if (snprintf(mk__tmp_out, sizeof mk__tmp_out, "%s.tmp-%ld", o.out, pid) >= (int)sizeof mk__tmp_out ||
        snprintf(mk__tmp_f16, sizeof mk__tmp_f16, "%s.f16.tmp-%ld", o.out, pid) >= (int)sizeof mk__tmp_f16) {
        fprintf(stderr, MK_PROG ": --out path too long\n");
        mk__tmp_out[0] = mk__tmp_f16[0] = '\0';
        rc = MK_EXIT_USAGE;
        goto done;
    }
    if (o.type == MK_TYPE_F16) mk__tmp_f16[0] = '\0'; /* written straight to tmp_out */
    mk__tmp_live = 1;
    signal(SIGINT, mk__on_signal);
    signal(SIGTERM, mk__on_signal);

    const char *f16_path = o.type == MK_TYPE_F16 ? mk__tmp_out : mk__tmp_f16;
    if (!mk__write_file(&m, f16_path, o.out, o.seed)) goto done;
    if (o.type != MK_TYPE_F16) {
        if (!mk__quantize(mk__tmp_f16, mk__tmp_out, o.type)) goto done;
        unlink(mk__tmp_f16);
    }
    if (rename(mk__tmp_out, o.out) != 0) {
        fprintf(stderr, MK_PROG ": cannot write %s: %s\n", o.out, strerror(errno));
        goto done;
    }
    mk__tmp_live = 0;
    mk__tmp_out[0] = mk__tmp_f16[0] = '\0';

    struct stat st;
    double mib = stat(o.out, &st) == 0 ? (double)st.st_size / (1024.0 * 1024.0) : 0.0;
    fprintf(stderr,
            MK_PROG ": wrote %s: %s, %.2fM params, %.2f MiB (dim %ld, layers %ld, ffn %ld, heads %ld/%ld, "
                    "vocab %" PRIu32 ", seed %" PRIu64 ") in %.1f s\n",
            o.out, mk__type_names[o.type], (double)m.n_params / 1e6, mib, o.dim, o.layers, o.ffn, o.heads,
            o.kv_heads, m.n_vocab, o.seed, mk__now() - t0);
    rc = MK_EXIT_OK;

done:
    if (mk__tmp_live) {
        mk__tmp_live = 0;
        mk__remove_temps();
    }
    if (m.gguf) gguf_free(m.gguf);
    if (m.gctx) ggml_free(m.gctx);
    free(m.tensors);
    return rc;
}
