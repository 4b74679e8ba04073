// dpmpp_2m: DPM-Solver++(2M) (Lu et al. 2022) in lambda = log(a/s), h = lambda' - lambda, r = h_prev / h:
//   D = (1 + 1/(2r)) x0^_i - 1/(2r) x0^_{i-1}   (D = x0^ on the first step and the last, and with under 15
//                                                 steps also the one before the last: diffusers' lower_order_final)
//   x_t' = (s'/s) x_t - a' (e^{-h} - 1) D
// A multistep rule: it keeps the previous step's x0^ and h for the next one.
#include <cmath>

#include "models/diffusion/sampler.h"

namespace ef {
namespace {

class DPMSolverPP2MRule : public SamplerRule {
 public:
  void begin_chain() override { previous_x0_ = torch::Tensor(); }

  torch::Tensor step(const SamplerStep& st) override {
    if (st.last()) {  // lambda' = +inf: the first-order update is exactly x0^
      previous_x0_ = torch::Tensor();
      return st.x0;
    }
    const double lambda = std::log(st.a / st.s), lambda1 = std::log(st.a_next / st.s_next), h = lambda1 - lambda;
    torch::Tensor d = st.x0;
    // with few steps the last interior step is first order too, since the grid's lambda gaps grow
    // fast near t = 0 and the two-point extrapolation overshoots there
    const bool lower_order_final = st.timesteps.size() < 15 && st.index + 2 == st.timesteps.size();
    if (previous_x0_.defined() && !lower_order_final) {
      const double r = previous_h_ / h;
      d = (1 + 1 / (2 * r)) * st.x0 - (1 / (2 * r)) * previous_x0_;
    }
    previous_x0_ = st.x0;
    previous_h_ = h;
    return (st.s_next / st.s) * st.x - st.a_next * std::expm1(-h) * d;
  }

 private:
  torch::Tensor previous_x0_;  // x0^ of the previous step of this chain (undefined: none)
  double previous_h_ = 0;
};

EF_REGISTER(sampler_rules(), "dpmpp_2m", [](const SamplerOptions&) { return std::make_unique<DPMSolverPP2MRule>(); },
            "DPM-Solver++(2M), second-order multistep (Lu et al. 2022); deterministic");

}  // namespace
}  // namespace ef
