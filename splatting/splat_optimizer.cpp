#include "splatting/splat_optimizer.h"

#include <cmath>

namespace ef::splat {

void SplatAdam::add(const std::string& name, torch::Tensor param, double lr, bool per_gaussian, torch::Tensor lr_scale) {
  TORCH_CHECK(!slots_.count(name), "SplatAdam: parameter '", name, "' added twice");
  Slot s;
  s.param = param;
  s.m = torch::zeros_like(param);
  s.v = torch::zeros_like(param);
  s.lr = lr;
  s.per_gaussian = per_gaussian;
  s.lr_scale = lr_scale.defined() ? lr_scale.to(param.options()) : lr_scale;
  slots_.emplace(name, std::move(s));
}

void SplatAdam::set_lr(const std::string& name, double lr) {
  auto it = slots_.find(name);
  TORCH_CHECK(it != slots_.end(), "SplatAdam: no parameter '", name, "'");
  it->second.lr = lr;
}

double SplatAdam::lr(const std::string& name) const { return slots_.at(name).lr; }

void SplatAdam::step() {
  torch::NoGradGuard no_grad;
  for (auto& [name, s] : slots_) {
    auto& g = s.param.mutable_grad();
    if (!g.defined()) continue;
    ++s.steps;
    s.m.mul_(beta1_).add_(g, 1 - beta1_);
    s.v.mul_(beta2_).addcmul_(g, g, 1 - beta2_);
    const double bc1 = 1 - std::pow(beta1_, double(s.steps)), bc2 = 1 - std::pow(beta2_, double(s.steps));
    auto denom = (s.v / bc2).sqrt_().add_(eps_);
    if (s.lr_scale.defined())
      s.param.add_(s.m / denom * s.lr_scale, -s.lr / bc1);
    else
      s.param.addcdiv_(s.m, denom, -s.lr / bc1);
    g = torch::Tensor();
  }
}

void SplatAdam::zero_grad() {
  for (auto& [name, s] : slots_) s.param.mutable_grad() = torch::Tensor();
}

void SplatAdam::keep_rows(const torch::Tensor& keep) {
  for (auto& [name, s] : slots_)
    if (s.per_gaussian) {
      s.m = s.m.index({keep});
      s.v = s.v.index({keep});
    }
}

void SplatAdam::append_zero_rows(int64_t n) {
  for (auto& [name, s] : slots_)
    if (s.per_gaussian) {
      auto shape = s.m.sizes().vec();
      shape[0] = n;
      s.m = torch::cat({s.m, torch::zeros(shape, s.m.options())});
      s.v = torch::cat({s.v, torch::zeros(shape, s.v.options())});
    }
}

void SplatAdam::zero_rows(const std::string& name, const torch::Tensor& rows) {
  auto& s = slots_.at(name);
  s.m.index_put_({rows}, 0.0);
  s.v.index_put_({rows}, 0.0);
}

void SplatAdam::save(torch::serialize::OutputArchive& archive) const {
  for (const auto& [name, s] : slots_) {
    archive.write(name + ".m", s.m);
    archive.write(name + ".v", s.v);
    archive.write(name + ".steps", torch::tensor(s.steps));
  }
}

void SplatAdam::load(torch::serialize::InputArchive& archive) {
  for (auto& [name, s] : slots_) {
    torch::Tensor steps;
    archive.read(name + ".m", s.m);
    archive.read(name + ".v", s.v);
    archive.read(name + ".steps", steps);
    s.steps = steps.item<int64_t>();
    TORCH_CHECK(s.m.sizes() == s.param.sizes(), "SplatAdam: stored moments of '", name, "' have shape ", s.m.sizes(), ", the parameter ",
                s.param.sizes());
  }
}

}  // namespace ef::splat
