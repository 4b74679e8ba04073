#pragma once
// The layer seam: the Linear and Conv2d layers of the project's networks, with a hook list through
// which code outside the network (adapters, lora/inject.h) adds a branch to a layer's output.
//
// Why it exists
// -------------
// The networks call their layers through typed members (`fc1->forward(x)`), and LibTorch's
// LinearImpl/Conv2dImpl::forward are not virtual: replacing a child module in its parent changes
// only the parent's child table, the member keeps pointing at the old layer, so nothing outside a
// network can change what `fc1->forward(x)` computes except the layer's `weight` tensor. That is
// enough for adapters that are a fixed linear map of the input (W0 + ΔW), not for ones whose
// branch depends on the input (LoRA dropout, FouRA's adaptive gate). These types are the layer
// itself, so the network's own call goes through `forward` below, which runs the hooks.
//
// Contract
// --------
//   ef::nn::Linear:  x [..., in] -> y [..., out];  ef::nn::Conv2d: x [B, in, H, W] -> y [B, out, H', W']
//   y = base(x) (LibTorch's forward, the same arithmetic as torch::nn::Linear/Conv2d), then for each
//   hook h in attachment order: y = h(x, y). A hook gets the layer's input and the output so far and
//   returns a tensor of y's shape (an adapter returns y + branch(x)). Without hooks forward is the
//   base forward plus one empty-vector check.
// - Subclasses of torch::nn::LinearImpl / Conv2dImpl with the same options, parameters and names
//   (`weight`, `bias`): state dicts, checkpoints and diffusers/PEFT keys are those of the torch::nn
//   layers, and code that reads `->weight` or casts to the torch::nn impl keeps working.
// - Call through these types. `seq[i]->as<torch::nn::Linear>()->forward(x)` casts to the base impl
//   and calls its (non-virtual) forward, bypassing the hooks: write `as<ef::nn::Linear>()`.
// - `base_forward(x)` is the layer without hooks (for an adapter's own reference computations).
// - Hooks are not state: they are neither saved nor copied, and live until removed by their handle.
// - Header only: flow/ (which depends on core only) uses these layers too.
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace ef::nn {

// x: the layer's input, y: its output so far -> the new output (y's shape).
using LayerHook = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& y)>;

// The hook list shared by the hookable layer types (what lora/inject.h looks for with dynamic_cast).
class Hookable {
 public:
  virtual ~Hookable() = default;
  // Appends a hook; the handle removes it.
  uint64_t add_hook(LayerHook hook) {
    hooks_.emplace_back(next_handle_, std::move(hook));
    return next_handle_++;
  }
  // Removes the hook of `handle`; false when there is none (already removed).
  bool remove_hook(uint64_t handle) {
    auto it = std::find_if(hooks_.begin(), hooks_.end(), [&](const auto& h) { return h.first == handle; });
    if (it == hooks_.end()) return false;
    hooks_.erase(it);
    return true;
  }
  size_t hook_count() const { return hooks_.size(); }
  // The layer without hooks: x -> W x (+ b).
  virtual torch::Tensor base_forward(const torch::Tensor& x) = 0;

 protected:
  torch::Tensor run_hooks(const torch::Tensor& x, torch::Tensor y) const {
    for (const auto& h : hooks_) y = h.second(x, y);
    return y;
  }
  bool hooked() const { return !hooks_.empty(); }

 private:
  std::vector<std::pair<uint64_t, LayerHook>> hooks_;
  uint64_t next_handle_ = 1;
};

class LinearImpl : public torch::nn::LinearImpl, public Hookable {
 public:
  using torch::nn::LinearImpl::LinearImpl;
  // x [..., in] -> [..., out]
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::nn::LinearImpl::forward(x);
    return hooked() ? run_hooks(x, std::move(y)) : y;
  }
  torch::Tensor base_forward(const torch::Tensor& x) override { return torch::nn::LinearImpl::forward(x); }
};
TORCH_MODULE(Linear);

class Conv2dImpl : public torch::nn::Conv2dImpl, public Hookable {
 public:
  using torch::nn::Conv2dImpl::Conv2dImpl;
  // x [B, in, H, W] -> [B, out, H', W']
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::nn::Conv2dImpl::forward(x);
    return hooked() ? run_hooks(x, std::move(y)) : y;
  }
  torch::Tensor base_forward(const torch::Tensor& x) override { return torch::nn::Conv2dImpl::forward(x); }
};
TORCH_MODULE(Conv2d);

// The hook list of `m` when it is one of the types above, else null.
inline Hookable* hookable(torch::nn::Module& m) { return dynamic_cast<Hookable*>(&m); }

}  // namespace ef::nn
