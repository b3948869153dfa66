/* openai_fields.c - reading one field of a request: optional members,
 * typed getters with ranges, and the errors that name the field. Shared by
 * the request parser (openai.c). */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/openai_internal.h"


/* An optional member: NULL when it is absent or JSON null. */
json_t *api__opt_get(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* Format a field path such as "messages[2].content"; a path too long for
 * the buffer is cut short (it is only used in messages). */
void api__path_fmt(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

/* "'<param>' must be <what>" as CORRAL_INVALID_REQUEST. */
enum corral_status api__bad_type(struct corral_err *err, const char *param, const char *what)
{
    return corral_err_set(err, CORRAL_INVALID_REQUEST, param, "'%s' must be %s", param, what);
}

enum corral_status api__missing(struct corral_err *err, const char *param)
{
    return corral_err_set(err, CORRAL_INVALID_REQUEST, param, "missing required field '%s'",
                          param);
}

enum corral_status api__required(const json_t *obj, const char *key, json_type type, const char *path,
                                 json_t **out, struct corral_err *err)
{
    *out = api__opt_get(obj, key);
    if (!*out)
        return api__missing(err, path);
    if (json_typeof(*out) != type)
        return api__bad_type(err, path, type == JSON_OBJECT ? "an object" : "a string");
    return CORRAL_OK;
}

enum corral_status api__no_memory(struct corral_err *err)
{
    return corral_err_set(err, CORRAL_NOMEM, NULL, "out of memory");
}

/* strdup that reports failure through err. */
char *api__dup_str(const char *s, size_t n, struct corral_err *err)
{
    char *p = malloc(n + 1);
    if (!p) {
        api__no_memory(err);
        return NULL;
    }
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Optional number in [lo, hi]; integers accepted. Leaves *out alone if absent. */
enum corral_status api__get_float(const json_t *obj, const char *key, double lo, double hi,
                                    float *out, struct corral_err *err)
{
    json_t *v = api__opt_get(obj, key);
    if (!v)
        return CORRAL_OK;
    if (!json_is_number(v))
        return api__bad_type(err, key, "a number");
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return corral_err_set(err, CORRAL_INVALID_REQUEST, key,
                              "'%s' must be between %g and %g, got %g", key, lo, hi, d);
    *out = (float)d;
    return CORRAL_OK;
}

/* Optional integer >= lo. *given says whether it was there. */
enum corral_status api__get_int(const json_t *obj, const char *key, json_int_t lo,
                                  json_int_t *out, bool *given, struct corral_err *err)
{
    *given = false;
    json_t *v = api__opt_get(obj, key);
    if (!v)
        return CORRAL_OK;
    if (!json_is_integer(v))
        return api__bad_type(err, key, "an integer");
    json_int_t i = json_integer_value(v);
    if (i < lo)
        return corral_err_set(err, CORRAL_INVALID_REQUEST, key,
                              "'%s' must be at least %" JSON_INTEGER_FORMAT
                              ", got %" JSON_INTEGER_FORMAT,
                              key, lo, i);
    *out = i;
    *given = true;
    return CORRAL_OK;
}

enum corral_status api__get_bool(const json_t *obj, const char *key, bool *out,
                                   struct corral_err *err)
{
    json_t *v = api__opt_get(obj, key);
    if (!v)
        return CORRAL_OK;
    if (!json_is_boolean(v))
        return api__bad_type(err, key, "a boolean");
    *out = json_is_true(v);
    return CORRAL_OK;
}

/* Optional string, copied into *out (caller frees). */
enum corral_status api__get_str(const json_t *obj, const char *key, char **out,
                                  struct corral_err *err)
{
    json_t *v = api__opt_get(obj, key);
    if (!v)
        return CORRAL_OK;
    if (!json_is_string(v))
        return api__bad_type(err, key, "a string");
    *out = api__dup_str(json_string_value(v), json_string_length(v), err);
    return *out ? CORRAL_OK : CORRAL_NOMEM;
}

int32_t api__clamp_i32(json_int_t v)
{
    return v > INT32_MAX ? INT32_MAX : (int32_t)v;
}

/* ================================================================ model */

