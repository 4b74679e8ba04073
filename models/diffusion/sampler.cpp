#include "models/diffusion/sampler.h"

#include <algorithm>
#include <cmath>

namespace ef {

std::vector<std::string> sampler_kinds() { return {"ddpm", "ddim", "euler", "euler_ancestral", "dpmpp_2m"}; }

SamplerOptions SamplerOptions::from(const Config& s) {
  SamplerOptions o;
  o.kind = s.get<std::string>("kind", o.kind);
  auto kinds = sampler_kinds();
  if (std::find(kinds.begin(), kinds.end(), o.kind) == kinds.end())
    s.invalid("kind", "unknown sampler \"" + o.kind + "\" (expected ddpm, ddim, euler, euler_ancestral or dpmpp_2m)");
  o.steps = s.get<int64_t>("steps", o.steps);
  if (o.steps < 1) s.invalid("steps", "must be at least 1");
  o.spacing = s.get<std::string>("spacing", o.spacing);
  if (o.spacing != "leading" && o.spacing != "trailing" && o.spacing != "linspace")
    s.invalid("spacing", "expected leading, trailing or linspace, got \"" + o.spacing + "\"");
  o.steps_offset = s.get<int64_t>("steps_offset", o.steps_offset);
  o.eta = s.get<double>("eta", o.eta);
  o.clip_x0 = s.get<double>("clip_x0", o.clip_x0);
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

Sampler::Sampler(const NoiseSchedule& schedule, SamplerOptions options)
    : schedule_(schedule), opt_(std::move(options)), timesteps_(inference_timesteps(schedule.steps(), opt_.steps, opt_.spacing, opt_.steps_offset)) {}

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
  auto noise = [&] { return at::randn(x.sizes(), generator, x.options()); };
  const std::string& k = opt_.kind;

  if (k == "ddpm") {
    if (t_next == -1) return x0;
    const double abar = a * a, abar1 = a1 * a1;
    const double alpha_step = abar / abar1, beta_step = 1 - alpha_step;  // the one-step alpha/beta between t' and t
    const double c_x0 = std::sqrt(abar1) * beta_step / (1 - abar), c_x = std::sqrt(alpha_step) * (1 - abar1) / (1 - abar);
    const double var = (1 - abar1) / (1 - abar) * beta_step;
    return c_x0 * x0 + c_x * x + std::sqrt(var) * noise();
  }
  if (k == "ddim") {
    const double abar = a * a, abar1 = a1 * a1;
    const double sig = t_next == -1 ? 0.0 : opt_.eta * std::sqrt((1 - abar1) / (1 - abar)) * std::sqrt(1 - abar / abar1);
    torch::Tensor out = a1 * x0 + std::sqrt(std::max(0.0, s1 * s1 - sig * sig)) * eps;
    return sig > 0 ? out + sig * noise() : out;
  }
  if (k == "euler" || k == "euler_ancestral") {
    const double sigma = s / a, sigma1 = s1 / a1;
    double sigma_down = sigma1, sigma_up = 0;
    if (k == "euler_ancestral" && sigma1 > 0) {
      sigma_up = std::sqrt(sigma1 * sigma1 * (sigma * sigma - sigma1 * sigma1) / (sigma * sigma));
      sigma_down = std::sqrt(sigma1 * sigma1 - sigma_up * sigma_up);
    }
    torch::Tensor scaled = x / a + (sigma_down - sigma) * eps;  // x/a = x0 + sigma eps moves along eps
    if (sigma_up > 0) scaled = scaled + sigma_up * noise();
    return a1 * scaled;
  }
  if (k == "dpmpp_2m") {
    if (i == 0) previous_x0_ = torch::Tensor();
    if (t_next == -1) {  // lambda' = +inf: the first-order update is exactly x0^
      previous_x0_ = torch::Tensor();
      return x0;
    }
    const double lambda = std::log(a / s), lambda1 = std::log(a1 / s1), h = lambda1 - lambda;
    torch::Tensor d = x0;
    // diffusers' lower_order_final: with few steps the last interior step is first order too, since
    // the grid's lambda gaps grow fast near t = 0 and the two-point extrapolation overshoots there
    const bool lower_order_final = timesteps_.size() < 15 && i + 2 == timesteps_.size();
    if (previous_x0_.defined() && !lower_order_final) {
      const double r = previous_h_ / h;
      d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0_;
    }
    previous_x0_ = x0;
    previous_h_ = h;
    return (s1 / s) * x - a1 * std::expm1(-h) * d;
  }
  throw ConfigError("sampler: unknown kind \"" + k + "\"");
}

}  // namespace ef
