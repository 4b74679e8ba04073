#pragma once
// The two differentiable tile rasterizers, as dispatcher ops (edgeforge::splat_alpha_fwd/bwd,
// edgeforge::splat_wsr_fwd/bwd; CPU kernels here, CUDA kernels under cuda/) wrapped in autograd
// functions. Inputs are screen-space splats and the tile bins of binning.h.
//
// Alpha blending (3DGS): front-to-back over each tile's depth-sorted list,
//   C = Σ_i c_i α_i T_i + T_final · bg,  α_i = min(0.99, o_i G_i),  T_i = Π_{j<i} (1 - α_j),
// skipping α < 1/255 and stopping a pixel before T would fall below 1e-4.
// Weighted sum (WSR): order-free sums over each tile's list,
//   numer = Σ_i k_i G_i c_i,  denom = Σ_i k_i G_i   (terms with k_i G_i < 1/255 skipped);
// the normalisation with the background weight is left to plain tensor ops (renderer.cpp).
#include <torch/torch.h>

#include "splatting/binning.h"

namespace ef::splat {

struct SplatInputs {
  torch::Tensor means2d;  // [N, 2]
  torch::Tensor conics;   // [N, 3]
  torch::Tensor colors;   // [N, C]
};

// -> image [H, W, C]. `opacities` [N] in [0, 1], `background` [C] (no gradient).
torch::Tensor rasterize_alpha(const SplatInputs& in, const torch::Tensor& opacities, const torch::Tensor& background,
                              const TileBins& bins, const TileGrid& grid);
// -> (numer [H, W, C], denom [H, W]). `weights` [N] = k_i >= 0.
std::pair<torch::Tensor, torch::Tensor> rasterize_weighted_sum(const SplatInputs& in, const torch::Tensor& weights, const TileBins& bins,
                                                               const TileGrid& grid);

}  // namespace ef::splat
