// `gmsa convert --llama2c FILE --tokenizer tok.model --out DIR [--dtype fp32|bf16]`: a llama2.c
// checkpoint as a Hugging Face model directory (config.json, model.safetensors,
// generation_config.json, tokenizer.model, tokenizer_config.json) that both our loader and
// transformers' LlamaForCausalLM / LlamaTokenizer read. See docs/models.md.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "command.h"
#include "gmsa/io/llama2c.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/util/error.h"

namespace {

struct ConvertArgs {
  std::string llama2c, tokenizer, out, dtype = "fp32";
};

void run_convert(const ConvertArgs& a) {
  // Check the tokenizer before writing anything: it must be the model's sentencepiece model.
  auto tok = gmsa::load_tokenizer(a.tokenizer);
  GMSA_CHECK(tok->kind() == "sentencepiece", "{}: expected a sentencepiece .model file, got a {} tokenizer",
             a.tokenizer, tok->kind());
  auto ck = gmsa::read_llama2c(a.llama2c);
  GMSA_CHECK(tok->vocab_size() <= ck.config.vocab_size,
             "{}: tokenizer has {} pieces but {} has a vocabulary of only {}", a.tokenizer,
             tok->vocab_size(), a.llama2c, ck.config.vocab_size);
  gmsa::Decoder decoder(ck.config);
  gmsa::load_parameters(*decoder, ck.tensors, a.llama2c);
  if (a.dtype == "bf16") decoder->to(torch::kBFloat16);
  gmsa::save_pretrained(a.out, decoder, a.tokenizer);
  std::cerr << fmt::format("{}: {} parameters ({} layers, hidden {}, vocab {}) written to {} as {}\n",
                           a.llama2c, ck.config.num_parameters(), ck.config.num_hidden_layers,
                           ck.config.hidden_size, ck.config.vocab_size, a.out, a.dtype);
}

}  // namespace

static gmsa::cli::CommandRegistrar reg(20, [](CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  auto* cmd = app.add_subcommand("convert", "Convert a llama2.c checkpoint to a Hugging Face model directory");
  cmd->add_option("--llama2c", a->llama2c, "llama2.c v0 checkpoint (.bin)")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "Its sentencepiece tokenizer (.model)")->required();
  cmd->add_option("--out", a->out, "Output directory")->required();
  cmd->add_option("--dtype", a->dtype, "fp32 | bf16 (weights as stored)")->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->callback([a] { run_convert(*a); });
});
