#include "core/export_target.h"

#include <algorithm>

namespace ef {

ExportTargetRegistry& export_targets() {
  static ExportTargetRegistry r("export target");
  return r;
}

void ExportTarget::no_model(const std::string& model) const {
  std::string known;
  for (const auto& k : models()) known += (known.empty() ? "" : ", ") + k;
  throw InputError("export: no network '" + model + "' to export (exportable: " + (known.empty() ? "none; see --format" : known) + ")");
}

void for_each_batch(const Dataset& data, int64_t n, int64_t batch, const std::function<void(const Batch&)>& take) {
  const int64_t count = n <= 0 ? data.size() : std::min(n, data.size());
  for (int64_t b = 0; b + batch <= count; b += batch) {
    std::vector<Sample> samples;
    for (int64_t i = b; i < b + batch; ++i) samples.push_back(data.get(i));
    take(collate(samples));
  }
}

Heldout collect_batches(const Dataset& data, int64_t n, int64_t batch, const std::vector<std::string>& inputs, const std::string& target) {
  Heldout h;
  for_each_batch(data, n, batch, [&](const Batch& b) {
    Inputs x;
    for (const auto& k : inputs) x.push_back(b.at(k));
    h.inputs.push_back(std::move(x));
    if (!target.empty()) h.targets.push_back(b.at(target));
  });
  return h;
}

}  // namespace ef
