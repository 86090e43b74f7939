#include "gmsa/data/corpus.h"

#include <nlohmann/json.hpp>

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r") == std::string::npos;
}

}  // namespace

CorpusFormat resolve_corpus_format(const std::string& path, CorpusFormat format) {
  if (format != CorpusFormat::Auto) return format;
  for (const char* ext : {".jsonl", ".jsonl.gz", ".json", ".json.gz"}) {
    if (ends_with(path, ext)) return CorpusFormat::Jsonl;
  }
  return CorpusFormat::Text;
}

CorpusFormat parse_corpus_format(const std::string& name) {
  if (name == "auto") return CorpusFormat::Auto;
  if (name == "text") return CorpusFormat::Text;
  if (name == "jsonl") return CorpusFormat::Jsonl;
  fail("unknown corpus format \"{}\" (expected auto, text or jsonl)", name);
}

CorpusReader::CorpusReader(std::string path, CorpusFormat format)
    : path_(std::move(path)), format_(resolve_corpus_format(path_, format)) {
  reset();
}

CorpusReader::~CorpusReader() = default;

void CorpusReader::reset() {
  lines_ = std::make_unique<LineReader>(path_);
  doc_line_ = 0;
  docs_read_ = 0;
}

bool CorpusReader::next(std::string& doc) {
  bool ok = format_ == CorpusFormat::Jsonl ? next_json(doc) : next_paragraph(doc);
  if (ok) ++docs_read_;
  return ok;
}

bool CorpusReader::next_paragraph(std::string& doc) {
  doc.clear();
  std::string line;
  while (lines_->next(line)) {
    if (is_blank(line)) {
      if (!doc.empty()) return true;
      continue;
    }
    if (doc.empty()) {
      doc_line_ = lines_->line_number();
    } else {
      doc += '\n';
    }
    doc += line;
  }
  return !doc.empty();
}

bool CorpusReader::next_json(std::string& doc) {
  using nlohmann::json;
  std::string line;
  while (lines_->next(line)) {
    if (is_blank(line)) continue;
    doc_line_ = lines_->line_number();
    json obj;
    try {
      obj = json::parse(line);
    } catch (const json::parse_error& e) {
      fail("{}:{}: invalid JSON: {}", path_, doc_line_, e.what());
    }
    auto it = obj.is_object() ? obj.find("text") : obj.end();
    if (obj.is_object() && it == obj.end()) it = obj.find("input");
    if (!obj.is_object() || it == obj.end() || !it->is_string()) {
      fail("{}:{}: expected an object with a string field \"text\" or \"input\"", path_, doc_line_);
    }
    doc = it->get<std::string>();
    if (!doc.empty()) return true;
  }
  return false;
}

std::vector<std::string> read_corpus(const std::string& path, int64_t max_docs,
                                     CorpusFormat format) {
  CorpusReader reader(path, format);
  std::vector<std::string> docs;
  std::string doc;
  while ((max_docs < 0 || static_cast<int64_t>(docs.size()) < max_docs) && reader.next(doc)) {
    docs.push_back(std::move(doc));
  }
  return docs;
}

}  // namespace gmsa
