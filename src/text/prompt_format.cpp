// Prompt formats: YAML-declared templates per role, rendered to text and BOS/EOS pieces, then
// encoded with a loss mask over the assistant replies.
#include "gmsa/text/prompt_format.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {

namespace {

constexpr const char* kBuiltinYaml = R"yaml(# Prompt formats of instruct models (see docs/tokenizers.md, "Prompt formats").
# The presets below are also compiled into the binary (src/text/prompt_format.cpp holds this
# text verbatim; a test checks the two agree), so gmsa works without this file. Add your own
# formats here or in another file given to --prompt-formats; an entry with a preset's name
# replaces the preset.
#
# Fields (all strings unless noted):
#   description          one line
#   inherit              start from another format, then override the fields given
#   begin                emitted once before the first message
#   system, user, assistant
#                        per-message templates; {content} (exactly once) is the message text.
#                        In `assistant`, everything from {content} on is the reply the loss
#                        is put on (the end-of-turn marker included).
#   generation_prompt    appended when asking the model for the next reply
#   default_system       system text used when the conversation has no system message
#                        (absent or null: no system turn then)
#   system_in_first_user (bool) the rendered system template is put in front of the first
#                        user message's content instead of being a turn of its own (LLaMA-2)
#   trim_content         (bool) strip whitespace around each message's content, as the
#                        model's chat template does (Python's str.strip)
# Placeholders {bos} and {eos} become the tokenizer's BOS/EOS ids; any other text, including
# special-token spellings such as <|eot_id|>, is passed to the tokenizer, which matches its
# added tokens (tokenizer.json) before BPE.
prompt_formats:
  llama2-chat:
    description: "LLaMA-2-chat: <s>[INST] <<SYS>>...<</SYS>> user [/INST] reply </s>"
    system: "<<SYS>>\n{content}\n<</SYS>>\n\n"
    system_in_first_user: true
    user: "{bos}[INST] {content} [/INST]"
    assistant: " {content} {eos}"
    generation_prompt: ""
    trim_content: true
  llama3:
    description: "LLaMA-3/3.1/3.2 instruct header format (<|start_header_id|>role<|end_header_id|>)"
    begin: "{bos}"
    system: "<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>"
    user: "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
    assistant: "<|start_header_id|>assistant<|end_header_id|>\n\n{content}<|eot_id|>"
    generation_prompt: "<|start_header_id|>assistant<|end_header_id|>\n\n"
    trim_content: true
  chatml:
    description: "ChatML (<|im_start|>role ... <|im_end|>), Qwen2/2.5/3 without a default system message"
    system: "<|im_start|>system\n{content}<|im_end|>\n"
    user: "<|im_start|>user\n{content}<|im_end|>\n"
    assistant: "<|im_start|>assistant\n{content}<|im_end|>\n"
    generation_prompt: "<|im_start|>assistant\n"
  qwen2:
    description: "Qwen2-Instruct: ChatML with Qwen2's default system message"
    inherit: chatml
    default_system: "You are a helpful assistant."
  qwen2.5:
    description: "Qwen2.5-Instruct: ChatML with Qwen2.5's default system message"
    inherit: chatml
    default_system: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
  plain:
    description: "No chat markup (base models): BOS, then the texts as they are; replies end with EOS"
    begin: "{bos}"
    system: "{content}\n\n"
    user: "{content}"
    assistant: "{content}{eos}"
    generation_prompt: ""
)yaml";

constexpr std::string_view kContent = "{content}";

// Python's str.isspace, which Jinja's trim and Python's strip() use.
bool is_py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Decodes the code point at s[i] (lenient: a stray byte decodes as itself, length 1).
char32_t code_point(std::string_view s, size_t i, size_t* len) {
  unsigned char b = (unsigned char)s[i];
  size_t n = b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  if (i + n > s.size()) n = 1;
  char32_t c = n == 1 ? b : b & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) c = (c << 6) | ((unsigned char)s[i + k] & 0x3F);
  *len = n;
  return c;
}

std::string py_strip(std::string_view s) {
  size_t begin = 0, end = s.size(), len = 0;
  while (begin < end && is_py_space(code_point(s, begin, &len))) begin += len;
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && ((unsigned char)s[start] & 0xC0) == 0x80) --start;
    if (!is_py_space(code_point(s, start, &len))) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

// Appends `text` with its {bos}/{eos} markers as separate pieces; adjacent text with the same
// target flag is joined.
void emit(std::vector<PromptPiece>& out, std::string_view text, bool target) {
  while (!text.empty()) {
    size_t bos = text.find("{bos}"), eos = text.find("{eos}");
    size_t at = std::min(bos, eos);
    std::string_view plain = text.substr(0, at);
    if (!plain.empty()) {
      if (!out.empty() && out.back().kind == PromptPiece::Kind::Text && out.back().target == target)
        out.back().text += plain;
      else
        out.push_back({PromptPiece::Kind::Text, std::string(plain), target});
    }
    if (at == std::string_view::npos) return;
    out.push_back({at == bos ? PromptPiece::Kind::Bos : PromptPiece::Kind::Eos, "", target});
    text.remove_prefix(at + 5);
  }
}

// Renders `tmpl` around `content`: the part before {content} is never a target; from
// {content} on it is when `reply` is set.
void emit_template(std::vector<PromptPiece>& out, const std::string& tmpl,
                   const std::string& content, bool reply) {
  size_t at = tmpl.find(kContent);
  emit(out, std::string_view(tmpl).substr(0, at), false);
  emit(out, content, reply);
  emit(out, std::string_view(tmpl).substr(at + kContent.size()), reply);
}

std::string substitute(const std::string& tmpl, const std::string& content) {
  size_t at = tmpl.find(kContent);
  return tmpl.substr(0, at) + content + tmpl.substr(at + kContent.size());
}

size_t count(const std::string& s, std::string_view what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

void validate(const PromptFormat& f, const std::string& where) {
  for (auto [field, tmpl] : {std::pair<const char*, const std::string*>{"user", &f.user},
                             {"assistant", &f.assistant},
                             {"system", &f.system}}) {
    if (tmpl->empty() && std::string(field) == "system") continue;
    if (count(*tmpl, kContent) != 1)
      fail("{}: format '{}': '{}' must hold {{content}} exactly once", where, f.name, field);
  }
  if (f.system_in_first_user && (f.system.find("{bos}") != std::string::npos ||
                                 f.system.find("{eos}") != std::string::npos))
    fail("{}: format '{}': a system template put into the first user message cannot hold "
         "{{bos}} or {{eos}}", where, f.name);
  if (f.default_system && f.system.empty())
    fail("{}: format '{}': default_system needs a system template", where, f.name);
}

}  // namespace

std::vector<PromptPiece> PromptFormat::render(const std::vector<ChatMessage>& messages,
                                              bool add_generation_prompt) const {
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant")
      fail("prompt format '{}': message {} has unknown role '{}' (system, user, assistant)", name, i, role);
    if (role == "system" && i != 0)
      fail("prompt format '{}': the system message must come first (found at {})", name, i);
  }
  std::optional<std::string> sys;
  if (!messages.empty() && messages[0].role == "system") sys = messages[0].content;
  else if (!messages.empty()) sys = default_system;
  if (sys && system.empty())
    fail("prompt format '{}' has no system template but the conversation has a system message", name);

  std::vector<PromptPiece> out;
  emit(out, begin, false);
  auto clean = [&](const std::string& s) { return trim_content ? py_strip(s) : s; };
  if (sys && !system_in_first_user) emit_template(out, system, clean(*sys), false);
  bool system_pending = sys && system_in_first_user;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") continue;
    if (m.role == "assistant") {
      emit_template(out, assistant, clean(m.content), true);
      continue;
    }
    // LLaMA-2 strips the system block and the user text together, not each part.
    std::string content = system_pending ? substitute(system, *sys) + m.content : m.content;
    system_pending = false;
    emit_template(out, user, clean(content), false);
  }
  if (system_pending) fail("prompt format '{}': the system message needs a user message to go into", name);
  if (add_generation_prompt) emit(out, generation_prompt, false);
  return out;
}

std::string prompt_to_text(const std::vector<PromptPiece>& pieces, const std::string& bos_text,
                           const std::string& eos_text) {
  std::string s;
  for (const PromptPiece& p : pieces)
    s += p.kind == PromptPiece::Kind::Text ? p.text : p.kind == PromptPiece::Kind::Bos ? bos_text : eos_text;
  return s;
}

namespace {

size_t common_prefix(const std::vector<int>& a, const std::vector<int>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// Encodes pieces[first, last) (all text) as one string, marking targets.
void encode_run(const Tokenizer& tok, const std::vector<PromptPiece>& pieces, size_t first,
                size_t last, EncodedPrompt& out) {
  std::string text;
  for (size_t i = first; i < last; ++i) text += pieces[i].text;
  std::vector<int> ids = tok.encode(text);
  // Token k belongs to the first piece whose end lies beyond it: the boundary after a piece
  // is the common prefix of the prefix's encoding and the whole run's, so a token straddling
  // a boundary goes to the later piece.
  std::string prefix;
  size_t done = 0;
  for (size_t i = first; i < last; ++i) {
    prefix += pieces[i].text;
    size_t bound = ids.size();
    bool flag_changes = i + 1 < last && pieces[i + 1].target != pieces[i].target;
    if (i + 1 < last && flag_changes) bound = std::max(done, common_prefix(tok.encode(prefix), ids));
    if (i + 1 < last && !flag_changes) continue;  // same flag: decide at the next boundary
    for (; done < bound; ++done) {
      out.ids.push_back(ids[done]);
      out.target.push_back(pieces[i].target);
    }
  }
}

}  // namespace

EncodedPrompt encode_prompt(const Tokenizer& tokenizer, const std::vector<PromptPiece>& pieces) {
  EncodedPrompt out;
  size_t i = 0;
  while (i < pieces.size()) {
    const PromptPiece& p = pieces[i];
    if (p.kind != PromptPiece::Kind::Text) {
      bool bos = p.kind == PromptPiece::Kind::Bos;
      int id = bos ? tokenizer.bos_id() : tokenizer.eos_id();
      GMSA_CHECK(id >= 0, "the prompt format puts {} but the tokenizer ({}) has none",
                 bos ? "BOS" : "EOS", tokenizer.kind());
      out.ids.push_back(id);
      out.target.push_back(p.target);
      ++i;
      continue;
    }
    size_t end = i;
    while (end < pieces.size() && pieces[end].kind == PromptPiece::Kind::Text) ++end;
    encode_run(tokenizer, pieces, i, end, out);
    i = end;
  }
  return out;
}

// ---- the registry ----

PromptFormats::PromptFormats() { load_yaml(kBuiltinYaml, "built-in prompt formats"); }

namespace {

const std::set<std::string> kFields = {"description", "inherit", "begin", "system", "user",
                                       "assistant", "generation_prompt", "default_system",
                                       "system_in_first_user", "trim_content"};

std::string at_line(const std::string& origin, const YAML::Node& n) {
  return fmt::format("{}:{}", origin, n.Mark().line + 1);
}

}  // namespace

void PromptFormats::load_yaml(const std::string& yaml_text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail("{}:{}: not valid YAML: {}", origin, e.mark.line + 1, e.msg);
  }
  YAML::Node list = root["prompt_formats"];
  if (!list || !list.IsMap()) fail("{}: expected a map under the key 'prompt_formats'", origin);
  for (auto entry : list) {
    std::string name = entry.first.as<std::string>();
    const YAML::Node& body = entry.second;
    std::string where = at_line(origin, entry.first);
    if (!body.IsMap()) fail("{}: format '{}' must be a map of fields", where, name);
    PromptFormat f;
    if (body["inherit"]) f = get(body["inherit"].as<std::string>());
    f.name = name;
    try {
      for (auto field : body) {
        std::string key = field.first.as<std::string>();
        std::string loc = at_line(origin, field.first);
        if (!kFields.count(key))
          fail("{}: format '{}': unknown field '{}'", loc, name, key);
        const YAML::Node& v = field.second;
        if (key == "default_system") f.default_system = v.IsNull() ? std::nullopt : std::optional(v.as<std::string>());
        else if (key == "system_in_first_user") f.system_in_first_user = v.as<bool>();
        else if (key == "trim_content") f.trim_content = v.as<bool>();
        else if (key == "description") f.description = v.as<std::string>();
        else if (key == "begin") f.begin = v.as<std::string>();
        else if (key == "system") f.system = v.as<std::string>();
        else if (key == "user") f.user = v.as<std::string>();
        else if (key == "assistant") f.assistant = v.as<std::string>();
        else if (key == "generation_prompt") f.generation_prompt = v.as<std::string>();
      }
    } catch (const YAML::Exception& e) {
      fail("{}:{}: format '{}': {}", origin, e.mark.line + 1, name, e.msg);
    }
    validate(f, where);
    formats_[name] = std::move(f);
  }
}

void PromptFormats::load_yaml_file(const std::string& path) { load_yaml(read_file(path), path); }

const PromptFormat& PromptFormats::get(const std::string& name) const {
  auto it = formats_.find(name);
  if (it == formats_.end()) {
    std::string known;
    for (const auto& [n, f] : formats_) known += (known.empty() ? "" : ", ") + n;
    fail("unknown prompt format '{}' (known: {})", name, known);
  }
  return it->second;
}

std::vector<std::string> PromptFormats::names() const {
  std::vector<std::string> out;
  for (const auto& [n, f] : formats_) out.push_back(n);
  return out;
}

const char* builtin_prompt_formats_yaml() { return kBuiltinYaml; }

std::vector<int> encode_user_turn(const Tokenizer& tokenizer, const std::string& format,
                                  const std::string& text, const std::string& formats_file) {
  if (format.empty()) return tokenizer.encode(text);
  PromptFormats formats;
  if (!formats_file.empty()) formats.load_yaml_file(formats_file);
  auto pieces = formats.get(format).render({{"user", text}}, /*add_generation_prompt=*/true);
  if (!pieces.empty() && pieces.front().kind == PromptPiece::Kind::Bos) pieces.erase(pieces.begin());
  return encode_prompt(tokenizer, pieces).ids;
}

}  // namespace gmsa
