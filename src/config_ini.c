/* config_ini.c - the INI file reader of the configuration (see config.c's
 * DESIGN for why it feeds inih one line at a time). */
#include "config_internal.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ini_section { SEC_NONE, SEC_SERVER, SEC_MODEL };

struct ini_ctx {
    struct load *ld;
    const char *file;
    FILE *fp;
    char *line; /* getline buffer, owned */
    size_t cap;
    int lineno;    /* physical line last read */
    int err_line;  /* line of our first error, 0 = none yet */
    int read_errno;
    enum ini_section sec;
    int model; /* index in cfg->models when sec == SEC_MODEL */
    int server_line;
    int model_line[CONFIG_MAX_MODELS]; /* line of each model's section */
};

__attribute__((format(printf, 2, 3))) static void ini_fail(struct ini_ctx *ic, const char *fmt,
                                                           ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ic->err_line = ic->lineno;
    config__fail(ic->ld, "%s:%d: %s", ic->file, ic->lineno, msg);
}

/* A "[name]" line (s is trimmed, len > 0, s[0] == '['). */
static void ini_section_line(struct ini_ctx *ic, char *s, size_t len)
{
    char q[80];
    char *close = memchr(s, ']', len);
    if (!close) {
        ini_fail(ic, "syntax error");
        return;
    }
    /* after ']' only a comment may follow */
    const char *rest = close + 1;
    while (isspace((unsigned char)*rest))
        rest++;
    if (*rest && *rest != ';' && *rest != '#') {
        ini_fail(ic, "syntax error");
        return;
    }
    char *name = s + 1;
    *close = '\0';
    while (isspace((unsigned char)*name))
        name++;
    for (char *e = close; e > name && isspace((unsigned char)e[-1]);)
        *--e = '\0';

    if (strcmp(name, "server") == 0) {
        if (ic->server_line) {
            ini_fail(ic, "duplicate section [server] (first on line %d)", ic->server_line);
            return;
        }
        ic->server_line = ic->lineno;
        ic->sec = SEC_SERVER;
        return;
    }
    if (strncmp(name, "model.", 6) == 0) {
        const char *id = name + 6;
        size_t idlen = strlen(id);
        if (!config__model_id_valid(id, idlen)) {
            ini_fail(ic, "invalid model id \"%s\" (expected " MODEL_ID_RULE ")",
                     config__quote(id, q, sizeof q));
            return;
        }
        int i = config__model_find(ic->ld->cfg, id, idlen);
        if (i >= 0) {
            ini_fail(ic, "duplicate section [model.%s] (first on line %d)", id,
                     ic->model_line[i]);
            return;
        }
        if (ic->ld->cfg->n_models >= CONFIG_MAX_MODELS) {
            ini_fail(ic, "[model.%s]: too many models (at most %d)", id, CONFIG_MAX_MODELS);
            return;
        }
        i = config__model_add(ic->ld, id, idlen, ic->file);
        ic->model_line[i] = ic->lineno;
        ic->model = i;
        ic->sec = SEC_MODEL;
        return;
    }
    ini_fail(ic, "unknown section [%s] (expected [server] or [model.ID])",
             config__quote(name, q, sizeof q));
}

/* inih reader: one physical line per call, see DESIGN. */
static char *ini_read_line(char *str, int num, void *stream)
{
    struct ini_ctx *ic = stream;
    if (ic->err_line)
        return NULL;
    errno = 0;
    ssize_t n = getline(&ic->line, &ic->cap, ic->fp);
    if (n < 0) {
        if (ferror(ic->fp))
            ic->read_errno = errno ? errno : EIO;
        return NULL;
    }
    ic->lineno++;
    char *s = ic->line;
    size_t len = (size_t)n;
    if (memchr(s, '\0', len)) {
        ini_fail(ic, "syntax error (NUL byte)");
        return NULL;
    }
    if (ic->lineno == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        len -= 3;
    }
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    s[len] = '\0';

    str[0] = '\0'; /* what inih sees for blank, comment and section lines */
    if (len == 0 || *s == ';' || *s == '#')
        return str;
    if (*s == '[') {
        ini_section_line(ic, s, len);
        return ic->err_line ? NULL : str;
    }
    if (num < 2 || len > (size_t)num - 1) {
        ini_fail(ic, "line too long (%zu characters, at most %d)", len, num < 2 ? 0 : num - 1);
        return NULL;
    }
    memcpy(str, s, len + 1);
    return str;
}

/* inih handler: one "name = value" line; the section is ours, not inih's. */
static int ini_on_key(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *ic = user;
    char src[1024], q[80];

    (void)section;
    if (ic->err_line)
        return 1;
    if (!value)
        value = "";
    int rc;
    switch (ic->sec) {
    case SEC_NONE:
        ini_fail(ic, "%s: key outside any section (expected [server] or [model.ID] first)",
                 config__quote(name, q, sizeof q));
        return 0;
    case SEC_SERVER:
        snprintf(src, sizeof src, "%s:%d: [server] %s", ic->file, ic->lineno, name);
        rc = config__apply_key(ic->ld, -1, name, value, src);
        if (rc == 1)
            ini_fail(ic, "[server] %s: unknown key", config__quote(name, q, sizeof q));
        break;
    case SEC_MODEL:
        snprintf(src, sizeof src, "%s:%d: [model.%s] %s", ic->file, ic->lineno,
                 ic->ld->cfg->models[ic->model].id, name);
        rc = config__apply_key(ic->ld, ic->model, name, value, src);
        if (rc == 1)
            ini_fail(ic, "[model.%s] %s: unknown key", ic->ld->cfg->models[ic->model].id,
                     config__quote(name, q, sizeof q));
        break;
    default:
        return 0;
    }
    if (rc != 0) {
        ic->err_line = ic->lineno;
        return 0;
    }
    return 1;
}

int config__file_load(struct load *ld, const char *path)
{
    struct ini_ctx *ic = config__xmalloc(sizeof *ic);
    int rc = -1;

    memset(ic, 0, sizeof *ic);
    ic->ld = ld;
    ic->file = path;
    ic->fp = fopen(path, "r");
    if (!ic->fp) {
        config__fail(ld, "%s: cannot read config file: %s", path, strerror(errno));
        goto fail;
    }
    int ret = ini_parse_stream(ini_read_line, ic, ini_on_key, ic);
    if (ic->read_errno) {
        config__fail(ld, "%s: cannot read config file: %s", path, strerror(ic->read_errno));
        goto fail;
    }
    if (ret > 0 && ret != ic->err_line) { /* inih's syntax error comes first */
        config__fail(ld, "%s:%d: syntax error", path, ret);
        goto fail;
    }
    if (ic->err_line)
        goto fail; /* message already written */
    if (ret < 0) {
        config__fail(ld, "%s: cannot parse config file (inih error %d)", path, ret);
        goto fail;
    }
    rc = 0;
fail:
    if (ic->fp)
        fclose(ic->fp);
    free(ic->line);
    free(ic);
    return rc;
}
