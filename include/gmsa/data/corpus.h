#pragma once
// Text corpora for autoencoder / language-model training, streamed one document at a time so
// a corpus larger than memory can be read.
//   text:  paragraphs separated by blank lines (blank = empty or only spaces/tabs); a document
//          is one paragraph, its lines joined with "\n" (inner newlines are kept).
//   jsonl: one JSON object per line; the document is its "text" field, else its "input" field.
// Both read .gz transparently. Empty documents are skipped.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace gmsa {

class LineReader;

enum class CorpusFormat { Auto, Text, Jsonl };

// Auto resolves by extension: .jsonl, .jsonl.gz, .json, .json.gz -> Jsonl; anything else -> Text.
CorpusFormat resolve_corpus_format(const std::string& path,
                                   CorpusFormat format = CorpusFormat::Auto);

// "auto" | "text" | "jsonl"; throws gmsa::Error otherwise.
CorpusFormat parse_corpus_format(const std::string& name);

class CorpusReader {
 public:
  explicit CorpusReader(std::string path, CorpusFormat format = CorpusFormat::Auto);
  ~CorpusReader();
  CorpusReader(const CorpusReader&) = delete;
  CorpusReader& operator=(const CorpusReader&) = delete;

  // Next document into `doc`; false at the end. Throws gmsa::Error "<path>:<line>: ..." on a
  // bad JSONL line.
  bool next(std::string& doc);
  // Back to the first document (reopens the file).
  void reset();

  const std::string& path() const { return path_; }
  CorpusFormat format() const { return format_; }
  // 1-based line where the last returned document starts; 0 before the first.
  int64_t line() const { return doc_line_; }
  // Documents returned since the last reset.
  int64_t docs_read() const { return docs_read_; }

 private:
  bool next_paragraph(std::string& doc);
  bool next_json(std::string& doc);

  std::string path_;
  CorpusFormat format_;
  std::unique_ptr<LineReader> lines_;
  int64_t doc_line_ = 0;
  int64_t docs_read_ = 0;
};

// Convenience: the first `max_docs` documents (all when max_docs < 0).
std::vector<std::string> read_corpus(const std::string& path, int64_t max_docs = -1,
                                     CorpusFormat format = CorpusFormat::Auto);

}  // namespace gmsa
