#pragma once
// Loading, validating and writing run configurations (docs/configs.md).
//
//   RunConfig cfg = load_config("configs/x.yaml", {"optim.lr=1e-4", "data.rates=[4,8]"});
//
// A file may name `base: other.yaml` (relative to itself, recursive); the file's mapping is
// deep-merged over its base's. Overrides "key.path=value" are applied after the merge. A
// top-level `chain:` sequence of partial mappings describes stages, each merged over the rest.
// Every error is a gmsa::Error whose one-line message starts with "file:line:".
#include <string>
#include <vector>

#include "gmsa/config/run_config.h"

namespace gmsa {

struct LoadedConfig {
  RunConfig top;                  // the file(s) and overrides, without `chain`
  std::vector<RunConfig> stages;  // one per chain element, or just `top` without a chain
};

// The file's stages, each complete and validated. Overrides may address a stage:
// "chain.1.optim.lr=1e-5" (0-based), or all of them through the top level: "optim.lr=1e-5".
LoadedConfig load_config_stages(const std::string& file,
                                const std::vector<std::string>& overrides = {});

// The top-level config (for a file with `chain:`, the settings shared by its stages).
RunConfig load_config(const std::string& file, const std::vector<std::string>& overrides = {});

// The effective config as YAML: every option in declared order, no `base` or `chain`;
// load_config reads it back to an equal RunConfig. Written to each run directory.
std::string dump_config(const RunConfig& cfg);

// A markdown table of every option (key, type, default, allowed values, meaning), for
// docs/configs.md and `gmsa config docs`.
std::string options_markdown();

}  // namespace gmsa
