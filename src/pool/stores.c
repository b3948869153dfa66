/* stores.c - see stores.h. */
#define _DEFAULT_SOURCE /* DT_DIR */
#include "pool/stores.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define STORE_DEPTH 4          /* folders below a models_dir or snapshot */
#define STORE_MANIFEST_MAX (1u << 20)

static bool store__is_gguf(const char *name) {
    size_t n = strlen(name);
    return n > 5 && strcmp(name + n - 5, ".gguf") == 0;
}

/* The "-NNNNN-of-NNNNN" before ".gguf": the part number, or 0. */
static int store__part(const char *name, size_t *cut) {
    size_t n = strlen(name);
    if (n < 5 + 15 || !store__is_gguf(name)) return 0;
    const char *p = name + n - 5 - 15; /* -00001-of-00003 */
    int a, b;
    char tail[8];
    if (p[0] != '-' || sscanf(p, "-%5d-of-%5d%7s", &a, &b, tail) != 3 || strcmp(tail, ".gguf") != 0) return 0;
    if (a < 1 || b < 1 || a > b) return 0;
    *cut = (size_t)(p - name);
    return a;
}

bool store_split_later(const char *name) {
    size_t cut;
    return store__part(name, &cut) > 1;
}

void store_stem(const char *name, char *out, size_t n) {
    size_t cut, len = strlen(name);
    if (store__part(name, &cut) == 0) cut = store__is_gguf(name) ? len - 5 : len;
    snprintf(out, n, "%.*s", (int)cut, name);
}

char *store_expand_home(const char *path) {
    const char *home = getenv("HOME");
    if (path[0] == '~' && (path[1] == '/' || path[1] == '\0') && home) {
        size_t n = strlen(home) + strlen(path);
        char *out = malloc(n + 1);
        if (out) snprintf(out, n + 1, "%s%s", home, path + 1);
        return out;
    }
    return strdup(path);
}

/* Every GGUF below dir (first parts only): fn(prefix + stem, path). */
static void store__walk(const char *dir, int depth, const char *prefix, store_found_fn fn, void *ctx) {
    if (depth > STORE_DEPTH) return;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path) continue;
        struct stat st;
        if (stat(path, &st) != 0) continue; /* follows the HF cache's links to its blobs */
        if (S_ISDIR(st.st_mode)) {
            store__walk(path, depth + 1, prefix, fn, ctx);
            continue;
        }
        if (!S_ISREG(st.st_mode) || !store__is_gguf(de->d_name) || store_split_later(de->d_name)) continue;
        char stem[256], id[512];
        store_stem(de->d_name, stem, sizeof stem);
        snprintf(id, sizeof id, "%s%s", prefix, stem);
        fn(ctx, id, path);
    }
    closedir(d);
}

void store_scan_dir(const char *dir, store_found_fn fn, void *ctx) { store__walk(dir, 0, "", fn, ctx); }

/* ------------------------------------------------------------ Ollama */

/* The model blob a manifest names, into blob (its path), or false. */
static bool store__ollama_blob(const char *root, const char *manifest, char *blob, size_t n) {
    struct stat st;
    if (stat(manifest, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > STORE_MANIFEST_MAX) return false;
    json_t *j = json_load_file(manifest, 0, NULL);
    bool ok = false;
    size_t i;
    json_t *layer;
    json_array_foreach(json_object_get(j, "layers"), i, layer) {
        const char *mt = json_string_value(json_object_get(layer, "mediaType"));
        const char *dg = json_string_value(json_object_get(layer, "digest"));
        if (!mt || !dg || strcmp(mt, "application/vnd.ollama.image.model") != 0) continue;
        char name[160];
        snprintf(name, sizeof name, "%s", dg);
        char *colon = strchr(name, ':'); /* sha256:HEX is stored as sha256-HEX */
        if (colon) *colon = '-';
        if (strchr(name, '/')) break;
        ok = snprintf(blob, n, "%s/blobs/%s", root, name) < (int)n && stat(blob, &st) == 0 && S_ISREG(st.st_mode);
        break;
    }
    json_decref(j);
    return ok;
}

void store_scan_ollama(const char *root, store_found_fn fn, void *ctx) {
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s/manifests", root);
    DIR *hosts = opendir(mdir);
    if (!hosts) return;
    struct dirent *h, *ns, *nm, *tag;
    while ((h = readdir(hosts))) {
        if (h->d_name[0] == '.') continue;
        char hp[4096];
        if (snprintf(hp, sizeof hp, "%s/%s", mdir, h->d_name) >= (int)sizeof hp) continue;
        DIR *nsd = opendir(hp);
        if (!nsd) continue;
        while ((ns = readdir(nsd))) {
            if (ns->d_name[0] == '.') continue;
            char np[4096];
            if (snprintf(np, sizeof np, "%s/%s", hp, ns->d_name) >= (int)sizeof np) continue;
            DIR *nmd = opendir(np);
            if (!nmd) continue;
            while ((nm = readdir(nmd))) {
                if (nm->d_name[0] == '.') continue;
                char tp[4096];
                if (snprintf(tp, sizeof tp, "%s/%s", np, nm->d_name) >= (int)sizeof tp) continue;
                DIR *td = opendir(tp);
                if (!td) continue;
                while ((tag = readdir(td))) {
                    if (tag->d_name[0] == '.') continue;
                    char man[4096], blob[4096], id[1024];
                    if (snprintf(man, sizeof man, "%s/%s", tp, tag->d_name) >= (int)sizeof man) continue;
                    if (!store__ollama_blob(root, man, blob, sizeof blob)) continue;
                    bool official = strcmp(h->d_name, "registry.ollama.ai") == 0;
                    int k;
                    if (official && strcmp(ns->d_name, "library") == 0)
                        k = snprintf(id, sizeof id, "%s:%s", nm->d_name, tag->d_name);
                    else if (official)
                        k = snprintf(id, sizeof id, "%s/%s:%s", ns->d_name, nm->d_name, tag->d_name);
                    else
                        k = snprintf(id, sizeof id, "%s/%s/%s:%s", h->d_name, ns->d_name, nm->d_name, tag->d_name);
                    if (k < 0 || (size_t)k >= sizeof id) continue;
                    fn(ctx, id, blob);
                }
                closedir(td);
            }
            closedir(nmd);
        }
        closedir(nsd);
    }
    closedir(hosts);
}

/* ------------------------------------------------------------ Hugging Face */

void store_scan_hf(const char *root, store_found_fn fn, void *ctx) {
    DIR *d = opendir(root);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "models--", 8) != 0) continue;
        /* models--ORG--REPO: ORG and REPO hold no "--" of their own */
        char repo[256];
        snprintf(repo, sizeof repo, "%s", de->d_name + 8);
        char *sep = strstr(repo, "--");
        if (!sep) continue;
        *sep = '/';
        memmove(sep + 1, sep + 2, strlen(sep + 2) + 1);
        char snaps[4096];
        if (snprintf(snaps, sizeof snaps, "%s/%s/snapshots", root, de->d_name) >= (int)sizeof snaps) continue;
        /* the newest snapshot holds what the repo has now */
        DIR *sd = opendir(snaps);
        if (!sd) continue;
        struct dirent *s;
        char best[4096] = "";
        struct timespec best_t = {0, 0};
        while ((s = readdir(sd))) {
            if (s->d_name[0] == '.') continue;
            char p[4096];
            struct stat st;
            if (snprintf(p, sizeof p, "%s/%s", snaps, s->d_name) >= (int)sizeof p || stat(p, &st) != 0 ||
                !S_ISDIR(st.st_mode))
                continue;
            if (!best[0] || st.st_mtim.tv_sec > best_t.tv_sec ||
                (st.st_mtim.tv_sec == best_t.tv_sec && st.st_mtim.tv_nsec > best_t.tv_nsec)) {
                snprintf(best, sizeof best, "%s", p);
                best_t = st.st_mtim;
            }
        }
        closedir(sd);
        if (!best[0]) continue;
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%s/", repo);
        store__walk(best, 0, prefix, fn, ctx);
    }
    closedir(d);
}
