// sentencepiece tokenizer.model (LLaMA-2, Mistral, llama2.c, the quickstart's own model),
// through the isolated backend module (see gmsa/text/spm_backend.h for why).
#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "gmsa/text/spm_backend.h"
#include "gmsa/text/tokenizer.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

extern char** environ;

namespace gmsa {
namespace {

using BackendFactory = SpmBackend* (*)();

std::string executable_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.find_last_of('/'));
}

BackendFactory load_factory() {
  static std::once_flag once;
  static BackendFactory factory = nullptr;
  static std::string error;
  std::call_once(once, [] {
    std::vector<std::string> tried;
    if (const char* env = std::getenv("GMSA_SPM_MODULE")) tried.push_back(env);
    const std::string dir = executable_dir();
    tried.push_back(dir + "/libgmsa_sentencepiece.so");
    tried.push_back(dir + "/../lib/libgmsa_sentencepiece.so");
    for (const auto& path : tried) {
      if (!file_exists(path)) continue;
      void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (!h) {
        error += std::string(" ") + path + ": " + ::dlerror() + ";";
        continue;
      }
      factory = reinterpret_cast<BackendFactory>(::dlsym(h, "gmsa_spm_backend_new"));
      if (factory) return;
      error += " " + path + ": no gmsa_spm_backend_new;";
    }
    error = "cannot load the sentencepiece module (tried " + [&] {
      std::string s;
      for (auto& t : tried) s += (s.empty() ? "" : ", ") + t;
      return s;
    }() + ")" + error;
  });
  if (!factory) fail("{}", error);
  return factory;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : sp_(make_spm_backend()) {
    auto err = sp_->load(read_file(path));
    if (!err.empty()) fail("{}: not a sentencepiece model: {}", path, err);
  }
  std::vector<int> encode(std::string_view text) const override {
    std::vector<int> ids;
    auto err = sp_->encode(std::string(text), &ids);
    if (!err.empty()) fail("sentencepiece encode failed: {}", err);
    return ids;
  }
  std::string decode(const std::vector<int>& ids) const override {
    std::vector<int> valid;
    valid.reserve(ids.size());
    const int n = sp_->piece_size();
    for (int id : ids)
      if (id >= 0 && id < n && !sp_->is_control(id)) valid.push_back(id);
    std::string out;
    auto err = sp_->decode(valid, &out);
    if (!err.empty()) fail("sentencepiece decode failed: {}", err);
    return out;
  }
  int vocab_size() const override { return sp_->piece_size(); }
  std::string id_to_piece(int id) const override { return sp_->id_to_piece(id); }
  int bos_id() const override { return sp_->bos_id(); }
  int eos_id() const override { return sp_->eos_id(); }
  int pad_id() const override { return sp_->pad_id(); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  std::unique_ptr<SpmBackend> sp_;
};

}  // namespace

std::unique_ptr<SpmBackend> make_spm_backend() { return std::unique_ptr<SpmBackend>(load_factory()()); }

void train_sentencepiece(const std::string& flags) {
  std::string exe;
  for (const auto& dir : {executable_dir(), executable_dir() + "/../lib"})
    if (file_exists(dir + "/gmsa_spm_train")) exe = dir + "/gmsa_spm_train";
  if (exe.empty()) fail("sentencepiece training: gmsa_spm_train not found beside {}", executable_dir());
  std::string log = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/gmsa_spm_train." +
                    std::to_string(::getpid()) + ".log";
  pid_t pid = 0;
  std::vector<char*> argv{const_cast<char*>(exe.c_str()), const_cast<char*>(flags.c_str()), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) fail("sentencepiece training: cannot start {}: {}", exe, std::strerror(rc));
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::string out = file_exists(log) ? read_file(log) : "";
  std::remove(log.c_str());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    auto last = out.find_last_not_of("\n");
    auto start = out.rfind('\n', last == std::string::npos ? 0 : last);
    fail("sentencepiece training failed: {}", out.substr(start == std::string::npos ? 0 : start + 1));
  }
}

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path) {
  return std::make_unique<SentencePieceTokenizer>(model_path);
}

}  // namespace gmsa
