// Adaptive density control and the scene module: clone / split / prune decisions on constructed
// statistics, Adam moments following the Gaussians, a scene of another size loading from a
// checkpoint file, and the 3DGS initialisation from points.
#include <catch2/catch.hpp>

#include <cmath>

#include "core/safetensors.h"
#include "splatting/densify.h"
#include "splatting/scene_init.h"
#include "splatting/scene_module.h"
#include "splatting/splat_optimizer.h"
#include "tests/test_support.h"

using namespace ef::splat;

namespace {

GaussianParams four_gaussians() {
  GaussianParams g;
  g.means = torch::tensor({{0.0, 0.0, 5.0}, {1.0, 0.0, 5.0}, {0.0, 1.0, 5.0}, {1.0, 1.0, 5.0}}, torch::kFloat32);
  // two small (0.005 of extent 1), two large (0.05)
  g.scales = torch::log(torch::tensor({{0.005, 0.005, 0.005}, {0.005, 0.005, 0.005}, {0.05, 0.05, 0.05}, {0.05, 0.05, 0.05}}, torch::kFloat32));
  g.quats = torch::tensor({{1.0, 0.0, 0.0, 0.0}}, torch::kFloat32).repeat({4, 1});
  g.opacities = torch::tensor({0.0, 0.0, 0.0, -8.0}, torch::kFloat32);  // the last one is nearly transparent
  g.sh = torch::zeros({4, 1, 3});
  return g;
}

// A render result whose 2D-mean gradient has the given NDC norms (camera 2x2 px: W/2 = 1).
RenderResult fake_render(const std::vector<float>& grad_norms) {
  RenderResult r;
  r.means2d = torch::zeros({4, 2}, torch::requires_grad());
  r.means2d.mutable_grad() = torch::zeros({4, 2});
  for (int i = 0; i < 4; ++i) r.means2d.mutable_grad()[i][0] = grad_norms[i];
  r.radii = torch::full({4}, 3, torch::kInt32);
  return r;
}

Camera tiny_camera() {
  Camera c;
  c.width = c.height = 2;
  c.fx = c.fy = 1;
  c.cx = c.cy = 1;
  c.world_to_camera = torch::eye(4, torch::kFloat64);
  return c;
}

}  // namespace

TEST_CASE("splat: densification clones small and splits large hot Gaussians and prunes clear ones", "[splatting][densify]") {
  GaussianScene scene(four_gaussians());
  SplatAdam adam;
  for (auto& [name, t] : scene->params().fields()) adam.add(name, *t, 1e-3, true);
  // give every field a gradient so that Adam has non-zero moments to carry
  for (auto& [name, t] : scene->params().fields()) t->mutable_grad() = torch::ones_like(*t);
  adam.step();
  DensifyOptions opt;
  opt.start = 0;
  opt.every = 1;
  opt.opacity_reset_every = 0;
  Densifier d(opt, /*extent=*/1.0);
  // hot: Gaussians 0 (small) and 2 (large); cold: 1 (small) and 3 (large, transparent)
  d.observe(fake_render({1e-3f, 1e-5f, 1e-3f, 1e-5f}), tiny_camera());
  GaussianParams before = scene->params();
  for (auto& [name, t] : before.fields()) *t = t->detach().clone();
  const int64_t delta = d.maybe_apply(1, scene, adam, 0);
  // +1 clone, +2 split children -1 split parent, -1 pruned  => 4 + 1 = 5
  CHECK(delta == 1);
  REQUIRE(scene->size() == 5);
  auto& p = scene->params();
  // kept in order: 0, 1, then the clone of 0, then two children of 2 (scale / 1.6)
  CHECK(torch::equal(p.means.slice(0, 0, 2), before.means.slice(0, 0, 2)));
  CHECK(torch::equal(p.means[2], before.means[0]));
  CHECK(torch::equal(p.sh[2], before.sh[0]));
  CHECK(torch::allclose(torch::exp(p.scales.slice(0, 3, 5)), (torch::exp(before.scales[2]) / 1.6).expand({2, 3}), 1e-5));
  CHECK(torch::equal(p.quats.slice(0, 3, 5), before.quats[2].expand({2, 4})));
  // children lie around their parent, within a few of its standard deviations
  CHECK(((p.means.slice(0, 3, 5) - before.means[2]).abs() < 0.25).all().item<bool>());
  // the parameters registered in the module are the resized tensors
  CHECK(scene->named_parameters()["means"].size(0) == 5);
  // moments: kept rows keep theirs, new rows start at zero
  torch::serialize::OutputArchive out;
  adam.save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  torch::serialize::InputArchive in;
  std::istringstream read(bytes.str());
  in.load_from(read);
  torch::Tensor m;
  in.read("means.m", m);
  REQUIRE(m.size(0) == 5);
  CHECK(m.slice(0, 0, 2).ne(0).all().item<bool>());
  CHECK(m.slice(0, 2, 5).eq(0).all().item<bool>());
}

TEST_CASE("splat: opacity reset caps opacities at 0.01 and WSR keeps every Gaussian", "[splatting][densify]") {
  GaussianScene scene(four_gaussians());
  SplatAdam adam;
  for (auto& [name, t] : scene->params().fields()) adam.add(name, *t, 1e-3, true);
  DensifyOptions opt;
  opt.start = 0;
  opt.every = 1000;
  opt.opacity_reset_every = 10;
  Densifier d(opt, 1.0);
  d.maybe_apply(10, scene, adam, 0);
  CHECK((torch::sigmoid(scene->params().opacities) <= 0.0100001).all().item<bool>());
  // pruning off (as the wsr renderer asks): the transparent Gaussian stays
  opt.prune = false;
  opt.opacity_reset = false;
  opt.every = 1;
  Densifier keep(opt, 1.0);
  keep.observe(fake_render({1e-5f, 1e-5f, 1e-5f, 1e-5f}), tiny_camera());
  keep.maybe_apply(1, scene, adam, 0);
  CHECK(scene->size() == 4);
}

TEST_CASE("splat: a scene module loads a checkpoint holding another number of Gaussians", "[splatting]") {
  ef::test::ScratchDir dir("scene-module");
  GaussianParams big = four_gaussians();
  big.extras["opacity_sh"] = torch::randn({4, 1});
  GaussianScene saved(big);
  ef::save_safetensors(dir.path / "scene.safetensors", ef::module_state(*saved));
  GaussianParams small = four_gaussians();
  for (auto& [name, t] : small.fields()) *t = t->slice(0, 0, 1).clone();
  small.extras["opacity_sh"] = torch::zeros({1, 1});
  GaussianScene loaded(small);
  ef::load_module_state(*loaded, ef::load_safetensors(dir.path / "scene.safetensors"), "scene.safetensors");
  REQUIRE(loaded->size() == 4);
  CHECK(torch::equal(loaded->params().means, big.means));
  CHECK(torch::equal(loaded->params().extras.at("opacity_sh"), big.extras.at("opacity_sh")));
}

TEST_CASE("splat: initialisation from points follows 3DGS", "[splatting]") {
  auto pts = torch::tensor({{0.0, 0.0, 0.0}, {1.0, 0.0, 0.0}, {0.0, 2.0, 0.0}, {0.0, 0.0, 3.0}}, torch::kFloat32);
  auto cols = torch::tensor({{1.0, 0.5, 0.0}}, torch::kFloat32).repeat({4, 1});
  auto g = init_from_points(pts, cols, 2, {});
  g.check();
  // point 0: neighbours at distances 1, 2, 3 -> mean squared 14/3
  CHECK(std::exp(g.scales[0][0].item<double>()) == Approx(std::sqrt(14.0 / 3.0)).epsilon(1e-5));
  CHECK(torch::sigmoid(g.opacities).allclose(torch::full({4}, 0.1f)));
  CHECK((0.5 + kShC0 * g.sh[0][0]).allclose(cols[0]));
  CHECK(g.sh.size(1) == 9);
  CHECK(g.sh.slice(1, 1).eq(0).all().item<bool>());
}
