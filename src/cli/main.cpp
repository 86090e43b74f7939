#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "gmsa/util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"gmsa: GMSA context compression (arXiv 2505.12215) in C++"};
  app.require_subcommand(1);
  try {
    CLI11_PARSE(app, argc, argv);
  } catch (const gmsa::Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
