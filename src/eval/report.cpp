#include "gmsa/eval/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>

#include "gmsa/config/config.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {
namespace fs = std::filesystem;

// ------------------------------------------------------------------ plots

std::vector<double> nice_ticks(double lo, double hi, int target) {
  GMSA_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "nice_ticks: bad range [{}, {}]", lo, hi);
  GMSA_CHECK(target >= 1, "nice_ticks: target {} < 1", target);
  if (hi == lo) {  // a flat series still gets an axis around its value
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * power;
  for (double m : {1.0, 2.0, 5.0})
    if (m * power >= raw) {
      step = m * power;
      break;
    }
  // Integer multiples of the step, so that 0.1 * 3 prints as 0.3 rather than accumulating.
  const auto first = static_cast<int64_t>(std::floor(lo / step + 1e-9));
  const auto last = static_cast<int64_t>(std::ceil(hi / step - 1e-9));
  std::vector<double> ticks;
  for (int64_t k = first; k <= last; ++k) ticks.push_back(static_cast<double>(k) * step);
  return ticks;
}

namespace {

const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Tick labels: shortest round-trip-ish form, "-0" avoided.
std::string tick_label(double v) {
  if (std::abs(v) < 1e-12) return "0";
  return fmt::format("{:g}", v);
}

}  // namespace

std::string render_svg_plot(const SvgPlot& p) {
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : p.series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  GMSA_CHECK(std::isfinite(x0), "plot \"{}\": no finite point to draw", p.title);
  const auto xt = nice_ticks(x0, x1), yt = nice_ticks(y0, y1);
  const double left = 64, right = 16, top = 36, bottom = 48;
  const double w = p.width - left - right, h = p.height - top - bottom;
  auto px = [&](double x) { return left + (x - xt.front()) / (xt.back() - xt.front()) * w; };
  auto py = [&](double y) { return top + (1 - (y - yt.front()) / (yt.back() - yt.front())) * h; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text x=\"{2:.2f}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{3}</text>\n",
      p.width, p.height, left + w / 2, xml_escape(p.title));
  for (double x : xt)
    svg += fmt::format(
        "<line x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{0:.2f}\" y2=\"{2:.2f}\" stroke=\"#e0e0e0\"/>\n"
        "<text x=\"{0:.2f}\" y=\"{3:.2f}\" text-anchor=\"middle\">{4}</text>\n",
        px(x), top, top + h, top + h + 16, tick_label(x));
  for (double y : yt)
    svg += fmt::format(
        "<line x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{2:.2f}\" y2=\"{1:.2f}\" stroke=\"#e0e0e0\"/>\n"
        "<text x=\"{3:.2f}\" y=\"{4:.2f}\" text-anchor=\"end\">{5}</text>\n",
        left, py(y), left + w, left - 6, py(y) + 4, tick_label(y));
  svg += fmt::format(
      "<polyline points=\"{0:.2f},{1:.2f} {0:.2f},{2:.2f} {3:.2f},{2:.2f}\" fill=\"none\" stroke=\"black\"/>\n"
      "<text x=\"{4:.2f}\" y=\"{5}\" text-anchor=\"middle\">{6}</text>\n"
      "<text transform=\"translate(16 {7:.2f}) rotate(-90)\" text-anchor=\"middle\">{8}</text>\n",
      left, top, top + h, left + w, left + w / 2, p.height - 8, xml_escape(p.x_label), top + h / 2,
      xml_escape(p.y_label));
  for (size_t i = 0; i < p.series.size(); ++i) {
    const auto& s = p.series[i];
    const char* colour = kPalette[i % std::size(kPalette)];
    std::string pts;
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) pts += fmt::format("{}{:.2f},{:.2f}", pts.empty() ? "" : " ", px(x), py(y));
    svg += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>\n", pts, colour);
    const double ly = top + 14 + 18 * static_cast<double>(i), lx = left + w - 150;
    svg += fmt::format(
        "<line x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{2:.2f}\" y2=\"{1:.2f}\" stroke=\"{3}\" stroke-width=\"3\"/>\n"
        "<text x=\"{4:.2f}\" y=\"{5:.2f}\">{6}</text>\n",
        lx, ly, lx + 24, colour, lx + 30, ly + 4, xml_escape(s.label));
  }
  return svg + "</svg>\n";
}

// ------------------------------------------------------------------ run contents

std::string StageCurve::label() const {
  if (type == "lm") return "LM";
  std::string m = method;
  std::transform(m.begin(), m.end(), m.begin(), [](unsigned char c) { return std::toupper(c); });
  return m;
}

namespace {

std::string relative_to(const fs::path& p, const fs::path& root) { return p.lexically_relative(root).generic_string(); }

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  LineReader reader(path);
  for (std::string line; reader.next(line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j.contains("loss"))
      fail("{}:{}: not a metrics object with \"step\" and \"loss\"", path, reader.line_number());
    out.push_back(std::move(j));
  }
  return out;
}

StageCurve read_stage(const fs::path& dir, const fs::path& root) {
  StageCurve s;
  s.dir = relative_to(dir, root);
  const auto cfg_path = (dir / "config.yaml").string();
  GMSA_CHECK(file_exists(cfg_path), "{}: metrics.jsonl without config.yaml beside it", s.dir);
  const auto cfg = load_config(cfg_path);
  s.type = cfg.stage.type;
  s.method = cfg.compressor.method;
  s.lines = read_jsonl((dir / "metrics.jsonl").string());
  return s;
}

EvalFile read_eval(const std::string& path, const nlohmann::json& j, const fs::path& root) {
  EvalFile f;
  f.path = relative_to(path, root);
  f.options = j.value("options", nlohmann::json::object());
  try {
    for (const auto& r : j.at("results")) {
      EvalResult res;
      res.task = r.at("task").get<std::string>();
      res.dataset = r.at("dataset").get<std::string>();
      for (const auto& row : r.at("rows")) {
        EvalRow e;
        e.method = row.at("method").get<std::string>();
        e.rate = row.at("rate").get<int64_t>();
        e.examples = row.value("examples", int64_t{0});
        for (auto [key, field] : std::initializer_list<std::pair<const char*, double EvalRow::*>>{
                 {"bleu", &EvalRow::bleu}, {"prefix_em", &EvalRow::prefix_em}, {"rouge1", &EvalRow::rouge1},
                 {"rouge2", &EvalRow::rouge2}, {"rougeL", &EvalRow::rougeL}, {"ppl", &EvalRow::ppl},
                 {"acc", &EvalRow::acc}, {"em", &EvalRow::em}, {"f1", &EvalRow::f1}})
          e.*field = row.value(key, 0.0);
        res.rows.push_back(std::move(e));
      }
      f.results.push_back(std::move(res));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a `gmsa eval` metrics file: {}", path, e.what());
  }
  return f;
}

LatencyFile read_latency(const std::string& path, const nlohmann::json& j, const fs::path& root) {
  LatencyFile f;
  f.path = relative_to(path, root);
  f.report.setup = j.at("setup");
  try {
    for (const auto& c : j.at("cases")) {
      BenchCase bc;
      bc.name = c.at("name").get<std::string>();
      bc.rate = c.at("rate").get<int64_t>();
      bc.decoder_tokens = c.at("decoder_tokens").get<int64_t>();
      const auto& m = c.at("median");
      bc.median = {m.at("compress_ms").get<double>(), m.at("prefill_ms").get<double>(),
                   m.at("decode_ms").get<double>(), m.at("total_ms").get<double>(),
                   m.at("generated").get<int64_t>()};
      bc.tokens_per_s = c.at("tokens_per_s").get<double>();
      // Files written before these fields existed: derive / leave off.
      bc.answers_per_s = c.contains("answers_per_s")
                             ? c.at("answers_per_s").get<double>()
                             : f.report.setup.value("batch", 1) / (bc.median.total_ms / 1000.0);
      bc.cuda_graph = c.value("cuda_graph", false);
      bc.peak_bytes = c.at("peak_bytes").get<int64_t>();
      f.report.cases.push_back(std::move(bc));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a `gmsa bench infer` JSON file: {}", path, e.what());
  }
  return f;
}

std::vector<std::pair<std::string, double>> read_timings(const std::string& path) {
  std::vector<std::pair<std::string, double>> out;
  LineReader reader(path);
  for (std::string line; reader.next(line);) {
    if (line.empty()) continue;
    const auto tab = line.rfind('\t');
    double seconds = 0;
    size_t used = 0;
    try {
      if (tab != std::string::npos) seconds = std::stod(line.substr(tab + 1), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (tab == std::string::npos || used == 0 || tab + 1 + used != line.size())
      fail("{}:{}: expected \"step<TAB>seconds\"", path, reader.line_number());
    out.emplace_back(line.substr(0, tab), seconds);
  }
  return out;
}

}  // namespace

RunContents scan_run(const std::string& run_dir) {
  GMSA_CHECK(is_directory(run_dir), "{}: no such run directory", run_dir);
  const fs::path root(run_dir);
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    const auto name = it->path().filename().string();
    if (it->is_directory() && (name == "checkpoints" || name == "final")) {
      it.disable_recursion_pending();  // weights and resume state: nothing to report
      continue;
    }
    if (it->is_regular_file()) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  RunContents run;
  for (const auto& f : files) {
    const auto name = f.filename().string();
    if (name == "metrics.jsonl") {
      run.stages.push_back(read_stage(f.parent_path(), root));
    } else if (f.extension() == ".json") {
      auto j = nlohmann::json::parse(read_file(f.string()), nullptr, false);
      if (j.is_discarded() || !j.is_object()) continue;  // not ours
      if (name == "metrics.json" && j.contains("results")) run.evals.push_back(read_eval(f.string(), j, root));
      else if (j.contains("setup") && j.contains("cases")) run.latency.push_back(read_latency(f.string(), j, root));
    }
  }
  const auto timings = (root / "timings.tsv").string();
  if (file_exists(timings)) run.timings = read_timings(timings);
  return run;
}

std::vector<SegmentMeans> segment_means(const std::vector<const StageCurve*>& stages, int segments) {
  GMSA_CHECK(segments >= 1, "segment_means: {} segments", segments);
  int64_t last = std::numeric_limits<int64_t>::max();
  for (const auto* s : stages) last = std::min(last, s->lines.empty() ? 0 : s->lines.back().at("step").get<int64_t>());
  std::vector<SegmentMeans> out;
  if (stages.empty() || last <= 0) return out;
  for (int k = 0; k < segments; ++k) {
    SegmentMeans seg;
    seg.from = last * k / segments;
    seg.to = last * (k + 1) / segments;
    if (seg.to == seg.from) continue;  // more segments than steps
    for (const auto* s : stages) {
      double sum = 0;
      int n = 0;
      for (const auto& l : s->lines) {
        const auto step = l.at("step").get<int64_t>();
        if (step > seg.from && step <= seg.to) sum += l.at("loss").get<double>(), ++n;
      }
      seg.means.push_back(n ? sum / n : std::numeric_limits<double>::quiet_NaN());
    }
    out.push_back(std::move(seg));
  }
  return out;
}

// ------------------------------------------------------------------ the report

namespace {

std::string num(double v, int decimals = 4) {
  return std::isfinite(v) ? fmt::format("{:.{}f}", v, decimals) : std::string("-");
}

// The last value of `key` logged by a stage (NaN if never).
double last_value(const StageCurve& s, const char* key) {
  for (auto it = s.lines.rbegin(); it != s.lines.rend(); ++it)
    if (it->contains(key) && (*it)[key].is_number()) return (*it)[key].get<double>();
  return std::numeric_limits<double>::quiet_NaN();
}

double median_of(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Series labels: the stage's label, with its directory when two stages share one.
std::vector<std::string> series_labels(const std::vector<const StageCurve*>& stages) {
  std::map<std::string, int> count;
  for (const auto* s : stages) ++count[s->label()];
  std::vector<std::string> out;
  for (const auto* s : stages) out.push_back(count[s->label()] > 1 ? s->label() + " (" + s->dir + ")" : s->label());
  return out;
}

std::string timings_section(const RunContents& run) {
  if (run.timings.empty()) return "";
  std::string md = "## Pipeline wall time\n\n| Step | Seconds |\n|---|---:|\n";
  double total = 0;
  for (const auto& [name, s] : run.timings) {
    md += fmt::format("| {} | {:.1f} |\n", name, s);
    total += s;
  }
  return md + fmt::format("| **Total** | **{:.1f}** |\n", total);
}

std::string training_section(const RunContents& run) {
  if (run.stages.empty()) return "";
  std::string md =
      "## Training\n\n| Stage | Type | Compressor | Steps | First logged loss | Last logged loss | Eval loss | "
      "ms/step (median) |\n|---|---|---|---:|---:|---:|---:|---:|\n";
  for (const auto& s : run.stages) {
    std::vector<double> ms;
    for (const auto& l : s.lines)
      if (l.contains("ms")) ms.push_back(l["ms"].get<double>());
    const bool any = !s.lines.empty();
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} |\n", s.dir, s.type, s.type == "lm" ? "-" : s.label(),
                      any ? s.lines.back().at("step").get<int64_t>() : 0,
                      any ? num(s.lines.front().at("loss").get<double>()) : "-",
                      any ? num(s.lines.back().at("loss").get<double>()) : "-", num(last_value(s, "eval_loss")),
                      num(median_of(ms), 0));
  }
  return md;
}

std::vector<const StageCurve*> stages_of_type(const RunContents& run, const std::string& type) {
  std::vector<const StageCurve*> out;
  for (const auto& s : run.stages)
    if (s.type == type) out.push_back(&s);
  return out;
}

constexpr int kSegments = 5;

std::string ae_segments_section(const RunContents& run) {
  const auto ae = stages_of_type(run, "ae");
  if (ae.size() < 2) return "";
  const auto labels = series_labels(ae);
  std::string md = fmt::format("### Autoencoder loss at equal steps (mean of the logged losses in each {}th)\n\n| Steps |",
                               kSegments);
  std::string rule = "|---|";
  for (const auto& l : labels) md += " " + l + " |", rule += "---:|";
  md += "\n" + rule + "\n";
  for (const auto& seg : segment_means(ae, kSegments)) {
    md += fmt::format("| {}-{} |", seg.from + 1, seg.to);
    for (double m : seg.means) md += " " + num(m) + " |";
    md += "\n";
  }
  return md;
}

struct PlotFile {
  std::string file, caption;
  SvgPlot plot;
};

std::vector<PlotFile> make_plots(const RunContents& run) {
  const std::vector<std::pair<std::string, std::string>> kinds = {
      {"ae", "Autoencoder pretraining loss"}, {"lm", "Decoder pretraining (LM) loss"},
      {"keft", "KEFT loss"}, {"ft", "Fine-tuning loss"}};
  std::vector<PlotFile> out;
  for (const auto& [type, title] : kinds) {
    const auto stages = stages_of_type(run, type);
    const auto labels = series_labels(stages);
    PlotFile f{"loss_" + type + ".svg", title, {title, "step", "training loss (nats / target token)", {}}};
    for (size_t i = 0; i < stages.size(); ++i) {
      PlotSeries s{labels[i], {}};
      for (const auto& l : stages[i]->lines) s.points.emplace_back(l.at("step").get<double>(), l.at("loss").get<double>());
      if (!s.points.empty()) f.plot.series.push_back(std::move(s));
    }
    if (!f.plot.series.empty()) out.push_back(std::move(f));
  }
  return out;
}

std::string eval_section(const RunContents& run) {
  if (run.evals.empty()) return "";
  std::string md = "## Evaluation\n\n";
  std::vector<EvalResult> all;
  for (const auto& f : run.evals) {
    const auto& o = f.options;
    int64_t examples = 0;
    for (const auto& r : f.results)
      for (const auto& row : r.rows) examples = std::max(examples, row.examples);
    md += fmt::format("- `{}`: task {}, {} examples, greedy, at most {} new tokens, repetition penalty {}, context cut to {} tokens\n",
                      f.path, o.value("task", std::string("?")), examples, o.value("max_new_tokens", int64_t{0}),
                      o.value("repetition_penalty", 0.0), o.value("max_context_tokens", int64_t{0}));
    all.insert(all.end(), f.results.begin(), f.results.end());
  }
  return md + "\n" + render_table(all);
}

std::string latency_section(const RunContents& run) {
  if (run.latency.empty()) return "";
  std::string md = "## Inference latency\n\n";
  for (const auto& f : run.latency) {
    const auto& s = f.report.setup;
    md += fmt::format("`{}`: device {}, dtype {}, batch {}, {} context tokens, {} prompt tokens, {} new tokens, "
                      "median of {} runs\n\n",
                      f.path, s.value("device", std::string("?")), s.value("dtype", std::string("?")),
                      s.value("batch", int64_t{0}), s.value("context_tokens", int64_t{0}),
                      s.value("prompt_tokens", int64_t{0}), s.value("new_tokens", int64_t{0}),
                      s.value("repeats", int64_t{0}));
    md += f.report.table() + "\n";
  }
  return md;
}

const EvalRow* find_row(const EvalResult& r, const std::string& method, int64_t rate) {
  for (const auto& row : r.rows)
    if (row.method == method && row.rate == rate) return &row;
  return nullptr;
}

std::string higher_lower(double a, double b) { return a > b ? "higher" : a < b ? "lower" : "equal"; }

// Plain statements comparing what the GMSA paper compares, computed from the rows above.
std::string comparisons_section(const RunContents& run) {
  std::vector<std::string> items;
  const auto ae = stages_of_type(run, "ae");
  std::vector<const StageCurve*> pair;
  for (const char* m : {"gmsa", "tcp"})
    for (const auto* s : ae)
      if (s->method == m) {
        pair.push_back(s);
        break;
      }
  if (pair.size() == 2) {
    const auto segs = segment_means(pair, kSegments);
    int below = 0, compared = 0;  // segments where both logged a step
    for (const auto& seg : segs)
      if (std::isfinite(seg.means[0]) && std::isfinite(seg.means[1])) ++compared, below += seg.means[0] < seg.means[1];
    if (compared > 0)
      items.push_back(fmt::format("Autoencoder loss: GMSA below TCP in {} of {} step segments; last segment GMSA {} vs TCP {}.",
                                  below, compared, num(segs.back().means[0]), num(segs.back().means[1])));
  }
  for (const auto& f : run.evals)
    for (const auto& r : f.results) {
      std::set<int64_t> rates;
      for (const auto& row : r.rows)
        if (row.rate > 0) rates.insert(row.rate);
      for (int64_t rate : rates) {
        const auto *g = find_row(r, "gmsa", rate), *t = find_row(r, "tcp", rate), *cb = find_row(r, "closed-book", 0);
        if (r.task == "restore" && g && t)
          items.push_back(fmt::format("{} restoration BLEU at {}x: GMSA {:.2f} vs TCP {:.2f} (GMSA {}).", r.dataset, rate,
                                      g->bleu, t->bleu, higher_lower(g->bleu, t->bleu)));
        if (r.task == "qa" && g && cb)
          items.push_back(fmt::format("{} QA accuracy: GMSA@{}x {:.2f}% vs closed-book {:.2f}% ({:+.2f} points).",
                                      r.dataset, rate, 100 * g->acc, 100 * cb->acc, 100 * (g->acc - cb->acc)));
      }
    }
  if (items.empty()) return "";
  std::string md = "## Comparisons\n\n";
  for (const auto& i : items) md += "- " + i + "\n";
  return md;
}

}  // namespace

Report build_report(const RunContents& run, const std::string& title) {
  Report rep;
  const auto plots = make_plots(run);
  std::string plot_md;
  if (!plots.empty()) plot_md = "### Training curves\n\n";
  for (const auto& p : plots) {
    rep.svgs[p.file] = render_svg_plot(p.plot);
    plot_md += fmt::format("![{}](plots/{})\n\n", p.caption, p.file);
  }
  // (text, printed on the console too)
  const std::vector<std::pair<std::string, bool>> sections = {
      {timings_section(run), true},  {training_section(run), true},  {ae_segments_section(run), true},
      {plot_md, false},              {eval_section(run), true},      {latency_section(run), true},
      {comparisons_section(run), true}};
  rep.markdown = fmt::format("# Run report: {}\n\nEvery number below is read from the files of this run "
                             "directory (`gmsa report`).\n",
                             title);
  for (const auto& [text, console] : sections) {
    if (text.empty()) continue;
    rep.markdown += "\n" + text;
    if (console) rep.console += (rep.console.empty() ? "" : "\n") + text;
  }
  return rep;
}

void write_report(const Report& report, const std::string& out) {
  const auto dir = fs::path(out).parent_path();
  if (!report.svgs.empty()) fs::create_directories(dir / "plots");
  for (const auto& [name, svg] : report.svgs) write_file_atomic((dir / "plots" / name).string(), svg);
  write_file_atomic(out, report.markdown);
}

}  // namespace gmsa
