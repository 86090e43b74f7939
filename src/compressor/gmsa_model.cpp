#include "gmsa/compressor/gmsa_model.h"

#include <filesystem>

#include "gmsa/io/safetensors.h"
#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {

ModelBatch ModelBatch::to(torch::Device d) const {
  ModelBatch b;
  if (context_ids.defined()) {
    b.context_ids = compat::to_device_async(context_ids, d);
    b.context_lengths = context_lengths;  // sizes stay on the host
    b.rates = rates;
  }
  b.text = text.to(d);
  return b;
}

SoftTokens GmsaModel::compress(const torch::Tensor& ids, const torch::Tensor& lengths,
                               const torch::Tensor& rates) {
  GMSA_CHECK(!compressor.is_empty(), "this model has no compressor");
  return compressor->forward(ids, lengths, rates);
}

LossSums GmsaModel::loss(const ModelBatch& batch) {
  SoftTokens soft;
  if (batch.context_ids.defined()) soft = compress(batch.context_ids, batch.context_lengths, batch.rates);
  return target_loss(decoder, pack_decoder_input(decoder, soft, batch.text));
}

static std::string resolve_file(const std::string& dir_or_file, const char* name) {
  return is_directory(dir_or_file) ? join_path(dir_or_file, name) : dir_or_file;
}

static nlohmann::json base_summary(const ModelConfig& c) {
  return {{"model_type", c.model_type}, {"hidden_size", c.hidden_size},
          {"num_hidden_layers", c.num_hidden_layers}, {"vocab_size", c.vocab_size}};
}

void save_compressor(const std::string& dir, Compressor& compressor, const ModelConfig& base,
                     const std::string& base_model_path) {
  GMSA_CHECK(!compressor->encoder->lora_merged(),
             "{}: this compressor's LoRA was merged into its weights for inference; it cannot be saved", dir);
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (auto& [name, t] : compressor->own_parameters()) tensors.emplace_back(name, t.detach());
  save_safetensors(join_path(dir, kCompressorFile), tensors,
                   {{"format", "gmsa-compressor"}, {"version", "1"},
                    {"compressor", compressor->config().to_json().dump()},
                    {"base_model", base_summary(base).dump()},
                    {"base_model_path", base_model_path}});
}

void save_decoder_delta(const std::string& dir, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  std::vector<std::pair<std::string, torch::Tensor>> detached;
  for (auto& [name, t] : tensors) detached.emplace_back(name, t.detach());
  save_safetensors(join_path(dir, kDecoderDeltaFile), detached, {{"format", "gmsa-decoder-delta"}});
}

std::string compressor_base_model(const std::string& dir_or_file) {
  SafetensorsFile f(resolve_file(dir_or_file, kCompressorFile));
  auto it = f.metadata().find("base_model_path");
  return it == f.metadata().end() ? "" : it->second;
}

Compressor load_compressor(const std::string& dir_or_file, Decoder& decoder) {
  const std::string path = resolve_file(dir_or_file, kCompressorFile);
  SafetensorsFile f(path);
  const auto& meta = f.metadata();
  auto get = [&](const char* key) {
    auto it = meta.find(key);
    if (it == meta.end()) fail("{}: not a GMSA compressor file (metadata \"{}\" missing)", path, key);
    return it->second;
  };
  if (get("format") != "gmsa-compressor") fail("{}: not a GMSA compressor file", path);
  nlohmann::json cfg_json, base_json;
  try {
    cfg_json = nlohmann::json::parse(get("compressor"));
    base_json = nlohmann::json::parse(get("base_model"));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed compressor metadata: {}", path, e.what());
  }
  auto cfg = CompressorConfig::from_json(cfg_json, path);
  const auto& mc = decoder->config();
  auto expect = [&](const char* key, const nlohmann::json& want) {
    if (base_json.value(key, nlohmann::json()) != want)
      fail("{}: compressor was trained for {} = {}, the base model has {}", path, key,
           base_json.value(key, nlohmann::json()).dump(), want.dump());
  };
  expect("hidden_size", mc.hidden_size);
  expect("num_hidden_layers", mc.num_hidden_layers);
  expect("vocab_size", mc.vocab_size);
  Compressor comp(decoder, cfg);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& name : f.keys()) tensors.emplace_back(name, f.tensor(name));
  // The encoder's base weights come from the decoder, so only own parameters are in the file.
  auto own = comp->own_parameters();
  torch::NoGradGuard g;
  for (auto& [name, dst] : own) {
    if (!f.has(name)) fail("{}: tensor {} missing", path, name);
    auto src = f.tensor(name);
    if (src.sizes() != dst.sizes()) fail("{}: tensor {} has the wrong shape for this base model", path, name);
    dst.copy_(src);
  }
  if (static_cast<size_t>(f.keys().size()) != own.size())
    fail("{}: holds {} tensors, the compressor has {}", path, f.keys().size(), own.size());
  const std::string delta = is_directory(dir_or_file) ? join_path(dir_or_file, kDecoderDeltaFile) : "";
  if (!delta.empty() && file_exists(delta)) {
    SafetensorsFile d(delta);
    // Mark the changed decoder tensors so the encoder takes private copies first.
    auto params = decoder->named_parameters(true);
    for (const auto& name : d.keys()) {
      auto* p = params.find(name);
      if (!p) fail("{}: tensor {} is not a parameter of the base model", delta, name);
      p->set_requires_grad(true);
    }
    comp->encoder->untie_trained();
    for (const auto& name : d.keys()) {
      auto* p = params.find(name);
      p->set_requires_grad(false);
      p->copy_(d.tensor(name));
    }
  }
  return comp;
}

}  // namespace gmsa
