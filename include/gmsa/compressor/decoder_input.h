#pragma once
// The decoder's input (GMSA, Sec. 3): [soft tokens][prompt][target], positions from 0, no BOS.
// Each row is packed contiguously (its soft tokens, then its own prompt, then its target) with
// padding only at the end, so that under causal attention a row's logits do not depend on the
// rest of the batch. (The official code leaves padding gaps between soft tokens and prompt
// when batching; we don't.)
#include <torch/torch.h>

#include "gmsa/compressor/group_merging.h"
#include "gmsa/model/decoder.h"

namespace gmsa {

// Prompt and target tokens of each row, concatenated and right-padded: built on the host.
// Sizes live on the host, contents on the device: to() moves only ids; the lengths stay CPU
// tensors, so that packing computes its sizes without reading the device.
struct TextBatch {
  torch::Tensor ids;             // [B, P] int64, prompt || target, right-padded
  torch::Tensor prompt_lengths;  // [B] int64, host (CPU)
  torch::Tensor target_lengths;  // [B] int64, host (CPU)
  TextBatch to(torch::Device d) const;  // ids to d (non-blocking), lengths unchanged
};

struct PackedInput {
  torch::Tensor embeds;   // [B, T, H]
  torch::Tensor labels;   // [B, T]: the next token where it is a target token, else -100
  torch::Tensor lengths;  // [B] int64 real positions per row, on the host (CPU)
};

// soft may be empty (undefined embeds) for plain LM / uncompressed inputs. Lengths (soft and
// text) are read on the host: CPU tensors cost no device synchronisation.
PackedInput pack_decoder_input(Decoder& decoder, const SoftTokens& soft, const TextBatch& text);

// Sum of target-token negative log-likelihoods and their count (tensors, no host sync): the
// trainer normalises by the target tokens of all accumulated micro-batches.
struct LossSums {
  torch::Tensor nll_sum;  // fp32 scalar
  torch::Tensor tokens;   // int64 scalar
};
LossSums target_loss(Decoder& decoder, const PackedInput& input);

}  // namespace gmsa
