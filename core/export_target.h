#pragma once
// What a recipe exports, registered by recipe name in the domain that owns the recipe (beside it),
// so that export/ (capture, lowering, quantization, ONNX writing) knows no method and no network
// needs exporter code: a target names its exportable networks, how to call one on an example
// input, and which of the run's own data calibrates and evaluates it. A target whose product is
// not a network (a Gaussian scene) writes its own files instead (file_formats, write_files).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/data.h"
#include "core/registry.h"
#include "core/run.h"

namespace ef {

// One call's graph inputs, in the order of CaptureSpec::input_names (a flow pair: two images).
using Inputs = std::vector<torch::Tensor>;

// How the exporter calls one network: traced on `examples`, its parameters and buffers named as in
// the checkpoint.
struct CaptureSpec {
  torch::nn::Module* module = nullptr;                  // its named parameters/buffers become initializers
  std::function<torch::Tensor(const Inputs&)> forward;  // calls the module; one tensor out
  Inputs examples;                                      // fix every shape (batch included)
  std::vector<std::string> input_names = {"input"};     // one per example
  std::string output_name = "output";
  // Float inputs that get activation quantizers (all of them unless listed here as excluded:
  // e.g. a diffusion timestep, whose range is not an image's).
  std::set<std::string> unquantized_inputs;
};

struct Heldout {
  std::vector<Inputs> inputs;          // each one batch of the export's fixed batch size (every graph input)
  std::vector<torch::Tensor> targets;  // matching labels / ground truth
};

class ExportTarget {
 public:
  virtual ~ExportTarget() = default;
  // Networks exported as ONNX graphs (names in the recipe's modules() or frozen()); may be empty.
  virtual std::vector<std::string> models() const = 0;
  // The network `model`, called on an example batch of `batch` samples.
  virtual CaptureSpec spec(const std::string& model, int64_t batch) { no_model(model); }
  // n samples of the run's training data, as batches of `batch` (calibration), for `model`.
  virtual std::vector<Inputs> calibration(const std::string& model, int64_t n, int64_t batch) { no_model(model); }
  // n held-out samples (all when n <= 0), as batches of `batch`, for `model`.
  virtual Heldout heldout(const std::string& model, int64_t n, int64_t batch) { no_model(model); }
  // The recipe's own eval metric of `model`'s outputs, e.g. "acc" or "epe".
  virtual std::string metric_name(const std::string& model) const { no_model(model); }
  virtual bool higher_is_better(const std::string& model) const { no_model(model); }
  virtual double metric(const std::string& model, const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& targets) const {
    no_model(model);
  }

  // Formats the target writes itself instead of an ONNX graph ("ply" for a Gaussian scene).
  virtual std::vector<std::string> file_formats() const { return {}; }
  // Writes `format` into `dir` (a temporary folder the exporter renames into place; report.json and
  // report.md included) and returns the report.
  virtual nlohmann::json write_files(const std::string& format, const std::filesystem::path& dir) {
    throw InputError("export: this recipe writes no --format " + format);
  }

 protected:
  // Throws InputError naming `model` and the exportable ones.
  [[noreturn]] void no_model(const std::string& model) const;
};

// Collates samples [0, n) of `data` (all when n <= 0) into whole batches of `batch` samples and
// hands each to `take`: the targets' calibration and held-out sets.
void for_each_batch(const Dataset& data, int64_t n, int64_t batch, const std::function<void(const Batch&)>& take);

// The samples' `inputs` keys as graph inputs and, when `target` is not empty, its key as the
// reference: for_each_batch for targets whose inputs and ground truth are dataset keys.
Heldout collect_batches(const Dataset& data, int64_t n, int64_t batch, const std::vector<std::string>& inputs, const std::string& target = "");

// The run's network `name` (trained or frozen) as the class T; throws naming `what` it lacks.
template <class T>
T* recipe_module(OpenedRun& run, const std::string& name, const std::string& what) {
  torch::nn::Module* found = nullptr;
  if (auto mods = run.recipe->modules(); mods.count(name)) found = mods.at(name);
  else if (auto frozen = run.recipe->frozen(); frozen.count(name)) found = frozen.at(name).module;
  T* m = dynamic_cast<T*>(found);
  if (!m) throw InputError("export: the run's recipe holds no " + what + " named '" + name + "'");
  return m;
}

using ExportTargetRegistry = Registry<ExportTarget, OpenedRun&>;
ExportTargetRegistry& export_targets();

}  // namespace ef
