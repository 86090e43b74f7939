#include "gmsa/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <regex>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

// The format is little-endian; we copy bytes straight into tensors.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace gmsa {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The reference implementation's limit; a larger length means a corrupt or foreign file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

struct DtypeEntry {
  const char* name;
  torch::Dtype dtype;
};

// The dtypes LibTorch 1.13 can hold. (The spec also has U16/U32/U64 and F8 variants.)
const DtypeEntry kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
    {"BF16", torch::kBFloat16}, {"I64", torch::kInt64}, {"I32", torch::kInt32},
    {"I16", torch::kInt16},   {"I8", torch::kInt8},     {"U8", torch::kUInt8},
    {"BOOL", torch::kBool}};

const DtypeEntry* dtype_by_name(const std::string& name) {
  for (const auto& e : kDtypes)
    if (name == e.name) return &e;
  return nullptr;
}

const DtypeEntry* dtype_by_torch(torch::Dtype dtype) {
  for (const auto& e : kDtypes)
    if (dtype == e.dtype) return &e;
  return nullptr;
}

std::string supported_dtypes() {
  std::vector<std::string> names;
  for (const auto& e : kDtypes) names.emplace_back(e.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

uint64_t item_size(torch::Dtype dtype) { return c10::elementSize(dtype); }

// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest is the useful part.
std::string json_message(const std::exception& e) {
  std::string s = e.what();
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find("] ");
    if (close != std::string::npos) s.erase(0, close + 2);
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// Header validation. Every failure names the file and, where there is one, the tensor.

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A JSON value that must be a non-negative integer fitting in int64.
bool as_count(const json& v, uint64_t& out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  }
  int64_t s = v.get<int64_t>();
  if (s < 0) return false;
  out = static_cast<uint64_t>(s);
  return true;
}

const json& require_field(const std::string& path, const std::string& name, const json& entry,
                          const char* field) {
  auto it = entry.find(field);
  if (it == entry.end()) fail("{}: tensor \"{}\": missing \"{}\"", path, name, field);
  return *it;
}

std::vector<int64_t> parse_shape(const std::string& path, const std::string& name,
                                 const json& v) {
  if (!v.is_array())
    fail("{}: tensor \"{}\": \"shape\" is {}, expected an array of integers", path, name,
         v.type_name());
  std::vector<int64_t> shape;
  for (const auto& d : v) {
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
      fail("{}: tensor \"{}\": negative dimension {} in shape {}", path, name, d.get<int64_t>(),
           v.dump());
    uint64_t n = 0;
    if (!as_count(d, n))
      fail("{}: tensor \"{}\": shape {} holds {}, expected non-negative integers", path, name,
           v.dump(), d.dump());
    shape.push_back(static_cast<int64_t>(n));
  }
  return shape;
}

// numel * itemsize, or nullopt when it does not fit in 64 bits.
std::optional<uint64_t> byte_size(const std::vector<int64_t>& shape, uint64_t itemsize) {
  uint64_t bytes = itemsize;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) return std::nullopt;
  return bytes;
}

SafetensorsTensorInfo parse_entry(const std::string& path, const std::string& name,
                                  const json& entry, uint64_t buffer_bytes) {
  if (!entry.is_object())
    fail("{}: tensor \"{}\": entry is {}, expected an object with dtype, shape and data_offsets",
         path, name, entry.type_name());
  const json& dtype_v = require_field(path, name, entry, "dtype");
  const json& shape_v = require_field(path, name, entry, "shape");
  const json& offsets_v = require_field(path, name, entry, "data_offsets");

  SafetensorsTensorInfo info;
  info.name = name;
  if (!dtype_v.is_string())
    fail("{}: tensor \"{}\": \"dtype\" is {}, expected a string", path, name, dtype_v.type_name());
  info.dtype_name = dtype_v.get<std::string>();
  const DtypeEntry* dt = dtype_by_name(info.dtype_name);
  if (!dt)
    fail("{}: tensor \"{}\": unknown or unsupported dtype \"{}\" (supported: {})", path, name,
         info.dtype_name, supported_dtypes());
  info.dtype = dt->dtype;
  info.shape = parse_shape(path, name, shape_v);

  uint64_t b = 0, e = 0;
  if (!offsets_v.is_array() || offsets_v.size() != 2 || !as_count(offsets_v[0], b) ||
      !as_count(offsets_v[1], e))
    fail("{}: tensor \"{}\": \"data_offsets\" is {}, expected [begin, end] with non-negative "
         "integers", path, name, offsets_v.dump());
  if (b > e) fail("{}: tensor \"{}\": data_offsets [{},{}] have begin > end", path, name, b, e);
  if (e > buffer_bytes)
    fail("{}: tensor \"{}\": data_offsets [{},{}] lie outside the {}-byte data buffer", path,
         name, b, e, buffer_bytes);
  info.begin = b;
  info.end = e;

  auto expected = byte_size(info.shape, item_size(info.dtype));
  if (!expected || *expected != e - b)
    fail("{}: tensor \"{}\" ({}, shape [{}]): data_offsets [{},{}] span {} bytes, expected {}",
         path, name, info.dtype_name, fmt::join(info.shape, ", "), b, e, e - b,
         expected ? fmt::format("{} ({} elements x {} bytes)", *expected,
                                *expected / item_size(info.dtype), item_size(info.dtype))
                  : std::string("more than 2^64"));
  return info;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& v) {
  if (!v.is_object())
    fail("{}: \"{}\" is {}, expected an object of strings", path, kMetadataKey, v.type_name());
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string())
      fail("{}: \"{}\" key \"{}\" is {}, expected a string", path, kMetadataKey, key,
           value.type_name());
    out[key] = value.get<std::string>();
  }
  return out;
}

// LibTorch's kernels assume bool bytes are 0 or 1 (anything else is undefined behaviour), and
// the format does not promise it; checked when the data are read, not at open.
void check_bool_bytes(const std::string& path, const SafetensorsTensorInfo& info,
                      const uint8_t* data) {
  if (info.dtype != torch::kBool) return;
  for (uint64_t k = 0; k < info.nbytes(); ++k)
    if (data[k] > 1)
      fail("{}: tensor \"{}\": BOOL element {} is stored as byte {}, expected 0 or 1", path,
           info.name, k, data[k]);
}

// The spec requires the tensors to tile the data buffer exactly: no overlaps (two tensors
// aliasing bytes) and no holes (unindexed bytes, which make polyglot files possible).
void check_tiling(const std::string& path, const std::vector<SafetensorsTensorInfo>& sorted,
                  uint64_t buffer_bytes) {
  uint64_t pos = 0;
  const SafetensorsTensorInfo* prev = nullptr;
  for (const auto& t : sorted) {
    if (t.begin < pos)
      fail("{}: tensor \"{}\": data_offsets [{},{}] overlap tensor \"{}\" at [{},{}]", path,
           t.name, t.begin, t.end, prev->name, prev->begin, prev->end);
    if (t.begin > pos)
      fail("{}: bytes [{},{}) of the data buffer belong to no tensor", path, pos, t.begin);
    pos = t.end;
    prev = &t;
  }
  if (pos != buffer_bytes)
    fail("{}: bytes [{},{}) at the end of the data buffer belong to no tensor", path, pos,
         buffer_bytes);
}

// ---------------------------------------------------------------------------------------
// Writing.

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // durability only; the rename itself already happened
  ::fsync(fd);
  ::close(fd);
}

std::string parent_dir(const std::string& path) {
  std::string p = fs::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

// Streams a file to `path` through a temporary next to it; commit() fsyncs and renames, so a
// reader sees either the old file or the complete new one. Not committed -> temp removed.
class AtomicWriter {
 public:
  explicit AtomicWriter(std::string path) : path_(std::move(path)) {
    tmp_ = path_ + ".tmp." + std::to_string(::getpid()) + "." +
           std::to_string(std::random_device{}());
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) fail("{}: cannot write: {}", path_, std::strerror(errno));
  }
  ~AtomicWriter() {
    if (f_) std::fclose(f_);
    if (!committed_) std::remove(tmp_.c_str());
  }
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void write(const void* data, size_t n) {
    if (n && std::fwrite(data, 1, n, f_) != n)
      fail("{}: write failed: {}", path_, std::strerror(errno));
  }
  void commit() {
    bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
    int err = errno;
    ok = std::fclose(f_) == 0 && ok;
    f_ = nullptr;
    if (!ok) fail("{}: write failed: {}", path_, std::strerror(err));
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail("{}: cannot rename temporary file into place: {}", path_, std::strerror(errno));
    committed_ = true;
    fsync_directory(parent_dir(path_));
  }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool committed_ = false;
};

struct PlannedTensor {
  const std::string* name;
  const torch::Tensor* tensor;
  const DtypeEntry* dtype;
  uint64_t nbytes;
};

std::vector<PlannedTensor> plan_layout(const std::string& path, const StateDict& tensors) {
  std::vector<PlannedTensor> plan;
  for (const auto& item : tensors) {
    const std::string& name = item.key();
    const torch::Tensor& t = item.value();
    if (name == kMetadataKey) fail("{}: \"{}\" cannot be a tensor name", path, kMetadataKey);
    if (!t.defined()) fail("{}: tensor \"{}\" is undefined", path, name);
    const DtypeEntry* dt = dtype_by_torch(t.scalar_type());
    if (!dt)
      fail("{}: tensor \"{}\" has dtype {}, which cannot be saved (supported: {})", path, name,
           c10::toString(t.scalar_type()), supported_dtypes());
    plan.push_back({&name, &t, dt, static_cast<uint64_t>(t.numel()) * item_size(dt->dtype)});
  }
  // Largest elements first keeps every tensor's offset a multiple of its element size, since
  // each size divides the larger ones; zero-copy views then need no fallback.
  std::stable_sort(plan.begin(), plan.end(), [](const PlannedTensor& a, const PlannedTensor& b) {
    return item_size(a.dtype->dtype) > item_size(b.dtype->dtype);
  });
  return plan;
}

std::string build_header(const std::string& path, const std::vector<PlannedTensor>& plan,
                         const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const auto& p : plan) {
    header[*p.name] = {{"dtype", p.dtype->name},
                       {"shape", p.tensor->sizes().vec()},
                       {"data_offsets", {offset, offset + p.nbytes}}};
    offset += p.nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::type_error& e) {
    fail("{}: cannot write header: {}", path, json_message(e));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data buffer 8-byte aligned
  return text;
}

// ---------------------------------------------------------------------------------------
// Sharded checkpoints.

std::string shard_name(size_t i, size_t n) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
}

bool is_shard_name(const std::string& name) {
  static const std::regex re(R"(model-\d{5}-of-\d{5}\.safetensors)");
  return std::regex_match(name, re);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

torch::Tensor load_one(const SafetensorsFile& f, const std::string& name,
                       std::optional<torch::Dtype> dtype) {
  return dtype ? f.tensor(name, *dtype) : f.tensor(name);
}

StateDict load_single(const std::string& path, std::optional<torch::Dtype> dtype) {
  SafetensorsFile f(path);
  StateDict out("Tensor");
  for (const auto& name : f.keys()) out.insert(name, load_one(f, name, dtype));
  return out;
}

// weight_map grouped by shard file; std::map orders shards by name, i.e. by shard number.
std::map<std::string, std::set<std::string>> read_weight_map(const std::string& index_path) {
  json index;
  try {
    index = json::parse(read_file(index_path));
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON: {}", index_path, json_message(e));
  }
  if (!index.is_object()) fail("{}: expected a JSON object", index_path);
  auto wm = index.find("weight_map");
  if (wm == index.end()) fail("{}: missing \"weight_map\"", index_path);
  if (!wm->is_object())
    fail("{}: \"weight_map\" is {}, expected an object", index_path, wm->type_name());
  std::map<std::string, std::set<std::string>> by_shard;
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string())
      fail("{}: weight_map[\"{}\"] is {}, expected a file name", index_path, name,
           shard.type_name());
    std::string file = shard.get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
      fail("{}: weight_map[\"{}\"] = \"{}\" is not a file name next to the index", index_path,
           name, file);
    by_shard[file].insert(name);
  }
  return by_shard;
}

StateDict load_sharded(const std::string& index_path, std::optional<torch::Dtype> dtype) {
  auto by_shard = read_weight_map(index_path);
  std::string dir = parent_dir(index_path);
  // All shards first: a missing one should fail before gigabytes are read.
  for (const auto& [shard, names] : by_shard)
    if (!file_exists(join_path(dir, shard)))
      fail("{}: shard {} (holding tensor \"{}\") does not exist", index_path,
           join_path(dir, shard), *names.begin());
  StateDict out("Tensor");
  for (const auto& [shard, names] : by_shard) {
    SafetensorsFile f(join_path(dir, shard));
    for (const auto& name : names)
      if (!f.has(name))
        fail("{}: tensor \"{}\" is mapped to {}, which does not contain it", index_path, name,
             f.path());
    for (const auto& name : f.keys())
      if (names.count(name)) out.insert(name, load_one(f, name, dtype));
  }
  return out;
}

// Greedy in caller order, like transformers: a new shard starts when the next tensor would
// overflow the current one.
std::vector<std::vector<size_t>> plan_shards(const StateDict& tensors, uint64_t max_bytes) {
  std::vector<std::vector<size_t>> shards;
  uint64_t current = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const torch::Tensor& t = tensors[i].value();
    uint64_t bytes = t.defined() ? static_cast<uint64_t>(t.numel()) * t.element_size() : 0;
    if (shards.empty() || (!shards.back().empty() && current + bytes > max_bytes)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += bytes;
  }
  return shards;
}

void remove_stale(const std::string& dir, const std::set<std::string>& keep) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    bool ours = name == kSingleFile || name == kIndexFile || is_shard_name(name);
    if (ours && !keep.count(name)) {
      std::error_code ec;
      fs::remove(entry.path(), ec);
      if (ec) fail("{}: cannot remove stale checkpoint file: {}", entry.path().string(), ec.message());
    }
  }
}

}  // namespace

// =========================================================================================
// SafetensorsFile

struct SafetensorsFile::Mapping {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (addr != MAP_FAILED) ::munmap(addr, size);
  }
};

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail("{}: file is {} bytes, shorter than the 8-byte header length (truncated or not a "
         "safetensors file)", path, size);
  }
  auto map = std::make_shared<Mapping>();
  map->size = static_cast<size_t>(size);
  map->addr = ::mmap(nullptr, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (map->addr == MAP_FAILED) fail("{}: cannot mmap: {}", path, std::strerror(err));
  map_ = map;
  const auto* bytes = static_cast<const uint8_t*>(map->addr);

  uint64_t header_len = read_u64_le(bytes);
  if (header_len > kMaxHeaderBytes)
    fail("{}: header length {} is over the {}-byte limit (corrupt or not a safetensors file)",
         path, header_len, kMaxHeaderBytes);
  if (header_len > size - 8)
    fail("{}: header length {} exceeds the {} bytes that follow it (truncated or not a "
         "safetensors file)", path, header_len, size - 8);
  const uint64_t buffer_bytes = size - 8 - header_len;
  data_ = bytes + 8 + header_len;

  // nlohmann keeps the last of duplicate keys silently; the spec forbids them, so catch them.
  std::string duplicate;
  std::set<std::string> seen;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && duplicate.empty() &&
        !seen.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(bytes + 8, data_, on_event);
  } catch (const json::parse_error& e) {
    fail("{}: header is not valid JSON: {}", path, json_message(e));
  }
  if (!header.is_object()) fail("{}: header is {}, expected a JSON object", path, header.type_name());
  if (!duplicate.empty()) fail("{}: header names \"{}\" twice", path, duplicate);

  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey)
      metadata_ = parse_metadata(path, entry);
    else
      infos_.push_back(parse_entry(path, name, entry, buffer_bytes));
  }
  std::sort(infos_.begin(), infos_.end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  check_tiling(path, infos_, buffer_bytes);
  for (size_t i = 0; i < infos_.size(); ++i) {
    keys_.push_back(infos_[i].name);
    index_.emplace(infos_[i].name, i);
  }
}

const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("{}: no tensor named \"{}\"", path_, name);
  return infos_[it->second];
}

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const auto& i = info(name);
  check_bool_bytes(path_, i, data_ + i.begin);
  auto t = torch::empty(i.shape, torch::TensorOptions().dtype(i.dtype));
  if (i.nbytes() > 0) std::memcpy(t.data_ptr(), data_ + i.begin, i.nbytes());
  return t;
}

torch::Tensor SafetensorsFile::tensor(const std::string& name, torch::Dtype target) const {
  if (info(name).dtype == target) return tensor(name);
  return tensor_view(name).to(target);
}

torch::Tensor SafetensorsFile::tensor_view(const std::string& name) const {
  const auto& i = info(name);
  const uint8_t* p = data_ + i.begin;
  if (reinterpret_cast<uintptr_t>(p) % item_size(i.dtype) != 0) return tensor(name);
  check_bool_bytes(path_, i, p);
  std::shared_ptr<const Mapping> keep = map_;
  return torch::from_blob(const_cast<uint8_t*>(p), i.shape, [keep](void*) {},
                          torch::TensorOptions().dtype(i.dtype));
}

// =========================================================================================
// Writing

void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
  auto plan = plan_layout(path, tensors);
  std::string header = build_header(path, plan, metadata);
  AtomicWriter out(path);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(header.size() >> (8 * i));
  out.write(len, sizeof len);
  out.write(header.data(), header.size());
  for (const auto& p : plan) {
    // One tensor on the CPU at a time; a no-op for contiguous CPU tensors.
    torch::Tensor t = p.tensor->detach().to(torch::kCPU).contiguous();
    out.write(t.data_ptr(), p.nbytes);
  }
  out.commit();
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  StateDict dict("Tensor");
  for (const auto& [name, t] : tensors) {
    if (dict.contains(name)) fail("{}: tensor name \"{}\" appears twice", path, name);
    dict.insert(name, t);
  }
  save_safetensors(path, dict, metadata);
}

// =========================================================================================
// Sharded checkpoints

StateDict load_state_dict(const std::string& path_or_dir, std::optional<torch::Dtype> dtype) {
  if (is_directory(path_or_dir)) {
    std::string single = join_path(path_or_dir, kSingleFile);
    std::string index = join_path(path_or_dir, kIndexFile);
    if (file_exists(single)) return load_single(single, dtype);
    if (file_exists(index)) return load_sharded(index, dtype);
    fail("{}: directory holds neither {} nor {}", path_or_dir, kSingleFile, kIndexFile);
  }
  if (ends_with(path_or_dir, ".index.json")) return load_sharded(path_or_dir, dtype);
  return load_single(path_or_dir, dtype);
}

void save_sharded(const std::string& dir, const StateDict& tensors, uint64_t max_shard_bytes,
                  const std::map<std::string, std::string>& metadata) {
  GMSA_CHECK(max_shard_bytes > 0, "{}: max_shard_bytes must be positive", dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create directory: {}", dir, ec.message());
  auto meta = metadata;
  meta.emplace("format", "pt");

  auto shards = plan_shards(tensors, max_shard_bytes);
  if (shards.size() <= 1) {
    save_safetensors(join_path(dir, kSingleFile), tensors, meta);
    remove_stale(dir, {kSingleFile});
    return;
  }
  json weight_map = json::object();
  std::set<std::string> written;
  uint64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    std::string file = shard_name(s, shards.size());
    StateDict part("Tensor");
    for (size_t i : shards[s]) {
      const auto& item = tensors.items()[i];
      part.insert(item.key(), item.value());
      weight_map[item.key()] = file;
    }
    save_safetensors(join_path(dir, file), part, meta);
    for (const auto& item : part) total += item.value().numel() * item.value().element_size();
    written.insert(file);
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file_atomic(join_path(dir, kIndexFile), index.dump(2) + "\n");
  written.insert(kIndexFile);
  remove_stale(dir, written);
}

}  // namespace gmsa
