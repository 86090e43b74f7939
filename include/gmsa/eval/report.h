#pragma once
// `gmsa report`: one markdown report of a run directory (docs/quickstart.md). Everything in it
// is read from the files the pipeline wrote, nothing is typed in:
//   DIR/**/metrics.jsonl (+ config.yaml beside it)  training curves of each stage
//   DIR/**/metrics.json with "results"               `gmsa eval` outputs
//   DIR/**/*.json with "setup" and "cases"           `gmsa bench infer --json` outputs
//   DIR/timings.tsv ("step<TAB>seconds" lines)        wall time of each pipeline step
// Plots are SVG line charts written by hand (axes, ticks, grid, legend), one per stage type.
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "gmsa/eval/bench_infer.h"
#include "gmsa/eval/evaluate.h"

namespace gmsa {

// ------------------------------------------------------------------ plots

struct PlotSeries {
  std::string label;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in order
};

struct SvgPlot {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
  int width = 640, height = 400;
};

// Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about
// `target` intervals; the first tick is <= lo and the last >= hi.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

// A standalone SVG document: grid and ticks from nice_ticks on both axes, one polyline per
// series, a legend in the top-right corner. Throws gmsa::Error when no series has a point.
std::string render_svg_plot(const SvgPlot& plot);

// ------------------------------------------------------------------ run contents

// One training stage: the directory holding its metrics.jsonl, relative to the run directory.
struct StageCurve {
  std::string dir;
  std::string type;    // stage.type of its config.yaml
  std::string method;  // compressor.method (meaningless for lm)
  std::vector<nlohmann::json> lines;  // metrics.jsonl, one object per logged step
  std::string label() const;          // "GMSA", "TCP" (compressor stages) or "LM"
};

struct EvalFile {
  std::string path;  // relative to the run directory
  nlohmann::json options;
  std::vector<EvalResult> results;  // rows only (no predictions)
};

struct LatencyFile {
  std::string path;  // relative to the run directory
  BenchInferReport report;  // setup and cases (medians)
};

struct RunContents {
  std::vector<StageCurve> stages;                       // sorted by directory
  std::vector<EvalFile> evals;                          // sorted by path
  std::vector<LatencyFile> latency;                     // sorted by path
  std::vector<std::pair<std::string, double>> timings;  // timings.tsv, in file order
};

// Reads everything listed at the top of this file; checkpoints/ and final/ are not searched.
// Throws gmsa::Error "<file>:<line>: ..." on a malformed file.
RunContents scan_run(const std::string& run_dir);

// Mean training loss over equal step segments, for comparing stages at equal steps: the
// steps 1..S (S = the smallest last step of `stages`) are cut into `segments` parts
// (k*S/segments, (k+1)*S/segments]; each row holds every stage's mean logged loss in it (NaN
// where a stage logged no step there).
struct SegmentMeans {
  int64_t from = 0, to = 0;  // steps from+1 .. to
  std::vector<double> means;  // one per stage, in the order given
};
std::vector<SegmentMeans> segment_means(const std::vector<const StageCurve*>& stages, int segments);

// ------------------------------------------------------------------ the report

struct Report {
  std::string markdown;                     // report.md
  std::string console;                      // the tables, for printing at the end of a run
  std::map<std::string, std::string> svgs;  // file name (in plots/) -> SVG document
};

// `title` heads the markdown (e.g. the run directory).
Report build_report(const RunContents& run, const std::string& title);

// Writes `out` and the plots into plots/ beside it.
void write_report(const Report& report, const std::string& out);

}  // namespace gmsa
