// ddim: x_t' = a' x0^ + sqrt(s'^2 - sig^2) eps^ + sig z,
//       sig = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar')   (Song et al.; eta = 0: deterministic).
// Option: SamplerOptions::eta.
#include <algorithm>
#include <cmath>

#include "models/diffusion/sampler.h"

namespace ef {
namespace {

class DDIMRule : public SamplerRule {
 public:
  explicit DDIMRule(double eta) : eta_(eta) {}

  torch::Tensor step(const SamplerStep& st) override {
    const double abar = st.a * st.a, abar1 = st.a_next * st.a_next;
    const double sig = st.last() ? 0.0 : eta_ * std::sqrt((1 - abar1) / (1 - abar)) * std::sqrt(1 - abar / abar1);
    torch::Tensor out = st.a_next * st.x0 + std::sqrt(std::max(0.0, st.s_next * st.s_next - sig * sig)) * st.eps;
    return sig > 0 ? out + sig * st.noise() : out;
  }

 private:
  double eta_;
};

EF_REGISTER(sampler_rules(), "ddim", [](const SamplerOptions& o) { return std::make_unique<DDIMRule>(o.eta); },
            "DDIM (Song et al.); eta = 0 (the default) is deterministic");

}  // namespace
}  // namespace ef
