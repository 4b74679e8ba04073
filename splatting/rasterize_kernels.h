#pragma once
// Signatures of the rasterizer kernels behind the dispatcher ops, per backend. Shapes are those of
// rasterize.h; every tensor is contiguous and on the backend's device.
#include <torch/torch.h>

#include <tuple>

namespace ef::splat::kernels {

// (image [H, W, C], final_T [H, W], n_contrib [H, W] int32: list entries up to the last one added)
using AlphaFwdResult = std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>;
// (grad_means2d, grad_conics, grad_colors, grad_opacities)
using Grads4 = std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>;

AlphaFwdResult alpha_fwd_cpu(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
                             const torch::Tensor& opacities, const torch::Tensor& background, const torch::Tensor& tile_ranges,
                             const torch::Tensor& gaussian_ids, int64_t width, int64_t height, int64_t tile);
Grads4 alpha_bwd_cpu(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors, const torch::Tensor& opacities,
                     const torch::Tensor& background, const torch::Tensor& tile_ranges, const torch::Tensor& gaussian_ids, int64_t width,
                     int64_t height, int64_t tile, const torch::Tensor& final_T, const torch::Tensor& n_contrib,
                     const torch::Tensor& grad_image);
std::tuple<torch::Tensor, torch::Tensor> wsr_fwd_cpu(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
                                                     const torch::Tensor& weights, const torch::Tensor& tile_ranges,
                                                     const torch::Tensor& gaussian_ids, int64_t width, int64_t height, int64_t tile);
Grads4 wsr_bwd_cpu(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors, const torch::Tensor& weights,
                   const torch::Tensor& tile_ranges, const torch::Tensor& gaussian_ids, int64_t width, int64_t height, int64_t tile,
                   const torch::Tensor& grad_numer, const torch::Tensor& grad_denom);

}  // namespace ef::splat::kernels
