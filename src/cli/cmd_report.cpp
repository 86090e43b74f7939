// gmsa report --run DIR [--out FILE]: the markdown report of a run directory (tables and SVG
// training curves, all read from the run's files; gmsa/eval/report.h), printed as well.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <memory>

#include "command.h"
#include "gmsa/eval/report.h"
#include "gmsa/util/io.h"

namespace {

struct ReportArgs {
  std::string run, out;
  bool quiet = false;
};

gmsa::cli::CommandRegistrar reg(70, [](CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  auto* sub = app.add_subcommand("report", "Write a run directory's report (tables + SVG training curves)");
  sub->add_option("--run", a->run, "Run directory (training stages, eval outputs, latency JSON, timings.tsv)")
      ->required();
  sub->add_option("--out", a->out, "Markdown file (default: RUN/report.md); plots go to plots/ beside it");
  sub->add_flag("--quiet", a->quiet, "Do not print the tables");
  sub->callback([a] {
    const std::string out = a->out.empty() ? gmsa::join_path(a->run, "report.md") : a->out;
    const auto report = gmsa::build_report(gmsa::scan_run(a->run), a->run);
    gmsa::write_report(report, out);
    if (!a->quiet) fmt::print("{}", report.console);
    spdlog::info("wrote {} and {} plot(s)", out, report.svgs.size());
  });
});

}  // namespace
