// `gmsa config show FILE [--set k=v ...] [--stage N]`: the effective config as YAML.
// `gmsa config docs`: the markdown table of every option (pasted into docs/configs.md).
#include <iostream>
#include <memory>

#include "command.h"
#include "gmsa/config/config.h"
#include "gmsa/util/error.h"

namespace {

struct ShowArgs {
  std::string file;
  std::vector<std::string> sets;
  int stage = -1;
};

void show(const ShowArgs& a) {
  gmsa::LoadedConfig loaded = gmsa::load_config_stages(a.file, a.sets);
  const auto& stages = loaded.stages;
  if (a.stage >= 0) {
    GMSA_CHECK(a.stage < static_cast<int>(stages.size()), "--stage {}: {} has {} stage(s)",
               a.stage, a.file, stages.size());
    std::cout << gmsa::dump_config(stages[a.stage]);
    return;
  }
  if (stages.size() == 1) {  // no chain, or a chain of one: plain YAML that loads back
    std::cout << gmsa::dump_config(stages[0]);
    return;
  }
  for (size_t i = 0; i < stages.size(); ++i)  // one YAML document per stage
    std::cout << "--- # chain stage " << i << " of " << stages.size() << "\n"
              << gmsa::dump_config(stages[i]);
}

}  // namespace

static gmsa::cli::CommandRegistrar reg(90, [](CLI::App& app) {
  auto* cmd = app.add_subcommand("config", "Show configurations and document their options");
  cmd->require_subcommand(1);

  auto args = std::make_shared<ShowArgs>();
  auto* sh = cmd->add_subcommand("show", "Print the effective config (after base, --set, chain)");
  sh->add_option("file", args->file, "Config YAML file")->required();
  sh->add_option("--set", args->sets, "Override key.path=value (repeatable)")->expected(1)->take_all();
  sh->add_option("--stage", args->stage, "Print only this chain stage (0-based)");
  sh->callback([args] { show(*args); });

  auto* docs = cmd->add_subcommand("docs", "Print the options as a markdown table");
  docs->callback([] { std::cout << gmsa::options_markdown(); });
});
