// PADRe: shapes, the polynomial it computes (against a direct loop evaluation), homogeneity,
// linear cost in the number of tokens, and finite-difference gradients.
#include <catch2/catch.hpp>

#include <chrono>

#include "models/attention/padre.h"
#include "models/vit.h"
#include "tests/gradcheck.h"

namespace {

ef::AttentionShape grid_shape(int64_t C, int64_t gh, int64_t gw, int64_t prefix) {
  ef::AttentionShape s{C, 1};
  s.grid_h = gh;
  s.grid_w = gw;
  s.prefix = prefix;
  return s;
}

std::shared_ptr<ef::PADReImpl> make_padre(const ef::AttentionShape& s, nlohmann::json options) {
  options["kind"] = "padre";
  return std::make_shared<ef::PADReImpl>(s, ef::Config::from_json(options));
}

// Plain-loop evaluation of the PADRe polynomial (double): Y_k = A_k X B_k, Z_{k+1} = (C_k Z_k D_k) * Y_{k+1},
// P = sum_k a_k Z_k, O = P V, with A_k/C_k the depthwise k x k operators on the grid (zero padding)
// and, for the prefix token, the centre tap plus the patch mean.
using Mat = std::vector<std::vector<double>>;  // [N][Ch]

Mat to_mat(const torch::Tensor& t) {  // [N, Ch]
  auto a = t.accessor<double, 2>();
  Mat m(t.size(0), std::vector<double>(t.size(1)));
  for (int64_t i = 0; i < t.size(0); ++i)
    for (int64_t j = 0; j < t.size(1); ++j) m[i][j] = a[i][j];
  return m;
}

Mat linear(const Mat& x, const torch::Tensor& weight, const torch::Tensor& bias) {  // x W^T + b
  auto w = weight.accessor<double, 2>();
  Mat out(x.size(), std::vector<double>(weight.size(0), 0.0));
  for (size_t n = 0; n < x.size(); ++n)
    for (int64_t o = 0; o < weight.size(0); ++o) {
      double s = bias.defined() ? bias[o].item<double>() : 0.0;
      for (int64_t i = 0; i < weight.size(1); ++i) s += x[n][i] * w[o][i];
      out[n][o] = s;
    }
  return out;
}

Mat mix(const Mat& u, const torch::Tensor& weight, const torch::Tensor& bias, int64_t gh, int64_t gw, int64_t prefix, int64_t k) {
  auto w = weight.accessor<double, 4>();  // [Ch, 1, k, k]
  const int64_t Ch = weight.size(0), pad = k / 2, P = gh * gw;
  Mat out(u.size(), std::vector<double>(Ch, 0.0));
  for (int64_t c = 0; c < Ch; ++c) {
    const double b = bias.defined() ? bias[c].item<double>() : 0.0;
    for (int64_t r = 0; r < gh; ++r)
      for (int64_t s = 0; s < gw; ++s) {
        double acc = b;
        for (int64_t i = 0; i < k; ++i)
          for (int64_t j = 0; j < k; ++j) {
            int64_t rr = r + i - pad, ss = s + j - pad;
            if (rr >= 0 && rr < gh && ss >= 0 && ss < gw) acc += w[c][0][i][j] * u[prefix + rr * gw + ss][c];
          }
        out[prefix + r * gw + s][c] = acc;
      }
    for (int64_t t = 0; t < prefix; ++t) {
      double mean = 0;
      for (int64_t p = 0; p < P; ++p) mean += u[prefix + p][c] / static_cast<double>(P);
      out[t][c] = w[c][0][pad][pad] * u[t][c] + b + mean;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("padre: maps B x N x C to B x N x C on a grid with a class token / on 1-D tokens / for degrees 1..4", "[padre]") {
  torch::manual_seed(0);
  for (int64_t d = 1; d <= 4; ++d) {
    INFO("degree " << d);
    auto grid = make_padre(grid_shape(16, 4, 5, 1), {{"degree", d}});
    CHECK(grid->two_d());
    CHECK(grid->forward(torch::randn({2, 21, 16})).sizes() == std::vector<int64_t>{2, 21, 16});
    auto seq = make_padre({16, 2}, {{"degree", d}, {"norm", "l2"}, {"combine", "last"}});
    CHECK_FALSE(seq->two_d());
    CHECK(seq->forward(torch::randn({3, 33, 16})).sizes() == std::vector<int64_t>{3, 33, 16});
  }
  // the token count must fit the grid the module was built for
  auto grid = make_padre(grid_shape(8, 4, 4, 0), {});
  CHECK_THROWS_WITH(grid->forward(torch::randn({1, 15, 8})), Catch::Matchers::Contains("do not fit"));
  CHECK_THROWS_WITH(make_padre({8, 1}, {{"degree", 0}}), Catch::Matchers::Contains("degree"));
  CHECK_THROWS_WITH(make_padre({8, 1}, {{"mixing", "conv2d"}}), Catch::Matchers::Contains("mixing"));
}

TEST_CASE("padre: equals a direct evaluation of its polynomial on small inputs", "[padre]") {
  torch::manual_seed(1);
  const int64_t C = 3, gh = 3, gw = 4, prefix = 1, N = prefix + gh * gw, k = 3, d = 3;
  auto m = make_padre(grid_shape(C, gh, gw, prefix), {{"degree", d}, {"kernel", k}, {"norm", "none"}});
  m->to(torch::kFloat64);
  {
    torch::NoGradGuard no_grad;  // non-trivial coefficients and biases everywhere
    for (auto& p : m->parameters()) p.copy_(torch::randn_like(p) * 0.7);
  }
  torch::Tensor x = torch::randn({1, N, C}, torch::kFloat64);
  torch::Tensor got = m->forward(x).detach()[0];

  Mat X = to_mat(x[0]);
  Mat U = linear(X, m->y_proj->weight.detach(), m->y_proj->bias.detach());
  Mat Y = mix(U, m->y_mix_weight.detach(), m->y_mix_bias.detach(), gh, gw, prefix, k);  // [N][d*C]
  auto part = [&](const Mat& all, int64_t i) {
    Mat out(N, std::vector<double>(C));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) out[n][c] = all[n][i * C + c];
    return out;
  };
  Mat Z = part(Y, 0), P(N, std::vector<double>(C, 0.0));
  auto accumulate = [&](const Mat& z, int64_t i) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) P[n][c] += m->coeff[i][c].item<double>() * z[n][c];
  };
  accumulate(Z, 0);
  for (int64_t i = 1; i < d; ++i) {
    auto lin = m->z_proj[i - 1]->as<torch::nn::Linear>();
    Mat T = mix(linear(Z, lin->weight.detach(), lin->bias.detach()), m->z_mix_weight[i - 1].detach(), m->z_mix_bias[i - 1].detach(), gh, gw,
                prefix, k);
    Mat Yi = part(Y, i);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) Z[n][c] = T[n][c] * Yi[n][c];
    accumulate(Z, i);
  }
  Mat O = linear(P, m->proj->weight.detach(), m->proj->bias.detach());
  double err = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) err = std::max(err, std::abs(O[n][c] - got[n][c].item<double>()));
  CHECK(err < 1e-10);
}

TEST_CASE("padre: without biases and norms the output is homogeneous of degree d", "[padre]") {
  torch::manual_seed(2);
  for (int64_t d = 1; d <= 3; ++d) {
    INFO("degree " << d);
    auto m = make_padre(grid_shape(8, 4, 4, 1), {{"degree", d}, {"bias", false}, {"norm", "none"}, {"combine", "last"}});
    m->to(torch::kFloat64);
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::randn({2, 17, 8}, torch::kFloat64);
    const double t = 1.7;
    torch::Tensor lhs = m->forward(x * t), rhs = m->forward(x) * std::pow(t, static_cast<double>(d));
    CHECK(torch::allclose(lhs, rhs, 1e-10, 1e-12));
  }
}

TEST_CASE("padre: cost grows linearly with the number of tokens", "[padre][scaling]") {
  torch::manual_seed(3);
  // analytic: exactly proportional to N, unlike softmax attention
  auto small = make_padre(grid_shape(32, 32, 32, 0), {});
  CHECK(small->flops(4096) == Approx(4 * small->flops(1024)).epsilon(1e-12));
  ef::SoftmaxAttentionImpl softmax({32, 1}, ef::Config::from_json({{"kind", "softmax"}}));
  CHECK(softmax.flops(4096) / softmax.flops(1024) > 4.5);
  // measured scaling is shown by bench/attention, not by a timed test (the machine is noisy)
}

TEST_CASE("padre: gradients match finite differences (double)", "[padre][gradcheck]") {
  torch::manual_seed(4);
  for (std::string norm : {"layernorm", "l2", "none"}) {
    INFO("norm " << norm);
    auto m = make_padre(grid_shape(4, 3, 3, 1), {{"degree", 3}, {"kernel", 3}, {"norm", norm}});
    m->to(torch::kFloat64);
    torch::Tensor x = torch::randn({2, 10, 4}, torch::TensorOptions().dtype(torch::kFloat64).requires_grad(true));
    auto leaves = ef::test::parameters_of(*m);
    leaves.push_back(x);
    auto r = ef::test::gradcheck([&] { return m->forward(x); }, leaves);
    INFO(r.worst);
    CHECK(r.checked > 50);
    CHECK(r.max_rel_error < 1e-6);
  }
  // 1-D token mixing too
  auto seq = make_padre({4, 1}, {{"degree", 2}, {"kernel", 5}});
  seq->to(torch::kFloat64);
  torch::Tensor x = torch::randn({1, 7, 4}, torch::TensorOptions().dtype(torch::kFloat64).requires_grad(true));
  auto leaves = ef::test::parameters_of(*seq);
  leaves.push_back(x);
  auto r = ef::test::gradcheck([&] { return seq->forward(x); }, leaves);
  INFO(r.worst);
  CHECK(r.max_rel_error < 1e-6);
}

TEST_CASE("padre: a ViT with PADRe attention trains on the class-token path and the GAP path", "[padre][vit]") {
  torch::manual_seed(5);
  for (std::string pool : {"cls", "mean"}) {
    INFO("pool " << pool);
    ef::Config m = ef::Config::from_json({{"image_size", 16}, {"patch", 4}, {"dim", 16}, {"depth", 2}, {"heads", 2}, {"pool", pool}});
    ef::ViT vit(ef::ViTOptions::from(m), ef::Config::from_json({{"kind", "padre"}, {"kernel", 3}}));
    torch::Tensor logits = vit->forward(torch::rand({2, 3, 16, 16}));
    CHECK(logits.sizes() == std::vector<int64_t>{2, 10});
    logits.sum().backward();
    auto attn = std::dynamic_pointer_cast<ef::PADReImpl>((*vit->blocks)[0]->as<ef::Block>()->attn);
    REQUIRE(attn);
    CHECK(attn->two_d());
    CHECK(attn->y_mix_weight.grad().abs().sum().item<double>() > 0);
  }
}
