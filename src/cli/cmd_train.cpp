// gmsa train --config FILE [--set key=value]... [--resume RUN_DIR]
#include "command.h"
#include "gmsa/config/config.h"
#include "gmsa/train/trainer.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  std::string resume;
  int64_t stop_after = -1;
};

gmsa::cli::CommandRegistrar reg(20, [](CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  auto* sub = app.add_subcommand("train", "Train a stage (ae, keft, ft, lm) or a chain of stages from a YAML config");
  sub->add_option("--config,-c", args->config, "YAML run config")->required();
  sub->add_option("--set", args->overrides, "Override a key: --set optim.lr=1e-4 --set data.rates=[4,8]");
  sub->add_option("--resume", args->resume, "Resume the run in this directory from its last complete checkpoint");
  sub->add_option("--stop-after-step", args->stop_after, "Stop with a checkpoint after this many steps (testing)");
  sub->callback([args] {
    auto loaded = gmsa::load_config_stages(args->config, args->overrides);
    if (!args->resume.empty() && !gmsa::is_directory(args->resume))
      gmsa::fail("--resume {}: no such run directory", args->resume);
    gmsa::install_signal_handlers();
    gmsa::TrainOptions opts;
    opts.resume_dir = args->resume;
    opts.stop_after_step = args->stop_after;
    auto summaries = gmsa::train(loaded.stages, opts);
    for (const auto& s : summaries)
      if (!s.completed) throw CLI::RuntimeError(3);  // stopped early; a checkpoint was written
  });
});

}  // namespace
