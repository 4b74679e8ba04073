// ddpm: the ancestral draw from the posterior q(x_t' | x_t, x0^) (Ho et al.), on any grid: with the
// one-step alpha = abar/abar' and beta = 1 - alpha between t' and t,
//   x_t' = sqrt(abar') beta / (1 - abar) x0^ + sqrt(alpha) (1 - abar') / (1 - abar) x_t + sqrt(var) z,
//   var = (1 - abar') / (1 - abar) beta;   the last step returns x0^.
#include <cmath>

#include "models/diffusion/sampler.h"

namespace ef {
namespace {

class DDPMRule : public SamplerRule {
 public:
  torch::Tensor step(const SamplerStep& st) override {
    if (st.last()) return st.x0;
    const double abar = st.a * st.a, abar1 = st.a_next * st.a_next;
    const double alpha_step = abar / abar1, beta_step = 1 - alpha_step;
    const double c_x0 = std::sqrt(abar1) * beta_step / (1 - abar), c_x = std::sqrt(alpha_step) * (1 - abar1) / (1 - abar);
    const double var = (1 - abar1) / (1 - abar) * beta_step;
    return c_x0 * st.x0 + c_x * st.x + std::sqrt(var) * st.noise();
  }
};

EF_REGISTER(sampler_rules(), "ddpm", [](const SamplerOptions&) { return std::make_unique<DDPMRule>(); },
            "ancestral draws from the posterior q(x_t' | x_t, x0^) (Ho et al.)");

}  // namespace
}  // namespace ef
