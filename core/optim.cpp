#include "core/optim.h"

#include <cmath>

namespace ef {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::vector<ParamGroup> decay_groups(const torch::nn::Module& module, const std::string& prefix) {
  ParamGroup decay{prefix + "decay", {}, 1.0, true}, no_decay{prefix + "no_decay", {}, 1.0, false};
  for (const auto& p : module.named_parameters(true)) {
    if (!p.value().requires_grad()) continue;
    bool plain = p.value().dim() <= 1 || ends_with(p.key(), "_embed") || ends_with(p.key(), "_token");
    (plain ? no_decay : decay).params.push_back(p.value());
  }
  std::vector<ParamGroup> out;
  if (!decay.params.empty()) out.push_back(decay);
  if (!no_decay.params.empty()) out.push_back(no_decay);
  return out;
}

double Schedule::multiplier(int64_t step) const {
  if (warmup > 0 && step < warmup) return static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (kind == "constant") return 1.0;
  double span = std::max<int64_t>(1, total - warmup);
  double t = std::clamp(static_cast<double>(step - warmup) / span, 0.0, 1.0);
  double decay = kind == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * t)) : 1.0 - t;
  return min_ratio + (1.0 - min_ratio) * decay;
}

Schedule Schedule::from(const Config& c, int64_t total_steps) {
  Schedule s;
  s.kind = c.get<std::string>("kind", "constant");
  if (s.kind != "constant" && s.kind != "cosine" && s.kind != "linear")
    c.invalid("kind", "expected \"constant\", \"cosine\" or \"linear\", got \"" + s.kind + "\"");
  s.warmup = c.get<int64_t>("warmup", 0);
  if (s.warmup < 0) c.invalid("warmup", "must be >= 0, got " + std::to_string(s.warmup));
  s.min_ratio = c.get<double>("min_ratio", 0.0);
  if (!(s.min_ratio >= 0 && s.min_ratio <= 1)) c.invalid("min_ratio", "expected 0 <= min_ratio <= 1");
  s.total = total_steps;
  return s;
}

ScheduledOptimizer::ScheduledOptimizer(std::unique_ptr<torch::optim::Optimizer> opt, std::vector<double> base_lrs,
                                       Schedule schedule)
    : opt_(std::move(opt)), base_lrs_(std::move(base_lrs)), schedule_(schedule) {
  set_step(0);
}

void ScheduledOptimizer::set_step(int64_t step) {
  double m = schedule_.multiplier(step);
  auto& groups = opt_->param_groups();
  for (size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(base_lrs_[i] * m);
}

double ScheduledOptimizer::lr() const { return opt_->param_groups().front().options().get_lr(); }

std::unique_ptr<ScheduledOptimizer> make_optimizer(const Config& c, const std::vector<ParamGroup>& groups,
                                                   int64_t total_steps) {
  const std::string kind = c.get<std::string>("kind", "adamw");
  const double lr = c.get<double>("lr", 1e-3);
  const double wd = c.get<double>("weight_decay", kind == "adamw" ? 0.01 : 0.0);
  // the optimizers keep float32 state: a rate no float holds would fail (or go NaN) at the first step
  if (!(lr > 0 && lr <= 1e4)) c.invalid("lr", "expected 0 < lr <= 1e4, got " + describe_json(lr));
  if (!(wd >= 0 && wd <= 1e4)) c.invalid("weight_decay", "expected 0 <= weight_decay <= 1e4, got " + describe_json(wd));
  Schedule schedule = Schedule::from(c.section("schedule"), total_steps);
  std::vector<double> base_lrs;
  std::unique_ptr<torch::optim::Optimizer> opt;

  auto build_groups = [&](auto make_options) {
    std::vector<torch::optim::OptimizerParamGroup> out;
    for (const auto& g : groups) {
      auto o = make_options(lr * g.lr_scale, g.weight_decay ? wd : 0.0);
      out.emplace_back(g.params, std::make_unique<decltype(o)>(o));
      base_lrs.push_back(lr * g.lr_scale);
    }
    return out;
  };

  if (kind == "sgd") {
    const double momentum = c.get<double>("momentum", 0.9);
    const bool nesterov = c.get<bool>("nesterov", false);
    if (!(momentum >= 0 && momentum < 1)) c.invalid("momentum", "expected 0 <= momentum < 1");
    auto gs = build_groups([&](double l, double w) {
      return torch::optim::SGDOptions(l).momentum(momentum).nesterov(nesterov).weight_decay(w);
    });
    opt = std::make_unique<torch::optim::SGD>(gs, torch::optim::SGDOptions(lr));
  } else if (kind == "adam" || kind == "adamw") {
    auto betas = c.get<std::vector<double>>("betas", {0.9, 0.999});
    if (betas.size() != 2) c.invalid("betas", "expected 2 numbers");
    const double eps = c.get<double>("eps", 1e-8);
    for (double b : betas)
      if (!(b >= 0 && b < 1)) c.invalid("betas", "expected two numbers in [0, 1)");
    if (!(eps > 0 && eps <= 1)) c.invalid("eps", "expected 0 < eps <= 1");
    if (kind == "adam") {
      auto gs = build_groups([&](double l, double w) {
        return torch::optim::AdamOptions(l).betas({betas[0], betas[1]}).eps(eps).weight_decay(w);
      });
      opt = std::make_unique<torch::optim::Adam>(gs, torch::optim::AdamOptions(lr));
    } else {
      auto gs = build_groups([&](double l, double w) {
        return torch::optim::AdamWOptions(l).betas({betas[0], betas[1]}).eps(eps).weight_decay(w);
      });
      opt = std::make_unique<torch::optim::AdamW>(gs, torch::optim::AdamWOptions(lr));
    }
  } else {
    c.invalid("kind", "expected \"sgd\", \"adam\" or \"adamw\", got \"" + kind + "\"");
  }
  return std::make_unique<ScheduledOptimizer>(std::move(opt), std::move(base_lrs), schedule);
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return 0.0;
  torch::Tensor norm = torch::stack(torch::_foreach_norm(grads)).norm();
  double n = norm.item<double>();
  if (max_norm > 0 && std::isfinite(n) && n > max_norm) torch::_foreach_mul_(grads, max_norm / (n + 1e-6));
  return n;
}

}  // namespace ef
