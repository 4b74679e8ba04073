#pragma once
// A Gaussian scene from a point cloud (SfM points or random points), as 3DGS initialises it:
// isotropic scales from the mean squared distance to the 3 nearest neighbours, identity rotation,
// DC colour from the point colour, higher SH orders zero, a uniform opacity.
#include <torch/torch.h>

#include "splatting/gaussians.h"

namespace ef::splat {

struct InitOptions {
  double opacity = 0.1;
  int64_t max_points = 0;  // 0: all; else a seeded random subset of this size
  uint64_t seed = 0;
};

// points [P, 3], colors [P, 3] in [0, 1] -> float32 parameters on the CPU.
GaussianParams init_from_points(const torch::Tensor& points, const torch::Tensor& colors, int64_t sh_degree, const InitOptions& opt);
// Mean squared distance of each point to its k nearest other points: [P, 3] -> [P]. Blocked, so
// memory stays O(P · block).
torch::Tensor mean_sq_knn_distance(const torch::Tensor& points, int64_t k);

}  // namespace ef::splat
