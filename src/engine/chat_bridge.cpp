// chat_bridge.cpp - the C interface to llama.cpp's chat templates and
// JSON-schema grammars (see chat_bridge.h). The only C++ in corral: its
// `common` library has no C API. Every exception stops here and comes back
// as an error message.

#include "engine/chat_bridge.h"

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "chat.h"
#include "json-schema-to-grammar.h"
#include "json.h"

struct chat_bridge {
    common_chat_templates_ptr tmpls;
};

struct chat_syntax {
    common_chat_parser_params params;
};

// Renders run one at a time, process-wide: llama.cpp's renderer formats the
// date for templates with std::localtime, whose result is a static buffer
// every thread shares. A render costs ~0.5 ms on the test models.
static std::mutex render_mu;

static void bridge_err(char *err, size_t errlen, const char *what, const char *detail) {
    if (err && errlen) std::snprintf(err, errlen, "%s%s%.400s", what, detail ? ": " : "", detail ? detail : "");
}

extern "C" struct chat_bridge *chat_bridge_new(const struct llama_model *model, const char *src, char *err,
                                               size_t errlen) {
    try {
        auto *b = new chat_bridge;
        b->tmpls = common_chat_templates_init(model, src ? src : "");
        if (!b->tmpls) {
            delete b;
            bridge_err(err, errlen, "the chat template could not be read", nullptr);
            return nullptr;
        }
        return b;
    } catch (const std::exception &e) {
        bridge_err(err, errlen, "the chat template does not parse", e.what());
    } catch (...) {
        bridge_err(err, errlen, "the chat template does not parse", nullptr);
    }
    return nullptr;
}

extern "C" void chat_bridge_free(struct chat_bridge *b) { delete b; }

static char *bridge_dup(const std::string &s) {
    char *out = static_cast<char *>(std::malloc(s.size() + 1));
    if (!out) throw std::bad_alloc();
    std::memcpy(out, s.data(), s.size());
    out[s.size()] = '\0';
    return out;
}

// The request's messages as the template layer takes them.
static std::vector<common_chat_msg> bridge_msgs(const struct chat_bridge_msg *msgs, size_t n) {
    std::vector<common_chat_msg> out;
    for (size_t i = 0; i < n; i++) {
        common_chat_msg m;
        m.role = msgs[i].role;
        m.content = msgs[i].content ? msgs[i].content : "";
        if (msgs[i].tool_calls) {
            for (const auto &tc : common_json::parse(msgs[i].tool_calls)) {
                common_chat_tool_call call;
                call.id = tc.value("id", "");
                call.name = tc.at("function").at("name").get<std::string>();
                call.arguments = tc.at("function").at("arguments").get<std::string>();
                m.tool_calls.push_back(std::move(call));
            }
        }
        if (msgs[i].tool_call_id) m.tool_call_id = msgs[i].tool_call_id;
        if (msgs[i].name && m.role == "tool") m.tool_name = msgs[i].name;
        out.push_back(std::move(m));
    }
    return out;
}

// The root rule's body of a GBNF grammar, and the grammar without it.
static std::string bridge_split_root(const std::string &g, std::string *rest) {
    std::string root;
    size_t at = 0;
    while (at < g.size()) {
        size_t nl = g.find('\n', at);
        std::string line = g.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
        at = nl == std::string::npos ? g.size() : nl + 1;
        if (line.rfind("root ::= ", 0) == 0) root = line.substr(9);
        else if (!line.empty() && rest) *rest += line + "\n";
    }
    return root;
}

// A root whose alternatives are one call section or several sections
// ("tool-call | tool-calls", where tool-calls repeats tool-call: the
// template layer's JSON syntax with a per-call marker, which allows more
// than one section whatever parallel_tool_calls says) cut to the single
// one; any other root as it is (the template layer follows the flag).
static std::string bridge_one_call(const std::string &root, const std::string &rules) {
    bool one = false, many = false;
    for (size_t at = 0; at <= root.size();) {
        size_t bar = root.find(" | ", at);
        std::string alt = root.substr(at, bar == std::string::npos ? std::string::npos : bar - at);
        one |= alt == "tool-call";
        many |= alt == "tool-calls";
        if (bar == std::string::npos) break;
        at = bar + 3;
    }
    bool repeats = rules.rfind("tool-calls ::= (tool-call", 0) == 0 ||
                   rules.find("\ntool-calls ::= (tool-call") != std::string::npos;
    return one && many && repeats ? "tool-call" : root;
}

// A lazy grammar whose root allows one call section only.
static std::string bridge_lazy_one(const std::string &g) {
    std::string rules, root = bridge_split_root(g, &rules);
    return root.empty() ? g : rules + "root ::= " + bridge_one_call(root, rules) + "\n";
}

// The grammar of a call that must come first: the rules of the required
// grammar (whose root lets any text precede the call) with the root of
// the lazy one (the call syntax a trigger starts; lazy "" when the syntax
// has no trigger) as the whole output, after the end tag when the prompt
// left a thinking section open. "" when no call rule is found.
static std::string bridge_forced_grammar(const std::string &required, const std::string &lazy,
                                         const std::string &think_close, bool parallel) {
    std::string rules;
    if (bridge_split_root(required, &rules).empty()) return "";
    std::string calls = lazy.empty() ? "" : bridge_split_root(lazy, nullptr);
    if (calls.empty()) {
        // no trigger (a syntax without a start marker): the rules the
        // template layer gives its call syntax (its trigger rules' names)
        for (const char *name : {"tool-call", "tool-calls", "tool-call-root", "tools"})
            if (rules.rfind(std::string(name) + " ::= ", 0) == 0 || rules.find("\n" + std::string(name) + " ::= ") != std::string::npos)
                calls += (calls.empty() ? "" : " | ") + std::string(name);
    }
    if (!parallel) calls = bridge_one_call(calls, rules);
    if (calls.empty()) return "";
    rules += "forced-calls ::= " + calls + "\n";
    rules += "root ::= " + (think_close.empty() ? "" : gbnf_format_literal(think_close) + " \"\\n\"{0,2} ") +
             "forced-calls\n";
    return rules;
}

extern "C" int chat_bridge_render(struct chat_bridge *b, const struct chat_bridge_msg *msgs, size_t n,
                                  const struct chat_bridge_opts *opts, struct chat_bridge_out *out, char *err,
                                  size_t errlen) {
    std::memset(out, 0, sizeof *out);
    try {
        common_chat_templates_inputs in;
        in.use_jinja = true;
        in.add_generation_prompt = true;
        in.messages = bridge_msgs(msgs, n);
        in.reasoning_format = opts->reasoning ? COMMON_REASONING_FORMAT_DEEPSEEK : COMMON_REASONING_FORMAT_NONE;
        if (opts->kwargs_json && *opts->kwargs_json) {
            common_json kw = common_json::parse(opts->kwargs_json);
            if (!kw.is_object()) throw std::runtime_error("chat_template_kwargs must be a JSON object");
            for (const auto &[key, val] : kw.items()) {
                in.chat_template_kwargs[key] = val.dump();
                if (key == "enable_thinking" && val.is_boolean()) in.enable_thinking = val.get<bool>();
            }
        }
        bool tools = opts->tools_json && *opts->tools_json;
        common_json tools_j;
        if (tools) {
            tools_j = common_json::parse(opts->tools_json);
            in.tools = common_chat_tools_parse_oaicompat(tools_j);
            in.tool_choice = opts->tool_choice == CHAT_TOOLS_NONE ? COMMON_CHAT_TOOL_CHOICE_NONE
                             : opts->tool_choice == CHAT_TOOLS_AUTO ? COMMON_CHAT_TOOL_CHOICE_AUTO
                                                                    : COMMON_CHAT_TOOL_CHOICE_REQUIRED;
            auto caps = common_chat_templates_get_caps(b->tmpls.get());
            in.parallel_tool_calls = opts->parallel >= 0 ? opts->parallel != 0 : caps["supports_parallel_tool_calls"];
        }
        // required and a named function: the call syntax alone from the
        // start (bridge_forced_grammar); a named function's grammar and
        // parser know that one function, while the prompt lists every tool
        bool forced = tools && (opts->tool_choice == CHAT_TOOLS_REQUIRED || opts->tool_choice == CHAT_TOOLS_NAMED);
        if (forced) in.tool_choice = COMMON_CHAT_TOOL_CHOICE_AUTO;
        common_chat_params p, lazy_p, calls;
        {
            std::lock_guard<std::mutex> lock(render_mu);
            p = common_chat_templates_apply(b->tmpls.get(), in);
            calls = p;
            if (forced) {
                common_chat_templates_inputs one = in;
                if (opts->tool_choice == CHAT_TOOLS_NAMED) {
                    one.tools.clear();
                    for (const auto &t : in.tools)
                        if (t.name == opts->tool_name) one.tools.push_back(t);
                }
                lazy_p = opts->tool_choice == CHAT_TOOLS_NAMED ? common_chat_templates_apply(b->tmpls.get(), one) : p;
                one.tool_choice = COMMON_CHAT_TOOL_CHOICE_REQUIRED;
                calls = common_chat_templates_apply(b->tmpls.get(), one);
            }
        }
        out->th.start[0] = out->th.end[0] = '\0';
        if (p.supports_thinking && !p.thinking_end_tags.empty() && p.thinking_start_tag.size() < sizeof out->th.start &&
            p.thinking_end_tags[0].size() < sizeof out->th.end) {
            std::snprintf(out->th.start, sizeof out->th.start, "%s", p.thinking_start_tag.c_str());
            std::snprintf(out->th.end, sizeof out->th.end, "%s", p.thinking_end_tags[0].c_str());
        }
        if (tools && opts->tool_choice != CHAT_TOOLS_NONE) {
            std::string grammar = calls.grammar;
            bool lazy = calls.grammar_lazy;
            if (forced) {
                // an open thinking section is closed first, so the call can begin
                std::string close, gp = calls.generation_prompt;
                while (!gp.empty() && std::isspace(static_cast<unsigned char>(gp.back()))) gp.pop_back();
                const std::string &st = p.thinking_start_tag;
                if (!st.empty() && !p.thinking_end_tags.empty() && gp.size() >= st.size() &&
                    gp.compare(gp.size() - st.size(), std::string::npos, st) == 0)
                    close = p.thinking_end_tags[0];
                std::string g = bridge_forced_grammar(calls.grammar, lazy_p.grammar_lazy ? lazy_p.grammar : "", close,
                                                      in.parallel_tool_calls);
                if (!g.empty()) {
                    grammar = g;
                    lazy = false;
                }
            }
            if (grammar.empty() && opts->tool_choice != CHAT_TOOLS_AUTO) {
                chat_bridge_out_free(out);
                bridge_err(err, errlen,
                           "the model's chat template has no tool-call syntax, so a call cannot be required; give "
                           "the model a template with tools (chat_template) or use tool_choice 'auto'",
                           nullptr);
                return -1;
            }
            if (lazy && !in.parallel_tool_calls) grammar = bridge_lazy_one(grammar);
            if (!grammar.empty()) {
                out->grammar = bridge_dup(grammar);
                out->lazy = lazy;
                if (lazy) {
                    std::vector<std::string> pats;
                    for (const auto &t : calls.grammar_triggers) {
                        switch (t.type) {
                        case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:
                        case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN: pats.push_back(regex_escape(t.value)); break;
                        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: pats.push_back(t.value); break;
                        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: {
                            std::string a = t.value;
                            if (a.empty() || a.front() != '^') a = "^" + a;
                            if (a.back() != '$') a += "$";
                            pats.push_back(a);
                            break;
                        }
                        }
                    }
                    out->triggers = static_cast<char **>(std::calloc(pats.size() ? pats.size() : 1, sizeof(char *)));
                    if (!out->triggers) throw std::bad_alloc();
                    for (const auto &pat : pats) out->triggers[out->n_triggers++] = bridge_dup(pat);
                }
            }
            auto *syn = new chat_syntax;
            syn->params = common_chat_parser_params(calls);
            syn->params.reasoning_format = in.reasoning_format;
            syn->params.parse_tool_calls = true;
            if (!calls.parser.empty()) syn->params.parser.load(calls.parser);
            out->syntax = syn;
        }
        out->prompt = bridge_dup(p.prompt);
        out->len = p.prompt.size();
        return 0;
    } catch (const std::bad_alloc &) {
        chat_bridge_out_free(out);
        bridge_err(err, errlen, "out of memory", nullptr);
    } catch (const std::exception &e) {
        chat_bridge_out_free(out);
        bridge_err(err, errlen, "the chat template could not be applied", e.what());
    } catch (...) {
        chat_bridge_out_free(out);
        bridge_err(err, errlen, "the chat template could not be applied", nullptr);
    }
    return -1;
}

extern "C" void chat_bridge_out_free(struct chat_bridge_out *out) {
    std::free(out->prompt);
    std::free(out->grammar);
    for (size_t i = 0; i < out->n_triggers; i++) std::free(out->triggers[i]);
    std::free(out->triggers);
    delete out->syntax;
    std::memset(out, 0, sizeof *out);
}

extern "C" char *chat_bridge_schema_grammar(const char *schema_json, char *err, size_t errlen) {
    try {
        std::string g = json_schema_to_grammar(common_json::parse(schema_json ? schema_json : ""));
        char *out = static_cast<char *>(std::malloc(g.size() + 1));
        if (!out) {
            bridge_err(err, errlen, "out of memory", nullptr);
            return nullptr;
        }
        std::memcpy(out, g.c_str(), g.size() + 1);
        return out;
    } catch (const std::exception &e) {
        bridge_err(err, errlen, "the JSON schema cannot be turned into a grammar", e.what());
    } catch (...) {
        bridge_err(err, errlen, "the JSON schema cannot be turned into a grammar", nullptr);
    }
    return nullptr;
}

// ------------------------------------------------------------ output

struct chat_parse {
    common_chat_parser_params params;
    common_chat_msg msg;                // the output as parsed so far
    std::vector<std::string> ids;       // each call's id, kept across parses
    std::set<size_t> named;             // calls whose id and name went out
};

extern "C" void chat_syntax_free(struct chat_syntax *s) { delete s; }

extern "C" struct chat_parse *chat_parse_new(const struct chat_syntax *s) {
    try {
        auto *p = new chat_parse;
        p->params = s->params;
        return p;
    } catch (...) {
        return nullptr;
    }
}

extern "C" void chat_parse_free(struct chat_parse *p) { delete p; }

static std::string bridge_call_id() {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    static const char abc[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::string id = "call_";
    for (int i = 0; i < 24; i++) id += abc[rng() % (sizeof abc - 1)];
    return id;
}

// The output parsed: as a whole once final (a cut-off output, as far as it
// goes), else as a prefix of what may come.
static common_chat_msg bridge_parse(chat_parse *p, const std::string &text, bool final) {
    if (final) {
        try {
            return common_chat_parse(text, false, p->params);
        } catch (const std::exception &) {
        }
    }
    return common_chat_parse(text, true, p->params);
}

extern "C" char *chat_parse_delta(struct chat_parse *p, const char *text, size_t n, bool final) {
    try {
        common_chat_msg m = bridge_parse(p, std::string(text, n), final);
        if (m.empty() && !final) return nullptr;
        // every call gets an id of ours: one a template's syntax lets the
        // model write may be partial while it streams, or any text at all
        for (auto &tc : m.tool_calls) tc.id.clear();
        m.set_tool_call_ids(p->ids, bridge_call_id);
        common_chat_msg prev = p->msg;
        p->msg = m; // a final message stands even when no delta can be told
        std::vector<common_chat_msg_diff> diffs;
        try {
            diffs = common_chat_msg_diff::compute_diffs(prev, m);
        } catch (const std::exception &) {
            if (!final) p->msg = prev;
            return nullptr;
        }
        std::string content, reasoning;
        common_json calls = common_json::array();
        auto call_json = [&](size_t i, const std::string &args, bool head) {
            common_json fn = {{"arguments", args}};
            common_json c = {{"index", i}};
            if (head) {
                c["id"] = m.tool_calls[i].id;
                c["type"] = "function";
                fn["name"] = m.tool_calls[i].name;
            }
            c["function"] = fn;
            return c;
        };
        for (const auto &d : diffs) {
            reasoning += d.reasoning_content_delta;
            content += d.content_delta;
            if (d.tool_call_index == std::string::npos) continue;
            size_t i = d.tool_call_index;
            if (p->named.count(i)) {
                if (!d.tool_call_delta.arguments.empty()) calls.push_back(call_json(i, d.tool_call_delta.arguments, false));
            } else if (!d.tool_call_delta.arguments.empty() || final) {
                // the name is whole once the arguments begin
                calls.push_back(call_json(i, m.tool_calls[i].arguments, true));
                p->named.insert(i);
            }
        }
        // a later call began: an earlier one still unnamed goes out whole
        for (size_t i = 0; i + 1 < m.tool_calls.size() || (final && i < m.tool_calls.size()); i++)
            if (!p->named.count(i)) {
                calls.push_back(call_json(i, m.tool_calls[i].arguments, true));
                p->named.insert(i);
            }
        common_json delta = common_json::object();
        if (!reasoning.empty()) delta["reasoning_content"] = reasoning;
        if (!content.empty()) delta["content"] = content;
        if (!calls.empty()) delta["tool_calls"] = calls;
        if (delta.empty()) return nullptr;
        return bridge_dup(delta.dump());
    } catch (...) {
        return nullptr; // an output the parser cannot follow yet: nothing new
    }
}

extern "C" char *chat_parse_message(struct chat_parse *p) {
    try {
        common_json msg = common_json::object();
        const common_chat_msg &m = p->msg;
        bool blank = m.content.find_first_not_of(" \t\r\n") == std::string::npos;
        if (blank && !m.tool_calls.empty()) msg["content"] = nullptr;
        else msg["content"] = m.content;
        if (!m.reasoning_content.empty()) msg["reasoning_content"] = m.reasoning_content;
        if (!m.tool_calls.empty()) {
            common_json calls = common_json::array();
            for (const auto &tc : m.tool_calls)
                calls.push_back({{"id", tc.id}, {"type", "function"}, {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
            msg["tool_calls"] = calls;
        }
        return bridge_dup(msg.dump());
    } catch (...) {
        return nullptr;
    }
}

extern "C" size_t chat_parse_calls(const struct chat_parse *p) { return p->msg.tool_calls.size(); }
