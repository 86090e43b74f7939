#include "gmsa/data/synth.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa::data {

// ---- random numbers ----

uint64_t SynthRng::below(uint64_t n) {
  // Reject the lowest 2^64 mod n outputs so that the rest split evenly into n residues.
  const uint64_t reject_below = (0 - n) % n;
  for (;;) {
    const uint64_t x = engine_();
    if (x >= reject_below) return x % n;
  }
}

int64_t SynthRng::range(int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo) + 1));
}

namespace {

// SplitMix64 finalizer: independent engine seeds per stage, so e.g. changing the number of
// training questions leaves the eval questions unchanged.
uint64_t stage_seed(uint64_t seed, uint64_t stage) {
  uint64_t z = seed + stage * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
constexpr uint64_t kWorldStage = 1, kTrainStage = 2, kEvalStage = 3;

template <typename T>
const T& pick(const std::vector<T>& v, SynthRng& rng) {
  return v[rng.below(v.size())];
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// ---- the closed vocabularies and templates ----
// No value is a substring of another value or of any template text (tests check this), so
// "the answer occurs in the prediction" scoring cannot be satisfied by a different value.

struct Attribute {
  std::string name;
  std::vector<std::string> values;
  // {S} subject, {P} possessive, {V} value, {AV} value with "a"/"an".
  std::vector<std::string> statements;
  // {N} the name.
  std::vector<std::string> questions;
};

std::vector<std::string> years(int first, int last) {
  std::vector<std::string> out;
  for (int y = first; y <= last; ++y) out.push_back(std::to_string(y));
  return out;
}

const std::vector<Attribute>& attributes() {
  static const std::vector<std::string> cities = {"Lisbon", "Oslo",   "Cairo",  "Lima",
                                                  "Dublin", "Vienna", "Madrid", "Berlin",
                                                  "Tokyo",  "Quito",  "Nairobi", "Warsaw"};
  static const std::vector<Attribute> a = {
      {"birth_city",
       cities,
       {"{S} was born in the city of {V}.", "{P} birthplace is {V}.",
        "{S} came into the world in {V}.", "The city where {S} was born is {V}."},
       {"Where was {N} born?", "In which city was {N} born?", "What is the birthplace of {N}?"}},
      {"home_city",
       cities,
       {"{S} lives in {V} today.", "These days {S} makes a home in {V}.",
        "{P} house stands in the city of {V}.", "{S} has settled in {V}."},
       {"Where does {N} live?", "In which city does {N} live today?",
        "Which city is the home of {N}?"}},
      {"profession",
       {"baker", "pilot", "farmer", "doctor", "painter", "teacher", "sailor", "miner", "singer",
        "tailor", "engineer", "architect"},
       {"{S} works as {AV}.", "By trade, {S} is {AV}.", "{P} job is that of {AV}.",
        "{S} earns a living as {AV}."},
       {"What is the profession of {N}?", "What does {N} do for a living?",
        "What job does {N} have?"}},
      {"birth_year",
       years(1940, 1999),
       {"{S} was born in the year {V}.", "{P} year of birth is {V}.", "{S} was born in {V}."},
       {"In which year was {N} born?", "When was {N} born?", "What is the year of birth of {N}?"}},
      {"pet",
       {"cat", "dog", "parrot", "rabbit", "horse", "goat", "turtle", "hamster", "owl", "snake"},
       {"{S} keeps {AV} as a pet.", "{P} pet is {AV}.", "At home, {S} looks after a pet {V}."},
       {"What pet does {N} keep?", "Which animal is the pet of {N}?",
        "What kind of pet does {N} have?"}},
      {"colour",
       {"red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "pink"},
       {"{P} favourite colour is {V}.", "Of all colours, {S} likes {V} best.",
        "{S} prefers the colour {V}."},
       {"What is the favourite colour of {N}?", "Which colour does {N} like best?",
        "What colour does {N} prefer?"}},
      {"instrument",
       {"piano", "violin", "drum", "flute", "guitar", "harp", "trumpet", "cello"},
       {"{S} plays the {V}.", "{P} instrument is the {V}.",
        "In the evenings, {S} practises the {V}."},
       {"Which instrument does {N} play?", "What instrument does {N} practise?",
        "What musical instrument does {N} play?"}},
      {"food",
       {"rice", "soup", "cheese", "apples", "fish", "noodles", "honey", "plums", "beans",
        "carrots"},
       {"{P} favourite food is {V}.", "{S} eats {V} almost every day.",
        "Above all, {S} enjoys {V}."},
       {"What is the favourite food of {N}?", "Which food does {N} enjoy most?",
        "What does {N} like to eat?"}},
      {"sport",
       {"tennis", "rowing", "boxing", "skiing", "cycling", "hockey", "golf", "judo"},
       {"At weekends, {S} goes in for {V}.", "{P} favourite sport is {V}.",
        "{S} is very fond of {V}.", "Every weekend, {S} practises {V}."},
       {"Which sport does {N} like?", "What is the favourite sport of {N}?",
        "What sport does {N} do at weekends?"}},
      {"language",
       {"French", "Greek", "Swahili", "Hindi", "Dutch", "Polish", "Arabic", "Korean"},
       {"{S} speaks {V} at home.", "{P} mother tongue is {V}.", "{S} grew up speaking {V}."},
       {"Which language does {N} speak?", "What is the mother tongue of {N}?",
        "What language did {N} grow up speaking?"}},
  };
  return a;
}

// ---- names ----

// Two to four syllables from a fixed set of 32: novel words, like rare Wikipedia titles, that
// a small subword vocabulary still covers with one piece per syllable (letter-by-letter
// names would cost a 1k-piece tokenizer about 8 tokens per mention).
std::string make_name(SynthRng& rng) {
  static const std::vector<std::string> syllables = {
      "ka",  "zor", "vel", "mi",  "dra", "thu", "bek", "lo",  "ran", "si",  "nev",
      "ta",  "ris", "mok", "fen", "ul",  "bra", "kel", "sha", "dun", "vi",  "tor",
      "mel", "quo", "ash", "ber", "ni",  "gar", "pel", "zu",  "len", "ok"};
  const int count = 2 + static_cast<int>(rng.below(3));
  std::string name;
  for (int i = 0; i < count; ++i) name += pick(syllables, rng);
  name[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(name[0])));
  return name;
}

// A name must not contain (or be contained in) another name or any value, so that finding a
// name in a text identifies exactly one person and no name smuggles in an answer.
bool name_is_distinct(const std::string& lname, const std::vector<std::string>& taken_lower) {
  if (lname.size() < 4) return false;
  for (const auto& a : attributes())
    for (const auto& v : a.values)
      if (lname.find(lower(v)) != std::string::npos) return false;
  for (const auto& t : taken_lower)
    if (t.find(lname) != std::string::npos || lname.find(t) != std::string::npos) return false;
  return true;
}

// ---- documents ----

std::string with_article(const std::string& word) {
  const bool vowel = std::string("aeiouAEIOU").find(word[0]) != std::string::npos;
  return (vowel ? "an " : "a ") + word;
}

// Fills one statement template. The first reference to the person uses the name or the
// pronoun as chosen; later references in the same sentence use the pronoun.
std::string render_statement(const std::string& tmpl, const SynthEntity& e, bool use_name,
                             const std::string& value) {
  std::string out;
  bool referred = false;
  for (size_t i = 0; i < tmpl.size();) {
    auto take = [&](const char* ph) {
      const size_t n = std::char_traits<char>::length(ph);
      if (tmpl.compare(i, n, ph) != 0) return false;
      i += n;
      return true;
    };
    const bool name_now = use_name && !referred;
    if (take("{S}")) {
      out += name_now ? e.name : (e.female ? "she" : "he");
      referred = true;
    } else if (take("{P}")) {
      out += name_now ? e.name + "'s" : (e.female ? "her" : "his");
      referred = true;
    } else if (take("{AV}")) {
      out += with_article(value);
    } else if (take("{V}")) {
      out += value;
    } else {
      out += tmpl[i++];
    }
  }
  out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

// All facts in random order, a random paraphrase each; the first sentence names the person,
// later ones the name (1 in 3) or the pronoun.
std::string render_document(const SynthEntity& e, SynthRng& rng) {
  std::vector<size_t> order(attributes().size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  rng.shuffle(order);
  std::string doc;
  for (size_t k = 0; k < order.size(); ++k) {
    const Attribute& a = attributes()[order[k]];
    const bool use_name = k == 0 || rng.below(3) == 0;
    if (k > 0) doc += ' ';
    doc += render_statement(pick(a.statements, rng), e, use_name, e.values[order[k]]);
  }
  return doc;
}

std::vector<SynthEntity> make_entities(const SynthConfig& c) {
  SynthRng rng(stage_seed(c.seed, kWorldStage));
  const int total = c.entities + c.heldout_entities;
  std::vector<SynthEntity> out;
  std::vector<std::string> taken;
  for (int i = 0; i < total; ++i) {
    SynthEntity e;
    for (int attempt = 0;; ++attempt) {
      GMSA_CHECK(attempt < 10000, "synth: could not find a new distinct name for entity {}", i);
      e.name = make_name(rng);
      if (name_is_distinct(lower(e.name), taken)) break;
    }
    taken.push_back(lower(e.name));
    e.heldout = i >= c.entities;
    e.female = rng.below(2) == 1;
    for (const auto& a : attributes()) e.values.push_back(pick(a.values, rng));
    e.document = render_document(e, rng);
    out.push_back(std::move(e));
  }
  return out;
}

// ---- questions ----

std::string fill_question(const std::string& tmpl, const std::string& name) {
  const size_t at = tmpl.find("{N}");
  return tmpl.substr(0, at) + name + tmpl.substr(at + 3);
}

// K distinct entities from the pool: the gold one at gold_index, the others drawn without
// replacement from the rest of the pool.
std::vector<int> make_context(const std::vector<int>& pool, int gold, int k, int gold_index,
                              SynthRng& rng) {
  std::vector<int> others;
  while (static_cast<int>(others.size()) < k - 1) {
    const int cand = pool[rng.below(pool.size())];
    if (cand != gold && std::find(others.begin(), others.end(), cand) == others.end())
      others.push_back(cand);
  }
  others.insert(others.begin() + gold_index, gold);
  return others;
}

// Every (entity, attribute) pair of the split once in random order before any repeats.
std::vector<SynthQuestion> make_questions(const std::vector<SynthEntity>& entities,
                                          bool heldout, int count, const GoldPlacement& gold,
                                          int k, const std::string& id_prefix, SynthRng& rng) {
  std::vector<int> pool;
  for (size_t i = 0; i < entities.size(); ++i)
    if (entities[i].heldout == heldout) pool.push_back(static_cast<int>(i));
  std::vector<std::pair<int, size_t>> pairs;
  for (int e : pool)
    for (size_t a = 0; a < attributes().size(); ++a) pairs.emplace_back(e, a);

  std::vector<SynthQuestion> out;
  size_t next = pairs.size();
  for (int q = 0; q < count; ++q) {
    if (next == pairs.size()) {
      rng.shuffle(pairs);
      next = 0;
    }
    const auto [e, a] = pairs[next++];
    SynthQuestion s;
    s.id = fmt::format("{}-{:05d}", id_prefix, q);
    s.attribute = a;
    s.gold_index = gold.resolve(k, rng);
    s.context_entities = make_context(pool, e, k, s.gold_index, rng);
    for (int i = 0; i < k; ++i) {
      const SynthEntity& d = entities[s.context_entities[i]];
      if (i > 0) s.input += '\n';
      s.input += fmt::format("Document [{}](Title: {}) {}", i + 1, d.name, d.document);
    }
    s.prompt = fill_question(pick(attributes()[a].questions, rng), entities[e].name);
    s.answer = {entities[e].values[a]};
    out.push_back(std::move(s));
  }
  return out;
}

void validate(const SynthConfig& c) {
  GMSA_CHECK(c.docs_per_context >= 1, "--docs-per-context must be >= 1, got {}",
             c.docs_per_context);
  GMSA_CHECK(c.entities >= 1 && c.heldout_entities >= 0,
             "--entities must be >= 1 and --heldout-entities >= 0, got {} and {}", c.entities,
             c.heldout_entities);
  GMSA_CHECK(c.entities + c.heldout_entities <= 20000,
             "--entities + --heldout-entities must be <= 20000, got {}",
             c.entities + c.heldout_entities);
  GMSA_CHECK(c.train_questions >= 0 && c.eval_questions >= 0,
             "--train-questions and --eval-questions must be >= 0, got {} and {}",
             c.train_questions, c.eval_questions);
  GMSA_CHECK(c.train_questions == 0 || c.entities >= c.docs_per_context,
             "--entities ({}) must be >= --docs-per-context ({}) to build training contexts",
             c.entities, c.docs_per_context);
  GMSA_CHECK(c.eval_questions == 0 || c.heldout_entities >= c.docs_per_context,
             "--heldout-entities ({}) must be >= --docs-per-context ({}) to build eval contexts",
             c.heldout_entities, c.docs_per_context);
  for (const auto* g : {&c.train_gold, &c.eval_gold})
    GMSA_CHECK(g->kind != GoldPlacement::Kind::Index || g->index < c.docs_per_context,
               "gold position {} is outside the {} documents of a context (0-based)", g->index,
               c.docs_per_context);
}

std::string join_documents(const std::vector<SynthEntity>& entities, bool heldout) {
  std::string out;
  for (const auto& e : entities) {
    if (e.heldout != heldout) continue;
    if (!out.empty()) out += "\n\n";
    out += e.document;
  }
  return out.empty() ? out : out + "\n";
}

std::string to_jsonl(const std::vector<SynthQuestion>& qs) {
  std::string out;
  for (const auto& q : qs) {
    nlohmann::ordered_json j;
    j["id"] = q.id;
    j["input"] = q.input;
    j["prompt"] = q.prompt;
    j["answer"] = q.answer;
    out += j.dump() + "\n";
  }
  return out;
}

std::string world_json(const SynthWorld& w) {
  const SynthConfig& c = w.config;
  nlohmann::ordered_json j;
  j["generator"] = "gmsa data synth";
  j["config"] = {{"seed", c.seed},
                 {"entities", c.entities},
                 {"heldout_entities", c.heldout_entities},
                 {"docs_per_context", c.docs_per_context},
                 {"train_gold_position", c.train_gold.to_string()},
                 {"eval_gold_position", c.eval_gold.to_string()},
                 {"train_questions", c.train_questions},
                 {"eval_questions", c.eval_questions}};
  j["attributes"] = nlohmann::ordered_json::array();
  for (const auto& a : attributes())
    j["attributes"].push_back({{"name", a.name}, {"values", a.values}});
  j["entities"] = nlohmann::ordered_json::array();
  for (const auto& e : w.entities) {
    nlohmann::ordered_json facts;
    for (size_t a = 0; a < attributes().size(); ++a) facts[attributes()[a].name] = e.values[a];
    j["entities"].push_back({{"name", e.name},
                             {"split", e.heldout ? "heldout" : "train"},
                             {"pronoun", e.female ? "she" : "he"},
                             {"facts", facts},
                             {"document", e.document}});
  }
  return j.dump(1) + "\n";
}

}  // namespace

// ---- public API ----

const std::vector<std::string>& synth_attribute_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& a : attributes()) n.push_back(a.name);
    return n;
  }();
  return names;
}

const std::vector<std::string>& synth_attribute_values(size_t attribute) {
  GMSA_CHECK(attribute < attributes().size(), "synth: no attribute {}", attribute);
  return attributes()[attribute].values;
}

GoldPlacement GoldPlacement::parse(const std::string& text) {
  GoldPlacement g;
  if (text == "first") g.kind = Kind::First;
  else if (text == "middle") g.kind = Kind::Middle;
  else if (text == "last") g.kind = Kind::Last;
  else if (text == "random") g.kind = Kind::Random;
  else {
    const bool digits = !text.empty() && text.size() <= 6 &&
                        std::all_of(text.begin(), text.end(),
                                    [](char ch) { return ch >= '0' && ch <= '9'; });
    GMSA_CHECK(digits,
               "gold position '{}': expected first, middle, last, random or a 0-based index",
               text);
    g.kind = Kind::Index;
    g.index = std::stoi(text);
  }
  return g;
}

std::string GoldPlacement::to_string() const {
  switch (kind) {
    case Kind::First: return "first";
    case Kind::Middle: return "middle";
    case Kind::Last: return "last";
    case Kind::Random: return "random";
    case Kind::Index: break;
  }
  return std::to_string(index);
}

int GoldPlacement::resolve(int k, SynthRng& rng) const {
  switch (kind) {
    case Kind::First: return 0;
    case Kind::Middle: return (k - 1) / 2;
    case Kind::Last: return k - 1;
    case Kind::Random: return static_cast<int>(rng.below(static_cast<uint64_t>(k)));
    case Kind::Index: break;
  }
  return index;
}

SynthWorld generate_synth_world(const SynthConfig& config) {
  validate(config);
  SynthWorld w;
  w.config = config;
  w.entities = make_entities(config);
  SynthRng train_rng(stage_seed(config.seed, kTrainStage));
  w.train = make_questions(w.entities, false, config.train_questions, config.train_gold,
                           config.docs_per_context, "synth-train", train_rng);
  SynthRng eval_rng(stage_seed(config.seed, kEvalStage));
  w.eval = make_questions(w.entities, true, config.eval_questions, config.eval_gold,
                          config.docs_per_context, "synth-eval", eval_rng);
  return w;
}

std::vector<std::pair<std::string, std::string>> render_synth_files(const SynthWorld& world) {
  return {{"corpus.txt", join_documents(world.entities, false)},
          {"corpus_eval.txt", join_documents(world.entities, true)},
          {"qa_train.jsonl", to_jsonl(world.train)},
          {"qa_eval.jsonl", to_jsonl(world.eval)},
          {"world.json", world_json(world)}};
}

void write_synth_dataset(const SynthWorld& world, const std::string& out_dir) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  GMSA_CHECK(!ec && is_directory(out_dir), "{}: cannot create output directory: {}", out_dir,
             ec ? ec.message() : "not a directory");
  for (const auto& [name, text] : render_synth_files(world))
    write_file_atomic(join_path(out_dir, name), text);
}

}  // namespace gmsa::data
