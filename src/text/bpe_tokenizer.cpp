// Hugging Face tokenizer.json, byte-level BPE. The pipeline mirrors `tokenizers` step by step
// (see docs/tokenizers.md): added tokens -> normalizer -> pre-tokenizer -> BPE; decoding maps
// the byte-level characters back to bytes and repairs invalid UTF-8 like from_utf8_lossy.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#if GMSA_HAVE_ICU
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#endif

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "gmsa/text/bpe_tokenizer.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------
namespace {

bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

// Length of the well-formed sequence starting at s[i] (Unicode Table 3-7), or the length of
// its maximal ill-formed subpart negated (-1..-3).
int utf8_sequence(std::string_view s, size_t i) {
  auto at = [&](size_t k) -> int { return i + k < s.size() ? (unsigned char)s[i + k] : -1; };
  int b0 = at(0);
  if (b0 < 0x80) return 1;
  int width;
  int lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    width = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    width = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    width = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;
  }
  int b1 = at(1);
  if (b1 < lo || b1 > hi) return -1;
  for (int k = 2; k < width; ++k) {
    int b = at(k);
    if (b < 0 || !is_cont((unsigned char)b)) return -k;
  }
  return width;
}

size_t utf8_char_len(std::string_view s, size_t i) {
  int n = utf8_sequence(s, i);
  return n > 0 ? size_t(n) : 1;
}

// Decodes the (valid) character at s[i].
char32_t decode_utf8(std::string_view s, size_t i, size_t len) {
  auto b = [&](size_t k) { return char32_t((unsigned char)s[i + k]); };
  switch (len) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

// Rust's char::is_whitespace (the Unicode White_Space property), used by lstrip/rstrip.
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

}  // namespace

size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if ((unsigned char)s[i] < 0x80) {
      ++i;
      continue;
    }
    int n = utf8_sequence(s, i);
    if (n < 0) return i;
    i += size_t(n);
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    int n = utf8_sequence(bytes, i);
    if (n > 0) {
      out.append(bytes.data() + i, size_t(n));
      i += size_t(n);
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += size_t(-n);
    }
  }
  return out;
}

namespace {

// ---------------------------------------------------------------------------------------------
// ByteLevel: GPT-2's reversible map from bytes to printable characters.
// ---------------------------------------------------------------------------------------------
struct ByteAlphabet {
  std::array<char32_t, 256> byte_to_char{};
  std::unordered_map<char32_t, uint8_t> char_to_byte;
  ByteAlphabet() {
    // Printable Latin-1 bytes stand for themselves; the other 68 get U+0100, U+0101, ... in order.
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_to_char[b] = printable ? char32_t(b) : next++;
      char_to_byte[byte_to_char[b]] = uint8_t(b);
    }
  }
  // The raw bytes a byte-level string stands for; false if a character is not in the alphabet.
  bool to_bytes(std::string_view s, std::string& out) const {
    out.clear();
    for (size_t i = 0; i < s.size();) {
      size_t len = utf8_char_len(s, i);
      auto it = char_to_byte.find(decode_utf8(s, i, len));
      if (it == char_to_byte.end()) return false;
      out += char(it->second);
      i += len;
    }
    return true;
  }
  std::string to_chars(std::string_view bytes) const {
    std::string out;
    for (unsigned char b : bytes) append_utf8(out, byte_to_char[b]);
    return out;
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet a;
  return a;
}

// ---------------------------------------------------------------------------------------------
// PCRE2 regex with Oniguruma's \s (what `tokenizers` uses): PCRE2's UCP \s also matches U+180E,
// which is not White_Space, so \s and \S are spelled out before compiling.
// ---------------------------------------------------------------------------------------------
constexpr const char* kSpaceBody = "\\t-\\r\\x{85}\\p{Z}";

std::string spell_out_whitespace(const std::string& p, const std::string& where) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char d = p[++i];
      if (d == 's') {
        out += in_class ? std::string(kSpaceBody) : fmt::format("[{}]", kSpaceBody);
      } else if (d == 'S') {
        if (in_class) fail("{}: \\S inside a character class is not supported", where);
        out += fmt::format("[^{}]", kSpaceBody);
      } else {
        out += c;
        out += d;
      }
      continue;
    }
    out += c;
    if (!in_class && c == '[') {
      in_class = true;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ']' is literal
    } else if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      size_t end = p.find(":]", i + 2);  // POSIX class such as [:alpha:]
      if (end != std::string::npos) {
        out.append(p, i + 1, end + 2 - (i + 1));
        i = end + 1;
      }
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

class Regex {
 public:
  Regex(const std::string& pattern, bool literal, const std::string& where) {
    std::string compiled = literal ? pattern : spell_out_whitespace(pattern, where);
    uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    int err = 0;
    PCRE2_SIZE err_off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(), options,
                          &err, &err_off, nullptr);
    if (!code_)
      fail("{}: cannot compile regex /{}/: {} (at pattern offset {})", where, pattern, message(err),
           err_off);
    // JIT is an optimisation: when the platform lacks it the interpreter still works.
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_match(start, end) for each match, left to right, the way Oniguruma's find_iter
  // (used by `tokenizers`) walks: an empty match right where the previous match ended is
  // skipped by advancing one character. The subject must be valid UTF-8.
  template <typename F>
  void for_each_match(std::string_view subject, F&& on_match) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    GMSA_CHECK(md, "out of memory for regex match data");
    auto subj = reinterpret_cast<PCRE2_SPTR>(subject.data());
    size_t pos = 0, last_match_end = std::string_view::npos;
    while (pos <= subject.size()) {
      int rc = pcre2_match(code_, subj, subject.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // deep backtracking: retry with the interpreter
        rc = pcre2_match(code_, subj, subject.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                         md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) return;
      if (rc < 0) fail("regex match failed: {}", message(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      size_t start = ov[0], end = ov[1];
      if (start == end && end == last_match_end) {
        if (pos >= subject.size()) return;
        pos += utf8_char_len(subject, pos);
        continue;
      }
      on_match(start, end);
      pos = last_match_end = end;
    }
  }

 private:
  static std::string message(int code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(code, buf, sizeof buf);
    return reinterpret_cast<const char*>(buf);
  }
  pcre2_code* code_ = nullptr;
};

// GPT-2's split pattern, used by ByteLevel(use_regex=true).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---------------------------------------------------------------------------------------------
// NFC normalization (Qwen2/3): ICU when built with it; otherwise only text that NFC cannot
// change is accepted.
// ---------------------------------------------------------------------------------------------
std::string nfc(std::string_view s) {
#if GMSA_HAVE_ICU
  bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return (unsigned char)c < 0x80; });
  if (ascii) return std::string(s);
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) fail("ICU NFC normalizer unavailable: {}", u_errorName(status));
  icu::StringPiece piece(s.data(), int32_t(s.size()));
  if (n->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(s);
  status = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, int32_t(s.size()));
  n->normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) fail("NFC normalization failed: {}", u_errorName(status));
  return out;
#else
  // Below U+0300 nothing decomposes and nothing combines with a preceding character, so such
  // text is already NFC (the first combining marks are U+0300..U+036F).
  for (size_t i = 0; i < s.size();) {
    size_t len = utf8_char_len(s, i);
    if (decode_utf8(s, i, len) >= 0x300)
      fail("this tokenizer has an NFC normalizer and the text holds U+{:04X} at byte {}, but this "
           "build has no ICU (install libicu-dev and rebuild with GMSA_HAVE_ICU)",
           uint32_t(decode_utf8(s, i, len)), i);
    i += len;
  }
  return std::string(s);
#endif
}

// ---------------------------------------------------------------------------------------------
// Added tokens: a byte trie giving the leftmost-longest match (Aho-Corasick LeftmostLongest).
// ---------------------------------------------------------------------------------------------
class TokenTrie {
 public:
  void add(std::string_view content, int token_index) {
    if (content.empty()) return;
    int node = 0;
    for (unsigned char b : content) {
      int child = find_child(node, b);
      if (child < 0) {
        child = int(nodes_.size());
        nodes_[node].children.emplace_back(b, child);
        nodes_.emplace_back();
      }
      node = child;
    }
    nodes_[node].token_index = token_index;
    first_byte_[(unsigned char)content[0]] = true;
  }
  bool empty() const { return nodes_.size() == 1; }

  struct Match {
    size_t start = 0, end = 0;
    int token_index = -1;
  };
  // The leftmost match starting at or after `from`, longest among those starting there.
  bool find(std::string_view s, size_t from, Match* m) const {
    for (size_t i = from; i < s.size(); ++i) {
      if (!first_byte_[(unsigned char)s[i]]) continue;
      int node = 0, best = -1;
      size_t best_end = 0;
      for (size_t k = i; k < s.size(); ++k) {
        node = find_child(node, (unsigned char)s[k]);
        if (node < 0) break;
        if (nodes_[node].token_index >= 0) {
          best = nodes_[node].token_index;
          best_end = k + 1;
        }
      }
      if (best >= 0) {
        *m = {i, best_end, best};
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int token_index = -1;
  };
  int find_child(int node, unsigned char b) const {
    for (auto& [byte, child] : nodes_[node].children)
      if (byte == b) return child;
    return -1;
  }
  std::vector<Node> nodes_{1};
  bool first_byte_[256] = {};
};

// A piece of the input: either text (token_index < 0) or an added token.
struct Segment {
  size_t start, end;
  int token_index;
};

// ---------------------------------------------------------------------------------------------
// Per-word BPE results, shared by threads: sharded to keep lock contention low, each shard
// cleared when full (words are short and recomputing them is cheap).
// ---------------------------------------------------------------------------------------------
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 64;
  bool get(const std::string& word, std::vector<int>& out) {
    Shard& s = shard(word);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(word);
    if (it == s.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void put(const std::string& word, const int* ids, size_t n) {
    Shard& s = shard(word);
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.map.size() >= kEntriesPerShard) s.map.clear();
    s.map.emplace(word, std::vector<int>(ids, ids + n));
  }

 private:
  static constexpr size_t kShards = 16, kEntriesPerShard = 4096;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int>> map;
  };
  Shard& shard(const std::string& word) { return shards_[std::hash<std::string>()(word) % kShards]; }
  std::array<Shard, kShards> shards_;
};

// ---------------------------------------------------------------------------------------------
// tokenizer.json reading helpers: every error names the file and the JSON path.
// ---------------------------------------------------------------------------------------------
struct JsonCtx {
  std::string origin;
  [[noreturn]] void error(const std::string& where, const std::string& what) const {
    fail("{}: {}: {}", origin, where, what);
  }
  const json& get(const json& obj, const std::string& key, const std::string& where) const {
    if (!obj.is_object()) error(where, "expected a JSON object");
    auto it = obj.find(key);
    if (it == obj.end()) error(where, fmt::format("missing key '{}'", key));
    return *it;
  }
  std::string str(const json& v, const std::string& where) const {
    if (!v.is_string()) error(where, fmt::format("expected a string, got {}", v.type_name()));
    return v.get<std::string>();
  }
  bool flag(const json& obj, const std::string& key, bool dflt, const std::string& where) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return dflt;
    if (!it->is_boolean()) error(where + "." + key, "expected true or false");
    return it->get<bool>();
  }
  std::string type(const json& obj, const std::string& where) const {
    return str(get(obj, "type", where), where + ".type");
  }
};

enum class SplitBehavior { Isolated, Removed };

// One pre-tokenizer operation; ByteLevel's byte mapping itself is implicit (BPE runs on bytes).
struct PreTokStep {
  std::shared_ptr<Regex> regex;  // null: the "prefix space" step
  SplitBehavior behavior = SplitBehavior::Isolated;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// The tokenizer
// ---------------------------------------------------------------------------------------------
struct BpeTokenizer::Impl {
  std::string origin;
  // Model.
  std::vector<std::string> id_to_token;   // byte-level strings; "" where no token has the id
  std::vector<uint8_t> id_present;
  std::unordered_map<std::string, int> token_to_id;
  std::unordered_map<std::string, int> bytes_to_id;  // raw-byte form, for ignore_merges
  std::unordered_map<uint64_t, std::pair<int, int>> merges;  // (left, right) -> (rank, merged)
  std::array<int, 256> byte_id{};  // id of each byte's single-character token, -1 if absent
  int unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;
  // Pipeline.
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int> added_by_content;  // content -> id
  std::unordered_map<int, size_t> added_by_id;             // id -> index into `added`
  TokenTrie raw_trie, normalized_trie;
  std::shared_ptr<Regex> word_char;  // for single_word added tokens
  bool nfc = false;
  std::vector<PreTokStep> steps;
  // Decoding and special ids.
  std::vector<std::string> decoded;  // bytes each id decodes to
  std::vector<uint8_t> special;
  int bos = -1, eos = -1, pad = -1;
  bool add_bos = false;
  mutable WordCache cache;

  // ---- loading ----
  void load_model(const JsonCtx& c, const json& m);
  void load_merges(const JsonCtx& c, const json& list);
  void load_added(const JsonCtx& c, const json& list);
  void load_normalizer(const JsonCtx& c, const json& n, const std::string& where);
  bool load_pre_tokenizer(const JsonCtx& c, const json& p, const std::string& where);
  void check_decoder(const JsonCtx& c, const json& d, const std::string& where);
  void read_post_processor(const json& p, int* template_bos);
  void load_config(const JsonCtx& c, const json& cfg, int template_bos);
  void finish();

  // ---- encoding ----
  std::string normalize(std::string_view s) const { return nfc ? gmsa::nfc(s) : std::string(s); }
  std::vector<Segment> split_added(std::string_view s, const TokenTrie& trie) const;
  bool ends_with_word(std::string_view s) const;
  bool starts_with_word(std::string_view s) const;
  template <typename OnToken, typename OnPiece>
  void walk(std::string_view text, OnToken&& on_token, OnPiece&& on_piece) const;
  template <typename OnPiece>
  void apply_steps(std::string_view piece, size_t step, OnPiece&& on_piece) const;
  void bpe(std::string_view word, std::vector<int>& out) const;
  void merge_word(std::string_view word, std::vector<int>& out) const;

  int lookup(std::string_view piece) const {
    std::string key(piece);
    auto a = added_by_content.find(key);
    if (a != added_by_content.end()) return a->second;
    auto it = token_to_id.find(key);
    return it == token_to_id.end() ? -1 : it->second;
  }
};

void BpeTokenizer::Impl::load_model(const JsonCtx& c, const json& m) {
  std::string type = m.contains("type") ? c.type(m, "model") : "BPE";
  if (type != "BPE")
    c.error("model.type", fmt::format("unsupported model type '{}' (supported: BPE)", type));
  auto dropout = m.find("dropout");
  if (dropout != m.end() && !dropout->is_null() && dropout->get<double>() != 0.0)
    c.error("model.dropout", "BPE dropout is not supported (it makes encoding random)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = m.find(key);
    if (it != m.end() && !it->is_null() && !c.str(*it, key).empty())
      c.error(std::string("model.") + key, "not supported for byte-level BPE");
  }
  if (c.flag(m, "byte_fallback", false, "model"))
    c.error("model.byte_fallback", "byte_fallback is not supported for byte-level BPE");
  fuse_unk = c.flag(m, "fuse_unk", false, "model");
  ignore_merges = c.flag(m, "ignore_merges", false, "model");

  const json& vocab = c.get(m, "vocab", "model");
  if (!vocab.is_object()) c.error("model.vocab", "expected an object of token -> id");
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX)
      c.error("model.vocab", fmt::format("token '{}' has no valid id", it.key()));
    int id = it.value().get<int>();
    if (size_t(id) >= id_to_token.size()) {
      id_to_token.resize(size_t(id) + 1);
      id_present.resize(size_t(id) + 1, 0);
    }
    id_to_token[size_t(id)] = it.key();
    id_present[size_t(id)] = 1;
    token_to_id[it.key()] = id;
  }
  const auto& alphabet = byte_alphabet();
  std::string bytes;
  for (const auto& [token, id] : token_to_id)
    if (alphabet.to_bytes(token, bytes)) bytes_to_id[bytes] = id;
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(ch, alphabet.byte_to_char[size_t(b)]);
    auto it = token_to_id.find(ch);
    byte_id[size_t(b)] = it == token_to_id.end() ? -1 : it->second;
  }
  auto unk = m.find("unk_token");
  if (unk != m.end() && !unk->is_null()) {
    std::string u = c.str(*unk, "model.unk_token");
    auto it = token_to_id.find(u);
    if (it == token_to_id.end()) c.error("model.unk_token", fmt::format("'{}' is not in the vocabulary", u));
    unk_id = it->second;
  }
  load_merges(c, c.get(m, "merges", "model"));
}

void BpeTokenizer::Impl::load_merges(const JsonCtx& c, const json& list) {
  if (!list.is_array()) c.error("model.merges", "expected an array");
  merges.reserve(list.size());
  auto id_of = [&](const std::string& token, const std::string& where) {
    auto it = token_to_id.find(token);
    if (it == token_to_id.end()) c.error(where, fmt::format("'{}' is not in the vocabulary", token));
    return it->second;
  };
  for (size_t rank = 0; rank < list.size(); ++rank) {
    std::string where = fmt::format("model.merges[{}]", rank);
    const json& e = list[rank];
    std::string a, b;
    if (e.is_string()) {  // "a b"
      const std::string& s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        c.error(where, fmt::format("'{}' is not two tokens separated by one space", s));
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2) {  // ["a", "b"]
      a = c.str(e[0], where);
      b = c.str(e[1], where);
    } else {
      c.error(where, "expected \"a b\" or [\"a\", \"b\"]");
    }
    uint64_t key = (uint64_t(uint32_t(id_of(a, where))) << 32) | uint32_t(id_of(b, where));
    // A repeated pair keeps its last rank, as a hash-map insert in `tokenizers` does.
    merges[key] = {int(rank), id_of(a + b, where)};
  }
}

void BpeTokenizer::Impl::load_added(const JsonCtx& c, const json& list) {
  if (list.is_null()) return;
  if (!list.is_array()) c.error("added_tokens", "expected an array");
  for (size_t i = 0; i < list.size(); ++i) {
    std::string where = fmt::format("added_tokens[{}]", i);
    const json& e = list[i];
    AddedToken t;
    const json& id = c.get(e, "id", where);
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      c.error(where + ".id", "expected a non-negative integer");
    t.id = id.get<int>();
    t.content = c.str(c.get(e, "content", where), where + ".content");
    if (t.content.empty()) c.error(where + ".content", "empty");
    t.special = c.flag(e, "special", false, where);
    t.single_word = c.flag(e, "single_word", false, where);
    t.lstrip = c.flag(e, "lstrip", false, where);
    t.rstrip = c.flag(e, "rstrip", false, where);
    t.normalized = c.flag(e, "normalized", !t.special, where);
    added.push_back(std::move(t));
  }
}

void BpeTokenizer::Impl::load_normalizer(const JsonCtx& c, const json& n, const std::string& where) {
  if (n.is_null()) return;
  std::string type = c.type(n, where);
  if (type == "NFC") {
    nfc = true;
  } else if (type == "Sequence") {
    const json& list = c.get(n, "normalizers", where);
    if (!list.is_array()) c.error(where + ".normalizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      load_normalizer(c, list[i], fmt::format("{}.normalizers[{}]", where, i));
  } else {
    c.error(where, fmt::format("unsupported normalizer type '{}' (supported: NFC, Sequence)", type));
  }
}

// Appends the steps of one pre-tokenizer; returns true if it holds the ByteLevel step.
bool BpeTokenizer::Impl::load_pre_tokenizer(const JsonCtx& c, const json& p, const std::string& where) {
  std::string type = c.type(p, where);
  if (type == "Sequence") {
    const json& list = c.get(p, "pretokenizers", where);
    if (!list.is_array()) c.error(where + ".pretokenizers", "expected an array");
    bool byte_level = false;
    for (size_t i = 0; i < list.size(); ++i) {
      std::string w = fmt::format("{}.pretokenizers[{}]", where, i);
      if (byte_level) c.error(w, "nothing may follow the ByteLevel pre-tokenizer");
      byte_level = load_pre_tokenizer(c, list[i], w);
    }
    return byte_level;
  }
  if (type == "Split") {
    const json& pat = c.get(p, "pattern", where);
    bool literal = pat.contains("String");
    if (!literal && !pat.contains("Regex")) c.error(where + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
    std::string text = c.str(pat.at(literal ? "String" : "Regex"), where + ".pattern");
    std::string behavior = c.str(c.get(p, "behavior", where), where + ".behavior");
    if (c.flag(p, "invert", false, where)) c.error(where + ".invert", "invert: true is not supported");
    PreTokStep step{std::make_shared<Regex>(text, literal, c.origin + ": " + where + ".pattern")};
    if (behavior == "Isolated") step.behavior = SplitBehavior::Isolated;
    else if (behavior == "Removed") step.behavior = SplitBehavior::Removed;
    else c.error(where + ".behavior", fmt::format("unsupported split behavior '{}' (supported: Isolated, Removed)", behavior));
    steps.push_back(std::move(step));
    return false;
  }
  if (type == "ByteLevel") {
    if (c.flag(p, "add_prefix_space", true, where)) steps.push_back(PreTokStep{});
    if (c.flag(p, "use_regex", true, where))
      steps.push_back(PreTokStep{std::make_shared<Regex>(kGpt2Pattern, false, "GPT-2 pattern")});
    return true;
  }
  c.error(where, fmt::format("unsupported pre-tokenizer type '{}' (supported: Sequence, Split, ByteLevel)", type));
}

void BpeTokenizer::Impl::check_decoder(const JsonCtx& c, const json& d, const std::string& where) {
  if (d.is_null()) c.error(where, "no decoder; byte-level BPE needs the ByteLevel decoder");
  std::string type = c.type(d, where);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = c.get(d, "decoders", where);
    if (!list.is_array() || list.size() != 1) c.error(where, "only a Sequence of one ByteLevel decoder is supported");
    return check_decoder(c, list[0], where + ".decoders[0]");
  }
  c.error(where, fmt::format("unsupported decoder type '{}' (supported: ByteLevel)", type));
}

// The post-processor only tells which token a model expects first (LLaMA-3's TemplateProcessing
// puts <|begin_of_text|> there); encode() never applies it.
void BpeTokenizer::Impl::read_post_processor(const json& p, int* template_bos) {
  if (!p.is_object()) return;
  std::string type = p.value("type", "");
  if (type == "Sequence" && p.contains("processors") && p["processors"].is_array()) {
    for (const json& sub : p["processors"]) read_post_processor(sub, template_bos);
  } else if (type == "TemplateProcessing" && p.contains("single") && p["single"].is_array() &&
             !p["single"].empty() && p["single"][0].contains("SpecialToken")) {
    std::string name = p["single"][0]["SpecialToken"].value("id", "");
    const json& specials = p.value("special_tokens", json::object());
    if (specials.contains(name) && specials[name].contains("ids") && !specials[name]["ids"].empty())
      *template_bos = specials[name]["ids"][0].get<int>();
  }
}

void BpeTokenizer::Impl::load_config(const JsonCtx& c, const json& cfg, int template_bos) {
  auto resolve = [&](const char* key) {
    auto it = cfg.find(key);
    if (it == cfg.end() || it->is_null()) return -1;
    const json& v = it->is_object() ? c.get(*it, "content", key) : *it;
    std::string content = c.str(v, key);
    int id = lookup(content);
    if (id < 0) c.error(key, fmt::format("'{}' is not a token of tokenizer.json", content));
    return id;
  };
  bos = resolve("bos_token");
  eos = resolve("eos_token");
  pad = resolve("pad_token");
  if (bos < 0) bos = template_bos;
  add_bos = template_bos >= 0;
  auto flag = cfg.find("add_bos_token");
  if (flag != cfg.end() && flag->is_boolean()) add_bos = flag->get<bool>() && bos >= 0;
}

void BpeTokenizer::Impl::finish() {
  size_t n = id_to_token.size();
  for (const auto& t : added) n = std::max(n, size_t(t.id) + 1);
  id_to_token.resize(n);
  id_present.resize(n, 0);
  decoded.assign(n, "");
  special.assign(n, 0);
  const auto& alphabet = byte_alphabet();
  // The ByteLevel decoder maps a token's characters back to bytes; a token with a character
  // outside the byte alphabet (e.g. an added "<|x|> y" with a space) passes through as UTF-8.
  auto decode_token = [&](const std::string& s) {
    std::string bytes;
    return alphabet.to_bytes(s, bytes) ? bytes : s;
  };
  for (size_t id = 0; id < n; ++id)
    if (id_present[id]) decoded[id] = decode_token(id_to_token[id]);
  for (size_t i = 0; i < added.size(); ++i) {
    const AddedToken& t = added[i];
    added_by_content[t.content] = t.id;
    added_by_id[t.id] = i;
    decoded[size_t(t.id)] = decode_token(t.content);
    id_present[size_t(t.id)] = 1;
    // `tokenizers` decides "special" by the token's string, so a vocabulary entry spelled like a
    // special token is skipped as well.
    if (t.special) {
      special[size_t(t.id)] = 1;
      auto it = token_to_id.find(t.content);
      if (it != token_to_id.end()) special[size_t(it->second)] = 1;
    }
    std::string content = t.normalized ? normalize(t.content) : t.content;
    (t.normalized ? normalized_trie : raw_trie).add(content, int(i));
  }
  bool any_single_word = std::any_of(added.begin(), added.end(), [](auto& t) { return t.single_word; });
  // \w of Rust's regex crate (UTS #18): Alphabetic, marks, decimal digits, connectors, joiners.
  if (any_single_word)
    word_char = std::make_shared<Regex>(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}])", false, "\\w");
}

// ---- encoding ----

bool BpeTokenizer::Impl::ends_with_word(std::string_view s) const {
  if (s.empty()) return false;
  size_t i = s.size() - 1;
  while (i > 0 && is_cont((unsigned char)s[i])) --i;
  bool hit = false;
  word_char->for_each_match(s.substr(i), [&](size_t, size_t) { hit = true; });
  return hit;
}

bool BpeTokenizer::Impl::starts_with_word(std::string_view s) const {
  if (s.empty()) return false;
  bool hit = false;
  word_char->for_each_match(s.substr(0, utf8_char_len(s, 0)), [&](size_t, size_t) { hit = true; });
  return hit;
}

// `tokenizers`' AddedVocabulary::find_matches: the splits covering `s`, added tokens marked.
std::vector<Segment> BpeTokenizer::Impl::split_added(std::string_view s, const TokenTrie& trie) const {
  std::vector<Segment> out;
  size_t done = 0, from = 0;
  TokenTrie::Match m;
  while (!trie.empty() && trie.find(s, from, &m)) {
    from = m.end;  // the search resumes after the raw match, whatever the strips do
    const AddedToken& t = added[size_t(m.token_index)];
    size_t start = m.start, stop = m.end;
    if (t.single_word && ((start > 0 && ends_with_word(s.substr(0, start))) ||
                          (stop < s.size() && starts_with_word(s.substr(stop)))))
      continue;
    if (t.lstrip) {
      size_t k = start;
      while (k > 0) {
        size_t p = k - 1;
        while (p > 0 && is_cont((unsigned char)s[p])) --p;
        if (!is_white_space(decode_utf8(s, p, k - p))) break;
        k = p;
      }
      start = std::max(k, done);
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t len = utf8_char_len(s, stop);
        if (!is_white_space(decode_utf8(s, stop, len))) break;
        stop += len;
      }
    }
    if (done < start) out.push_back({done, start, -1});
    out.push_back({start, stop, m.token_index});
    done = stop;
  }
  if (done < s.size()) out.push_back({done, s.size(), -1});
  return out;
}

template <typename OnPiece>
void BpeTokenizer::Impl::apply_steps(std::string_view piece, size_t step, OnPiece&& on_piece) const {
  if (piece.empty()) return;  // `tokenizers` drops empty splits
  if (step == steps.size()) return on_piece(piece);
  const PreTokStep& st = steps[step];
  if (!st.regex) {  // ByteLevel add_prefix_space
    if (piece[0] == ' ') return apply_steps(piece, step + 1, on_piece);
    std::string spaced = " " + std::string(piece);
    return apply_steps(spaced, step + 1, on_piece);
  }
  size_t prev = 0;
  st.regex->for_each_match(piece, [&](size_t start, size_t end) {
    apply_steps(piece.substr(prev, start - prev), step + 1, on_piece);
    if (st.behavior == SplitBehavior::Isolated) apply_steps(piece.substr(start, end - start), step + 1, on_piece);
    prev = end;
  });
  apply_steps(piece.substr(prev), step + 1, on_piece);
}

// Walks the pipeline: on_token(id) for added tokens, on_piece(bytes) for pre-tokenized words.
template <typename OnToken, typename OnPiece>
void BpeTokenizer::Impl::walk(std::string_view text, OnToken&& on_token, OnPiece&& on_piece) const {
  size_t bad = find_invalid_utf8(text);
  if (bad != std::string_view::npos)
    fail("invalid UTF-8 at byte offset {} (byte 0x{:02X})", bad, (unsigned char)text[bad]);
  for (const Segment& raw : split_added(text, raw_trie)) {
    if (raw.token_index >= 0) {
      on_token(added[size_t(raw.token_index)].id);
      continue;
    }
    std::string_view part = text.substr(raw.start, raw.end - raw.start);
    if (part.empty()) continue;
    std::string normalized = normalize(part);
    for (const Segment& seg : split_added(normalized, normalized_trie)) {
      if (seg.token_index >= 0) on_token(added[size_t(seg.token_index)].id);
      else apply_steps(std::string_view(normalized).substr(seg.start, seg.end - seg.start), 0, on_piece);
    }
  }
}

void BpeTokenizer::Impl::bpe(std::string_view word, std::vector<int>& out) const {
  if (word.size() == 1 && byte_id[(unsigned char)word[0]] >= 0) {
    out.push_back(byte_id[(unsigned char)word[0]]);
    return;
  }
  if (ignore_merges) {  // LLaMA-3: a word that is itself a token skips the merges
    auto it = bytes_to_id.find(std::string(word));
    if (it != bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() > WordCache::kMaxWordBytes) return merge_word(word, out);
  std::string key(word);
  if (cache.get(key, out)) return;
  size_t first = out.size();
  merge_word(word, out);
  cache.put(key, out.data() + first, out.size() - first);
}

// Merges by rank with a min-heap of candidate pairs over a linked list of symbols:
// O(n log n) in the word length. Ties go to the leftmost pair, as in `tokenizers`.
void BpeTokenizer::Impl::merge_word(std::string_view word, std::vector<int>& out) const {
  struct Sym {
    int id, prev, next;
  };
  struct Cand {
    int rank, pos, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  thread_local std::vector<Sym> syms;
  thread_local std::vector<Cand> heap;
  syms.clear();
  heap.clear();
  bool last_unk = false;
  for (unsigned char b : word) {
    int id = byte_id[b];
    if (id < 0) {  // a byte without a token: unk (fused if asked) or dropped, as `tokenizers` does
      if (unk_id < 0 || (fuse_unk && last_unk)) continue;
      id = unk_id;
    }
    last_unk = byte_id[b] < 0;
    int n = int(syms.size());
    syms.push_back({id, n - 1, n + 1});
  }
  if (syms.empty()) return;
  syms.back().next = -1;
  auto pair_of = [&](int left) -> const std::pair<int, int>* {
    int right = syms[size_t(left)].next;
    if (right < 0) return nullptr;
    auto it = merges.find((uint64_t(uint32_t(syms[size_t(left)].id)) << 32) | uint32_t(syms[size_t(right)].id));
    return it == merges.end() ? nullptr : &it->second;
  };
  auto push = [&](int left) {
    if (const auto* p = pair_of(left)) {
      heap.push_back({p->first, left, p->second});
      std::push_heap(heap.begin(), heap.end(), std::greater<Cand>());
    }
  };
  for (int i = 0; i + 1 < int(syms.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Cand>());
    Cand c = heap.back();
    heap.pop_back();
    Sym& left = syms[size_t(c.pos)];
    if (left.id < 0) continue;  // merged into its left neighbour meanwhile
    const auto* p = pair_of(c.pos);
    if (!p || p->first != c.rank || p->second != c.merged) continue;  // stale candidate
    int right = left.next;
    left.id = c.merged;
    left.next = syms[size_t(right)].next;
    syms[size_t(right)].id = -1;
    if (left.next >= 0) syms[size_t(left.next)].prev = c.pos;
    if (left.prev >= 0) push(left.prev);
    push(c.pos);
  }
  for (int i = 0; i >= 0; i = syms[size_t(i)].next) out.push_back(syms[size_t(i)].id);
}

// ---------------------------------------------------------------------------------------------
// BpeTokenizer
// ---------------------------------------------------------------------------------------------
BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_json(const std::string& tokenizer_json,
                                                      const std::string& config_json,
                                                      const std::string& origin) {
  JsonCtx c{origin};
  json root;
  try {
    root = json::parse(tokenizer_json);
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON: {}", origin, e.what());
  }
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;
  try {
    impl->load_model(c, c.get(root, "model", "(top level)"));
    impl->load_added(c, root.value("added_tokens", json()));
    impl->load_normalizer(c, root.value("normalizer", json()), "normalizer");
    json pre = root.value("pre_tokenizer", json());
    if (pre.is_null() || !impl->load_pre_tokenizer(c, pre, "pre_tokenizer"))
      c.error("pre_tokenizer", "byte-level BPE needs a ByteLevel pre-tokenizer");
    impl->check_decoder(c, root.value("decoder", json()), "decoder");
    int template_bos = -1;
    impl->read_post_processor(root.value("post_processor", json()), &template_bos);
    impl->finish();
    json cfg = json::object();
    if (!config_json.empty()) {
      try {
        cfg = json::parse(config_json);
      } catch (const json::parse_error& e) {
        fail("{}: tokenizer_config.json is not valid JSON: {}", origin, e.what());
      }
    }
    JsonCtx cc{origin + " (tokenizer_config.json)"};
    impl->load_config(cc, cfg, template_bos);
  } catch (const json::exception& e) {  // a value of the wrong JSON type somewhere
    fail("{}: unexpected content: {}", origin, e.what());
  }
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(impl)));
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::load(const std::string& path) {
  std::string dir = ".";
  size_t slash = path.find_last_of('/');
  if (slash != std::string::npos) dir = path.substr(0, slash);
  std::string config_path = join_path(dir, "tokenizer_config.json");
  std::string config = file_exists(config_path) ? read_file(config_path) : std::string();
  return from_json(read_file(path), config, path);
}

std::vector<int> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 4);
  impl_->walk(
      text, [&](int id) { ids.push_back(id); }, [&](std::string_view w) { impl_->bpe(w, ids); });
  return ids;
}

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string> pieces;
  impl_->walk(
      text, [](int) {}, [&](std::string_view w) { pieces.emplace_back(w); });
  return pieces;
}

std::string BpeTokenizer::decode(const std::vector<int>& ids) const {
  std::string bytes;
  for (int id : ids) {
    if (id < 0 || size_t(id) >= impl_->decoded.size() || !impl_->id_present[size_t(id)] ||
        impl_->special[size_t(id)])
      continue;
    bytes += impl_->decoded[size_t(id)];
  }
  return utf8_lossy(bytes);
}

int BpeTokenizer::vocab_size() const { return int(impl_->decoded.size()); }

std::string BpeTokenizer::id_to_piece(int id) const {
  auto a = impl_->added_by_id.find(id);
  if (a != impl_->added_by_id.end()) return impl_->added[a->second].content;
  if (id < 0 || size_t(id) >= impl_->id_to_token.size()) return "";
  return impl_->id_to_token[size_t(id)];
}

int BpeTokenizer::piece_to_id(std::string_view piece) const { return impl_->lookup(piece); }
bool BpeTokenizer::is_special(int id) const {
  return id >= 0 && size_t(id) < impl_->special.size() && impl_->special[size_t(id)];
}
int BpeTokenizer::bos_id() const { return impl_->bos; }
int BpeTokenizer::eos_id() const { return impl_->eos; }
int BpeTokenizer::pad_id() const { return impl_->pad; }
bool BpeTokenizer::adds_bos() const { return impl_->add_bos; }
const std::vector<AddedToken>& BpeTokenizer::added_tokens() const { return impl_->added; }

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& tokenizer_json_path) {
  return BpeTokenizer::load(tokenizer_json_path);
}

}  // namespace gmsa
