#include "gmsa/config/tree.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa::config {

namespace fs = std::filesystem;

std::string Origin::str() const {
  return line > 0 ? fmt::format("{}:{}", file, line) : file;
}

const ConfNode* ConfNode::find(const std::string& k) const {
  for (const auto& c : children)
    if (c.key == k) return &c;
  return nullptr;
}

ConfNode* ConfNode::find(const std::string& k) {
  return const_cast<ConfNode*>(std::as_const(*this).find(k));
}

void ConfNode::erase(const std::string& k) {
  children.erase(std::remove_if(children.begin(), children.end(),
                                [&](const ConfNode& c) { return c.key == k; }),
                 children.end());
}

std::string ConfNode::describe() const {
  switch (kind) {
    case Kind::Null: return "null";
    case Kind::Sequence: return "a sequence";
    case Kind::Map: return "a mapping";
    case Kind::Scalar: break;
  }
  return quoted ? fmt::format("the string \"{}\"", scalar) : fmt::format("`{}`", scalar);
}

namespace {

Origin origin_of(const YAML::Mark& m, const std::string& file, bool positions) {
  if (!positions || m.is_null()) return Origin{file, 0, 0};
  return Origin{file, m.line + 1, m.column + 1};
}

ConfNode convert(const YAML::Node& y, const std::string& file, bool positions) {
  ConfNode n;
  n.origin = origin_of(y.Mark(), file, positions);
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      break;
    case YAML::NodeType::Scalar:
      n.kind = ConfNode::Kind::Scalar;
      n.scalar = y.Scalar();
      n.quoted = y.Tag() == "!";  // yaml-cpp tags quoted scalars "!", plain ones "?"
      break;
    case YAML::NodeType::Sequence:
      n.kind = ConfNode::Kind::Sequence;
      for (const auto& item : y) n.children.push_back(convert(item, file, positions));
      break;
    case YAML::NodeType::Map:
      n.kind = ConfNode::Kind::Map;
      for (const auto& kv : y) {
        Origin ko = origin_of(kv.first.Mark(), file, positions);
        if (!kv.first.IsScalar()) fail("{}: a mapping key must be a plain name", ko.str());
        ConfNode child = convert(kv.second, file, positions);
        child.key = kv.first.Scalar();
        child.key_origin = ko;
        if (const ConfNode* prev = n.find(child.key))
          fail("{}: duplicate key `{}` (first at line {})", ko.str(), child.key,
               prev->key_origin.line);
        n.children.push_back(std::move(child));
      }
      break;
  }
  return n;
}

ConfNode load_tree_rec(const std::string& path, std::vector<std::string>& stack) {
  ConfNode root = parse_yaml(read_file(path), path);
  if (root.kind == ConfNode::Kind::Null) root.kind = ConfNode::Kind::Map;  // empty file
  if (root.kind != ConfNode::Kind::Map)
    fail("{}: a config file must be a mapping of keys, got {}", root.origin.str(),
         root.describe());
  const ConfNode* base = root.find("base");
  if (!base) return root;

  if (base->kind != ConfNode::Kind::Scalar)
    fail("{}: `base` expects a file name, got {}", base->origin.str(), base->describe());
  fs::path base_path = fs::path(path).parent_path() / base->scalar;
  if (!file_exists(base_path.string()))
    fail("{}: base file `{}` not found (looked for {})", base->origin.str(), base->scalar,
         base_path.string());
  std::string id = fs::weakly_canonical(base_path).string();
  if (std::find(stack.begin(), stack.end(), id) != stack.end()) {
    std::string chain;
    for (const auto& s : stack) chain += s + " -> ";
    fail("{}: base cycle: {}{}", base->origin.str(), chain, id);
  }
  stack.push_back(id);
  ConfNode merged = load_tree_rec(base_path.string(), stack);
  stack.pop_back();
  root.erase("base");
  merge_into(merged, root);
  return merged;
}

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 10 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// Sets the origins of a whole override value to the override itself.
void set_origin(ConfNode& n, const Origin& o) {
  n.origin = o;
  n.key_origin = o;
  for (auto& c : n.children) set_origin(c, o);
}

}  // namespace

ConfNode parse_yaml(const std::string& text, const std::string& file, bool positions) {
  try {
    return convert(YAML::Load(text), file, positions);
  } catch (const YAML::ParserException& e) {
    if (!positions) fail("{}: malformed value: {}", file, e.msg);
    fail("{}:{}:{}: malformed YAML: {}", file, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
}

ConfNode load_tree(const std::string& path) {
  GMSA_CHECK(file_exists(path), "config file not found: {}", path);
  std::vector<std::string> stack{fs::weakly_canonical(path).string()};
  return load_tree_rec(path, stack);
}

void merge_into(ConfNode& base, const ConfNode& over) {
  if (base.kind == ConfNode::Kind::Map && over.kind == ConfNode::Kind::Null) return;
  if (base.kind != ConfNode::Kind::Map || over.kind != ConfNode::Kind::Map) {
    std::string key = base.key;  // the entry keeps its name; value and positions come from `over`
    base = over;
    base.key = key;
    return;
  }
  for (const auto& child : over.children) {
    if (ConfNode* existing = base.find(child.key))
      merge_into(*existing, child);
    else
      base.children.push_back(child);
  }
}

void apply_override(ConfNode& root, const std::string& assignment,
                    bool (*verbatim_string)(const std::string& path)) {
  const Origin where{"--set " + assignment, 0, 0};
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("{}: expected key.path=value", where.file);
  std::string path = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  if (path == "base") fail("{}: `base` can only be given in a file", where.file);

  ConfNode value;
  bool quoted = !text.empty() && (text.front() == '"' || text.front() == '\'');
  if (verbatim_string && verbatim_string(path) && !quoted) {
    value.kind = ConfNode::Kind::Scalar;
    value.scalar = text;
    value.quoted = true;
  } else {
    value = parse_yaml(text, where.file, false);
  }
  set_origin(value, where);

  ConfNode* node = &root;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) fail("{}: empty component in key path `{}`", where.file, path);
    ConfNode* next = nullptr;
    if (node->kind == ConfNode::Kind::Sequence && is_index(part)) {
      size_t i = std::stoul(part);
      if (i >= node->children.size())
        fail("{}: index {} is out of range (`{}` has {} elements)", where.file, i,
             path.substr(0, start ? start - 1 : 0), node->children.size());
      next = &node->children[i];
    } else {
      if (node->kind != ConfNode::Kind::Map) {  // the override replaces a non-mapping here
        node->kind = ConfNode::Kind::Map;
        node->children.clear();
        node->origin = where;
      }
      next = node->find(part);
      if (!next) {
        node->children.emplace_back();
        next = &node->children.back();
        next->key = part;
        next->key_origin = where;
      }
    }
    if (dot == std::string::npos) {
      merge_into(*next, value);  // a mapping value merges like a file would
      return;
    }
    node = next;
    start = dot + 1;
  }
}

}  // namespace gmsa::config
