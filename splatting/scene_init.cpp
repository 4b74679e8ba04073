#include "splatting/scene_init.h"

#include <cmath>
#include <limits>

namespace ef::splat {

torch::Tensor mean_sq_knn_distance(const torch::Tensor& points_in, int64_t k) {
  torch::NoGradGuard no_grad;
  auto points = points_in.to(torch::kFloat32);
  const int64_t n = points.size(0), kk = std::min<int64_t>(k, std::max<int64_t>(n - 1, 1));
  auto out = torch::zeros({n}, points.options());
  if (n < 2) return out.fill_(1.0);
  const int64_t block = 2048;
  for (int64_t s = 0; s < n; s += block) {
    auto q = points.slice(0, s, std::min(n, s + block));
    auto d2 = torch::cdist(q, points).pow(2);
    // exclude the point itself (distance 0 at its own index)
    auto self = torch::arange(s, s + q.size(0), torch::kLong);
    d2.index_put_({torch::arange(q.size(0), torch::kLong), self}, std::numeric_limits<float>::infinity());
    out.slice(0, s, s + q.size(0)).copy_(std::get<0>(torch::topk(d2, kk, 1, /*largest=*/false)).mean(1));
  }
  return out;
}

GaussianParams init_from_points(const torch::Tensor& points_in, const torch::Tensor& colors_in, int64_t sh_degree, const InitOptions& opt) {
  TORCH_CHECK(points_in.dim() == 2 && points_in.size(1) == 3 && points_in.size(0) > 0, "init: need a [P, 3] point cloud, got ",
              points_in.sizes());
  auto points = points_in.to(torch::kFloat32).cpu(), colors = colors_in.to(torch::kFloat32).cpu();
  if (opt.max_points > 0 && points.size(0) > opt.max_points) {
    auto gen = at::detail::createCPUGenerator(opt.seed + 17);
    auto pick = torch::randperm(points.size(0), gen, torch::kLong).slice(0, 0, opt.max_points);
    points = points.index_select(0, pick);
    colors = colors.index_select(0, pick);
  }
  const int64_t n = points.size(0);
  GaussianParams g;
  g.means = points.clone();
  auto d2 = mean_sq_knn_distance(points, 3).clamp_min(1e-7);
  g.scales = torch::log(torch::sqrt(d2)).unsqueeze(1).repeat({1, 3});
  g.quats = torch::zeros({n, 4});
  g.quats.select(1, 0).fill_(1.0);
  g.opacities = torch::full({n}, std::log(opt.opacity / (1 - opt.opacity)));
  g.sh = torch::zeros({n, sh_coeffs(sh_degree), 3});
  g.sh.select(1, 0).copy_((colors - 0.5) / kShC0);
  return g;
}

}  // namespace ef::splat
