/* sse_in.c - an upstream's event stream, line by line (see sse_in.h). */
#include "engine/sse_in.h"

#include <stdio.h>
#include <string.h>

void sse_in_init(struct sse_in *s, size_t line_max) {
    buf_init(&s->line, line_max);
    s->scanned = 0;
}

void sse_in_free(struct sse_in *s) {
    buf_free(&s->line);
    s->scanned = 0;
}

int sse_in_feed(struct sse_in *s, const char *p, size_t n, bool (*on_data)(void *ctx, const char *d, size_t len),
                void *ctx) {
    if (buf_append(&s->line, p, n) != 0) {
        buf_reset(&s->line);
        s->scanned = 0;
        return -1;
    }
    size_t start = 0;
    int rc = 0;
    for (size_t i = s->scanned; i < s->line.len; i++) {
        if (s->line.data[i] != '\n') continue;
        size_t end = i;
        if (end > start && s->line.data[end - 1] == '\r') end--;
        const char *l = s->line.data + start;
        size_t ll = end - start;
        start = i + 1;
        if (ll >= 5 && memcmp(l, "data:", 5) == 0) {
            l += 5;
            ll -= 5;
            if (ll && *l == ' ') {
                l++;
                ll--;
            }
            if (!on_data(ctx, l, ll)) {
                rc = -1;
                break;
            }
        }
    }
    buf_consume(&s->line, start);
    s->scanned = s->line.len; /* what is left holds no newline */
    return rc;
}

void sse_event_parse(const char *data, size_t n, struct sse_event *ev) {
    memset(ev, 0, sizeof *ev);
    if (n == 6 && memcmp(data, "[DONE]", 6) == 0) {
        ev->done = true;
        return;
    }
    json_t *j = json_loadb(data, n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    ev->json = true;
    ev->root = j;
    json_t *eo = json_object_get(j, "error");
    if (eo) {
        const char *m = json_is_object(eo) ? json_string_value(json_object_get(eo, "message"))
                        : json_is_string(eo) ? json_string_value(eo)
                                             : NULL;
        ev->error = true;
        snprintf(ev->message, sizeof ev->message, "%s", m ? m : "(no message)");
        return;
    }
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    if (json_is_object(ch)) {
        json_t *delta = json_object_get(ch, "delta");
        json_t *t = json_is_object(delta) ? json_object_get(delta, "content") : json_object_get(ch, "text");
        if (json_is_string(t)) {
            ev->text = json_string_value(t);
            ev->text_len = json_string_length(t);
        }
        json_t *rest = json_is_object(delta) ? json_deep_copy(delta) : NULL;
        json_object_del(rest, "content");
        json_object_del(rest, "role");
        json_t *lp = json_object_get(ch, "logprobs");
        if ((rest && json_object_size(rest) > 0) || (lp && !json_is_null(lp))) {
            ev->extra = json_object();
            if (rest && json_object_size(rest) > 0) json_object_set(ev->extra, "delta", rest);
            if (lp && !json_is_null(lp)) json_object_set(ev->extra, "logprobs", lp);
        }
        json_decref(rest);
        const char *fr = json_string_value(json_object_get(ch, "finish_reason"));
        if (fr) ev->finish = strcmp(fr, "length") == 0 ? ENGINE_FINISH_LENGTH : ENGINE_FINISH_STOP;
    }
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        ev->have_usage = true;
        ev->prompt_tokens = json_integer_value(json_object_get(u, "prompt_tokens"));
        ev->completion_tokens = json_integer_value(json_object_get(u, "completion_tokens"));
        json_t *d = json_object_get(u, "prompt_tokens_details");
        ev->cached_tokens = json_is_object(d) ? json_integer_value(json_object_get(d, "cached_tokens")) : 0;
    }
}

void sse_event_free(struct sse_event *ev) {
    json_decref(ev->extra);
    ev->extra = NULL;
    json_decref(ev->root);
    ev->root = NULL;
    ev->text = NULL;
}
