#include "core/qat.h"

#include <cmath>
#include <set>

namespace ef {

QatOptions QatOptions::from(const Config& config) {
  QatOptions o;
  if (!config.has("quant")) return o;
  Config q = config.section("quant");
  o.enabled = q.get<bool>("qat", false);
  if (o.enabled) {
    o.bits = q.get<int>("bits", 8);
    if (o.bits < 2 || o.bits > 16) q.invalid("bits", "expected 2..16 weight bits, got " + std::to_string(o.bits));
  }
  return o;
}

void WeightFakeQuant::enter() {
  torch::NoGradGuard ng;
  weights_.clear(), masters_.clear(), quantized_.clear();
  std::set<const void*> seen;  // a parameter shared by two modules is quantized once
  for (torch::nn::Module* module : modules_()) {
    const std::map<std::string, ParamQuant> plan = quant_plan(*module, float_layers_);
    for (const auto& item : module->named_parameters(true)) {
      torch::Tensor p = item.value();
      const ParamQuant& q = plan.at(item.key());
      if (p.requires_grad() && q.quantized() && seen.insert(p.data_ptr()).second) {
        weights_.push_back(p);
        masters_.push_back(p.detach().clone());
        quantized_.push_back(fake_quantize(p.detach(), q, bits_));
        p.copy_(quantized_.back());
      }
    }
  }
}

void WeightFakeQuant::leave() {
  torch::NoGradGuard ng;
  for (size_t i = 0; i < weights_.size(); ++i)
    if (weights_[i].sizes() == masters_[i].sizes())  // (a recipe that replaced a tensor mid-step keeps its own)
      weights_[i].copy_(masters_[i] + (weights_[i] - quantized_[i]));
  weights_.clear(), masters_.clear(), quantized_.clear();
}

}  // namespace ef
