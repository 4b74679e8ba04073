#include "core/quant_rule.h"

#include <cmath>

namespace ef {

bool in_float_layers(const std::string& parameter, const std::vector<std::string>& float_layers) {
  for (const auto& p : float_layers)
    if (parameter == p || (parameter.size() > p.size() && parameter.compare(0, p.size(), p) == 0 && parameter[p.size()] == '.')) return true;
  return false;
}

std::map<std::string, ParamQuant> quant_plan(torch::nn::Module& network, const std::vector<std::string>& float_layers) {
  std::map<std::string, ParamQuant> plan;
  for (const auto& p : network.named_parameters(true)) {
    ParamQuant q;
    if (p.value().dim() >= 2 && p.value().is_floating_point() && !in_float_layers(p.key(), float_layers)) q.kind = ParamQuant::Kind::PerTensor;
    plan[p.key()] = q;
  }
  // the weights of Linear and Conv modules: one scale per output channel
  for (const auto& m : network.named_modules("", /*include_self=*/true)) {
    const bool channelled = m.value()->as<torch::nn::Linear>() || m.value()->as<torch::nn::Conv1d>() || m.value()->as<torch::nn::Conv2d>() ||
                            m.value()->as<torch::nn::Conv3d>();
    if (!channelled) continue;
    const std::string name = m.key().empty() ? "weight" : m.key() + ".weight";
    auto it = plan.find(name);
    if (it != plan.end() && it->second.quantized()) it->second = {ParamQuant::Kind::PerChannel, 0};
  }
  return plan;
}

namespace {
double qmax_of(int bits) { return std::pow(2.0, bits - 1) - 1; }
std::vector<int64_t> channel_shape(const torch::Tensor& w, int64_t axis) {
  std::vector<int64_t> shape(static_cast<size_t>(w.dim()), 1);
  shape[static_cast<size_t>(axis)] = w.size(axis);
  return shape;
}
}  // namespace

torch::Tensor quant_scale(const torch::Tensor& w, const ParamQuant& q, int bits) {
  TORCH_CHECK(q.quantized(), "quant_scale: the parameter stays float");
  torch::Tensor a = w.detach().abs();
  torch::Tensor absmax = q.kind == ParamQuant::Kind::PerTensor ? a.max() : a.movedim(q.axis, 0).reshape({w.size(q.axis), -1}).amax(1);
  return (absmax / qmax_of(bits)).clamp_min(1e-12);
}

torch::Tensor quant_codes(const torch::Tensor& w, const torch::Tensor& scale, const ParamQuant& q, int bits) {
  const double Q = qmax_of(bits);
  torch::Tensor s = q.kind == ParamQuant::Kind::PerChannel ? scale.view(channel_shape(w, q.axis)) : scale;
  return torch::clamp(torch::round(w.detach() / s), -Q, Q);
}

torch::Tensor fake_quantize(const torch::Tensor& w, const ParamQuant& q, int bits) {
  if (!q.quantized()) return w;
  torch::Tensor scale = quant_scale(w, q, bits);
  torch::Tensor s = q.kind == ParamQuant::Kind::PerChannel ? scale.view(channel_shape(w, q.axis)) : scale;
  return quant_codes(w, scale, q, bits) * s;
}

}  // namespace ef
