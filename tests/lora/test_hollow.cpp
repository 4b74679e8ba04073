// Hollowed Net (lora/hollow.h): the unit linearisation, the plan's cached skips and fractions, the
// hollowed network fed with the full UNet's boundary reproducing the full UNet bit for bit at every
// depth, loading the full UNet's weight file, adapters transferred back to the full UNet, and the
// layer-significance ranking.
#include <catch2/catch.hpp>

#include "core/safetensors.h"
#include "lora/hollow.h"
#include "lora/inject.h"
#include "models/diffusion/unet.h"
#include "tests/lora/adapter_configs.h"
#include "tests/test_support.h"

using Catch::Matchers::Contains;
using ef::lora::HollowedUNet;
using ef::lora::HollowPlan;
using ef::lora::test::cfg;

namespace {

// Three levels, two resnets per down block, attention on the inner two: 8 encoder units, 11 decoder.
ef::UNetOptions three_levels() {
  ef::UNetOptions o;
  o.block_out_channels = {8, 16, 16};
  o.cross_attention = {false, true, true};
  o.layers_per_block = 2;
  o.cross_attention_dim = 12;
  o.norm_num_groups = 4;
  return o;
}

ef::UNet2DCondition randomised(const ef::UNetOptions& o, uint64_t seed) {
  torch::manual_seed(static_cast<int64_t>(seed));
  ef::UNet2DCondition unet(o);
  torch::NoGradGuard no_grad;
  for (auto& p : unet->parameters()) p.normal_(0.0, 0.2);  // zero-initialised outputs would hide a wrong path
  return unet;
}

}  // namespace

TEST_CASE("hollow: units are linearised in pass order with the skips SD's up blocks take newest first", "[lora][hollow]") {
  const ef::UNetOptions o = three_levels();
  HollowPlan p(o, 0);
  REQUIRE(p.encoder_units() == 8);  // 2 resnets + downsampler, twice, then 2 resnets
  REQUIRE(p.decoder_units() == 11);  // 3 resnets + upsampler, twice, then 3 resnets = E + levels
  CHECK(p.encoder()[2].name() == "down_blocks.0.downsamplers.0");
  CHECK(p.decoder()[0].name() == "up_blocks.0.resnets.0");
  CHECK(p.decoder()[0].skip == 8);   // the innermost decoder resnet takes the innermost skip
  CHECK(p.decoder()[3].resample);
  CHECK(p.decoder()[3].skip == -1);
  CHECK(p.decoder()[10].skip == 0);  // the outermost takes conv_in's output
  CHECK(p.cached_skips().empty());
  // m = 4 leaves out up_blocks.0.upsamplers.0 among the decoder units, which takes no skip, so
  // decoder unit 4 takes skip 5, the output of down_blocks.1.resnets.1, a left-out encoder unit.
  HollowPlan p4(o, 4);
  CHECK(p4.cached_skips() == std::vector<int64_t>{5});
  CHECK(p4.leaves_out("mid_block.resnets.0.conv1.weight"));
  CHECK(p4.leaves_out("down_blocks.1.resnets.1.conv1.weight"));
  CHECK_FALSE(p4.leaves_out("down_blocks.1.resnets.0.conv1.weight"));
  CHECK(p4.leaves_out("up_blocks.0.upsamplers.0.conv.weight"));
  CHECK_FALSE(p4.leaves_out("up_blocks.1.resnets.0.conv1.weight"));
  CHECK(p4.unit_fraction() == Approx(9.0 / 20.0));
  // deeper hollows leave out more parameters
  double last = 0;
  for (int64_t m = 0; m < p.encoder_units(); ++m) {
    const double f = HollowPlan(o, m).parameter_fraction();
    CHECK(f > last);
    last = f;
  }
  CHECK(last < 1.0);
}

TEST_CASE("hollow: a depth or fraction that leaves out every unit or none is refused", "[lora][hollow]") {
  const ef::UNetOptions o = three_levels();
  CHECK_THROWS_WITH(HollowPlan(o, 8), Contains("every one of the UNet's 8 encoder units") && Contains("at most 7"));
  CHECK_THROWS_WITH(HollowPlan(o, -1), Contains("negative"));
  CHECK_THROWS_WITH(HollowPlan::for_fraction(o, 0.0), Contains("no unit"));
  CHECK_THROWS_WITH(HollowPlan::for_fraction(o, 1.0), Contains("every unit"));
  const HollowPlan p = HollowPlan::for_fraction(o, 0.5);
  CHECK(std::abs(p.parameter_fraction() - 0.5) < 0.25);
}

TEST_CASE("hollow: fed with the full UNet's boundary, the hollowed UNet reproduces the full UNet bit for bit at every depth",
          "[lora][hollow]") {
  const ef::UNetOptions o = three_levels();
  ef::UNet2DCondition full = randomised(o, 3);
  full->eval();
  const ef::TensorMap weights = ef::module_state(*full);
  torch::manual_seed(11);
  const torch::Tensor x = torch::randn({2, 4, 8, 8}), t = torch::tensor({17, 803}), c = torch::randn({2, 5, 12});
  torch::NoGradGuard no_grad;
  const torch::Tensor reference = full->forward(x, t, c);
  for (int64_t m = 0; m < 8; ++m) {
    INFO("m = " << m);
    const HollowPlan plan(o, m);
    HollowedUNet hollow(plan);
    ef::load_module_state(*hollow, weights, "full UNet");  // the left-out tensors are skipped
    hollow->eval();
    const ef::lora::UNetBoundary b = ef::lora::compute_boundary(*full, plan, x, t, c);
    CHECK(b.skips.size() == plan.cached_skips().size());
    const auto shapes = ef::lora::boundary_shapes(plan, 2, 8, 8);
    CHECK(b.h_in.sizes().vec() == shapes.at("h_in"));
    for (const auto& [k, v] : b.skips) CHECK(v.sizes().vec() == shapes.at("skip_" + std::to_string(k)));
    CHECK(torch::equal(hollow->forward(x, t, c, b), reference));
    // the hollowed network holds no more than the retained parameters
    int64_t held = 0, retained = 0;
    for (const auto& p : hollow->parameters()) held += p.numel();
    for (const auto& [k, v] : weights)
      if (!plan.leaves_out(k)) retained += v.numel();
    CHECK(held == retained);
  }
}

TEST_CASE("hollow: a weight file that lacks a retained tensor is still refused", "[lora][hollow]") {
  const ef::UNetOptions o = three_levels();
  ef::TensorMap weights = ef::module_state(*ef::UNet2DCondition(o));
  weights.erase("up_blocks.2.resnets.0.conv1.weight");
  HollowedUNet hollow(HollowPlan(o, 2));
  CHECK_THROWS_WITH(ef::load_module_state(*hollow, weights, "w.safetensors"), Contains("missing tensor 'up_blocks.2.resnets.0.conv1.weight'"));
}

TEST_CASE("hollow: adapters trained on the hollowed UNet land key for key on the full UNet's same-named layers", "[lora][hollow]") {
  const ef::UNetOptions o = three_levels();
  ef::UNet2DCondition full = randomised(o, 5);
  const HollowPlan plan(o, 3);
  HollowedUNet hollow(plan);
  ef::load_module_state(*hollow, ef::module_state(*full), "full UNet");
  const std::vector<std::string> patterns = {"*.attn1.to_q", "*.attn2.to_v", "*.conv1"};
  const std::vector<std::string> paths = hollow->adaptable_layers(patterns);
  for (const auto& p : paths) CHECK_FALSE(plan.leaves_out(p + ".weight"));
  CHECK(std::none_of(paths.begin(), paths.end(), [](const std::string& p) { return p.rfind("mid_block", 0) == 0; }));
  ef::lora::Adapters trained = ef::lora::inject(*hollow, paths, cfg({{"kind", "lora"}, {"rank", 2}}));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : trained->parameters()) p.normal_();
  }
  ef::lora::Adapters transferred = ef::lora::inject(*full, paths, cfg({{"kind", "lora"}, {"rank", 2}}));
  const ef::TensorMap state = ef::module_state(*trained);
  ef::load_module_state(*transferred, state, "hollowed adapters");
  const ef::TensorMap back = ef::module_state(*transferred);
  REQUIRE(back.size() == state.size());
  for (const auto& [k, v] : state) CHECK(torch::equal(back.at(k), v));
  // and the full UNet with them merged equals it unmerged
  full->eval();
  trained->eval();
  transferred->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({1, 4, 8, 8}), t = torch::tensor({400}), c = torch::randn({1, 3, 12});
  const torch::Tensor unmerged = full->forward(x, t, c);
  transferred->merge();
  CHECK(torch::allclose(full->forward(x, t, c), unmerged, 1e-5, 1e-5));
}

TEST_CASE("hollow: the significance analysis ranks a unit with a planted large dW first", "[lora][hollow]") {
  const ef::UNetOptions o = three_levels();
  ef::UNet2DCondition full(o);
  ef::lora::Adapters a = ef::lora::inject(*full, {"*.attn1.to_q", "*.conv1"}, cfg({{"kind", "lora"}, {"rank", 2}}));
  torch::NoGradGuard no_grad;
  for (auto& p : a->parameters()) p.uniform_(-0.1, 0.1);
  for (auto& p : a->named_parameters())
    if (p.key().rfind("up_blocks.1.resnets.2.", 0) == 0) p.value().mul_(30.0);
  const auto rows = ef::lora::unit_significance(*a, o);
  REQUIRE(rows.size() > 5);
  CHECK(rows.front().unit == "up_blocks.1.resnets.2");
  CHECK_THAT(ef::lora::format_significance(rows), Contains("mid_block"));
}
