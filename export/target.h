#pragma once
// What a recipe exports, registered by recipe name (export/targets/*.cpp), so that neither
// core/recipe.h nor a network needs exporter code: a target names the exportable modules, how to
// call one on an example input, and which of the run's own data calibrates and evaluates it.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/data.h"
#include "core/registry.h"
#include "core/run.h"
#include "export/capture.h"

namespace ef::exporter {

struct Heldout {
  std::vector<Inputs> inputs;          // each one batch of the export's fixed batch size (every graph input)
  std::vector<torch::Tensor> targets;  // matching labels / ground truth
};

class ExportTarget {
 public:
  virtual ~ExportTarget() = default;
  virtual std::vector<std::string> models() const = 0;  // exportable names in the recipe's modules()
  // The module `model`, called on an example batch of `batch` samples.
  virtual CaptureSpec spec(const std::string& model, int64_t batch) = 0;
  // n samples of the run's training data, as batches of `batch` (calibration), for `model`.
  virtual std::vector<Inputs> calibration(const std::string& model, int64_t n, int64_t batch) = 0;
  // n held-out samples (all when n <= 0), as batches of `batch`, for `model`.
  virtual Heldout heldout(const std::string& model, int64_t n, int64_t batch) = 0;
  // The recipe's own eval metric of `model`'s outputs, e.g. "acc" or "epe".
  virtual std::string metric_name(const std::string& model) const = 0;
  virtual bool higher_is_better(const std::string& model) const = 0;
  virtual double metric(const std::string& model, const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& targets) const = 0;
};

// Collates samples [0, n) of `data` (all when n <= 0) into whole batches of `batch` samples and
// hands each to `take`: the targets' calibration and held-out sets.
void for_each_batch(const Dataset& data, int64_t n, int64_t batch, const std::function<void(const Batch&)>& take);

// The samples' `inputs` keys as graph inputs and, when `target` is not empty, its key as the
// reference: for_each_batch for targets whose inputs and ground truth are dataset keys.
Heldout collect_batches(const Dataset& data, int64_t n, int64_t batch, const std::vector<std::string>& inputs, const std::string& target = "");

// The run's module `name` as the network class T; throws naming the recipe and `what` it lacks.
template <class T>
T* recipe_module(OpenedRun& run, const std::string& name, const std::string& what) {
  auto mods = run.recipe->modules();
  auto it = mods.find(name);
  T* m = it == mods.end() ? nullptr : dynamic_cast<T*>(it->second);
  if (!m) throw std::runtime_error("export: the run's recipe holds no " + what + " named '" + name + "'");
  return m;
}

using ExportTargetRegistry = Registry<ExportTarget, OpenedRun&>;
ExportTargetRegistry& export_targets();

}  // namespace ef::exporter
