#pragma once
// EWA projection of 3D Gaussians to screen-space splats and the spherical-harmonics colour, written
// with LibTorch tensor ops so that autograd gives their backward (the per-pixel rasterizers are the
// custom kernels). Conventions and constants follow the 3DGS reference (see README "Splatting").
#include <torch/torch.h>

#include "splatting/camera.h"

namespace ef::splat {

struct ProjectOptions {
  double near = 0.2;          // cull Gaussians whose camera-space z is below this (3DGS: 0.2)
  double dilation = 0.3;      // px² added to the 2D covariance (low-pass filter)
  double frustum_slack = 1.3; // the Jacobian is evaluated with x/z, y/z clamped to ±slack·tan(fov/2)
};

struct Projected {
  torch::Tensor means2d;  // [N, 2] pixel coordinates (pixel centres at +0.5)
  torch::Tensor conics;   // [N, 3] inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
  torch::Tensor cov2d;    // [N, 3] 2D covariance (with dilation)
  torch::Tensor depths;   // [N] camera-space z
  torch::Tensor radii;    // [N] int32 pixel radius (3 sigma); 0 = culled
};

// Rotation matrices from (w, x, y, z) quaternions, normalised first. [N, 4] -> [N, 3, 3]
torch::Tensor quat_to_rotmat(const torch::Tensor& quats);
// Σ = R S Sᵀ Rᵀ from log scales and quaternions. -> [N, 3, 3]
torch::Tensor covariance3d(const torch::Tensor& log_scales, const torch::Tensor& quats);
Projected project(const torch::Tensor& means, const torch::Tensor& log_scales, const torch::Tensor& quats, const Camera& cam,
                  const ProjectOptions& opt = {});

// Real SH basis up to `degree` (<= 3) evaluated along unit directions: [N, 3] -> [N, (degree+1)^2].
torch::Tensor sh_basis(const torch::Tensor& dirs, int64_t degree);
// Σ_k basis_k · coeffs[:, k, :] over the first (degree+1)^2 coefficients: [N, K, C] -> [N, C].
torch::Tensor eval_sh(const torch::Tensor& coeffs, const torch::Tensor& dirs, int64_t degree);
// View directions from the camera centre to each mean, normalised: [N, 3].
torch::Tensor view_dirs(const torch::Tensor& means, const Camera& cam);

}  // namespace ef::splat
