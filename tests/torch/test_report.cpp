// `gmsa report`: tick choice and SVG geometry derived by hand, segment means, and a whole
// report built from a small run directory written with the real eval / bench writers.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "gmsa/eval/report.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"
#include "test_util.h"

namespace {

using namespace gmsa;
namespace fs = std::filesystem;

void expect_ticks(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << i;
}

TEST(ReportPlot, NiceTicks) {
  // [0, 9.3]: 9.3/5 = 1.86 -> step 2 (the first of 1, 2, 5 x 10^0 >= 1.86); 0 .. ceil(4.65)*2.
  expect_ticks(nice_ticks(0, 9.3), {0, 2, 4, 6, 8, 10});
  // [0.23, 0.71]: 0.096 -> 1, 2, 5 x 0.01 are all smaller -> step 0.1; floor(2.3) .. ceil(7.1).
  expect_ticks(nice_ticks(0.23, 0.71), {0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8});
  // A flat value v gets [0.9 v, 1.1 v] = [2.7, 3.3]: 0.12 -> step 0.2; 13 x 0.2 .. 17 x 0.2.
  expect_ticks(nice_ticks(3, 3), {2.6, 2.8, 3.0, 3.2, 3.4});
  EXPECT_THROW(nice_ticks(2, 1), Error);
}

TEST(ReportPlot, SvgMapsPointsOntoTheTickRange) {
  SvgPlot p{"Loss <ae>", "step", "loss", {{"GMSA", {{0, 0}, {5, 0.45}, {10, 0.9}}}, {"TCP", {{0, 0.9}}}}};
  const auto svg = render_svg_plot(p);
  // Plot area: x 64 .. 640-16 = 624 (w 560), y 36 .. 400-48 = 352 (h 316). Ticks: x 0..10,
  // y 0..1 (0.9/5 = 0.18 -> step 0.2). (5, 0.45) -> x 64 + 0.5*560 = 344, y 36 + 0.55*316 = 209.8.
  EXPECT_NE(svg.find("<polyline points=\"64.00,352.00 344.00,209.80 624.00,67.60\""), std::string::npos) << svg;
  EXPECT_NE(svg.find("<polyline points=\"64.00,67.60\""), std::string::npos);
  EXPECT_NE(svg.find(">Loss &lt;ae&gt;</text>"), std::string::npos);  // escaped title
  for (const char* tick : {">0.2</text>", ">0.8</text>", ">1</text>", ">10</text>", ">GMSA</text>", ">TCP</text>"})
    EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  EXPECT_EQ(svg.rfind("</svg>\n"), svg.size() - 7);
  EXPECT_THROW(render_svg_plot(SvgPlot{"empty", "x", "y", {{"a", {}}}}), Error);
}

StageCurve curve(const std::vector<std::pair<int64_t, double>>& steps) {
  StageCurve s;
  for (auto [step, loss] : steps) s.lines.push_back({{"step", step}, {"loss", loss}});
  return s;
}

TEST(ReportSegments, MeansOverEqualStepRanges) {
  auto a = curve({{2, 10}, {4, 8}, {6, 6}, {8, 4}, {10, 2}});
  auto b = curve({{5, 9}, {10, 7}, {12, 1}});  // step 12 lies past a's end: never counted
  auto two = segment_means({&a, &b}, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].from, 0);
  EXPECT_EQ(two[0].to, 5);
  EXPECT_DOUBLE_EQ(two[0].means[0], 9);  // steps 2, 4
  EXPECT_DOUBLE_EQ(two[1].means[0], 4);  // steps 6, 8, 10
  EXPECT_DOUBLE_EQ(two[0].means[1], 9);
  EXPECT_DOUBLE_EQ(two[1].means[1], 7);
  // Thirds of 10 steps: (0, 3], (3, 6], (6, 10]; b logged nothing in the first.
  auto three = segment_means({&a, &b}, 3);
  ASSERT_EQ(three.size(), 3u);
  EXPECT_EQ(three[1].to, 6);
  EXPECT_DOUBLE_EQ(three[0].means[0], 10);
  EXPECT_TRUE(std::isnan(three[0].means[1]));
  EXPECT_DOUBLE_EQ(three[1].means[0], 7);
  EXPECT_DOUBLE_EQ(three[2].means[1], 7);
}

// A run directory as the quickstart leaves it, with the real writers of eval and bench.
struct RunFixture {
  gmsa::testing::TempDir dir;
  EvalResult restore{"restore", "corpus_eval", {}, {}}, qa{"qa", "qa_eval", {}, {}};
  BenchInferReport bench;

  void stage(const std::string& name, const std::string& yaml, const std::string& metrics) {
    fs::create_directories(dir / name);
    std::ofstream(dir / (name + "/config.yaml")) << yaml;
    std::ofstream(dir / (name + "/metrics.jsonl")) << metrics;
  }

  RunFixture() {
    stage("gmsa", "stage: {type: ae}\ncompressor: {method: gmsa}\n",
          "{\"step\": 5, \"loss\": 4.0, \"ms\": 10}\n{\"step\": 10, \"loss\": 2.0, \"ms\": 30, \"eval_loss\": 2.5}\n");
    stage("tcp", "stage: {type: ae}\ncompressor: {method: tcp}\n",
          "{\"step\": 5, \"loss\": 5.0, \"ms\": 20}\n{\"step\": 10, \"loss\": 4.5, \"ms\": 20}\n");
    stage("lm", "stage: {type: lm}\n", "{\"step\": 1, \"loss\": 7.0}\n{\"step\": 2, \"loss\": 6.0}\n");
    // Checkpoints are not searched: a broken file there must not matter.
    fs::create_directories(dir / "gmsa/checkpoints/step-10");
    std::ofstream(dir / "gmsa/checkpoints/step-10/metrics.jsonl") << "not json\n";

    EvalRow g4{"gmsa", 4, 3}, t4{"tcp", 4, 3}, cb{"closed-book", 0, 3}, q4{"gmsa", 4, 3};
    g4.bleu = 40, t4.bleu = 20, g4.prefix_em = 0.5, g4.ppl = 3.25;
    cb.acc = 0.1, q4.acc = 0.6, q4.em = 0.5, q4.f1 = 0.55;
    restore.rows = {g4, t4};
    qa.rows = {cb, q4};
    EvalOptions ro, qo;
    qo.task = "qa", qo.max_new_tokens = 16;
    write_eval_outputs(dir / "eval/restore", {restore}, ro);
    write_eval_outputs(dir / "eval/qa", {qa}, qo);

    bench.setup = {{"device", "cpu"}, {"dtype", "fp32"}, {"batch", 1}, {"context_tokens", 384},
                   {"prompt_tokens", 16}, {"new_tokens", 8}, {"repeats", 3}};
    BenchCase orig{"original", 0, 401, {}, {0, 50, 70, 120, 8}, 66.7, 1 << 20};
    BenchCase c4{"gmsa@4x", 4, 112, {}, {10, 20, 40, 70, 8}, 114.3, 1 << 20};
    bench.cases = {orig, c4};
    write_file_atomic(dir / "eval/latency.json", bench.to_json().dump(2));
    write_file_atomic(dir / "timings.tsv", "synthetic data\t1.5\ntokenizer\t2.0\n");
  }
};

TEST(Report, ReadsEveryOutputOfARun) {
  RunFixture fx;
  const auto run = scan_run(fx.dir.path.string());
  ASSERT_EQ(run.stages.size(), 3u);  // sorted by directory; the checkpoint copy skipped
  EXPECT_EQ(run.stages[0].dir, "gmsa");
  EXPECT_EQ(run.stages[0].label(), "GMSA");
  EXPECT_EQ(run.stages[1].label(), "LM");
  EXPECT_EQ(run.stages[2].label(), "TCP");
  ASSERT_EQ(run.evals.size(), 2u);
  EXPECT_EQ(run.evals[0].path, "eval/qa/metrics.json");
  ASSERT_EQ(run.latency.size(), 1u);
  ASSERT_EQ(run.timings.size(), 2u);

  const auto rep = build_report(run, "runs/x");
  const auto& md = rep.markdown;
  EXPECT_NE(md.find("| tokenizer | 2.0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| **Total** | **3.5** |"), std::string::npos);
  // gmsa: first loss 4, last 2, eval loss 2.5, median of 10 and 30 ms = 20.
  EXPECT_NE(md.find("| gmsa | ae | GMSA | 10 | 4.0000 | 2.0000 | 2.5000 | 20 |"), std::string::npos);
  EXPECT_NE(md.find("| lm | lm | - | 2 | 7.0000 | 6.0000 | - | - |"), std::string::npos);
  // Fifths of 10 steps: (0,2] and (4,6] ... only (2,4]->none, (4,6] holds step 5, (8,10] step 10.
  EXPECT_NE(md.find("| 5-6 | 4.0000 | 5.0000 |"), std::string::npos);
  EXPECT_NE(md.find("| 1-2 | - | - |"), std::string::npos);
  // The tables are the eval and bench renderings of what was written.
  EXPECT_NE(md.find(render_table({fx.qa, fx.restore})), std::string::npos);
  EXPECT_NE(md.find(fx.bench.table()), std::string::npos);
  EXPECT_NE(md.find("GMSA below TCP in 2 of 2 step segments"), std::string::npos) << md;
  EXPECT_NE(md.find("restoration BLEU at 4x: GMSA 40.00 vs TCP 20.00 (GMSA higher)"), std::string::npos);
  EXPECT_NE(md.find("GMSA@4x 60.00% vs closed-book 10.00% (+50.00 points)"), std::string::npos);
  EXPECT_NE(md.find("![Autoencoder pretraining loss](plots/loss_ae.svg)"), std::string::npos);
  EXPECT_EQ(rep.console.find("plots/"), std::string::npos);
  EXPECT_NE(rep.console.find(render_table({fx.qa, fx.restore})), std::string::npos);

  ASSERT_EQ(rep.svgs.size(), 2u);  // ae and lm; no keft stage
  const auto& ae = rep.svgs.at("loss_ae.svg");
  EXPECT_NE(ae.find(">GMSA</text>"), std::string::npos);
  EXPECT_NE(ae.find(">TCP</text>"), std::string::npos);

  write_report(rep, fx.dir / "out/report.md");
  EXPECT_EQ(read_file(fx.dir / "out/report.md"), md);
  EXPECT_EQ(read_file(fx.dir / "out/plots/loss_ae.svg"), ae);
}

TEST(Report, MalformedFilesNameTheirLocation) {
  RunFixture fx;
  write_file_atomic(fx.dir / "timings.tsv", "synthetic data\t1.5\ntokenizer 2.0\n");
  try {
    scan_run(fx.dir.path.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("timings.tsv:2:"), std::string::npos) << e.what();
  }
  fs::remove(fx.dir / "timings.tsv");
  fs::remove(fx.dir / "tcp/config.yaml");
  EXPECT_THROW(scan_run(fx.dir.path.string()), Error);
  EXPECT_THROW(scan_run(fx.dir / "missing"), Error);
}

}  // namespace
