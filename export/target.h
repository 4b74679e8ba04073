#pragma once
// What a recipe exports, registered by recipe name (export/targets/*.cpp), so that neither
// core/recipe.h nor a network needs exporter code: a target names the exportable modules, how to
// call one on an example input, and which of the run's own data calibrates and evaluates it.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/registry.h"
#include "core/run.h"
#include "export/capture.h"

namespace ef::exporter {

struct Heldout {
  std::vector<torch::Tensor> inputs;   // each one batch of the export's fixed batch size
  std::vector<torch::Tensor> targets;  // matching labels / ground truth
};

class ExportTarget {
 public:
  virtual ~ExportTarget() = default;
  virtual std::vector<std::string> models() const = 0;  // exportable names in the recipe's modules()
  // The module `model`, called on an example batch of `batch` samples.
  virtual CaptureSpec spec(const std::string& model, int64_t batch) = 0;
  // n samples of the run's training data, as batches of `batch` (calibration).
  virtual std::vector<torch::Tensor> calibration(int64_t n, int64_t batch) = 0;
  // n held-out samples (all when n <= 0), as batches of `batch`.
  virtual Heldout heldout(int64_t n, int64_t batch) = 0;
  virtual std::string metric_name() const = 0;  // e.g. "acc" (higher is better)
  virtual double metric(const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& targets) const = 0;
};

using ExportTargetRegistry = Registry<ExportTarget, OpenedRun&>;
ExportTargetRegistry& export_targets();

}  // namespace ef::exporter
