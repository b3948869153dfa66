/* cli_list.c - `corral list` and `corral show MODEL`: the models a running
 * server knows (GET /v1/models and each model's `meta`: what its GGUF
 * header says, read without loading it), or, given serve options and no
 * server, the configured models' files read here.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/gguf_meta.h"

/* "20.5 MiB" */
static void list__size(uint64_t b, char *out, size_t n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) v /= 1024, i++;
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* "19.5M", "7.2B" */
static void list__count(uint64_t c, char *out, size_t n) {
    if (c >= 1000000000ull) snprintf(out, n, "%.1fB", (double)c / 1e9);
    else if (c >= 1000000ull) snprintf(out, n, "%.1fM", (double)c / 1e6);
    else snprintf(out, n, "%" PRIu64, c);
}

static const char *list__s(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s && *s ? s : "-";
}

static void list__header(void) {
    printf("%-28s %-10s %10s %-10s %8s %-8s %8s\n", "ID", "STATUS", "SIZE", "ARCH", "PARAMS", "QUANT", "CTX");
}

static void cli_list_row(const char *id, const char *status, json_t *meta) {
    char size[32] = "-", params[32] = "-", ctx[32] = "-";
    if (meta) {
        list__size((uint64_t)json_integer_value(json_object_get(meta, "file_bytes")), size, sizeof size);
        list__count((uint64_t)json_integer_value(json_object_get(meta, "parameters")), params, sizeof params);
        json_int_t c = json_integer_value(json_object_get(meta, "context_length"));
        if (c > 0) snprintf(ctx, sizeof ctx, "%lld", (long long)c);
    }
    printf("%-28s %-10s %10s %-10s %8s %-8s %8s\n", id, status ? status : "-", size,
           meta ? list__s(meta, "architecture") : "-", params, meta ? list__s(meta, "quantization") : "-", ctx);
}

void cli_list_offline(const char *const *ids, const char *const *paths, size_t n) {
    list__header();
    for (size_t i = 0; i < n; i++) {
        struct gguf_meta m;
        char why[256];
        json_t *meta = gguf_meta_read(paths[i], &m, why, sizeof why) == 0 ? gguf_meta_json(&m) : NULL;
        cli_list_row(ids[i], "-", meta);
        json_decref(meta);
    }
}

static int list__opts(const char *cmd, int argc, char **argv, char *url, size_t ulen, char *auth, size_t alen,
                      const char **model) {
    const char *u = NULL, *key = getenv("CORRAL_API_KEY");
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) u = argv[++i];
        else if (strcmp(argv[i], "--api-key") == 0 && i + 1 < argc) key = argv[++i];
        else if (argv[i][0] != '-' && model && !*model) *model = argv[i];
        else {
            fprintf(stderr, "corral %s: unexpected argument '%s'\nusage: corral %s%s [--url URL] [--api-key K]\n",
                    cmd, argv[i], cmd, model ? " MODEL" : "");
            return CLI_USAGE;
        }
    }
    if (model && !*model) {
        fprintf(stderr, "corral %s: missing MODEL\n", cmd);
        return CLI_USAGE;
    }
    cli_base_url(u, url, ulen);
    auth[0] = '\0';
    if (key && *key) snprintf(auth, alen, "Authorization: Bearer %s", key);
    return CLI_OK;
}

int cli_list(int argc, char **argv) {
    char url[512], auth[600];
    int rc = list__opts("list", argc, argv, url, sizeof url, auth, sizeof auth, NULL);
    if (rc != CLI_OK) return rc;
    json_t *all = NULL;
    long st = cli_get_json(url, auth, "/v1/models", &all, "corral list");
    if (st < 0) return CLI_CONNECT;
    if (st >= 400) {
        fprintf(stderr, "corral list: the server answered %ld\n", st);
        json_decref(all);
        return CLI_FAILED;
    }
    list__header();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(all, "data"), i, m) {
        const char *id = json_string_value(json_object_get(m, "id"));
        if (!id) continue;
        char path[600];
        snprintf(path, sizeof path, "/v1/models/%s", id);
        json_t *one = NULL;
        cli_get_json(url, auth, path, &one, NULL);
        cli_list_row(id, json_string_value(json_object_get(m, "status")), json_object_get(one, "meta"));
        json_decref(one);
    }
    json_decref(all);
    return CLI_OK;
}

int cli_show(int argc, char **argv) {
    char url[512], auth[600], path[600];
    const char *model = NULL;
    int rc = list__opts("show", argc, argv, url, sizeof url, auth, sizeof auth, &model);
    if (rc != CLI_OK) return rc;
    snprintf(path, sizeof path, "/v1/models/%s", model);
    json_t *one = NULL;
    long st = cli_get_json(url, auth, path, &one, "corral show");
    if (st < 0) return CLI_CONNECT;
    if (st >= 400) {
        const char *msg = json_string_value(json_object_get(json_object_get(one, "error"), "message"));
        fprintf(stderr, "corral show: %s\n", msg ? msg : "the server refused");
        json_decref(one);
        return CLI_FAILED;
    }
    json_t *meta = json_object_get(one, "meta");
    char b[32];
    printf("%-18s %s\n", "id", list__s(one, "id"));
    printf("%-18s %s\n", "status", list__s(one, "status"));
    if (!meta) {
        puts("(no GGUF header: a model served by another server)");
        json_decref(one);
        return CLI_OK;
    }
    printf("%-18s %s\n", "name", list__s(meta, "name"));
    printf("%-18s %s\n", "architecture", list__s(meta, "architecture"));
    list__count((uint64_t)json_integer_value(json_object_get(meta, "parameters")), b, sizeof b);
    printf("%-18s %s\n", "parameters", b);
    printf("%-18s %s\n", "quantization", list__s(meta, "quantization"));
    static const char *const ints[] = {"layers", "embedding_length", "heads", "kv_heads", "context_length"};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        printf("%-18s %lld\n", ints[k], (long long)json_integer_value(json_object_get(meta, ints[k])));
    printf("%-18s %s\n", "chat template", json_is_true(json_object_get(meta, "chat_template")) ? "yes" : "no");
    list__size((uint64_t)json_integer_value(json_object_get(meta, "file_bytes")), b, sizeof b);
    printf("%-18s %s\n", "size on disk", b);
    json_t *est = json_object_get(meta, "memory_estimate");
    if (est) {
        list__size((uint64_t)json_integer_value(est), b, sizeof b);
        printf("%-18s %s\n", "memory estimate", b);
    }
    json_decref(one);
    return CLI_OK;
}
