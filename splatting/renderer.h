#pragma once
// The renderer interface the splat recipe, `edgeforge render` and the benches use: a scene and a
// camera in, an image out. Two kinds are registered: "alpha" (3DGS sorted alpha blending) and "wsr"
// (Weighted Sum Rendering, no sort). A renderer is a module: learnable renderer-wide values (WSR's
// σ, β, background weight) are its parameters and travel in checkpoints with it.
#include <torch/torch.h>

#include "core/config.h"
#include "core/registry.h"
#include "splatting/binning.h"
#include "splatting/camera.h"
#include "splatting/gaussians.h"
#include "splatting/projection.h"

namespace ef::splat {

struct RenderSettings {
  int64_t sh_degree = 3;    // active SH degree (the recipe raises it during training)
  torch::Tensor background; // [3] colour
  bool time_sort = false;   // measure the key sort (synchronises on CUDA)
};

struct RenderResult {
  torch::Tensor image;    // [H, W, 3]
  torch::Tensor means2d;  // [N, 2], retains its gradient (densification statistic)
  torch::Tensor radii;    // [N] int32, 0 where culled
  int64_t overlaps = 0;   // (Gaussian, tile) pairs
  double sort_ms = 0;
};

// Learning rate and name of an extra per-Gaussian attribute a renderer adds to the scene.
struct ExtraAttribute {
  std::string name;
  double lr;
};

class SplatRendererImpl : public torch::nn::Module {
 public:
  virtual std::string kind() const = 0;
  virtual RenderResult render(const GaussianParams& scene, const Camera& cam, const RenderSettings& settings) = 0;
  // Adds (initialised) the per-Gaussian attributes this renderer reads, if missing.
  virtual void add_attributes(GaussianParams& scene) const {}
  virtual std::vector<ExtraAttribute> extra_attributes() const { return {}; }
  // Learning rates of the renderer's own parameters, by parameter name.
  virtual std::map<std::string, double> parameter_lrs(double scene_extent) const { return {}; }
  // Whether opacity-based pruning and opacity resets apply (WSR turns them off).
  virtual bool prunes_by_opacity() const { return true; }

  ProjectOptions projection;
  int64_t tile = 16;
};

using RendererRegistry = Registry<SplatRendererImpl, const Config&>;
RendererRegistry& renderers();
// Builds the renderer named by section.kind ("alpha" | "wsr"), reading its options.
std::shared_ptr<SplatRendererImpl> make_renderer(const Config& section);

// What both renderers share: projection, culling, SH colour, tile grid.
struct PreparedSplats {
  Projected proj;
  torch::Tensor colors;  // [N, 3] rgb (SH + 0.5, clamped at 0)
  torch::Tensor dirs;    // [N, 3]
  TileGrid grid;
};
PreparedSplats prepare_splats(const GaussianParams& scene, const Camera& cam, const RenderSettings& settings, const ProjectOptions& opt,
                              int64_t tile);

}  // namespace ef::splat
