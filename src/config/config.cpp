// Loading (files, overrides, chain), typed reading with unknown-key suggestions, dumping,
// the docs table: everything driven by the option table of options.cpp.
#include "gmsa/config/config.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "gmsa/config/options.h"
#include "gmsa/util/error.h"

namespace gmsa {

using config::ConfNode;
using config::Option;
using config::options;

namespace {

// Every proper prefix of an option path ("model", "model.init"): keys that hold mappings.
const std::set<std::string>& sections() {
  static const std::set<std::string> s = [] {
    std::set<std::string> out;
    for (const auto& o : options())
      for (size_t dot = o.path.find('.'); dot != std::string::npos; dot = o.path.find('.', dot + 1))
        out.insert(o.path.substr(0, dot));
    return out;
  }();
  return s;
}

size_t levenshtein(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::pair<std::string, std::string> split_last(const std::string& path) {
  size_t dot = path.rfind('.');
  if (dot == std::string::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

// The declared key closest to an unknown one: by edit distance of the whole path, or of the
// last component (one more if under another section), so `optim.lrr`, `lr` (misplaced) and
// `model.hidden_size` (missing `init`) all find their key.
std::string closest_key(const std::string& path) {
  auto [parent, leaf] = split_last(path);
  std::vector<std::string> candidates;
  for (const auto& o : options()) candidates.push_back(o.path);
  candidates.insert(candidates.end(), sections().begin(), sections().end());
  std::string best;
  size_t best_score = SIZE_MAX;
  for (const auto& c : candidates) {
    auto [cparent, cleaf] = split_last(c);
    size_t score = std::min(levenshtein(path, c), levenshtein(leaf, cleaf) + (cparent != parent));
    if (score < best_score) best_score = score, best = c;
  }
  return best;
}

struct Reader {
  RunConfig cfg;
  std::map<std::string, config::Origin> set_at;  // where each given option was written

  void section(const ConfNode& map, const std::string& prefix) {
    for (const auto& child : map.children) {
      std::string path = prefix.empty() ? child.key : prefix + "." + child.key;
      if (const Option* o = config::find_option(path)) {
        o->read(child, cfg);
        set_at[path] = child.origin;
      } else if (sections().count(path)) {
        if (child.kind == ConfNode::Kind::Null) continue;  // `optim:` with nothing under it
        if (child.kind != ConfNode::Kind::Map)
          fail("{}: `{}` is a section and expects a mapping, got {}", child.origin.str(), path,
               child.describe());
        section(child, path);
      } else {
        fail("{}: unknown key `{}`; did you mean `{}`?", child.key_origin.str(), path,
             closest_key(path));
      }
    }
  }
};

// --set values of string options are taken verbatim (after any chain.N. prefix).
bool verbatim_string(const std::string& path) {
  std::string p = path;
  if (p.rfind("chain.", 0) == 0) {
    size_t dot = p.find('.', 6);
    p = dot == std::string::npos ? "" : p.substr(dot + 1);
  }
  const Option* o = config::find_option(p);
  return o && o->is_string();
}

std::string md_cell(std::string s) {
  for (size_t i = 0; (i = s.find('|', i)) != std::string::npos; i += 2) s.insert(i, "\\");
  return s;
}

}  // namespace

namespace config {

RunConfig read_config(const ConfNode& root) {
  Reader r;
  r.section(root, "");
  check_relations(r.cfg, [&](const char* path) {
    auto it = r.set_at.find(path);
    return it != r.set_at.end() ? it->second.str() : root.origin.file;
  });
  return std::move(r.cfg);
}

}  // namespace config

LoadedConfig load_config_stages(const std::string& file, const std::vector<std::string>& overrides) {
  ConfNode root = config::load_tree(file);
  for (const auto& o : overrides) config::apply_override(root, o, &verbatim_string);

  LoadedConfig out;
  const ConfNode* chain_ptr = root.find("chain");
  if (!chain_ptr) {
    out.top = config::read_config(root);
    out.stages = {out.top};
    return out;
  }
  ConfNode chain = *chain_ptr;
  root.erase("chain");
  out.top = config::read_config(root);
  if (chain.kind != ConfNode::Kind::Sequence || chain.children.empty())
    fail("{}: `chain` expects a non-empty sequence of mappings, got {}", chain.origin.str(),
         chain.describe());
  for (size_t i = 0; i < chain.children.size(); ++i) {
    const ConfNode& stage = chain.children[i];
    if (stage.kind != ConfNode::Kind::Map && stage.kind != ConfNode::Kind::Null)
      fail("{}: `chain[{}]` expects a mapping of keys, got {}", stage.origin.str(), i,
           stage.describe());
    ConfNode merged = root;
    config::merge_into(merged, stage);
    try {
      out.stages.push_back(config::read_config(merged));
    } catch (const Error& e) {
      fail("{} (in chain stage {})", e.what(), i);
    }
  }
  return out;
}

RunConfig load_config(const std::string& file, const std::vector<std::string>& overrides) {
  return load_config_stages(file, overrides).top;
}

std::string dump_config(const RunConfig& cfg) {
  RunConfig copy = cfg;  // Option::field hands out mutable pointers
  std::string out;
  std::vector<std::string> open;  // the sections we are inside, outermost first
  for (const auto& o : options()) {
    std::vector<std::string> parts;
    for (size_t start = 0;;) {
      size_t dot = o.path.find('.', start);
      parts.push_back(o.path.substr(start, dot - start));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    size_t depth = 0;
    while (depth < open.size() && depth + 1 < parts.size() && open[depth] == parts[depth]) ++depth;
    open.resize(depth);
    for (; depth + 1 < parts.size(); ++depth) {
      out += std::string(2 * depth, ' ') + parts[depth] + ":\n";
      open.push_back(parts[depth]);
    }
    out += std::string(2 * depth, ' ') + parts.back() + ": " + config::format_value(o.field(copy)) + "\n";
  }
  return out;
}

std::string options_markdown() {
  RunConfig defaults;
  std::string out =
      "| Key | Type | Default | Allowed | Meaning |\n"
      "|-----|------|---------|---------|---------|\n";
  for (const auto& o : options()) {
    std::string allowed = o.constraint();
    out += fmt::format("| `{}` | {} | `{}` | {} | {} |\n", o.path, o.type_name(),
                       md_cell(config::format_value(o.field(defaults))),
                       allowed.empty() ? "" : md_cell(allowed), md_cell(o.help));
  }
  return out;
}

bool operator==(const RunConfig& a, const RunConfig& b) {
  RunConfig ca = a, cb = b;
  for (const auto& o : options()) {
    config::FieldPtr fb = o.field(cb);
    bool same = std::visit(
        [&](auto* pa) { return *pa == *std::get<decltype(pa)>(fb); }, o.field(ca));
    if (!same) return false;
  }
  return true;
}

std::string effective_run_dir(const RunConfig& cfg) {
  return cfg.run.dir.empty() ? "runs/" + cfg.run.name : cfg.run.dir;
}

}  // namespace gmsa
