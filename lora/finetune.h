#pragma once
// Adapter fine-tuning for any recipe: the config's `adapter` block.
//
//   "adapter": {"base": "runs/classify-tiny", "kind": "lora", "rank": 4,
//               "targets": ["blocks.*.mlp.fc1", ...], ...the kind's options (lora/README.md)}
//
// Without the block a recipe trains its whole network, exactly as before. With it, the network is
// a frozen network (core/frozen.h) loaded from the base run's network of the same name (a run of
// the same recipe, with the same architecture), adapters are injected into it by `targets` (glob
// patterns over its layer paths, lora/inject.h; each recipe names defaults), and only the adapters
// train: checkpoints hold them alone (module "adapter"), the optimizer and the EMA see only them.
//
// A recipe holds one TrainedNetwork built right after its network and asks it, whichever the case,
// for what the Recipe interface returns (modules, frozen, ema_modules), for the optimizer's
// parameter groups, and to switch train/eval mode. The frozen base stays in eval mode while the
// adapters train: its dropout is off and its normalisation statistics never move, so the base
// weights a run records are the weights it runs.
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/optim.h"
#include "core/recipe.h"
#include "lora/inject.h"

namespace ef {
struct OpenedRun;
}

namespace ef::lora {

struct TrainedNetworkSpec {
  std::string recipe;                        // the recipe's registered name: the base must be a run of it
  std::string module;                        // the network's name in modules() ("model")
  std::vector<std::string> default_targets;  // adapter.targets when not given; those matching no layer are dropped
  std::vector<std::string> model_sections;   // config sections that shape the network ("model", ...): must equal the base's
};

class TrainedNetwork {
 public:
  // `network` is the recipe's freshly built network (already on its device); `root` the whole config.
  // Throws ConfigError for a bad block, InputError for a base run that is missing, of another recipe,
  // itself an adapter run, or built with another architecture.
  TrainedNetwork(const Config& root, torch::nn::Module& network, const TrainedNetworkSpec& spec);

  bool adapted() const { return static_cast<bool>(adapters_); }
  Adapters adapters() const { return adapters_; }  // null unless adapted()

  // What the recipe returns from the Recipe interface.
  std::map<std::string, torch::nn::Module*> modules() const;
  std::map<std::string, FrozenNetwork> frozen() const;
  std::vector<std::string> ema_modules() const;

  // The optimizer's parameter groups and the parameters optimize_step clips.
  std::vector<ParamGroup> param_groups() const;
  std::vector<torch::Tensor> parameters() const;

  // Train/eval mode of what trains: the network, or the adapters (the frozen base stays in eval).
  void train(bool on);

 private:
  torch::nn::Module* network_;
  TrainedNetworkSpec spec_;
  std::filesystem::path base_;
  Adapters adapters_{nullptr};
};

// For an export target: when the opened run trained adapters (module "adapter"), folds them into its
// network's weights (ΔW merged in eval mode), so that the exported graph is the adapted network at
// the base's cost. Throws InputError when an adapter is not a fixed linear map (FouRA's adaptive
// gate) and so cannot be folded.
void merge_adapters_for_export(OpenedRun& run);

}  // namespace ef::lora
