#pragma once
// Samplers for a trained denoiser on a discrete NoiseSchedule. Every sampler walks a decreasing
// grid of integer timesteps t_0 > t_1 > ... > t_{N-1} and finally to the clean end (t = -1,
// abar = 1); the state is always the VP variable x_t = a_t x0 + s_t eps, so a chain starts from
// plain N(0, I) noise whatever the sampler. `Sampler` owns the grid, the network output's split
// into (x0^, eps^) and the x0 clipping; the update t -> t' is a `SamplerRule` registered by name in
// `sampler_rules()`, one file each under samplers/ with its formula: ddpm, ddim, euler,
// euler_ancestral, dpmpp_2m. A method with its own sampler (LCM's multistep consistency sampler, a
// progressive-distillation student's grid) registers a rule in its own folder.
// Grid spacing (diffusers' names) for N steps of T: leading t = k floor(T/N) + offset; trailing
// t = round(T - k T/N) - 1 (reaches t = T-1); linspace t = round(linspace(T-1, 0, N)).
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/registry.h"
#include "models/diffusion/schedule.h"

namespace ef {

// The network as a sampler calls it: (x_t [B, ...], integer timestep) -> output in the schedule's
// parameterisation (epsilon, v or x0). Guidance wraps the network into one of these.
using Denoiser = std::function<torch::Tensor(const torch::Tensor& x_t, int64_t t)>;

struct SamplerOptions {
  std::string kind = "ddim";        // a name in sampler_rules(): ddpm | ddim | euler | euler_ancestral | dpmpp_2m
  int64_t steps = 20;
  std::string spacing = "trailing";  // leading | trailing | linspace
  int64_t steps_offset = 1;          // leading spacing only (Stable Diffusion's 1)
  double eta = 0.0;                  // ddim only
  double clip_x0 = 0.0;              // > 0: clamp x0 estimates to [-clip_x0, clip_x0] (static thresholding)
  Config section;                    // the `sampler` section, where a kind reads options of its own ({} when built in code)
  // sampler.{kind, steps, spacing, steps_offset, eta, clip_x0, ...the kind's own options}
  static SamplerOptions from(const Config& sampler);
};

std::vector<int64_t> inference_timesteps(int64_t train_steps, int64_t steps, const std::string& spacing, int64_t steps_offset = 1);

// What a rule is given for one update from timesteps[index] = t to t' (the next grid point, or the
// clean end t' = -1 after the last one, where a' = 1 and s' = 0).
struct SamplerStep {
  const NoiseSchedule& schedule;
  const std::vector<int64_t>& timesteps;  // the whole grid
  size_t index;
  int64_t t, t_next;
  double a, s, a_next, s_next;      // a_t, s_t, a_t', s_t'
  torch::Tensor x, output;          // x_t [B, ...] and the network output at (x_t, t), same shape
  torch::Tensor x0, eps;            // the output as estimates (x0 clipped when asked, eps kept consistent with it)
  std::optional<at::Generator> generator;
  bool last() const { return t_next == -1; }
  torch::Tensor noise() const { return at::randn(x.sizes(), generator, x.options()); }  // N(0, I) like x
};

// One sampler's update rule. One instance runs one chain at a time, so a multistep rule keeps its
// history in members (dpmpp_2m: the previous x0^).
class SamplerRule {
 public:
  virtual ~SamplerRule() = default;
  // The decreasing grid t_0 > ... > t_{N-1} for `options` (by default inference_timesteps of its
  // steps/spacing); a rule with its own grid (a distilled student's) overrides it.
  virtual std::vector<int64_t> timesteps(const NoiseSchedule& schedule, const SamplerOptions& options) const;
  // A new chain starts (before the update of index 0): drop the previous chain's history.
  virtual void begin_chain() {}
  // x_t -> x_t' [B, ...]
  virtual torch::Tensor step(const SamplerStep& step) = 0;
};

using SamplerRuleRegistry = Registry<SamplerRule, const SamplerOptions&>;
SamplerRuleRegistry& sampler_rules();
std::vector<std::string> sampler_kinds();  // sampler_rules().names()

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
  std::unique_ptr<SamplerRule> rule_;
  std::vector<int64_t> timesteps_;
};

}  // namespace ef
