#pragma once
// safetensors checkpoints (https://github.com/huggingface/safetensors), the format Hugging Face
// models ship in: an 8-byte little-endian header length N, N bytes of JSON header
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then
// the raw little-endian row-major data; offsets are relative to the start of the data.
// Also the HF sharded layout: model-0000i-of-0000N.safetensors + model.safetensors.index.json.
#include <torch/torch.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace gmsa {

// Name -> tensor in a defined order (file order on load, caller order on save).
using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype_name;  // as in the file: "BF16", "F32", ...
  torch::Dtype dtype;
  std::vector<int64_t> shape;  // [] for a scalar
  uint64_t begin = 0;          // byte range [begin, end) relative to the data buffer
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
};

// A safetensors file, memory-mapped read-only. The whole header is validated at open (see
// docs/checkpoints.md), so every accessor afterwards can trust it. Copies of the object share
// the mapping.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  // Tensor names in file order (ascending data offset; empty tensors sharing an offset by
  // name). Files written by save_safetensors keep the caller's order within a dtype size.
  const std::vector<std::string>& keys() const { return keys_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // Throws gmsa::Error naming the file when there is no such tensor.
  const SafetensorsTensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // An owned CPU copy: safe to modify, outlives this object.
  torch::Tensor tensor(const std::string& name) const;
  // An owned CPU tensor converted to `target` (read straight from the mapping, one copy).
  torch::Tensor tensor(const std::string& name, torch::Dtype target) const;
  // Zero-copy view into the mapping, which the tensor keeps alive. The memory is READ-ONLY:
  // an in-place op on the view crashes (SIGSEGV); use tensor() when you may write. Falls back
  // to a copy when the data is not aligned to the element size (legal, but rare).
  torch::Tensor tensor_view(const std::string& name) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<const Mapping> map_;
  const uint8_t* data_ = nullptr;  // start of the data buffer inside the mapping
  std::vector<SafetensorsTensorInfo> infos_;  // in file order
  std::vector<std::string> keys_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes one safetensors file atomically (temporary file, fsync, rename), streaming tensor by
// tensor, so GPU tensors of many GB never need one CPU copy of everything. Tensors are moved
// to CPU and made contiguous; data are ordered by element size (largest first, so every
// tensor is aligned), the caller's order kept within a size. `metadata` is written verbatim
// (no "__metadata__" entry when empty).
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// save_safetensors(path, {{"w", w}, {"b", b}}): without this overload a braced list would be
// ambiguous between the two above.
inline void save_safetensors(const std::string& path,
                             std::initializer_list<std::pair<std::string, torch::Tensor>> tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  save_safetensors(path, std::vector<std::pair<std::string, torch::Tensor>>(tensors), metadata);
}

// Loads owned CPU tensors from
//  - a directory holding model.safetensors or model.safetensors.index.json (the single file
//    wins when both exist, as in transformers),
//  - an index file (*.index.json) whose weight_map names shard files next to it,
//  - a single .safetensors file.
// Sharded: every shard must exist and hold every tensor the weight_map assigns to it; shards
// load in name order, tensors in file order; tensors a shard holds but the map does not name
// are skipped. `dtype` converts every tensor on load.
StateDict load_state_dict(const std::string& path_or_dir,
                          std::optional<torch::Dtype> dtype = std::nullopt);

// Writes `tensors` into directory `dir` (created if missing) the way transformers does: shards
// model-00001-of-0000N.safetensors of at most max_shard_bytes of tensor data each (a tensor
// larger than that gets a shard of its own) plus model.safetensors.index.json
// {"metadata": {"total_size": bytes}, "weight_map": {name: shard}}, written last; or a
// single model.safetensors when everything fits. Every file gets `metadata`, plus
// "format": "pt" when absent (transformers refuses files without it). Files of an earlier
// checkpoint in `dir` that the new one does not use (stale shards, index or single file) are
// removed so that they cannot shadow or mix with the new one.
void save_sharded(const std::string& dir, const StateDict& tensors, uint64_t max_shard_bytes,
                  const std::map<std::string, std::string>& metadata = {});

}  // namespace gmsa
