#pragma once
// Adapter injection into any torch::nn::Module tree, by glob patterns over dotted module paths
// ("*.attn1.to_q", "down_blocks.*.resnets.*.conv1", "blocks.*.mlp.fc1"; `*` matches any run of
// characters, dots included, `?` one character; a pattern must match the whole path).
//
// How an adapter reaches the network's forward
// ---------------------------------------------
// The project's networks call their layers through typed members (`fc1->forward(x)`), and
// LinearImpl/Conv2dImpl::forward are not virtual: replacing a child in its parent changes only the
// parent's child table, so a wrapper module would never be called. Two paths, chosen per layer:
//
// - Hook (the project's layers, ef::nn::Linear / ef::nn::Conv2d from models/adaptable.h): the
//   adapter is attached to the layer's hook list and runs as a branch, y = base(x) + adapter(x),
//   on the layer's own input. Exact for every adapter kind, input-dependent ones included (LoRA
//   dropout, FouRA's adaptive gate), in training and inference; nothing to refresh.
// - Weight (plain torch::nn::Linear / Conv2d, e.g. a user's torch::nn stack): the registered
//   parameter keeps W0 (frozen) and `refresh()` sets the `weight` member the forward reads to
//   W0 + Σ ΔW_i, a tensor that carries gradients to the adapters. Exact only for adapters that are
//   a fixed linear map of the input (AdapterImpl::trains_as_weight()); input-dependent ones are
//   refused there with the reason.
//
// Several Adapters sets compose on one layer (brief §2.4): y = W0 x + Σ_i branch_i(x), each branch
// scaled by its set's strength s_i (`set_strength`, or the section's `strength`): hooks run in
// injection order, and the weight path sums W0 + Σ s_i ΔW_i. The per-layer state (W0, the adapters
// on it, which are merged) is shared by every set on the layer.
//
// Usage: weight-path layers need `refresh()` at the top of every forward pass over the network that
// follows a change of the adapters (each training step, after loading adapter weights, after moving
// the network to another device); it does nothing for hooked layers, so calling it always is the
// safe habit. Training mode (LoRA dropout, the gate's statistics) follows the Adapters module's
// train()/eval(), not the base network's. The adapters live in the returned `Adapters` module, not
// in the base network: the base's parameters and checkpoints are untouched, and a recipe returns the
// Adapters module as its trained network. A dropped Adapters module leaves its adapters attached:
// call detach() to remove them.
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "lora/adapter.h"

namespace ef::lora {

// True when `pattern` (glob: `*`, `?`) matches the whole dotted `path`.
bool glob_match(const std::string& pattern, const std::string& path);

// Everything injected on one layer by every Adapters set, shared by them (inject() keeps one per layer).
struct LayerStack {
  struct Entry {
    std::shared_ptr<AdapterImpl> adapter;
    bool merged = false;  // ΔW folded into the weight; the branch (hook or weight term) is then off
  };
  std::shared_ptr<torch::nn::Module> layer;  // the network's LinearImpl or Conv2dImpl
  bool hooked = false;                       // an ef::nn layer: branches through its hook list
  torch::Tensor param;                       // the registered weight parameter: W0 + Σ merged ΔW
  torch::Tensor w0;                          // a bitwise copy of W0 while any entry is merged
  std::vector<std::shared_ptr<Entry>> entries;  // injection order

  torch::Tensor& weight_member() const;                      // the `weight` member the forward reads
  torch::Tensor base_forward(const torch::Tensor& x) const;  // the layer with W0, no adapter
  // Weight path: member = param + Σ over unmerged entries of ΔW (differentiable). Hooked: no-op.
  void update_weight();
  // param := W0 + Σ over merged entries of ΔW, in place and without gradients; W0 bitwise when none is.
  void rebuild_param();
};

struct AdaptedLayer {
  std::string path;                        // "blocks.0.mlp.fc1"
  std::shared_ptr<AdapterImpl> adapter;
  std::shared_ptr<LayerStack> stack;
  std::shared_ptr<LayerStack::Entry> entry;  // this adapter in stack->entries
  uint64_t hook = 0;                       // hooked layers: the handle in the layer's hook list
  bool attached = true;                    // false after detach()
  bool merged() const { return entry->merged; }
  bool hooked() const { return stack->hooked; }
};

// The injected adapters, registered under their layer paths: parameter names are
// "<path>.lora_A.weight", ... (so PEFT keys are "base_model.model." + name).
class AdaptersImpl : public torch::nn::Module {
 public:
  AdaptersImpl() = default;
  const std::vector<AdaptedLayer>& layers() const { return layers_; }
  std::vector<std::string> paths() const;
  AdapterImpl& adapter(const std::string& path);  // std::out_of_range naming the path

  // Weight-path layers: sets the weight member to W0 + Σ ΔW (see the header comment). Hooked
  // layers need nothing.
  void refresh();
  // Folds ΔW into W0 in place (no_grad), keeps W0 to restore, and turns the branches off: the
  // network then runs at the base's cost. Needs every adapter weight_equivalent() (eval mode for
  // LoRA dropout; FouRA's adaptive gate never merges: freeze_gate() first).
  void merge();
  // Restores W0 exactly (bitwise: the saved copy, not W0 + ΔW − ΔW) once no set on the layer is
  // merged, and turns the branches back on.
  void unmerge();
  bool merged() const;
  // Unmerges, removes this set's hooks and ΔW terms from the network (other sets stay), and
  // leaves the set inert (refresh/merge then do nothing).
  void detach();

  // The composition strength s of this set (brief §2.4; AdapterImpl::strength()). Merged sets are
  // unmerged and merged again with the new strength. ef::ConfigError for a non-finite s.
  void set_strength(double s);
  double strength() const { return strength_; }

  // The layer with this set's adapter only, y = base(x) + adapter(x) with W0, for code that calls
  // it itself.
  torch::Tensor forward_layer(const std::string& path, const torch::Tensor& x);

  void add(AdaptedLayer layer);  // used by inject()

 private:
  std::vector<AdaptedLayer> layers_;
  double strength_ = 1.0;
};
TORCH_MODULE(Adapters);

// Every Linear / Conv2d of `root` (ef::nn or torch::nn) whose path matches one of `patterns` gets
// an adapter built from `adapter` ({"kind": ..., "strength": s (1)}); every parameter of `root`
// gets requires_grad(false). Layers that already carry adapters of other sets get one more (the
// branches add up). Throws ef::ConfigError for a pattern that matches no Linear/Conv2d (with the
// closest layer paths), for a matched module of another type, for an input-dependent adapter on a
// plain torch::nn layer (weight path, see above), and for a plain layer whose weight member is
// driven by something else; the network is then left as it was. A layer shared under several paths
// gets one adapter, named by its first path.
Adapters inject(torch::nn::Module& root, const std::vector<std::string>& patterns, const Config& adapter);

// Every Linear/Conv2d path of `root`, in module order (for messages and listings).
std::vector<std::string> adaptable_paths(torch::nn::Module& root);

}  // namespace ef::lora
