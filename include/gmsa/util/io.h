#pragma once
// File helpers: gzip-transparent reading, streaming line reading, atomic writes.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace gmsa {

// Whole file as bytes; a file ending in .gz (or starting with the gzip magic) is inflated.
std::string read_file(const std::string& path);

// Writes through a temporary file in the same directory, then renames: readers never see a
// half-written file, and a crash leaves the old version intact.
void write_file_atomic(const std::string& path, std::string_view data);

bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
std::string join_path(const std::string& a, const std::string& b);

// Streams lines (without the trailing '\n' or '\r\n') of a plain or gzip file, so corpora
// larger than memory can be read. line_number() is 1-based for the last line returned.
class LineReader {
 public:
  explicit LineReader(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  bool next(std::string& line);
  int64_t line_number() const { return line_no_; }
  const std::string& path() const { return path_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  int64_t line_no_ = 0;
};

}  // namespace gmsa
