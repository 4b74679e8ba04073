#pragma once
// Name -> factory registry, filled by static registration in each domain library
// (`EF_REGISTER(...)` at namespace scope). Duplicates are rejected at start-up, unknown names fail
// with the list of known ones and a "did you mean". Every registry lists itself in the index of
// registry_index.h, from which `edgeforge list` prints them all.
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/registry_index.h"

namespace ef {

template <class Product, class... Args>
class Registry : public RegistryListing {
 public:
  using Factory = std::function<std::unique_ptr<Product>(Args...)>;
  struct Entry {
    Factory make;
    std::string description;
  };

  explicit Registry(std::string what) : what_(std::move(what)) {}

  // Returns true so that it can initialise a static: `static bool r = registry.add(...)`.
  bool add(const std::string& name, Factory make, std::string description = {}) {
    if (entries_.count(name)) throw std::logic_error(what_ + " '" + name + "' is registered twice");
    entries_.emplace(name, Entry{std::move(make), std::move(description)});
    return true;
  }

  std::unique_ptr<Product> create(const std::string& name, Args... args) const {
    return at(name).make(std::forward<Args>(args)...);
  }

  const Entry& at(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::string known, hint = closest_match(name, names());
      for (const auto& n : names()) known += (known.empty() ? "" : ", ") + n;
      throw ConfigError("unknown " + what_ + " '" + name + "'" + (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                        "; known: " + known);
    }
    return it->second;
  }

  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [n, e] : entries_) out.push_back(n);
    return out;
  }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  const std::string& what() const override { return what_; }
  std::vector<Item> items() const override {
    std::vector<Item> out;
    for (const auto& [n, e] : entries_) out.push_back({n, e.description});
    return out;
  }

 private:
  std::string what_;
  std::map<std::string, Entry> entries_;
};

#define EF_CONCAT_INNER(a, b) a##b
#define EF_CONCAT(a, b) EF_CONCAT_INNER(a, b)
// EF_REGISTER(registry(), "name", factory, "description")
#define EF_REGISTER(registry, ...) \
  static const bool EF_CONCAT(ef_registered_, __LINE__) = (registry).add(__VA_ARGS__)

}  // namespace ef
