/* error.h - the one error contract of corral.
 *
 * Every fallible call returns an enum corral_status and fills a struct
 * corral_err whose message a user can read. The table below is the single
 * place where a status maps to an HTTP status code, an OpenAI error `type`
 * and a default OpenAI error `code`.
 */
#ifndef CORRAL_ERROR_H
#define CORRAL_ERROR_H

#include <stddef.h>

/*        name               http  openai type               openai code (NULL = none) */
#define CORRAL_STATUS_MAP(X)                                                                  \
    X(OK,                 200, NULL,                    NULL)                                 \
    X(INVALID_REQUEST,    400, "invalid_request_error", NULL)                                 \
    X(INVALID_JSON,       400, "invalid_request_error", "invalid_json")                       \
    X(CONTEXT_LENGTH,     400, "invalid_request_error", "context_length_exceeded")            \
    X(UNSUPPORTED,        400, "invalid_request_error", "unsupported_value")                  \
    X(UNAUTHORIZED,       401, "authentication_error",  "invalid_api_key")                    \
    X(FORBIDDEN,          403, "permission_error",      NULL)                                 \
    X(NOT_FOUND,          404, "invalid_request_error", "not_found")                          \
    X(MODEL_NOT_FOUND,    404, "invalid_request_error", "model_not_found")                    \
    X(METHOD_NOT_ALLOWED, 405, "invalid_request_error", "method_not_allowed")                 \
    X(TOO_LARGE,          413, "invalid_request_error", "request_too_large")                  \
    X(UNSUPPORTED_MEDIA,  415, "invalid_request_error", "unsupported_media_type")             \
    X(OVERLOADED,         503, "server_error",          "server_overloaded")                  \
    X(UNAVAILABLE,        503, "server_error",          "model_unavailable")                  \
    X(BAD_GATEWAY,        502, "server_error",          "upstream_error")                     \
    X(TIMEOUT,            504, "server_error",          "timeout")                            \
    X(CANCELLED,          499, "server_error",          "cancelled")                          \
    X(ENGINE,             500, "server_error",          "engine_error")                       \
    X(NOMEM,              500, "server_error",          "out_of_memory")                      \
    X(INTERNAL,           500, "server_error",          NULL)                                 \
    X(CONFIG,             500, "server_error",          "invalid_config")

enum corral_status {
#define CORRAL__ENUM(name, http, type, code) CORRAL_##name,
    CORRAL_STATUS_MAP(CORRAL__ENUM)
#undef CORRAL__ENUM
    CORRAL__STATUS_COUNT
};

#define CORRAL_ERR_MSG_MAX 512
#define CORRAL_ERR_PARAM_MAX 64

/* A failure a user can read. `param` names the request field at fault ("" if
 * none); `code` overrides the table's OpenAI code when non-empty. */
struct corral_err {
    enum corral_status status;
    char message[CORRAL_ERR_MSG_MAX];
    char param[CORRAL_ERR_PARAM_MAX];
    char code[CORRAL_ERR_PARAM_MAX];
};

/* Fill *err (if err is not NULL) and return `status`. printf-style message. */
enum corral_status corral_err_set(struct corral_err *err, enum corral_status status,
                                  const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reset *err to CORRAL_OK with empty strings. */
void corral_err_clear(struct corral_err *err);

/* Table look-ups; never NULL except corral_status_openai_code (NULL = none). */
const char *corral_status_name(enum corral_status status);
int corral_status_http(enum corral_status status);
const char *corral_status_openai_type(enum corral_status status);
const char *corral_status_openai_code(enum corral_status status);

#endif
