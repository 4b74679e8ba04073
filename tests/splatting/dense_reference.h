#pragma once
// Dense pure-LibTorch reference rasterizers for the tests: every Gaussian is evaluated at every
// pixel, with the same skip rules as the tile rasterizers (3-sigma tile footprint, power > 0,
// alpha < 1/255, the 0.99 clamp, the 1e-4 transmittance stop), and differentiated by autograd.
#include <torch/torch.h>

#include "splatting/binning.h"
#include "splatting/splat_math.h"

namespace ef::test {

struct DenseSplats {
  torch::Tensor power;  // [P, N]
  torch::Tensor mask;   // [P, N] bool: inside the tile footprint and power <= 0
};

inline DenseSplats dense_power(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& radii,
                               const ef::splat::TileGrid& grid) {
  auto opts = means2d.options();
  auto ys = torch::arange(grid.height, opts), xs = torch::arange(grid.width, opts);
  auto py = ys.view({-1, 1}).expand({grid.height, grid.width}).reshape({-1, 1});
  auto px = xs.view({1, -1}).expand({grid.height, grid.width}).reshape({-1, 1});
  auto dx = px + 0.5 - means2d.select(1, 0).view({1, -1}), dy = py + 0.5 - means2d.select(1, 1).view({1, -1});
  auto a = conics.select(1, 0).view({1, -1}), b = conics.select(1, 1).view({1, -1}), c = conics.select(1, 2).view({1, -1});
  DenseSplats d;
  d.power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy;
  // tile footprint, computed as the binning does
  torch::NoGradGuard no_grad;
  auto r = radii.to(torch::kFloat64).view({1, -1});
  auto u = means2d.select(1, 0).detach().view({1, -1}), v = means2d.select(1, 1).detach().view({1, -1});
  const double t = grid.tile;
  auto tx = torch::floor((px.detach()) / t), ty = torch::floor(py.detach() / t);
  auto x0 = torch::clamp(torch::trunc((u - r) / t), 0, double(grid.tiles_x())), x1 = torch::clamp(torch::trunc((u + r + t - 1) / t), 0, double(grid.tiles_x()));
  auto y0 = torch::clamp(torch::trunc((v - r) / t), 0, double(grid.tiles_y())), y1 = torch::clamp(torch::trunc((v + r + t - 1) / t), 0, double(grid.tiles_y()));
  d.mask = (r > 0) & (tx >= x0) & (tx < x1) & (ty >= y0) & (ty < y1) & (d.power.detach() <= 0);
  return d;
}

// -> [H, W, C]
inline torch::Tensor dense_alpha(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
                                 const torch::Tensor& opacities, const torch::Tensor& background, const torch::Tensor& radii,
                                 const torch::Tensor& depths, const ef::splat::TileGrid& grid) {
  auto d = dense_power(means2d, conics, radii, grid);
  auto raw = opacities.view({1, -1}) * torch::exp(d.power);
  auto alpha = torch::clamp_max(raw, ef::splat::kMaxAlpha);
  auto mask = d.mask & (alpha.detach() >= ef::splat::kMinAlpha);
  alpha = torch::where(mask, alpha, torch::zeros_like(alpha));
  auto order = std::get<1>(torch::sort(depths.detach().to(torch::kFloat32), /*stable=*/true, 0, false));
  auto a = alpha.index_select(1, order);
  auto one_minus = 1 - a;
  auto T_after = torch::cumprod(one_minus, 1);
  auto T_before = torch::cat({torch::ones_like(a.slice(1, 0, 1)), T_after.slice(1, 0, -1)}, 1);
  auto included = (T_after.detach() >= ef::splat::kMinTransmittance).to(a.dtype());
  auto w = a * T_before * included;
  auto T_final = torch::prod(1 - a * included, 1, true);
  auto img = torch::matmul(w, colors.index_select(0, order)) + T_final * background.view({1, -1});
  return img.view({grid.height, grid.width, -1});
}

// -> (numer [H, W, C], denom [H, W])
inline std::pair<torch::Tensor, torch::Tensor> dense_weighted_sum(const torch::Tensor& means2d, const torch::Tensor& conics,
                                                                  const torch::Tensor& colors, const torch::Tensor& weights,
                                                                  const torch::Tensor& radii, const ef::splat::TileGrid& grid) {
  auto d = dense_power(means2d, conics, radii, grid);
  auto a = weights.view({1, -1}) * torch::exp(d.power);
  auto mask = d.mask & (a.detach() >= ef::splat::kMinAlpha);
  a = torch::where(mask, a, torch::zeros_like(a));
  return {torch::matmul(a, colors).view({grid.height, grid.width, -1}), a.sum(1).view({grid.height, grid.width})};
}

}  // namespace ef::test
