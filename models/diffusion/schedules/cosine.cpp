// cosine: abar(u) = cos^2(((u + 0.008) / 1.008) pi/2), beta_t = min(1 - abar((t+1)/T) / abar(t/T), 0.999),
// abar_t = prod_{i<=t} (1 - beta_i)   (Nichol & Dhariwal; diffusers "squaredcos_cap_v2"). No options.
#include <algorithm>
#include <cmath>

#include "models/diffusion/schedule.h"

namespace ef {
namespace {

class CosineSchedule : public NoiseScheduleKind {
 public:
  explicit CosineSchedule(const Config& c) {
    // not read, but a config written for a beta kind (and the resolved config of an older run) may hold them
    c.accept("beta_start");
    c.accept("beta_end");
  }

  torch::Tensor alphas_cumprod(int64_t steps) const override {
    auto abar = [](double u) {
      double c = std::cos((u + 0.008) / 1.008 * M_PI / 2);
      return c * c;
    };
    torch::Tensor betas = torch::empty({steps}, torch::TensorOptions().dtype(torch::kFloat64));
    auto b = betas.accessor<double, 1>();
    for (int64_t i = 0; i < steps; ++i) {
      double u0 = static_cast<double>(i) / static_cast<double>(steps), u1 = static_cast<double>(i + 1) / static_cast<double>(steps);
      b[i] = std::min(1.0 - abar(u1) / abar(u0), 0.999);
    }
    return torch::cumprod(1.0 - betas, 0);
  }
};

EF_REGISTER(noise_schedule_kinds(), "cosine", [](const Config& c) { return std::make_unique<CosineSchedule>(c); },
            "abar = cos^2 of the step, betas capped at 0.999 (Nichol & Dhariwal)");

}  // namespace
}  // namespace ef
