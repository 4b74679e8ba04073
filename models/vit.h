#pragma once
// Vision Transformer (Dosovitskiy et al.): patch embedding, pre-norm blocks of attention + MLP,
// class token or mean pooling. Parameter names follow timm's VisionTransformer
// (patch_embed.proj, cls_token, pos_embed, blocks.N.{norm1,attn,norm2,mlp.fc1,mlp.fc2}, norm, head)
// so weights map across. The attention of every block comes from `model.attention`.
#include <torch/torch.h>

#include "core/config.h"
#include "models/adaptable.h"
#include "models/attention/attention.h"

namespace ef {

struct ViTOptions {
  int64_t image_size = 32, in_channels = 3, patch = 4;
  int64_t dim = 192, depth = 6, heads = 3;
  double mlp_ratio = 4.0;
  int64_t num_classes = 10;  // 0: no head (feature extractor)
  std::string pool = "cls";  // cls | mean
  double dropout = 0.0;
  static ViTOptions from(const Config& model);
  int64_t grid() const { return image_size / patch; }
  int64_t tokens() const { return grid() * grid() + (pool == "cls" ? 1 : 0); }
};

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden, double dropout);
  torch::Tensor forward(const torch::Tensor& x);
  ef::nn::Linear fc1{nullptr}, fc2{nullptr};
  double dropout;
};
TORCH_MODULE(Mlp);

// Non-overlapping patches -> tokens, by a strided convolution ("patch_embed.proj").
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t in_channels, int64_t dim, int64_t patch);
  torch::Tensor forward(const torch::Tensor& images);  // [B, C, H, W] -> [B, (H/p)*(W/p), dim]
  ef::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ViTOptions& o, const Config& attention, int64_t layer = 0);
  torch::Tensor forward(const torch::Tensor& x);
  // Inside a network pass: the attention kind may read/write ctx and route tokens around the block.
  torch::Tensor forward(const torch::Tensor& x, AttentionContext& ctx);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  std::shared_ptr<TokenMixerImpl> attn;
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

class ViTImpl : public torch::nn::Module {
 public:
  ViTImpl(const ViTOptions& o, const Config& attention);
  // images [B, C, H, W] -> tokens after the final norm [B, N, dim] (class token first when pool=cls)
  torch::Tensor forward_features(const torch::Tensor& images);
  // images -> logits [B, num_classes]
  torch::Tensor forward(const torch::Tensor& images);
  // images -> the token outputs [B, N, dim] of the blocks `layers` (0-based; -1 = the final
  // normed output), in the order asked. For dense heads.
  std::vector<torch::Tensor> forward_intermediates(const torch::Tensor& images, const std::vector<int64_t>& layers);
  // True (in training mode) while an attention kind trains only its own parts (ToSA's stage A):
  // the forward then runs without gradients except in those parts.
  bool backbone_frozen() const;
  // Auxiliary losses of the attention kinds (summed over blocks), taken once per step.
  std::map<std::string, torch::Tensor> take_aux_losses();
  double flops() const;  // analytic forward FLOPs for one image
  const ViTOptions& options() const { return opt_; }

  PatchEmbed patch_embed{nullptr};
  torch::Tensor cls_token, pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  ef::nn::Linear head{nullptr};

 private:
  torch::Tensor run_blocks(const torch::Tensor& images, const std::vector<int64_t>& layers, std::vector<torch::Tensor>* taps);
  ViTOptions opt_;
};
TORCH_MODULE(ViT);

}  // namespace ef
