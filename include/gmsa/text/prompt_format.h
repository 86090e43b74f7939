#pragma once
// Prompt formats of instruct models, declared in YAML (configs/prompt_formats.yaml; the same
// presets are compiled in so the binary works without the file). A format is a set of
// templates per role with the placeholders {content}, {bos} and {eos}; docs/tokenizers.md
// relates each preset to the model's own Jinja chat template.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gmsa/text/tokenizer.h"

namespace gmsa {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// A rendered prompt is text interleaved with BOS/EOS markers; the markers become the
// tokenizer's bos_id()/eos_id(), since a sentencepiece tokenizer would read "<s>" as text.
struct PromptPiece {
  enum class Kind { Text, Bos, Eos };
  Kind kind = Kind::Text;
  std::string text;     // Kind::Text only
  bool target = false;  // part of an assistant reply: what training puts the loss on
};

struct PromptFormat {
  std::string name;
  std::string description;
  std::string begin;        // once, before the first message (e.g. "{bos}")
  std::string system;       // templates holding {content} once
  std::string user;
  std::string assistant;    // from {content} to the end is the reply (loss target)
  std::string generation_prompt;  // appended to ask the model for the next reply
  std::optional<std::string> default_system;  // system text when the messages have none
  bool system_in_first_user = false;  // LLaMA-2: the rendered system template prefixes the
                                      // first user message's content
  bool trim_content = false;          // strip whitespace around each message's content

  // Fails when roles are unknown or a system message is not first.
  std::vector<PromptPiece> render(const std::vector<ChatMessage>& messages,
                                  bool add_generation_prompt) const;
};

// The prompt as one string, BOS/EOS spelled as given (for display and tests).
std::string prompt_to_text(const std::vector<PromptPiece>& pieces, const std::string& bos_text,
                           const std::string& eos_text);

struct EncodedPrompt {
  std::vector<int> ids;
  std::vector<uint8_t> target;  // 1 where the token belongs to an assistant reply
};

// Encodes each run of text between BOS/EOS markers as one string (as Meta's LLaMA-2 code and
// HF chat templates do). A token is a target when it does not lie wholly inside the text before
// a reply: the reply's first token keeps the target even when it starts with the separating
// space (sentencepiece "▁answer").
EncodedPrompt encode_prompt(const Tokenizer& tokenizer, const std::vector<PromptPiece>& pieces);

// The token ids of one user turn as the decoder reads it after the soft tokens (or after the
// uncompressed context): with format "" the plain text; else the named preset (or a format
// from `formats_file`, if given) rendered for [user: text] with its generation prompt. A leading
// BOS of the format is dropped: in GMSA the soft tokens come first and the decoder input has no
// BOS.
std::vector<int> encode_user_turn(const Tokenizer& tokenizer, const std::string& format,
                                  const std::string& text, const std::string& formats_file = "");

// Named formats: the compiled-in presets, to which YAML files add or replace entries.
class PromptFormats {
 public:
  PromptFormats();  // llama2-chat, llama3, chatml, qwen2, qwen2.5, plain
  // YAML: `prompt_formats: {name: {field: value, ...}}`; `inherit: other` starts from another
  // format. Errors name the file, the line and the key.
  void load_yaml(const std::string& yaml_text, const std::string& origin);
  void load_yaml_file(const std::string& path);
  // Fails listing the known names.
  const PromptFormat& get(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, PromptFormat> formats_;
};

// The YAML text of the compiled-in presets (identical to configs/prompt_formats.yaml).
const char* builtin_prompt_formats_yaml();

}  // namespace gmsa
