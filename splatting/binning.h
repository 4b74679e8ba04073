#pragma once
// Tile binning: every (Gaussian, tile) overlap becomes one entry of a list grouped by tile, in
// front-to-back depth order within a tile (alpha blending) or in Gaussian-index order (weighted
// sum: no depth sort). Tensor ops only, so the same code runs on CPU and CUDA tensors.
#include <torch/torch.h>

namespace ef::splat {

struct TileGrid {
  int64_t width = 0, height = 0, tile = 16;
  int64_t tiles_x() const { return (width + tile - 1) / tile; }
  int64_t tiles_y() const { return (height + tile - 1) / tile; }
  int64_t count() const { return tiles_x() * tiles_y(); }
};

struct TileBins {
  torch::Tensor gaussian_ids;  // [M] int32, grouped by tile
  torch::Tensor tile_ranges;   // [T, 2] int32: [start, end) into gaussian_ids per tile
  double sort_ms = 0;          // time spent in the key sort (0 when not measured)
};

// `radii` [N] int32 (0 = culled), `means2d` [N, 2], `depths` [N] (> 0 where radii > 0).
TileBins bin_gaussians(const torch::Tensor& means2d, const torch::Tensor& radii, const torch::Tensor& depths, const TileGrid& grid,
                       bool depth_sorted, bool time_sort = false);

}  // namespace ef::splat
