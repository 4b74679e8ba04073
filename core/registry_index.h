#pragma once
// The index of every registry in the process, for `edgeforge list`: each `Registry` (registry.h)
// enters it when constructed and leaves it when destroyed, so that the CLI lists whatever the
// linked libraries registered without including their headers. Torch-free.
#include <string>
#include <vector>

namespace ef {

class RegistryListing {
 public:
  struct Item {
    std::string name, description;
  };
  RegistryListing(const RegistryListing&) = delete;  // the index holds its address
  RegistryListing& operator=(const RegistryListing&) = delete;

  virtual const std::string& what() const = 0;  // "attention kind"
  virtual std::vector<Item> items() const = 0;  // ordered by name

 protected:
  RegistryListing();           // enters the index
  virtual ~RegistryListing();  // leaves it
};

// The live registries, ordered by what() (registries are function-local statics filled during
// static initialisation, so their order of construction says nothing).
std::vector<const RegistryListing*> registry_index();

}  // namespace ef
