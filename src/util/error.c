/* error.c - the status table look-ups and struct corral_err helpers.
 *
 * DESIGN: every look-up is generated from CORRAL_STATUS_MAP in error.h, so a
 * status added there is known here without further edits. A status outside
 * the table (a caller bug) reads as CORRAL_INTERNAL rather than crashing.
 */
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct status_row {
    const char *name;
    int http;
    const char *type;
    const char *code;
};

static const struct status_row status_table[CORRAL__STATUS_COUNT] = {
#define CORRAL__ROW(name, http, type, code) {#name, http, type, code},
    CORRAL_STATUS_MAP(CORRAL__ROW)
#undef CORRAL__ROW
};

static const struct status_row *row_of(enum corral_status status)
{
    if ((unsigned)status >= (unsigned)CORRAL__STATUS_COUNT)
        status = CORRAL_INTERNAL;
    return &status_table[status];
}

enum corral_status corral_err_set(struct corral_err *err, enum corral_status status,
                                  const char *param, const char *fmt, ...)
{
    if (!err)
        return status;
    err->status = status;
    err->code[0] = '\0';
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    } else {
        err->message[0] = '\0';
    }
    return status;
}

void corral_err_clear(struct corral_err *err)
{
    if (!err)
        return;
    err->status = CORRAL_OK;
    err->message[0] = '\0';
    err->param[0] = '\0';
    err->code[0] = '\0';
}

const char *corral_status_name(enum corral_status status)
{
    return row_of(status)->name;
}

int corral_status_http(enum corral_status status)
{
    return row_of(status)->http;
}

const char *corral_status_openai_type(enum corral_status status)
{
    /* OK has no OpenAI type; never hand out NULL. */
    const char *type = row_of(status)->type;
    return type ? type : "server_error";
}

const char *corral_status_openai_code(enum corral_status status)
{
    return row_of(status)->code;
}
