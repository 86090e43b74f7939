#include "gmsa/util/io.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

#include "gmsa/util/error.h"

namespace gmsa {

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string join_path(const std::string& a, const std::string& b) {
  if (a.empty() || b.empty() || b.front() == '/') return a.empty() ? b : (b.empty() ? a : b);
  return a.back() == '/' ? a + b : a + "/" + b;
}

std::string read_file(const std::string& path) {
  if (!file_exists(path)) fail("{}: no such file", path);
  if (is_directory(path)) fail("{}: is a directory, expected a file", path);
  // gzopen reads plain files unchanged and inflates gzip ones.
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) fail("{}: cannot open: {}", path, std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string what = (n < 0 && msg) ? msg : "";
  gzclose(f);
  if (n < 0) fail("{}: read error: {}", path, what);
  return out;
}

void write_file_atomic(const std::string& path, std::string_view data) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(std::random_device{}());
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail("{}: cannot write: {}", tmp, std::strerror(errno));
    size_t written = std::fwrite(data.data(), 1, data.size(), f);
    bool ok = written == data.size() && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
    std::fclose(f);
    if (!ok) {
      std::remove(tmp.c_str());
      fail("{}: write failed: {}", path, std::strerror(errno));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail("{}: cannot rename temporary file into place: {}", path, std::strerror(errno));
  }
}

struct LineReader::Impl {
  gzFile f = nullptr;
  std::string buf;
  size_t pos = 0;
  bool eof = false;
};

LineReader::LineReader(const std::string& path) : impl_(std::make_unique<Impl>()), path_(path) {
  if (!file_exists(path)) fail("{}: no such file", path);
  if (is_directory(path)) fail("{}: is a directory, expected a file", path);
  impl_->f = gzopen(path.c_str(), "rb");
  if (!impl_->f) fail("{}: cannot open: {}", path, std::strerror(errno));
  gzbuffer(impl_->f, 1 << 17);
}

LineReader::~LineReader() {
  if (impl_ && impl_->f) gzclose(impl_->f);
}

bool LineReader::next(std::string& line) {
  auto& s = *impl_;
  for (;;) {
    size_t nl = s.buf.find('\n', s.pos);
    if (nl != std::string::npos) {
      line.assign(s.buf, s.pos, nl - s.pos);
      s.pos = nl + 1;
      break;
    }
    if (s.eof) {
      if (s.pos >= s.buf.size()) return false;
      line.assign(s.buf, s.pos, std::string::npos);
      s.pos = s.buf.size();
      break;
    }
    s.buf.erase(0, s.pos);
    s.pos = 0;
    char chunk[1 << 16];
    int n = gzread(s.f, chunk, sizeof chunk);
    if (n < 0) {
      int err = 0;
      fail("{}: read error after line {}: {}", path_, line_no_, gzerror(s.f, &err));
    }
    if (n == 0) s.eof = true;
    s.buf.append(chunk, static_cast<size_t>(n));
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  ++line_no_;
  return true;
}

}  // namespace gmsa
