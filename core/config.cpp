#include "core/config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace ef {

namespace {
std::string join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
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

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;  // only suggest plausible typos
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

std::string describe_json(const nlohmann::json& v) {
  std::string dumped = v.dump();
  if (dumped.size() > 40) dumped = dumped.substr(0, 37) + "...";
  return dumped;
}

Config::Config() : Config(std::make_shared<State>(State{nlohmann::json::object(), "<config>", {}}), "") {}

Config::Config(std::shared_ptr<State> state, std::string prefix) : state_(std::move(state)), prefix_(std::move(prefix)) {}

Config Config::from_json(nlohmann::json tree, std::string source) {
  if (!tree.is_object()) throw ConfigError(source + ": the top level must be a JSON object");
  return Config(std::make_shared<State>(State{std::move(tree), std::move(source), {}}), "");
}

Config Config::load(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError("config file not found or unreadable: " + file.string());
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json tree;
  try {
    tree = nlohmann::json::parse(text.str(), nullptr, true, /*ignore_comments=*/true);
  } catch (const nlohmann::json::exception& e) {  // a syntax error, or a number out of range (1e400)
    throw ConfigError(file.string() + ": invalid JSON: " + e.what());
  }
  return from_json(std::move(tree), file.string());
}

void Config::apply_override(const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("override '" + assignment + "': expected key.path=value");
  std::string dotted = assignment.substr(0, eq);
  std::string text = assignment.substr(eq + 1);
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error&) {
    value = text;  // bare words are strings
  } catch (const nlohmann::json::exception& e) {  // 1e400
    throw ConfigError("override '" + assignment + "': " + e.what());
  }
  nlohmann::json* cur = &node();
  std::stringstream parts(dotted);
  std::string part, walked = prefix_;
  std::vector<std::string> keys;
  while (std::getline(parts, part, '.')) keys.push_back(part);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].empty()) throw ConfigError("override '" + assignment + "': empty key in path");
    walked = join(walked, keys[i]);
    if (i + 1 == keys.size()) {
      (*cur)[keys[i]] = value;
    } else {
      nlohmann::json& next = (*cur)[keys[i]];
      if (next.is_null()) next = nlohmann::json::object();
      if (!next.is_object())
        throw ConfigError("override '" + assignment + "': " + walked + " is " + describe_json(next) + ", not an object");
      cur = &next;
    }
  }
}

nlohmann::json& Config::node() const {
  nlohmann::json* cur = &state_->root;
  if (prefix_.empty()) return *cur;
  std::stringstream parts(prefix_);
  std::string part;
  while (std::getline(parts, part, '.')) {
    nlohmann::json& next = (*cur)[part];
    if (next.is_null()) next = nlohmann::json::object();
    cur = &next;
  }
  return *cur;
}

const nlohmann::json* Config::find(const std::string& key) const {
  const nlohmann::json& n = node();
  auto it = n.find(key);
  return it == n.end() ? nullptr : &*it;
}

void Config::mark(const std::string& key) const { state_->read.insert(join(prefix_, key)); }

Config Config::section(const std::string& key) const {
  mark(key);
  const nlohmann::json* v = find(key);
  if (v != nullptr && !v->is_null() && !v->is_object()) type_error(key, "object", *v);
  return Config(state_, join(prefix_, key));
}

bool Config::has(const std::string& key) const {
  const nlohmann::json* v = find(key);
  return v != nullptr && !v->is_null();
}

void Config::accept(const std::string& key) const { state_->read.insert(join(prefix_, key) + ".*"); mark(key); }

std::string Config::path_of(const std::string& key) const { return join(prefix_, key); }
const nlohmann::json& Config::json() const { return node(); }
const nlohmann::json& Config::root() const { return state_->root; }
std::string Config::source() const { return state_->source; }

void Config::invalid(const std::string& key, const std::string& why) const {
  throw ConfigError(source() + ": " + path_of(key) + ": " + why);
}

void Config::type_error(const std::string& key, const char* expected, const nlohmann::json& got) const {
  throw ConfigError(source() + ": " + path_of(key) + ": expected " + expected + ", got " + describe_json(got));
}

void Config::reject_unknown_keys() const {
  const auto& read = state_->read;
  auto accepted = [&](const std::string& path) {
    if (read.count(path)) return true;
    // an accepted subtree "a.b.*" covers a.b.c...
    for (std::string p = path; !p.empty();) {
      auto dot = p.rfind('.');
      if (dot == std::string::npos) break;
      p = p.substr(0, dot);
      if (read.count(p + ".*")) return true;
    }
    return false;
  };
  std::function<void(const nlohmann::json&, const std::string&)> walk = [&](const nlohmann::json& n, const std::string& at) {
    if (!n.is_object()) return;
    std::vector<std::string> known;
    for (auto it = n.begin(); it != n.end(); ++it)
      if (accepted(join(at, it.key()))) known.push_back(it.key());
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string full = join(at, it.key());
      // null means "not set" (has() is false for it): a sweep unsets a block with {"hollow": null}
      if (it.value().is_null()) continue;
      if (!accepted(full)) {
        std::string hint = closest_match(it.key(), known);
        throw ConfigError(source() + ": unknown key '" + full + "'" +
                          (hint.empty() ? std::string(" (not used by this recipe)") : " (did you mean '" + join(at, hint) + "'?)"));
      }
      if (!read.count(full + ".*")) walk(it.value(), full);
    }
  };
  walk(node(), prefix_);
}

}  // namespace ef
