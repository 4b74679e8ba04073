#pragma once
// A recipe is one training method: it builds its networks, data and optimizers from the config,
// owns the training step (GAN-style recipes step several optimizers), evaluates, and names the
// state a checkpoint must hold. The Trainer runs every recipe through the same loop.
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/metrics.h"
#include "core/optim.h"
#include "core/registry.h"

namespace ef {

struct RunContext {
  std::filesystem::path run_dir;  // samples/ and other outputs go below it
  torch::Device device{torch::kCPU};
  uint64_t seed = 0;
  int64_t total_steps = 0;         // train.steps, for schedules
  int64_t grad_accum = 1;          // train.grad_accum: micro-batches per optimizer step
  double grad_clip = 0.0;          // train.grad_clip: max global gradient norm (0: off)
  bool quiet = false;
};

// Where a frozen network's weights come from: another run's network, or a safetensors file.
struct FrozenSource {
  std::filesystem::path run;   // a run folder (runs/<name>/ means its newest run) ...
  std::string module;          // ... and the network's name there (trained, or frozen there in turn)
  std::filesystem::path file;  // or a .safetensors file (diffusers / PEFT names load as they are)
  bool empty() const { return run.empty() && file.empty(); }
};

// A network the recipe uses but does not train: a teacher, an autoencoder, an adapter's base model.
struct FrozenNetwork {
  torch::nn::Module* module = nullptr;
  FrozenSource source;
};

class Recipe {
 public:
  virtual ~Recipe() = default;

  // Networks the recipe trains, whose weights every checkpoint holds: one <name>.safetensors each.
  // EMA (ema_modules), quantization-aware training and checkpoint loading walk these only.
  virtual std::map<std::string, torch::nn::Module*> modules() = 0;
  // Frozen networks, by name (distinct from modules()). After the recipe is built, the launcher loads
  // each from its source (core/frozen.h), moves it to the device, puts it in eval mode without
  // gradients, and records the source it resolved (run folder, checkpoint, checksum) under the
  // resolved config's "frozen" key, so that a resume, eval or export reloads exactly those weights.
  // They are never saved, averaged or quantization-trained.
  virtual std::map<std::string, FrozenNetwork> frozen() { return {}; }
  // Shared trainer options (keys of `train`, see TrainOptions) that this recipe cannot honour: the
  // launcher rejects a config that sets one to other than its default, naming the key.
  virtual std::vector<std::string> unsupported_train_options() const { return {}; }
  // Optimizers whose state a checkpoint holds.
  virtual std::map<std::string, ScheduledOptimizer*> optimizers() = 0;
  // Names in modules() of which the trainer keeps an exponential moving average (train.ema > 0).
  virtual std::vector<std::string> ema_modules() const { return {}; }

  // One optimisation step at `step` (0-based). Returns scalar metrics by short name; "loss" is
  // checked for NaN/Inf by the trainer.
  virtual Scalars train_step(int64_t step) = 0;
  // Held-out evaluation: metrics by short name ("acc", "loss").
  virtual Scalars evaluate() = 0;
  // Sample images (PNG under dir, TensorBoard images through log).
  virtual void write_samples(const std::filesystem::path& dir, int64_t step, MetricLogger& log) {}

  // Extra state a resume needs (data positions, recipe RNGs).
  virtual void save_state(torch::serialize::OutputArchive& archive) const {}
  virtual void load_state(torch::serialize::InputArchive& archive) {}
};

using RecipeRegistry = Registry<Recipe, const Config&, const RunContext&>;
RecipeRegistry& recipes();

// Thrown by a training step whose loss is NaN/Inf, before the optimizer applies it.
struct NonFiniteLoss : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The common single-optimizer step: zero grads, `accumulate` micro-steps of backward on
// loss_of(micro)/accumulate, gradient clipping, optimizer step. Checks each loss is finite before
// anything is applied. Returns the mean loss and the gradient norm.
struct StepStats {
  double loss = 0;
  double grad_norm = 0;
};
StepStats optimize_step(ScheduledOptimizer& opt, const std::vector<torch::Tensor>& params, int64_t accumulate,
                        double grad_clip, const std::function<torch::Tensor(int64_t micro)>& loss_of);

}  // namespace ef
