#pragma once
// "depth-scenes": a generated monocular depth set. Each image is a ray-cast scene seen by a pinhole
// camera (random height, pitch and field of view): a textured ground plane, a textured back wall and
// 2-6 primitives (spheres, boxes rotated about the vertical, slanted panels) with procedural
// textures and Lambert shading. Ground truth is metric z-depth (metres along the optical axis, as
// NYU stores it), exact per pixel from the analytic ray intersections. Deterministic from its seed,
// split into train/val, cached as HDF5.
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "core/config.h"
#include "core/data.h"

namespace ef {

struct DepthScenesParams {
  int64_t n = 4000;            // train + val images
  double val_fraction = 0.1;
  int64_t size = 32;           // square images
  uint64_t seed = 0;
  double max_depth = 10.0;     // the back wall stands before this; depth is clipped to it
  double noise = 0.02;         // std of pixel noise (fraction of 255)
  static DepthScenesParams from(const Config& generate);
  nlohmann::json to_json() const;
};

// Renders scene `index`: uint8 [size, size, 3] and float depth [size, size] in metres.
std::pair<torch::Tensor, torch::Tensor> render_depth_scene(const DepthScenesParams& p, int64_t index);

// Writes train/images [N,H,W,3] uint8, train/depth [N,H,W] float32, val/..., with root attributes
// schema_version, generator="depth-scenes", params (JSON). Atomic.
void generate_depth_scenes(const DepthScenesParams& p, const std::filesystem::path& path);

// One split in memory: "image" float [3,H,W] in [0,1], "depth" float [1,H,W] in metres.
class DepthScenesDataset : public Dataset {
 public:
  DepthScenesDataset(const std::filesystem::path& path, const std::string& split);
  int64_t size() const override { return depth_.size(0); }
  Sample get(int64_t index) const override;
  int64_t image_size() const { return images_.size(1); }
  double max_depth() const { return max_depth_; }

 private:
  torch::Tensor images_;  // uint8 [N, H, W, 3]
  torch::Tensor depth_;   // float [N, H, W]
  double max_depth_ = 10.0;
};


}  // namespace ef
