// Gaussian splatting renderers: projection against direct formulas; both tile rasterizers against
// the dense reference (values and gradients, double precision); order (in)dependence; WSR limits;
// finite-difference gradients of whole renders; CUDA against CPU where a GPU is present.
#include <catch2/catch.hpp>

#include <cmath>

#include "splatting/rasterize.h"
#include "splatting/renderer.h"
#include "tests/gradcheck.h"
#include "tests/splatting/dense_reference.h"

using namespace ef::splat;

namespace {

auto f64 = torch::TensorOptions().dtype(torch::kFloat64);

// A small random scene in front of a camera at the origin looking down +z.
GaussianParams random_scene(int64_t n, uint64_t seed, int64_t sh_degree = 1, torch::ScalarType dtype = torch::kFloat64) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto o = torch::TensorOptions().dtype(dtype);
  GaussianParams g;
  g.means = torch::cat({torch::rand({n, 2}, gen, o) * 2.4 - 1.2, torch::rand({n, 1}, gen, o) * 3 + 2.5}, 1);
  g.scales = torch::log(torch::rand({n, 3}, gen, o) * 0.25 + 0.06);
  g.quats = torch::randn({n, 4}, gen, o);
  g.opacities = torch::randn({n}, gen, o) * 1.5;
  g.sh = torch::randn({n, sh_coeffs(sh_degree), 3}, gen, o) * 0.4;
  return g;
}

Camera front_camera(int64_t w, int64_t h) {
  Camera c;
  c.width = w;
  c.height = h;
  c.fx = c.fy = 0.8 * w;
  c.cx = 0.5 * w + 0.7;
  c.cy = 0.5 * h - 0.4;
  c.world_to_camera = torch::eye(4, f64);
  // a small rotation and offset so that no axis is trivial
  auto R = quat_to_rotmat(torch::tensor({{0.99, 0.05, -0.08, 0.03}}, f64))[0];
  c.world_to_camera.slice(0, 0, 3).slice(1, 0, 3).copy_(R);
  c.world_to_camera.slice(0, 0, 3).select(1, 3).copy_(torch::tensor({0.1, -0.05, 0.2}, f64));
  return c;
}

struct Splats {
  torch::Tensor means2d, conics, colors, opac, radii, depths;
};

Splats splats_of(const GaussianParams& g, const Camera& cam) {
  auto p = project(g.means, g.scales, g.quats, cam);
  Splats s{p.means2d.detach().clone(), p.conics.detach().clone(),
           torch::clamp_min(eval_sh(g.sh, view_dirs(g.means, cam), g.sh_degree()) + 0.5, 0.0).detach().clone(),
           torch::sigmoid(g.opacities).detach().clone(), p.radii, p.depths.detach()};
  for (auto* t : {&s.means2d, &s.conics, &s.colors, &s.opac}) t->set_requires_grad(true);
  return s;
}

void require_close(const torch::Tensor& a, const torch::Tensor& b, double tol, const std::string& what) {
  INFO(what << ": max |diff| " << (a - b).abs().max().item<double>() << " (scale " << b.abs().max().item<double>() << ")");
  REQUIRE(a.sizes() == b.sizes());
  CHECK(torch::allclose(a, b, tol, tol));
}

std::vector<torch::Tensor> grads_of(const torch::Tensor& out, const torch::Tensor& w, const std::vector<torch::Tensor>& leaves) {
  return torch::autograd::grad({(out * w).sum()}, leaves, {}, false, false, true);
}

}  // namespace

TEST_CASE("splat: projection and 2D covariance follow the direct formulas", "[splatting]") {
  auto g = random_scene(5, 1);
  auto cam = front_camera(64, 48);
  auto p = project(g.means, g.scales, g.quats, cam);
  auto W = cam.rotation(), t = cam.translation();
  for (int64_t i = 0; i < 5; ++i) {
    INFO("gaussian " << i);
    // rotation from the (normalised) quaternion, written out
    auto q = g.quats[i] / g.quats[i].norm();
    double w = q[0].item<double>(), x = q[1].item<double>(), y = q[2].item<double>(), z = q[3].item<double>();
    auto R = torch::tensor({{1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)},
                            {2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)},
                            {2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)}}, f64);
    auto S = torch::diag(torch::exp(g.scales[i]));
    auto Sigma = R.mm(S).mm(S.t()).mm(R.t());
    auto tc = W.mv(g.means[i]) + t;
    double tx = tc[0].item<double>(), ty = tc[1].item<double>(), tz = tc[2].item<double>();
    auto J = torch::tensor({{cam.fx / tz, 0.0, -cam.fx * tx / (tz * tz)}, {0.0, cam.fy / tz, -cam.fy * ty / (tz * tz)}}, f64);
    auto cov = J.mm(W).mm(Sigma).mm(W.t()).mm(J.t()) + 0.3 * torch::eye(2, f64);
    CHECK(p.cov2d[i][0].item<double>() == Approx(cov[0][0].item<double>()).epsilon(1e-10));
    CHECK(p.cov2d[i][1].item<double>() == Approx(cov[0][1].item<double>()).epsilon(1e-10));
    CHECK(p.cov2d[i][2].item<double>() == Approx(cov[1][1].item<double>()).epsilon(1e-10));
    auto inv = torch::inverse(cov);
    CHECK(p.conics[i][0].item<double>() == Approx(inv[0][0].item<double>()).epsilon(1e-10));
    CHECK(p.conics[i][1].item<double>() == Approx(inv[0][1].item<double>()).epsilon(1e-10));
    CHECK(p.means2d[i][0].item<double>() == Approx(cam.fx * tx / tz + cam.cx));
    CHECK(p.means2d[i][1].item<double>() == Approx(cam.fy * ty / tz + cam.cy));
    CHECK(p.depths[i].item<double>() == Approx(tz));
    auto lmax = torch::linalg_eigvalsh(cov, "L").max().item<double>();
    CHECK(p.radii[i].item<int>() == static_cast<int>(std::ceil(3 * std::sqrt(lmax))));
  }
  // behind the camera: culled
  auto behind = g.means.clone();
  behind.select(1, 2).fill_(-1.0);
  CHECK(project(behind, g.scales, g.quats, cam).radii.eq(0).all().item<bool>());
}

TEST_CASE("splat: alpha blending equals the dense reference in value and gradient", "[splatting]") {
  auto cam = front_camera(40, 36);
  auto g = random_scene(30, 2);
  g.opacities.select(0, 0).fill_(8.0);  // one nearly opaque splat exercises the 0.99 clamp
  auto s = splats_of(g, cam);
  auto bg = torch::tensor({0.2, 0.5, 0.1}, f64);
  TileGrid grid{40, 36, 8};
  auto bins = bin_gaussians(s.means2d, s.radii, s.depths, grid, true);
  auto img = rasterize_alpha({s.means2d, s.conics, s.colors}, s.opac, bg, bins, grid);
  auto ref = ef::test::dense_alpha(s.means2d, s.conics, s.colors, s.opac, bg, s.radii, s.depths, grid);
  require_close(img, ref, 1e-10, "image");
  REQUIRE(img.std().item<double>() > 0.05);  // a scene, not a flat background
  auto w = torch::randn(img.sizes(), at::detail::createCPUGenerator(3), f64);
  std::vector<torch::Tensor> leaves{s.means2d, s.conics, s.colors, s.opac};
  auto ga = grads_of(img, w, leaves), gr = grads_of(ref, w, leaves);
  const char* names[] = {"means2d", "conics", "colors", "opacities"};
  for (int i = 0; i < 4; ++i) require_close(ga[i], gr[i], 1e-8, names[i]);
  CHECK(ga[0].abs().sum().item<double>() > 0);
}

TEST_CASE("splat: the weighted sum equals the dense reference in value and gradient", "[splatting]") {
  auto cam = front_camera(40, 36);
  auto g = random_scene(30, 4);
  auto s = splats_of(g, cam);
  auto k = (s.opac.detach() * 1.7).requires_grad_(true);  // weights may exceed 1 (view-dependent opacity)
  TileGrid grid{40, 36, 8};
  auto bins = bin_gaussians(s.means2d, s.radii, s.depths, grid, false);
  auto [num, den] = rasterize_weighted_sum({s.means2d, s.conics, s.colors}, k, bins, grid);
  auto [rnum, rden] = ef::test::dense_weighted_sum(s.means2d, s.conics, s.colors, k, s.radii, grid);
  require_close(num, rnum, 1e-10, "numerator");
  require_close(den, rden, 1e-10, "denominator");
  auto gen = at::detail::createCPUGenerator(5);
  auto wn = torch::randn(num.sizes(), gen, f64), wd = torch::randn(den.sizes(), gen, f64);
  std::vector<torch::Tensor> leaves{s.means2d, s.conics, s.colors, k};
  auto loss = [&](const torch::Tensor& n, const torch::Tensor& d) { return (n * wn).sum() + (d * wd).sum(); };
  auto ga = torch::autograd::grad({loss(num, den)}, leaves), gr = torch::autograd::grad({loss(rnum, rden)}, leaves);
  const char* names[] = {"means2d", "conics", "colors", "weights"};
  for (int i = 0; i < 4; ++i) require_close(ga[i], gr[i], 1e-8, names[i]);
}

TEST_CASE("splat: the weighted sum ignores compositing order while alpha blending does not", "[splatting]") {
  auto cam = front_camera(48, 40);
  auto g = random_scene(40, 6, 1, torch::kFloat32);
  auto s = splats_of(g, cam);
  auto bg = torch::zeros({3});
  TileGrid grid{48, 40, 16};
  torch::NoGradGuard no_grad;
  // the same tile lists, each reversed: back-to-front instead of front-to-back
  auto bins = bin_gaussians(s.means2d, s.radii, s.depths, grid, true);
  TileBins reversed = bins;
  reversed.gaussian_ids = bins.gaussian_ids.clone();
  for (int64_t t = 0; t < bins.tile_ranges.size(0); ++t) {
    int a = bins.tile_ranges[t][0].item<int>(), b = bins.tile_ranges[t][1].item<int>();
    reversed.gaussian_ids.slice(0, a, b).copy_(bins.gaussian_ids.slice(0, a, b).flip(0));
  }
  auto a1 = rasterize_alpha({s.means2d, s.conics, s.colors}, s.opac, bg, bins, grid);
  auto a2 = rasterize_alpha({s.means2d, s.conics, s.colors}, s.opac, bg, reversed, grid);
  CHECK((a1 - a2).abs().max().item<float>() > 0.05f);
  auto [n1, d1] = rasterize_weighted_sum({s.means2d, s.conics, s.colors}, s.opac, bins, grid);
  auto [n2, d2] = rasterize_weighted_sum({s.means2d, s.conics, s.colors}, s.opac, reversed, grid);
  CHECK(torch::allclose(n1, n2, 1e-6, 1e-6));
  CHECK(torch::allclose(d1, d2, 1e-6, 1e-6));

  // whole scenes with the Gaussians permuted: WSR gives the same image
  auto wsr = make_renderer(ef::Config::from_json({{"kind", "wsr"}}));
  wsr->add_attributes(g);
  RenderSettings rs{1, bg};
  auto perm = torch::randperm(g.size(), at::detail::createCPUGenerator(7), torch::kLong);
  GaussianParams p = g;
  for (auto& [name, t] : p.fields()) *t = t->index_select(0, perm);
  auto i1 = wsr->render(g, cam, rs).image, i2 = wsr->render(p, cam, rs).image;
  INFO("max |diff| " << (i1 - i2).abs().max().item<float>());
  CHECK(torch::allclose(i1, i2, 1e-6, 1e-6));
}

TEST_CASE("splat: WSR limits: LC with a far sigma equals DIR and empty pixels show the background", "[splatting]") {
  auto cam = front_camera(32, 32);
  auto g = random_scene(20, 8);
  torch::NoGradGuard no_grad;
  RenderSettings rs{1, torch::tensor({0.3, 0.6, 0.9}, f64)};
  auto lc = make_renderer(ef::Config::from_json({{"kind", "wsr"}, {"variant", "lc"}, {"sigma", 1e9}, {"view_dependent_opacity", false}}));
  auto dir = make_renderer(ef::Config::from_json({{"kind", "wsr"}, {"variant", "dir"}, {"view_dependent_opacity", false}}));
  auto expo = make_renderer(ef::Config::from_json({{"kind", "wsr"}, {"variant", "exp"}, {"sigma", 0.0}, {"view_dependent_opacity", false}}));
  lc->to(torch::kFloat64), dir->to(torch::kFloat64), expo->to(torch::kFloat64);
  auto a = lc->render(g, cam, rs).image, b = dir->render(g, cam, rs).image;
  CHECK(torch::allclose(a, b, 1e-7, 1e-7));
  // EXP with sigma -> 0 (clamped at 1e-4) is DIR up to exp(-1e-4 d^beta)
  CHECK(torch::allclose(expo->render(g, cam, rs).image, b, 2e-3, 2e-3));
  // nothing on screen: every pixel is the background colour
  GaussianParams away = g;
  away.means = g.means.clone();
  away.means.select(1, 2).fill_(-5.0);
  auto empty = dir->render(away, cam, rs).image;
  CHECK(torch::allclose(empty, rs.background.view({1, 1, 3}).expand_as(empty), 0, 1e-12));
}

TEST_CASE("splat: whole renders have finite-difference gradients for every parameter", "[splatting][gradcheck]") {
  auto cam = front_camera(24, 20);
  for (std::string kind : {"alpha", "wsr"}) {
    for (std::string variant : {"lc", "exp"}) {
      if (kind == "alpha" && variant == "exp") continue;
      INFO(kind << " " << variant);
      auto g = random_scene(6, 9);
      // spread the splats wide and keep them translucent so small steps never cross a skip rule
      g.scales = torch::log(torch::full({6, 3}, 0.35, f64)) + 0.1 * g.scales;
      g.opacities = torch::full({6}, -1.0, f64) + 0.1 * g.opacities;
      auto r = make_renderer(ef::Config::from_json(kind == "wsr" ? nlohmann::json{{"kind", kind}, {"variant", variant}, {"sigma", 9.0}}
                                                                 : nlohmann::json{{"kind", kind}}));
      r->to(torch::kFloat64);
      r->add_attributes(g);
      if (g.extras.count("opacity_sh")) g.extras["opacity_sh"] += 0.05 * torch::randn_like(g.extras["opacity_sh"]);
      std::vector<torch::Tensor> leaves;
      for (auto& [name, t] : g.fields()) {
        t->set_requires_grad(true);
        leaves.push_back(*t);
      }
      for (auto& p : r->parameters()) leaves.push_back(p);
      RenderSettings rs{1, torch::tensor({0.1, 0.2, 0.3}, f64)};
      auto res = ef::test::gradcheck([&] { return r->render(g, cam, rs).image; }, leaves, 1e-6, 12);
      INFO(res.worst);
      CHECK(res.max_rel_error < 1e-4);
    }
  }
}

TEST_CASE("splat: CUDA rasterizers match the CPU ones", "[splatting][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: CUDA rasterizers not checked here");
    return;
  }
  auto cam = front_camera(80, 72);
  auto g = random_scene(300, 10, 1, torch::kFloat32);
  auto s = splats_of(g, cam);
  auto bg = torch::tensor({0.2f, 0.4f, 0.6f});
  TileGrid grid{80, 72, 16};
  auto gen = at::detail::createCPUGenerator(11);
  auto w = torch::randn({72, 80, 3}, gen), wd = torch::randn({72, 80}, gen);
  for (bool alpha : {true, false}) {
    INFO((alpha ? "alpha" : "wsr"));
    std::vector<torch::Tensor> outs, grads;
    for (auto dev : {torch::Device(torch::kCPU), torch::Device(torch::kCUDA)}) {
      std::vector<torch::Tensor> leaves;
      for (auto* t : {&s.means2d, &s.conics, &s.colors, &s.opac}) leaves.push_back(t->detach().to(dev).requires_grad_(true));
      auto bins = bin_gaussians(leaves[0], s.radii.to(dev), s.depths.to(dev), grid, alpha);
      torch::Tensor out, loss;
      if (alpha) {
        out = rasterize_alpha({leaves[0], leaves[1], leaves[2]}, leaves[3], bg.to(dev), bins, grid);
        loss = (out * w.to(dev)).sum();
      } else {
        auto [n, d] = rasterize_weighted_sum({leaves[0], leaves[1], leaves[2]}, leaves[3], bins, grid);
        out = n;
        loss = (n * w.to(dev)).sum() + (d * wd.to(dev)).sum();
      }
      outs.push_back(out.cpu());
      for (auto& gr : torch::autograd::grad({loss}, leaves)) grads.push_back(gr.cpu());
    }
    require_close(outs[1], outs[0], 1e-4, "image");
    for (int i = 0; i < 4; ++i) require_close(grads[4 + i], grads[i], 2e-3, "gradient " + std::to_string(i));
  }
}
