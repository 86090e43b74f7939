#include "gmsa/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <sstream>

#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace fs = std::filesystem;

namespace gmsa {

namespace {

const char* kMarker = "COMPLETE";
const std::string kStepPrefix = "step-";
const std::string kTmpPrefix = ".tmp-";
const std::string kOldPrefix = ".old-";

std::string step_name(int64_t step) { return fmt::format("{}{:08d}", kStepPrefix, step); }

// "step-<digits>" -> the step; anything else -> nullopt.
std::optional<int64_t> parse_step_name(const std::string& name) {
  if (name.size() <= kStepPrefix.size() || name.compare(0, kStepPrefix.size(), kStepPrefix) != 0)
    return std::nullopt;
  const std::string digits = name.substr(kStepPrefix.size());
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), is_digit))
    return std::nullopt;
  return std::stoll(digits);
}

bool has_marker(const fs::path& dir) { return fs::is_regular_file(dir / kMarker); }

void fsync_path(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), O_RDONLY | (directory ? O_DIRECTORY : 0));
  if (fd < 0) fail("{}: cannot open to sync: {}", p.string(), std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) fail("{}: fsync failed: {}", p.string(), std::strerror(err));
}

// Flushes every file and directory under `root` (and root itself) to stable storage.
void fsync_tree(const fs::path& root) {
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_symlink()) continue;
    if (entry.is_regular_file()) fsync_path(entry.path(), false);
    else if (entry.is_directory()) fsync_path(entry.path(), true);
  }
  fsync_path(root, true);
}

std::string utc_now_iso() {
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) fail("{}: cannot rename to {}: {}", from.string(), to.string(), ec.message());
}

void remove_or_fail(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) fail("{}: cannot remove: {}", p.string(), ec.message());
}

}  // namespace

CheckpointManager::CheckpointManager(std::string run_dir, int64_t keep_last)
    : run_dir_(std::move(run_dir)),
      dir_((fs::path(run_dir_) / "checkpoints").string()),
      keep_last_(keep_last) {}

std::optional<int64_t> CheckpointManager::step_of(const std::string& checkpoint_dir) {
  fs::path p(checkpoint_dir);
  if (!p.has_filename()) p = p.parent_path();  // tolerate a trailing '/'
  return parse_step_name(p.filename().string());
}

std::vector<std::string> CheckpointManager::complete() const {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir_)) {
    auto step = parse_step_name(entry.path().filename().string());
    if (step && entry.is_directory() && has_marker(entry.path()))
      found.emplace_back(*step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::optional<std::string> CheckpointManager::latest() const {
  auto all = complete();
  if (all.empty()) return std::nullopt;
  return all.back();
}

void CheckpointManager::remove_leftovers() const {
  std::vector<fs::path> entries, old_dirs;
  for (const auto& entry : fs::directory_iterator(dir_)) entries.push_back(entry.path());
  for (const auto& path : entries) {
    const std::string name = path.filename().string();
    if (name.rfind(kTmpPrefix, 0) == 0) {
      remove_or_fail(path);
    } else if (name.rfind(kOldPrefix, 0) == 0) {
      old_dirs.push_back(path);
    } else if (parse_step_name(name) && !has_marker(path)) {
      remove_or_fail(path);
    }
  }
  // A replacement that stopped between its two renames left only the old copy: put it back.
  for (const auto& old : old_dirs) {
    fs::path target = fs::path(dir_) / old.filename().string().substr(kOldPrefix.size());
    if (has_marker(old) && parse_step_name(target.filename().string()) && !fs::exists(target))
      rename_or_fail(old, target);
    else
      remove_or_fail(old);
  }
}

void CheckpointManager::prune(const std::string& keep) const {
  if (keep_last_ <= 0) return;
  auto all = complete();
  int64_t excess = static_cast<int64_t>(all.size()) - keep_last_;
  for (size_t i = 0; i < all.size() && excess > 0; ++i) {
    if (fs::path(all[i]) == fs::path(keep)) continue;
    remove_or_fail(all[i]);
    --excess;
  }
}

std::string CheckpointManager::save(int64_t step,
                                    const std::function<void(const std::string&)>& write) {
  GMSA_CHECK(step >= 0, "{}: checkpoint step {} is negative", dir_, step);
  const fs::path dir(dir_);
  if (!fs::is_directory(dir)) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("{}: cannot create: {}", dir_, ec.message());
    fsync_path(dir.parent_path(), true);
  }
  remove_leftovers();

  const fs::path final_dir = dir / step_name(step);
  const fs::path tmp = dir / (kTmpPrefix + step_name(step));
  std::error_code ec;
  fs::create_directory(tmp, ec);
  if (ec) fail("{}: cannot create: {}", tmp.string(), ec.message());
  try {
    write(tmp.string());
    save_json_atomic((tmp / kMarker).string(), {{"step", step}, {"time", utc_now_iso()}});
    fsync_tree(tmp);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }

  if (fs::exists(final_dir)) {
    const fs::path aside = dir / (kOldPrefix + step_name(step));
    rename_or_fail(final_dir, aside);
    rename_or_fail(tmp, final_dir);
    fsync_path(dir, true);
    remove_or_fail(aside);
  } else {
    rename_or_fail(tmp, final_dir);
  }
  fsync_path(dir, true);
  prune(final_dir.string());
  return final_dir.string();
}

void save_json_atomic(const std::string& path, const nlohmann::json& j) {
  write_file_atomic(path, j.dump(2) + "\n");
  fs::path parent = fs::path(path).parent_path();
  fsync_path(parent.empty() ? fs::path(".") : parent, true);
}

nlohmann::json load_json(const std::string& path) {
  GMSA_CHECK(file_exists(path), "{}: no such file", path);
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
}

// ---- random generators ----

namespace {

bool have_cuda() { return torch::cuda::is_available(); }

std::string to_hex(const torch::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  torch::Tensor b = bytes.to(torch::kCPU).contiguous();
  GMSA_CHECK(b.scalar_type() == torch::kByte, "rng state: expected a uint8 tensor");
  const uint8_t* p = b.data_ptr<uint8_t>();
  std::string s;
  s.reserve(2 * b.numel());
  for (int64_t i = 0; i < b.numel(); ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

torch::Tensor from_hex(const std::string& s, const char* what) {
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    fail("rng state '{}': invalid hex digit '{}'", what, c);
  };
  GMSA_CHECK(s.size() % 2 == 0, "rng state '{}': odd number of hex digits", what);
  torch::Tensor t = torch::empty({static_cast<int64_t>(s.size() / 2)}, torch::kByte);
  uint8_t* p = t.data_ptr<uint8_t>();
  for (size_t i = 0; i < s.size(); i += 2) p[i / 2] = nibble(s[i]) << 4 | nibble(s[i + 1]);
  return t;
}

}  // namespace

RngSnapshot capture_rng() {
  RngSnapshot s;
  s.cpu = compat::rng_state(torch::kCPU);
  if (have_cuda()) s.cuda = compat::rng_state(torch::Device(torch::kCUDA));
  return s;
}

RngSnapshot capture_rng(const std::mt19937_64& mt) {
  RngSnapshot s = capture_rng();
  std::ostringstream os;
  os << mt;
  s.mt = os.str();
  return s;
}

void restore_rng(const RngSnapshot& s) {
  if (s.cpu.defined()) compat::set_rng_state(s.cpu, torch::kCPU);
  if (s.cuda.defined() && have_cuda()) compat::set_rng_state(s.cuda, torch::Device(torch::kCUDA));
}

void restore_rng(const RngSnapshot& s, std::mt19937_64& mt) {
  std::istringstream is(s.mt);
  std::mt19937_64 parsed;
  is >> parsed;
  GMSA_CHECK(!s.mt.empty() && !is.fail(), "rng state: no valid mt19937_64 state to restore");
  restore_rng(s);
  mt = parsed;
}

nlohmann::json rng_to_json(const RngSnapshot& s) {
  nlohmann::json j;
  j["cpu"] = s.cpu.defined() ? nlohmann::json(to_hex(s.cpu)) : nlohmann::json(nullptr);
  j["cuda"] = s.cuda.defined() ? nlohmann::json(to_hex(s.cuda)) : nlohmann::json(nullptr);
  j["mt"] = s.mt;
  return j;
}

RngSnapshot rng_from_json(const nlohmann::json& j) {
  GMSA_CHECK(j.is_object(), "rng state: expected a JSON object");
  RngSnapshot s;
  auto bytes = [&](const char* key) -> torch::Tensor {
    if (!j.contains(key) || j[key].is_null()) return {};
    GMSA_CHECK(j[key].is_string(), "rng state: '{}' must be a hex string", key);
    return from_hex(j[key].get<std::string>(), key);
  };
  s.cpu = bytes("cpu");
  s.cuda = bytes("cuda");
  if (j.contains("mt")) {
    GMSA_CHECK(j["mt"].is_string(), "rng state: 'mt' must be a string");
    s.mt = j["mt"].get<std::string>();
  }
  return s;
}

}  // namespace gmsa
