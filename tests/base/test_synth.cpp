#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include <unistd.h>

#include "gmsa/data/synth.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

using gmsa::data::GoldPlacement;
using gmsa::data::SynthConfig;
using gmsa::data::SynthWorld;

namespace {

SynthConfig small_config() {
  SynthConfig c;
  c.entities = 40;
  c.heldout_entities = 12;
  c.docs_per_context = 5;
  c.train_questions = 150;
  c.eval_questions = 60;
  return c;
}

std::string file(const SynthWorld& w, const std::string& name) {
  for (const auto& [n, text] : gmsa::data::render_synth_files(w))
    if (n == name) return text;
  ADD_FAILURE() << "no file " << name;
  return "";
}

struct Doc {
  int number;
  std::string title, text;
};

// Parses an input of lines "Document [i](Title: NAME) TEXT" independently of the generator.
std::vector<Doc> parse_input(const std::string& input) {
  static const std::regex line_re(R"(^Document \[(\d+)\]\(Title: ([A-Za-z]+)\) (.+)$)");
  std::vector<Doc> docs;
  std::istringstream in(input);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    EXPECT_TRUE(std::regex_match(line, m, line_re)) << line;
    if (m.empty()) continue;
    docs.push_back({std::stoi(m[1]), m[2], m[3]});
  }
  return docs;
}

std::vector<nlohmann::json> parse_jsonl(const std::string& text) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

std::set<std::string> words_of(const std::string& text) {
  std::set<std::string> out;
  std::string w;
  for (char c : text + " ") {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      w += c;
    } else if (!w.empty()) {
      out.insert(w);
      w.clear();
    }
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

size_t count_words(const std::string& text) {
  std::istringstream in(text);
  size_t n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
}

// The single context document whose title occurs as a word of the prompt.
int asked_index(const std::vector<Doc>& docs, const std::string& prompt) {
  const auto words = words_of(prompt);
  int found = -1;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (!words.count(docs[i].title)) continue;
    EXPECT_EQ(found, -1) << "two context titles in prompt: " << prompt;
    found = static_cast<int>(i);
  }
  EXPECT_NE(found, -1) << "no context title in prompt: " << prompt;
  return found;
}

}  // namespace

TEST(SynthRng, BelowCoversRangeAndRepeatsPerSeed) {
  gmsa::data::SynthRng a(7), b(7), c(8);
  std::vector<int> hits(7, 0);
  bool differs = false;
  for (int i = 0; i < 7000; ++i) {
    const uint64_t x = a.below(7);
    ASSERT_LT(x, 7u);
    ASSERT_EQ(x, b.below(7));
    differs |= x != c.below(7);
    ++hits[x];
  }
  EXPECT_TRUE(differs);
  // Each residue expects 1000; 800 is > 6 standard deviations (sd ~ 30) below.
  for (int h : hits) EXPECT_GT(h, 800);
  EXPECT_EQ(a.below(1), 0u);
  for (int i = 0; i < 100; ++i) {
    const int64_t r = a.range(-2, 2);
    EXPECT_TRUE(r >= -2 && r <= 2);
  }
}

TEST(Synth, SameSeedSameBytesOtherSeedDifferent) {
  const SynthConfig c = small_config();
  SynthConfig c2 = c;
  c2.seed = 2;
  const auto a = gmsa::data::render_synth_files(gmsa::data::generate_synth_world(c));
  const auto b = gmsa::data::render_synth_files(gmsa::data::generate_synth_world(c));
  const auto d = gmsa::data::render_synth_files(gmsa::data::generate_synth_world(c2));
  ASSERT_EQ(a.size(), 5u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i], b[i]) << a[i].first;
    EXPECT_NE(a[i].second, d[i].second) << a[i].first;
  }
}

TEST(Synth, WritesFilesThatReadBackIdentically) {
  const auto world = gmsa::data::generate_synth_world(small_config());
  const auto dir = std::filesystem::temp_directory_path() /
                   ("gmsa_synth_test_" + std::to_string(::getpid())) / "nested";
  gmsa::data::write_synth_dataset(world, dir.string());
  for (const auto& [name, text] : gmsa::data::render_synth_files(world))
    EXPECT_EQ(gmsa::read_file((dir / name).string()), text) << name;
  std::filesystem::remove_all(dir.parent_path());
}

TEST(Synth, EvalQuestionsIndependentOfTrainingCount) {
  SynthConfig c = small_config();
  const std::string eval1 = file(gmsa::data::generate_synth_world(c), "qa_eval.jsonl");
  c.train_questions = 7;
  EXPECT_EQ(file(gmsa::data::generate_synth_world(c), "qa_eval.jsonl"), eval1);
}

TEST(Synth, Counts) {
  const SynthConfig c = small_config();
  const auto w = gmsa::data::generate_synth_world(c);
  ASSERT_EQ(static_cast<int>(w.entities.size()), c.entities + c.heldout_entities);
  std::set<std::string> names;
  for (const auto& e : w.entities) names.insert(e.name);
  EXPECT_EQ(names.size(), w.entities.size()) << "names must be unique";

  auto paragraphs = [](const std::string& text) {
    size_t n = 1, pos = 0;
    while ((pos = text.find("\n\n", pos)) != std::string::npos) ++n, pos += 2;
    return n;
  };
  EXPECT_EQ(paragraphs(file(w, "corpus.txt")), static_cast<size_t>(c.entities));
  EXPECT_EQ(paragraphs(file(w, "corpus_eval.txt")), static_cast<size_t>(c.heldout_entities));
  EXPECT_EQ(parse_jsonl(file(w, "qa_train.jsonl")).size(), static_cast<size_t>(c.train_questions));
  EXPECT_EQ(parse_jsonl(file(w, "qa_eval.jsonl")).size(), static_cast<size_t>(c.eval_questions));
  const auto world = nlohmann::json::parse(file(w, "world.json"));
  EXPECT_EQ(world["entities"].size(), w.entities.size());
}

TEST(Synth, JsonlHasTheQaSchema) {
  const auto w = gmsa::data::generate_synth_world(small_config());
  std::set<std::string> ids;
  for (const char* name : {"qa_train.jsonl", "qa_eval.jsonl"}) {
    for (const auto& row : parse_jsonl(file(w, name))) {
      ASSERT_EQ(row.size(), 4u) << row.dump();
      ASSERT_TRUE(row["id"].is_string());
      ASSERT_TRUE(row["input"].is_string());
      ASSERT_TRUE(row["prompt"].is_string());
      ASSERT_TRUE(row["answer"].is_array());
      ASSERT_EQ(row["answer"].size(), 1u);
      ASSERT_TRUE(row["answer"][0].is_string());
      EXPECT_TRUE(ids.insert(row["id"].get<std::string>()).second) << "duplicate id";
    }
  }
}

TEST(Synth, GoldDocumentHoldsTheAnswerAndDistractorsAreOthers) {
  const auto w = gmsa::data::generate_synth_world(small_config());
  std::map<std::string, const gmsa::data::SynthEntity*> by_name;
  for (const auto& e : w.entities) by_name[e.name] = &e;
  for (const char* name : {"qa_train.jsonl", "qa_eval.jsonl"}) {
    const bool heldout = std::string(name) == "qa_eval.jsonl";
    for (const auto& row : parse_jsonl(file(w, name))) {
      const auto docs = parse_input(row["input"]);
      ASSERT_EQ(docs.size(), 5u);
      const std::string prompt = row["prompt"], answer = row["answer"][0];
      const int gold = asked_index(docs, prompt);
      ASSERT_GE(gold, 0);
      EXPECT_NE(docs[gold].text.find(answer), std::string::npos) << prompt;
      std::set<std::string> titles;
      for (size_t i = 0; i < docs.size(); ++i) {
        EXPECT_EQ(docs[i].number, static_cast<int>(i) + 1);
        ASSERT_TRUE(by_name.count(docs[i].title)) << docs[i].title;
        const auto& e = *by_name.at(docs[i].title);
        EXPECT_EQ(docs[i].text, e.document) << "a document must be its title's entity";
        EXPECT_EQ(e.heldout, heldout) << "contexts stay within their split";
        EXPECT_TRUE(titles.insert(docs[i].title).second) << "a distractor repeats an entity";
      }
      // The answer is the asked person's fact, not merely some word of the gold text.
      const auto& facts = by_name.at(docs[gold].title)->values;
      EXPECT_NE(std::find(facts.begin(), facts.end(), answer), facts.end());
    }
  }
}

// The first sentence names the person, so a document read alone says whom it is about.
TEST(Synth, DocumentsOpenWithTheName) {
  const auto w = gmsa::data::generate_synth_world(small_config());
  for (const auto& e : w.entities) {
    const std::string first = e.document.substr(0, e.document.find(". "));
    EXPECT_EQ(words_of(first).count(e.name), 1u) << e.document;
  }
}

// Every (person, attribute) pair of a split is asked once before any pair repeats.
TEST(Synth, QuestionsCoverPairsBeforeRepeating) {
  SynthConfig c = small_config();
  c.eval_questions = 12 * 10 + 5;  // one full pass over the held-out pairs, then 5 more
  const auto w = gmsa::data::generate_synth_world(c);
  const size_t attributes = gmsa::data::synth_attribute_names().size();
  ASSERT_EQ(attributes, 10u);
  std::set<std::pair<std::string, std::string>> first_pass;
  std::set<std::string> asked;
  for (size_t i = 0; i < w.eval.size(); ++i) {
    const auto& q = w.eval[i];
    const std::string name = w.entities[q.context_entities[q.gold_index]].name;
    asked.insert(name);
    if (i < 120) first_pass.emplace(name, gmsa::data::synth_attribute_names()[q.attribute]);
  }
  EXPECT_EQ(first_pass.size(), 120u);
  EXPECT_EQ(asked.size(), 12u);
}

TEST(Synth, GoldPositionHonoured) {
  const std::vector<std::pair<std::string, int>> cases = {
      {"first", 0}, {"middle", 2}, {"last", 4}, {"3", 3}};
  for (const auto& [text, expected] : cases) {
    SynthConfig c = small_config();
    c.train_gold = GoldPlacement::parse(text);
    c.eval_gold = GoldPlacement::parse(text);
    const auto w = gmsa::data::generate_synth_world(c);
    for (const char* name : {"qa_train.jsonl", "qa_eval.jsonl"})
      for (const auto& row : parse_jsonl(file(w, name)))
        ASSERT_EQ(asked_index(parse_input(row["input"]), row["prompt"]), expected) << text;
  }
  // Random placement uses every slot.
  const auto w = gmsa::data::generate_synth_world(small_config());
  std::set<int> seen;
  for (const auto& row : parse_jsonl(file(w, "qa_train.jsonl")))
    seen.insert(asked_index(parse_input(row["input"]), row["prompt"]));
  EXPECT_EQ(seen.size(), 5u);
}

TEST(Synth, MiddleIsTheLostInTheMiddleIndex) {
  gmsa::data::SynthRng rng(1);
  const auto middle = GoldPlacement::parse("middle");
  EXPECT_EQ(middle.resolve(3, rng), 1);
  EXPECT_EQ(middle.resolve(20, rng), 9);
  EXPECT_EQ(middle.resolve(1, rng), 0);
  EXPECT_EQ(GoldPlacement::parse("12").to_string(), "12");
  EXPECT_THROW(GoldPlacement::parse("sideways"), gmsa::Error);
  EXPECT_THROW(GoldPlacement::parse("-1"), gmsa::Error);
}

TEST(Synth, HeldOutEntitiesAreNotInTheCorpus) {
  const auto w = gmsa::data::generate_synth_world(small_config());
  const auto corpus_words = words_of(file(w, "corpus.txt"));
  const auto eval_words = words_of(file(w, "corpus_eval.txt"));
  for (const auto& e : w.entities) {
    EXPECT_EQ(corpus_words.count(e.name), e.heldout ? 0u : 1u) << e.name;
    EXPECT_EQ(eval_words.count(e.name), e.heldout ? 1u : 0u) << e.name;
  }
  for (const auto& row : parse_jsonl(file(w, "qa_eval.jsonl")))
    for (const auto& d : parse_input(row["input"])) EXPECT_EQ(corpus_words.count(d.title), 0u);
}

// Any vocabulary value found in a document (even inside another word) must be one of that
// person's own facts, and prompts contain none: substring answer matching stays honest.
TEST(Synth, NoStrayAttributeValuesInTexts) {
  const auto w = gmsa::data::generate_synth_world(small_config());
  std::vector<std::string> all_values;
  for (size_t a = 0; a < gmsa::data::synth_attribute_names().size(); ++a)
    for (const auto& v : gmsa::data::synth_attribute_values(a)) all_values.push_back(lower(v));
  for (const auto& e : w.entities) {
    const std::string doc = lower(e.document);
    for (const auto& v : all_values) {
      if (doc.find(v) == std::string::npos) continue;
      bool own = false;
      for (const auto& mine : e.values) own |= lower(mine) == v;
      EXPECT_TRUE(own) << "'" << v << "' in: " << e.document;
    }
    const size_t words = count_words(e.document);
    EXPECT_GE(words, 40u) << e.document;
    EXPECT_LE(words, 80u) << e.document;
  }
  for (const auto& q : w.train)
    for (const auto& v : all_values)
      EXPECT_EQ(lower(q.prompt).find(v), std::string::npos) << q.prompt;
}

// Held-out facts are drawn independently of everything in training, so guessing each
// attribute's most frequent training answer (the best closed-book strategy without the
// context) scores near 1/|values|: the mean over the ten attributes of 1/12 (x3), 1/60,
// 1/10 (x3), 1/8 (x3) is 0.094. 0.2 is > 5 sd (sqrt(0.094*0.906/200) = 0.021) above it.
TEST(Synth, ClosedBookMajorityGuessIsNearChance) {
  const auto w = gmsa::data::generate_synth_world(SynthConfig{});
  ASSERT_EQ(w.eval.size(), 200u);
  std::map<size_t, std::map<std::string, int>> freq;
  for (const auto& q : w.train) ++freq[q.attribute][q.answer[0]];
  int correct = 0;
  for (const auto& q : w.eval) {
    const auto& f = freq[q.attribute];
    auto best = std::max_element(f.begin(), f.end(),
                                 [](auto& a, auto& b) { return a.second < b.second; });
    correct += best->first == q.answer[0];
  }
  EXPECT_LT(correct / 200.0, 0.2);
}

TEST(Synth, InvalidConfigsNameTheOption) {
  auto message = [](const SynthConfig& c) {
    try {
      gmsa::data::generate_synth_world(c);
    } catch (const gmsa::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  SynthConfig c = small_config();
  c.eval_gold = GoldPlacement::parse("5");
  EXPECT_NE(message(c).find("gold position 5"), std::string::npos) << message(c);
  c = small_config();
  c.heldout_entities = 4;
  EXPECT_NE(message(c).find("--heldout-entities"), std::string::npos) << message(c);
  c.eval_questions = 0;
  EXPECT_EQ(message(c), "no error");
  c.docs_per_context = 0;
  EXPECT_NE(message(c).find("--docs-per-context"), std::string::npos) << message(c);
}
