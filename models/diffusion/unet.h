#pragma once
// Conditional UNet for latent diffusion, with the parameter names and shapes of diffusers'
// `UNet2DConditionModel` (conv_in, time_embedding.linear_{1,2}, down_blocks.I..., mid_block...,
// up_blocks.I..., conv_norm_out, conv_out), so that Stable-Diffusion-style checkpoints load key for
// key and `diffusers_config()` rebuilds the same network in diffusers. Per level the down block is
// CrossAttnDownBlock2D or DownBlock2D (and the mirrored up block); sinusoidal timestep features
// (flip_sin_to_cos, freq_shift 0), SiLU, GroupNorm eps 1e-5 in resnets and 1e-6 in the
// Transformer2DModel norms, GEGLU feed-forward. The blocks are in models/diffusion/unet_blocks.h.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/config.h"
#include "models/adaptable.h"
#include "models/diffusion/unet_blocks.h"

namespace ef {

struct UNetOptions {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  std::vector<int64_t> block_out_channels{32, 64};
  std::vector<bool> cross_attention{false, true};  // per level: CrossAttn{Down,Up}Block2D when true
  int64_t layers_per_block = 1;
  int64_t transformer_layers_per_block = 1;
  int64_t cross_attention_dim = 32;
  int64_t attention_heads = 2;  // diffusers' `attention_head_dim` (a head COUNT there, historic naming)
  int64_t norm_num_groups = 8;
  bool use_linear_projection = false;
  bool mid_block_attention = true;  // UNetMidBlock2DCrossAttn (always present in diffusers' SD configs)
  static UNetOptions from(const Config& model);  // reads the keys above from a config section (model.unet)
  nlohmann::json diffusers_config() const;       // the UNet2DConditionModel config of the same network
  // Throws std::invalid_argument naming the first inconsistent option (what `from` reports per key).
  void validate() const;
  int64_t levels() const { return static_cast<int64_t>(block_out_channels.size()); }
  int64_t downsampling() const { return int64_t{1} << (levels() - 1); }  // H and W must be multiples
  int64_t temb_channels() const { return block_out_channels.front() * 4; }
  bool attends() const;  // any cross-attention (then forward needs a context)
  // The shapes of down block i, the mid block and up block r (mirroring level levels()-1-r).
  UNetBlockShape down_block_shape(int64_t i) const;
  UNetBlockShape mid_block_shape() const;
  UNetBlockShape up_block_shape(int64_t r) const;

 private:
  UNetBlockShape block_shape(int64_t in, int64_t out, int64_t layers, bool attention, bool resample) const;
};

class UNet2DConditionImpl : public torch::nn::Module {
 public:
  explicit UNet2DConditionImpl(UNetOptions options);
  // x [B, in_channels, H, W]; timesteps [B] (any dtype, 0..999); context [B, L, cross_attention_dim]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& timesteps, const torch::Tensor& context);
  // InstructPix2Pix initialisation: conv_in widened to `in_channels` inputs, new channels' weights zero.
  // conv_in becomes a new module (same device and dtype): build optimizers after widening.
  void widen_input(int64_t in_channels);
  const UNetOptions& options() const;

  // [B] timesteps -> [B, temb_channels]: sinusoidal features through time_embedding.
  torch::Tensor time_embed(const torch::Tensor& timesteps, torch::ScalarType dtype);

  ef::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  UNetMidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};

 private:
  UNetOptions opt_;
};
TORCH_MODULE(UNet2DCondition);

}  // namespace ef
