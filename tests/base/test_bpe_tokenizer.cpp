// tokenizer.json byte-level BPE: small tokenizer.json files written here, expected ids derived
// by hand in the comments from the BPE rules (lowest merge rank first, leftmost on ties).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "gmsa/text/bpe_tokenizer.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

using gmsa::BpeTokenizer;
using json = nlohmann::json;

namespace {

// GPT-2's byte -> character map, written out independently of the implementation: printable
// Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in byte order.
std::string byte_char(int b) {
  static std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int next = 256;
    for (int i = 0; i < 256; ++i) {
      bool printable = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255);
      int cp = printable ? i : next++;
      std::string s;
      if (cp < 0x80) {
        s += char(cp);
      } else {
        s += char(0xC0 | (cp >> 6));
        s += char(0x80 | (cp & 0x3F));
      }
      t[size_t(i)] = s;
    }
    return t;
  }();
  return table[size_t(b)];
}

// Byte-level spelling of raw text ("a b" -> "aĠb").
std::string bl(const std::string& raw) {
  std::string s;
  for (unsigned char c : raw) s += byte_char(c);
  return s;
}

const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

json split_then_byte_level(const char* pattern) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
}

json gpt2_byte_level(bool add_prefix_space = false) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true}, {"use_regex", true}};
}

// Vocabulary: byte b has id b; `extra` tokens (raw text) get ids 256, 257, ... in order.
// Merges are raw-text pairs, ranked in the order given.
json make_tokenizer(const std::vector<std::string>& extra,
                    const std::vector<std::pair<std::string, std::string>>& merges,
                    json pre_tokenizer = gpt2_byte_level(), bool pair_list_merges = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[bl(extra[i])] = 256 + int(i);
  json m = json::array();
  for (auto& [a, b] : merges) {
    if (pair_list_merges) m.push_back({bl(a), bl(b)});
    else m.push_back(bl(a) + " " + bl(b));
  }
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre_tokenizer},
          {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
            {"vocab", vocab}, {"merges", m}}}};
}

json added(int id, const std::string& content, bool special = true) {
  return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", !special}, {"special", special}};
}

std::unique_ptr<BpeTokenizer> make(const json& j, const std::string& config = "") {
  return BpeTokenizer::from_json(j.dump(), config, "test.json");
}

std::string error_of(const json& j) {
  try {
    make(j);
  } catch (const gmsa::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The "hello world" tokenizer of several tests.
json hello_tokenizer(bool pair_list_merges = false) {
  return make_tokenizer({"ll", "he", "llo", "hello", " w", "or", " wor"},
                        {{"l", "l"}, {"h", "e"}, {"ll", "o"}, {"he", "llo"}, {" ", "w"}, {"o", "r"}, {" w", "or"}},
                        gpt2_byte_level(), pair_list_merges);
}

}  // namespace

TEST(BpeTokenizer, MergesByRank) {
  // Ids: ll=256 he=257 llo=258 hello=259 " w"=260 or=261 " wor"=262.
  // GPT-2 pattern: "hello" | " world".
  // "hello": h e l l o -> (l,l) rank 0 -> h e ll o -> (h,e) rank 1 -> he ll o -> (ll,o) rank 2
  //          -> he llo -> (he,llo) rank 3 -> hello = [259].
  // " world": Ġ w o r l d -> (Ġ,w) rank 4 -> Ġw o r l d -> (o,r) rank 5 -> (Ġw,or) rank 6
  //          -> Ġwor l d = [262, 'l'=108, 'd'=100].
  for (bool pair_list : {false, true}) {
    auto t = make(hello_tokenizer(pair_list));
    EXPECT_EQ(t->encode("hello world"), (std::vector<int>{259, 262, 108, 100})) << pair_list;
    EXPECT_EQ(t->decode({259, 262, 108, 100}), "hello world");
  }
}

TEST(BpeTokenizer, TiesGoToTheLeftmostPair) {
  // "aaa" with the single merge (a,a)=256: both pairs have rank 0, the left one merges first.
  auto t = make(make_tokenizer({"aa"}, {{"a", "a"}}));
  EXPECT_EQ(t->encode("aaa"), (std::vector<int>{256, 'a'}));
}

TEST(BpeTokenizer, LongWordIsNotQuadratic) {
  // 2^17 'a' with (a,a)=256 rank 0 and (aa,aa)=257 rank 1: all rank-0 merges happen first
  // (65536 "aa"), then "aa aa" pairs: 32768 "aaaa". A quadratic rescan would take minutes.
  auto t = make(make_tokenizer({"aa", "aaaa"}, {{"a", "a"}, {"aa", "aa"}}));
  std::string word(1 << 17, 'a');
  auto start = std::chrono::steady_clock::now();
  auto ids = t->encode(word);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids, std::vector<int>(1 << 15, 257));
  EXPECT_LT(seconds, 2.0);
}

TEST(BpeTokenizer, IgnoreMergesTakesWholeWords) {
  // "hello" is in the vocabulary (256) but no merge builds it.
  json j = make_tokenizer({"hello"}, {});
  EXPECT_EQ(make(j)->encode("hello"), (std::vector<int>{'h', 'e', 'l', 'l', 'o'}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(make(j)->encode("hello"), (std::vector<int>{256}));
}

TEST(BpeTokenizer, MissingByteIsDroppedOrUnk) {
  // Remove 'z' (id 122) from the vocabulary: without unk_token it is dropped, with one it
  // becomes unk, and fuse_unk joins consecutive unknowns.
  json j = make_tokenizer({"<unk>"}, {});
  j["model"]["vocab"].erase("z");
  EXPECT_EQ(make(j)->encode("azz"), (std::vector<int>{'a'}));
  j["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(make(j)->encode("azz"), (std::vector<int>{'a', 256, 256}));
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(make(j)->encode("azz"), (std::vector<int>{'a', 256}));
}

TEST(BpeTokenizer, Llama3Pattern) {
  auto t = make(make_tokenizer({}, {}, split_then_byte_level(kLlama3)));
  // Worked through the alternatives: "'m" is a contraction; the lone space before 12345 is
  // \s+ (the \s+(?!\S) branch fails before a digit); digits group by three; "!!" takes the
  // newlines after it; of two spaces before "ok" the first is \s+(?!\S), the second joins " ok".
  EXPECT_EQ(t->pre_tokenize("I'm 12345 cats!!\n\n  ok"),
            (std::vector<std::string>{"I", "'m", " ", "123", "45", " cats", "!!\n\n", " ", " ok"}));
  // Contractions are case-insensitive.
  EXPECT_EQ(t->pre_tokenize("HE'S"), (std::vector<std::string>{"HE", "'S"}));
  // \p{L} covers CJK and accented letters; emoji are neither letters nor digits.
  EXPECT_EQ(t->pre_tokenize("日本語 café 😀😀"), (std::vector<std::string>{"日本語", " café", " 😀😀"}));
}

TEST(BpeTokenizer, Qwen2PatternSplitsSingleDigits) {
  auto t = make(make_tokenizer({}, {}, split_then_byte_level(kQwen2)));
  EXPECT_EQ(t->pre_tokenize("x 2024"), (std::vector<std::string>{"x", " ", "2", "0", "2", "4"}));
}

TEST(BpeTokenizer, Gpt2PatternAndPrefixSpace) {
  EXPECT_EQ(make(make_tokenizer({}, {}))->pre_tokenize("I'm 12345"),
            (std::vector<std::string>{"I", "'m", " 12345"}));
  EXPECT_EQ(make(make_tokenizer({}, {}, gpt2_byte_level(true)))->pre_tokenize("hi"),
            (std::vector<std::string>{" hi"}));
}

TEST(BpeTokenizer, WhitespaceIsUnicodeWhiteSpaceNotPcreSpace) {
  // U+180E (Mongolian vowel separator) is not White_Space (Oniguruma's \s) though PCRE2's \h
  // includes it. As a non-space symbol it joins "!" in [^\s\p{L}\p{N}]+; were it \s, "!" would
  // stand alone.
  auto t = make(make_tokenizer({}, {}));
  EXPECT_EQ(t->pre_tokenize("x!\u180E"), (std::vector<std::string>{"x", "!\u180E"}));
}

TEST(BpeTokenizer, AddedTokensAreMatchedBeforeBpe) {
  json j = hello_tokenizer();
  j["added_tokens"] = {added(300, "<|im_start|>"), added(301, "<|im_end|>"), added(302, "<a>"),
                       added(303, "<a><b>"), added(304, "hello world", false)};
  auto t = make(j);
  // Specials split the text; "user\nhi" between them is BPE'd as bytes (no merges apply).
  EXPECT_EQ(t->encode("<|im_start|>user\nhi<|im_end|>"),
            (std::vector<int>{300, 'u', 's', 'e', 'r', '\n', 'h', 'i', 301}));
  // Leftmost-longest: "<a><b>" wins over "<a>".
  EXPECT_EQ(t->encode("<a><b>"), (std::vector<int>{303}));
  // A non-special added token with a space is found on the (normalized) text.
  EXPECT_EQ(t->encode("say hello world"), (std::vector<int>{'s', 'a', 'y', ' ', 304}));
  // decode drops special tokens and keeps others.
  EXPECT_EQ(t->decode({300, 259, 301, 304}), "hellohello world");
  EXPECT_TRUE(t->is_special(300));
  EXPECT_FALSE(t->is_special(304));
  EXPECT_EQ(t->piece_to_id("<|im_end|>"), 301);
  EXPECT_EQ(t->id_to_piece(260), "Ġw");
  EXPECT_EQ(t->vocab_size(), 305);
}

TEST(BpeTokenizer, AddedTokenStripAndSingleWord) {
  json j = make_tokenizer({}, {});
  json mask = added(300, "<mask>");
  mask["lstrip"] = true;
  mask["rstrip"] = true;
  json w = added(301, "ony", false);
  w["single_word"] = true;
  j["added_tokens"] = {mask, w};
  auto t = make(j);
  // lstrip/rstrip swallow the spaces around <mask>: "a" | " <mask> " | "b".
  EXPECT_EQ(t->encode("a <mask> b"), (std::vector<int>{'a', 300, 'b'}));
  // "ony" inside "Tony" is not a single word; standing alone it is.
  EXPECT_EQ(t->encode("Tony"), (std::vector<int>{'T', 'o', 'n', 'y'}));
  EXPECT_EQ(t->encode("ony!"), (std::vector<int>{301, '!'}));
}

TEST(BpeTokenizer, DecodeJoinsBytesSplitAcrossTokens) {
  auto t = make(make_tokenizer({}, {}));
  // "é" is C3 A9: each byte its own token; together they decode to the character.
  EXPECT_EQ(t->encode("é"), (std::vector<int>{0xC3, 0xA9}));
  EXPECT_EQ(t->decode({0xC3, 0xA9}), "é");
  // Alone, C3 is an incomplete sequence: one U+FFFD.
  EXPECT_EQ(t->decode({0xC3}), "\uFFFD");
  // E2 82 is a truncated 3-byte sequence: one maximal subpart, one U+FFFD; then 'A'.
  EXPECT_EQ(t->decode({0xE2, 0x82, 'A'}), "\uFFFDA");
  // F0 80: 80 cannot follow F0 (overlong), so two separate replacements.
  EXPECT_EQ(t->decode({0xF0, 0x80}), "\uFFFD\uFFFD");
  // Unknown ids are skipped.
  EXPECT_EQ(t->decode({'o', -1, 99999, 'k'}), "ok");
}

TEST(BpeTokenizer, RoundTripsEmojiCjkAndCombiningMarks) {
  auto t = make(hello_tokenizer());
  for (std::string s : {"👩‍👩‍👧 家族", "e\u0301 à la", "\t\t  \n\n\n   x", "1234567890123", "hello   world  "})
    EXPECT_EQ(t->decode(t->encode(s)), s);
}

TEST(BpeTokenizer, InvalidUtf8NamesTheOffset) {
  auto t = make(make_tokenizer({}, {}));
  auto expect_offset = [&](const std::string& s, const std::string& offset) {
    try {
      t->encode(s);
      ADD_FAILURE() << "no error for " << s;
    } catch (const gmsa::Error& e) {
      EXPECT_NE(std::string(e.what()).find("invalid UTF-8 at byte offset " + offset), std::string::npos) << e.what();
    }
  };
  expect_offset("ab\xFF" "c", "2");
  expect_offset("\xC0\xAF", "0");           // overlong '/'
  expect_offset("x\xED\xA0\x80", "1");      // surrogate U+D800
  expect_offset("abc\xE2\x82", "3");        // truncated at the end
  expect_offset("\xF4\x90\x80\x80", "0");   // above U+10FFFF
}

TEST(BpeTokenizer, Utf8Helpers) {
  EXPECT_EQ(gmsa::find_invalid_utf8("héllo 😀"), std::string_view::npos);
  EXPECT_EQ(gmsa::find_invalid_utf8("h\x80"), 1u);
  // "a", then E1 80 (truncated), "b", then a lone continuation byte: two replacements.
  EXPECT_EQ(gmsa::utf8_lossy("a\xE1\x80" "b\x80"), "a\uFFFD" "b\uFFFD");
}

TEST(BpeTokenizer, ClearErrors) {
  json j = hello_tokenizer();
  auto expect_error = [](const json& bad, const std::string& needle) {
    std::string msg = error_of(bad);
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find("test.json"), std::string::npos) << msg;
  };
  try {
    BpeTokenizer::from_json("{\"model\": ", "", "test.json");
    ADD_FAILURE();
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos);
  }
  json b = j;
  b["model"]["type"] = "WordPiece";
  expect_error(b, "unsupported model type 'WordPiece'");
  b = j;
  b["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}};
  expect_error(b, "unsupported pre-tokenizer type 'Metaspace'");
  b = j;
  b["normalizer"] = {{"type", "NFKC"}};
  expect_error(b, "unsupported normalizer type 'NFKC'");
  b = j;
  b["decoder"] = {{"type", "WordPiece"}};
  expect_error(b, "unsupported decoder type 'WordPiece'");
  b = j;
  b["model"]["merges"][2] = "ll zz";
  expect_error(b, "model.merges[2]: 'zz' is not in the vocabulary");
  b = j;
  b["model"]["merges"][0] = "abc";
  expect_error(b, "model.merges[0]");
  b = j;
  b["model"].erase("vocab");
  expect_error(b, "missing key 'vocab'");
  b = j;
  b["pre_tokenizer"] = split_then_byte_level("(unclosed");
  expect_error(b, "cannot compile regex");
  b = j;
  b["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "x"}}}, {"behavior", "Isolated"}};
  expect_error(b, "needs a ByteLevel pre-tokenizer");
}

TEST(BpeTokenizer, NfcNormalizer) {
  json j = make_tokenizer({}, {}, split_then_byte_level(kQwen2));
  j["normalizer"] = {{"type", "NFC"}};
  auto t = make(j);
  // Latin-1 text is NFC already, with or without ICU.
  EXPECT_EQ(t->encode("é"), (std::vector<int>{0xC3, 0xA9}));
#if GMSA_HAVE_ICU
  // e + U+0301 composes to é (C3 A9); Hangul jamo compose to a syllable (U+D55C = ED 95 9C).
  EXPECT_EQ(t->encode("e\u0301"), (std::vector<int>{0xC3, 0xA9}));
  EXPECT_EQ(t->pre_tokenize("\u1112\u1161\u11AB"), (std::vector<std::string>{"\uD55C"}));
#else
  try {
    t->encode("e\u0301");
    ADD_FAILURE() << "expected the no-ICU error";
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("ICU"), std::string::npos) << e.what();
  }
#endif
}

TEST(BpeTokenizer, SpecialIdsFromConfigOrTemplate) {
  json j = hello_tokenizer();
  j["added_tokens"] = {added(300, "<|begin_of_text|>"), added(301, "<|end_of_text|>")};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair", json::array()},
      {"special_tokens", {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {300}}, {"tokens", {"<|begin_of_text|>"}}}}}}};
  auto t = make(j);
  EXPECT_EQ(t->bos_id(), 300);
  EXPECT_TRUE(t->adds_bos());
  EXPECT_EQ(t->eos_id(), -1);
  EXPECT_EQ(t->encode("hello"), (std::vector<int>{259}));  // encode() never adds BOS
  const gmsa::Tokenizer& base = *t;
  EXPECT_EQ(base.encode("hello", true, false), (std::vector<int>{300, 259}));
  EXPECT_THROW(base.encode("hello", false, true), gmsa::Error);  // no EOS known
}

TEST(BpeTokenizer, ConfigNamesBosEosPad) {
  json j = hello_tokenizer();
  j["added_tokens"] = {added(300, "<|begin_of_text|>"), added(301, "<|eot_id|>")};
  json cfg = {{"bos_token", "<|begin_of_text|>"},
              {"eos_token", {{"content", "<|eot_id|>"}, {"lstrip", false}}},
              {"pad_token", nullptr},
              {"add_bos_token", false}};
  auto t = make(j, cfg.dump());
  EXPECT_EQ(t->bos_id(), 300);
  EXPECT_EQ(t->eos_id(), 301);
  EXPECT_EQ(t->pad_id(), -1);
  EXPECT_FALSE(t->adds_bos());
  cfg["eos_token"] = "<|nope|>";
  try {
    make(j, cfg.dump());
    ADD_FAILURE();
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("eos_token: '<|nope|>' is not a token"), std::string::npos) << e.what();
  }
}

TEST(BpeTokenizer, LoadTokenizerPicksTokenizerJsonInADirectory) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("gmsa_bpe_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  json j = hello_tokenizer();
  j["added_tokens"] = {added(300, "<|endoftext|>"), added(301, "<|im_end|>")};
  gmsa::write_file_atomic((dir / "tokenizer.json").string(), j.dump());
  gmsa::write_file_atomic((dir / "tokenizer_config.json").string(),
                          R"({"bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})");
  auto t = gmsa::load_tokenizer(dir.string());
  EXPECT_EQ(t->kind(), "tokenizer.json (byte-level BPE)");
  EXPECT_EQ(t->encode("hello"), (std::vector<int>{259}));
  EXPECT_EQ(t->eos_id(), 301);
  EXPECT_EQ(t->pad_id(), 300);
  EXPECT_EQ(t->bos_id(), -1);
  fs::remove_all(dir);
}

TEST(BpeTokenizer, ThreadsShareTheWordCache) {
  auto t = make(hello_tokenizer());
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "hello world " + std::to_string(i % 97) + " ";
  auto expected = t->encode(text);
  std::vector<std::vector<int>> got(4);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) threads.emplace_back([&, k] { got[size_t(k)] = t->encode(text); });
  for (auto& th : threads) th.join();
  for (auto& g : got) EXPECT_EQ(g, expected);
}

TEST(BpeTokenizer, RoundTripsRealText) {
  const char* dir = std::getenv("GMSA_DATA_DIR");
  if (!dir) GTEST_SKIP() << "GMSA_DATA_DIR is unset";
  auto t = make(hello_tokenizer());
  for (const char* f : {"wikitext2/valid.txt", "tinystories/tinystories_train_head.txt"}) {
    std::string text = gmsa::read_file(gmsa::join_path(dir, f));
    auto ids = t->encode(text);
    EXPECT_GT(ids.size(), text.size() / 2) << f;  // few merges: about a token per byte
    EXPECT_EQ(t->decode(ids), text) << f;
  }
}
