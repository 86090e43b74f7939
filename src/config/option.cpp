// Option: reading one typed value from the config tree, checking it, and writing it back.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "gmsa/config/options.h"
#include "gmsa/util/error.h"

namespace gmsa::config {

namespace {

using Kind = ConfNode::Kind;

const std::regex& int_syntax() {
  static const std::regex r(R"([-+]?[0-9]+)");
  return r;
}
const std::regex& float_syntax() {
  static const std::regex r(R"([-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?)");
  return r;
}
const std::regex& special_float_syntax() {  // YAML's spellings of infinity and NaN
  static const std::regex r(R"([-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))");
  return r;
}

[[noreturn]] void wrong_type(const ConfNode& n, const std::string& key, const char* expected,
                             const char* note = "") {
  fail("{}: `{}` expects {}, got {}{}", n.origin.str(), key, expected, n.describe(), note);
}

bool plain(const ConfNode& n) { return n.kind == Kind::Scalar && !n.quoted; }

int64_t to_int(const ConfNode& n, const std::string& key) {
  if (plain(n) && std::regex_match(n.scalar, int_syntax())) {
    errno = 0;
    long long v = std::strtoll(n.scalar.c_str(), nullptr, 10);
    if (errno == ERANGE) fail("{}: `{}` = {} does not fit in 64 bits", n.origin.str(), key, n.scalar);
    return v;
  }
  bool looks_float = plain(n) && (std::regex_match(n.scalar, float_syntax()) ||
                                  std::regex_match(n.scalar, special_float_syntax()));
  wrong_type(n, key, "an int", looks_float ? " (a float; write a whole number)" : "");
}

double to_double(const ConfNode& n, const std::string& key) {
  if (plain(n) && std::regex_match(n.scalar, float_syntax()))
    return std::strtod(n.scalar.c_str(), nullptr);  // out of range gives +-inf, caught by bounds
  if (plain(n) && std::regex_match(n.scalar, special_float_syntax())) {
    if (n.scalar.find_first_of("nN") != std::string::npos) return NAN;
    return n.scalar[0] == '-' ? -INFINITY : INFINITY;
  }
  wrong_type(n, key, "a float");
}

bool to_bool(const ConfNode& n, const std::string& key) {
  if (plain(n)) {
    for (const char* t : {"true", "True", "TRUE"})
      if (n.scalar == t) return true;
    for (const char* f : {"false", "False", "FALSE"})
      if (n.scalar == f) return false;
  }
  wrong_type(n, key, "a bool (true or false)");
}

std::string to_string(const ConfNode& n, const std::string& key) {
  if (n.kind == Kind::Null) return "";  // `dir:` with nothing after it
  if (n.kind != Kind::Scalar) wrong_type(n, key, "a string");
  return n.scalar;
}

// A list value: its items, or none for null.
const std::vector<ConfNode>& items(const ConfNode& n, const std::string& key, const char* expected) {
  static const std::vector<ConfNode> none;
  if (n.kind == Kind::Null) return none;
  if (n.kind != Kind::Sequence) wrong_type(n, key, expected);
  return n.children;
}

std::string item_key(const std::string& key, size_t i) { return fmt::format("{}[{}]", key, i); }

std::string format_double(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v < 0 ? "-.inf" : ".inf";
  std::string s = fmt::format("{}", v);  // shortest text that reads back to the same double
  if (s.find_first_of(".e") == std::string::npos) s += ".0";  // keep it visibly a float
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f)
          out += fmt::format("\\x{:02x}", c);
        else
          out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

template <typename T, typename F>
std::string format_list(const std::vector<T>& v, F f) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + f(v[i]);
  return out + "]";
}

std::string format_number(double v) {  // a bound in messages: 1 rather than 1.0
  return fmt::format("{}", v);
}

}  // namespace

Option& Option::bound(Bound& b, double v, bool open) {
  b = Bound{true, open, v};
  return *this;
}

Option& Option::one_of(std::vector<std::string> values) {
  values_ = std::move(values);
  return *this;
}

Option& Option::matches(const std::string& regex, std::string shown_as) {
  pattern_ = std::regex(regex);
  pattern_text_ = std::move(shown_as);
  return *this;
}

bool Option::is_string() const {
  RunConfig probe;
  return std::holds_alternative<std::string*>(field(probe));
}

std::string Option::type_name() const {
  if (!values_.empty()) return "enum";
  RunConfig probe;
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) return "string";
        if constexpr (std::is_same_v<T, int64_t>) return "int";
        if constexpr (std::is_same_v<T, double>) return "float";
        if constexpr (std::is_same_v<T, bool>) return "bool";
        if constexpr (std::is_same_v<T, std::vector<std::string>>) return "list of string";
        if constexpr (std::is_same_v<T, std::vector<int64_t>>) return "list of int";
        if constexpr (std::is_same_v<T, std::vector<double>>) return "list of float";
      },
      field(probe));
}

std::string Option::constraint() const {
  if (!values_.empty()) {
    std::string s;
    for (const auto& v : values_) s += (s.empty() ? "" : " | ") + v;
    return s;
  }
  if (!pattern_text_.empty()) return pattern_text_;
  if (lo_.set && hi_.set)
    return fmt::format("in {}{}, {}{}", lo_.open ? "(" : "[", format_number(lo_.value),
                       format_number(hi_.value), hi_.open ? ")" : "]");
  if (lo_.set) return fmt::format("{} {}", lo_.open ? ">" : ">=", format_number(lo_.value));
  if (hi_.set) return fmt::format("{} {}", hi_.open ? "<" : "<=", format_number(hi_.value));
  return "";
}

void Option::check_number(double v, const ConfNode& node, const std::string& key) const {
  bool ok = !std::isnan(v) && !(lo_.set && (lo_.open ? v <= lo_.value : v < lo_.value)) &&
            !(hi_.set && (hi_.open ? v >= hi_.value : v > hi_.value));
  if (!ok && (lo_.set || hi_.set || std::isnan(v)))
    fail("{}: `{}` = {} is out of range (must be {})", node.origin.str(), key, node.scalar,
         constraint().empty() ? "a number" : constraint());
}

void Option::check_string(const std::string& v, const ConfNode& node, const std::string& key) const {
  if (!values_.empty() && std::find(values_.begin(), values_.end(), v) == values_.end())
    fail("{}: `{}` = `{}` is not one of {}", node.origin.str(), key, v, constraint());
  if (!pattern_text_.empty() && !std::regex_match(v, pattern_))
    fail("{}: `{}` = `{}` is not valid (expected {})", node.origin.str(), key, v, pattern_text_);
}

void Option::read(const ConfNode& node, RunConfig& cfg) const {
  const std::string& key = path;
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          *p = to_string(node, key);
          check_string(*p, node, key);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          *p = to_int(node, key);
          check_number(static_cast<double>(*p), node, key);
        } else if constexpr (std::is_same_v<T, double>) {
          *p = to_double(node, key);
          check_number(*p, node, key);
        } else if constexpr (std::is_same_v<T, bool>) {
          *p = to_bool(node, key);
        } else {
          const auto& list = items(node, key, ("a " + type_name()).c_str());
          p->clear();
          for (size_t i = 0; i < list.size(); ++i) {
            const ConfNode& item = list[i];
            std::string ik = item_key(key, i);
            if constexpr (std::is_same_v<T, std::vector<std::string>>) {
              p->push_back(to_string(item, ik));
              check_string(p->back(), item, ik);
            } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
              p->push_back(to_int(item, ik));
              check_number(static_cast<double>(p->back()), item, ik);
            } else {
              p->push_back(to_double(item, ik));
              check_number(p->back(), item, ik);
            }
          }
        }
      },
      field(cfg));
}

std::string format_value(const FieldPtr& field) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) return quote(*p);
        if constexpr (std::is_same_v<T, int64_t>) return std::to_string(*p);
        if constexpr (std::is_same_v<T, double>) return format_double(*p);
        if constexpr (std::is_same_v<T, bool>) return *p ? "true" : "false";
        if constexpr (std::is_same_v<T, std::vector<std::string>>) return format_list(*p, quote);
        if constexpr (std::is_same_v<T, std::vector<int64_t>>)
          return format_list(*p, [](int64_t v) { return std::to_string(v); });
        if constexpr (std::is_same_v<T, std::vector<double>>) return format_list(*p, format_double);
      },
      field);
}

}  // namespace gmsa::config
