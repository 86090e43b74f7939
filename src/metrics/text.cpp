// Text transforms of the metrics: Python str helpers on UTF-8, sacreBLEU's 13a tokenizer,
// rouge-score's tokenizer and SQuAD's answer normalisation.
#include <locale.h>

#include <cwctype>

#include "gmsa/metrics/metrics.h"
#include "gmsa/util/error.h"

namespace gmsa::metrics {
namespace {

struct Utf8Char {
  char32_t cp;
  std::size_t len;
  bool valid;
};

// Decodes the code point starting at s[i]; an invalid, overlong or truncated sequence decodes
// as one invalid byte so it can be passed through verbatim.
Utf8Char decode_at(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1, true};
  const Utf8Char invalid{0xFFFD, 1, false};
  const std::size_t len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
  if (len == 0 || b0 > 0xF4 || i + len > s.size()) return invalid;
  char32_t cp = b0 & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return invalid;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr char32_t kMinForLen[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMinForLen[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return invalid;
  return {cp, len, true};
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Python's str.isspace().
bool is_py_space(char32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_space_at(std::string_view s, std::size_t i, std::size_t* len) {
  const Utf8Char ch = decode_at(s, i);
  *len = ch.len;
  return ch.valid && is_py_space(ch.cp);
}

// Unicode case tables come from the C library's UTF-8 locale, loaded once, and only when
// non-ASCII text needs them.
locale_t unicode_ctype() {
  static const locale_t loc = [] {
    for (const char* name : {"C.UTF-8", "C.utf8", "en_US.UTF-8"})
      if (locale_t l = newlocale(LC_CTYPE_MASK, name, static_cast<locale_t>(0))) return l;
    return static_cast<locale_t>(0);
  }();
  GMSA_CHECK(loc != static_cast<locale_t>(0),
             "metrics: non-ASCII text needs a UTF-8 locale (C.UTF-8) for Unicode case and "
             "character classes, and none is installed");
  return loc;
}

bool is_ascii_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ascii_alnum(char c) {
  return is_ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Python's regex \w on str: letters, numbers and '_'.
bool is_word_char(const Utf8Char& ch) {
  if (!ch.valid) return false;
  if (ch.cp < 0x80) return is_ascii_alnum(static_cast<char>(ch.cp)) || ch.cp == '_';
  return iswalnum_l(static_cast<wint_t>(ch.cp), unicode_ctype()) != 0;
}

std::string join_words(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  std::size_t pos = 0;
  for (std::size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// ---- 13a passes. Each mirrors one re.sub of sacreBLEU, left to right without overlaps.
// They run on bytes: every character the patterns name is ASCII, and a multi-byte character
// standing in for [^0-9] ends (or starts) with a non-digit byte, so the result equals the
// code-point version.

// ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 '
bool is_13a_symbol(char c) {
  return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') ||
         (c >= '(' && c <= '+') || (c >= ':' && c <= '@') || c == '/';
}

std::string pad_symbols(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (is_13a_symbol(c)) {
      out += ' ';
      out += c;
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

bool is_period_comma(char c) { return c == '.' || c == ','; }

// Applies "(first)(second) -> pre \1 mid \2 post" for byte pairs accepted by `match`.
template <typename Match>
std::string sub_pairs(std::string_view s, Match match, const char* pre, const char* mid,
                      const char* post) {
  std::string out;
  std::size_t i = 0;
  while (i < s.size()) {
    if (i + 1 < s.size() && match(s[i], s[i + 1])) {
      out.append(pre).append(1, s[i]).append(mid).append(1, s[i + 1]).append(post);
      i += 2;
    } else {
      out += s[i++];
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> split_whitespace(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  std::size_t len = 0;
  for (std::size_t i = 0; i < text.size(); i += len) {
    if (is_space_at(text, i, &len)) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word.append(text.substr(i, len));
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

std::string_view rstrip_whitespace(std::string_view text) {
  std::size_t end = 0, len = 0;
  for (std::size_t i = 0; i < text.size(); i += len)
    if (!is_space_at(text, i, &len)) end = i + len;
  return text.substr(0, end);
}

std::string to_lower(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const Utf8Char ch = decode_at(text, i);
    if (ch.cp < 0x80) {
      const char c = text[i];
      out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    } else if (!ch.valid) {
      out += text[i];
    } else if (ch.cp == 0x130) {  // the one full (multi-character) lowercase mapping
      out += "i\xCC\x87";
    } else {
      append_utf8(static_cast<char32_t>(towlower_l(static_cast<wint_t>(ch.cp), unicode_ctype())),
                  out);
    }
    i += ch.len;
  }
  return out;
}

std::vector<std::string> utf8_chars(std::string_view text) {
  std::vector<std::string> chars;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = decode_at(text, i).len;
    chars.emplace_back(text.substr(i, len));
    i += len;
  }
  return chars;
}

std::string tokenize_13a(std::string_view line) {
  std::string s(line);
  replace_all(s, "<skipped>", "");
  replace_all(s, "-\n", "");
  replace_all(s, "\n", " ");
  // Sequential, so "&amp;lt;" ends as "<" exactly as in sacreBLEU.
  replace_all(s, "&quot;", "\"");
  replace_all(s, "&amp;", "&");
  replace_all(s, "&lt;", "<");
  replace_all(s, "&gt;", ">");
  s = pad_symbols(" " + s + " ");
  // ([^0-9])([\.,]) -> '\1 \2 ': period and comma not preceded by a digit.
  s = sub_pairs(
      s, [](char a, char b) { return !is_ascii_digit(a) && is_period_comma(b); }, "", " ", " ");
  // ([\.,])([^0-9]) -> ' \1 \2': period and comma not followed by a digit.
  s = sub_pairs(
      s, [](char a, char b) { return is_period_comma(a) && !is_ascii_digit(b); }, " ", " ", "");
  // ([0-9])(-) -> '\1 \2 ': dash preceded by a digit.
  s = sub_pairs(
      s, [](char a, char b) { return is_ascii_digit(a) && b == '-'; }, "", " ", " ");
  return join_words(split_whitespace(s));
}

std::vector<std::string> rouge_tokenize(std::string_view text) {
  std::vector<std::string> tokens;
  std::string token;
  for (char c : to_lower(text)) {
    if ((c >= 'a' && c <= 'z') || is_ascii_digit(c)) {
      token += c;
    } else if (!token.empty()) {
      tokens.push_back(std::move(token));
      token.clear();
    }
  }
  if (!token.empty()) tokens.push_back(std::move(token));
  return tokens;
}

namespace {

// Python's string.punctuation.
bool is_ascii_punct(char c) {
  return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
         (c >= '{' && c <= '~');
}

// re.sub(r'\b(a|an|the)\b', ' ', text): a match is exactly a maximal run of word characters
// spelling an article, so runs are compared whole.
std::string remove_articles(std::string_view s) {
  std::string out, run;
  auto flush = [&] {
    out += (run == "a" || run == "an" || run == "the") ? std::string(" ") : run;
    run.clear();
  };
  for (std::size_t i = 0; i < s.size();) {
    const Utf8Char ch = decode_at(s, i);
    if (is_word_char(ch)) {
      run.append(s.substr(i, ch.len));
    } else {
      flush();
      out.append(s.substr(i, ch.len));
    }
    i += ch.len;
  }
  flush();
  return out;
}

}  // namespace

std::string normalize_answer(std::string_view text) {
  std::string no_punct;
  for (char c : to_lower(text))
    if (!is_ascii_punct(c)) no_punct += c;
  return join_words(split_whitespace(remove_articles(no_punct)));
}

}  // namespace gmsa::metrics
