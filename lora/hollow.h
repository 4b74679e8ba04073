#pragma once
// Hollowed Net (hollowed-net brief §2): the conditional UNet (models/diffusion/unet.h) with its
// deepest units left out, fed at the cut by activations the full network computed beforehand.
//
// Linearisation (brief §2.1 [I]). A pass through the UNet is a chain of units:
//   encoder  E units, outer to inner: per down block, each resnet (with its attention), then the
//            downsampler; each encoder unit's output is one skip (skip 0 is conv_in's output);
//   mid      the mid block;
//   decoder  D units, inner to outer: per up block, each resnet (with its attention), taking the
//            newest skip, then the upsampler.
// SD's up blocks have one resnet more per level than its down blocks, so D = E + levels.
// Hollow H(m) = the mid block and the m innermost units on each side. What the retained decoder
// then needs from the left-out part is the boundary (brief §2.2): h_in, the hidden state entering
// decoder unit m, and every skip a retained decoder unit takes from a left-out encoder unit (there
// are some when an upsampler is among the m left-out decoder units). Skips of retained encoder
// units are recomputed live.
//
// Names: the hollowed network registers its retained layers under their names in the full UNet
// ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"), so adapters trained on it land on
// the same-named layers of the full UNet, and the full UNet's weight file loads into it (the
// left-out tensors are skipped: core/safetensors.h, PartialStateModule).
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "lora/inject.h"
#include "models/diffusion/unet.h"

namespace ef::lora {

struct UNetUnit {
  enum class Side { Encoder, Mid, Decoder };
  Side side = Side::Encoder;
  int64_t block = 0;  // index into down_blocks / up_blocks (0 for the mid block)
  int64_t unit = 0;   // index of the unit in its block (UNetDownBlockImpl::forward_unit)
  bool resample = false;  // the down- or upsampler
  int64_t skip = -1;      // encoder: the skip it produces; decoder: the skip it takes (-1: none)
  std::string name() const;                    // "down_blocks.1.resnets.0", "up_blocks.0.upsamplers.0", "mid_block"
  std::vector<std::string> prefixes() const;   // module-path prefixes of its layers ("...resnets.0.", "...attentions.0.")
};

// The encoder, mid and decoder units of a UNet, in pass order.
std::vector<UNetUnit> unet_units(const UNetOptions& options);

class HollowPlan {
 public:
  // m innermost units per side (plus the mid block) left out; 0 <= m < E (at least one encoder unit
  // stays). std::invalid_argument naming the bound otherwise.
  HollowPlan(const UNetOptions& options, int64_t removed_per_side);
  // The m whose parameter fraction is nearest `fraction` (0 < fraction < 1; std::invalid_argument
  // for a fraction outside, or one nearer to "nothing" or "everything" than to any hollow).
  static HollowPlan for_fraction(const UNetOptions& options, double fraction);

  const UNetOptions& options() const { return options_; }
  int64_t removed_per_side() const { return m_; }
  int64_t encoder_units() const { return static_cast<int64_t>(encoder_.size()); }
  int64_t decoder_units() const { return static_cast<int64_t>(decoder_.size()); }
  const std::vector<UNetUnit>& encoder() const { return encoder_; }  // outer to inner
  const std::vector<UNetUnit>& decoder() const { return decoder_; }  // inner to outer
  std::vector<UNetUnit> removed_units() const;                        // pass order
  bool removed(const UNetUnit& unit) const;
  // True when the parameter/buffer `name` of the full UNet belongs to a left-out unit.
  bool leaves_out(const std::string& name) const;
  // Skips a retained decoder unit takes from a left-out encoder unit: the boundary's cached skips.
  const std::vector<int64_t>& cached_skips() const { return cached_skips_; }
  // Fraction of units left out, (2m + 1) / (E + 1 + D).
  double unit_fraction() const;
  // Fraction of the full UNet's parameters left out, counted on the options (builds each block once
  // on its own, so it never holds the whole network).
  double parameter_fraction() const;
  // "mid + 2 innermost units per side (5 of 9 units, 61.2% of parameters)", and the list of units.
  std::string describe() const;

 private:
  UNetOptions options_;
  int64_t m_ = 0;
  std::vector<UNetUnit> encoder_, decoder_;
  std::vector<int64_t> cached_skips_;
};

// What the retained decoder takes from the left-out part, for a batch.
struct UNetBoundary {
  torch::Tensor h_in;                          // [B, C, h, w]: the input of decoder unit m
  std::map<int64_t, torch::Tensor> skips;      // skip index -> [B, C_k, h_k, w_k], plan.cached_skips()
};

// The shapes of the boundary tensors for a batch of latents [batch, C, height, width]: "h_in" and
// "skip_<k>" for each cached skip (what a cache holds per row; the memory bench feeds these).
std::map<std::string, std::vector<int64_t>> boundary_shapes(const HollowPlan& plan, int64_t batch, int64_t height, int64_t width);

// Runs the full UNet as far as the boundary of `plan` (in the caller's grad mode; the pre-compute
// runs it without): x, timesteps, context as UNet2DConditionImpl::forward.
UNetBoundary compute_boundary(UNet2DConditionImpl& full, const HollowPlan& plan, const torch::Tensor& x,
                              const torch::Tensor& timesteps, const torch::Tensor& context);

class HollowedUNetImpl : public torch::nn::Module, public PartialStateModule {
 public:
  explicit HollowedUNetImpl(const HollowPlan& plan);
  // x [B, in, H, W], timesteps [B], context [B, L, D], boundary from compute_boundary (or a cache)
  // -> ε̂ [B, out, H, W], equal to the full UNet's output when the boundary is the full UNet's.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& timesteps, const torch::Tensor& context,
                        const UNetBoundary& boundary);
  const HollowPlan& plan() const { return plan_; }
  bool leaves_out(const std::string& name) const override { return plan_.leaves_out(name); }
  // The retained layer paths (lora/inject.h) matching any of `patterns`: what adapters may target.
  std::vector<std::string> adaptable_layers(const std::vector<std::string>& patterns);

  ef::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};

 private:
  HollowPlan plan_;
  std::map<int64_t, UNetDownBlock> down_;    // retained down blocks, by index
  std::map<int64_t, UNetUpBlock> up_;        // retained up blocks, by index
};
TORCH_MODULE(HollowedUNet);

// Layer significance (brief §2.1): the mean |ΔW| over the elements of every adapted layer of each
// unit (stem and head layers under "conv_in"/"time_embedding"/"conv_out" form their own rows).
struct UnitSignificance {
  std::string unit;
  int64_t layers = 0;
  double mean_abs_delta = 0;
};
// Rows in descending mean |ΔW|. `adapters` on a full UNet with `options`.
std::vector<UnitSignificance> unit_significance(AdaptersImpl& adapters, const UNetOptions& options);
std::string format_significance(const std::vector<UnitSignificance>& rows);

}  // namespace ef::lora
