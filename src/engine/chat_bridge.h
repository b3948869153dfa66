/* chat_bridge.h - llama.cpp's chat templates and JSON-schema grammars
 * (its C++ `common` library: common/chat.h, json-schema-to-grammar.h)
 * behind a C interface. chat_bridge.cpp is the only C++ in corral.
 *
 * A bridge renders a model's own Jinja chat template, as llama-server
 * does with --jinja; the engine (llama_prompt.c) then tokenises the
 * request's text in it as plain text and only the template's own
 * scaffolding as special tokens.
 */
#ifndef CORRAL_ENGINE_CHAT_BRIDGE_H
#define CORRAL_ENGINE_CHAT_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct llama_model;
struct chat_bridge;


/* The template's thinking section, as llama.cpp's template analysis finds
 * it: its tags ("" when the template has none). */
struct chat_thinking {
    char start[32];
    char end[32];
};

/* One message as the template sees it. */
struct chat_bridge_msg {
    const char *role;
    const char *content;
};

/* The template: src (Jinja text) or, when NULL, the model's own (its
 * tokenizer.chat_template; chatml when it has none). NULL with err filled
 * when the template does not parse. */
struct chat_bridge *chat_bridge_new(const struct llama_model *model, const char *src, char *err, size_t errlen);
void chat_bridge_free(struct chat_bridge *b);

/* Render msgs with the generation prompt added. kwargs_json: a JSON object
 * of extra template variables (e.g. {"enable_thinking": false}), or NULL.
 * The prompt (malloc'd, its length in *len), or NULL with err; th (may be
 * NULL) gets the thinking tags. */
char *chat_bridge_render(struct chat_bridge *b, const struct chat_bridge_msg *msgs, size_t n, const char *kwargs_json,
                         size_t *len, struct chat_thinking *th, char *err, size_t errlen);

/* The GBNF grammar (malloc'd) that constrains output to a JSON schema
 * (JSON text), or NULL with err naming what the converter cannot handle. */
char *chat_bridge_schema_grammar(const char *schema_json, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
