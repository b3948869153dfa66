/* config_internal.h - what the configuration reader's files share
 * (config.c: options and sources; config_ini.c: the INI file;
 * config_value.c: value forms). Not for other modules. */
#ifndef CORRAL_CONFIG_INTERNAL_H
#define CORRAL_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)
#define TIB (1024ULL * 1024 * 1024 * 1024) /* unsigned long long: > 32-bit size_t */

#define MODEL_ID_RULE "1..127 characters of A-Z a-z 0-9 . _ : -"

/* One config_load in progress. */
struct load {
    struct config *cfg;
    char *err; /* caller's buffer, may be NULL */
    size_t errlen;
};

/* Write the error message (always overwrites) and return -1. */
int config__fail(struct load *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Apply key = value from src to the server (model < 0) or to
 * cfg->models[model]. 0 on success, -1 with the message written, 1 for an
 * unknown key (nothing written). */
int config__apply_key(struct load *ld, int model, const char *key, const char *value, const char *src);
/* Index of the model with this id, or -1. */
int config__model_find(const struct config *cfg, const char *id, size_t len);
/* Append a model with everything inherited (id must be valid); its index,
 * or -1 with the message written (naming src) when the table is full. */
int config__model_add(struct load *ld, const char *id, size_t len, const char *src);
/* Read the INI file at path into ld->cfg. 0, or -1 with the message written. */
int config__file_load(struct load *ld, const char *path);

/* ------------------------------------------------------------ config_value.c */

/* Allocation that aborts when out of memory (the configuration is read once
 * at start-up, with nothing useful to fall back to). */
void *config__xmalloc(size_t n);
char *config__xstrndup(const char *s, size_t n);
char *config__xstrdup(const char *s);
void *config__xrealloc(void *p, size_t n);
/* Replace *slot (owned) by a copy of s, or by NULL when s is NULL. */
void config__set_str(char **slot, const char *s);
/* A printable, length-limited copy of v for use inside quotes in a message. */
const char *config__quote(const char *v, char *out, size_t outlen);
/* A size in the largest unit that divides it exactly ("1K", "8M"). */
const char *config__size_str(unsigned long long n, char *out, size_t outlen);
/* Strict decimal integer. 0, or -1 on junk. */
int config__parse_ll(const char *s, long long *out);
/* true/false, yes/no, on/off, 1/0 in any case. 0, or -1. */
int config__parse_bool(const char *s, bool *out);
/* config_parse_size plus a T suffix. 0, or -1. */
int config__parse_size_t(const char *s, size_t *out);
/* [A-Za-z0-9._:-]{1,127} */
bool config__model_id_valid(const char *id, size_t len);
/* Check a comma-separated list of origins ("*", "null" or
 * scheme://host[:port]) or of host names ("*", "name", ".domain"). 0, or -1
 * with the offending item and what was expected in why. */
int config__check_origins(const char *list, char *why, size_t why_len);
int config__check_hosts(const char *list, char *why, size_t why_len);

#endif
