#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <vector>

#include "command.h"
#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"

namespace gmsa::cli {

static std::vector<std::pair<int, CommandSetup>>& registry() {
  static std::vector<std::pair<int, CommandSetup>> r;
  return r;
}

CommandRegistrar::CommandRegistrar(int order, CommandSetup setup) {
  registry().emplace_back(order, std::move(setup));
}

void run_registered_setups(CLI::App& app) {
  auto& r = registry();
  std::stable_sort(r.begin(), r.end(), [](auto& a, auto& b) { return a.first < b.first; });
  for (auto& [order, setup] : r) setup(app);
}

}  // namespace gmsa::cli

int main(int argc, char** argv) {
  CLI::App app{"gmsa: GMSA context compression (arXiv 2505.12215) in C++"};
  app.set_version_flag("--version", "gmsa 0.1.0, LibTorch " + gmsa::compat::torch_version_string());
  app.require_subcommand(1);
  gmsa::cli::run_registered_setups(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const gmsa::Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  } catch (const c10::Error& e) {
    spdlog::error("{}", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
