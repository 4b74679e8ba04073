#include "splatting/projection.h"

#include <cmath>

namespace ef::splat {

namespace F = torch::nn::functional;

torch::Tensor quat_to_rotmat(const torch::Tensor& quats) {
  auto q = F::normalize(quats, F::NormalizeFuncOptions().dim(-1));
  auto w = q.select(-1, 0), x = q.select(-1, 1), y = q.select(-1, 2), z = q.select(-1, 3);
  auto r0 = torch::stack({1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)}, -1);
  auto r1 = torch::stack({2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)}, -1);
  auto r2 = torch::stack({2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)}, -1);
  return torch::stack({r0, r1, r2}, -2);
}

torch::Tensor covariance3d(const torch::Tensor& log_scales, const torch::Tensor& quats) {
  auto M = quat_to_rotmat(quats) * torch::exp(log_scales).unsqueeze(-2);  // R S (scales the columns)
  return torch::matmul(M, M.transpose(-1, -2));
}

Projected project(const torch::Tensor& means, const torch::Tensor& log_scales, const torch::Tensor& quats, const Camera& cam,
                  const ProjectOptions& opt) {
  const auto opts = means.options();
  auto Rw = cam.rotation().to(opts), tw = cam.translation().to(opts);
  auto t = torch::matmul(means, Rw.t()) + tw;  // camera frame
  auto tz = t.select(1, 2);
  auto in_front = tz > opt.near;
  // Culled Gaussians get harmless stand-in values so that no inf/NaN reaches autograd.
  auto z = torch::where(in_front, tz, torch::ones_like(tz));
  const double lim_x = opt.frustum_slack * 0.5 * cam.width / cam.fx, lim_y = opt.frustum_slack * 0.5 * cam.height / cam.fy;
  auto tx = torch::clamp(t.select(1, 0) / z, -lim_x, lim_x) * z;
  auto ty = torch::clamp(t.select(1, 1) / z, -lim_y, lim_y) * z;
  auto zeros = torch::zeros_like(z);
  auto J = torch::stack({torch::stack({cam.fx / z, zeros, -cam.fx * tx / (z * z)}, -1),
                         torch::stack({zeros, cam.fy / z, -cam.fy * ty / (z * z)}, -1)},
                        -2);  // [N, 2, 3]
  auto T = torch::matmul(J, Rw);
  auto cov = torch::matmul(torch::matmul(T, covariance3d(log_scales, quats)), T.transpose(1, 2));
  auto a = cov.select(1, 0).select(1, 0) + opt.dilation, b = cov.select(1, 0).select(1, 1), c = cov.select(1, 1).select(1, 1) + opt.dilation;
  auto det = a * c - b * b;
  auto valid = in_front & (det > 0);
  auto det_safe = torch::where(valid, det, torch::ones_like(det));
  Projected p;
  p.cov2d = torch::stack({a, b, c}, -1);
  p.conics = torch::stack({c / det_safe, -b / det_safe, a / det_safe}, -1);
  p.means2d = torch::stack({cam.fx * t.select(1, 0) / z + cam.cx, cam.fy * t.select(1, 1) / z + cam.cy}, -1);
  p.depths = tz;
  {
    torch::NoGradGuard no_grad;
    auto mid = 0.5 * (a + c);
    auto lambda_max = mid + torch::sqrt(torch::clamp_min(mid * mid - det, 0.1));
    auto radius = torch::ceil(3 * torch::sqrt(lambda_max));
    // off-screen splats are culled here too: their pixel box misses the image
    auto u = p.means2d.select(1, 0), v = p.means2d.select(1, 1);
    auto on_screen = (u + radius > 0) & (u - radius < cam.width) & (v + radius > 0) & (v - radius < cam.height);
    p.radii = torch::where(valid & on_screen, radius, torch::zeros_like(radius)).to(torch::kInt32);
  }
  return p;
}

torch::Tensor sh_basis(const torch::Tensor& dirs, int64_t degree) {
  TORCH_CHECK(degree >= 0 && degree <= 3, "sh_basis: degree must be 0..3, got ", degree);
  auto x = dirs.select(-1, 0), y = dirs.select(-1, 1), z = dirs.select(-1, 2);
  std::vector<torch::Tensor> b{torch::full_like(x, 0.28209479177387814)};
  if (degree >= 1) {
    const double C1 = 0.4886025119029199;
    b.insert(b.end(), {-C1 * y, C1 * z, -C1 * x});
  }
  if (degree >= 2) {
    auto xx = x * x, yy = y * y, zz = z * z;
    b.insert(b.end(), {1.0925484305920792 * x * y, -1.0925484305920792 * y * z, 0.31539156525252005 * (2 * zz - xx - yy),
                       -1.0925484305920792 * x * z, 0.5462742152960396 * (xx - yy)});
    if (degree >= 3) {
      b.insert(b.end(), {-0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * x * y * z,
                         -0.4570457994644658 * y * (4 * zz - xx - yy), 0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
                         -0.4570457994644658 * x * (4 * zz - xx - yy), 1.445305721320277 * z * (xx - yy),
                         -0.5900435899266435 * x * (xx - 3 * yy)});
    }
  }
  return torch::stack(b, -1);
}

torch::Tensor eval_sh(const torch::Tensor& coeffs, const torch::Tensor& dirs, int64_t degree) {
  const int64_t k = (degree + 1) * (degree + 1);
  TORCH_CHECK(coeffs.size(1) >= k, "eval_sh: degree ", degree, " needs ", k, " coefficients, have ", coeffs.size(1));
  return (sh_basis(dirs, degree).unsqueeze(-1) * coeffs.slice(1, 0, k)).sum(1);
}

torch::Tensor view_dirs(const torch::Tensor& means, const Camera& cam) {
  return F::normalize(means - cam.center().to(means.options()), F::NormalizeFuncOptions().dim(-1));
}

}  // namespace ef::splat
