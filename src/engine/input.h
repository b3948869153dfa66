/* input.h - what the engine is asked to do: the request description every
 * backend reads (messages or a prompt or embedding inputs, sampling,
 * keep-alive), and the token counts it reports back.
 *
 * The API layer fills it from a client's request (api/openai.c); the engine
 * knows nothing of the OpenAI wire format or of any transport.
 */
#ifndef CORRAL_ENGINE_INPUT_H
#define CORRAL_ENGINE_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENGINE_MAX_STOP 4

enum engine_kind { ENGINE_CHAT = 0, ENGINE_COMPLETION, ENGINE_EMBEDDING };

struct engine_message {
    char *role;         /* "system", "user", "assistant" (also "developer", "tool") */
    char *content;      /* never NULL (may be "") */
    char *tool_calls;   /* assistant: JSON array of OpenAI tool calls (arguments as strings), or NULL */
    char *tool_call_id; /* tool: the call this answers, or NULL */
    char *name;         /* the function (tool) or participant name, or NULL */
};

/* How the model may call the request's tools (OpenAI's tool_choice). */
enum engine_tool_choice { ENGINE_TOOLS_AUTO = 0, ENGINE_TOOLS_NONE, ENGINE_TOOLS_REQUIRED, ENGINE_TOOLS_NAMED };

/* The functions a chat may call. */
struct engine_tools {
    char *json; /* JSON array of OpenAI function tools, or NULL (no tools) */
    enum engine_tool_choice choice;
    char *name;   /* ENGINE_TOOLS_NAMED: the function that must be called */
    int parallel; /* parallel_tool_calls: 0, 1, or -1 (not given: the template's default) */
};

/* Sampling and stopping, with the OpenAI defaults where a request is silent. */
struct engine_sampling {
    int32_t max_tokens;      /* -1 = not given (generate until EOS or context full) */
    float temperature;       /* default 1.0; 0 = greedy */
    float top_p;             /* default 1.0 */
    int32_t top_k;           /* default 0 = off */
    float min_p;             /* default 0 = off */
    float presence_penalty;  /* default 0, range [-2, 2] */
    float frequency_penalty; /* default 0, range [-2, 2] */
    bool has_seed;
    uint64_t seed;
    char *stop[ENGINE_MAX_STOP]; /* non-empty strings */
    int n_stop;
    bool json_object; /* output constrained to a JSON object */
    char *json_schema; /* output constrained to this JSON schema (JSON text), or NULL */
    char *grammar;     /* output constrained to this GBNF grammar, or NULL */
    bool ignore_eos;  /* keep generating past end-of-generation tokens */
    bool logprobs;    /* report the sampled tokens' log-probabilities */
    int top_logprobs; /* and this many (0..ENGINE_MAX_TOP_LOGPROBS) most likely alternatives */
};

#define ENGINE_MAX_TOP_LOGPROBS 20

/* One generated token's log-probability, with the most likely alternatives,
 * in the distribution sampled from (after the grammar and the penalties,
 * before temperature and truncation). */
struct engine_logprob_alt {
    char *piece; /* the token's text (malloc'd; may be part of a UTF-8 character) */
    size_t len;
    float logprob;
};

struct engine_logprob {
    char *piece;
    size_t len;
    float logprob;
    struct engine_logprob_alt *top; /* n_top entries, most likely first */
    int n_top;
    size_t end; /* output bytes up to and with this token's text */
};

/* Free what lp points to. */
void engine_logprob_clear(struct engine_logprob *lp);

struct engine_input {
    enum engine_kind kind;

    /* ENGINE_CHAT */
    struct engine_message *messages;
    size_t n_messages;
    struct engine_tools tools;
    bool reasoning_in_content; /* reasoning_format none: thinking text stays in content */

    /* ENGINE_COMPLETION: exactly one of prompt / prompt_tokens is set */
    char *prompt;
    int32_t *prompt_tokens;
    size_t n_prompt_tokens;

    /* ENGINE_EMBEDDING */
    char **inputs;
    size_t n_inputs;

    struct engine_sampling sampling;
    /* how long the model stays loaded after this request, ms (0 = unload
     * when done, -1 = never); ENGINE_KEEP_ALIVE_UNSET = the model's own */
    int64_t keep_alive_ms;
};

#define ENGINE_KEEP_ALIVE_UNSET INT64_MIN

/* Token counts of one request. */
struct engine_usage {
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t cached_tokens; /* prompt tokens served from the KV cache */
};

/* A deep copy of src into dst. 0, or -1 if out of memory (dst left empty). */
int engine_input_copy(struct engine_input *dst, const struct engine_input *src);
/* Free what in points to; safe on a zeroed struct (which it leaves zeroed). */
void engine_input_free(struct engine_input *in);

#endif
