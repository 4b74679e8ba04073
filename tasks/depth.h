#pragma once
// Monocular depth: a ViT encoder (attention from model.attention) with a light DPT-style decoder,
// the SILog loss, the NYU Depth V2 metrics and depth colour maps. The recipe "depth" is registered
// in depth.cpp.
#include <torch/torch.h>

#include "core/config.h"
#include "core/metrics.h"
#include "models/adaptable.h"
#include "models/vit.h"

namespace ef {

// Light dense decoder: the token grids of a few encoder blocks are "reassembled" (1x1 conv to
// `dim` channels) and summed, refined by a 3x3 conv, then upsampled x2 (bilinear + 3x3 conv + ReLU)
// log2(patch) times to full resolution; the head maps to depth = max_depth * sigmoid(.).
struct DepthDecoderOptions {
  int64_t dim = 64;
  std::vector<int64_t> layers;  // encoder blocks tapped (0-based); default: 4 evenly spaced (or all when fewer)
  static DepthDecoderOptions from(const Config& c, int64_t depth);
};

class DepthNetImpl : public torch::nn::Module {
 public:
  DepthNetImpl(const ViTOptions& vit, const Config& attention, const DepthDecoderOptions& dec, double max_depth);
  torch::Tensor forward(const torch::Tensor& images);  // [B,3,S,S] -> depth [B,1,S,S] in (0, max_depth)
  double flops() const;                                // analytic forward FLOPs per image (encoder + decoder)
  ViT encoder{nullptr};
  torch::nn::ModuleList reassemble{nullptr}, up{nullptr};
  ef::nn::Conv2d fuse{nullptr}, head{nullptr};

 private:
  ViTOptions vit_;
  DepthDecoderOptions dec_;
  double max_depth_;
};
TORCH_MODULE(DepthNet);

// SILog (Eigen et al.; BTS/AdaBins scale): 10 * sqrt(mean(g^2) - lambda * mean(g)^2), g = log pred - log gt
// over the valid pixels (gt in (min_depth, max_depth]).
torch::Tensor silog_loss(const torch::Tensor& pred, const torch::Tensor& gt, double lambda, double min_depth, double max_depth);

// NYU Depth V2 protocol metrics, computed per image over its valid pixels (gt in (min_depth, max_depth],
// prediction clamped to [min_depth, max_depth]) and summed over the batch: abs_rel, sq_rel, rmse,
// rmse_log, log10, delta1 (max(p/g, g/p) < 1.25), delta2 (< 1.25^2), delta3 (< 1.25^3). Divide by
// the number of images for the means.
Scalars depth_metric_sums(const torch::Tensor& pred, const torch::Tensor& gt, double min_depth, double max_depth);

// Depth [H,W] -> colour image float [3,H,W] (turbo colour map; near = red, far = blue), values
// mapped linearly from [lo, hi].
torch::Tensor colorize_depth(const torch::Tensor& depth, double lo, double hi);

}  // namespace ef
