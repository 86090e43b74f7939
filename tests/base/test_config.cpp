#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gmsa/config/config.h"
#include "gmsa/util/error.h"

namespace fs = std::filesystem;
using gmsa::load_config;
using gmsa::RunConfig;

namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "gmsa_config_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `text` to dir/name and returns the path.
  std::string write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }

  // The message of the gmsa::Error that loading throws (fails the test if none).
  std::string error_of(const std::string& file, const std::vector<std::string>& sets = {}) {
    try {
      load_config(file, sets);
    } catch (const gmsa::Error& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line: " << msg;
      return msg;
    }
    ADD_FAILURE() << "expected an error loading " << file;
    return "";
  }

  fs::path dir_;
};

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << (msg)

}  // namespace

TEST_F(ConfigTest, EmptyFileGivesDefaults) {
  RunConfig c = load_config(write("empty.yaml", ""));
  EXPECT_EQ(c.run.name, "gmsa");
  EXPECT_EQ(c.run.seed, 42);
  EXPECT_EQ(c.run.dtype, "fp32");
  EXPECT_EQ(c.model.init.num_kv_heads, 4);
  EXPECT_DOUBLE_EQ(c.model.init.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.compressor.lora.targets.size(), 7u);
  EXPECT_EQ(c.compressor.lora.targets.back(), "down_proj");
  EXPECT_EQ(c.data.rates, (std::vector<int64_t>{4, 8}));
  EXPECT_TRUE(c.data.rate_weights.empty());
  EXPECT_DOUBLE_EQ(c.optim.lr, 1e-4);
  EXPECT_EQ(c.schedule.type, "linear");
  EXPECT_EQ(c.train.progress, "auto");
  EXPECT_EQ(gmsa::effective_run_dir(c), "runs/gmsa");
  EXPECT_TRUE(c == RunConfig{});
}

TEST_F(ConfigTest, BaseInheritanceTwoLevelsAndDeepMerge) {
  write("a/root.yaml",
        "run: {name: root, seed: 1}\n"
        "optim: {lr: 0.001, clip: 1}\n"
        "data: {rates: [2, 4, 8]}\n");
  write("a/mid.yaml", "base: root.yaml\noptim:\n  lr: 0.002\n");  // relative to a/
  std::string top = write("top.yaml",
                          "base: a/mid.yaml\n"
                          "run:\n  seed: 7\n"
                          "data:\n  rates: [16]\n");
  RunConfig c = load_config(top);
  EXPECT_EQ(c.run.name, "root");          // from the grandparent
  EXPECT_EQ(c.run.seed, 7);               // the child wins, the sibling key survives
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.002);    // the middle file wins over the root
  EXPECT_DOUBLE_EQ(c.optim.clip, 1.0);    // int accepted for a float
  EXPECT_EQ(c.data.rates, (std::vector<int64_t>{16}));  // sequences replace, not append
}

TEST_F(ConfigTest, OverridesOfNestedKeyListAndString) {
  std::string f = write("c.yaml", "model:\n  init:\n    hidden_size: 32\n");
  RunConfig c = load_config(f, {"model.init.num_layers=3", "data.rates=[4,16]", "optim.lr=1e-3",
                                "run.name=x", "data.ae_prompt=Restate: it", "data.shuffle=false",
                                "run.dir="});
  EXPECT_EQ(c.model.init.hidden_size, 32);
  EXPECT_EQ(c.model.init.num_layers, 3);
  EXPECT_EQ(c.data.rates, (std::vector<int64_t>{4, 16}));
  EXPECT_DOUBLE_EQ(c.optim.lr, 1e-3);
  EXPECT_EQ(c.run.name, "x");
  EXPECT_EQ(c.data.ae_prompt, "Restate: it");  // string values are taken verbatim
  EXPECT_FALSE(c.data.shuffle);
  EXPECT_EQ(c.run.dir, "");

  // A mapping value merges: hidden_size from the file survives.
  RunConfig m = load_config(f, {"model.init={num_heads: 2}"});
  EXPECT_EQ(m.model.init.num_heads, 2);
  EXPECT_EQ(m.model.init.hidden_size, 32);
}

TEST_F(ConfigTest, UnknownKeyNamesFileLineKeyAndSuggestion) {
  std::string f = write("u.yaml", "run:\n  name: x\noptim:\n  lr: 1.0e-4\n  lrr: 2\n");
  std::string msg = error_of(f);
  EXPECT_HAS(msg, f + ":5:");
  EXPECT_HAS(msg, "`optim.lrr`");
  EXPECT_HAS(msg, "did you mean `optim.lr`?");

  // A key at the wrong level and a missing section level still find their option.
  EXPECT_HAS(error_of(write("u2.yaml", "lr: 1\n")), "did you mean `optim.lr`?");
  EXPECT_HAS(error_of(write("u3.yaml", "model:\n  hidden_size: 1\n")),
             "did you mean `model.init.hidden_size`?");
  EXPECT_HAS(error_of(write("u4.yaml", "optm:\n  lr: 1\n")), "did you mean `optim`?");

  std::string o = error_of(write("ok.yaml", ""), {"data.ratez=[1]"});
  EXPECT_HAS(o, "--set data.ratez=[1]");
  EXPECT_HAS(o, "did you mean `data.rates`?");
}

TEST_F(ConfigTest, WrongTypes) {
  std::string msg = error_of(write("t1.yaml", "optim:\n  lr: fast\n"));
  EXPECT_HAS(msg, "t1.yaml:2:");
  EXPECT_HAS(msg, "`optim.lr`");
  EXPECT_HAS(msg, "expects a float");

  msg = error_of(write("t2.yaml", "stage:\n  steps: 1e-4\n"));
  EXPECT_HAS(msg, "`stage.steps` expects an int");
  EXPECT_HAS(msg, "a float");

  msg = error_of(write("t3.yaml", "data:\n  rates: {a: 1}\n"));
  EXPECT_HAS(msg, "t3.yaml:2:");
  EXPECT_HAS(msg, "expects a list of int, got a mapping");

  msg = error_of(write("t4.yaml", "data:\n  rates: [4, 2.5]\n"));
  EXPECT_HAS(msg, "`data.rates[1]` expects an int");

  EXPECT_HAS(error_of(write("t5.yaml", "optim: 3\n")), "`optim` is a section");
  EXPECT_HAS(error_of(write("t6.yaml", "data:\n  shuffle: maybe\n")), "expects a bool");
  EXPECT_HAS(error_of(write("t7.yaml", "run:\n  seed: \"42\"\n")), "expects an int");  // quoted
  EXPECT_HAS(error_of(write("t8.yaml", "run:\n  name: [a]\n")), "expects a string");
}

TEST_F(ConfigTest, OutOfRange) {
  std::string msg = error_of(write("r1.yaml", "\noptim:\n  lr: 0\n"));
  EXPECT_HAS(msg, "r1.yaml:3:");
  EXPECT_HAS(msg, "`optim.lr` = 0");
  EXPECT_HAS(msg, "must be > 0");

  EXPECT_HAS(error_of(write("r2.yaml", "compressor:\n  lora:\n    dropout: 1\n")),
             "must be in [0, 1)");
  EXPECT_HAS(error_of(write("r3.yaml", "data:\n  rates: [4, 0]\n")), "`data.rates[1]` = 0");
  EXPECT_HAS(error_of(write("r4.yaml", "run:\n  threads: -1\n")), "must be >= 0");
  EXPECT_HAS(error_of(write("r5.yaml", "schedule:\n  warmup_ratio: 1.5\n")), "in [0, 1]");
  // Relations between options.
  EXPECT_HAS(error_of(write("r6.yaml", "data:\n  rates: [4, 8]\n  rate_weights: [1]\n")),
             "has 1 weights for 2 rates");
  EXPECT_HAS(error_of(write("r7.yaml", "data:\n  rate_weights: [0, 0]\n")), "all zero");
  EXPECT_EQ(load_config(write("r8.yaml", "data:\n  rate_weights: [0, 3]\n")).data.rate_weights,
            (std::vector<double>{0, 3}));
}

TEST_F(ConfigTest, BadEnumAndPattern) {
  std::string msg = error_of(write("e.yaml", "stage:\n  type: pretrain\n"));
  EXPECT_HAS(msg, "e.yaml:2:");
  EXPECT_HAS(msg, "`stage.type` = `pretrain` is not one of ae | keft | ft | lm");
  EXPECT_HAS(error_of(write("d.yaml", "run:\n  device: gpu\n")), "auto | cpu | cuda | cuda:N");
  EXPECT_EQ(load_config(write("d2.yaml", "run:\n  device: cuda:1\n")).run.device, "cuda:1");
}

TEST_F(ConfigTest, MissingBase) {
  std::string f = write("m.yaml", "\nbase: nothere.yaml\n");
  std::string msg = error_of(f);
  EXPECT_HAS(msg, f + ":2:");
  EXPECT_HAS(msg, "base file `nothere.yaml` not found");
  EXPECT_HAS(msg, (dir_ / "nothere.yaml").string());
}

TEST_F(ConfigTest, BaseCycle) {
  write("x.yaml", "base: y.yaml\n");
  write("y.yaml", "base: x.yaml\n");
  std::string msg = error_of((dir_ / "x.yaml").string());
  EXPECT_HAS(msg, "base cycle");
  EXPECT_HAS(msg, "y.yaml");
  EXPECT_HAS(error_of(write("self.yaml", "base: self.yaml\n")), "base cycle");
}

TEST_F(ConfigTest, MalformedYaml) {
  std::string f = write("bad.yaml", "run:\n  name: x\ndata:\n  rates: [4, 8\n");
  std::string msg = error_of(f);
  EXPECT_HAS(msg, "malformed YAML");
  EXPECT_HAS(msg, f + ":5:");  // yaml-cpp notices at the end of input, line 5
  EXPECT_HAS(error_of(write("dup.yaml", "run:\n  seed: 1\n  seed: 2\n")),
             "dup.yaml:3: duplicate key `seed` (first at line 2)");
  EXPECT_HAS(error_of(write("ok2.yaml", ""), {"data.rates=[1,"}), "malformed value");
}

TEST_F(ConfigTest, DumpReloadRoundTrip) {
  RunConfig c;
  c.run.name = "quote \" back\\slash: {x} # not a comment";
  c.run.seed = -3;
  c.model.init.rope_theta = 500000;
  c.model.init.rms_norm_eps = 1.234567890123e-6;
  c.model.init.tie_word_embeddings = false;
  c.compressor.lora.targets = {"q_proj", "a b", "123", "true"};
  c.data.ae_prompt = "line1\nline2\ttab";
  c.data.rates = {1, 2, 3};
  c.data.rate_weights = {0.1, 0.2, 0.7};
  c.optim.lr = 0.1 + 0.2;  // not exactly 0.3: needs all 17 digits to survive
  c.stage.train_patterns = {R"(layers\.\d+\.mlp)"};
  std::string text = gmsa::dump_config(c);
  EXPECT_HAS(text, "optim:\n  lr: ");
  RunConfig back = load_config(write("dump.yaml", text));
  EXPECT_TRUE(back == c);
  EXPECT_EQ(back.run.name, c.run.name);
  EXPECT_EQ(back.optim.lr, 0.1 + 0.2);
  EXPECT_EQ(back.compressor.lora.targets[3], "true");
  EXPECT_EQ(gmsa::dump_config(back), text);
  back.optim.beta2 = 0.99;  // == sees a single changed field
  EXPECT_FALSE(back == c);
}

TEST_F(ConfigTest, ChainExpansion) {
  std::string f = write("chain.yaml",
                        "run: {name: two}\n"
                        "optim: {lr: 0.001}\n"
                        "chain:\n"
                        "  - stage: {type: ae, steps: 100}\n"
                        "  - stage: {type: ft}\n"
                        "    optim: {lr: 0.0001}\n");
  gmsa::LoadedConfig l = gmsa::load_config_stages(f, {"stage.batch_size=8", "chain.1.stage.steps=5"});
  ASSERT_EQ(l.stages.size(), 2u);
  EXPECT_EQ(l.top.stage.type, "ae");  // the default, chain elements do not touch the top
  EXPECT_EQ(l.stages[0].stage.type, "ae");
  EXPECT_EQ(l.stages[0].stage.steps, 100);
  EXPECT_DOUBLE_EQ(l.stages[0].optim.lr, 0.001);
  EXPECT_EQ(l.stages[1].stage.type, "ft");
  EXPECT_EQ(l.stages[1].stage.steps, 5);
  EXPECT_DOUBLE_EQ(l.stages[1].optim.lr, 0.0001);
  for (const auto& s : l.stages) {
    EXPECT_EQ(s.run.name, "two");
    EXPECT_EQ(s.stage.batch_size, 8);  // a top-level override reaches every stage
  }
  EXPECT_EQ(gmsa::load_config_stages(write("nochain.yaml", "")).stages.size(), 1u);

  std::string bad = write("badchain.yaml", "chain:\n  - optim: {lr: 0.001}\n  - optim: {lr: -1}\n");
  try {
    gmsa::load_config_stages(bad);
    FAIL() << "expected an error";
  } catch (const gmsa::Error& e) {
    EXPECT_HAS(std::string(e.what()), bad + ":3:");
    EXPECT_HAS(std::string(e.what()), "chain stage 1");
  }
  EXPECT_HAS(error_of(f, {"chain.5.optim.lr=1"}), "index 5 is out of range");
}

TEST_F(ConfigTest, OptionsMarkdownListsEveryDumpedKey) {
  std::string md = gmsa::options_markdown();
  EXPECT_HAS(md, "| `optim.lr` | float | `0.0001` | > 0 |");
  EXPECT_HAS(md, "| `run.dtype` | enum | `\"fp32\"` | fp32 \\| bf16 |");
  // 9 sections, 71 options: every line of a default dump is a section or an option row.
  std::string dump = gmsa::dump_config(RunConfig{});
  size_t lines = std::count(dump.begin(), dump.end(), '\n');
  size_t rows = std::count(md.begin(), md.end(), '\n') - 2;
  EXPECT_EQ(rows, 71u);
  EXPECT_EQ(lines, rows + 9 + 4);  // + top sections + model.init, lora, lsa, tcp
}

TEST_F(ConfigTest, TestTinyConfigLoads) {
  const char* src = std::getenv("GMSA_SOURCE_DIR");
  if (!src) GTEST_SKIP() << "GMSA_SOURCE_DIR is not set (ctest sets it)";
  RunConfig c = load_config(std::string(src) + "/configs/test_tiny.yaml");
  EXPECT_EQ(c.run.name, "test_tiny");
  EXPECT_EQ(c.model.init.num_layers, 2);
}
