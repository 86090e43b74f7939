#pragma once
// Where this process sits in a data-parallel job, read from the launcher's environment.
//
// Precedence: torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; also
// what scripts/launch.sh sets), then SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the
// master address is MASTER_ADDR if set, else the first host of SLURM_STEP_NODELIST /
// SLURM_JOB_NODELIST; the port is MASTER_PORT if set, else 29500 + SLURM_JOB_ID % 1000), else a
// single process. See docs/distributed.md.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace gmsa::dist {

struct DistEnv {
  int64_t rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single";  // "single", "torchrun" or "slurm"
};

// Looks a variable up; std::nullopt when unset. Tests pass a map instead of the real
// environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// Throws gmsa::Error naming the variable for non-numeric or inconsistent values (rank outside
// [0, world size), world size < 1, port outside 1..65535, unparseable node list).
DistEnv detect_dist_env();
DistEnv detect_dist_env(const EnvLookup& getenv);

// The first host of a SLURM node list: "node[01-04,07],gpu5" -> "node01", "a,b" -> "a".
// Supported: comma-separated items, each a name with any number of bracket groups of numbers
// and ranges ("rack[1-2]-n[07,09]" -> "rack1-n07"). Unbalanced or empty brackets throw; set
// MASTER_ADDR then.
std::string first_slurm_host(const std::string& nodelist);

}  // namespace gmsa::dist
