// `gmsa logits --model DIR --input batch.json --out out.safetensors [--greedy N]`: a developer
// tool for parity checks against Hugging Face transformers (scripts/parity/hf_parity.py).
// batch.json = {"input_ids": [[...], ...], "attention_mask": [[...], ...]} (left-padded; the
// mask may be omitted when every row is real). Writes "logits" [B, T, V] fp32 computed with
// positions from the mask, and with --greedy N also "greedy" [B, N] int64: N greedy tokens per
// row from its unpadded ids, without stopping at EOS.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>

#include "command.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/model/compat.h"
#include "gmsa/model/generation.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace {

struct LogitsArgs {
  std::string model, input, out, device = "auto";
  int64_t greedy = 0;
};

// A rectangular [B, T] integer matrix from key `key` of the batch file.
torch::Tensor read_matrix(const nlohmann::json& j, const char* key, const std::string& path) {
  const auto& rows = j.at(key);
  GMSA_CHECK(rows.is_array() && !rows.empty(), "{}: \"{}\" must be a non-empty list of rows", path, key);
  const size_t T = rows[0].is_array() ? rows[0].size() : 0;
  GMSA_CHECK(T > 0, "{}: \"{}\" row 0 must be a non-empty list", path, key);
  std::vector<int64_t> flat;
  for (size_t b = 0; b < rows.size(); ++b) {
    GMSA_CHECK(rows[b].is_array() && rows[b].size() == T,
               "{}: \"{}\" row {} must be a list of {} integers (rows must be padded to one length)",
               path, key, b, T);
    for (const auto& v : rows[b]) {
      GMSA_CHECK(v.is_number_integer(), "{}: \"{}\" row {} holds a non-integer {}", path, key, b, v.dump());
      flat.push_back(v.get<int64_t>());
    }
  }
  return torch::tensor(flat, torch::kLong).view({static_cast<int64_t>(rows.size()), static_cast<int64_t>(T)});
}

struct Batch {
  torch::Tensor ids, mask;  // [B, T] int64 on the CPU
};

Batch read_batch(const std::string& path, int64_t vocab_size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(gmsa::read_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    gmsa::fail("{}: invalid JSON: {}", path, e.what());
  }
  GMSA_CHECK(j.is_object() && j.contains("input_ids"), "{}: expected an object with \"input_ids\"", path);
  Batch b;
  b.ids = read_matrix(j, "input_ids", path);
  b.mask = j.contains("attention_mask") ? read_matrix(j, "attention_mask", path) : torch::ones_like(b.ids);
  GMSA_CHECK(b.mask.sizes() == b.ids.sizes(), "{}: attention_mask and input_ids differ in shape", path);
  GMSA_CHECK(((b.mask == 0) | (b.mask == 1)).all().item<bool>(), "{}: attention_mask must hold 0 and 1 only", path);
  GMSA_CHECK((b.mask.sum(1) > 0).all().item<bool>(), "{}: a row has no real token", path);
  GMSA_CHECK(((b.ids >= 0) & (b.ids < vocab_size)).all().item<bool>(),
             "{}: input_ids must lie in [0, {}) (the model's vocabulary)", path, vocab_size);
  // Left padding: once a row's real tokens start, they run to the end.
  GMSA_CHECK((std::get<0>(b.mask.cummax(1)) == b.mask).all().item<bool>(), "{}: attention_mask must be left-padded", path);
  return b;
}

// Each row's real ids, the padding dropped.
std::vector<gmsa::GenerationPrompt> unpadded_prompts(const Batch& b) {
  std::vector<gmsa::GenerationPrompt> prompts(b.ids.size(0));
  for (int64_t r = 0; r < b.ids.size(0); ++r) {
    auto row = b.ids[r].masked_select(b.mask[r].to(torch::kBool)).contiguous();
    prompts[r].ids.assign(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
  }
  return prompts;
}

void run_logits(const LogitsArgs& a) {
  GMSA_CHECK(a.greedy >= 0, "--greedy {}: must be >= 0", a.greedy);
  gmsa::LoadOptions opts;
  opts.device = gmsa::parse_device(a.device);
  opts.dtype = torch::kFloat;
  auto pm = gmsa::load_pretrained(a.model, opts);
  auto batch = read_batch(a.input, pm.decoder->config().vocab_size);
  torch::NoGradGuard no_grad;
  gmsa::DecoderInput in;
  in.input_ids = batch.ids.to(opts.device);
  in.attention_mask = batch.mask.to(opts.device);
  in.position_ids = gmsa::positions_from_mask(in.attention_mask);
  std::vector<std::pair<std::string, torch::Tensor>> out{
      {"logits", pm.decoder->forward(in).logits.to(torch::kCPU, torch::kFloat)}};
  if (a.greedy > 0) {
    gmsa::GenerationConfig cfg;
    cfg.max_new_tokens = a.greedy;
    cfg.eos_ids = {-1};  // no id is -1: never stop early, like HF with eos_token_id=None
    auto res = gmsa::generate(pm.decoder, unpadded_prompts(batch), cfg);
    std::vector<int64_t> flat;
    for (const auto& row : res.tokens) flat.insert(flat.end(), row.begin(), row.end());
    out.emplace_back("greedy", torch::tensor(flat, torch::kLong).view({batch.ids.size(0), a.greedy}));
  }
  gmsa::save_safetensors(a.out, out, {{"model", a.model}, {"input", a.input}});
  std::cerr << fmt::format("{}: logits {} written to {}\n", a.model,
                           gmsa::compat::shape_str(out[0].second.sizes()), a.out);
}

}  // namespace

static gmsa::cli::CommandRegistrar reg(80, [](CLI::App& app) {
  auto a = std::make_shared<LogitsArgs>();
  auto* cmd = app.add_subcommand("logits", "Developer tool: logits (and greedy tokens) of a token batch, for parity checks");
  cmd->add_option("--model", a->model, "Hugging Face model directory or llama2.c .bin")->required();
  cmd->add_option("--input", a->input, "batch.json: {\"input_ids\": [[...]], \"attention_mask\": [[...]]}, left-padded")->required();
  cmd->add_option("--out", a->out, "Output .safetensors (\"logits\" [B, T, V] fp32, \"greedy\" [B, N])")->required();
  cmd->add_option("--greedy", a->greedy, "Also generate N greedy tokens per row (no EOS stop)");
  cmd->add_option("--device", a->device, "auto | cpu | cuda | cuda:N");
  cmd->callback([a] { run_logits(*a); });
});
