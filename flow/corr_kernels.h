#pragma once
// Shared by the CPU kernel (corr.cpp) and the CUDA launcher (cuda/corr_lookup_launch.cpp): input
// checks with messages that print the actual sizes.
#include <torch/torch.h>

namespace ef::flow {

inline void check_corr_lookup_inputs(const torch::Tensor& level, const torch::Tensor& coords, int64_t radius) {
  TORCH_CHECK(level.dim() == 3, "corr_lookup: level must be [N,h,w], got ", level.sizes());
  TORCH_CHECK(coords.dim() == 4 && coords.size(3) == 2, "corr_lookup: coords must be [B,H,W,2], got ", coords.sizes());
  TORCH_CHECK(coords.size(0) * coords.size(1) * coords.size(2) == level.size(0), "corr_lookup: coords ", coords.sizes(),
              " hold ", coords.size(0) * coords.size(1) * coords.size(2), " queries but level ", level.sizes(), " has ", level.size(0));
  TORCH_CHECK(radius >= 0 && radius <= 16, "corr_lookup: radius must be in 0..16, got ", radius);
  TORCH_CHECK(level.device() == coords.device(), "corr_lookup: level on ", level.device(), " but coords on ", coords.device());
  TORCH_CHECK(coords.is_floating_point(), "corr_lookup: coords must be floating point, got ", coords.scalar_type());
}

inline void check_corr_lookup_backward_inputs(const torch::Tensor& grad, const torch::Tensor& coords, int64_t h, int64_t w, int64_t radius) {
  const int64_t k = (2 * radius + 1) * (2 * radius + 1);
  TORCH_CHECK(coords.dim() == 4 && coords.size(3) == 2, "corr_lookup_backward: coords must be [B,H,W,2], got ", coords.sizes());
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == coords.size(0) && grad.size(1) == coords.size(1) && grad.size(2) == coords.size(2) &&
                  grad.size(3) == k,
              "corr_lookup_backward: grad must be [B,H,W,", k, "] for coords ", coords.sizes(), ", got ", grad.sizes());
  TORCH_CHECK(h > 0 && w > 0, "corr_lookup_backward: level size must be positive, got ", h, "x", w);
  TORCH_CHECK(coords.is_floating_point(), "corr_lookup_backward: coords must be floating point, got ", coords.scalar_type());
}

}  // namespace ef::flow
