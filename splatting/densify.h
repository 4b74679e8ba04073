#pragma once
// Adaptive density control of 3D Gaussian Splatting: gradient statistics of the screen-space means,
// then clone (small Gaussians), split (large ones), prune (transparent, or too large on screen or in
// the world) and periodic opacity resets. WSR turns pruning and resets off (its paper, App. C).
#include <torch/torch.h>

#include "core/config.h"
#include "splatting/camera.h"
#include "splatting/renderer.h"
#include "splatting/scene_module.h"
#include "splatting/splat_optimizer.h"

namespace ef::splat {

struct DensifyOptions {
  int64_t start = 500, stop = 15000, every = 100;  // densify when start < step < stop, every `every` steps
  int64_t opacity_reset_every = 3000;               // 0: never
  double grad_threshold = 2e-4;                     // on the NDC-space mean gradient norm
  double percent_dense = 0.01;                      // clone below / split above this share of the scene extent
  double prune_opacity = 0.005;
  double max_screen_radius = 20;                    // px, after the first opacity reset
  double max_world_scale = 0.1;                     // share of the extent, after the first opacity reset
  int64_t max_gaussians = 0;                        // 0: no cap; else densification stops growing there
  bool prune = true, opacity_reset = true;

  static DensifyOptions from(const Config& c);
};

class Densifier {
 public:
  Densifier(DensifyOptions opt, double scene_extent) : opt_(opt), extent_(scene_extent) {}

  // After backward: accumulate the statistics of one rendered view.
  void observe(const RenderResult& r, const Camera& cam);
  // At the end of step `step` (1-based count of finished steps): densify/prune/reset when due.
  // Returns the number of Gaussians added minus removed (0 when nothing was due).
  int64_t maybe_apply(int64_t step, GaussianScene& scene, SplatAdam& optim, uint64_t seed);

  void reset_stats(int64_t n, const torch::TensorOptions& opts);
  void save(torch::serialize::OutputArchive& a) const;
  void load(torch::serialize::InputArchive& a);
  const DensifyOptions& options() const { return opt_; }

 private:
  void densify_and_prune(int64_t step, GaussianScene& scene, SplatAdam& optim, uint64_t seed);
  void reset_opacity(GaussianScene& scene, SplatAdam& optim);

  DensifyOptions opt_;
  double extent_;
  torch::Tensor grad_accum_, count_, max_radii_;
};

}  // namespace ef::splat
