#include "gmsa/model/pretrained.h"

#include <filesystem>

#include "gmsa/io/llama2c.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {
namespace fs = std::filesystem;

torch::Device parse_device(const std::string& spec) {
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (spec == "cpu") return torch::kCPU;
  if (spec.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) fail("device \"{}\" requested but CUDA is not available in this build", spec);
    return spec == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(spec);
  }
  fail("unknown device \"{}\" (auto, cpu, cuda, cuda:N)", spec);
}

std::vector<std::pair<std::string, torch::Tensor>> state_of(torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& p : module.named_parameters(true)) out.emplace_back(p.key(), p.value());
  return out;
}

static std::vector<std::pair<std::string, torch::Tensor>> to_pairs(const StateDict& sd) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : sd) out.emplace_back(item.key(), item.value());
  return out;
}

PretrainedModel load_pretrained(const std::string& path, const LoadOptions& opts) {
  PretrainedModel out;
  out.source = path;
  if (!file_exists(path)) fail("{}: no such model file or directory", path);
  std::string tok_path = opts.tokenizer;
  if (is_directory(path)) {
    auto cfg_path = join_path(path, "config.json");
    if (!file_exists(cfg_path)) fail("{}: not a Hugging Face model directory (no config.json)", path);
    auto cfg = ModelConfig::from_file(cfg_path);
    out.decoder = Decoder(cfg);
    auto weights = load_state_dict(path);
    load_parameters(*out.decoder, to_pairs(weights), path);
    if (tok_path.empty() && (file_exists(join_path(path, "tokenizer.json")) ||
                             file_exists(join_path(path, "tokenizer.model"))))
      tok_path = path;
  } else if (looks_like_llama2c(path)) {
    auto ck = read_llama2c(path);
    out.decoder = Decoder(ck.config);
    load_parameters(*out.decoder, ck.tensors, path);
  } else {
    fail("{}: neither a Hugging Face model directory nor a llama2.c checkpoint", path);
  }
  out.decoder->to(opts.device, opts.dtype);
  out.decoder->pack_projections();
  out.decoder->set_compute_dtype(opts.dtype);
  out.decoder->eval();
  for (auto& p : out.decoder->parameters()) p.set_requires_grad(false);
  if (!tok_path.empty()) out.tokenizer = load_tokenizer(tok_path);
  else if (opts.require_tokenizer)
    fail("{}: no tokenizer found; give one with --tokenizer", path);
  if (out.tokenizer && out.tokenizer->vocab_size() > out.decoder->config().vocab_size)
    fail("{}: tokenizer has {} tokens but the model's vocabulary is {}", tok_path,
         out.tokenizer->vocab_size(), out.decoder->config().vocab_size);
  return out;
}

static std::string dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kBFloat16: return "bfloat16";
    case torch::kHalf: return "float16";
    default: return "float32";
  }
}

void save_pretrained(const std::string& dir, Decoder& decoder, const std::string& tokenizer_model_file,
                     uint64_t shard_bytes) {
  fs::create_directories(dir);
  auto cfg = decoder->config();
  cfg.torch_dtype = dtype_name(decoder->model->embed_tokens->weight.scalar_type());
  write_file_atomic(join_path(dir, "config.json"), cfg.to_json().dump(2) + "\n");
  nlohmann::json gen = {{"do_sample", false}};
  if (cfg.bos_token_id >= 0) gen["bos_token_id"] = cfg.bos_token_id;
  if (!cfg.eos_token_ids.empty()) gen["eos_token_id"] = cfg.eos_token_ids.size() == 1 ? nlohmann::json(cfg.eos_token_ids[0]) : nlohmann::json(cfg.eos_token_ids);
  write_file_atomic(join_path(dir, "generation_config.json"), gen.dump(2) + "\n");
  StateDict sd;
  for (auto& [name, t] : state_of(*decoder)) sd.insert(name, t.detach());
  save_sharded(dir, sd, shard_bytes, {{"format", "pt"}});
  if (!tokenizer_model_file.empty()) {
    write_file_atomic(join_path(dir, "tokenizer.model"), read_file(tokenizer_model_file));
    // transformers' LlamaTokenizer(Fast) reads the model file; this config names the class.
    nlohmann::json tc = {{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", true}, {"add_eos_token", false},
                         {"legacy", true}};
    write_file_atomic(join_path(dir, "tokenizer_config.json"), tc.dump(2) + "\n");
  }
}

}  // namespace gmsa
