// The correlation lookup against RAFT's grid_sample formulation (values and gradients), finite
// differences, CUDA against CPU; warping and the SCI map on constructed cases; convex upsampling;
// the networks' parameter counts and shapes; the Regression Focal Loss against its formula.
#include <catch2/catch.hpp>

#include <cmath>

#include "flow/corr.h"
#include "flow/losses.h"
#include "flow/models.h"
#include "tests/gradcheck.h"

using namespace ef::flow;
namespace F = torch::nn::functional;

namespace {

// RAFT's CorrBlock lookup for one level, as in corr.py (grid_sample, align_corners=True):
// level [N,h,w], coords [B,H,W,2] -> [B,H,W,(2r+1)^2]
torch::Tensor raft_lookup_reference(const torch::Tensor& level, const torch::Tensor& coords, int64_t r) {
  const int64_t N = level.size(0), h = level.size(1), w = level.size(2), side = 2 * r + 1;
  torch::Tensor d = torch::linspace(-r, r, side, level.options());
  auto mg = torch::meshgrid({d, d}, "ij");
  torch::Tensor delta = torch::stack({mg[0], mg[1]}, -1).view({1, side, side, 2});  // (dy, dx) added to (x, y): RAFT's quirk
  torch::Tensor centroid = coords.reshape({N, 1, 1, 2});
  torch::Tensor p = centroid + delta;
  torch::Tensor gx = 2 * p.select(-1, 0) / (w - 1) - 1, gy = 2 * p.select(-1, 1) / (h - 1) - 1;
  torch::Tensor s = F::grid_sample(level.unsqueeze(1), torch::stack({gx, gy}, -1),
                                   F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(true));
  return s.view({coords.size(0), coords.size(1), coords.size(2), side * side});
}

bool have_cuda() {
  if (torch::cuda::is_available()) return true;
  WARN("no CUDA device: the CUDA correlation lookup is not checked here");
  return false;
}

}  // namespace

TEST_CASE("flow corr: lookup matches the grid_sample lookup of RAFT in values and gradients", "[flow]") {
  torch::manual_seed(0);
  const int64_t B = 2, H = 3, W = 4, h = 5, w = 6;
  for (int64_t r : {1, 3}) {
    INFO("radius " << r);
    torch::Tensor level = torch::randn({B * H * W, h, w}, torch::kFloat64).requires_grad_(true);
    // inside, on the border and far outside; includes exact integers (bilinear weights 0/1)
    torch::Tensor coords = torch::rand({B, H, W, 2}, torch::kFloat64) * 10 - 2;
    coords[0][0][0][0] = 2.0;
    coords[0][0][0][1] = 1.0;
    torch::Tensor ref = raft_lookup_reference(level, coords, r);
    torch::Tensor got = corr_lookup(level, coords, r);
    REQUIRE(got.sizes() == ref.sizes());
    CHECK(torch::allclose(got, ref, 1e-12, 1e-12));
    torch::Tensor g = torch::randn(ref.sizes(), torch::kFloat64);
    torch::Tensor gref = torch::autograd::grad({ref}, {level}, {g})[0];
    torch::Tensor ggot = torch::autograd::grad({got}, {level}, {g})[0];
    CHECK(torch::allclose(ggot, gref, 1e-12, 1e-12));
  }
  // float32 works the same
  torch::Tensor lf = torch::randn({B * H * W, h, w});
  torch::Tensor cf = torch::rand({B, H, W, 2}) * 6;
  CHECK(torch::allclose(corr_lookup(lf, cf, 2), raft_lookup_reference(lf, cf, 2), 1e-5, 1e-5));
  CHECK_THROWS_WITH(corr_lookup(lf, cf.narrow(1, 0, 2), 2), Catch::Contains("queries"));
}

TEST_CASE("flow corr: lookup gradient against finite differences", "[flow]") {
  torch::manual_seed(1);
  torch::Tensor level = torch::randn({1 * 2 * 3, 4, 5}, torch::kFloat64).requires_grad_(true);
  torch::Tensor coords = torch::rand({1, 2, 3, 2}, torch::kFloat64) * 5 - 0.5;
  auto r = ef::test::gradcheck([&] { return corr_lookup(level, coords, 2); }, {level}, 1e-6, 60);
  INFO(r.worst);
  CHECK(r.max_rel_error < 1e-6);
}

TEST_CASE("flow corr: volume is the scaled dot product and local correlation equals the pyramid lookup", "[flow]") {
  torch::manual_seed(2);
  torch::Tensor f1 = torch::randn({2, 8, 4, 6}, torch::kFloat64), f2 = torch::randn({2, 8, 4, 6}, torch::kFloat64);
  torch::Tensor vol = corr_volume(f1, f2);
  REQUIRE(vol.sizes() == std::vector<int64_t>{2 * 4 * 6, 4, 6});
  // query (b=1, y=2, x=3) against (y=1, x=5)
  const double expect = (f1[1].select(1, 2).select(1, 3) * f2[1].select(1, 1).select(1, 5)).sum().item<double>() / std::sqrt(8.0);
  CHECK(vol[1 * 24 + 2 * 6 + 3][1][5].item<double>() == Approx(expect).epsilon(1e-12));
  auto pyr = corr_pyramid(vol, 2);
  CHECK(pyr[1].sizes() == std::vector<int64_t>{48, 2, 3});
  torch::Tensor coords = torch::rand({2, 2, 4, 6}, torch::kFloat64) * 6 - 1;
  torch::Tensor a = lookup_pyramid(pyr, coords, 2), b = local_correlation(f1, f2, coords, 2, 2);
  REQUIRE(a.sizes() == std::vector<int64_t>{2, 2 * 25, 4, 6});
  CHECK(torch::allclose(a, b, 1e-10, 1e-10));
}

TEST_CASE("flow corr: CUDA lookup matches the CPU kernel", "[flow][cuda]") {
  if (!have_cuda()) return;
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    torch::Tensor level = torch::randn({2 * 6 * 7, 6, 7}, dtype).requires_grad_(true);
    torch::Tensor coords = torch::rand({2, 6, 7, 2}, dtype) * 9 - 1;
    torch::Tensor cpu = corr_lookup(level, coords, 3);
    torch::Tensor g = torch::randn(cpu.sizes(), dtype);
    torch::Tensor gcpu = torch::autograd::grad({cpu}, {level}, {g})[0];
    torch::Tensor lc = level.detach().cuda().requires_grad_(true);
    torch::Tensor gpu = corr_lookup(lc, coords.cuda(), 3);
    torch::Tensor ggpu = torch::autograd::grad({gpu}, {lc}, {g.cuda()})[0];
    CHECK(torch::allclose(gpu.cpu(), cpu, 1e-5, 1e-5));
    CHECK(torch::allclose(ggpu.cpu(), gcpu, 1e-5, 1e-5));
  }
  // bf16 volumes (autocast) are computed in float and cast back
  torch::Tensor level = torch::randn({4 * 5, 5, 5}, torch::kCUDA);
  torch::Tensor coords = torch::rand({1, 4, 5, 2}, torch::kCUDA) * 4;
  torch::Tensor bf = corr_lookup(level.to(torch::kBFloat16), coords, 2);
  CHECK(bf.scalar_type() == torch::kBFloat16);
  CHECK(torch::allclose(bf.to(torch::kFloat32).cpu(), corr_lookup(level.to(torch::kBFloat16).to(torch::kFloat32).cpu(), coords.cpu(), 2), 2e-2, 2e-2));
}

TEST_CASE("flow sci: warping and the SCI map on constructed cases", "[flow]") {
  torch::manual_seed(4);
  torch::Tensor f = torch::randn({1, 5, 6, 7});
  // zero flow: identity; integer flow: a shift
  auto [same, inside0] = warp(f, torch::zeros({1, 2, 6, 7}));
  CHECK(torch::allclose(same, f, 1e-5, 1e-6));
  CHECK(inside0.min().item<float>() == Approx(1.0f));
  torch::Tensor flow = torch::zeros({1, 2, 6, 7});
  flow.select(1, 0).fill_(2);  // u = +2 (columns)
  flow.select(1, 1).fill_(1);  // v = +1 (rows)
  auto [shifted, inside] = warp(f, flow);
  CHECK(torch::allclose(shifted.narrow(2, 0, 5).narrow(3, 0, 5), f.narrow(2, 1, 5).narrow(3, 2, 5), 1e-5, 1e-6));
  CHECK(inside[0][0][5][6].item<float>() == 0.0f);  // samples out of frame
  CHECK(inside[0][0][0][0].item<float>() == 1.0f);

  // frame 2 = frame 1 moved by (u, v) = (2, 1): F2(x + f) = F1(x)
  torch::Tensor f2 = torch::zeros_like(f);
  f2.narrow(2, 1, 5).narrow(3, 2, 5).copy_(f.narrow(2, 0, 5).narrow(3, 0, 5));
  torch::Tensor sigma2 = torch::ones({1});
  torch::Tensor right = sci_map(f, f2, flow, sigma2, true), wrong = sci_map(f, f2, torch::zeros_like(flow), sigma2, true);
  REQUIRE(right.sizes() == std::vector<int64_t>{1, 1, 6, 7});
  // the right flow: M = 1 wherever the match is in frame; the wrong one: M < 1 there
  CHECK(right.narrow(2, 0, 5).narrow(3, 0, 5).min().item<float>() == Approx(1.0f).epsilon(1e-5));
  CHECK(right[0][0][5][6].item<float>() == 0.0f);  // out of frame: 0
  CHECK(wrong.narrow(2, 0, 5).narrow(3, 0, 5).max().item<float>() < 0.99f);
  CHECK(right.sum().item<float>() > wrong.sum().item<float>());
  // M = 1 for identical features and zero flow, also without normalisation
  CHECK(sci_map(f, f, torch::zeros_like(flow), sigma2, false).min().item<float>() == Approx(1.0f));
  // sharper with a smaller sigma
  CHECK(sci_map(f, f2, torch::zeros_like(flow), sigma2 * 0.25, true).sum().item<float>() < wrong.sum().item<float>());
  // the map carries no gradient to the flow (it is detached)
  torch::Tensor fl = flow.clone().requires_grad_(true);
  CHECK_FALSE(sci_map(f, f2, fl, sigma2, true).requires_grad());
}

TEST_CASE("flow sci: the map from features prepared once equals the definition written out", "[flow]") {
  torch::manual_seed(5);
  const int64_t B = 2, C = 6, h = 5, w = 7;
  torch::Tensor f1 = torch::randn({B, C, h, w}), f2 = torch::randn({B, C, h, w}), flow = 2 * torch::randn({B, 2, h, w});
  torch::Tensor sigma2 = torch::full({1}, 0.7);
  // reference: separate warps of F2 and of a ones map, grid in normalised coordinates (align_corners)
  torch::Tensor xs = torch::arange(w, torch::kFloat32).view({1, 1, w}).expand({B, h, w});
  torch::Tensor ys = torch::arange(h, torch::kFloat32).view({1, h, 1}).expand({B, h, w});
  torch::Tensor grid = torch::stack({(xs + flow.select(1, 0)) * (2.0 / (w - 1)) - 1, (ys + flow.select(1, 1)) * (2.0 / (h - 1)) - 1}, -1);
  auto opts = F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(true);
  torch::Tensor w2 = F::grid_sample(f2, grid, opts);
  torch::Tensor inside = F::grid_sample(torch::ones({B, 1, h, w}), grid, opts);
  for (bool normalize : {true, false}) {
    torch::Tensor d2 = normalize ? (f1 / f1.norm(2, 1, true) - w2 / w2.norm(2, 1, true).clamp_min(1e-6)).square().sum(1, true)
                                 : (f1 - w2).square().sum(1, true) / static_cast<double>(C);
    torch::Tensor want = torch::exp(-d2 / sigma2) * inside;
    const SciFeatures prepared = sci_features(f1, f2, normalize);
    CHECK(torch::allclose(sci_map(prepared, flow, sigma2), want, 1e-5, 1e-6));
    CHECK(torch::allclose(sci_map(f1, f2, flow, sigma2, normalize), want, 1e-5, 1e-6));
  }
  CHECK(torch::allclose(warp(f2, flow).second, inside, 1e-6, 1e-7));
}

TEST_CASE("flow models: RAFT-S parameter count and the one SCI input channel and the shapes of both models", "[flow]") {
  FlowModelOptions o;  // raft-small defaults
  FlowNet base(o, SciOptions{});
  CHECK(count_parameters(*base) == 990162);  // RAFT-S as published
  SciOptions sci;
  sci.enabled = true;
  FlowNet with(o, sci);
  CHECK(count_parameters(*with) - count_parameters(*base) == 3 * 96 * 3 * 3);  // one input channel of each GRU conv
  sci.input = "motion";
  CHECK(count_parameters(*FlowNet(o, sci)) - count_parameters(*base) == 96);  // one channel of the 1x1 corr conv
  sci.input = "gru";

  torch::manual_seed(5);
  torch::Tensor a = torch::rand({2, 3, 32, 48}), b = torch::rand({2, 3, 32, 48});
  for (std::string kind : {"raft-small", "mobileflow"}) {
    INFO(kind);
    FlowModelOptions m = FlowModelOptions::from(ef::Config::from_json({{"kind", kind}}));
    m.levels = 2;  // 4x6 coarse grid
    FlowNet net(m, sci);
    FlowOutput out = net->forward(a, b, 3);
    REQUIRE(out.flows.size() == 3);
    REQUIRE(out.sci_maps.size() == 3);
    CHECK(out.flows[2].sizes() == std::vector<int64_t>{2, 2, 32, 48});
    CHECK(out.sci_maps[0].sizes() == std::vector<int64_t>{2, 1, 4, 6});
    CHECK(torch::isfinite(out.flows[2]).all().item<bool>());
  }
  CHECK_THROWS_WITH(base->forward(torch::rand({1, 3, 30, 48}), torch::rand({1, 3, 30, 48})), Catch::Contains("multiples of 8"));
}

TEST_CASE("flow models: convex upsampling of a constant flow with uniform weights", "[flow]") {
  torch::Tensor flow = torch::ones({1, 2, 3, 4});
  flow.select(1, 1).fill_(-0.5);
  torch::Tensor up = convex_upsample(flow, torch::zeros({1, 576, 3, 4}));
  REQUIRE(up.sizes() == std::vector<int64_t>{1, 2, 24, 32});
  // interior cells (all 9 neighbours inside): exactly 8 * flow
  CHECK(up[0][0].slice(0, 8, 16).slice(1, 8, 24).sub(8).abs().max().item<float>() < 1e-5);
  CHECK(up[0][1].slice(0, 8, 16).slice(1, 8, 24).add(4).abs().max().item<float>() < 1e-5);
  CHECK(torch::allclose(bilinear_upsample8(flow), 8 * torch::ones({1, 1, 24, 32}) * flow.mean({2, 3}, true).expand({1, 2, 1, 1})));
}

TEST_CASE("flow rfl: equals its formula on known inputs and reduces to the sequence loss at alpha 0", "[flow]") {
  // one image, 1x2 pixels; two iterations; pixel 1 is invalid
  torch::Tensor gt = torch::tensor({1.0, 0.0, 0.5, 0.0}, torch::kFloat64).view({1, 2, 1, 2});  // u = (1, 0), v = (0.5, 0)
  torch::Tensor p1 = torch::tensor({0.0, 3.0, 0.0, 0.0}, torch::kFloat64).view({1, 2, 1, 2});
  torch::Tensor p2 = torch::tensor({0.5, 1.0, 0.25, 0.0}, torch::kFloat64).view({1, 2, 1, 2});
  torch::Tensor valid = torch::tensor({1.0, 0.0}, torch::kFloat64).view({1, 1, 2});
  LossOptions o;
  o.kind = "rfl";
  o.alpha = 2.0;
  o.beta = 2.0;
  o.gamma = 0.8;
  // by hand: final error at pixel 0 = (0.5, 0.25): |e|^2 = 0.3125; M = exp(-0.3125); w = 1 + 2 (1 - M)^2
  const double M = std::exp(-0.3125), wgt = 1 + 2 * (1 - M) * (1 - M);
  const double l1 = wgt * (1.0 + 0.5) / 4, l2 = wgt * (0.5 + 0.25) / 4;  // mean over B*2*H*W = 4 entries
  CHECK(flow_sequence_loss({p1, p2}, gt, valid, o).item<double>() == Approx(0.8 * l1 + l2).epsilon(1e-12));
  o.reduction = "valid";  // divide by 2 * #valid = 2
  CHECK(flow_sequence_loss({p1, p2}, gt, valid, o).item<double>() == Approx((0.8 * l1 + l2) * 2).epsilon(1e-12));
  o.reduction = "all";
  CHECK(rfl_confidence(p2, gt)[0][0][0][0].item<double>() == Approx(M));

  torch::manual_seed(6);
  torch::Tensor g = torch::randn({2, 2, 5, 6}, torch::kFloat64) * 3, v = (torch::rand({2, 5, 6}) > 0.2).to(torch::kFloat64);
  std::vector<torch::Tensor> preds;
  for (int i = 0; i < 4; ++i) preds.push_back(g + torch::randn_like(g) * (4 - i));
  LossOptions seq;
  LossOptions rfl0 = seq;
  rfl0.kind = "rfl";
  rfl0.alpha = 0;
  CHECK(flow_sequence_loss(preds, g, v, rfl0).item<double>() == Approx(flow_sequence_loss(preds, g, v, seq).item<double>()).epsilon(1e-14));
  rfl0.alpha = 1;
  CHECK(flow_sequence_loss(preds, g, v, rfl0).item<double>() > flow_sequence_loss(preds, g, v, seq).item<double>());
  // pixels beyond max_flow do not count
  LossOptions capped = seq;
  capped.max_flow = 1e-3;
  CHECK(flow_sequence_loss(preds, g, v, capped).item<double>() == 0.0);
}

TEST_CASE("flow rfl: gradient check (the confidence map is a constant weight)", "[flow]") {
  torch::manual_seed(7);
  torch::Tensor gt = torch::randn({1, 2, 3, 4}, torch::kFloat64);
  torch::Tensor valid = torch::ones({1, 3, 4}, torch::kFloat64);
  // errors kept away from 0 so |.| is differentiable at every checked point
  auto away = [&](double s) { return gt + (torch::rand_like(gt) * 0.5 + 0.3) * (torch::rand_like(gt) > 0.5).to(torch::kFloat64).mul(2).sub(1) * s; };
  torch::Tensor p1 = away(2).requires_grad_(true), p2 = away(1).requires_grad_(true), p3 = away(0.5).requires_grad_(true);
  LossOptions o;
  o.kind = "rfl";
  o.alpha = 1.5;
  o.beta = 2;
  // earlier iterations: the map depends only on the final prediction, so finite differences apply
  auto r = ef::test::gradcheck([&] { return flow_sequence_loss({p1, p2, p3}, gt, valid, o).view({1}); }, {p1, p2}, 1e-6, 24);
  INFO(r.worst);
  CHECK(r.max_rel_error < 1e-6);
  // final iteration: the map is detached, so dL/df_N = w * sign(f_N - gt) / (B*2*H*W)
  torch::Tensor loss = flow_sequence_loss({p1, p2, p3}, gt, valid, o);
  torch::Tensor grad = torch::autograd::grad({loss}, {p3})[0];
  torch::Tensor w = 1 + o.alpha * torch::pow(1 - rfl_confidence(p3, gt), o.beta);
  CHECK(torch::allclose(grad, w * torch::sign(p3.detach() - gt) / 24.0, 1e-12, 1e-14));
}
