// Recipe "splat": 3D Gaussian Splatting training on a posed image set with either renderer
// ("alpha" sorted blending or "wsr" weighted sum), the 3DGS objective, per-field learning rates,
// SH degree schedule and adaptive density control; held-out views give PSNR and SSIM.
#include <cmath>

#include "core/image_io.h"
#include "core/image_metrics.h"
#include "core/recipe.h"
#include "splatting/dataset.h"
#include "splatting/densify.h"
#include "splatting/ply.h"
#include "splatting/renderer.h"
#include "splatting/scene_init.h"
#include "splatting/scene_module.h"
#include "splatting/splat_optimizer.h"

namespace ef::splat {

namespace {

namespace fs = std::filesystem;

struct LearningRates {
  double position = 1.6e-4, position_final = 1.6e-6;  // × scene extent, log-linear decay over the run
  double sh_dc = 2.5e-3, sh_rest = 2.5e-3 / 20, opacity = 0.05, scale = 5e-3, rotation = 1e-3;
};

class SplatRecipe : public Recipe {
 public:
  SplatRecipe(const Config& cfg, const RunContext& ctx) : ctx_(ctx) {
    Config data = cfg.section("data");
    scene_data_ = load_scene(data);
    if (scene_data_.train.empty()) data.invalid("path", "the scene has no training views");
    for (auto* views : {&scene_data_.train, &scene_data_.test})
      for (auto& v : *views) v.image = v.image.to(ctx.device);
    background_ = scene_data_.background.to(ctx.device);

    Config model = cfg.section("model");
    max_sh_degree_ = model.get<int64_t>("sh_degree", 3);
    if (max_sh_degree_ < 0 || max_sh_degree_ > 3) model.invalid("sh_degree", "expected 0..3");
    sh_every_ = model.get<int64_t>("sh_increase_every", 1000);
    renderer_ = make_renderer(model.section("renderer"));
    Config init = model.section("init");
    InitOptions io;
    io.opacity = init.get<double>("opacity", renderer_->prunes_by_opacity() ? 0.1 : 0.1);
    io.max_points = init.get<int64_t>("max_points", 0);
    io.seed = ctx.seed;
    init.reject_unknown_keys();
    model.reject_unknown_keys();

    GaussianParams g = init_from_points(scene_data_.points, scene_data_.colors, max_sh_degree_, io);
    renderer_->add_attributes(g);
    for (auto& [name, t] : g.fields()) *t = t->to(ctx.device);
    scene_ = GaussianScene(g);
    renderer_->to(ctx.device);

    Config optim = cfg.section("optim");
    LearningRates lr;
    lr.position = optim.get<double>("position_lr", lr.position);
    lr.position_final = optim.get<double>("position_lr_final", lr.position_final);
    lr.sh_dc = optim.get<double>("sh_lr", lr.sh_dc);
    lr.sh_rest = optim.get<double>("sh_rest_lr", lr.sh_rest);
    lr.opacity = optim.get<double>("opacity_lr", renderer_->prunes_by_opacity() ? lr.opacity : 0.01);
    lr.scale = optim.get<double>("scale_lr", lr.scale);
    lr.rotation = optim.get<double>("rotation_lr", lr.rotation);
    const double eps = optim.get<double>("eps", 1e-15);
    optim.reject_unknown_keys();
    lr_ = lr;
    adam_ = SplatAdam(0.9, 0.999, eps);
    auto& p = scene_->params();
    const double extent = scene_data_.extent;
    adam_.add("means", p.means, lr.position * extent, true);
    adam_.add("scales", p.scales, lr.scale, true);
    adam_.add("quats", p.quats, lr.rotation, true);
    adam_.add("opacities", p.opacities, lr.opacity, true);
    // DC and higher SH orders learn at different rates (f_dc and f_rest in 3DGS)
    auto sh_scale = torch::full({p.sh.size(1), 1}, lr.sh_rest / lr.sh_dc);
    sh_scale[0] = 1.0;
    adam_.add("sh", p.sh, lr.sh_dc, true, sh_scale);
    for (const auto& extra : renderer_->extra_attributes()) adam_.add(extra.name, p.extras.at(extra.name), extra.lr, true);
    auto renderer_lrs = renderer_->parameter_lrs(extent);
    for (auto& np : renderer_->named_parameters()) adam_.add("renderer." + np.key(), np.value(), renderer_lrs.at(np.key()), false);

    Config loss = cfg.section("loss");
    ssim_weight_ = loss.get<double>("ssim_weight", 0.2);
    loss.reject_unknown_keys();

    Config dens = cfg.section("densify");
    auto dopt = DensifyOptions::from(dens);
    if (!renderer_->prunes_by_opacity()) dopt.prune = dopt.opacity_reset = false;
    densifier_ = std::make_unique<Densifier>(dopt, extent);

    Config ev = cfg.section("eval");
    eval_views_ = ev.get<int64_t>("views", 0);
    ev.reject_unknown_keys();
  }

  std::map<std::string, torch::nn::Module*> modules() override { return {{"scene", scene_.get()}, {"renderer", renderer_.get()}}; }
  std::map<std::string, ScheduledOptimizer*> optimizers() override { return {}; }
  // One view per optimizer step, as in 3DGS: the densification statistics are per-view gradients, which
  // accumulation would mix and clipping would distort.
  std::vector<std::string> unsupported_train_options() const override { return {"grad_accum", "grad_clip"}; }

  Scalars train_step(int64_t step) override {
    const auto& view = pick_view(step);
    RenderSettings rs{active_degree(step), background_};
    position_schedule(step);
    auto r = renderer_->render(scene_->params(), view.camera, rs);
    auto l1 = torch::mean(torch::abs(r.image - view.image));
    auto loss = (1 - ssim_weight_) * l1 + ssim_weight_ * (1 - ssim(r.image, view.image));
    const double value = loss.item<double>();
    if (!std::isfinite(value)) throw NonFiniteLoss("splat: loss is " + std::to_string(value));
    adam_.zero_grad();
    loss.backward();
    densifier_->observe(r, view.camera);
    adam_.step();
    const int64_t changed = densifier_->maybe_apply(step + 1, scene_, adam_, ctx_.seed);
    (void)changed;
    Scalars m{{"loss", value}, {"l1", l1.item<double>()}, {"gaussians", double(scene_->size())}};
    m["psnr"] = psnr(r.image.detach(), view.image).item<double>();
    return m;
  }

  Scalars evaluate() override {
    torch::NoGradGuard no_grad;
    const auto& views = scene_data_.test.empty() ? scene_data_.train : scene_data_.test;
    const int64_t n = eval_views_ > 0 ? std::min<int64_t>(eval_views_, views.size()) : int64_t(views.size());
    double p = 0, s = 0;
    for (int64_t i = 0; i < n; ++i) {
      auto img = render_view(views[i].camera).clamp(0, 1);
      p += psnr(img, views[i].image).item<double>();
      s += ssim(img, views[i].image).item<double>();
    }
    return {{"psnr", p / n}, {"ssim", s / n}, {"gaussians", double(scene_->size())}, {"views", double(n)}};
  }

  void write_samples(const fs::path& dir, int64_t step, MetricLogger& log) override {
    torch::NoGradGuard no_grad;
    const auto& views = scene_data_.test.empty() ? scene_data_.train : scene_data_.test;
    auto img = render_view(views.front().camera).clamp(0, 1);
    auto pair = torch::cat({img, views.front().image}, 1).cpu();  // render | ground truth
    write_png(dir / ("view_step_" + std::to_string(step) + ".png"), to_uint8_hwc(pair.permute({2, 0, 1})));
    write_ply(dir / "point_cloud.ply", cpu_params());
  }

  void save_state(torch::serialize::OutputArchive& archive) const override {
    torch::serialize::OutputArchive a;
    adam_.save(a);
    densifier_->save(a);
    archive.write("splat", a);
  }
  void load_state(torch::serialize::InputArchive& archive) override {
    torch::serialize::InputArchive a;
    archive.read("splat", a);
    adam_.load(a);
    densifier_->load(a);
  }

 private:
  const SceneView& pick_view(int64_t step) {
    // a fresh random order of the training views per pass, from the seed and the pass number only
    const int64_t n = scene_data_.train.size(), pass = step / n;
    if (pass != order_pass_) {
      auto gen = at::detail::createCPUGenerator(ctx_.seed * 7919 + uint64_t(pass));
      order_ = torch::randperm(n, gen, torch::kLong);
      order_pass_ = pass;
    }
    return scene_data_.train[order_[step % n].item<int64_t>()];
  }
  int64_t active_degree(int64_t step) const { return std::min(max_sh_degree_, sh_every_ > 0 ? step / sh_every_ : max_sh_degree_); }
  void position_schedule(int64_t step) {
    const double t = ctx_.total_steps > 0 ? std::min(1.0, double(step) / ctx_.total_steps) : 0.0;
    const double lr = std::exp(std::log(lr_.position) * (1 - t) + std::log(lr_.position_final) * t);
    adam_.set_lr("means", lr * scene_data_.extent);
  }
  torch::Tensor render_view(const Camera& cam) {
    RenderSettings rs{max_sh_degree_, background_};
    return renderer_->render(scene_->params(), cam, rs).image;
  }
  GaussianParams cpu_params() const {
    GaussianParams g = scene_->params();
    for (auto& [name, t] : g.fields()) *t = t->detach().cpu();
    return g;
  }

  RunContext ctx_;
  SceneData scene_data_;
  torch::Tensor background_;
  int64_t max_sh_degree_ = 3, sh_every_ = 1000, eval_views_ = 0;
  std::shared_ptr<SplatRendererImpl> renderer_;
  GaussianScene scene_{nullptr};
  SplatAdam adam_;
  LearningRates lr_;
  double ssim_weight_ = 0.2;
  std::unique_ptr<Densifier> densifier_;
  torch::Tensor order_;
  int64_t order_pass_ = -1;
};

EF_REGISTER(recipes(), "splat", [](const Config& c, const RunContext& ctx) { return std::make_unique<SplatRecipe>(c, ctx); },
            "3D Gaussian Splatting (renderer: alpha blending or Weighted Sum Rendering) with adaptive density control");

}  // namespace

}  // namespace ef::splat
