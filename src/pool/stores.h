/* stores.h - the models people already have on disk: a folder of GGUF
 * files (models_dir), Ollama's store and the Hugging Face hub cache, each
 * walked into (id, path) pairs. Split GGUF files (NAME-00001-of-00003.gguf)
 * are one model, at the path of their first part (llama.cpp loads the rest
 * beside it). Pure over the file system, so tests build fake stores.
 *
 *   models_dir   DIR/.../NAME.gguf        id: NAME (the file stem)
 *   Ollama       manifests/HOST/NS/NAME/TAG naming a blob of media type
 *                application/vnd.ollama.image.model
 *                                          id: NAME:TAG (NS/NAME:TAG outside
 *                                          "library", HOST/NS/NAME:TAG off
 *                                          registry.ollama.ai)
 *   HF cache     models--ORG--REPO/snapshots/REV/.../NAME.gguf (newest REV)
 *                                          id: ORG/REPO/NAME
 */
#ifndef CORRAL_POOL_STORES_H
#define CORRAL_POOL_STORES_H

#include <stdbool.h>
#include <stddef.h>

/* Called for every model found; id and path are only valid during the call. */
typedef void (*store_found_fn)(void *ctx, const char *id, const char *path);

void store_scan_dir(const char *dir, store_found_fn fn, void *ctx);
void store_scan_ollama(const char *root, store_found_fn fn, void *ctx);
void store_scan_hf(const char *root, store_found_fn fn, void *ctx);

/* For a split part's file name (its last path element): whether it is a
 * later part (to skip), and the stem without "-00001-of-0000N" (into out). */
bool store_split_later(const char *name);
void store_stem(const char *name, char *out, size_t n);

/* "~/x" with $HOME; otherwise a copy. malloc'd, NULL if out of memory. */
char *store_expand_home(const char *path);

#endif
