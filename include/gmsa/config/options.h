#pragma once
// The option table behind RunConfig (internal to src/config; see config.h for the API). Each
// Option names one RunConfig field by its YAML path and says how to check its values.
#include <functional>
#include <regex>
#include <string>
#include <variant>
#include <vector>

#include "gmsa/config/run_config.h"
#include "gmsa/config/tree.h"

namespace gmsa::config {

using FieldPtr = std::variant<std::string*, int64_t*, double*, bool*, std::vector<std::string>*,
                              std::vector<int64_t>*, std::vector<double>*>;

class Option {
 public:
  Option(std::string path, FieldPtr (*field)(RunConfig&), std::string help)
      : path(std::move(path)), help(std::move(help)), field(field) {}

  // Bounds on numbers (on each element of a list of numbers).
  Option& ge(double v) { return bound(lo_, v, false); }
  Option& gt(double v) { return bound(lo_, v, true); }
  Option& le(double v) { return bound(hi_, v, false); }
  Option& lt(double v) { return bound(hi_, v, true); }
  // Strings: the allowed values (an enumeration), or a regex matching the whole value.
  Option& one_of(std::vector<std::string> values);
  Option& matches(const std::string& regex, std::string shown_as);

  std::string type_name() const;   // "int", "list of float", "enum", ...
  std::string constraint() const;  // "> 0", "in [0, 1)", "fp32 | bf16", "" when none
  // Reads the value at `node` into this option's field of `cfg` and checks it.
  void read(const ConfNode& node, RunConfig& cfg) const;
  bool is_string() const;  // string or enum: --set takes its value verbatim

  std::string path, help;
  FieldPtr (*field)(RunConfig&);

 private:
  struct Bound {
    bool set = false, open = false;
    double value = 0;
  };
  Option& bound(Bound& b, double v, bool open);
  void check_number(double v, const ConfNode& node, const std::string& key) const;
  void check_string(const std::string& v, const ConfNode& node, const std::string& key) const;

  Bound lo_, hi_;
  std::vector<std::string> values_;
  std::string pattern_text_;
  std::regex pattern_;
};

// Every option in declared order (grouped by section: a dump emits them as nested mappings).
const std::vector<Option>& options();
const Option* find_option(const std::string& path);

// Checks between options (options.cpp, next to the table); `at(path)` gives the error prefix.
void check_relations(const RunConfig& cfg, const std::function<std::string(const char*)>& at);

// The typed config of a merged tree: defaults for keys not given, every given key checked
// (unknown keys, types, ranges, enumerations, relations between options).
RunConfig read_config(const ConfNode& root);

// A field's value as a YAML flow scalar or sequence; load_config reads it back exactly.
std::string format_value(const FieldPtr& field);

}  // namespace gmsa::config
