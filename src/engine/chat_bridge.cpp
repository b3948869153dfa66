// chat_bridge.cpp - the C interface to llama.cpp's chat templates and
// JSON-schema grammars (see chat_bridge.h). The only C++ in corral: its
// `common` library has no C API. Every exception stops here and comes back
// as an error message.

#include "engine/chat_bridge.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "chat.h"
#include "json-schema-to-grammar.h"
#include "json.h"

struct chat_bridge {
    common_chat_templates_ptr tmpls;
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

extern "C" char *chat_bridge_render(struct chat_bridge *b, const struct chat_bridge_msg *msgs, size_t n,
                                    const char *kwargs_json, size_t *len, struct chat_thinking *th, char *err,
                                    size_t errlen) {
    try {
        common_chat_templates_inputs in;
        in.use_jinja = true;
        in.add_generation_prompt = true;
        for (size_t i = 0; i < n; i++) {
            common_chat_msg m;
            m.role = msgs[i].role;
            m.content = msgs[i].content ? msgs[i].content : "";
            in.messages.push_back(std::move(m));
        }
        if (kwargs_json && *kwargs_json) {
            common_json kw = common_json::parse(kwargs_json);
            if (!kw.is_object()) throw std::runtime_error("chat_template_kwargs must be a JSON object");
            for (const auto &[key, val] : kw.items()) {
                in.chat_template_kwargs[key] = val.dump();
                if (key == "enable_thinking" && val.is_boolean()) in.enable_thinking = val.get<bool>();
            }
        }
        common_chat_params p;
        {
            std::lock_guard<std::mutex> lock(render_mu);
            p = common_chat_templates_apply(b->tmpls.get(), in);
        }
        if (th) {
            th->start[0] = th->end[0] = '\0';
            if (p.supports_thinking && !p.thinking_end_tags.empty() && p.thinking_start_tag.size() < sizeof th->start &&
                p.thinking_end_tags[0].size() < sizeof th->end) {
                std::snprintf(th->start, sizeof th->start, "%s", p.thinking_start_tag.c_str());
                std::snprintf(th->end, sizeof th->end, "%s", p.thinking_end_tags[0].c_str());
            }
        }
        char *out = static_cast<char *>(std::malloc(p.prompt.size() + 1));
        if (!out) {
            bridge_err(err, errlen, "out of memory", nullptr);
            return nullptr;
        }
        std::memcpy(out, p.prompt.data(), p.prompt.size());
        out[p.prompt.size()] = '\0';
        *len = p.prompt.size();
        return out;
    } catch (const std::exception &e) {
        bridge_err(err, errlen, "the chat template could not be applied", e.what());
    } catch (...) {
        bridge_err(err, errlen, "the chat template could not be applied", nullptr);
    }
    return nullptr;
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
