// Every registered noise schedule kind and sampler kind against the invariants all of them must
// keep (tiny-cuda-nn's habit): a new kind is tested by registering it. The formulas of the built-in
// kinds are checked one by one in test_diffusion_math.cpp.
#include <catch2/catch.hpp>

#include <cmath>

#include "models/diffusion/sampler.h"
#include "models/diffusion/schedule.h"

using namespace ef;
using Catch::Matchers::Contains;

namespace {

// Data x0 ~ N(mu, c^2) per element: the exact posterior mean E[x0 | x_t] = mu + a c^2/(a^2 c^2 + s^2) (x_t - a mu),
// returned in the schedule's parameterisation.
struct Gaussian {
  double mu, c;
  const NoiseSchedule& schedule;
  torch::Tensor operator()(const torch::Tensor& x, int64_t t) const {
    const double a = schedule.alpha(t), s = schedule.sigma(t);
    torch::Tensor x0 = mu + a * c * c / (a * a * c * c + s * s) * (x - a * mu), eps = (x - a * x0) / s;
    switch (schedule.prediction()) {
      case Prediction::Epsilon: return eps;
      case Prediction::Sample: return x0;
      case Prediction::V: return a * eps - s * x0;
    }
    return eps;
  }
};

// A kind registered from outside models/diffusion, as a distillation method adds its sampler: the
// first-order x0 rule x_t' = a' x0^ + s' eps^, which keeps per-chain state (the index it expects next)
// to check that the Sampler starts every chain and calls the steps in order, and reads an option of
// its own from the sampler section.
class OrderCheckingRule : public SamplerRule {
 public:
  explicit OrderCheckingRule(const SamplerOptions& o) : strict_(o.section.get<bool>("strict", true)) {}
  void begin_chain() override { expected_ = 0; }
  torch::Tensor step(const SamplerStep& st) override {
    if (strict_ && st.index != expected_)
      throw std::logic_error("step " + std::to_string(st.index) + " where " + std::to_string(expected_) + " was due");
    expected_ = st.index + 1;
    return st.a_next * st.x0 + st.s_next * st.eps;
  }

 private:
  bool strict_;
  size_t expected_ = 1000000;  // nothing is due before begin_chain()
};
EF_REGISTER(sampler_rules(), "test_x0_in_order", [](const SamplerOptions& o) { return std::make_unique<OrderCheckingRule>(o); },
            "(tests) the first-order x0 rule, checking the order of its steps");

// Evenly spaced N(0, 1) quantiles, standardised to mean 0 and std 1 exactly: a deterministic sampler's
// output moments then carry no Monte Carlo error.
torch::Tensor normal_quantiles(int64_t n) {
  torch::Tensor z = torch::special::ndtri((torch::arange(n, torch::kFloat64) + 0.5) / static_cast<double>(n));
  return (z - z.mean()) / z.std();
}

// Whether the kind's chains ignore the generator (two seeds, one input, a 4-step grid).
bool deterministic(const NoiseSchedule& schedule, const std::string& kind) {
  SamplerOptions o;
  o.kind = kind;
  o.steps = 4;
  Gaussian data{0.5, 0.7, schedule};
  torch::Tensor noise = torch::linspace(-2, 2, 16, torch::kFloat64);
  Sampler sampler(schedule, o);
  torch::Tensor a = sampler.sample(data, noise, at::make_generator<at::CPUGeneratorImpl>(1));
  torch::Tensor b = sampler.sample(data, noise, at::make_generator<at::CPUGeneratorImpl>(2));
  return torch::equal(a, b);
}

}  // namespace

TEST_CASE("every noise schedule kind: abar decreases within the unit interval (0 excluded), a^2 + s^2 = 1", "[diffusion][schedule][registry]") {
  REQUIRE(noise_schedule_kinds().names().size() >= 3);
  for (const auto& kind : noise_schedule_kinds().names()) {
    for (int64_t T : {2, 10, 1000}) {
      INFO("schedule " << kind << ", T = " << T);
      // from its config section with the kind's defaults: everything it reads is known
      Config root = Config::from_json({{"schedule", {{"kind", kind}, {"steps", T}}}});
      NoiseSchedule s = NoiseSchedule::from(root.section("schedule"));
      REQUIRE_NOTHROW(root.reject_unknown_keys());
      CHECK(s.kind() == kind);
      REQUIRE(s.steps() == T);
      const torch::Tensor& abar = s.alphas_cumprod();
      CHECK(abar.scalar_type() == torch::kFloat64);
      CHECK(abar.dim() == 1);
      CHECK(abar.gt(0).all().item<bool>());
      CHECK(abar.le(1).all().item<bool>());
      CHECK((abar.slice(0, 1) < abar.slice(0, 0, T - 1)).all().item<bool>());  // strictly decreasing
      for (int64_t t = -1; t < T; t += std::max<int64_t>(1, T / 7)) {
        CHECK(s.alpha(t) * s.alpha(t) + s.sigma(t) * s.sigma(t) == Approx(1.0).margin(1e-12));
        CHECK(s.abar(t) == (t == -1 ? 1.0 : abar[t].item<double>()));
      }
      // per-sample coefficients agree with the scalars
      torch::Tensor t = torch::tensor({0L, T - 1});
      torch::Tensor like = torch::zeros({2, 3}, torch::kFloat64);
      CHECK(s.alpha(t, like)[1][0].item<double>() == Approx(s.alpha(T - 1)).epsilon(1e-12));
      CHECK(s.sigma(t, like)[0][0].item<double>() == Approx(s.sigma(0)).epsilon(1e-12));
    }
  }
}

TEST_CASE("noise schedule kinds: unknown names suggest a registered one, at the key's path", "[diffusion][schedule][registry]") {
  Config root = Config::from_json({{"model", {{"schedule", {{"kind", "cosin"}}}}}}, "cfg.json");
  REQUIRE_THROWS_WITH(NoiseSchedule::from(root.section("model").section("schedule")),
                      Contains("cfg.json: model.schedule.kind: unknown noise schedule 'cosin' (did you mean 'cosine'?)"));
  REQUIRE_THROWS_WITH(NoiseSchedule("scaled_linear", 1000, 0.02, 0.01), Contains("beta_end: need 0 < beta_start < beta_end < 1"));
  // cosine has no beta range, but configs written for the beta kinds still load
  Config cosine = Config::from_json({{"kind", "cosine"}, {"beta_start", 0.0001}, {"beta_end", 0.02}});
  NoiseSchedule::from(cosine);
  REQUIRE_NOTHROW(cosine.reject_unknown_keys());
}

TEST_CASE("sampler kinds: the registry's names, unknown ones suggest a registered one", "[diffusion][sampler][registry]") {
  for (const char* kind : {"ddpm", "ddim", "euler", "euler_ancestral", "dpmpp_2m", "test_x0_in_order"}) CHECK(sampler_rules().contains(kind));
  CHECK(sampler_kinds() == sampler_rules().names());
  Config root = Config::from_json({{"eval", {{"sampler", {{"kind", "dimm"}}}}}}, "cfg.json");
  REQUIRE_THROWS_WITH(SamplerOptions::from(root.section("eval").section("sampler")),
                      Contains("cfg.json: eval.sampler.kind: unknown sampler 'dimm' (did you mean 'ddim'?)"));
  // a kind reads its own options from the section when the options are parsed
  Config own = Config::from_json({{"kind", "test_x0_in_order"}, {"strict", "yes"}}, "cfg.json");
  REQUIRE_THROWS_WITH(SamplerOptions::from(own), Contains("strict: expected boolean"));
  Config ok = Config::from_json({{"kind", "test_x0_in_order"}, {"strict", false}});
  CHECK(SamplerOptions::from(ok).section.get<bool>("strict", true) == false);
  REQUIRE_NOTHROW(ok.reject_unknown_keys());
}

TEST_CASE("every sampler kind runs on 1-step and multi-step grids with finite outputs", "[diffusion][sampler][registry]") {
  for (auto p : {Prediction::Epsilon, Prediction::V, Prediction::Sample}) {
    NoiseSchedule s("scaled_linear", 1000, 0.00085, 0.012, p);
    Gaussian data{0.5, 0.7, s};
    for (const auto& kind : sampler_kinds()) {
      for (const std::string spacing : {"leading", "trailing", "linspace"}) {
        for (int64_t steps : {1, 2, 7}) {
          INFO(kind << ", " << prediction_name(p) << ", " << spacing << ", " << steps << " steps");
          SamplerOptions o;
          o.kind = kind;
          o.steps = steps;
          o.spacing = spacing;
          Sampler sampler(s, o);
          REQUIRE(sampler.timesteps().size() == static_cast<size_t>(steps));
          torch::Tensor noise = torch::randn({2, 3, 4, 4}, at::make_generator<at::CPUGeneratorImpl>(7), torch::kFloat64);
          torch::Tensor x = sampler.sample(data, noise, at::make_generator<at::CPUGeneratorImpl>(3));
          CHECK(x.sizes() == noise.sizes());
          CHECK(x.scalar_type() == torch::kFloat64);
          CHECK(torch::isfinite(x).all().item<bool>());
          // the same Sampler runs a second chain from scratch: a multistep rule drops the first chain's history
          torch::Tensor again = sampler.sample(data, noise, at::make_generator<at::CPUGeneratorImpl>(3));
          CHECK(torch::equal(x, again));
          // float32 works too
          torch::Tensor x32 = sampler.sample(data, noise.to(torch::kFloat32), at::make_generator<at::CPUGeneratorImpl>(3));
          CHECK(x32.scalar_type() == torch::kFloat32);
          CHECK(torch::isfinite(x32).all().item<bool>());
        }
      }
    }
  }
}

// The exact denoiser of Gaussian data makes a deterministic sampler a discretised probability-flow ODE
// that carries the exact marginal at the first grid point to the data distribution: its error in
// mean and standard deviation shrinks with the number of steps (first-order rules as 1/N, the gaps
// in log-SNR near t = 0 dominating), down to what the final denoising step drops (the posterior
// variance at t = 0, 0.1 % of the std on SD's schedule).
TEST_CASE("every deterministic sampler kind reaches a Gaussian data distribution as steps grow", "[diffusion][sampler][registry]") {
  NoiseSchedule s("scaled_linear", 1000, 0.00085, 0.012, Prediction::Epsilon);
  const double mu = 0.5, c = 0.7;
  Gaussian data{mu, c, s};
  torch::Tensor z = normal_quantiles(4096);
  int tested = 0;
  for (const auto& kind : sampler_kinds()) {
    if (!deterministic(s, kind)) continue;
    ++tested;
    double previous = 1e9;
    for (int64_t steps : {5, 25, 250}) {
      SamplerOptions o;
      o.kind = kind;
      o.steps = steps;
      o.spacing = "linspace";  // ends at t = 0
      Sampler sampler(s, o);
      const int64_t t0 = sampler.timesteps()[0];
      const double a0 = s.alpha(t0), s0 = s.sigma(t0);
      torch::Tensor x = sampler.sample(data, a0 * mu + std::sqrt(a0 * a0 * c * c + s0 * s0) * z);
      const double mean = x.mean().item<double>(), sd = x.std().item<double>();
      const double error = std::max(std::abs(mean - mu), std::abs(sd / c - 1));
      INFO(kind << ", " << steps << " steps: mean " << mean << " std " << sd << " (error " << error << ")");
      CHECK(error < 0.5 * previous);  // converging: 5x and 10x the steps at least halve the error
      previous = error;
      if (steps == 250) {  // first-order rules (ddim, euler) are at 0.85 % in std there, dpmpp_2m at 0.12 %
        CHECK(std::abs(mean - mu) < 1e-3);
        CHECK(std::abs(sd / c - 1) < 1.5e-2);
      }
    }
  }
  CHECK(tested >= 4);  // ddim (eta = 0), euler, dpmpp_2m and the test kind
}
