#pragma once
// Config: a JSON tree with typed getters.
//
// Recipes read their options through typed getters that (1) fail with the dotted path and the
// expected type, (2) write the default back into the tree, so the saved config is fully resolved,
// and (3) record which keys were read. After a recipe is built, `reject_unknown_keys()` turns every
// key nobody read into an error with a "did you mean" suggestion: a typo never silently does nothing.
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace ef {

// Bad input from the user: a file that is missing, corrupt or not what its format says, a command-line
// argument, a config value. The message names the file, the key or the option; the CLI reports it
// and exits 2 (cli/main.cpp). Failures that are not the input's fault stay std::runtime_error (exit 1).
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A config key or value: the message carries the config's source and the dotted path.
struct ConfigError : InputError {
  using InputError::InputError;
};

class Config {
 public:
  Config();  // empty object
  static Config from_json(nlohmann::json tree, std::string source = "<config>");
  static Config load(const std::filesystem::path& file);

  // "a.b.c=<json>": the value is parsed as JSON; anything that is not valid JSON is a string
  // (so `--set name=run1` works without quotes). Creates missing objects along the path.
  void apply_override(const std::string& assignment);

  // Sub-section; a missing section reads as {} (and appears in the resolved config once written to).
  Config section(const std::string& key) const;
  bool has(const std::string& key) const;  // false for a missing key and for one set to null ("unset")

  template <class T> T get(const std::string& key, const T& fallback) const;
  template <class T> T require(const std::string& key) const;
  // A number that must be at least `least` (a count, a size): refused naming the key otherwise.
  template <class T> T get_at_least(const std::string& key, const T& fallback, const T& least) const {
    const T v = get<T>(key, fallback);
    if (v < least) invalid(key, "must be >= " + std::to_string(least) + ", got " + std::to_string(v));
    return v;
  }
  // The section's "kind" (required).
  std::string kind() const { return require<std::string>("kind"); }

  // Marks a key (and everything under it) as known without reading it: for subtrees handed to
  // another component wholesale (a generator's parameters, say).
  void accept(const std::string& key) const;

  // Throws ConfigError "<source>: <path.key>: <why>", for values a getter accepted but the reader
  // cannot use (a range, a combination of keys).
  [[noreturn]] void invalid(const std::string& key, const std::string& why) const;

  // Throws ConfigError for the first key under this section that no getter read.
  void reject_unknown_keys() const;  // null values are unset keys and pass

  std::string path() const { return prefix_; }        // "optim.schedule" ("" at the root)
  std::string path_of(const std::string& key) const;  // "optim.schedule.warmup"
  const nlohmann::json& json() const;                 // this section's subtree
  const nlohmann::json& root() const;
  std::string source() const;

 private:
  struct State {
    nlohmann::json root;
    std::string source;
    std::set<std::string> read;  // dotted paths that were read or accepted
  };
  Config(std::shared_ptr<State> state, std::string prefix);
  nlohmann::json& node() const;  // creates the section when missing
  const nlohmann::json* find(const std::string& key) const;
  void mark(const std::string& key) const;
  [[noreturn]] void type_error(const std::string& key, const char* expected, const nlohmann::json& got) const;
  template <class T> T checked_integer(const std::string& key, const nlohmann::json& v) const;

  std::shared_ptr<State> state_;
  std::string prefix_;
};

// Smallest edit distance suggestion among `candidates` (empty when nothing is close).
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);
size_t edit_distance(const std::string& a, const std::string& b);  // Levenshtein
std::string describe_json(const nlohmann::json& v);  // "string \"fast\"", "number 3", ...

// ---- typed getters --------------------------------------------------------------------------
namespace config_detail {
template <class T> struct Kind;
template <> struct Kind<bool> { static constexpr const char* name = "boolean"; static bool ok(const nlohmann::json& v) { return v.is_boolean(); } };
template <> struct Kind<std::string> { static constexpr const char* name = "string"; static bool ok(const nlohmann::json& v) { return v.is_string(); } };
template <> struct Kind<double> { static constexpr const char* name = "number"; static bool ok(const nlohmann::json& v) { return v.is_number(); } };
template <> struct Kind<float> { static constexpr const char* name = "number"; static bool ok(const nlohmann::json& v) { return v.is_number(); } };
// An integer, or a float with no fraction (3.0, 1e6); the range is checked by `integer_value`.
template <> struct Kind<int64_t> { static constexpr const char* name = "integer"; static bool ok(const nlohmann::json& v) { return v.is_number_integer() || (v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::trunc(v.get<double>())); } };
template <> struct Kind<int> : Kind<int64_t> {};
template <> struct Kind<std::vector<double>> { static constexpr const char* name = "array of numbers"; static bool ok(const nlohmann::json& v) { if (!v.is_array()) return false; for (auto& e : v) if (!e.is_number()) return false; return true; } };
template <> struct Kind<std::vector<int64_t>> { static constexpr const char* name = "array of integers"; static bool ok(const nlohmann::json& v) { if (!v.is_array()) return false; for (auto& e : v) if (!e.is_number_integer() || (e.is_number_unsigned() && e.get<uint64_t>() > uint64_t(INT64_MAX))) return false; return true; } };
template <> struct Kind<std::vector<std::string>> { static constexpr const char* name = "array of strings"; static bool ok(const nlohmann::json& v) { if (!v.is_array()) return false; for (auto& e : v) if (!e.is_string()) return false; return true; } };
template <> struct Kind<nlohmann::json> { static constexpr const char* name = "JSON value"; static bool ok(const nlohmann::json&) { return true; } };

// `v` (accepted by Kind<int64_t>) as a T, or nullopt when it does not fit (a huge integer would
// otherwise wrap around, or be undefined behaviour in the cast).
template <class T> std::optional<T> integer_value(const nlohmann::json& v) {
  using L = std::numeric_limits<T>;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(L::max())) return std::nullopt;
    return static_cast<T>(u);
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < static_cast<int64_t>(L::min()) || i > static_cast<int64_t>(L::max())) return std::nullopt;
    return static_cast<T>(i);
  }
  const double d = v.get<double>();  // integral (Kind checked); -min is 2^63 for int64, which does not fit
  if (!(d >= static_cast<double>(L::min()) && d < -static_cast<double>(L::min()))) return std::nullopt;
  return static_cast<T>(d);
}
}  // namespace config_detail

template <class T> T Config::checked_integer(const std::string& key, const nlohmann::json& v) const {
  if (auto i = config_detail::integer_value<T>(v)) return *i;
  invalid(key, describe_json(v) + " is out of range for an integer (" + std::to_string(std::numeric_limits<T>::min()) + " to " +
                   std::to_string(std::numeric_limits<T>::max()) + ")");
}

template <class T> T Config::get(const std::string& key, const T& fallback) const {
  mark(key);
  const nlohmann::json* v = find(key);
  if (v == nullptr || v->is_null()) {
    node()[key] = fallback;  // resolved config records the default
    return fallback;
  }
  if (!config_detail::Kind<T>::ok(*v)) type_error(key, config_detail::Kind<T>::name, *v);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) return checked_integer<T>(key, *v);
  else return v->get<T>();
}

template <class T> T Config::require(const std::string& key) const {
  mark(key);
  const nlohmann::json* v = find(key);
  if (v == nullptr || v->is_null())
    throw ConfigError(source() + ": " + path_of(key) + ": required " + config_detail::Kind<T>::name + " is missing");
  if (!config_detail::Kind<T>::ok(*v)) type_error(key, config_detail::Kind<T>::name, *v);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) return checked_integer<T>(key, *v);
  else return v->get<T>();
}

}  // namespace ef
