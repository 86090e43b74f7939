#pragma once
// Subcommands register themselves: each src/cli/cmd_*.cpp holds one static CommandRegistrar
// whose setup function adds its subcommand (with options and callback) to the app.
// Callbacks report user errors by throwing gmsa::Error; main prints one line and exits 1.
#include <CLI/CLI.hpp>

#include <functional>

namespace gmsa::cli {

using CommandSetup = std::function<void(CLI::App& app)>;

struct CommandRegistrar {
  // `order` sorts subcommands in --help.
  CommandRegistrar(int order, CommandSetup setup);
};

// The subcommand group `name` (e.g. `data`, `bench`), created on first use: children in
// several files attach to it whatever their registration order.
CLI::App* subcommand_group(CLI::App& app, const std::string& name, const std::string& description);

// Adds every registered subcommand to the app, in registration order.
void run_registered_setups(CLI::App& app);

}  // namespace gmsa::cli
