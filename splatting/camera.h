#pragma once
// A pinhole camera in the OpenCV convention (x right, y down, z forward), as COLMAP stores it:
// world_to_camera maps world points into the camera frame; pixel centres sit at (i + 0.5, j + 0.5).
#include <torch/torch.h>

#include <string>

namespace ef::splat {

struct Camera {
  int64_t width = 0, height = 0;       // pixels
  double fx = 0, fy = 0, cx = 0, cy = 0;  // pixels
  torch::Tensor world_to_camera;        // [4, 4] float64, rigid
  std::string name;                     // image name (COLMAP: relative to the images folder)

  torch::Tensor rotation() const { return world_to_camera.slice(0, 0, 3).slice(1, 0, 3); }     // [3, 3]
  torch::Tensor translation() const { return world_to_camera.slice(0, 0, 3).select(1, 3); }   // [3]
  torch::Tensor center() const { return -torch::matmul(rotation().t(), translation()); }      // [3] world
  // The same camera for an image resized by `factor` (0.5 for images_2): intrinsics scale with it.
  Camera scaled(double factor) const;
  // The same camera for an image resized to exactly width x height: intrinsics scale by the realised
  // ratio on each axis (what a shipped images_N folder whose sizes were rounded needs).
  Camera resized(int64_t new_width, int64_t new_height) const;
  // Looks from `eye` at `target` (world), `up` roughly the world's up direction.
  static Camera look_at(const torch::Tensor& eye, const torch::Tensor& target, const torch::Tensor& up, int64_t width,
                        int64_t height, double fov_x_radians, std::string name = "");
};

}  // namespace ef::splat
