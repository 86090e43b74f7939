#include "gmsa/data/convert.h"

#include <algorithm>
#include <cctype>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "gmsa/data/sampler.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {

using nlohmann::json;

// ---------------------------------------------------------------- names and options

namespace {

const std::vector<std::pair<std::string, SourceFormat>>& format_table() {
  static const std::vector<std::pair<std::string, SourceFormat>> t = {
      {"nq-litm", SourceFormat::NqLitm},    {"nq-oracle", SourceFormat::NqOracle},
      {"hotpotqa", SourceFormat::HotpotQa}, {"2wiki", SourceFormat::TwoWiki},
      {"squad", SourceFormat::Squad},       {"kv-retrieval", SourceFormat::KvRetrieval}};
  return t;
}

}  // namespace

std::vector<std::string> source_format_names() {
  std::vector<std::string> names;
  for (const auto& [name, f] : format_table()) names.push_back(name);
  return names;
}

SourceFormat parse_source_format(const std::string& name) {
  for (const auto& [n, f] : format_table()) {
    if (n == name) return f;
  }
  fail("unknown source format \"{}\" (expected one of: {})", name,
       fmt::join(source_format_names(), ", "));
}

std::string source_format_name(SourceFormat format) {
  for (const auto& [n, f] : format_table()) {
    if (f == format) return n;
  }
  return "?";
}

GoldPosition GoldPosition::parse(const std::string& text) {
  using K = Kind;
  static const std::map<std::string, K> named = {{"keep", K::Keep},
                                                 {"first", K::First},
                                                 {"middle", K::Middle},
                                                 {"last", K::Last},
                                                 {"random", K::Random}};
  if (auto it = named.find(text); it != named.end()) return {it->second, 0};
  bool digits = !text.empty() && text.size() < 10 &&
                std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  GMSA_CHECK(digits,
             "gold position \"{}\": expected keep, first, middle, last, random or a "
             "0-based index",
             text);
  return {K::Index, std::stoll(text)};
}

int64_t ConvertStats::total_skipped() const {
  int64_t n = 0;
  for (const auto& [reason, count] : skipped) n += count;
  return n;
}

// ---------------------------------------------------------------- building blocks

std::string format_template(const std::string& tpl,
                            const std::map<std::string, std::string>& values,
                            const std::string& what) {
  std::string out;
  out.reserve(tpl.size() + 64);
  for (size_t i = 0; i < tpl.size(); ++i) {
    char c = tpl[i];
    if ((c == '{' || c == '}') && i + 1 < tpl.size() && tpl[i + 1] == c) {
      out += c;
      ++i;
    } else if (c == '{') {
      size_t close = tpl.find('}', i);
      GMSA_CHECK(close != std::string::npos, "{}: unterminated placeholder at offset {} in \"{}\"",
                 what, i, tpl);
      std::string name = tpl.substr(i + 1, close - i - 1);
      auto it = values.find(name);
      if (it == values.end()) {
        std::vector<std::string> known;
        for (const auto& kv : values) known.push_back("{" + kv.first + "}");
        fail("{}: unknown placeholder {{{}}} (known: {})", what, name, fmt::join(known, ", "));
      }
      out += it->second;
      i = close;
    } else {
      GMSA_CHECK(c != '}', "{}: unmatched '}}' at offset {} in \"{}\" (write }}}} for a brace)",
                 what, i, tpl);
      out += c;
    }
  }
  return out;
}

void truncate_documents(std::vector<Document>& docs, int64_t max_docs) {
  if (max_docs <= 0) return;
  for (size_t i = docs.size(); i-- > 0 && static_cast<int64_t>(docs.size()) > max_docs;) {
    if (!docs[i].gold) docs.erase(docs.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

bool place_gold(std::vector<Document>& docs, const GoldPosition& pos, std::mt19937_64& rng) {
  using K = GoldPosition::Kind;
  if (pos.kind == K::Keep) return true;
  std::vector<Document> gold, rest;
  for (auto& d : docs) (d.gold ? gold : rest).push_back(d);
  if (gold.empty()) return false;
  const int64_t room = static_cast<int64_t>(rest.size());  // last possible block start
  int64_t start = 0;
  switch (pos.kind) {
    case K::First:
      start = 0;
      break;
    case K::Middle:
      start = room / 2;
      break;
    case K::Last:
      start = room;
      break;
    case K::Random:
      start = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(room) + 1));
      break;
    case K::Index:
      start = pos.index;
      break;
    case K::Keep:
      break;
  }
  if (start > room) return false;
  rest.insert(rest.begin() + start, gold.begin(), gold.end());
  docs = std::move(rest);
  return true;
}

std::string format_documents(const std::vector<Document>& docs, const std::string& doc_template) {
  std::string out;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (i > 0) out += '\n';
    out += format_template(
        doc_template,
        {{"index", std::to_string(i + 1)}, {"title", docs[i].title}, {"text", docs[i].text}},
        "--doc-template");
  }
  return out;
}

std::string format_kv_records(const std::vector<std::pair<std::string, std::string>>& records) {
  // Lost in the Middle's layout: "{" before the first record, " " before the others,
  // ",\n" between records and "}" after the last. Keys/values are written unescaped, as there.
  std::string out;
  for (size_t i = 0; i < records.size(); ++i) {
    out += i == 0 ? "{" : " ";
    out += "\"" + records[i].first + "\": \"" + records[i].second + "\"";
    out += i + 1 < records.size() ? ",\n" : "}";
  }
  return out;
}

namespace {

// Lowercased ASCII letters/digits, other ASCII as separators, bytes >= 0x80 (UTF-8) kept;
// words joined by single spaces with a space on each side, for whole-word search.
std::string normalize_for_match(const std::string& s) {
  std::string out = " ";
  for (unsigned char c : s) {
    bool word = c >= 0x80 || std::isalnum(c);
    if (word) {
      out += static_cast<char>(std::tolower(c));
    } else if (out.back() != ' ') {
      out += ' ';
    }
  }
  if (out.back() != ' ') out += ' ';
  return out;
}

}  // namespace

bool contains_answer(const std::string& text, const std::vector<std::string>& answers) {
  const std::string hay = normalize_for_match(text);
  for (const auto& a : answers) {
    std::string needle = normalize_for_match(a);
    if (needle.size() > 1 && hay.find(needle) != std::string::npos) return true;
  }
  return false;
}

// ---------------------------------------------------------------- source reading

namespace {

// A source record and where it came from ("file:line" or "file: item k"), for messages.
struct Record {
  const json& value;
  const std::string& where;
};

const json& field(const Record& r, const char* key) {
  if (!r.value.is_object())
    fail("{}: expected a JSON object, got {}", r.where, r.value.type_name());
  auto it = r.value.find(key);
  if (it == r.value.end()) fail("{}: field \"{}\" is missing", r.where, key);
  return *it;
}

std::string string_field(const Record& r, const char* key) {
  const json& v = field(r, key);
  if (!v.is_string())
    fail("{}: field \"{}\" must be a string, got {}", r.where, key, v.type_name());
  return v.get<std::string>();
}

const json& array_field(const Record& r, const char* key) {
  const json& v = field(r, key);
  if (!v.is_array()) fail("{}: field \"{}\" must be a list, got {}", r.where, key, v.type_name());
  return v;
}

// Duplicates removed, first occurrences kept in order.
std::vector<std::string> dedup(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& s : items) {
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

std::vector<std::string> string_list(const json& list, const std::string& where, const char* key) {
  std::vector<std::string> out;
  for (const auto& a : list) {
    if (!a.is_string())
      fail("{}: field \"{}\" must hold strings, got {}", where, key, a.type_name());
    out.push_back(a.get<std::string>());
  }
  return out;
}

json parse_json_text(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail("{}: invalid JSON: {}", where, e.what());
  }
}

// Calls fn for each record of a JSON Lines file or, when the first non-space byte is '[',
// of a JSON array file. fn returns false to stop early.
void for_each_record(const std::string& path, const std::function<bool(const Record&)>& fn) {
  {
    LineReader probe(path);
    std::string line;
    bool is_array = false;
    while (probe.next(line)) {
      size_t p = line.find_first_not_of(" \t\r");
      if (p == std::string::npos) continue;
      is_array = line[p] == '[';
      break;
    }
    if (is_array) {
      json all = parse_json_text(read_file(path), path);
      for (size_t i = 0; i < all.size(); ++i) {
        std::string where = fmt::format("{}: item {}", path, i);
        if (!fn(Record{all[i], where})) return;
      }
      return;
    }
  }
  LineReader reader(path);
  std::string line;
  while (reader.next(line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = fmt::format("{}:{}", path, reader.line_number());
    json value = parse_json_text(line, where);
    if (!fn(Record{value, where})) return;
  }
}

// ---------------------------------------------------------------- shared conversion steps

class Converter {
 public:
  explicit Converter(const ConvertOptions& o) : opt_(o) {}

  bool full() const { return opt_.limit > 0 && result_.stats.written >= opt_.limit; }
  void skip(const std::string& reason) { ++result_.stats.skipped[reason]; }
  ConvertStats& stats() { return result_.stats; }
  std::mt19937_64 rng_for(int64_t example_number) const {
    return std::mt19937_64(mix_seed(opt_.seed, static_cast<uint64_t>(example_number)));
  }
  const ConvertOptions& options() const { return opt_; }

  // num_docs / gold position / rendering for a multi-document example; false when skipped.
  bool arrange(std::vector<Document>& docs, int64_t default_num_docs,
               const GoldPosition& default_pos, std::mt19937_64& rng) {
    truncate_documents(docs, opt_.num_docs > 0 ? opt_.num_docs : default_num_docs);
    GoldPosition pos = opt_.gold_position.value_or(default_pos);
    if (place_gold(docs, pos, rng)) return true;
    bool has_gold = std::any_of(docs.begin(), docs.end(), [](const Document& d) { return d.gold; });
    skip(has_gold ? "gold position beyond the number of documents" : "no gold document");
    return false;
  }

  std::string render_docs(const std::vector<Document>& docs) const {
    return format_documents(docs, opt_.doc_template.value_or(kDefaultDocTemplate));
  }

  void emit(std::string id, std::string input, std::map<std::string, std::string> question_values,
            std::vector<std::string> answers) {
    QaExample ex;
    ex.id = std::move(id);
    ex.input = std::move(input);
    question_values["id"] = ex.id;
    ex.prompt = format_template(opt_.question_template, question_values, "--question-template");
    ex.answers = std::move(answers);
    result_.examples.push_back(std::move(ex));
    ++result_.stats.written;
  }

  ConvertResult take() { return std::move(result_); }

 private:
  ConvertOptions opt_;
  ConvertResult result_;
};

// ---------------------------------------------------------------- NQ (Lost in the Middle)

struct NqExample {
  std::string question;
  std::vector<std::string> answers;
  std::vector<Document> docs;
};

NqExample parse_nq(const Record& r) {
  NqExample ex;
  ex.question = string_field(r, "question");
  ex.answers = dedup(string_list(array_field(r, "answers"), r.where, "answers"));
  for (const auto& c : array_field(r, "ctxs")) {
    Record ctx{c, r.where};
    Document d{string_field(ctx, "title"), string_field(ctx, "text"), false};
    // Lost in the Middle marks every ctx; a missing or null "isgold" means not gold.
    auto g = c.find("isgold");
    if (g != c.end() && !g->is_null()) {
      if (!g->is_boolean()) fail("{}: field \"isgold\" must be true or false", r.where);
      d.gold = g->get<bool>();
    }
    ex.docs.push_back(std::move(d));
  }
  return ex;
}

ConvertResult convert_nq_litm(const std::string& path, const ConvertOptions& opt) {
  Converter conv(opt);
  int64_t number = 0;
  for_each_record(path, [&](const Record& r) {
    NqExample ex = parse_nq(r);
    int64_t n = number++;
    ++conv.stats().read;
    auto rng = conv.rng_for(n);
    if (conv.arrange(ex.docs, 0, GoldPosition{}, rng)) {
      conv.emit(std::to_string(n), conv.render_docs(ex.docs), {{"question", ex.question}},
                ex.answers);
    }
    return !conv.full();
  });
  return conv.take();
}

// Draws distinct indices from [0, n) in a seeded random order without materialising a
// permutation of n (a lazy Fisher-Yates over a sparse swap table).
class LazyPermutation {
 public:
  LazyPermutation(int64_t n, std::mt19937_64& rng) : n_(n), rng_(rng) {}
  bool next(int64_t& out) {
    if (i_ >= n_) return false;
    int64_t j = i_ + static_cast<int64_t>(uniform_below(rng_, static_cast<uint64_t>(n_ - i_)));
    out = at(j);
    swapped_[j] = at(i_);
    ++i_;
    return true;
  }

 private:
  int64_t at(int64_t k) const {
    auto it = swapped_.find(k);
    return it == swapped_.end() ? k : it->second;
  }
  int64_t n_;
  int64_t i_ = 0;
  std::mt19937_64& rng_;
  std::unordered_map<int64_t, int64_t> swapped_;
};

// num_docs - 1 distractors for example `self` taken from other examples' gold passages: never
// its own passage or an identical text, never twice the same text, never one that contains
// one of its answers. Empty when the pool runs out.
std::vector<Document> pick_distractors(const std::vector<NqExample>& pool,
                                       const std::vector<Document>& gold, int64_t self,
                                       int64_t count, std::mt19937_64& rng) {
  std::vector<Document> picked;
  std::set<std::string> used = {gold[static_cast<size_t>(self)].text};
  LazyPermutation perm(static_cast<int64_t>(pool.size()), rng);
  int64_t k;
  while (static_cast<int64_t>(picked.size()) < count && perm.next(k)) {
    const Document& cand = gold[static_cast<size_t>(k)];
    if (k == self || cand.text.empty() || used.count(cand.text) ||
        contains_answer(cand.text, pool[static_cast<size_t>(self)].answers)) {
      continue;
    }
    used.insert(cand.text);
    picked.push_back(Document{cand.title, cand.text, false});
  }
  if (static_cast<int64_t>(picked.size()) < count) picked.clear();
  return picked;
}

ConvertResult convert_nq_oracle(const std::string& path, const ConvertOptions& opt) {
  Converter conv(opt);
  std::vector<NqExample> pool;
  for_each_record(path, [&](const Record& r) {
    pool.push_back(parse_nq(r));
    return true;
  });
  // Each example's gold passage (empty text when it has none).
  std::vector<Document> gold(pool.size());
  for (size_t i = 0; i < pool.size(); ++i) {
    const auto& docs = pool[i].docs;
    auto it = std::find_if(docs.begin(), docs.end(), [](const Document& d) { return d.gold; });
    if (it == docs.end() && docs.size() == 1) it = docs.begin();  // oracle files: the one ctx
    if (it != docs.end()) gold[i] = Document{it->title, it->text, true};
  }
  const int64_t num_docs = opt.num_docs > 0 ? opt.num_docs : 10;
  for (size_t i = 0; i < pool.size() && !conv.full(); ++i) {
    ++conv.stats().read;
    if (gold[i].text.empty()) {
      conv.skip("no gold document");
      continue;
    }
    auto rng = conv.rng_for(static_cast<int64_t>(i));
    std::vector<Document> docs =
        pick_distractors(pool, gold, static_cast<int64_t>(i), num_docs - 1, rng);
    if (docs.empty() && num_docs > 1) {
      conv.skip("not enough distractor passages without the answer");
      continue;
    }
    docs.insert(docs.begin(), gold[i]);
    if (!conv.arrange(docs, num_docs, GoldPosition{GoldPosition::Kind::Random, 0}, rng)) continue;
    conv.emit(std::to_string(i), conv.render_docs(docs), {{"question", pool[i].question}},
              pool[i].answers);
  }
  return conv.take();
}

// ---------------------------------------------------------------- HotpotQA / 2WikiMultihopQA

// HotpotQA sentences carry their own leading spaces (15,495 of 15,614 sentence boundaries in
// the 500-example dev subset), and the remaining boundaries are mostly the sentence splitter
// cutting inside a token ("990WBOB." + "com"): plain concatenation restores the paragraph.
// 2WikiMultihopQA sentences are stripped, so they are joined with a space wherever neither
// side already has whitespace.
std::string join_sentences(const json& sents, const std::string& where, bool add_spaces) {
  std::string text;
  for (const auto& s : sents) {
    if (!s.is_string()) fail("{}: context sentences must be strings, got {}", where, s.type_name());
    const std::string& piece = s.get_ref<const std::string&>();
    bool boundary_has_space = text.empty() || piece.empty() ||
                              std::isspace(static_cast<unsigned char>(text.back())) ||
                              std::isspace(static_cast<unsigned char>(piece.front()));
    if (add_spaces && !boundary_has_space) text += ' ';
    text += piece;
  }
  return text;
}

std::vector<Document> parse_paragraphs(const Record& r, bool add_spaces) {
  std::set<std::string> supporting;
  if (r.value.contains("supporting_facts")) {
    for (const auto& f : array_field(r, "supporting_facts")) {
      if (!f.is_array() || f.empty() || !f[0].is_string()) {
        fail("{}: supporting_facts entries must be [title, sentence index]", r.where);
      }
      supporting.insert(f[0].get<std::string>());
    }
  }
  std::vector<Document> docs;
  for (const auto& p : array_field(r, "context")) {
    if (!p.is_array() || p.size() != 2 || !p[0].is_string() || !p[1].is_array()) {
      fail("{}: context entries must be [title, [sentences...]]", r.where);
    }
    std::string title = p[0].get<std::string>();
    bool gold = supporting.count(title) > 0;
    docs.push_back(Document{title, join_sentences(p[1], r.where, add_spaces), gold});
  }
  return docs;
}

ConvertResult convert_multihop(const std::string& path, const ConvertOptions& opt,
                               bool add_spaces) {
  Converter conv(opt);
  int64_t number = 0;
  for_each_record(path, [&](const Record& r) {
    int64_t n = number++;
    ++conv.stats().read;
    std::string id = string_field(r, "_id");
    std::string question = string_field(r, "question");
    std::string answer = string_field(r, "answer");
    std::vector<Document> docs = parse_paragraphs(r, add_spaces);
    auto rng = conv.rng_for(n);
    if (docs.empty()) {
      conv.skip("no context paragraphs");
    } else if (conv.arrange(docs, 0, GoldPosition{}, rng)) {
      conv.emit(id, conv.render_docs(docs), {{"question", question}}, {answer});
    }
    return !conv.full();
  });
  return conv.take();
}

// ---------------------------------------------------------------- SQuAD v1.1 / v2.0

void convert_squad_paragraph(Converter& conv, const Record& para, const std::string& title) {
  std::string context = string_field(para, "context");
  std::string input = context;
  if (conv.options().doc_template) {
    input = format_documents({Document{title, context, true}}, *conv.options().doc_template);
  }
  for (const auto& q : array_field(para, "qas")) {
    if (conv.full()) return;
    Record qa{q, para.where};
    ++conv.stats().read;
    if (q.contains("is_impossible") && q["is_impossible"].is_boolean() &&
        q["is_impossible"].get<bool>()) {
      conv.skip("unanswerable (SQuAD 2.0 is_impossible)");
      continue;
    }
    std::vector<std::string> answers;
    for (const auto& a : array_field(qa, "answers"))
      answers.push_back(string_field(Record{a, para.where}, "text"));
    answers = dedup(answers);
    if (answers.empty()) {
      conv.skip("no answers");
      continue;
    }
    conv.emit(string_field(qa, "id"), input, {{"question", string_field(qa, "question")}}, answers);
  }
}

ConvertResult convert_squad(const std::string& path, const ConvertOptions& opt) {
  Converter conv(opt);
  json root = parse_json_text(read_file(path), path);
  const json& data = array_field(Record{root, path}, "data");
  for (size_t a = 0; a < data.size() && !conv.full(); ++a) {
    std::string where = fmt::format("{}: data[{}]", path, a);
    Record article{data[a], where};
    std::string title = article.value.contains("title") ? string_field(article, "title") : "";
    const json& paras = array_field(article, "paragraphs");
    for (size_t p = 0; p < paras.size() && !conv.full(); ++p) {
      std::string pwhere = fmt::format("{}.paragraphs[{}]", where, p);
      convert_squad_paragraph(conv, Record{paras[p], pwhere}, title);
    }
  }
  return conv.take();
}

// ---------------------------------------------------------------- key-value retrieval

ConvertResult convert_kv(const std::string& path, const ConvertOptions& opt) {
  Converter conv(opt);
  int64_t number = 0;
  for_each_record(path, [&](const Record& r) {
    int64_t n = number++;
    ++conv.stats().read;
    std::string key = string_field(r, "key");
    std::string value = string_field(r, "value");
    std::vector<Document> records;  // title = key, text = value
    for (const auto& kv : array_field(r, "ordered_kv_records")) {
      if (!kv.is_array() || kv.size() != 2 || !kv[0].is_string() || !kv[1].is_string()) {
        fail("{}: ordered_kv_records entries must be [key, value] strings", r.where);
      }
      Document d{kv[0].get<std::string>(), kv[1].get<std::string>(), false};
      d.gold = d.title == key;
      if (d.gold && d.text != value)
        fail("{}: the record for key \"{}\" has a different value", r.where, key);
      records.push_back(std::move(d));
    }
    auto rng = conv.rng_for(n);
    if (conv.arrange(records, 0, GoldPosition{}, rng)) {
      std::vector<std::pair<std::string, std::string>> pairs;
      for (const auto& d : records) pairs.emplace_back(d.title, d.text);
      std::string query = "Key: \"" + key + "\"\nCorresponding value:";
      conv.emit(std::to_string(n), "JSON data:\n" + format_kv_records(pairs),
                {{"question", query}, {"key", key}}, {value});
    }
    return !conv.full();
  });
  return conv.take();
}

}  // namespace

ConvertResult convert_dataset(SourceFormat format, const std::string& path,
                              const ConvertOptions& options) {
  GMSA_CHECK(options.num_docs >= 0, "--num-docs must be >= 0, got {}", options.num_docs);
  GMSA_CHECK(options.limit >= 0, "--limit must be >= 0, got {}", options.limit);
  switch (format) {
    case SourceFormat::NqLitm:
      return convert_nq_litm(path, options);
    case SourceFormat::NqOracle:
      return convert_nq_oracle(path, options);
    case SourceFormat::HotpotQa:
      return convert_multihop(path, options, false);
    case SourceFormat::TwoWiki:
      return convert_multihop(path, options, true);
    case SourceFormat::Squad:
      return convert_squad(path, options);
    case SourceFormat::KvRetrieval:
      return convert_kv(path, options);
  }
  fail("unhandled source format");
}

}  // namespace gmsa
