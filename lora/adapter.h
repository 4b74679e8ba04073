#pragma once
// The adapter seam: an adapter is a small trainable branch beside one frozen Linear or Conv2d
// layer of a base network, y = base(x) + adapter(x). Kinds are built by name from an `adapter`
// config section ({"kind": "lora", ...its own options}) and register themselves in
// `adapter_kinds()`; injection (lora/inject.h), merging and the tests loop over the registry.
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/registry.h"

namespace ef::lora {

// The layer an adapter sits beside: its kind, sizes and (Conv2d) geometry. The adapter's branch
// must produce the base layer's output shape, so a Conv2d adapter's first convolution copies the
// base options (kernel, stride, padding, padding mode, dilation) and its second one is 1x1: the two
// then compose into one convolution of the base's geometry, which is what makes merging exact.
struct LayerShape {
  enum class Kind { linear, conv2d };
  Kind kind = Kind::linear;
  int64_t in = 0, out = 0;               // in/out features (Linear) or channels (Conv2d)
  std::vector<int64_t> kernel{1, 1};     // Conv2d only
  std::optional<torch::nn::Conv2dOptions> conv_options;  // the base's, Conv2d only

  static LayerShape linear(int64_t in, int64_t out);
  // ef::InputError for groups > 1 and transposed convolutions.
  static LayerShape conv2d(const torch::nn::detail::ConvNdOptions<2>& base);
  static LayerShape conv2d(const torch::nn::Conv2dOptions& base);
  static LayerShape of(const torch::nn::LinearImpl& layer) { return linear(layer.options.in_features(), layer.options.out_features()); }
  static LayerShape of(const torch::nn::Conv2dImpl& layer) { return conv2d(layer.options); }
  bool conv() const { return kind == Kind::conv2d; }
  std::vector<int64_t> weight_shape() const;  // [out, in] or [out, in, kh, kw]
  std::string describe() const;               // "Linear(64 -> 32)", "Conv2d(16 -> 32, 3x3)"
};

class AdapterImpl : public torch::nn::Module {
 public:
  // The branch on the layer's input: x [..., in] -> [..., out] (Linear) or
  // [B, in, H, W] -> [B, out, H', W'] (Conv2d), the same shape as the base layer's output.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;

  // True when, in the current mode, the branch is the fixed linear map x -> ΔW x: no dropout, no
  // input-dependent gate. Only then can the adapter be merged into the base weight.
  virtual bool weight_equivalent() const = 0;
  // True when the branch is x -> ΔW x in training too (weight_equivalent() whatever the mode): the
  // condition for injection into a plain torch::nn layer, which adapters reach only through its
  // weight (lora/inject.h; the project's ef::nn layers take any adapter as a hook).
  virtual bool trains_as_weight() const = 0;
  // ΔW in the base weight's layout (LayerShape::weight_shape()), differentiable in the adapter's
  // parameters. Throws std::logic_error when !weight_equivalent().
  virtual torch::Tensor delta_weight() = 0;

  // The kind's name in adapter_kinds() and its resolved options (what adapter_config.json and a
  // run's config record).
  virtual std::string kind() const = 0;
  virtual nlohmann::json options_json() const = 0;
  const LayerShape& shape() const { return shape_; }

  // The composition strength s (brief §2.4), 1 by default: several adapters on one layer add up
  // as y = W0 x + Σ_i branch_i(x), each at its own s_i. Every kind applies it in forward() and
  // delta_weight() alike (LoRA scales its branch by s; FouRA multiplies its α by s). Not an option
  // of the kind: it is set where adapters are composed (AdaptersImpl::set_strength).
  double strength() const { return strength_; }
  void set_strength(double s) { strength_ = s; }

 protected:
  explicit AdapterImpl(LayerShape shape) : shape_(std::move(shape)) {}
  LayerShape shape_;
  double strength_ = 1.0;
};

using AdapterRegistry = Registry<AdapterImpl, const LayerShape&, const Config&>;
AdapterRegistry& adapter_kinds();

// Builds the adapter of `section.kind` (required) for a layer of `shape`.
std::shared_ptr<AdapterImpl> make_adapter(const LayerShape& shape, const Config& section);

// Kaiming-uniform with a = sqrt(5), LibTorch's (and PEFT's) default for Linear/Conv weights:
// bound = 1 / sqrt(fan_in).
void kaiming_uniform_default(torch::Tensor& weight);

}  // namespace ef::lora
