#pragma once
// The official GMSA question-answering schema: JSON Lines, one object per line,
//   {"input": context, "prompt": question, "answer": string | [strings], "id": string | number}
// "id" is optional; other keys are ignored. The input (context) is what the compressor sees;
// the prompt is given to the decoder uncompressed.
#include <cstdint>
#include <string>
#include <vector>

namespace gmsa {

struct QaExample {
  std::string id;  // empty when the line had none; numbers are kept as their decimal text
  std::string input;
  std::string prompt;
  std::vector<std::string> answers;  // every acceptable answer, in file order
};

struct QaReadOptions {
  // Skip (and count) lines that are not valid examples instead of failing on the first one.
  bool skip_bad_lines = false;
};

struct QaReadResult {
  std::vector<QaExample> examples;
  int64_t skipped = 0;              // bad lines skipped (only with skip_bad_lines)
  std::vector<std::string> errors;  // the first few skipped lines' messages, for logging
};

// Reads a QA file (plain or .gz). Blank lines are ignored. A bad line throws gmsa::Error
// "<path>:<line>: <problem>" unless options.skip_bad_lines.
QaReadResult read_qa_jsonl(const std::string& path, const QaReadOptions& options = {});

// Parses one line; throws gmsa::Error whose message is the problem only (no location).
QaExample parse_qa_line(const std::string& line);

// One line without the trailing newline. The answer is written as a string when there is
// exactly one, else as a list; "id" is omitted when empty. Keys are in schema order.
std::string format_qa_line(const QaExample& example);

// Writes all examples atomically (temporary file + rename).
void write_qa_jsonl(const std::string& path, const std::vector<QaExample>& examples);

// Which end of a token sequence survives truncation.
enum class TruncateKeep { Head, Tail };

// Cuts `ids` to at most `max_len` tokens, keeping the first (Head) or last (Tail) ones;
// returns how many were removed. Meant for the context (input) only: the prompt is never cut
// here — the trainer decides how to fit prompt + answer into its length budget.
int64_t truncate_tokens(std::vector<int>& ids, int64_t max_len,
                        TruncateKeep keep = TruncateKeep::Head);

}  // namespace gmsa
