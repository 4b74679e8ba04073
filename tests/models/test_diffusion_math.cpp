// Noise schedules, parameterisations, samplers and guidance against their closed forms.
#include <catch2/catch.hpp>

#include <cmath>

#include "models/diffusion/guidance.h"
#include "models/diffusion/sampler.h"
#include "models/diffusion/schedule.h"

using namespace ef;
using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;

TEST_CASE("schedules match their defining formulas", "[diffusion][schedule]") {
  const int64_t T = 1000;
  SECTION("linear and scaled_linear: abar is the running product of 1 - beta") {
    for (std::string kind : {"linear", "scaled_linear"}) {
      NoiseSchedule s(kind, T, 0.0001, 0.02);
      double prod = 1;
      for (int64_t t = 0; t < T; ++t) {
        double u = static_cast<double>(t) / (T - 1);
        double beta = kind == "linear" ? 0.0001 + u * (0.02 - 0.0001)
                                       : std::pow(std::sqrt(0.0001) + u * (std::sqrt(0.02) - std::sqrt(0.0001)), 2);
        prod *= 1 - beta;
        REQUIRE_THAT(s.abar(t), WithinRel(prod, 1e-9));
      }
    }
  }
  SECTION("cosine: abar_t = f((t+1)/T) / f(0) where the beta cap is not reached") {
    NoiseSchedule s("cosine", T);
    auto f = [](double u) { return std::pow(std::cos((u + 0.008) / 1.008 * M_PI / 2), 2); };
    for (int64_t t = 0; t < 900; t += 37) REQUIRE_THAT(s.abar(t), WithinRel(f((t + 1.0) / T) / f(0), 1e-9));
  }
  SECTION("a^2 + s^2 = 1, abar decreases, t = -1 is clean") {
    NoiseSchedule s("scaled_linear");
    for (int64_t t = 0; t < T; t += 111) REQUIRE_THAT(s.alpha(t) * s.alpha(t) + s.sigma(t) * s.sigma(t), WithinAbs(1.0, 1e-12));
    REQUIRE(s.abar(10) > s.abar(500));
    REQUIRE(s.abar(-1) == 1.0);
    REQUIRE_THROWS(s.abar(T));
  }
  SECTION("unknown kinds and predictions are errors naming them") {
    REQUIRE_THROWS_WITH(NoiseSchedule("quadratic"), Catch::Matchers::Contains("quadratic"));
    REQUIRE_THROWS_WITH(parse_prediction("noise", "schedule.prediction"), Catch::Matchers::Contains("noise"));
  }
}

TEST_CASE("every parameterisation round-trips through its target", "[diffusion][schedule]") {
  torch::manual_seed(0);
  torch::Tensor x0 = torch::randn({4, 3, 5, 5}, torch::kFloat64), eps = torch::randn_like(x0);
  torch::Tensor t = torch::tensor({0, 250, 700, 999});
  for (auto p : {Prediction::Epsilon, Prediction::V, Prediction::Sample}) {
    NoiseSchedule s("scaled_linear", 1000, 0.00085, 0.012, p);
    torch::Tensor xt = s.add_noise(x0, eps, t);
    auto [x0_hat, eps_hat] = s.split(s.target(x0, eps, t), xt, s.alpha(t, xt), s.sigma(t, xt));
    REQUIRE(torch::allclose(x0_hat, x0, 1e-6, 1e-6));
    REQUIRE(torch::allclose(eps_hat, eps, 1e-6, 1e-6));
  }
  // v = a eps - s x0 by definition
  NoiseSchedule v("linear", 1000, 0.0001, 0.02, Prediction::V);
  REQUIRE(torch::allclose(v.target(x0, eps, t), v.alpha(t, x0) * eps - v.sigma(t, x0) * x0));
}

TEST_CASE("inference timestep grids follow diffusers' spacings", "[diffusion][sampler]") {
  REQUIRE(inference_timesteps(1000, 4, "leading", 1) == std::vector<int64_t>{751, 501, 251, 1});
  REQUIRE(inference_timesteps(1000, 4, "trailing") == std::vector<int64_t>{999, 749, 499, 249});
  REQUIRE(inference_timesteps(1000, 4, "linspace") == std::vector<int64_t>{999, 666, 333, 0});
  REQUIRE_THROWS(inference_timesteps(1000, 0, "trailing"));
}

namespace {

// Data x0 ~ N(mu, c^2) per element: the exact posterior mean E[x0 | x_t] = mu + a c^2/(a^2 c^2 + s^2) (x_t - a mu),
// returned in the schedule's parameterisation. c = 0 is a point mass at mu.
struct GaussianData {
  double mu, c;
  const NoiseSchedule& schedule;
  torch::Tensor x0_hat(const torch::Tensor& x, int64_t t) const {
    double a = schedule.alpha(t), s = schedule.sigma(t);
    return mu + a * c * c / (a * a * c * c + s * s) * (x - a * mu);
  }
  torch::Tensor operator()(const torch::Tensor& x, int64_t t) const {
    double a = schedule.alpha(t), s = schedule.sigma(t);
    torch::Tensor x0 = x0_hat(x, t), eps = (x - a * x0) / s;
    switch (schedule.prediction()) {
      case Prediction::Epsilon: return eps;
      case Prediction::Sample: return x0;
      case Prediction::V: return a * eps - s * x0;
    }
    return eps;
  }
};

SamplerOptions sampler_options(const std::string& kind, int64_t steps) {
  SamplerOptions o;
  o.kind = kind;
  o.steps = steps;
  return o;
}

}  // namespace

TEST_CASE("every sampler lands on a point mass exactly, in every parameterisation", "[diffusion][sampler]") {
  for (auto p : {Prediction::Epsilon, Prediction::V, Prediction::Sample}) {
    NoiseSchedule s("scaled_linear", 1000, 0.00085, 0.012, p);
    GaussianData point{0.3, 0.0, s};
    for (const auto& kind : sampler_kinds()) {
      Sampler sampler(s, sampler_options(kind, 7));
      auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
      torch::Tensor x = sampler.sample(point, torch::randn({2, 4, 3, 3}, torch::kFloat64), gen);
      INFO(kind << " " << prediction_name(p));
      REQUIRE(torch::allclose(x, torch::full_like(x, 0.3), 1e-6, 1e-6));
    }
  }
}

TEST_CASE("one sampler step equals its closed form on a Gaussian posterior", "[diffusion][sampler]") {
  NoiseSchedule s("scaled_linear", 1000, 0.00085, 0.012, Prediction::V);
  GaussianData data{0.5, 0.7, s};
  torch::manual_seed(1);
  torch::Tensor x = torch::randn({3, 2, 4, 4}, torch::kFloat64);
  const int64_t t = 749, t1 = 499;  // the trailing grid of 4 steps
  const double a = s.alpha(t), sg = s.sigma(t), a1 = s.alpha(t1), s1 = s.sigma(t1);
  torch::Tensor x0 = data.x0_hat(x, t), eps = (x - a * x0) / sg;
  // the chain starts at 999; take one step to reach 749 deterministically, then compare the step 749 -> 499
  SECTION("ddim with eta = 0 and euler") {
    SamplerOptions o = sampler_options("ddim", 4);
    Sampler ddim(s, o);
    torch::Tensor y = ddim.step(1, x, data(x, t));
    REQUIRE(torch::allclose(y, a1 * x0 + s1 * eps, 1e-9, 1e-9));
    Sampler euler(s, sampler_options("euler", 4));
    const double sigma = sg / a, sigma1 = s1 / a1;
    torch::Tensor by_ode = a1 * (x / a + (sigma1 - sigma) * eps);
    REQUIRE(torch::allclose(euler.step(1, x, data(x, t)), by_ode, 1e-9, 1e-9));
    REQUIRE(torch::allclose(by_ode, y, 1e-9, 1e-9));  // DDIM is Euler in (sigma, x/a)
  }
  SECTION("ddpm draws from the posterior q(x_t' | x_t, x0)") {
    SamplerOptions o = sampler_options("ddpm", 4);
    Sampler ddpm(s, o);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    torch::Tensor y = ddpm.step(1, x, data(x, t), gen);
    auto gen2 = at::make_generator<at::CPUGeneratorImpl>(11);
    torch::Tensor z = at::randn(x.sizes(), gen2, x.options());
    double abar = a * a, abar1 = a1 * a1, beta = 1 - abar / abar1;
    torch::Tensor mean = std::sqrt(abar1) * beta / (1 - abar) * x0 + std::sqrt(1 - beta) * (1 - abar1) / (1 - abar) * x;
    double var = (1 - abar1) / (1 - abar) * beta;
    REQUIRE(torch::allclose(y, mean + std::sqrt(var) * z, 1e-9, 1e-9));
  }
  SECTION("ddim with eta = 1") {
    SamplerOptions o = sampler_options("ddim", 4);
    o.eta = 1;
    Sampler ddim(s, o);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
    torch::Tensor y = ddim.step(1, x, data(x, t), gen);
    auto gen2 = at::make_generator<at::CPUGeneratorImpl>(5);
    torch::Tensor z = at::randn(x.sizes(), gen2, x.options());
    double abar = a * a, abar1 = a1 * a1;
    double sig = std::sqrt((1 - abar1) / (1 - abar)) * std::sqrt(1 - abar / abar1);
    REQUIRE(torch::allclose(y, a1 * x0 + std::sqrt(s1 * s1 - sig * sig) * eps + sig * z, 1e-9, 1e-9));
  }
  SECTION("dpmpp_2m: first order, then the second-order multistep update") {
    Sampler dpm(s, sampler_options("dpmpp_2m", 4));
    torch::Tensor y1 = dpm.step(0, x, data(x, 999));
    // first step 999 -> 749 is first order: x' = (s'/s) x - a' (e^{-h} - 1) x0
    double l0 = std::log(s.alpha(999) / s.sigma(999)), l1 = std::log(a / sg);
    torch::Tensor first = (sg / s.sigma(999)) * x - a * std::expm1(-(l1 - l0)) * data.x0_hat(x, 999);
    REQUIRE(torch::allclose(y1, first, 1e-9, 1e-9));
    torch::Tensor y2 = dpm.step(1, y1, data(y1, t));
    double l2 = std::log(a1 / s1), h = l2 - l1, r = (l1 - l0) / h;
    torch::Tensor d = (1 + 1 / (2 * r)) * data.x0_hat(y1, t) - 1 / (2 * r) * data.x0_hat(x, 999);
    REQUIRE(torch::allclose(y2, (s1 / sg) * y1 - a1 * std::expm1(-h) * d, 1e-9, 1e-9));
  }
  SECTION("euler_ancestral splits the step into sigma_down and fresh noise sigma_up") {
    Sampler ea(s, sampler_options("euler_ancestral", 4));
    auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
    torch::Tensor y = ea.step(1, x, data(x, t), gen);
    auto gen2 = at::make_generator<at::CPUGeneratorImpl>(9);
    torch::Tensor z = at::randn(x.sizes(), gen2, x.options());
    double sigma = sg / a, sigma1 = s1 / a1;
    double up = std::sqrt(sigma1 * sigma1 * (sigma * sigma - sigma1 * sigma1) / (sigma * sigma)), down = std::sqrt(sigma1 * sigma1 - up * up);
    REQUIRE(torch::allclose(y, a1 * (x / a + (down - sigma) * eps + up * z), 1e-9, 1e-9));
  }
}

TEST_CASE("samplers reproduce a Gaussian data distribution", "[diffusion][sampler]") {
  NoiseSchedule s("scaled_linear", 1000, 0.00085, 0.012, Prediction::Epsilon);
  GaussianData data{0.5, 0.7, s};
  // The last update outputs the denoised mean at the last grid point, which drops the variance left there: grids
  // ending at t = 0 or 1 (linspace, leading) keep that negligible at any step count.
  struct Case {
    std::string kind, spacing;
    int64_t steps;
  };
  for (const auto& c : std::vector<Case>{{"ddpm", "trailing", 200}, {"ddim", "linspace", 100}, {"euler_ancestral", "leading", 500}, {"dpmpp_2m", "trailing", 50}}) {
    SamplerOptions o = sampler_options(c.kind, c.steps);
    o.spacing = c.spacing;
    Sampler sampler(s, o);
    const std::string& kind = c.kind;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
    // x at the first grid point has the exact marginal N(a mu, a^2 c^2 + s^2): with SD's schedule a_999 is not 0,
    // and starting from N(0, 1) would shift the result by the schedule's own error, not the sampler's
    const int64_t t0 = sampler.timesteps()[0];
    const double a0 = s.alpha(t0), s0 = s.sigma(t0);
    torch::Tensor noise = a0 * 0.5 + std::sqrt(a0 * a0 * 0.49 + s0 * s0) * at::randn({40000}, gen, torch::kFloat64);
    torch::Tensor x = sampler.sample(data, noise, gen);
    INFO(kind << " mean " << x.mean().item<double>() << " std " << x.std().item<double>());
    REQUIRE_THAT(x.mean().item<double>(), WithinAbs(0.5, 0.02));
    REQUIRE_THAT(x.std().item<double>(), WithinRel(0.7, 0.03));
  }
}

TEST_CASE("guidance formulas", "[diffusion][guidance]") {
  torch::manual_seed(2);
  torch::Tensor full = torch::randn({2, 4}), image = torch::randn({2, 4}), uncond = torch::randn({2, 4});
  REQUIRE(torch::allclose(classifier_free_guidance(uncond, full, 1.0), full));
  REQUIRE(torch::allclose(classifier_free_guidance(uncond, full, 0.0), uncond));
  REQUIRE(torch::allclose(classifier_free_guidance(uncond, full, 7.5), uncond + 7.5 * (full - uncond)));
  // s_I = s_T = 1: the fully conditioned prediction; s_T = 0: image guidance only
  REQUIRE(torch::allclose(dual_guidance(full, image, uncond, 1.0, 1.0), full, 1e-6, 1e-6));
  REQUIRE(torch::allclose(dual_guidance(full, image, uncond, 1.5, 0.0), uncond + 1.5 * (image - uncond), 1e-6, 1e-6));
  REQUIRE(torch::allclose(dual_guidance(full, image, uncond, 1.5, 7.5), uncond + 1.5 * (image - uncond) + 7.5 * (full - image), 1e-6, 1e-6));
}
