#include "splatting/camera.h"

#include <cmath>

namespace ef::splat {

Camera Camera::scaled(double factor) const {
  // scale by the realised size ratio, so that rounding of odd sizes keeps the image-edge mapping
  return resized(static_cast<int64_t>(std::lround(width * factor)), static_cast<int64_t>(std::lround(height * factor)));
}

Camera Camera::resized(int64_t new_width, int64_t new_height) const {
  Camera c = *this;
  c.width = new_width;
  c.height = new_height;
  const double sx = double(c.width) / width, sy = double(c.height) / height;
  c.fx *= sx;
  c.cx *= sx;
  c.fy *= sy;
  c.cy *= sy;
  return c;
}

Camera Camera::look_at(const torch::Tensor& eye_in, const torch::Tensor& target_in, const torch::Tensor& up_in, int64_t width,
                       int64_t height, double fov_x_radians, std::string name) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto eye = eye_in.to(opts), target = target_in.to(opts), up = up_in.to(opts);
  auto z = torch::nn::functional::normalize(target - eye, torch::nn::functional::NormalizeFuncOptions().dim(0));
  // Right-handed OpenCV axes: x = z × up is "right" on screen, and y = z × x points down.
  auto x = torch::nn::functional::normalize(torch::cross(z, up, 0), torch::nn::functional::NormalizeFuncOptions().dim(0));
  auto y = torch::cross(z, x, 0);
  auto R = torch::stack({x, y, z});  // rows: camera axes in world coordinates
  Camera c;
  c.width = width;
  c.height = height;
  c.fx = c.fy = 0.5 * width / std::tan(0.5 * fov_x_radians);
  c.cx = 0.5 * width;
  c.cy = 0.5 * height;
  c.world_to_camera = torch::eye(4, opts);
  c.world_to_camera.slice(0, 0, 3).slice(1, 0, 3).copy_(R);
  c.world_to_camera.slice(0, 0, 3).select(1, 3).copy_(-torch::matmul(R, eye));
  c.name = std::move(name);
  return c;
}

}  // namespace ef::splat
