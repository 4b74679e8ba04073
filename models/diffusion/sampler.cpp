#include "models/diffusion/sampler.h"

#include <algorithm>
#include <cmath>

namespace ef {

SamplerRuleRegistry& sampler_rules() {
  static SamplerRuleRegistry registry("sampler");
  return registry;
}

std::vector<std::string> sampler_kinds() { return sampler_rules().names(); }

SamplerOptions SamplerOptions::from(const Config& s) {
  SamplerOptions o;
  o.kind = s.get<std::string>("kind", o.kind);
  try {
    sampler_rules().at(o.kind);
  } catch (const ConfigError& e) {
    s.invalid("kind", e.what());  // the registry's message ("did you mean"), at the key's dotted path
  }
  o.steps = s.get<int64_t>("steps", o.steps);
  if (o.steps < 1) s.invalid("steps", "must be at least 1");
  o.spacing = s.get<std::string>("spacing", o.spacing);
  if (o.spacing != "leading" && o.spacing != "trailing" && o.spacing != "linspace")
    s.invalid("spacing", "expected leading, trailing or linspace, got \"" + o.spacing + "\"");
  o.steps_offset = s.get<int64_t>("steps_offset", o.steps_offset);
  o.eta = s.get<double>("eta", o.eta);
  o.clip_x0 = s.get<double>("clip_x0", o.clip_x0);
  o.section = s;
  sampler_rules().create(o.kind, o);  // the kind reads and checks its own keys now, before the caller rejects unknown ones
  return o;
}

std::vector<int64_t> inference_timesteps(int64_t T, int64_t n, const std::string& spacing, int64_t offset) {
  if (n < 1 || n > T) throw ConfigError("sampler: steps must be in [1, " + std::to_string(T) + "], got " + std::to_string(n));
  std::vector<int64_t> ts;
  for (int64_t k = 0; k < n; ++k) {
    int64_t t = 0;
    if (spacing == "leading") t = (n - 1 - k) * (T / n) + offset;
    else if (spacing == "trailing") t = static_cast<int64_t>(std::llround(static_cast<double>(T) - static_cast<double>(k) * T / n)) - 1;
    else if (spacing == "linspace") t = n == 1 ? T - 1 : static_cast<int64_t>(std::llround((T - 1) * (1.0 - static_cast<double>(k) / (n - 1))));
    else throw ConfigError("sampler: unknown spacing \"" + spacing + "\"");
    ts.push_back(std::clamp<int64_t>(t, 0, T - 1));
  }
  return ts;
}

std::vector<int64_t> SamplerRule::timesteps(const NoiseSchedule& schedule, const SamplerOptions& o) const {
  return inference_timesteps(schedule.steps(), o.steps, o.spacing, o.steps_offset);
}

Sampler::Sampler(const NoiseSchedule& schedule, SamplerOptions options)
    : schedule_(schedule), opt_(std::move(options)), rule_(sampler_rules().create(opt_.kind, opt_)), timesteps_(rule_->timesteps(schedule, opt_)) {
  if (timesteps_.empty()) throw std::logic_error("sampler '" + opt_.kind + "': empty timestep grid");
  for (int64_t t : timesteps_)
    if (t < 0 || t >= schedule.steps())
      throw std::logic_error("sampler '" + opt_.kind + "': grid timestep " + std::to_string(t) + " outside [0, " + std::to_string(schedule.steps()) + ")");
}

torch::Tensor Sampler::sample(const Denoiser& denoiser, const torch::Tensor& noise, std::optional<at::Generator> generator) {
  torch::Tensor x = noise;
  for (size_t i = 0; i < timesteps_.size(); ++i) x = step(i, x, denoiser(x, timesteps_[i]), generator);
  return x;
}

torch::Tensor Sampler::step(size_t i, const torch::Tensor& x, const torch::Tensor& output, std::optional<at::Generator> generator) {
  if (i >= timesteps_.size()) throw std::out_of_range("sampler: step " + std::to_string(i) + " of " + std::to_string(timesteps_.size()));
  const int64_t t = timesteps_[i];
  const int64_t t_next = i + 1 < timesteps_.size() ? timesteps_[i + 1] : -1;
  const double a = schedule_.alpha(t), s = schedule_.sigma(t);
  const double a1 = schedule_.alpha(t_next), s1 = schedule_.sigma(t_next);
  auto [x0, eps] = schedule_.split(output, x, a, s);
  if (opt_.clip_x0 > 0) {
    x0 = x0.clamp(-opt_.clip_x0, opt_.clip_x0);
    eps = (x - a * x0) / s;  // keep the pair consistent with the clipped x0
  }
  if (i == 0) rule_->begin_chain();
  return rule_->step(SamplerStep{schedule_, timesteps_, i, t, t_next, a, s, a1, s1, x, output, x0, eps, std::move(generator)});
}

}  // namespace ef
