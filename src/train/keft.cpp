// Knowledge Extraction Fine-Tuning (GMSA Sec. 3.4): [soft(context)][question] -> answer + EOS.
// Only the decoder's W_Q, W_K, W_V (and their biases, where the family has them) train; the
// compressor is frozen and keeps the base weights it was trained with (the encoder unties).
// Also the `ft` stage: the whole decoder, or the parameters matching stage.train_patterns.
#include <regex>

#include "gmsa/text/prompt_format.h"
#include "gmsa/train/stage.h"
#include "gmsa/util/error.h"

namespace gmsa {
namespace {

std::string format_question(const std::string& tmpl, const QaExample& ex) {
  std::string out = tmpl;
  const std::string key = "{question}";
  for (size_t pos; (pos = out.find(key)) != std::string::npos;) out.replace(pos, key.size(), ex.prompt);
  return out;
}

class QaStage : public Stage {
 public:
  explicit QaStage(const RunConfig& cfg) : cfg_(cfg) {}
  bool reads_qa() const override { return true; }

  Sample make_sample(const QaExample& ex, const Tokenizer& tok) const override {
    GMSA_CHECK(!ex.answers.empty(), "example {}: no answer to train on", ex.id);
    Sample s;
    s.context = context_tokens(ex.input, tok, cfg_.data.max_context_tokens);
    s.prompt = encode_user_turn(tok, cfg_.data.prompt_format, format_question(cfg_.data.question_template, ex));
    if (static_cast<int64_t>(s.prompt.size()) > cfg_.data.max_prompt_tokens)
      fail("example {}: the question has {} tokens, over data.max_prompt_tokens = {} (prompts are never cut)",
           ex.id, s.prompt.size(), cfg_.data.max_prompt_tokens);
    s.target = tok.encode(ex.answers.front());
    if (static_cast<int64_t>(s.target.size()) > cfg_.data.max_target_tokens - 1)
      s.target.resize(static_cast<size_t>(cfg_.data.max_target_tokens - 1));
    GMSA_CHECK(tok.eos_id() >= 0, "the tokenizer has no EOS token");
    s.target.push_back(tok.eos_id());
    return s;
  }

 protected:
  RunConfig cfg_;
};

class KeftStage final : public QaStage {
 public:
  using QaStage::QaStage;
  std::string name() const override { return "keft"; }
  NamedTensors select_trainable(GmsaModel& model) const override {
    GMSA_CHECK(!model.compressor.is_empty(), "stage keft needs a trained compressor (compressor.path)");
    freeze_all(model);
    static const std::regex qkv(R"(^decoder\.model\.layers\.\d+\.self_attn\.(q|k|v)_proj\.(weight|bias)$)");
    auto out = enable(model, [](const std::string& n) { return std::regex_match(n, qkv); });
    model.compressor->encoder->untie_trained();
    return out;
  }
};

class FinetuneStage final : public QaStage {
 public:
  using QaStage::QaStage;
  std::string name() const override { return "ft"; }
  NamedTensors select_trainable(GmsaModel& model) const override {
    GMSA_CHECK(!model.compressor.is_empty(), "stage ft needs a trained compressor (compressor.path)");
    freeze_all(model);
    std::vector<std::regex> patterns;
    for (const auto& p : cfg_.stage.train_patterns) {
      try {
        patterns.emplace_back(p);
      } catch (const std::regex_error& e) {
        fail("stage.train_patterns: invalid regular expression \"{}\": {}", p, e.what());
      }
    }
    auto out = enable(model, [&](const std::string& n) {
      if (n.rfind("decoder.", 0) != 0) return false;
      if (patterns.empty()) return true;
      for (const auto& re : patterns)
        if (std::regex_search(n, re)) return true;
      return false;
    });
    GMSA_CHECK(!out.empty(), "stage ft: stage.train_patterns select no decoder parameter");
    model.compressor->encoder->untie_trained();
    return out;
  }
};

}  // namespace

std::unique_ptr<Stage> make_keft_stage(const RunConfig& cfg) { return std::make_unique<KeftStage>(cfg); }
std::unique_ptr<Stage> make_finetune_stage(const RunConfig& cfg) { return std::make_unique<FinetuneStage>(cfg); }

}  // namespace gmsa
