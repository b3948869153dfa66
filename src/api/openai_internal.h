/* openai_internal.h - what the request parser's files share (openai.c:
 * the request's structure; openai_fields.c: reading one field). Not for
 * other modules. */
#ifndef CORRAL_API_OPENAI_INTERNAL_H
#define CORRAL_API_OPENAI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "engine/input.h"
#include "util/error.h"

/* Room for a field path; corral_err_set truncates it to CORRAL_ERR_PARAM_MAX. */
#define PARAM_MAX 128

json_t *api__opt_get(const json_t *obj, const char *key);
void api__path_fmt(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
enum corral_status api__bad_type(struct corral_err *err, const char *param, const char *what);
enum corral_status api__missing(struct corral_err *err, const char *param);
/* obj[key] into *out, which must be there and be a JSON_STRING or a
 * JSON_OBJECT; otherwise the error names path. */
enum corral_status api__required(const json_t *obj, const char *key, json_type type, const char *path,
                                 json_t **out, struct corral_err *err);
enum corral_status api__no_memory(struct corral_err *err);
char *api__dup_str(const char *s, size_t n, struct corral_err *err);
enum corral_status api__get_float(const json_t *obj, const char *key, double lo, double hi, float *out, struct corral_err *err);
enum corral_status api__get_int(const json_t *obj, const char *key, json_int_t lo, json_int_t *out, bool *given, struct corral_err *err);
enum corral_status api__get_bool(const json_t *obj, const char *key, bool *out, struct corral_err *err);
enum corral_status api__get_str(const json_t *obj, const char *key, char **out, struct corral_err *err);
int32_t api__clamp_i32(json_int_t v);

/* openai_tools.c: tools, tool_choice and parallel_tool_calls (after the
 * response format and grammar, which tools exclude), and one message's
 * tool_calls, tool_call_id and name. */
struct engine_input;
struct engine_message;
enum corral_status api__parse_tools(const json_t *root, enum engine_kind kind, struct engine_input *in,
                                    struct corral_err *err);
enum corral_status api__parse_message_tools(const json_t *m, size_t idx, struct engine_message *msg,
                                            struct corral_err *err);

#endif
