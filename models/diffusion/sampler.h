#pragma once
// Samplers for a trained denoiser on a discrete NoiseSchedule. Every sampler walks a decreasing
// grid of integer timesteps t_0 > t_1 > ... > t_{N-1} and finally to the clean end (t = -1,
// abar = 1); the state is always the VP variable x_t = a_t x0 + s_t eps, so a chain starts from
// plain N(0, I) noise whatever the sampler. With (x0^, eps^) the network's estimates at t, step t -> t':
//   ddpm             ancestral draw from the posterior q(x_t' | x_t, x0^) (Ho et al.; any grid)
//   ddim             x_t' = a' x0^ + sqrt(s'^2 - sig^2) eps^ + sig z,
//                    sig = eta sqrt((1-abar')/(1-abar)) sqrt(1 - abar/abar')   (Song et al.; eta=0: deterministic)
//   euler            Euler on the probability-flow ODE in (sigma = s/a, x/a): x'/a' = x/a + (sigma' - sigma) eps^
//                    (Karras et al.; the same map as DDIM with eta = 0 on the same grid, and tested as such)
//   euler_ancestral  Euler to sigma_down, then fresh noise of std sigma_up (k-diffusion's variant, the
//                    InstructPix2Pix default): sigma_up = sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)
//   dpmpp_2m         DPM-Solver++(2M) in lambda = log(a/s), h = lambda' - lambda, r = h_prev / h:
//                    D = (1 + 1/(2r)) x0^_i - 1/(2r) x0^_{i-1} (first step and the last, and with under 15
//                    steps also the one before the last, as diffusers' lower_order_final: D = x0^),
//                    x_t' = (s'/s) x_t - a' (e^{-h} - 1) D                           (Lu et al. 2022)
// Grid spacing (diffusers' names) for N steps of T: leading t = k floor(T/N) + offset; trailing
// t = round(T - k T/N) - 1 (reaches t = T-1); linspace t = round(linspace(T-1, 0, N)).
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "models/diffusion/schedule.h"

namespace ef {

// The network as a sampler calls it: (x_t [B, ...], integer timestep) -> output in the schedule's
// parameterisation (epsilon, v or x0). Guidance wraps the network into one of these.
using Denoiser = std::function<torch::Tensor(const torch::Tensor& x_t, int64_t t)>;

struct SamplerOptions {
  std::string kind = "ddim";        // ddpm | ddim | euler | euler_ancestral | dpmpp_2m
  int64_t steps = 20;
  std::string spacing = "trailing";  // leading | trailing | linspace
  int64_t steps_offset = 1;          // leading spacing only (Stable Diffusion's 1)
  double eta = 0.0;                  // ddim only
  double clip_x0 = 0.0;              // > 0: clamp x0 estimates to [-clip_x0, clip_x0] (static thresholding)
  // sampler.{kind, steps, spacing, steps_offset, eta, clip_x0}
  static SamplerOptions from(const Config& sampler);
};

std::vector<std::string> sampler_kinds();
std::vector<int64_t> inference_timesteps(int64_t train_steps, int64_t steps, const std::string& spacing, int64_t steps_offset = 1);

class Sampler {
 public:
  Sampler(const NoiseSchedule& schedule, SamplerOptions options);

  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  const SamplerOptions& options() const { return opt_; }
  // The whole chain from `noise` (N(0, I), read as x at timesteps()[0]) to x0.
  torch::Tensor sample(const Denoiser& denoiser, const torch::Tensor& noise, std::optional<at::Generator> generator = std::nullopt);
  // One update from timesteps()[i] to the next grid point (the clean end after the last), given the
  // network output at (x, timesteps()[i]). Multistep samplers keep their history between calls:
  // call with i = 0, 1, ... in order (i = 0 starts a new chain).
  torch::Tensor step(size_t i, const torch::Tensor& x, const torch::Tensor& output, std::optional<at::Generator> generator = std::nullopt);

 private:
  const NoiseSchedule& schedule_;
  SamplerOptions opt_;
  std::vector<int64_t> timesteps_;
  torch::Tensor previous_x0_;  // dpmpp_2m history
  double previous_h_ = 0;
};

}  // namespace ef
