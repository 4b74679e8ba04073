#pragma once
// Adapter injection into any torch::nn::Module tree, by glob patterns over dotted module paths
// ("*.attn1.to_q", "down_blocks.*.resnets.*.conv1", "blocks.*.mlp.fc1"; `*` matches any run of
// characters, dots included, `?` one character; a pattern must match the whole path).
//
// How the adapter reaches the network's forward, and the constraint that follows
// ------------------------------------------------------------------------------
// The project's networks call their layers through typed members (`fc1->forward(x)`,
// `to_out[0]->as<torch::nn::Linear>()->forward(...)`), and LinearImpl/Conv2dImpl::forward are
// not virtual. Replacing the child in its parent (`parent->replace_module(name, wrapper)`) only
// changes the parent's child table: the member still points at the old layer, which the network
// keeps calling, so the adapter would silently do nothing (and `as<Linear>()` on a wrapper would
// return null). Nothing in LibTorch calls a layer through its parent's table.
//
// What every such network does read is the layer's `weight` member. So injection works through the
// weight: the layer object stays where it is, its registered parameter keeps W0 (frozen), and
// `refresh()` sets the member the forward reads to W0 + ΔW, a tensor that carries gradients to
// the adapter's parameters. base(x) + adapter(x) = (W0 + ΔW) x exactly for adapters that are a
// fixed linear map of the input (AdapterImpl::trains_as_weight(): LoRA without dropout, FouRA with
// gate none or frozen). Input-dependent adapters (LoRA dropout, FouRA's adaptive gate) cannot be
// injected this way and are refused with the reason; they run where a network calls the adapter
// itself (Adapters::forward_layer), which needs a hook in models/ to reach the project's networks.
//
// Usage: call `refresh()` at the top of every forward pass over the network that follows a change
// of the adapters (each training step, after an optimizer step, after loading adapter weights,
// after moving the network to another device). The adapters live in the returned `Adapters`
// module, not in the base network: the base's parameters and checkpoints are untouched, and a
// recipe returns the Adapters module as its trained network.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/config.h"
#include "lora/adapter.h"

namespace ef::lora {

// True when `pattern` (glob: `*`, `?`) matches the whole dotted `path`.
bool glob_match(const std::string& pattern, const std::string& path);

struct AdaptedLayer {
  std::string path;                              // "blocks.0.mlp.fc1"
  std::shared_ptr<torch::nn::Module> layer;      // the network's LinearImpl or Conv2dImpl
  std::shared_ptr<AdapterImpl> adapter;
  torch::Tensor base_weight;                     // the layer's registered weight parameter (W0)
  torch::Tensor saved_weight;                    // W0 before merge(), while merged
  bool merged = false;
  torch::Tensor& weight_member() const;          // the `weight` member the layer's forward reads
  torch::Tensor base_forward(const torch::Tensor& x) const;  // the layer's forward with the unmerged W0
};

// The injected adapters, registered under their layer paths: parameter names are
// "<path>.lora_A.weight", ... (so PEFT keys are "base_model.model." + name).
class AdaptersImpl : public torch::nn::Module {
 public:
  AdaptersImpl() = default;
  const std::vector<AdaptedLayer>& layers() const { return layers_; }
  std::vector<std::string> paths() const;
  AdapterImpl& adapter(const std::string& path);  // std::out_of_range naming the path

  // Sets every unmerged layer's weight member to W0 + ΔW (see the header comment).
  void refresh();
  // Folds ΔW into W0 in place (no_grad) and keeps W0 to restore: the network then runs at the
  // base's cost. Needs every adapter weight_equivalent() (eval mode for LoRA dropout).
  void merge();
  // Restores W0 exactly (bitwise: the saved copy, not W0 + ΔW − ΔW).
  void unmerge();
  bool merged() const;
  // Puts every layer back to its plain W0 and drops the adapters from the network's forward.
  void detach();

  // The layer with its adapter, y = base(x) + adapter(x) with the unmerged W0, for code that calls
  // it itself (input-dependent adapters work here).
  torch::Tensor forward_layer(const std::string& path, const torch::Tensor& x);

  void add(AdaptedLayer layer);  // used by inject()

 private:
  std::vector<AdaptedLayer> layers_;
};
TORCH_MODULE(Adapters);

// Every torch::nn::Linear / torch::nn::Conv2d of `root` whose path matches one of `patterns` gets
// an adapter built from `adapter` ({"kind": ...}); every parameter of `root` gets
// requires_grad(false). Throws ef::ConfigError for a pattern that matches no Linear/Conv2d (with
// the closest layer paths), for a matched module of another type, for a layer that already has an
// adapter, and for an adapter that cannot be injected through the weight (see above); the network
// is then left as it was. A layer shared under several paths gets one adapter,
// named by its first path.
Adapters inject(torch::nn::Module& root, const std::vector<std::string>& patterns, const Config& adapter);

// Every Linear/Conv2d path of `root`, in module order (for messages and listings).
std::vector<std::string> adaptable_paths(torch::nn::Module& root);

}  // namespace ef::lora
