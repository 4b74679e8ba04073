// Gaussian splatting renderers side by side: forward and forward+backward time per frame of sorted
// alpha blending vs Weighted Sum Rendering on the same scene and camera, the share of the alpha
// frame spent in the depth sort, (Gaussian, tile) overlaps, and peak GPU memory on CUDA.
// The scene is a standard 3DGS .ply (--ply) or a generated cloud of Gaussians filling the view.
//
//   build/bench/bench_splat [--gaussians 100000,1000000] [--size 800] [--device cpu|cuda]
//                           [--threads 2] [--reps 3] [--ply scene.ply]
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>

#include "core/config.h"
#include "splatting/ply.h"
#include "splatting/renderer.h"
#ifdef EDGEFORGE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

using namespace ef::splat;

namespace {

using Clock = std::chrono::steady_clock;

// N Gaussians in a slab in front of the camera, sized so that the image is covered several times
// over (depth complexity of a trained scene), random rotations, opacities and degree-3 colours.
GaussianParams synthetic_scene(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  GaussianParams g;
  g.means = torch::cat({torch::rand({n, 2}, gen) * 6 - 3, torch::rand({n, 1}, gen) * 6 + 4}, 1);
  const double s = 0.05 * std::cbrt(1e5 / double(n));
  g.scales = torch::log(torch::rand({n, 3}, gen) * s + 0.3 * s);
  g.quats = torch::randn({n, 4}, gen);
  g.opacities = torch::randn({n}, gen) * 2;
  g.sh = torch::randn({n, 16, 3}, gen) * 0.2;
  return g;
}

Camera bench_camera(int64_t size) {
  return Camera::look_at(torch::tensor({0.0, 0.0, 0.0}), torch::tensor({0.0, 0.0, 1.0}), torch::tensor({0.0, -1.0, 0.0}), size, size,
                         1.1);
}

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

struct Row {
  double fwd_ms = 0, fwdbwd_ms = 0, sort_ms = 0, peak_mb = 0;
  int64_t overlaps = 0;
};

Row measure(SplatRendererImpl& r, GaussianParams g, const Camera& cam, const torch::Device& dev, int reps) {
  RenderSettings rs{3, torch::zeros({3}, torch::TensorOptions().device(dev))};
  Row row;
  std::vector<torch::Tensor> leaves;
  for (auto& [name, t] : g.fields()) {
    t->set_requires_grad(true);
    leaves.push_back(*t);
  }
  {  // warm-up
    auto out = r.render(g, cam, rs);
    out.image.sum().backward();
    sync(dev);
  }
#ifdef EDGEFORGE_WITH_CUDA
  if (dev.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(dev.index() < 0 ? 0 : dev.index());
#endif
  for (int i = 0; i < reps; ++i) {
    {
      torch::NoGradGuard no_grad;
      auto t0 = Clock::now();
      auto out = r.render(g, cam, rs);
      sync(dev);
      row.fwd_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / reps;
      row.overlaps = out.overlaps;
    }
    {
      torch::NoGradGuard no_grad;
      RenderSettings timed = rs;
      timed.time_sort = true;
      row.sort_ms += r.render(g, cam, timed).sort_ms / reps;
    }
    for (auto& t : leaves) t.mutable_grad() = torch::Tensor();
    auto t0 = Clock::now();
    auto out = r.render(g, cam, rs);
    out.image.sum().backward();
    sync(dev);
    row.fwdbwd_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / reps;
  }
#ifdef EDGEFORGE_WITH_CUDA
  if (dev.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(dev.index() < 0 ? 0 : dev.index());
    row.peak_mb = double(stats.allocated_bytes[0].peak) / (1 << 20);
  }
#endif
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sorted alpha blending vs Weighted Sum Rendering, per frame"};
  std::vector<int64_t> counts{100000, 1000000};
  int64_t size = 800, threads = 2;
  int reps = 3;
  std::string device = "cpu", ply;
  app.add_option("--gaussians", counts, "scene sizes (generated scenes)")->delimiter(',');
  app.add_option("--size", size, "image width and height");
  app.add_option("--device", device, "cpu or cuda");
  app.add_option("--threads", threads, "CPU threads");
  app.add_option("--reps", reps, "timed repetitions");
  app.add_option("--ply", ply, "a trained 3DGS .ply instead of generated scenes");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(int(threads));
  torch::Device dev(device);
  auto alpha = make_renderer(ef::Config::from_json({{"kind", "alpha"}}));
  auto wsr = make_renderer(ef::Config::from_json({{"kind", "wsr"}, {"sigma", 100.0}}));
  alpha->to(dev);
  wsr->to(dev);
  auto cam = bench_camera(size);
  std::printf("frame %lldx%lld, device %s, %lld threads, %d reps; alpha = sorted blending, wsr = LC weighted sum\n",
              static_cast<long long>(size), static_cast<long long>(size), device.c_str(), static_cast<long long>(threads), reps);
  std::printf("%9s %6s %11s %10s %12s %9s %8s %9s %9s\n", "gaussians", "kind", "overlaps", "fwd ms", "fwd+bwd ms", "sort ms", "sort %",
              "peak MB", "fwd x");
  std::vector<GaussianParams> scenes;
  if (!ply.empty()) scenes.push_back(read_ply(ply));
  else
    for (auto n : counts) scenes.push_back(synthetic_scene(n, 1));
  for (auto& g0 : scenes) {
    GaussianParams g = g0;
    for (auto& [name, t] : g.fields()) *t = t->to(dev);
    GaussianParams gw = g;
    wsr->add_attributes(gw);
    auto ra = measure(*alpha, g, cam, dev, reps);
    auto rw = measure(*wsr, gw, cam, dev, reps);
    for (auto [name, r] : {std::pair<const char*, Row>{"alpha", ra}, {"wsr", rw}})
      std::printf("%9lld %6s %11lld %10.2f %12.2f %9.2f %7.1f%% %9.1f %9.2f\n", static_cast<long long>(g.size()), name,
                  static_cast<long long>(r.overlaps), r.fwd_ms, r.fwdbwd_ms, r.sort_ms, 100 * r.sort_ms / std::max(r.fwd_ms, 1e-9),
                  r.peak_mb, ra.fwd_ms / r.fwd_ms);
    std::printf("%9s wsr speed-up over alpha: forward %.2fx, forward+backward %.2fx\n", "", ra.fwd_ms / rw.fwd_ms,
                ra.fwdbwd_ms / rw.fwdbwd_ms);
  }
  std::printf("fwd x: alpha forward time / this kind's (>1: faster than alpha). sort %%: key sort share of the forward frame.\n");
  return 0;
}
