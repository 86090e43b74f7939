#pragma once
// The whole GMSA system: a frozen decoder LLM and a compressor built on its first layers.
// Also the compressor's files: compressor.safetensors (trained compressor parameters with the
// CompressorConfig and the base model's shape embedded) and, when a stage changed decoder
// weights (KEFT, full fine-tuning), decoder_delta.safetensors with exactly those tensors.
#include <torch/torch.h>

#include <memory>
#include <string>

#include "gmsa/compressor/compressor.h"
#include "gmsa/compressor/decoder_input.h"
#include "gmsa/model/decoder.h"

namespace gmsa {

// One micro-batch. Sizes live on the host, contents on the device: to() moves the id tensors
// (non-blocking) and keeps lengths and rates on the CPU, where the model reads them for free.
struct ModelBatch {
  torch::Tensor context_ids;      // [B, L] right-padded; undefined: nothing to compress
  torch::Tensor context_lengths;  // [B] int64, host (CPU)
  torch::Tensor rates;            // [B] int64, host (CPU)
  TextBatch text;                 // prompt || target
  ModelBatch to(torch::Device d) const;
};

class GmsaModel {
 public:
  GmsaModel(Decoder decoder, Compressor compressor) : decoder(std::move(decoder)), compressor(std::move(compressor)) {}
  // Target-token loss sums of a batch: compress (if any context), pack, decode.
  LossSums loss(const ModelBatch& batch);
  SoftTokens compress(const torch::Tensor& ids, const torch::Tensor& lengths, const torch::Tensor& rates);

  Decoder decoder;
  Compressor compressor{nullptr};  // null for plain LM stages
};

inline constexpr const char* kCompressorFile = "compressor.safetensors";
inline constexpr const char* kDecoderDeltaFile = "decoder_delta.safetensors";

// Writes DIR/compressor.safetensors atomically. `base_model` is recorded as a hint for tools.
void save_compressor(const std::string& dir, Compressor& compressor, const ModelConfig& base,
                     const std::string& base_model_path);
// Rebuilds the compressor on `decoder` from DIR (or the file itself) and, if DIR has a
// decoder delta, applies it to the decoder after untying the encoder (which keeps the weights
// it was trained with). Mismatches with the base model are errors naming the file.
Compressor load_compressor(const std::string& dir_or_file, Decoder& decoder);
void save_decoder_delta(const std::string& dir, const std::vector<std::pair<std::string, torch::Tensor>>& tensors);
// The base model path recorded in a compressor file ("" if none).
std::string compressor_base_model(const std::string& dir_or_file);

}  // namespace gmsa
