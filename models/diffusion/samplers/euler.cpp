// Euler on the probability-flow ODE in (sigma = s/a, x/a), where x/a = x0 + sigma eps moves along eps:
//   euler            x'/a' = x/a + (sigma' - sigma) eps^   (Karras et al.; the same map as DDIM with eta = 0)
//   euler_ancestral  Euler to sigma_down, then fresh noise of std sigma_up (k-diffusion's variant, the
//                    InstructPix2Pix default): sigma_up = sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2),
//                    sigma_down = sqrt(sigma'^2 - sigma_up^2)
#include <cmath>

#include "models/diffusion/sampler.h"

namespace ef {
namespace {

class EulerRule : public SamplerRule {
 public:
  explicit EulerRule(bool ancestral) : ancestral_(ancestral) {}

  torch::Tensor step(const SamplerStep& st) override {
    const double sigma = st.s / st.a, sigma1 = st.s_next / st.a_next;
    double sigma_down = sigma1, sigma_up = 0;
    if (ancestral_ && sigma1 > 0) {
      sigma_up = std::sqrt(sigma1 * sigma1 * (sigma * sigma - sigma1 * sigma1) / (sigma * sigma));
      sigma_down = std::sqrt(sigma1 * sigma1 - sigma_up * sigma_up);
    }
    torch::Tensor scaled = st.x / st.a + (sigma_down - sigma) * st.eps;
    if (sigma_up > 0) scaled = scaled + sigma_up * st.noise();
    return st.a_next * scaled;
  }

 private:
  bool ancestral_;
};

EF_REGISTER(sampler_rules(), "euler", [](const SamplerOptions&) { return std::make_unique<EulerRule>(false); },
            "Euler on the probability-flow ODE in sigma = s/a (Karras et al.); deterministic");
EF_REGISTER(sampler_rules(), "euler_ancestral", [](const SamplerOptions&) { return std::make_unique<EulerRule>(true); },
            "Euler to sigma_down plus fresh noise sigma_up (k-diffusion; InstructPix2Pix's sampler)");

}  // namespace
}  // namespace ef
