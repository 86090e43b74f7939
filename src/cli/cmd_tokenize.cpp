// `gmsa tokenize`: encode or decode with any tokenizer (tokenizer.json or sentencepiece), render
// a prompt format, measure throughput (--bench), or run a JSONL batch (--jsonl-in/--jsonl-out,
// used by scripts/parity/tokenizer_parity.py to compare with Hugging Face `tokenizers`).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>

#include "command.h"
#include "gmsa/text/prompt_format.h"
#include "gmsa/text/tokenizer.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace {

using json = nlohmann::json;

struct TokenizeArgs {
  std::string tokenizer;
  std::string text, file, decode;
  bool add_bos = false, add_eos = false, pieces = false;
  std::vector<std::string> bench;
  int repeats = 5;
  std::string jsonl_in, jsonl_out;
  std::string prompt_format, prompt_formats_file, system;
};

std::string join_ids(const std::vector<int>& ids) {
  return fmt::format("{}", fmt::join(ids, " "));
}

std::vector<int> parse_ids(const std::string& s) {
  std::vector<int> ids;
  std::istringstream in(s);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    int id = 0;
    try {
      id = std::stoi(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size()) gmsa::fail("--decode: '{}' is not an integer id", word);
    ids.push_back(id);
  }
  return ids;
}

std::string base64_decode(const std::string& in, const std::string& where) {
  auto value = [&](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    gmsa::fail("{}: invalid base64 character '{}'", where, c);
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    acc = (acc << 6) | uint32_t(value(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xFF);
    }
  }
  return out;
}

void print_encoding(const gmsa::Tokenizer& tok, const std::vector<int>& ids, bool pieces) {
  if (!pieces) return fmt::print("{}\n", join_ids(ids));
  for (int id : ids) fmt::print("{}\t{}\n", id, json(tok.id_to_piece(id)).dump(-1, ' ', false, json::error_handler_t::replace));
}

// One JSON object per input line: {"text": s} or {"text_b64": b} -> {"ids": [...], "decoded": s};
// {"decode": [ids]} -> {"decoded": s}; failures -> {"error": message}. Line order is kept.
void run_jsonl(const gmsa::Tokenizer& tok, const std::string& in_path, const std::string& out_path) {
  gmsa::LineReader reader(in_path);
  std::ofstream out(out_path, std::ios::binary);
  if (!out) gmsa::fail("{}: cannot open for writing", out_path);
  std::string line;
  int64_t lines = 0, errors = 0;
  while (reader.next(line)) {
    ++lines;
    std::string where = fmt::format("{}:{}", in_path, reader.line_number());
    json result;
    try {
      json in = json::parse(line);
      if (in.contains("decode")) {
        result["decoded"] = tok.decode(in["decode"].get<std::vector<int>>());
      } else {
        std::string text = in.contains("text_b64") ? base64_decode(in["text_b64"].get<std::string>(), where)
                                                   : in.at("text").get<std::string>();
        std::vector<int> ids = tok.encode(text);
        result["ids"] = ids;
        result["decoded"] = tok.decode(ids);
      }
    } catch (const json::exception& e) {
      gmsa::fail("{}: expected {{\"text\": ...}}, {{\"text_b64\": ...}} or {{\"decode\": [...]}}: {}", where, e.what());
    } catch (const gmsa::Error& e) {
      ++errors;
      result = json{{"error", e.what()}};
    }
    out << result.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
  }
  if (!out.flush()) gmsa::fail("{}: write failed", out_path);
  fmt::print("{}: {} lines, {} errors -> {}\n", in_path, lines, errors, out_path);
}

// Encodes each file whole `repeats` times; the first run fills the word cache.
void run_bench(const gmsa::Tokenizer& tok, const std::vector<std::string>& files, int repeats) {
  GMSA_CHECK(repeats >= 1, "--repeats must be at least 1");
  fmt::print("{:<60} {:>8} {:>10} {:>8} {:>12} {:>10}\n", "file", "MB", "tokens", "MB/s",
             "tokens/s", "cold MB/s");
  for (const std::string& path : files) {
    std::string text = gmsa::read_file(path);
    std::vector<double> seconds;
    size_t n_tokens = 0;
    for (int r = 0; r < repeats; ++r) {
      auto start = std::chrono::steady_clock::now();
      n_tokens = tok.encode(text).size();
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    double cold = seconds[0];
    std::sort(seconds.begin(), seconds.end());
    double median = seconds[seconds.size() / 2];
    double mb = double(text.size()) / 1e6;
    fmt::print("{:<60} {:>8.3f} {:>10} {:>8.2f} {:>12.0f} {:>10.2f}\n", path, mb, n_tokens, mb / median,
               double(n_tokens) / median, mb / cold);
  }
  fmt::print("(median of {} runs; {}; one thread)\n", repeats, tok.kind());
}

void run(const TokenizeArgs& a) {
  auto tok = gmsa::load_tokenizer(a.tokenizer);
  if (!a.bench.empty()) return run_bench(*tok, a.bench, a.repeats);
  if (!a.jsonl_in.empty()) {
    GMSA_CHECK(!a.jsonl_out.empty(), "--jsonl-in needs --jsonl-out");
    return run_jsonl(*tok, a.jsonl_in, a.jsonl_out);
  }
  if (!a.decode.empty()) return fmt::print("{}\n", tok->decode(parse_ids(a.decode)));
  GMSA_CHECK(a.text.empty() != a.file.empty(), "give exactly one of --text, --file, --decode, --bench, --jsonl-in");
  std::string text = a.file.empty() ? a.text : gmsa::read_file(a.file);
  if (a.prompt_format.empty()) return print_encoding(*tok, tok->encode(text, a.add_bos, a.add_eos), a.pieces);
  gmsa::PromptFormats formats;
  if (!a.prompt_formats_file.empty()) formats.load_yaml_file(a.prompt_formats_file);
  std::vector<gmsa::ChatMessage> chat;
  if (!a.system.empty()) chat.push_back({"system", a.system});
  chat.push_back({"user", text});
  auto pieces = formats.get(a.prompt_format).render(chat, true);
  auto piece = [&](int id) { return id >= 0 ? tok->id_to_piece(id) : std::string("<none>"); };
  fmt::print("{}\n", gmsa::prompt_to_text(pieces, piece(tok->bos_id()), piece(tok->eos_id())));
  print_encoding(*tok, gmsa::encode_prompt(*tok, pieces).ids, a.pieces);
}

gmsa::cli::CommandRegistrar reg(80, [](CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  auto* cmd = app.add_subcommand("tokenize", "Encode/decode text, benchmark a tokenizer, or run a JSONL batch");
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json, *.model, or a model directory")->required();
  cmd->add_option("--text", a->text, "Text to encode (prints ids)");
  cmd->add_option("--file", a->file, "File whose whole content is encoded");
  cmd->add_flag("--add-bos", a->add_bos, "Prepend BOS");
  cmd->add_flag("--add-eos", a->add_eos, "Append EOS");
  cmd->add_flag("--pieces", a->pieces, "Print one 'id<TAB>piece' line per token");
  cmd->add_option("--decode", a->decode, "Space-separated ids to decode (special tokens dropped)");
  cmd->add_option("--bench", a->bench, "Files to encode whole: prints MB/s and tokens/s");
  cmd->add_option("--repeats", a->repeats, "Runs per --bench file (the median is reported)")->capture_default_str();
  cmd->add_option("--jsonl-in", a->jsonl_in,
                  "Batch input: lines {\"text\": s}, {\"text_b64\": b} or {\"decode\": [ids]}");
  cmd->add_option("--jsonl-out", a->jsonl_out, "Batch output: {\"ids\", \"decoded\"} or {\"error\"} per line");
  cmd->add_option("--prompt-format", a->prompt_format, "Render the text as a user turn of this format first");
  cmd->add_option("--prompt-formats", a->prompt_formats_file, "YAML file adding prompt formats");
  cmd->add_option("--system", a->system, "System message for --prompt-format");
  cmd->callback([a] { run(*a); });
});

}  // namespace
