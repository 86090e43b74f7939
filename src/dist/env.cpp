#include "gmsa/dist/env.h"

#include <cerrno>
#include <cstdlib>

#include "gmsa/util/error.h"

namespace gmsa::dist {

namespace {

// The whole string must be a decimal integer.
int64_t parse_int(const std::string& name, const std::string& value, const std::string& source) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  GMSA_CHECK(!value.empty() && end && *end == '\0' && errno == 0,
             "{}={}: not an integer (from {}'s environment)", name, value.empty() ? "''" : value, source);
  return static_cast<int64_t>(v);
}

std::optional<int64_t> int_var(const EnvLookup& getenv, const std::string& name,
                               const std::string& source) {
  auto v = getenv(name);
  if (!v) return std::nullopt;
  return parse_int(name, *v, source);
}

int64_t required_int(const EnvLookup& getenv, const std::string& name, const std::string& source,
                     const std::string& why) {
  auto v = int_var(getenv, name, source);
  GMSA_CHECK(v.has_value(), "{} is unset but {} ({}'s environment)", name, why, source);
  return *v;
}

void check_consistent(const DistEnv& e, const std::string& rank_var, const std::string& size_var) {
  GMSA_CHECK(e.world_size >= 1, "{}={}: the world size must be at least 1 ({})", size_var,
             e.world_size, e.source);
  GMSA_CHECK(e.rank >= 0 && e.rank < e.world_size, "{}={} is outside [0, {}={}) ({})", rank_var,
             e.rank, size_var, e.world_size, e.source);
  GMSA_CHECK(e.local_rank >= 0 && e.local_rank < e.world_size,
             "local rank {} is outside [0, world size {}) ({})", e.local_rank, e.world_size,
             e.source);
  GMSA_CHECK(e.master_port >= 1 && e.master_port <= 65535, "master port {} is outside 1..65535 ({})",
             e.master_port, e.source);
  GMSA_CHECK(!e.master_addr.empty(), "MASTER_ADDR is empty ({})", e.source);
}

int port_var(const EnvLookup& getenv, const std::string& source, int64_t fallback) {
  const int64_t p = int_var(getenv, "MASTER_PORT", source).value_or(fallback);
  GMSA_CHECK(p >= 1 && p <= 65535, "MASTER_PORT={} is outside 1..65535 ({})", p, source);
  return static_cast<int>(p);
}

DistEnv from_torchrun(const EnvLookup& getenv) {
  DistEnv e;
  e.source = "torchrun";
  const std::string why = "other torchrun variables are set";
  e.rank = required_int(getenv, "RANK", e.source, why);
  e.world_size = required_int(getenv, "WORLD_SIZE", e.source, why);
  // Without LOCAL_RANK (a hand-made launch) assume one host: the local rank is the rank.
  e.local_rank = int_var(getenv, "LOCAL_RANK", e.source).value_or(e.rank);
  if (auto a = getenv("MASTER_ADDR")) e.master_addr = *a;
  e.master_port = port_var(getenv, e.source, 29500);
  check_consistent(e, "RANK", "WORLD_SIZE");
  return e;
}

DistEnv from_slurm(const EnvLookup& getenv) {
  DistEnv e;
  e.source = "slurm";
  const std::string why = "SLURM_PROCID is set";
  e.rank = required_int(getenv, "SLURM_PROCID", e.source, why);
  e.world_size = required_int(getenv, "SLURM_NTASKS", e.source, why);
  e.local_rank = required_int(getenv, "SLURM_LOCALID", e.source, why);
  if (auto a = getenv("MASTER_ADDR")) {
    e.master_addr = *a;
  } else {
    std::optional<std::string> nodes;
    for (const char* name : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"})
      if (!nodes) nodes = getenv(name);
    GMSA_CHECK(nodes.has_value(), "neither MASTER_ADDR nor SLURM_JOB_NODELIST is set (slurm)");
    e.master_addr = first_slurm_host(*nodes);
  }
  // Jobs sharing a node get different default ports.
  const int64_t job = int_var(getenv, "SLURM_JOB_ID", e.source).value_or(0);
  e.master_port = port_var(getenv, e.source, 29500 + job % 1000);
  check_consistent(e, "SLURM_PROCID", "SLURM_NTASKS");
  return e;
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  // The first item: up to the first comma outside brackets.
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    const char c = nodelist[end];
    if (c == '[') ++depth;
    if (c == ']') --depth;
    GMSA_CHECK(depth == 0 || depth == 1, "SLURM node list '{}': unbalanced brackets; set MASTER_ADDR",
               nodelist);
    if (c == ',' && depth == 0) break;
  }
  const std::string item = nodelist.substr(0, end);
  GMSA_CHECK(!item.empty(), "SLURM node list '{}' starts with an empty item; set MASTER_ADDR",
             nodelist);
  // Each bracket group expands in order, so the first host takes the first number of each.
  std::string host;
  for (size_t i = 0; i < item.size();) {
    if (item[i] != '[') {
      GMSA_CHECK(item[i] != ']', "SLURM node list '{}': unbalanced brackets; set MASTER_ADDR",
                 nodelist);
      host += item[i++];
      continue;
    }
    const size_t close = item.find(']', i);
    GMSA_CHECK(close != std::string::npos, "SLURM node list '{}': unbalanced brackets; set MASTER_ADDR",
               nodelist);
    const std::string group = item.substr(i + 1, close - i - 1);
    const std::string first = group.substr(0, group.find_first_of(",-"));
    GMSA_CHECK(!first.empty() && first.find_first_not_of("0123456789") == std::string::npos,
               "SLURM node list '{}': cannot read the bracket group [{}]; set MASTER_ADDR",
               nodelist, group);
    host += first;  // keeps zero padding: [01-04] -> 01
    i = close + 1;
  }
  return host;
}

DistEnv detect_dist_env(const EnvLookup& getenv) {
  for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK"})
    if (getenv(name)) return from_torchrun(getenv);
  if (getenv("SLURM_PROCID")) return from_slurm(getenv);
  return DistEnv{};
}

DistEnv detect_dist_env() {
  return detect_dist_env([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace gmsa::dist
