#include <catch2/catch.hpp>

#include <cmath>

#include "core/optim.h"

TEST_CASE("optim: schedules follow their formulas", "[optim]") {
  ef::Schedule s;
  s.kind = "cosine", s.warmup = 10, s.total = 110, s.min_ratio = 0.0;
  CHECK(s.multiplier(0) == Approx(0.1));
  CHECK(s.multiplier(9) == Approx(1.0));
  CHECK(s.multiplier(10) == Approx(1.0));
  CHECK(s.multiplier(60) == Approx(0.5));
  CHECK(s.multiplier(110) == Approx(0.0).margin(1e-12));
  s.kind = "linear";
  CHECK(s.multiplier(35) == Approx(0.75));
  s.kind = "constant";
  CHECK(s.multiplier(100) == 1.0);
}

TEST_CASE("optim: parameter groups / no decay on biases / scheduled lr applied", "[optim]") {
  torch::nn::Linear lin(4, 3);
  auto groups = ef::decay_groups(*lin);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].params.size() == 1);  // weight
  CHECK(groups[1].weight_decay == false);
  auto opt = ef::make_optimizer(ef::Config::from_json({{"kind", "adamw"}, {"lr", 0.1}, {"weight_decay", 0.5},
                                                       {"schedule", {{"kind", "linear"}}}}),
                                groups, 10);
  auto& pg = opt->get().param_groups();
  CHECK(static_cast<torch::optim::AdamWOptions&>(pg[0].options()).weight_decay() == 0.5);
  CHECK(static_cast<torch::optim::AdamWOptions&>(pg[1].options()).weight_decay() == 0.0);
  opt->set_step(5);
  CHECK(opt->lr() == Approx(0.05));
}

TEST_CASE("optim: gradient clipping bounds the global norm", "[optim]") {
  torch::Tensor a = torch::zeros({3}, torch::requires_grad()), b = torch::zeros({4}, torch::requires_grad());
  a.mutable_grad() = torch::full({3}, 3.0);
  b.mutable_grad() = torch::full({4}, 4.0);
  double before = ef::clip_grad_norm({a, b}, 1.0);
  CHECK(before == Approx(std::sqrt(27.0 + 64.0)));
  double after = std::sqrt(a.grad().square().sum().item<double>() + b.grad().square().sum().item<double>());
  CHECK(after == Approx(1.0).epsilon(1e-4));
}
