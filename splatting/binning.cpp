#include "splatting/binning.h"

#include <chrono>

namespace ef::splat {

TileBins bin_gaussians(const torch::Tensor& means2d, const torch::Tensor& radii, const torch::Tensor& depths, const TileGrid& grid,
                       bool depth_sorted, bool time_sort) {
  torch::NoGradGuard no_grad;
  const auto dev = means2d.device();
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(dev);
  auto r = radii.to(torch::kFloat32);
  auto u = means2d.select(1, 0).to(torch::kFloat32), v = means2d.select(1, 1).to(torch::kFloat32);
  const double t = double(grid.tile);
  // the tile rectangle touched by the 3-sigma box, as the reference's getRect (truncation, clamped)
  auto rect = [&](const torch::Tensor& p, int64_t n) {
    auto lo = torch::clamp(torch::trunc((p - r) / t), 0, double(n)).to(torch::kInt64);
    auto hi = torch::clamp(torch::trunc((p + r + t - 1) / t), 0, double(n)).to(torch::kInt64);
    return std::make_pair(lo, hi);
  };
  auto [x0, x1] = rect(u, grid.tiles_x());
  auto [y0, y1] = rect(v, grid.tiles_y());
  auto w = x1 - x0;
  auto counts = torch::where(radii > 0, w * (y1 - y0), torch::zeros_like(w));
  const int64_t n = means2d.size(0);
  auto gauss = torch::repeat_interleave(torch::arange(n, i64), counts);  // [M]
  const int64_t m = gauss.size(0);
  auto starts = torch::cumsum(counts, 0) - counts;
  auto local = torch::arange(m, i64) - starts.index_select(0, gauss);
  auto wg = w.index_select(0, gauss).clamp_min(1);
  auto tx = x0.index_select(0, gauss) + torch::remainder(local, wg);
  auto ty = y0.index_select(0, gauss) + torch::div(local, wg, "floor");
  auto tile_id = ty * grid.tiles_x() + tx;

  TileBins bins;
  if (time_sort && dev.is_cuda()) tile_id.cpu();  // let the queued work finish: time the sort alone
  auto t0 = std::chrono::steady_clock::now();
  torch::Tensor order;
  if (depth_sorted) {
    // key = tile << 32 | float bits of the (positive) depth: one sort orders tiles, then depth
    auto depth_bits = depths.to(torch::kFloat32).contiguous().view(torch::kInt32).to(torch::kInt64).index_select(0, gauss);
    auto keys = tile_id * (int64_t(1) << 32) + depth_bits;  // depth bits of a positive float are < 2^31
    order = std::get<1>(torch::sort(keys, /*stable=*/true, 0, false));
  } else {
    // tile id only; the stable sort keeps Gaussian-index order inside a tile (deterministic, no depth)
    order = std::get<1>(torch::sort(tile_id, /*stable=*/true, 0, false));
  }
  if (time_sort) {
    if (dev.is_cuda()) order.cpu();  // waits for the sort
    bins.sort_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  bins.gaussian_ids = gauss.index_select(0, order).to(torch::kInt32);
  auto per_tile = torch::bincount(tile_id, {}, grid.count());
  auto ends = torch::cumsum(per_tile, 0);
  bins.tile_ranges = torch::stack({ends - per_tile, ends}, 1).to(torch::kInt32);
  return bins;
}

}  // namespace ef::splat
