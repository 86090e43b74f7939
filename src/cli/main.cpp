#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <unistd.h>
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

CLI::App* subcommand_group(CLI::App& app, const std::string& name, const std::string& description) {
  for (auto* sub : app.get_subcommands([&](CLI::App* s) { return s->get_name() == name; })) return sub;
  auto* group = app.add_subcommand(name, description);
  group->require_subcommand(1);
  return group;
}

void run_registered_setups(CLI::App& app) {
  auto& r = registry();
  std::stable_sort(r.begin(), r.end(), [](auto& a, auto& b) { return a.first < b.first; });
  for (auto& [order, setup] : r) setup(app);
}

}  // namespace gmsa::cli

// libgomp and OpenBLAS read their thread settings in constructors that run before main. Without
// OMP_NUM_THREADS, torch's intra-op threads and OpenBLAS's own OpenMP team oversubscribe the
// cores: a training step of stories260K took 2.4 s instead of 0.12 s on 2 cores. So the
// program re-executes itself once with OMP_NUM_THREADS set (to the core count; the trainer
// then sets its own intra-op count from run.threads).
static void ensure_omp_threads(char** argv) {
  if (std::getenv("OMP_NUM_THREADS") || std::getenv("GMSA_NO_REEXEC")) return;
  const unsigned n = std::max(1u, std::thread::hardware_concurrency());
  ::setenv("OMP_NUM_THREADS", std::to_string(n).c_str(), 1);
  ::setenv("GMSA_NO_REEXEC", "1", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: carry on as we are
}

int main(int argc, char** argv) {
  ensure_omp_threads(argv);
  // Logs and errors go to stderr: stdout carries results (generated text, tables, JSON).
  spdlog::set_default_logger(spdlog::stderr_color_mt("gmsa"));
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
