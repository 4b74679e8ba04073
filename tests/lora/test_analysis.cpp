// Weight-space analyses of adapters (lora/analysis.h) on matrices built with known singular values
// and subspaces, so that every expected number has a closed form; then the per-network report on
// LoRA adapters injected into a small network.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include "lora/analysis.h"
#include "lora/inject.h"

using Catch::Matchers::Contains;

namespace {

// A random [n, n] orthogonal matrix (float64), from the QR of a Gaussian matrix.
torch::Tensor orthogonal(int64_t n) { return std::get<0>(torch::linalg_qr(torch::randn({n, n}, torch::kFloat64))); }

// U diag(s) Vᵀ with U [out, k], V [in, k] and s [k].
torch::Tensor compose(const torch::Tensor& u, const std::vector<double>& s, const torch::Tensor& v) {
  auto sv = torch::tensor(s, torch::kFloat64);
  return (u * sv.unsqueeze(0)).matmul(v.transpose(0, 1));
}

torch::Tensor cols(const torch::Tensor& q, std::vector<int64_t> idx) { return q.index_select(1, torch::tensor(idx)); }

double entropy_rank(std::vector<double> s) {
  double total = 0, h = 0;
  for (double v : s) total += v;
  for (double v : s)
    if (v > 0) h -= v / total * std::log(v / total);
  return std::exp(h);
}

struct TwoLayerNetImpl : torch::nn::Module {
  TwoLayerNetImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 6, 3).padding(1)));
    fc = register_module("fc", torch::nn::Linear(6, 10));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(TwoLayerNet);

ef::Config lora_cfg(int64_t rank) { return ef::Config::from_json({{"kind", "lora"}, {"rank", rank}, {"alpha", 2.0}}, "<test>"); }

void perturb(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.normal_(0.0, 0.3);
}

}  // namespace

TEST_CASE("lora analysis: the spectrum of a matrix with known singular values", "[lora]") {
  torch::manual_seed(10);
  const std::vector<double> s{4, 2, 1, 0, 0, 0};
  auto q1 = orthogonal(8), q2 = orthogonal(6);
  auto dw = compose(cols(q1, {0, 1, 2, 3, 4, 5}), s, q2);  // [8, 6], rank 3

  auto sigma = ef::lora::singular_values(dw.to(torch::kFloat32));
  REQUIRE(sigma.sizes() == torch::IntArrayRef{6});
  CHECK(sigma.dtype() == torch::kFloat64);
  for (size_t i = 0; i < s.size(); ++i) CHECK(sigma[int64_t(i)].item<double>() == Approx(s[i]).margin(1e-5));

  sigma = ef::lora::singular_values(dw);
  auto norm = ef::lora::normalised_spectrum(sigma);
  const std::vector<double> expected_norm{1, 0.5, 0.25, 0, 0, 0};
  for (size_t i = 0; i < s.size(); ++i) CHECK(norm[int64_t(i)].item<double>() == Approx(expected_norm[i]).margin(1e-12));
  CHECK(ef::lora::energy_fraction(sigma, 1) == Approx(16.0 / 21.0).epsilon(1e-12));
  CHECK(ef::lora::energy_fraction(sigma, 2) == Approx(20.0 / 21.0).epsilon(1e-12));
  CHECK(ef::lora::energy_fraction(sigma, 3) == Approx(1.0).epsilon(1e-12));
  CHECK(ef::lora::energy_fraction(sigma, 0) == 0.0);
  // p = (4, 2, 1) / 7: H = −Σ p ln p ≈ 0.9556, effective rank e^H ≈ 2.600, between 1 and the rank 3.
  CHECK(ef::lora::effective_rank(sigma) == Approx(entropy_rank({4, 2, 1})).epsilon(1e-9));
  CHECK(ef::lora::effective_rank(sigma) == Approx(2.6005).margin(1e-4));

  // Equal singular values: the effective rank is their count; one direction: 1; nothing: 0.
  CHECK(ef::lora::effective_rank(ef::lora::singular_values(compose(cols(q1, {0, 1, 2}), {3, 3, 3}, cols(q2, {0, 1, 2})))) ==
        Approx(3.0).epsilon(1e-9));
  CHECK(ef::lora::effective_rank(ef::lora::singular_values(compose(cols(q1, {4}), {5}, cols(q2, {1})))) ==
        Approx(1.0).epsilon(1e-9));
  auto zero = ef::lora::singular_values(torch::zeros({4, 3}));
  CHECK(ef::lora::effective_rank(zero) == 0.0);
  CHECK(ef::lora::energy_fraction(zero, 1) == 1.0);
  CHECK(ef::lora::normalised_spectrum(zero).abs().max().item<double>() == 0.0);
}

TEST_CASE("lora analysis: a Conv2d weight is read as the matrix out x in*kh*kw", "[lora]") {
  torch::manual_seed(11);
  auto m = compose(cols(orthogonal(4), {0, 1, 2, 3}), {5, 3, 2, 1}, cols(orthogonal(18), {0, 1, 2, 3}));  // [4, 18]
  auto w = m.reshape({4, 2, 3, 3});
  auto as = ef::lora::as_matrix(w);
  REQUIRE(as.sizes() == torch::IntArrayRef{4, 18});
  CHECK(torch::equal(as, m));
  CHECK(torch::equal(as[2], w[2].flatten()));  // row o = output channel o's filter, row-major
  auto sigma = ef::lora::singular_values(w);
  CHECK(torch::allclose(sigma, torch::tensor({5.0, 3.0, 2.0, 1.0}, torch::kFloat64), 0, 1e-12));
  CHECK_THROWS_AS(ef::lora::as_matrix(torch::zeros({2, 3, 4})), std::invalid_argument);
}

TEST_CASE("lora analysis: amplification factor in closed form", "[lora]") {
  torch::manual_seed(12);
  auto q1 = orthogonal(8), q2 = orthogonal(6);
  // W0 = Q1 diag(w) Q2ᵀ: strong directions 0 and 1, weak 2 and 3, none along 5.
  auto w0 = compose(cols(q1, {0, 1, 2, 3, 4, 5}), {10, 8, 0.5, 0.25, 0.1, 0}, q2);  // [8, 6]

  // ΔW = c × W0's top-2 part: Uᵀ W0 V = diag(10, 8) in ΔW's own basis, so the factor is c exactly.
  auto aligned = compose(cols(q1, {0, 1}), {0.7 * 10, 0.7 * 8}, cols(q2, {0, 1}));
  CHECK(ef::lora::amplification_factor(w0, aligned, 2) == Approx(0.7).epsilon(1e-10));

  // ΔW along W0's weak directions 2, 3 with singular values (1, 3): U = Q1[:, 2:4] R, V = Q2[:, 2:4] R
  // for the same signed permutation R, so ‖Uᵀ W0 V‖_F = ‖(0.5, 0.25)‖ and the factor is
  // √10 / √0.3125 ≈ 5.66.
  auto weak = compose(cols(q1, {2, 3}), {1, 3}, cols(q2, {2, 3}));
  const double expected_weak = std::sqrt(10.0) / std::sqrt(0.5 * 0.5 + 0.25 * 0.25);
  CHECK(ef::lora::amplification_factor(w0, weak, 2) == Approx(expected_weak).epsilon(1e-10));
  // The same ‖ΔW‖ along W0's strong directions: √10 / √164 ≈ 0.25, twenty times smaller.
  auto strong = compose(cols(q1, {0, 1}), {1, 3}, cols(q2, {0, 1}));
  CHECK(ef::lora::amplification_factor(w0, strong, 2) == Approx(std::sqrt(10.0) / std::sqrt(164.0)).epsilon(1e-10));

  // Only W0's top-r part as seen by ΔW counts: ΔW of rank 2 analysed at r = 1 sees direction 3 only.
  CHECK(ef::lora::amplification_factor(w0, weak, 1) == Approx(std::sqrt(10.0) / 0.25).epsilon(1e-10));
  // Along a direction W0 does not use at all: unbounded.
  CHECK(std::isinf(ef::lora::amplification_factor(w0, compose(cols(q1, {5}), {1}, cols(q2, {5})), 1)));
  CHECK(std::isnan(ef::lora::amplification_factor(w0, torch::zeros({8, 6}), 1)));

  // The Conv2d layout gives the same number (W0 and ΔW reshaped alike).
  auto q3 = orthogonal(12);
  auto cw0 = compose(cols(orthogonal(4), {0, 1, 2, 3}), {6, 4, 0.5, 0.2}, cols(q3, {0, 1, 2, 3}));  // [4, 12]
  auto u4 = orthogonal(4);
  auto cdw = compose(cols(u4, {0}), {2}, cols(q3, {5}));  // ΔW's row space is orthogonal to W0's: inf
  CHECK(std::isinf(ef::lora::amplification_factor(cw0.reshape({4, 3, 2, 2}), cdw.reshape({4, 3, 2, 2}), 1)));
  CHECK(ef::lora::amplification_factor(cw0.reshape({4, 3, 2, 2}), (0.3 * cw0).reshape({4, 3, 2, 2}), 4) ==
        Approx(0.3).epsilon(1e-10));
  CHECK_THROWS_AS(ef::lora::amplification_factor(w0, torch::zeros({6, 8}), 1), std::invalid_argument);
}

TEST_CASE("lora analysis: subspace similarity is 1 for one subspace, 0 for orthogonal ones, rotation invariant", "[lora]") {
  torch::manual_seed(13);
  auto q = orthogonal(10), p = orthogonal(7);
  auto a = compose(cols(q, {0, 1, 2}), {5, 3, 1}, cols(p, {0, 1, 2}));  // [10, 7], column space Q[:, 0:3]
  CHECK(ef::lora::subspace_similarity(a, a, 3) == Approx(1.0).epsilon(1e-12));

  // The same column space in another basis (a rotation R within it), other singular values and
  // another row space: φ only sees the column space.
  auto r = orthogonal(3);
  auto rotated = compose(cols(q, {0, 1, 2}).matmul(r), {9, 4, 0.5}, cols(p, {4, 5, 6}));
  CHECK(ef::lora::subspace_similarity(a, rotated, 3) == Approx(1.0).epsilon(1e-12));

  auto orth = compose(cols(q, {3, 4, 5}), {2, 1.5, 1}, cols(p, {0, 1, 2}));
  CHECK(ef::lora::subspace_similarity(a, orth, 3) == Approx(0.0).margin(1e-12));

  // One shared direction out of three: φ = 1/3, whatever basis each side's SVD picks.
  auto partial = compose(cols(q, {0, 6, 7}), {4, 2, 1}, cols(p, {3, 4, 5}));
  CHECK(ef::lora::subspace_similarity(a, partial, 3) == Approx(1.0 / 3.0).epsilon(1e-10));
  auto partial_rotated = compose(cols(q, {0, 6, 7}).matmul(orthogonal(3)), {4, 2, 1}, cols(p, {3, 4, 5}));
  CHECK(ef::lora::subspace_similarity(a, partial_rotated, 3) == Approx(1.0 / 3.0).epsilon(1e-10));
  CHECK(ef::lora::subspace_similarity(partial_rotated, a, 3) == Approx(1.0 / 3.0).epsilon(1e-10));

  // The LoRA paper's grid: its last entry is φ; for one matrix against itself every prefix pair
  // shares min(i, j) directions, so the grid is all ones.
  auto grid = ef::lora::subspace_similarity_grid(a, partial, 3, 3);
  REQUIRE(grid.sizes() == torch::IntArrayRef{3, 3});
  CHECK(grid[2][2].item<double>() == Approx(1.0 / 3.0).epsilon(1e-10));
  // a's top direction is Q[:, 0], the shared one, and so is partial's: the (1, 1) entry is 1.
  CHECK(grid[0][0].item<double>() == Approx(1.0).epsilon(1e-10));
  CHECK(grid[1][1].item<double>() == Approx(0.5).epsilon(1e-10));
  auto self = ef::lora::subspace_similarity_grid(a, a, 3, 2);
  REQUIRE(self.sizes() == torch::IntArrayRef{3, 2});
  CHECK(torch::allclose(self, torch::ones({3, 2}, torch::kFloat64), 0, 1e-12));
}

TEST_CASE("lora analysis: per-network report over injected adapters, as a table and JSON", "[lora]") {
  torch::manual_seed(14);
  TwoLayerNet net;
  auto adapters = ef::lora::inject(*net, {"conv", "fc"}, lora_cfg(2));
  perturb(*adapters);
  auto rows = ef::lora::analyse(*adapters);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].path == "conv");
  CHECK(rows[1].path == "fc");
  CHECK(rows[0].describe == "Conv2d(3 -> 6, 3x3)");
  CHECK(rows[0].singular_values.size() == 6);   // min(6, 3·3·3)
  CHECK(rows[1].singular_values.size() == 6);   // min(10, 6)
  for (const auto& r : rows) {
    CAPTURE(r.path);
    CHECK(r.rank == 2);
    CHECK_FALSE(r.similarity.has_value());
    // A LoRA update B·A has rank ≤ r: all its energy in the top r directions.
    CHECK(r.singular_values[2] < 1e-5 * r.singular_values[0]);
    CHECK(r.energy_top_r == Approx(1.0).epsilon(1e-9));
    CHECK(r.effective_rank >= 1.0);
    CHECK(r.effective_rank <= 2.0 + 1e-3);
    auto& layer = adapters->layers()[r.path == "conv" ? 0 : 1];
    torch::Tensor dw = layer.adapter->delta_weight().detach();
    CHECK(r.delta_norm == Approx(dw.to(torch::kFloat64).norm().item<double>()).epsilon(1e-9));
    CHECK(r.base_norm == Approx(layer.stack->param.detach().to(torch::kFloat64).norm().item<double>()).epsilon(1e-9));
    CHECK(r.amplification == Approx(ef::lora::amplification_factor(layer.stack->param, dw, 2)).epsilon(1e-12));
  }

  // Merged, the layer's parameter holds W0 + ΔW; the report still reads W0.
  adapters->merge();
  auto merged_rows = ef::lora::analyse(*adapters);
  adapters->unmerge();
  for (size_t i = 0; i < rows.size(); ++i) CHECK(merged_rows[i].amplification == Approx(rows[i].amplification).epsilon(1e-12));

  // Against itself φ = 1; against another adapter set, a value in [0, 1].
  auto self_rows = ef::lora::analyse(*adapters, adapters.get());
  for (const auto& r : self_rows) {
    REQUIRE(r.similarity.has_value());
    CHECK(*r.similarity == Approx(1.0).epsilon(1e-9));
  }
  TwoLayerNet other_net;
  auto other = ef::lora::inject(*other_net, {"fc"}, lora_cfg(3));
  perturb(*other);
  auto compared = ef::lora::analyse(*adapters, other.get());
  CHECK_FALSE(compared[0].similarity.has_value());  // conv: not in the reference
  REQUIRE(compared[1].similarity.has_value());
  CHECK(*compared[1].similarity >= 0.0);
  CHECK(*compared[1].similarity < 1.0);

  const std::string table = ef::lora::format_table(compared);
  CHECK_THAT(table, Contains("layer"));
  CHECK_THAT(table, Contains("amplif"));
  CHECK_THAT(table, Contains("phi"));
  CHECK_THAT(table, Contains("Conv2d(3 -> 6, 3x3)"));
  CHECK(std::count(table.begin(), table.end(), '\n') == 3);  // header + one line per layer
  CHECK_THAT(ef::lora::format_table(rows), !Contains("phi"));

  auto j = ef::lora::to_json(compared);
  REQUIRE(j["layers"].size() == 2);
  CHECK(j["layers"][1]["path"] == "fc");
  CHECK(j["layers"][1]["rank"] == 2);
  CHECK(j["layers"][1]["singular_values"].size() == 6);
  CHECK(j["layers"][1]["amplification"].get<double>() == Approx(compared[1].amplification));
  CHECK(j["layers"][1]["similarity"].get<double>() == Approx(*compared[1].similarity));
  CHECK_FALSE(j["layers"][0].contains("similarity"));

  // A list of (path, W0, ΔW) works without adapters; inf is written as null.
  ef::lora::LayerWeights lw{"x", "", torch::eye(3, torch::kFloat64), torch::zeros({3, 3}, torch::kFloat64), 1};
  lw.delta_w[2][2] = 1.0;
  lw.w0[2][2] = 0.0;
  auto list_rows = ef::lora::analyse(std::vector<ef::lora::LayerWeights>{lw});
  CHECK(std::isinf(list_rows[0].amplification));
  CHECK(ef::lora::to_json(list_rows)["layers"][0]["amplification"].is_null());
  CHECK_THAT(ef::lora::format_table(list_rows), Contains("inf"));
}
