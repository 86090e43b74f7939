#pragma once
// The untyped stage of config loading: YAML files read into a tree whose every node remembers
// the file and line it came from (yaml-cpp marks carry no file name, and after `base:` merges
// and --set overrides one tree mixes several sources). The typed stage (options.cpp) reads
// RunConfig from this tree and uses the origins in its error messages.
#include <string>
#include <vector>

namespace gmsa::config {

// Where a key or value was written. line/column are 1-based; 0 means "no position" (e.g. a
// --set override, whose `file` is "--set key=value").
struct Origin {
  std::string file;
  int line = 0;
  int column = 0;
  // "file:line" (or just "file" without a position), the prefix of every config error.
  std::string str() const;
};

struct ConfNode {
  enum class Kind { Null, Scalar, Sequence, Map };
  Kind kind = Kind::Null;
  std::string scalar;   // Scalar: the text as written (without quotes)
  bool quoted = false;  // Scalar: written in quotes, so a string even if it looks like 42
  std::vector<ConfNode> children;  // Sequence items, or Map entries in file order
  std::string key;                 // Map entries: the key naming this node
  Origin key_origin;               // Map entries: where that key was written
  Origin origin;                   // where the value starts

  const ConfNode* find(const std::string& k) const;
  ConfNode* find(const std::string& k);
  void erase(const std::string& k);
  // "a mapping", "a sequence", "null" or "`text`", for "expected X, got Y" messages.
  std::string describe() const;
};

// Reads `path` and, recursively, the files named by its `base:` keys (relative to the
// including file). The result is the bases' trees with each child deep-merged over its base,
// without `base` keys. Errors: malformed YAML, missing base, base cycle, non-mapping root.
ConfNode load_tree(const std::string& path);

// Parses one YAML text (a file's content, or an override's value) with every origin in `file`.
// With `positions` false the origins carry no line (override values).
ConfNode parse_yaml(const std::string& text, const std::string& file, bool positions = true);

// Deep merge: mappings merge key by key; everything else in `over` replaces what is in `base`.
// A null `over` leaves a mapping in `base` unchanged (`optim:` with nothing under it).
void merge_into(ConfNode& base, const ConfNode& over);

// Applies "a.b.c=value": the value is parsed as a YAML scalar or flow collection and merged
// in at that path (so `optim={lr: 1}` keeps the other optim keys), creating mappings on the way; a numeric component indexes a sequence
// (chain.1.optim.lr=...). `verbatim_string` (decided by the caller from the option's type)
// takes an unquoted value as raw text, so `data.ae_prompt=Restate: it` needs no quotes.
void apply_override(ConfNode& root, const std::string& assignment,
                    bool (*verbatim_string)(const std::string& path));

}  // namespace gmsa::config
