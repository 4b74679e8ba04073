#include "splatting/densify.h"

#include <cmath>

#include "splatting/projection.h"

namespace ef::splat {

DensifyOptions DensifyOptions::from(const Config& c) {
  DensifyOptions o;
  o.start = c.get<int64_t>("start", o.start);
  o.stop = c.get<int64_t>("stop", o.stop);
  o.every = c.get<int64_t>("every", o.every);
  o.opacity_reset_every = c.get<int64_t>("opacity_reset_every", o.opacity_reset_every);
  o.grad_threshold = c.get<double>("grad_threshold", o.grad_threshold);
  o.percent_dense = c.get<double>("percent_dense", o.percent_dense);
  o.prune_opacity = c.get<double>("prune_opacity", o.prune_opacity);
  o.max_screen_radius = c.get<double>("max_screen_radius", o.max_screen_radius);
  o.max_world_scale = c.get<double>("max_world_scale", o.max_world_scale);
  o.max_gaussians = c.get<int64_t>("max_gaussians", o.max_gaussians);
  o.prune = c.get<bool>("prune", o.prune);
  o.opacity_reset = c.get<bool>("opacity_reset", o.opacity_reset);
  if (o.every < 1) c.invalid("every", "expected at least 1");
  if (o.grad_threshold <= 0) c.invalid("grad_threshold", "expected a positive number");
  c.reject_unknown_keys();
  return o;
}

void Densifier::reset_stats(int64_t n, const torch::TensorOptions& opts) {
  grad_accum_ = torch::zeros({n}, opts);
  count_ = torch::zeros({n}, opts);
  max_radii_ = torch::zeros({n}, opts);
}

void Densifier::observe(const RenderResult& r, const Camera& cam) {
  torch::NoGradGuard no_grad;
  const auto n = r.radii.size(0);
  auto opts = r.means2d.options().requires_grad(false);
  if (!grad_accum_.defined() || grad_accum_.size(0) != n) reset_stats(n, opts);
  if (!r.means2d.grad().defined()) return;
  // pixel-space gradient -> NDC units, as the reference's statistic
  auto g = r.means2d.grad() * torch::tensor({0.5 * cam.width, 0.5 * cam.height}, opts);
  auto visible = r.radii > 0;
  grad_accum_ += torch::where(visible, g.norm(2, 1), torch::zeros_like(grad_accum_));
  count_ += visible.to(count_.dtype());
  max_radii_ = torch::where(visible, torch::maximum(max_radii_, r.radii.to(opts.dtype())), max_radii_);
}

int64_t Densifier::maybe_apply(int64_t step, GaussianScene& scene, SplatAdam& optim, uint64_t seed) {
  if (step >= opt_.stop) return 0;
  const int64_t before = scene->size();
  if (step > opt_.start && step % opt_.every == 0) densify_and_prune(step, scene, optim, seed);
  if (opt_.opacity_reset && opt_.opacity_reset_every > 0 && step % opt_.opacity_reset_every == 0) reset_opacity(scene, optim);
  return scene->size() - before;
}

void Densifier::densify_and_prune(int64_t step, GaussianScene& scene, SplatAdam& optim, uint64_t seed) {
  torch::NoGradGuard no_grad;
  GaussianParams p = scene->params();
  const int64_t n = p.size();
  if (!grad_accum_.defined() || grad_accum_.size(0) != n) return reset_stats(n, p.means.options());
  auto grads = torch::nan_to_num(grad_accum_ / count_, 0.0);
  auto max_scale = std::get<0>(torch::exp(p.scales).max(1));
  auto hot = grads >= opt_.grad_threshold;
  const bool room = opt_.max_gaussians <= 0 || n < opt_.max_gaussians;
  auto clone = hot & (max_scale <= opt_.percent_dense * extent_) & room;
  auto split = hot & (max_scale > opt_.percent_dense * extent_) & room;

  // new Gaussians: clones copy their parent; each split parent gives two children sampled inside it
  std::map<std::string, std::vector<torch::Tensor>> grown;
  for (auto& [name, t] : p.fields()) grown[name] = {*t, t->index({clone})};
  auto split_idx = torch::nonzero(split).squeeze(1);
  const int64_t ns = split_idx.size(0);
  if (ns > 0) {
    auto gen = at::detail::createCPUGenerator(seed * 1000003 + uint64_t(step));
    auto stds = torch::exp(p.scales.index_select(0, split_idx)).repeat({2, 1});
    auto eps = torch::randn(stds.sizes(), gen, stds.options().device(torch::kCPU)).to(stds.device());
    auto R = quat_to_rotmat(p.quats.index_select(0, split_idx)).repeat({2, 1, 1});
    auto offsets = torch::matmul(R, (stds * eps).unsqueeze(-1)).squeeze(-1);
    for (auto& [name, t] : p.fields()) {
      auto children = t->index_select(0, split_idx);
      children = torch::cat({children, children});
      if (name == "means") children = children + offsets;
      if (name == "scales") children = children - std::log(1.6);  // s / (0.8 · 2)
      grown[name].push_back(children);
    }
  }
  const int64_t added = clone.sum().item<int64_t>() + 2 * ns;
  GaussianParams next = p;
  for (auto& [name, t] : next.fields()) *t = torch::cat(grown[name]);
  // prune: split parents, and (if enabled) transparent / oversized Gaussians
  auto remove = torch::cat({split, torch::zeros({added}, split.options())});
  if (opt_.prune) {
    auto too_clear = torch::sigmoid(next.opacities) < opt_.prune_opacity;
    remove = remove | too_clear;
    if (opt_.opacity_reset_every > 0 && step > opt_.opacity_reset_every) {
      auto radii = torch::cat({max_radii_, torch::zeros({added}, max_radii_.options())});
      auto big_world = std::get<0>(torch::exp(next.scales).max(1)) > opt_.max_world_scale * extent_;
      remove = remove | (radii > opt_.max_screen_radius) | big_world;
    }
  }
  auto keep = ~remove;
  for (auto& [name, t] : next.fields()) *t = t->index({keep});
  optim.append_zero_rows(added);
  optim.keep_rows(keep);
  scene->set(next);
  reset_stats(scene->size(), p.means.options());
}

void Densifier::reset_opacity(GaussianScene& scene, SplatAdam& optim) {
  torch::NoGradGuard no_grad;
  auto& o = scene->params().opacities;
  const double cap = std::log(0.01 / 0.99);  // logit(0.01)
  o.clamp_max_(cap);
  optim.zero_rows("opacities", torch::ones({o.size(0)}, o.options().dtype(torch::kBool)));
}

void Densifier::save(torch::serialize::OutputArchive& a) const {
  if (!grad_accum_.defined()) return;
  a.write("densify.grad_accum", grad_accum_);
  a.write("densify.count", count_);
  a.write("densify.max_radii", max_radii_);
}

void Densifier::load(torch::serialize::InputArchive& a) {
  torch::Tensor g;
  if (!a.try_read("densify.grad_accum", g)) return;
  grad_accum_ = g;
  a.read("densify.count", count_);
  a.read("densify.max_radii", max_radii_);
}

}  // namespace ef::splat
