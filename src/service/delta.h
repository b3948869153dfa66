/* delta.h - a message put together from OpenAI stream deltas, as OpenAI's
 * SDKs do it: reasoning_content appended, tool calls by index (id, type
 * and name from the first delta that has them, arguments appended), the
 * logprobs records appended. The service uses it for an upstream's side
 * records (engine_req_push_extra) when a client asked for a whole
 * response. Pure. */
#ifndef CORRAL_SERVICE_DELTA_H
#define CORRAL_SERVICE_DELTA_H

#include <stddef.h>

#include <jansson.h>

struct delta_acc {
    json_t *reasoning;  /* string, or NULL */
    json_t *tool_calls; /* array by index, or NULL */
    json_t *logprobs;   /* object whose array members are appended, or NULL */
    json_t *other;      /* any other delta field, the last value seen */
};

void delta_acc_init(struct delta_acc *a);
void delta_acc_free(struct delta_acc *a);
/* Add one side record ({"delta": {...}, "logprobs": ...}). 0, or -1 when
 * it is not such an object or out of memory. */
int delta_acc_add(struct delta_acc *a, const json_t *extra);
/* The chat message with content text (len bytes): {"content", and
 * "reasoning_content", "tool_calls" and other fields when they came}; content
 * is null when empty and calls came. A new reference, or NULL. */
json_t *delta_acc_message(const struct delta_acc *a, const char *text, size_t len);
/* The logprobs object (a new reference), or NULL when none came. */
json_t *delta_acc_logprobs(const struct delta_acc *a);
size_t delta_acc_calls(const struct delta_acc *a);

#endif
