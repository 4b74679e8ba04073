// The schedules defined by a beta range, abar_t = prod_{i<=t} (1 - beta_i):
//   linear          beta_t = linspace(beta_start, beta_end, T)                 (DDPM, Ho et al.)
//   scaled_linear   beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T)^2   (Stable Diffusion)
// Options: beta_start, beta_end (Stable Diffusion's 0.00085 and 0.012 by default).
#include <cmath>

#include "models/diffusion/schedule.h"

namespace ef {
namespace {

class BetaRangeSchedule : public NoiseScheduleKind {
 public:
  BetaRangeSchedule(const Config& c, bool scaled) : scaled_(scaled) {
    start_ = c.get<double>("beta_start", start_);
    end_ = c.get<double>("beta_end", end_);
    if (!(0 < start_ && start_ < end_ && end_ < 1))
      c.invalid("beta_end", "need 0 < beta_start < beta_end < 1, got " + std::to_string(start_) + " and " + std::to_string(end_));
  }

  torch::Tensor alphas_cumprod(int64_t steps) const override {
    auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
    torch::Tensor betas = scaled_ ? torch::linspace(std::sqrt(start_), std::sqrt(end_), steps, f64).pow(2)
                                  : torch::linspace(start_, end_, steps, f64);
    return torch::cumprod(1.0 - betas, 0);
  }

 private:
  bool scaled_;
  double start_ = 0.00085, end_ = 0.012;
};

EF_REGISTER(noise_schedule_kinds(), "linear", [](const Config& c) { return std::make_unique<BetaRangeSchedule>(c, false); },
            "betas linear from beta_start to beta_end (DDPM)");
EF_REGISTER(noise_schedule_kinds(), "scaled_linear", [](const Config& c) { return std::make_unique<BetaRangeSchedule>(c, true); },
            "betas linear in sqrt(beta) from beta_start to beta_end (Stable Diffusion)");

}  // namespace
}  // namespace ef
