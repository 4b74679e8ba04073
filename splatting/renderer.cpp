#include "splatting/renderer.h"

#include <cmath>

#include "splatting/rasterize.h"

namespace ef::splat {

RendererRegistry& renderers() {
  static RendererRegistry r("renderer");
  return r;
}

std::shared_ptr<SplatRendererImpl> make_renderer(const Config& section) {
  return renderers().create(section.get<std::string>("kind", "alpha"), section);
}

namespace {

void read_common(SplatRendererImpl& r, const Config& c) {
  r.projection.near = c.get<double>("near", r.projection.near);
  r.projection.dilation = c.get<double>("dilation", r.projection.dilation);
  r.tile = c.get<int64_t>("tile", r.tile);
  if (r.tile < 1 || r.tile > 32) c.invalid("tile", "expected 1..32 pixels");
  if (r.projection.near <= 0) c.invalid("near", "expected a positive distance");
}

}  // namespace

PreparedSplats prepare_splats(const GaussianParams& scene, const Camera& cam, const RenderSettings& settings, const ProjectOptions& opt,
                              int64_t tile) {
  PreparedSplats p;
  p.proj = project(scene.means, scene.scales, scene.quats, cam, opt);
  if (p.proj.means2d.requires_grad()) p.proj.means2d.retain_grad();
  p.dirs = view_dirs(scene.means, cam);
  const int64_t degree = std::min(settings.sh_degree, scene.sh_degree());
  p.colors = torch::clamp_min(eval_sh(scene.sh, p.dirs, degree) + 0.5, 0.0);
  p.grid = {cam.width, cam.height, tile};
  return p;
}

// --- sorted alpha blending (3DGS) ----------------------------------------------------------------
class AlphaRenderer : public SplatRendererImpl {
 public:
  explicit AlphaRenderer(const Config& c) {
    read_common(*this, c);
    c.reject_unknown_keys();
  }
  std::string kind() const override { return "alpha"; }
  RenderResult render(const GaussianParams& scene, const Camera& cam, const RenderSettings& settings) override {
    auto p = prepare_splats(scene, cam, settings, projection, tile);
    auto bins = bin_gaussians(p.proj.means2d, p.proj.radii, p.proj.depths, p.grid, /*depth_sorted=*/true, settings.time_sort);
    RenderResult r;
    r.image = rasterize_alpha({p.proj.means2d, p.proj.conics, p.colors}, torch::sigmoid(scene.opacities), settings.background, bins, p.grid);
    r.means2d = p.proj.means2d;
    r.radii = p.proj.radii;
    r.overlaps = bins.gaussian_ids.size(0);
    r.sort_ms = bins.sort_ms;
    return r;
  }
};
EF_REGISTER(renderers(), "alpha", [](const Config& c) { return std::make_unique<AlphaRenderer>(c); },
            "3DGS sorted alpha blending: tile binning, per-tile depth sort, front-to-back compositing with early stop");

// --- Weighted Sum Rendering ----------------------------------------------------------------------
// C = (c_B w_B + Σ c_i a_i) / (w_B + Σ a_i), a_i = o_i · v_i · w(d_i) · G_i, with the depth weight
// w of the chosen variant and v_i the view-dependent opacity (an SH expansion, extra "opacity_sh").
class WeightedSumRenderer : public SplatRendererImpl {
 public:
  explicit WeightedSumRenderer(const Config& c) {
    read_common(*this, c);
    variant_ = c.get<std::string>("variant", "lc");
    if (variant_ != "lc" && variant_ != "exp" && variant_ != "dir") c.invalid("variant", "expected \"lc\", \"exp\" or \"dir\"");
    view_opacity_ = c.get<bool>("view_dependent_opacity", true);
    opacity_mode_ = c.get<std::string>("opacity", "product");
    if (opacity_mode_ != "product" && opacity_mode_ != "replace") c.invalid("opacity", "expected \"product\" or \"replace\"");
    opacity_sh_init_ = c.get<double>("opacity_sh_init", 0.1);
    sigma_lr_scale_ = c.get<double>("sigma_lr", 0.1);
    bg_weight_lr_ = c.get<double>("background_weight_lr", 0.01);
    beta_lr_ = c.get<double>("beta_lr", 0.01);
    opacity_sh_lr_ = c.get<double>("opacity_sh_lr", 0.05);
    sigma_ = register_parameter("sigma", torch::tensor({c.get<double>("sigma", 10.0)}));
    beta_ = register_parameter("beta", torch::tensor({c.get<double>("beta", 1.0)}));
    bg_weight_ = register_parameter("background_weight", torch::tensor({c.get<double>("background_weight", 0.02)}));
    c.reject_unknown_keys();
  }
  std::string kind() const override { return "wsr"; }
  bool prunes_by_opacity() const override { return false; }

  void add_attributes(GaussianParams& scene) const override {
    if (!view_opacity_ || scene.extras.count("opacity_sh")) return;
    // one SH channel as the colour's degree; DC chosen so that v = opacity_sh_init (no +0.5 offset)
    auto v = torch::zeros({scene.size(), sh_coeffs(scene.sh_degree())}, scene.means.options().requires_grad(false));
    v.select(1, 0).fill_(opacity_sh_init_ / kShC0);
    scene.extras["opacity_sh"] = v;
  }
  std::vector<ExtraAttribute> extra_attributes() const override {
    if (!view_opacity_) return {};
    return {{"opacity_sh", opacity_sh_lr_}};
  }
  std::map<std::string, double> parameter_lrs(double extent) const override {
    return {{"sigma", sigma_lr_scale_ * extent}, {"beta", beta_lr_}, {"background_weight", bg_weight_lr_}};
  }

  RenderResult render(const GaussianParams& scene, const Camera& cam, const RenderSettings& settings) override {
    auto p = prepare_splats(scene, cam, settings, projection, tile);
    auto bins = bin_gaussians(p.proj.means2d, p.proj.radii, p.proj.depths, p.grid, /*depth_sorted=*/false, settings.time_sort);
    auto opts = p.colors.options();
    auto k = opacity_mode_ == "product" ? torch::sigmoid(scene.opacities) : torch::ones_like(scene.opacities);
    if (view_opacity_) {
      auto it = scene.extras.find("opacity_sh");
      TORCH_CHECK(it != scene.extras.end(), "wsr renderer: the scene has no opacity_sh attribute (add_attributes was not called)");
      const int64_t degree = std::min(settings.sh_degree, scene.sh_degree());
      k = k * torch::relu(eval_sh(it->second.unsqueeze(-1), p.dirs, degree).squeeze(-1));  // v <= 0: no contribution
    }
    auto d = torch::where(p.proj.radii > 0, p.proj.depths, torch::ones_like(p.proj.depths));
    auto sigma = sigma_.to(opts).clamp_min(1e-4);
    if (variant_ == "lc")
      k = k * torch::relu(1 - d / sigma);
    else if (variant_ == "exp")
      k = k * torch::exp(-sigma * torch::pow(d, beta_.to(opts)));
    auto [numer, denom] = rasterize_weighted_sum({p.proj.means2d, p.proj.conics, p.colors}, k, bins, p.grid);
    auto wb = bg_weight_.to(opts).clamp_min(1e-6);
    RenderResult r;
    r.image = (numer + wb * settings.background.to(opts)) / (denom + wb).unsqueeze(-1);
    r.means2d = p.proj.means2d;
    r.radii = p.proj.radii;
    r.overlaps = bins.gaussian_ids.size(0);
    r.sort_ms = bins.sort_ms;
    return r;
  }

 private:
  std::string variant_, opacity_mode_;
  bool view_opacity_ = true;
  double opacity_sh_init_, sigma_lr_scale_, bg_weight_lr_, beta_lr_, opacity_sh_lr_;
  torch::Tensor sigma_, beta_, bg_weight_;
};
EF_REGISTER(renderers(), "wsr", [](const Config& c) { return std::make_unique<WeightedSumRenderer>(c); },
            "Weighted Sum Rendering: order-free normalised weighted sum (variants lc/exp/dir), no sort");

}  // namespace ef::splat
