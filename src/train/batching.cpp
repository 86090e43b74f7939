#include "gmsa/train/batching.h"

#include "gmsa/util/error.h"

namespace gmsa {

static torch::Tensor padded(const std::vector<std::vector<int>>& rows) {
  size_t width = 1;
  for (const auto& r : rows) width = std::max(width, r.size());
  auto t = torch::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(width)}, torch::kLong);
  auto acc = t.accessor<int64_t, 2>();
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) acc[i][j] = rows[i][j];
  return t;
}

static torch::Tensor lengths_of(const std::vector<std::vector<int>>& rows) {
  std::vector<int64_t> v;
  for (const auto& r : rows) v.push_back(static_cast<int64_t>(r.size()));
  return torch::tensor(v, torch::kLong);
}

ModelBatch collate(const std::vector<const Sample*>& samples, const std::vector<int64_t>& rates,
                   bool pin_memory) {
  GMSA_CHECK(!samples.empty(), "collate: empty batch");
  const bool compress = !samples.front()->context.empty();
  std::vector<std::vector<int>> ctx, text;
  std::vector<int64_t> plen, tlen;
  for (const auto* s : samples) {
    GMSA_CHECK(s->context.empty() != compress, "collate: a batch mixes samples with and without context");
    ctx.push_back(s->context);
    std::vector<int> t = s->prompt;
    t.insert(t.end(), s->target.begin(), s->target.end());
    text.push_back(std::move(t));
    plen.push_back(static_cast<int64_t>(s->prompt.size()));
    tlen.push_back(static_cast<int64_t>(s->target.size()));
  }
  ModelBatch b;
  b.text.ids = padded(text);
  b.text.prompt_lengths = torch::tensor(plen, torch::kLong);
  b.text.target_lengths = torch::tensor(tlen, torch::kLong);
  if (compress) {
    GMSA_CHECK(rates.size() == samples.size(), "collate: {} rates for {} samples", rates.size(), samples.size());
    b.context_ids = padded(ctx);
    b.context_lengths = lengths_of(ctx);
    b.rates = torch::tensor(rates, torch::kLong);
  }
  if (pin_memory) {
    b.text.ids = b.text.ids.pin_memory();
    if (compress) b.context_ids = b.context_ids.pin_memory();
  }
  return b;
}

int64_t count_target_tokens(const std::vector<const Sample*>& samples) {
  int64_t n = 0;
  for (const auto* s : samples) n += static_cast<int64_t>(s->target.size());
  return n;
}

}  // namespace gmsa
