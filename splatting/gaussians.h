#pragma once
// The Gaussian scene: raw (pre-activation) per-Gaussian values exactly as the 3DGS .ply stores
// them, plus named extra per-Gaussian attributes that renderers and later methods add (WSR's
// view-dependent opacity SH, PGS's descriptors and normals).
#include <torch/torch.h>

#include <map>
#include <string>

namespace ef::splat {

// SH coefficients per colour channel for degree L: (L + 1)^2.
inline int64_t sh_coeffs(int64_t degree) { return (degree + 1) * (degree + 1); }
// 0.28209479177387814: the degree-0 SH basis value; rgb = 0.5 + C0 * f_dc.
constexpr double kShC0 = 0.28209479177387814;

struct GaussianParams {
  torch::Tensor means;      // [N, 3] world
  torch::Tensor scales;     // [N, 3] log of the standard deviations
  torch::Tensor quats;      // [N, 4] (w, x, y, z), not necessarily normalised
  torch::Tensor opacities;  // [N] logit of the opacity
  torch::Tensor sh;         // [N, K, 3], K = (L + 1)^2; sh[:, 0] is the DC term (f_dc)
  std::map<std::string, torch::Tensor> extras;  // [N, ...] each

  int64_t size() const { return means.defined() ? means.size(0) : 0; }
  int64_t sh_degree() const;  // from K
  // Every per-Gaussian tensor by name ("means", ..., then the extras), for optimizers and I/O.
  std::map<std::string, torch::Tensor*> fields();
  // Throws std::invalid_argument naming the field whose shape or count disagrees.
  void check() const;
};

}  // namespace ef::splat
