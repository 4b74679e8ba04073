#pragma once
// "shapes": a generated 10-class image classification set of drawn shapes and textures, with
// random colours, scale, position, small rotations, background gradients and pixel noise.
// Deterministic from its seed (each image has its own generator, so generation is parallel and
// order-free), split into train/val, cached as HDF5.
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/data.h"

namespace ef {

struct ShapesParams {
  int64_t n = 20000;          // train + val images
  double val_fraction = 0.1;
  int64_t size = 32;          // square images
  uint64_t seed = 0;
  double noise = 0.06;        // max std of pixel noise (fraction of 255)
  static ShapesParams from(const Config& generate);
  nlohmann::json to_json() const;
};

const std::vector<std::string>& shape_class_names();

// Draws image `index` of the set: uint8 [size, size, 3] and its label.
std::pair<torch::Tensor, int64_t> draw_shape_image(const ShapesParams& p, int64_t index);

// Generates the whole set into `path` (atomically): train/images [N,H,W,3] uint8, train/labels [N]
// int64, val/..., root attributes schema_version, generator="shapes", params (JSON), classes (JSON).
void generate_shapes(const ShapesParams& p, const std::filesystem::path& path);

// One split held in memory; images become float [3, H, W] in [0, 1].
class ShapesDataset : public Dataset {
 public:
  ShapesDataset(const std::filesystem::path& path, const std::string& split);
  int64_t size() const override { return labels_.size(0); }
  Sample get(int64_t index) const override;
  int64_t image_size() const { return images_.size(1); }

 private:
  torch::Tensor images_;  // uint8 [N, H, W, 3]
  torch::Tensor labels_;  // int64 [N]
};

}  // namespace ef
