#pragma once
// The building blocks of the conditional UNet (models/diffusion/unet.h). Each class mirrors one
// diffusers module and registers its parameters under the same names, so that a diffusers
// `UNet2DConditionModel` state dict loads into ours key for key:
//
//   ResnetBlock2D     norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut (when channels change)
//   Attention         to_q, to_k, to_v (no bias), to_out.0
//   Transformer2D     norm, proj_in, transformer_blocks.K.{norm1, attn1, norm2, attn2, norm3,
//                     ff.net.0.proj, ff.net.2}, proj_out          (diffusers' Transformer2DModel)
//   UNetDownBlock     resnets.J, attentions.J, downsamplers.0.conv (CrossAttnDownBlock2D / DownBlock2D)
//   UNetMidBlock      resnets.J, attentions.0                     (UNetMidBlock2DCrossAttn / UNetMidBlock2D)
//   UNetUpBlock       resnets.J, attentions.J, upsamplers.0.conv   (CrossAttnUpBlock2D / UpBlock2D)
//
// The blocks keep their sub-modules public and offer two hooks for methods that change a pass
// without changing the weights: `Attention::key_value_source` (cross-frame attention: keys and
// values from other tokens than the queries) and `ResnetBlock2D::extra_embedding` (an additional
// per-block embedding added beside the timestep one).
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "models/adaptable.h"

namespace ef {

// diffusers' Timesteps: [B] timesteps (any dtype) -> [B, dim] float32 sinusoidal features,
// exp(-ln(max_period) * i / (dim/2 - freq_shift)) frequencies, [cos, sin] when flip_sin_to_cos.
torch::Tensor timestep_features(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos = true, double freq_shift = 0.0,
                                double max_period = 10000.0);

// diffusers' TimestepEmbedding: linear_1 -> SiLU -> linear_2.
class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  TimestepEmbeddingImpl(int64_t in_features, int64_t dim);
  torch::Tensor forward(const torch::Tensor& features);  // [B, in] -> [B, dim]
  ef::nn::Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

// GroupNorm -> SiLU -> conv3x3 (+ time_emb_proj(SiLU(temb))) -> GroupNorm -> SiLU -> conv3x3, plus a
// shortcut (1x1 conv when the channel count changes).
class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t temb_channels, int64_t groups, double eps = 1e-5);
  // x [B, in, H, W], temb [B, temb_channels] -> [B, out, H, W]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb);
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  ef::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  ef::nn::Linear time_emb_proj{nullptr};
  // Hook: when set, extra_embedding(temb) ([B, out_channels]) is added where the timestep
  // embedding is (after conv1).
  std::function<torch::Tensor(const torch::Tensor& temb)> extra_embedding;
};
TORCH_MODULE(ResnetBlock2D);

// Multi-head attention with diffusers' Attention names; keys and values come from `context`
// (cross-attention) or from the queries' own tokens (self-attention).
class AttentionImpl : public torch::nn::Module {
 public:
  // context_dim 0: self-attention (keys/values from query_dim tokens)
  AttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads, int64_t head_dim);
  // x [B, N, query_dim], context [B, L, context_dim] (undefined for self-attention) -> [B, N, query_dim]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});
  ef::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // 0: Linear, 1: Dropout (no parameters)
  int64_t heads, head_dim;
  // Hook (self-attention only): when set, keys and values are computed from key_value_source(x)
  // ([B, M, query_dim]) instead of x, e.g. the tokens of an anchor frame for cross-frame attention.
  std::function<torch::Tensor(const torch::Tensor& x)> key_value_source;
};
TORCH_MODULE(Attention);

// GEGLU feed-forward: net.0.proj (dim -> 2*inner), value * gelu(gate), net.2 (inner -> dim).
class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t dim, int64_t mult = 4);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::ModuleList net{nullptr};
  ef::nn::Linear proj{nullptr}, out{nullptr};  // net.0.proj and net.2, the same modules
};
TORCH_MODULE(FeedForward);

// LayerNorm -> self-attention, LayerNorm -> cross-attention, LayerNorm -> GEGLU, each residual.
class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim, int64_t cross_attention_dim);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);  // [B, N, dim]
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

struct TransformerShape {
  int64_t heads = 2;  // head dim = channels / heads
  int64_t layers = 1;
  int64_t cross_attention_dim = 32;
  int64_t groups = 8;
  bool linear_projection = false;  // proj_in/proj_out as Linear (else 1x1 Conv2d)
};

// diffusers' Transformer2DModel on continuous inputs: GroupNorm(eps 1e-6) -> proj_in -> tokens ->
// transformer blocks -> proj_out -> + input.
class Transformer2DImpl : public torch::nn::Module {
 public:
  Transformer2DImpl(int64_t channels, const TransformerShape& shape);
  // x [B, C, H, W], context [B, L, cross_attention_dim] -> [B, C, H, W]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);
  torch::nn::GroupNorm norm{nullptr};
  // "proj_in"/"proj_out": Linear when linear_projection, else 1x1 Conv2d (the other pair stays null)
  ef::nn::Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  ef::nn::Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};
  bool linear_projection;
};
TORCH_MODULE(Transformer2D);

// Strided 3x3 conv ("conv"): halves H and W.
class Downsample2DImpl : public torch::nn::Module {
 public:
  explicit Downsample2DImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  ef::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

// Nearest 2x upsampling, then a 3x3 conv ("conv").
class Upsample2DImpl : public torch::nn::Module {
 public:
  explicit Upsample2DImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  ef::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

// Sizes of one UNet block; the UNet derives them from its options as diffusers does.
struct UNetBlockShape {
  int64_t in_channels = 0, out_channels = 0, temb_channels = 0;
  int64_t layers = 1;             // resnets (up blocks: layers_per_block + 1)
  int64_t groups = 8;
  double eps = 1e-5;
  bool attention = false;         // a Transformer2D after every resnet (CrossAttn* blocks)
  bool resample = false;          // down- / upsampler at the end
  int64_t prev_output_channels = 0;  // up blocks: channels arriving from the block below
  TransformerShape transformer;
};

// The conditioning one UNet pass hands to every block.
struct UNetBlockInputs {
  torch::Tensor temb;     // [B, temb_channels]
  torch::Tensor context;  // [B, L, cross_attention_dim] (undefined when no block attends)
};

// CrossAttnDownBlock2D (attention) / DownBlock2D: resnets (each followed by its attention), then
// the downsampler. Every resnet (attention) output and the downsampled output are pushed to `skips`.
// Units (what a pass can be cut between, lora/hollow.h): unit j < layers is resnet j with its
// attention, unit `layers` the downsampler; each unit's output is one skip.
class UNetDownBlockImpl : public torch::nn::Module {
 public:
  explicit UNetDownBlockImpl(const UNetBlockShape& shape);
  torch::Tensor forward(torch::Tensor x, const UNetBlockInputs& in, std::vector<torch::Tensor>& skips);
  int64_t units() const { return shape.layers + (shape.resample ? 1 : 0); }
  torch::Tensor forward_unit(int64_t u, const torch::Tensor& x, const UNetBlockInputs& in);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};
  UNetBlockShape shape;
};
TORCH_MODULE(UNetDownBlock);

// UNetMidBlock2DCrossAttn (attention: resnet, then per layer attention + resnet) / UNetMidBlock2D
// without attention (one resnet).
class UNetMidBlockImpl : public torch::nn::Module {
 public:
  explicit UNetMidBlockImpl(const UNetBlockShape& shape);
  torch::Tensor forward(torch::Tensor x, const UNetBlockInputs& in);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
  UNetBlockShape shape;
};
TORCH_MODULE(UNetMidBlock);

// CrossAttnUpBlock2D (attention) / UpBlock2D: per resnet, the newest skip (popped from the back of
// `skips`) is concatenated on channels; each resnet is followed by its attention; then the upsampler.
// Units: unit j < layers is resnet j (taking one skip) with its attention, unit `layers` the
// upsampler (taking none).
class UNetUpBlockImpl : public torch::nn::Module {
 public:
  explicit UNetUpBlockImpl(const UNetBlockShape& shape);
  torch::Tensor forward(torch::Tensor x, const UNetBlockInputs& in, std::vector<torch::Tensor>& skips);
  int64_t units() const { return shape.layers + (shape.resample ? 1 : 0); }
  bool takes_skip(int64_t u) const { return u < shape.layers; }
  // `skip`: the skip tensor for a resnet unit (undefined for the upsampler).
  torch::Tensor forward_unit(int64_t u, const torch::Tensor& x, const UNetBlockInputs& in, const torch::Tensor& skip);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};
  UNetBlockShape shape;
};
TORCH_MODULE(UNetUpBlock);

}  // namespace ef
