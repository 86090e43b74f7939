#pragma once
// Host-side collation of samples into one right-padded ModelBatch (pinned when the model
// lives on a GPU, so the copies that follow are asynchronous).
#include <vector>

#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/train/stage.h"

namespace gmsa {

// rates[i] is sample i's compression rate (ignored when samples have no context).
ModelBatch collate(const std::vector<const Sample*>& samples, const std::vector<int64_t>& rates,
                   bool pin_memory);

// Target tokens of a set of samples: the normaliser of accumulated losses, known on the
// host before any forward pass.
int64_t count_target_tokens(const std::vector<const Sample*>& samples);

}  // namespace gmsa
