// Benchmark converters (data/convert.h) on fixtures written here, plus real files when
// GMSA_DATA_DIR is set.
#include <gtest/gtest.h>

#include "temp_files.h"
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "gmsa/data/convert.h"
#include "gmsa/data/qa.h"
#include "gmsa/util/error.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace gmsa;

namespace {

class ConvertTest : public TempFilesTest {
 protected:
  std::string write_jsonl(const std::string& name, const std::vector<json>& records) {
    std::string text;
    for (const auto& r : records) text += r.dump() + "\n";
    return write(name, text);
  }
  std::string write_jsonl_gz(const std::string& name, const std::vector<json>& records) {
    std::string text;
    for (const auto& r : records) text += r.dump() + "\n";
    std::string path = (fs::path(dir_) / name).string();
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
    gzclose(f);
    return path;
  }
};

// Splits a rendered input back into documents (each starts with "Document [").
std::vector<std::string> split_docs(const std::string& input) {
  std::vector<std::string> docs;
  size_t start = 0;
  for (;;) {
    size_t next = input.find("\nDocument [", start);
    docs.push_back(input.substr(start, next == std::string::npos ? next : next - start));
    if (next == std::string::npos) return docs;
    start = next + 1;
  }
}

// The title inside "Document [i](Title: T) text".
std::string title_of(const std::string& doc) {
  size_t a = doc.find("(Title: ") + 8;
  return doc.substr(a, doc.find(") ", a) - a);
}

std::vector<std::string> titles(const QaExample& ex) {
  std::vector<std::string> out;
  for (const auto& d : split_docs(ex.input)) out.push_back(title_of(d));
  return out;
}

ConvertOptions with_position(const std::string& pos, int64_t num_docs = 0) {
  ConvertOptions o;
  o.gold_position = GoldPosition::parse(pos);
  o.num_docs = num_docs;
  return o;
}

// A Lost-in-the-Middle record: documents "<tag>-d0".."<tag>-d<n-1>", gold at `gold` (-1: none).
json nq_record(const std::string& tag, int n, int gold) {
  json ctxs = json::array();
  for (int i = 0; i < n; ++i) {
    std::string t = tag + "-d" + std::to_string(i);
    ctxs.push_back(
        {{"title", t}, {"text", "text of " + t}, {"hasanswer", i == gold}, {"isgold", i == gold}});
  }
  return {
      {"question", "question " + tag}, {"answers", {"ans " + tag, "alt", "alt"}}, {"ctxs", ctxs}};
}

}  // namespace

// ---------------------------------------------------------------- building blocks

TEST(ConvertBlocks, TemplateFormatting) {
  std::map<std::string, std::string> v = {{"a", "1"}, {"bb", "two"}};
  EXPECT_EQ(format_template("x{a}-{bb}{a}", v, "t"), "x1-two1");
  EXPECT_EQ(format_template("{{a}} {{{a}}}", v, "t"), "{a} {1}");
  try {
    format_template("{c}", v, "--doc-template");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "--doc-template: unknown placeholder {c} (known: {a}, {bb})");
  }
  EXPECT_THROW(format_template("{a", v, "t"), Error);
  EXPECT_THROW(format_template("a}", v, "t"), Error);
}

TEST(ConvertBlocks, GoldPlacementAndTruncation) {
  auto make = [](int n, std::set<int> gold) {
    std::vector<Document> d;
    for (int i = 0; i < n; ++i) d.push_back({"t" + std::to_string(i), "", gold.count(i) > 0});
    return d;
  };
  auto names = [](const std::vector<Document>& d) {
    std::string s;
    for (const auto& x : d) s += x.title + " ";
    return s;
  };
  std::mt19937_64 rng(1);
  struct Case {
    std::string pos;
    std::string want;
  };
  // Gold t2 among 5 documents: the 4 others keep their order; middle = (5-1)/2 = 2.
  for (const Case& c : {Case{"first", "t2 t0 t1 t3 t4 "}, Case{"last", "t0 t1 t3 t4 t2 "},
                        Case{"middle", "t0 t1 t2 t3 t4 "}, Case{"1", "t0 t2 t1 t3 t4 "},
                        Case{"keep", "t0 t1 t2 t3 t4 "}}) {
    auto d = make(5, {2});
    ASSERT_TRUE(place_gold(d, GoldPosition::parse(c.pos), rng)) << c.pos;
    EXPECT_EQ(names(d), c.want) << c.pos;
  }
  // Lost in the Middle's middle positions: gold_at_4 of 10 documents, gold_at_9 of 20.
  for (int n : {10, 20}) {
    auto m = make(n, {0});
    ASSERT_TRUE(place_gold(m, GoldPosition::parse("middle"), rng));
    EXPECT_TRUE(m[static_cast<size_t>(n / 2 - 1)].gold) << n;
  }
  auto d = make(5, {2});
  EXPECT_FALSE(place_gold(d, GoldPosition::parse("5"), rng));  // 4 others: start 0..4
  EXPECT_EQ(names(d), "t0 t1 t2 t3 t4 ");
  auto none = make(3, {});
  EXPECT_FALSE(place_gold(none, GoldPosition::parse("first"), rng));
  // Two golds move as a block in their order; middle of 6 with 2 gold starts at (6-2)/2 = 2.
  auto two = make(6, {0, 4});
  ASSERT_TRUE(place_gold(two, GoldPosition::parse("middle"), rng));
  EXPECT_EQ(names(two), "t1 t2 t0 t4 t3 t5 ");
  // Random start over [0, 4] for one gold of 5: every position occurs.
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    auto r = make(5, {0});
    place_gold(r, GoldPosition::parse("random"), rng);
    seen.insert(names(r));
  }
  EXPECT_EQ(seen.size(), 5u);
  // Truncation drops non-gold documents from the end only.
  auto t = make(6, {4});
  truncate_documents(t, 3);
  EXPECT_EQ(names(t), "t0 t1 t4 ");
  EXPECT_THROW(GoldPosition::parse("-1"), Error);
  EXPECT_THROW(GoldPosition::parse("centre"), Error);
}

TEST(ConvertBlocks, KvRecordsInLostInTheMiddleLayout) {
  // LitM: "{" before the first record, " " before the others, ",\n" between, "}" at the end.
  EXPECT_EQ(format_kv_records({{"k1", "v1"}, {"k2", "v2"}, {"k3", "v3"}}),
            "{\"k1\": \"v1\",\n \"k2\": \"v2\",\n \"k3\": \"v3\"}");
  EXPECT_EQ(format_kv_records({{"k", "v"}}), "{\"k\": \"v\"}");
}

TEST(ConvertBlocks, ContainsAnswerMatchesWholeWords) {
  EXPECT_TRUE(contains_answer("Born in PARIS, France.", {"paris"}));
  EXPECT_TRUE(contains_answer("the U.S. army", {"u s"}));
  EXPECT_FALSE(contains_answer("Parisian cafe", {"Paris"}));
  EXPECT_FALSE(contains_answer("anything", {"", "!"}));
}

// ---------------------------------------------------------------- NQ, Lost in the Middle files

TEST_F(ConvertTest, NqLitmKeepsFileOrderAndFormatsDocuments) {
  auto path = write_jsonl_gz("nq.jsonl.gz",
                             {nq_record("a", 5, 2), nq_record("b", 5, 0), nq_record("c", 5, -1)});
  ConvertResult r = convert_dataset(SourceFormat::NqLitm, path, {});
  ASSERT_EQ(r.examples.size(), 3u);
  EXPECT_EQ(r.stats.read, 3);
  EXPECT_EQ(r.stats.total_skipped(), 0);
  const QaExample& a = r.examples[0];
  EXPECT_EQ(a.id, "0");
  EXPECT_EQ(a.prompt, "question a");
  EXPECT_EQ(a.answers, (std::vector<std::string>{"ans a", "alt"}));  // duplicates removed
  auto docs = split_docs(a.input);
  ASSERT_EQ(docs.size(), 5u);
  EXPECT_EQ(docs[0], "Document [1](Title: a-d0) text of a-d0");
  EXPECT_EQ(docs[4], "Document [5](Title: a-d4) text of a-d4");
}

TEST_F(ConvertTest, NqLitmGoldPositionAndNumDocs) {
  auto path =
      write_jsonl("nq.jsonl", {nq_record("a", 5, 2), nq_record("b", 5, 0), nq_record("c", 5, -1)});
  auto first = convert_dataset(SourceFormat::NqLitm, path, with_position("first"));
  ASSERT_EQ(first.examples.size(), 2u);
  EXPECT_EQ(first.stats.skipped.at("no gold document"), 1);
  EXPECT_EQ(titles(first.examples[0]),
            (std::vector<std::string>{"a-d2", "a-d0", "a-d1", "a-d3", "a-d4"}));

  auto last = convert_dataset(SourceFormat::NqLitm, path, with_position("last"));
  EXPECT_EQ(titles(last.examples[1]),
            (std::vector<std::string>{"b-d1", "b-d2", "b-d3", "b-d4", "b-d0"}));

  auto middle = convert_dataset(SourceFormat::NqLitm, path, with_position("middle"));
  EXPECT_EQ(titles(middle.examples[1])[2], "b-d0");  // (5-1)/2

  auto index3 = convert_dataset(SourceFormat::NqLitm, path, with_position("3"));
  EXPECT_EQ(titles(index3.examples[0]),
            (std::vector<std::string>{"a-d0", "a-d1", "a-d3", "a-d2", "a-d4"}));

  // --num-docs 3 drops non-gold documents from the end; then index 3 no longer fits.
  auto cut = convert_dataset(SourceFormat::NqLitm, path, with_position("keep", 3));
  EXPECT_EQ(titles(cut.examples[0]), (std::vector<std::string>{"a-d0", "a-d1", "a-d2"}));
  EXPECT_EQ(titles(cut.examples[2]), (std::vector<std::string>{"c-d0", "c-d1", "c-d2"}));
  auto cut_last = convert_dataset(SourceFormat::NqLitm, path, with_position("last", 2));
  EXPECT_EQ(titles(cut_last.examples[0]), (std::vector<std::string>{"a-d0", "a-d2"}));
  auto too_far = convert_dataset(SourceFormat::NqLitm, path, with_position("3", 3));
  EXPECT_EQ(too_far.examples.size(), 0u);
  EXPECT_EQ(too_far.stats.skipped.at("gold position beyond the number of documents"), 2);
}

TEST_F(ConvertTest, TemplatesAndLimit) {
  auto path =
      write_jsonl("nq.jsonl", {nq_record("a", 2, 0), nq_record("b", 2, 0), nq_record("c", 2, 0)});
  ConvertOptions o;
  o.doc_template = "[{index}] {title}: {text}";
  o.question_template = "Q{id}: {question}?";
  o.limit = 2;
  auto r = convert_dataset(SourceFormat::NqLitm, path, o);
  ASSERT_EQ(r.examples.size(), 2u);
  EXPECT_EQ(r.stats.read, 2);
  EXPECT_EQ(r.examples[1].input, "[1] b-d0: text of b-d0\n[2] b-d1: text of b-d1");
  EXPECT_EQ(r.examples[1].prompt, "Q1: question b?");
  o.question_template = "{answer}";
  EXPECT_THROW(convert_dataset(SourceFormat::NqLitm, path, o), Error);
}

TEST_F(ConvertTest, MalformedSourceNamesFileAndLine) {
  json bad = nq_record("a", 2, 0);
  bad["ctxs"][1].erase("title");
  auto path = write_jsonl("nq.jsonl", {nq_record("x", 2, 0), bad});
  try {
    convert_dataset(SourceFormat::NqLitm, path, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ":2: field \"title\" is missing");
  }
  auto broken = write("broken.jsonl", "{\"question\": \n");
  EXPECT_THROW(convert_dataset(SourceFormat::NqLitm, broken, {}), Error);
  EXPECT_THROW(convert_dataset(SourceFormat::NqLitm, dir_ + "/missing.jsonl", {}), Error);
}

// ---------------------------------------------------------------- NQ oracle + sampled distractors

namespace {

// 12 oracle records, one gold passage each. Record 3 repeats record 2's passage text, and
// record 5's passage contains record 0's answer ("ans q0").
std::vector<json> oracle_records() {
  std::vector<json> out;
  for (int i = 0; i < 12; ++i) {
    std::string tag = "q" + std::to_string(i);
    std::string text = "passage " + tag;
    if (i == 3) text = "passage q2";
    if (i == 5) text = "passage q5 mentions ans q0 here";
    json ctx = {{"title", "T" + tag}, {"text", text}, {"hasanswer", true}, {"isgold", true}};
    out.push_back({{"question", "question " + tag},
                   {"answers", {"ans " + tag}},
                   {"ctxs", {ctx}},
                   {"nq_annotated_gold", {{"title", "T" + tag}}}});
  }
  return out;
}

}  // namespace

TEST_F(ConvertTest, NqOracleSamplesDistractorsFromOtherExamples) {
  auto records = oracle_records();
  auto path = write_jsonl_gz("oracle.jsonl.gz", records);
  ConvertOptions o;
  o.num_docs = 5;
  o.seed = 7;
  ConvertResult r = convert_dataset(SourceFormat::NqOracle, path, o);
  ASSERT_EQ(r.examples.size(), 12u);
  std::map<std::string, std::string> text_by_title;
  for (const auto& rec : records) text_by_title[rec["ctxs"][0]["title"]] = rec["ctxs"][0]["text"];
  std::set<size_t> gold_positions;
  for (size_t i = 0; i < r.examples.size(); ++i) {
    const QaExample& ex = r.examples[i];
    std::string own_title = "Tq" + std::to_string(i);
    std::string own_text = text_by_title[own_title];
    auto docs = split_docs(ex.input);
    ASSERT_EQ(docs.size(), 5u);
    std::set<std::string> texts;
    for (size_t k = 0; k < docs.size(); ++k) {
      std::string t = title_of(docs[k]);
      ASSERT_TRUE(text_by_title.count(t)) << "not a passage of the file: " << t;
      const std::string& text = text_by_title[t];
      EXPECT_EQ(docs[k], "Document [" + std::to_string(k + 1) + "](Title: " + t + ") " + text);
      EXPECT_TRUE(texts.insert(text).second) << "repeated passage in example " << i;
      if (t == own_title) {
        gold_positions.insert(k);
      } else {
        EXPECT_NE(text, own_text) << "example " << i << " got its own passage as a distractor";
        EXPECT_EQ(text.find(ex.answers[0]), std::string::npos) << "distractor holds the answer";
      }
    }
    EXPECT_EQ(std::count_if(docs.begin(), docs.end(),
                            [&](const std::string& d) { return title_of(d) == own_title; }),
              1);
  }
  EXPECT_GT(gold_positions.size(), 2u) << "default position is random";

  // Same seed, same output; another seed, other distractors.
  EXPECT_EQ(convert_dataset(SourceFormat::NqOracle, path, o).examples[4].input,
            r.examples[4].input);
  o.seed = 8;
  auto other = convert_dataset(SourceFormat::NqOracle, path, o);
  int differ = 0;
  for (size_t i = 0; i < 12; ++i) differ += other.examples[i].input != r.examples[i].input;
  EXPECT_GT(differ, 6);
  // A fixed position and --limit, which does not change the examples it keeps.
  o.gold_position = GoldPosition::parse("middle");
  o.limit = 3;
  auto mid = convert_dataset(SourceFormat::NqOracle, path, o);
  ASSERT_EQ(mid.examples.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(titles(mid.examples[i])[2], "Tq" + std::to_string(i));
}

TEST_F(ConvertTest, NqOracleDefaultsToTenDocumentsAndReportsSmallPools) {
  auto path = write_jsonl("oracle.jsonl", oracle_records());
  auto r = convert_dataset(SourceFormat::NqOracle, path, {});
  ASSERT_EQ(r.examples.size(), 12u);
  for (const auto& ex : r.examples) EXPECT_EQ(split_docs(ex.input).size(), 10u);
  // 11 documents need 10 distractors. Each example has 11 other passages, of which q2's and
  // q3's are one text: q2 and q3 drop each other's copy of their own passage (10 left), the
  // others keep one of the two (10 left), and q0 also loses q5's, which holds its answer (9).
  ConvertOptions o;
  o.num_docs = 11;
  auto big = convert_dataset(SourceFormat::NqOracle, path, o);
  EXPECT_EQ(big.stats.skipped.at("not enough distractor passages without the answer"), 1);
  ASSERT_EQ(big.examples.size(), 11u);
  EXPECT_EQ(big.examples[0].id, "1");
}

// ---------------------------------------------------------------- HotpotQA / 2Wiki

namespace {

json hotpot_record(const std::string& id, bool leading_spaces) {
  std::string sp = leading_spaces ? " " : "";
  json context = json::array();
  auto para = [](const std::string& title, std::vector<std::string> sents) {
    return json::array({title, sents});
  };
  context.push_back(para("Alpha", {"Alpha is first.", sp + "It is old."}));
  context.push_back(para("Beta", {"Beta is second."}));
  context.push_back(para("Gamma", {"Gamma is third.", sp + "Gamma is", " split."}));
  context.push_back(para("Delta", {"Delta is fourth."}));
  return {{"_id", id},
          {"question", "Which is " + id + "?"},
          {"answer", "Gamma"},
          {"supporting_facts", json::array({json::array({"Gamma", 0}), json::array({"Alpha", 1})})},
          {"context", context},
          {"type", "bridge"},
          {"level", "hard"}};
}

}  // namespace

TEST_F(ConvertTest, HotpotQaParagraphsAreDocuments) {
  json empty = hotpot_record("e", true);
  empty["context"] = json::array();
  std::vector<json> recs = {hotpot_record("h1", true), empty, hotpot_record("h2", true)};
  auto jsonl = write_jsonl("hotpot.jsonl", recs);
  auto array = write("hotpot.json", json(recs).dump(2));
  ConvertResult r = convert_dataset(SourceFormat::HotpotQa, jsonl, {});
  ASSERT_EQ(r.examples.size(), 2u);
  EXPECT_EQ(r.stats.read, 3);
  EXPECT_EQ(r.stats.skipped.at("no context paragraphs"), 1);
  const QaExample& ex = r.examples[0];
  EXPECT_EQ(ex.id, "h1");
  EXPECT_EQ(ex.prompt, "Which is h1?");
  EXPECT_EQ(ex.answers, std::vector<std::string>{"Gamma"});
  EXPECT_EQ(ex.input,
            "Document [1](Title: Alpha) Alpha is first. It is old.\n"
            "Document [2](Title: Beta) Beta is second.\n"
            "Document [3](Title: Gamma) Gamma is third. Gamma is split.\n"
            "Document [4](Title: Delta) Delta is fourth.");
  // The JSON-array file gives the same examples.
  ConvertResult ra = convert_dataset(SourceFormat::HotpotQa, array, {});
  ASSERT_EQ(ra.examples.size(), 2u);
  EXPECT_EQ(ra.examples[1].input, r.examples[1].input);
  // The supporting paragraphs (Alpha, Gamma) are the gold block, kept in file order.
  auto last = convert_dataset(SourceFormat::HotpotQa, jsonl, with_position("last"));
  EXPECT_EQ(titles(last.examples[0]),
            (std::vector<std::string>{"Beta", "Delta", "Alpha", "Gamma"}));
  auto cut = convert_dataset(SourceFormat::HotpotQa, jsonl, with_position("first", 3));
  EXPECT_EQ(titles(cut.examples[0]), (std::vector<std::string>{"Alpha", "Gamma", "Beta"}));
}

TEST_F(ConvertTest, TwoWikiJoinsStrippedSentencesWithSpaces) {
  json rec = hotpot_record("w1", false);
  rec["evidences"] = json::array({{"Gamma", "is", "third"}});
  auto path = write("dev.json", json::array({rec}).dump());
  auto r = convert_dataset(SourceFormat::TwoWiki, path, {});
  ASSERT_EQ(r.examples.size(), 1u);
  // "Gamma is" + " split." already has a space at the boundary: none is added there.
  EXPECT_EQ(split_docs(r.examples[0].input)[2],
            "Document [3](Title: Gamma) Gamma is third. Gamma is split.");
  EXPECT_EQ(split_docs(r.examples[0].input)[0],
            "Document [1](Title: Alpha) Alpha is first. It is old.");
  // HotpotQA keeps sentences as they are: stripped ones would stay glued.
  auto h = convert_dataset(SourceFormat::HotpotQa, path, {});
  EXPECT_EQ(split_docs(h.examples[0].input)[0],
            "Document [1](Title: Alpha) Alpha is first.It is old.");
}

// ---------------------------------------------------------------- SQuAD

TEST_F(ConvertTest, SquadV1AndV2) {
  json squad = {{"version", "v2.0"},
                {"data",
                 {{{"title", "Art"},
                   {"paragraphs",
                    {{{"context", "Context one."},
                      {"qas",
                       {{{"id", "q1"},
                         {"question", "Who?"},
                         {"is_impossible", false},
                         {"answers",
                          {{{"text", "Ann"}, {"answer_start", 0}},
                           {{"text", "Ann"}, {"answer_start", 5}},
                           {{"text", "Ann B"}, {"answer_start", 0}}}}},
                        {{"id", "q2"},
                         {"question", "Why?"},
                         {"is_impossible", true},
                         {"answers", json::array()},
                         {"plausible_answers", {{{"text", "x"}, {"answer_start", 0}}}}}}}},
                     {{"context", "Context two."},
                      {"qas",
                       {{{"id", "q3"},
                         {"question", "When?"},
                         {"answers", {{{"text", "now"}, {"answer_start", 1}}}}}}}}}}}}}};
  auto path = write("squad.json", squad.dump());
  ConvertResult r = convert_dataset(SourceFormat::Squad, path, {});
  ASSERT_EQ(r.examples.size(), 2u);
  EXPECT_EQ(r.stats.read, 3);
  EXPECT_EQ(r.stats.skipped.at("unanswerable (SQuAD 2.0 is_impossible)"), 1);
  EXPECT_EQ(r.examples[0].id, "q1");
  EXPECT_EQ(r.examples[0].input, "Context one.");
  EXPECT_EQ(r.examples[0].prompt, "Who?");
  EXPECT_EQ(r.examples[0].answers, (std::vector<std::string>{"Ann", "Ann B"}));
  EXPECT_EQ(r.examples[1].id, "q3");
  EXPECT_EQ(r.examples[1].input, "Context two.");
  // An explicit document template renders the context as one titled document.
  ConvertOptions o;
  o.doc_template = kDefaultDocTemplate;
  EXPECT_EQ(convert_dataset(SourceFormat::Squad, path, o).examples[1].input,
            "Document [1](Title: Art) Context two.");
}

// ---------------------------------------------------------------- key-value retrieval

TEST_F(ConvertTest, KvRetrievalPromptAndGoldPosition) {
  json records = json::array();
  for (int i = 1; i <= 4; ++i)
    records.push_back({"k" + std::to_string(i), "v" + std::to_string(i)});
  json rec = {{"ordered_kv_records", records}, {"key", "k2"}, {"value", "v2"}};
  auto path = write_jsonl_gz("kv.jsonl.gz", {rec});
  auto r = convert_dataset(SourceFormat::KvRetrieval, path, {});
  ASSERT_EQ(r.examples.size(), 1u);
  EXPECT_EQ(r.examples[0].input,
            "JSON data:\n{\"k1\": \"v1\",\n \"k2\": \"v2\",\n \"k3\": \"v3\",\n \"k4\": \"v4\"}");
  EXPECT_EQ(r.examples[0].prompt, "Key: \"k2\"\nCorresponding value:");
  EXPECT_EQ(r.examples[0].answers, std::vector<std::string>{"v2"});
  auto last = convert_dataset(SourceFormat::KvRetrieval, path, with_position("last", 3));
  EXPECT_EQ(last.examples[0].input,
            "JSON data:\n{\"k1\": \"v1\",\n \"k3\": \"v3\",\n \"k2\": \"v2\"}");
  ConvertOptions q;
  q.question_template = "Find {key}.";
  EXPECT_EQ(convert_dataset(SourceFormat::KvRetrieval, path, q).examples[0].prompt, "Find k2.");
  rec["value"] = "other";
  auto bad = write_jsonl("bad.jsonl", {rec});
  EXPECT_THROW(convert_dataset(SourceFormat::KvRetrieval, bad, {}), Error);
}

// ---------------------------------------------------------------- real files

TEST(ConvertRealData, EveryAvailableBenchmark) {
  const char* root = std::getenv("GMSA_DATA_DIR");
  if (!root) GTEST_SKIP() << "GMSA_DATA_DIR is not set (point it at the shared data directory)";
  auto file = [&](const std::string& rel) {
    std::string p = std::string(root) + "/" + rel;
    if (!fs::exists(p)) ADD_FAILURE() << "missing " << p;
    return p;
  };
  auto all_fields_set = [](const ConvertResult& r) {
    for (const auto& ex : r.examples) {
      if (ex.input.empty() || ex.prompt.empty() || ex.answers.empty() || ex.id.empty())
        return false;
    }
    return true;
  };
  const std::string nq = file("nq-lost-in-the-middle/nq-open-oracle.jsonl.gz");

  auto oracle = convert_dataset(SourceFormat::NqOracle, nq, {});
  EXPECT_EQ(oracle.examples.size(), 2655u);
  EXPECT_TRUE(all_fields_set(oracle));
  for (const auto& ex : oracle.examples) ASSERT_EQ(split_docs(ex.input).size(), 10u);
  EXPECT_EQ(oracle.examples[0].prompt, "who got the first nobel prize in physics");

  auto litm = convert_dataset(SourceFormat::NqLitm, nq, {});
  EXPECT_EQ(litm.examples.size(), 2655u);
  EXPECT_EQ(split_docs(litm.examples[0].input).size(), 1u);
  EXPECT_EQ(title_of(litm.examples[0].input), "List of Nobel laureates in Physics");

  auto kv = convert_dataset(SourceFormat::KvRetrieval,
                            file("nq-lost-in-the-middle/kv-retrieval-75_keys.jsonl.gz"), {});
  EXPECT_EQ(kv.examples.size(), 500u);
  EXPECT_TRUE(all_fields_set(kv));
  // 75 records: 74 ",\n" separators.
  const std::string& in = kv.examples[0].input;
  EXPECT_EQ(std::count(in.begin(), in.end(), '\n'), 1 + 74);

  auto squad = convert_dataset(SourceFormat::Squad, file("squad-v1.1/dev-v1.1.json"), {});
  EXPECT_EQ(squad.examples.size(), 10570u);
  EXPECT_EQ(squad.stats.total_skipped(), 0);
  EXPECT_TRUE(all_fields_set(squad));

  // 2 of the 500 examples have no context paragraphs.
  auto hotpot =
      convert_dataset(SourceFormat::HotpotQa, file("hotpotqa/hotpot_dev_distractor_500.jsonl"), {});
  EXPECT_EQ(hotpot.stats.read, 500);
  EXPECT_EQ(hotpot.examples.size(), 498u);
  EXPECT_EQ(hotpot.stats.skipped.at("no context paragraphs"), 2);
  EXPECT_TRUE(all_fields_set(hotpot));
  EXPECT_EQ(hotpot.examples[0].id, "5a7166395542994082a3e814");
}
