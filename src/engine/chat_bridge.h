/* chat_bridge.h - llama.cpp's chat templates, tool-call syntax and
 * JSON-schema grammars (its C++ `common` library: common/chat.h,
 * json-schema-to-grammar.h) behind a C interface. chat_bridge.cpp is the
 * only C++ in corral.
 *
 * A bridge renders a model's own Jinja chat template, as llama-server
 * does with --jinja; the engine (llama_prompt.c) then tokenises the
 * request's text in it as plain text and only the template's own
 * scaffolding as special tokens. With tools, the render also gives the
 * grammar of the template's tool-call syntax and a parser (chat_syntax)
 * that turns the model's output back into content, reasoning and calls.
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
struct chat_syntax;
struct chat_parse;

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
    const char *tool_calls;   /* assistant: a JSON array of OpenAI tool calls, or NULL */
    const char *tool_call_id; /* tool: the call it answers, or NULL */
    const char *name;         /* tool: the function's name, or NULL */
};

enum chat_tool_choice { CHAT_TOOLS_AUTO = 0, CHAT_TOOLS_NONE, CHAT_TOOLS_REQUIRED, CHAT_TOOLS_NAMED };

/* What a render is asked for besides the messages. */
struct chat_bridge_opts {
    const char *kwargs_json; /* a JSON object of extra template variables (e.g. {"enable_thinking": false}), or NULL */
    const char *tools_json;  /* a JSON array of OpenAI function tools, or NULL */
    enum chat_tool_choice tool_choice;
    const char *tool_name; /* CHAT_TOOLS_NAMED: the function that must be called */
    int parallel;          /* parallel_tool_calls: 0, 1, or -1 for the template's own default */
    bool reasoning;        /* the parser moves thinking text to reasoning_content */
};

/* A render's result. */
struct chat_bridge_out {
    char *prompt; /* malloc'd */
    size_t len;
    struct chat_thinking th;
    /* with tools (tool_choice not none): the call syntax's GBNF grammar,
     * lazy (free text until a trigger pattern matches, then the grammar)
     * for auto; for required and a named function the call comes first */
    char *grammar;
    bool lazy;
    char **triggers; /* regular expressions (lazy) */
    size_t n_triggers;
    struct chat_syntax *syntax; /* the output's parser (NULL without tools) */
};

/* The template: src (Jinja text) or, when NULL, the model's own (its
 * tokenizer.chat_template; chatml when it has none). NULL with err filled
 * when the template does not parse. */
struct chat_bridge *chat_bridge_new(const struct llama_model *model, const char *src, char *err, size_t errlen);
void chat_bridge_free(struct chat_bridge *b);

/* Render msgs with the generation prompt added. 0 with *out filled (free
 * with chat_bridge_out_free), or -1 with err naming what failed (a template
 * that cannot be applied, a tool list the template layer refuses). */
int chat_bridge_render(struct chat_bridge *b, const struct chat_bridge_msg *msgs, size_t n,
                       const struct chat_bridge_opts *opts, struct chat_bridge_out *out, char *err, size_t errlen);
void chat_bridge_out_free(struct chat_bridge_out *out);

/* The GBNF grammar (malloc'd) that constrains output to a JSON schema
 * (JSON text), or NULL with err naming what the converter cannot handle. */
char *chat_bridge_schema_grammar(const char *schema_json, char *err, size_t errlen);

/* ------------------------------------------------------------ output */

void chat_syntax_free(struct chat_syntax *s);

/* One choice's output as it grows: each call gives the whole output so far
 * (text, n bytes; final once it is complete) and returns what is new since
 * the last call as a JSON object with OpenAI's delta fields (content,
 * reasoning_content, tool_calls with index, id, type and function name
 * first, then arguments pieces), or NULL when nothing is new. A call's
 * name goes out once its arguments begin. malloc'd JSON text. */
struct chat_parse *chat_parse_new(const struct chat_syntax *s);
void chat_parse_free(struct chat_parse *p);
char *chat_parse_delta(struct chat_parse *p, const char *text, size_t n, bool final);
/* The whole message of the last call as a JSON object: content (string or
 * null), reasoning_content (when any), tool_calls (when any). malloc'd. */
char *chat_parse_message(struct chat_parse *p);
/* How many tool calls the last call found. */
size_t chat_parse_calls(const struct chat_parse *p);

#ifdef __cplusplus
}
#endif

#endif
