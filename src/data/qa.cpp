#include "gmsa/data/qa.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {

namespace {

using nlohmann::json;
constexpr size_t kMaxKeptErrors = 5;

// nlohmann messages look like "[json.exception.parse_error.101] parse error at line 1,
// column 5: syntax error ..."; on a one-object line only the column and the cause matter.
std::string describe_parse_error(const std::string& what) {
  size_t col = what.find("column ");
  size_t colon = col == std::string::npos ? col : what.find(": ", col);
  if (colon == std::string::npos) return "invalid JSON: " + what;
  return "invalid JSON at " + what.substr(col, colon - col) + ": " + what.substr(colon + 2);
}

std::string required_string(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) fail("field \"{}\" is missing", key);
  if (!it->is_string()) fail("field \"{}\" must be a string, got {}", key, it->type_name());
  return it->get<std::string>();
}

std::vector<std::string> parse_answers(const json& obj) {
  auto it = obj.find("answer");
  if (it == obj.end()) fail("field \"answer\" is missing");
  if (it->is_string()) return {it->get<std::string>()};
  bool ok = it->is_array() &&
            std::all_of(it->begin(), it->end(), [](const json& a) { return a.is_string(); });
  if (!ok) fail("field \"answer\" must be a string or a list of strings");
  return it->get<std::vector<std::string>>();
}

std::string parse_id(const json& obj) {
  auto it = obj.find("id");
  if (it == obj.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return it->dump();
  fail("field \"id\" must be a string or an integer, got {}", it->type_name());
}

}  // namespace

QaExample parse_qa_line(const std::string& line) {
  json obj;
  try {
    obj = json::parse(line);
  } catch (const json::parse_error& e) {
    fail("{}", describe_parse_error(e.what()));
  }
  if (!obj.is_object()) fail("expected a JSON object, got {}", obj.type_name());
  QaExample ex;
  ex.input = required_string(obj, "input");
  ex.prompt = required_string(obj, "prompt");
  ex.answers = parse_answers(obj);
  ex.id = parse_id(obj);
  return ex;
}

QaReadResult read_qa_jsonl(const std::string& path, const QaReadOptions& options) {
  QaReadResult result;
  LineReader reader(path);
  std::string line;
  while (reader.next(line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      result.examples.push_back(parse_qa_line(line));
    } catch (const Error& e) {
      std::string msg = fmt::format("{}:{}: {}", path, reader.line_number(), e.what());
      if (!options.skip_bad_lines) throw Error(msg);
      ++result.skipped;
      if (result.errors.size() < kMaxKeptErrors) result.errors.push_back(std::move(msg));
    }
  }
  return result;
}

std::string format_qa_line(const QaExample& ex) {
  nlohmann::ordered_json obj;
  obj["input"] = ex.input;
  obj["prompt"] = ex.prompt;
  if (ex.answers.size() == 1) {
    obj["answer"] = ex.answers.front();
  } else {
    obj["answer"] = ex.answers;
  }
  if (!ex.id.empty()) obj["id"] = ex.id;
  // Invalid UTF-8 is replaced (U+FFFD) rather than aborting a long conversion.
  return obj.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void write_qa_jsonl(const std::string& path, const std::vector<QaExample>& examples) {
  std::string out;
  for (const auto& ex : examples) {
    out += format_qa_line(ex);
    out += '\n';
  }
  write_file_atomic(path, out);
}

int64_t truncate_tokens(std::vector<int>& ids, int64_t max_len, TruncateKeep keep) {
  GMSA_CHECK(max_len >= 0, "truncate_tokens: max_len must be >= 0, got {}", max_len);
  int64_t excess = static_cast<int64_t>(ids.size()) - max_len;
  if (excess <= 0) return 0;
  if (keep == TruncateKeep::Head) {
    ids.resize(static_cast<size_t>(max_len));
  } else {
    ids.erase(ids.begin(), ids.begin() + excess);
  }
  return excess;
}

}  // namespace gmsa
