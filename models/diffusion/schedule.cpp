#include "models/diffusion/schedule.h"

#include <cmath>

namespace ef {

Prediction parse_prediction(const std::string& name, const std::string& where) {
  if (name == "epsilon") return Prediction::Epsilon;
  if (name == "v" || name == "v_prediction") return Prediction::V;
  if (name == "sample" || name == "x0") return Prediction::Sample;
  throw ConfigError(where + ": unknown prediction type \"" + name + "\" (expected epsilon, v or sample)");
}

std::string prediction_name(Prediction p) {
  switch (p) {
    case Prediction::Epsilon: return "epsilon";
    case Prediction::V: return "v";
    case Prediction::Sample: return "sample";
  }
  return "?";
}

NoiseScheduleRegistry& noise_schedule_kinds() {
  static NoiseScheduleRegistry registry("noise schedule");
  return registry;
}

NoiseSchedule::NoiseSchedule(const std::string& kind, int64_t steps, double beta_start, double beta_end, Prediction prediction)
    : NoiseSchedule(kind, steps, prediction, Config::from_json({{"beta_start", beta_start}, {"beta_end", beta_end}}, "noise schedule")) {}

NoiseSchedule::NoiseSchedule(const std::string& kind, int64_t steps, Prediction prediction, const Config& options)
    : kind_(kind), prediction_(prediction) {
  if (steps < 2) throw ConfigError("noise schedule: steps must be at least 2, got " + std::to_string(steps));
  alphas_cumprod_ = noise_schedule_kinds().create(kind, options)->alphas_cumprod(steps);
}

NoiseSchedule NoiseSchedule::from(const Config& s) {
  const std::string kind = s.get<std::string>("kind", "scaled_linear");
  const int64_t steps = s.get<int64_t>("steps", 1000);
  if (steps < 2) s.invalid("steps", "must be at least 2, got " + std::to_string(steps));
  const Prediction prediction = parse_prediction(s.get<std::string>("prediction", "epsilon"), s.source() + ": " + s.path_of("prediction"));
  try {
    noise_schedule_kinds().at(kind);
  } catch (const ConfigError& e) {
    s.invalid("kind", e.what());  // the registry's message ("did you mean"), at the key's dotted path
  }
  return NoiseSchedule(kind, steps, prediction, s);
}

double NoiseSchedule::abar(int64_t t) const {
  if (t == -1) return 1.0;
  if (t < -1 || t >= steps()) throw std::out_of_range("noise schedule: timestep " + std::to_string(t) + " outside [0, " + std::to_string(steps()) + ")");
  return alphas_cumprod_[t].item<double>();
}
double NoiseSchedule::alpha(int64_t t) const { return std::sqrt(abar(t)); }
double NoiseSchedule::sigma(int64_t t) const { return std::sqrt(1.0 - abar(t)); }

namespace {
torch::Tensor per_sample(const torch::Tensor& values, const torch::Tensor& like) {
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = values.size(0);
  return values.to(like.device(), like.scalar_type()).view(shape);
}
}  // namespace

torch::Tensor NoiseSchedule::alpha(const torch::Tensor& t, const torch::Tensor& like) const {
  return per_sample(alphas_cumprod_.index_select(0, t.to(torch::kCPU, torch::kLong)).sqrt(), like);
}
torch::Tensor NoiseSchedule::sigma(const torch::Tensor& t, const torch::Tensor& like) const {
  return per_sample((1.0 - alphas_cumprod_.index_select(0, t.to(torch::kCPU, torch::kLong))).sqrt(), like);
}

torch::Tensor NoiseSchedule::add_noise(const torch::Tensor& x0, const torch::Tensor& eps, const torch::Tensor& t) const {
  return alpha(t, x0) * x0 + sigma(t, x0) * eps;
}

torch::Tensor NoiseSchedule::target(const torch::Tensor& x0, const torch::Tensor& eps, const torch::Tensor& t) const {
  switch (prediction_) {
    case Prediction::Epsilon: return eps;
    case Prediction::Sample: return x0;
    case Prediction::V: return alpha(t, x0) * eps - sigma(t, x0) * x0;
  }
  return eps;
}

std::pair<torch::Tensor, torch::Tensor> NoiseSchedule::split(const torch::Tensor& out, const torch::Tensor& x, const torch::Tensor& a,
                                                             const torch::Tensor& s) const {
  switch (prediction_) {
    case Prediction::Epsilon: return {(x - s * out) / a, out};
    case Prediction::Sample: return {out, (x - a * out) / s};
    case Prediction::V: return {a * x - s * out, a * out + s * x};
  }
  return {out, out};
}

std::pair<torch::Tensor, torch::Tensor> NoiseSchedule::split(const torch::Tensor& out, const torch::Tensor& x, double a, double s) const {
  auto scalar = [&](double v) { return torch::scalar_tensor(v, torch::TensorOptions().dtype(x.scalar_type()).device(x.device())); };
  return split(out, x, scalar(a), scalar(s));
}

torch::Tensor NoiseSchedule::snr(const torch::Tensor& t) const {
  torch::Tensor abar = alphas_cumprod_.index_select(0, t.to(torch::kCPU, torch::kLong));
  return (abar / (1.0 - abar)).to(t.device(), torch::kFloat32);
}

}  // namespace ef
