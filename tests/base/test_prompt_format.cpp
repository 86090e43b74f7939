// Prompt formats: expected strings are the models' Jinja chat templates worked by hand.
#include <gtest/gtest.h>

#include <functional>

#include "gmsa/text/prompt_format.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

using gmsa::ChatMessage;
using gmsa::PromptFormats;
using gmsa::PromptPiece;

namespace {

// A sentencepiece-like toy: a space joins the character after it (" a" -> 1000 + 'a'), any
// other byte is its own id, and a trailing lone space is 32. BOS 1, EOS 2.
class ToyTokenizer final : public gmsa::Tokenizer {
 public:
  std::vector<int> encode(std::string_view s) const override {
    std::vector<int> ids;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == ' ' && i + 1 < s.size()) ids.push_back(1000 + (unsigned char)s[++i]);
      else ids.push_back((unsigned char)s[i]);
    }
    return ids;
  }
  std::string decode(const std::vector<int>&) const override { return ""; }
  int vocab_size() const override { return 1256; }
  std::string id_to_piece(int) const override { return ""; }
  int bos_id() const override { return 1; }
  int eos_id() const override { return 2; }
  int pad_id() const override { return -1; }
  std::string kind() const override { return "toy"; }
};

std::string text_of(const std::vector<PromptPiece>& pieces) {
  return gmsa::prompt_to_text(pieces, "<BOS>", "<EOS>");
}

std::string targets_of(const std::vector<PromptPiece>& pieces) {
  std::string s;
  for (const auto& p : pieces)
    if (p.target) s += p.kind == PromptPiece::Kind::Text ? p.text : p.kind == PromptPiece::Kind::Eos ? "<EOS>" : "<BOS>";
  return s;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const gmsa::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(PromptFormat, Llama3MatchesItsChatTemplate) {
  // Template: bos_token once, then per message '<|start_header_id|>' + role +
  // '<|end_header_id|>\n\n' + content|trim + '<|eot_id|>'; the generation prompt opens an
  // assistant header.
  PromptFormats formats;
  auto pieces = formats.get("llama3").render(
      {{"system", "Be brief."}, {"user", " Hi \n"}, {"assistant", "Hello!"}, {"user", "Bye"}}, true);
  EXPECT_EQ(text_of(pieces),
            "<BOS><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(targets_of(pieces), "Hello!<|eot_id|>");
}

TEST(PromptFormat, Llama2ChatPutsSystemIntoFirstUserTurn) {
  // HF template: bos + '[INST] ' + ('<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content).strip()
  // + ' [/INST]' for users, ' ' + content.strip() + ' ' + eos for the assistant.
  PromptFormats formats;
  auto pieces = formats.get("llama2-chat").render(
      {{"system", "SYS"}, {"user", "u1 "}, {"assistant", " a1"}, {"user", "u2"}}, true);
  EXPECT_EQ(text_of(pieces), "<BOS>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nu1 [/INST] a1 <EOS><BOS>[INST] u2 [/INST]");
  EXPECT_EQ(targets_of(pieces), "a1 <EOS>");
}

TEST(PromptFormat, QwenDefaultSystemMessage) {
  PromptFormats formats;
  std::vector<ChatMessage> chat = {{"user", "hi"}};
  EXPECT_EQ(text_of(formats.get("qwen2").render(chat, true)),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  // Plain ChatML adds no system turn, and an explicit system message replaces the default.
  EXPECT_EQ(text_of(formats.get("chatml").render(chat, false)), "<|im_start|>user\nhi<|im_end|>\n");
  EXPECT_EQ(text_of(formats.get("qwen2.5").render({{"system", "S"}, {"user", "hi"}}, false)),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n");
}

TEST(PromptFormat, TrimUsesPythonWhitespace) {
  PromptFormats formats;
  // U+3000 (ideographic space) and U+001F (unit separator) are whitespace to str.strip().
  auto pieces = formats.get("llama3").render({{"user", "\u3000\x1fhi\n"}}, false);
  EXPECT_EQ(text_of(pieces), "<BOS><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
}

TEST(PromptFormat, EncodeMarksTheReplyIncludingAStraddlingToken) {
  PromptFormats formats;
  auto pieces = formats.get("llama2-chat").render({{"user", "u"}, {"assistant", "a"}}, false);
  // One run "[INST] u [/INST] a " between BOS and EOS. Toy tokens: [ I N S T ] " u" " [" / I N
  // S T ] (14, not target), then " a" and the trailing " " (target), EOS (target). The text
  // before the reply ends with a space whose token the reply's " a" absorbs, so counting the
  // prefix's own tokens (15) would wrongly leave " a" out of the target.
  auto enc = gmsa::encode_prompt(ToyTokenizer(), pieces);
  std::vector<int> ids = {1, '[', 'I', 'N', 'S', 'T', ']', 1000 + 'u', 1000 + '[', '/', 'I', 'N', 'S', 'T', ']',
                          1000 + 'a', 32, 2};
  EXPECT_EQ(enc.ids, ids);
  std::vector<uint8_t> target(18, 0);
  target[15] = target[16] = target[17] = 1;
  EXPECT_EQ(enc.target, target);
}

TEST(PromptFormat, UserDefinedYamlInheritsAndOverrides) {
  PromptFormats formats;
  formats.load_yaml(R"(prompt_formats:
  mine:
    inherit: chatml
    default_system: "Answer from the context."
    generation_prompt: "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)", "mine.yaml");
  EXPECT_EQ(text_of(formats.get("mine").render({{"user", "q"}}, true)),
            "<|im_start|>system\nAnswer from the context.<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(formats.get("chatml").generation_prompt, "<|im_start|>assistant\n");  // untouched
}

TEST(PromptFormat, ErrorsNameFileLineAndField) {
  PromptFormats formats;
  std::string msg = error_of([&] {
    formats.load_yaml("prompt_formats:\n  x:\n    user: \"{content}\"\n    asistant: \"{content}\"\n", "f.yaml");
  });
  EXPECT_NE(msg.find("f.yaml:4: format 'x': unknown field 'asistant'"), std::string::npos) << msg;
  msg = error_of([&] { formats.load_yaml("prompt_formats:\n  y:\n    user: \"no placeholder\"\n    assistant: \"{content}\"\n", "g.yaml"); });
  EXPECT_NE(msg.find("'user' must hold {content} exactly once"), std::string::npos) << msg;
  msg = error_of([&] { formats.get("llama9"); });
  EXPECT_NE(msg.find("unknown prompt format 'llama9' (known: chatml, llama2-chat, llama3"), std::string::npos) << msg;
  msg = error_of([&] { formats.get("chatml").render({{"user", "a"}, {"system", "late"}}, false); });
  EXPECT_NE(msg.find("system message must come first"), std::string::npos) << msg;
  msg = error_of([&] { formats.get("chatml").render({{"tool", "a"}}, false); });
  EXPECT_NE(msg.find("unknown role 'tool'"), std::string::npos) << msg;
}

TEST(PromptFormat, BuiltinPresetsEqualTheConfigFile) {
  const char* src = std::getenv("GMSA_SOURCE_DIR");
  if (!src) GTEST_SKIP() << "GMSA_SOURCE_DIR is unset (ctest sets it)";
  EXPECT_EQ(gmsa::read_file(gmsa::join_path(src, "configs/prompt_formats.yaml")),
            gmsa::builtin_prompt_formats_yaml());
}
