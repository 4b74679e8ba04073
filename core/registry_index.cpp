#include "core/registry_index.h"

#include <algorithm>
#include <mutex>

namespace ef {

namespace {
struct Index {
  std::mutex mutex;
  std::vector<const RegistryListing*> live;
};
// Constructed inside the first registry's constructor, so destroyed after every registry.
Index& index() {
  static Index i;
  return i;
}
}  // namespace

RegistryListing::RegistryListing() {
  Index& i = index();
  std::lock_guard<std::mutex> lock(i.mutex);
  i.live.push_back(this);
}

RegistryListing::~RegistryListing() {
  Index& i = index();
  std::lock_guard<std::mutex> lock(i.mutex);
  i.live.erase(std::remove(i.live.begin(), i.live.end(), this), i.live.end());
}

std::vector<const RegistryListing*> registry_index() {
  Index& i = index();
  std::lock_guard<std::mutex> lock(i.mutex);
  std::vector<const RegistryListing*> out = i.live;
  std::stable_sort(out.begin(), out.end(), [](const RegistryListing* a, const RegistryListing* b) { return a->what() < b->what(); });
  return out;
}

}  // namespace ef
