// Feature-space metrics (core/feature_metrics.h) against closed forms: the Fréchet distance of
// Gaussians with diagonal covariances, distances on hand-made point sets, copies and far points.
#include <catch2/catch.hpp>

#include <cmath>

#include "core/feature_metrics.h"
#include "core/image_metrics.h"

namespace {

// [n, D] samples of N(mean, diag(var)), float64.
torch::Tensor gaussian(int64_t n, const std::vector<double>& mean, const std::vector<double>& var) {
  auto m = torch::tensor(mean, torch::kFloat64), s = torch::tensor(var, torch::kFloat64).sqrt();
  return torch::randn({n, int64_t(mean.size())}, torch::kFloat64) * s.unsqueeze(0) + m.unsqueeze(0);
}

// ‖μ1 − μ2‖² + Σ (√a − √b)²: the Fréchet distance of N(μ1, diag(a)) and N(μ2, diag(b)).
double diagonal_closed_form(const std::vector<double>& m1, const std::vector<double>& a, const std::vector<double>& m2,
                            const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < m1.size(); ++i) d += (m1[i] - m2[i]) * (m1[i] - m2[i]) + std::pow(std::sqrt(a[i]) - std::sqrt(b[i]), 2);
  return d;
}

}  // namespace

TEST_CASE("feature metrics: Frechet distance matches the closed form for diagonal Gaussians", "[core][metrics]") {
  const std::vector<double> m1{0, 0, 0, 1}, a{1, 4, 0.25, 2}, m2{1, -0.5, 2, 1}, b{2.25, 1, 1, 2};
  const double expected = diagonal_closed_form(m1, a, m2, b);  // 5.25 + 0.25 + 1 + 0.25 + 0 = 6.75
  REQUIRE(expected == Approx(6.75));

  // Exact moments: the formula itself, to rounding.
  ef::FeatureMoments g1{torch::tensor(m1, torch::kFloat64), torch::diag(torch::tensor(a, torch::kFloat64)), 2};
  ef::FeatureMoments g2{torch::tensor(m2, torch::kFloat64), torch::diag(torch::tensor(b, torch::kFloat64)), 2};
  CHECK(ef::frechet_distance(g1, g2) == Approx(expected).epsilon(1e-12));
  // A rotation of both Gaussians changes nothing (the covariances are then not diagonal).
  auto q = std::get<0>(torch::linalg_qr(torch::randn({4, 4}, torch::kFloat64)));
  ef::FeatureMoments r1{q.matmul(g1.mean), q.matmul(g1.cov).matmul(q.t()), 2};
  ef::FeatureMoments r2{q.matmul(g2.mean), q.matmul(g2.cov).matmul(q.t()), 2};
  CHECK(ef::frechet_distance(r1, r2) == Approx(expected).epsilon(1e-10));

  // Large samples (float32 features, as an encoder gives them): within sampling error.
  torch::manual_seed(20);
  auto x = gaussian(200000, m1, a).to(torch::kFloat32), y = gaussian(200000, m2, b).to(torch::kFloat32);
  CHECK(ef::frechet_distance(x, y) == Approx(expected).margin(0.05));
  // Two samples of one Gaussian: near 0, well below the distance above.
  CHECK(ef::frechet_distance(x, gaussian(200000, m1, a)) < 0.01);
}

TEST_CASE("feature metrics: Frechet distance is 0 for identical sets and the squared shift for shifted ones", "[core][metrics]") {
  torch::manual_seed(21);
  auto x = torch::randn({64, 8}, torch::kFloat64) * 3 + 1;
  CHECK(ef::frechet_distance(x, x) == Approx(0.0).margin(1e-10));
  // Fewer samples than features: singular covariances, whose tiny negative eigenvalues are clamped.
  auto few = torch::randn({5, 8});
  CHECK(ef::frechet_distance(few, few) == Approx(0.0).margin(1e-6));
  // A pure shift c keeps the covariance: the distance is ‖c‖².
  auto c = torch::tensor({1.0, -2.0, 0.5, 0.0, 0.0, 3.0, 0.0, 1.0}, torch::kFloat64);
  CHECK(ef::frechet_distance(x, x + c.unsqueeze(0)) == Approx(c.pow(2).sum().item<double>()).epsilon(1e-9));

  auto m = ef::feature_moments(torch::tensor({{1.0, 2.0}, {3.0, 6.0}}, torch::kFloat64));
  CHECK(m.count == 2);
  CHECK(torch::allclose(m.mean, torch::tensor({2.0, 4.0}, torch::kFloat64)));
  // Unbiased: deviations (±1, ±2) over N − 1 = 1.
  CHECK(torch::allclose(m.cov, torch::tensor({{2.0, 4.0}, {4.0, 8.0}}, torch::kFloat64)));

  CHECK_THROWS_AS(ef::frechet_distance(torch::randn({1, 3}), torch::randn({4, 3})), std::invalid_argument);
  CHECK_THROWS_AS(ef::frechet_distance(torch::randn({4, 3}), torch::randn({4, 2})), std::invalid_argument);
  CHECK_THROWS_AS(ef::feature_moments(torch::randn({4})), std::invalid_argument);
}

TEST_CASE("feature metrics: mean pairwise distance on a hand-made set", "[core][metrics]") {
  // A 3-4-5 triangle: pair distances 3, 4 and 5.
  auto tri = torch::tensor({{0.0, 0.0}, {3.0, 0.0}, {0.0, 4.0}});
  CHECK(ef::mean_pairwise_distance(tri) == Approx(4.0).epsilon(1e-12));
  // Four corners of a unit square: four sides 1 and two diagonals √2.
  auto square = torch::tensor({{0.0, 0.0}, {1.0, 0.0}, {0.0, 1.0}, {1.0, 1.0}});
  CHECK(ef::mean_pairwise_distance(square) == Approx((4 + 2 * std::sqrt(2.0)) / 6).epsilon(1e-12));
  CHECK(ef::mean_pairwise_distance(torch::ones({5, 7})) == 0.0);
  CHECK_THROWS_AS(ef::mean_pairwise_distance(torch::ones({1, 7})), std::invalid_argument);
}

TEST_CASE("feature metrics: 1-SSIM diversity is 0 for identical images and the pair mean otherwise", "[core][metrics]") {
  torch::manual_seed(22);
  auto one = torch::rand({1, 3, 16, 16}) * 2 - 1;
  CHECK(ef::mean_pairwise_dissimilarity(one.expand({4, 3, 16, 16}).contiguous()) == Approx(0.0).margin(1e-12));

  auto images = torch::rand({4, 3, 16, 16}) * 2 - 1;
  double manual = 0;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = i + 1; j < 4; ++j)
      manual += 1 - ef::ssim((images[i].unsqueeze(0) + 1) / 2, (images[j].unsqueeze(0) + 1) / 2).item<double>();
  manual /= 6;
  CHECK(manual > 0.1);  // independent noise images are far from each other
  // Batches of pairs of any size (6 pairs in 4 + 2 here) give the mean over pairs.
  CHECK(ef::mean_pairwise_dissimilarity(images) == Approx(manual).epsilon(1e-5));
  CHECK(ef::mean_pairwise_dissimilarity(images, 4) == Approx(manual).epsilon(1e-5));
  CHECK(ef::mean_pairwise_dissimilarity(images, 1) == Approx(manual).epsilon(1e-5));
  CHECK_THROWS_AS(ef::mean_pairwise_dissimilarity(images.slice(1, 0, 1)), std::invalid_argument);
  CHECK_THROWS_AS(ef::mean_pairwise_dissimilarity(images.slice(0, 0, 1)), std::invalid_argument);
}

TEST_CASE("feature metrics: nearest training distances and the copy fraction", "[core][metrics]") {
  auto train2 = torch::tensor({{0.0, 0.0}, {10.0, 0.0}});
  auto d = ef::nearest_distances(torch::tensor({{1.0, 0.0}, {6.0, 0.0}, {10.0, 3.0}}), train2);
  CHECK(torch::allclose(d, torch::tensor({1.0, 4.0, 3.0}, torch::kFloat64), 0, 1e-12));

  torch::manual_seed(23);
  auto train = torch::randn({10, 16});
  const double threshold = ef::copy_threshold(train);
  REQUIRE(threshold > 0);
  auto copies = train.slice(0, 0, 5).clone();
  CHECK(ef::nearest_distances(copies, train).abs().max().item<double>() == 0.0);  // exact copies: exactly 0
  CHECK(ef::copy_fraction(copies, train, threshold) == 1.0);
  auto far = train.slice(0, 0, 5) + 1000;
  CHECK(ef::copy_fraction(far, train, threshold) == 0.0);
  // Three copies and one far point.
  auto mixed = torch::cat({train.slice(0, 2, 5), train.slice(0, 0, 1) + 1000});
  CHECK(ef::copy_fraction(mixed, train, threshold) == 0.75);
  // Strictly below: a sample exactly at the threshold is not a copy.
  CHECK(ef::copy_fraction(torch::tensor({{4.0, 0.0}}), train2, 4.0) == 0.0);
  CHECK_THROWS_AS(ef::nearest_distances(torch::randn({3, 4}), torch::randn({5, 3})), std::invalid_argument);
}

TEST_CASE("feature metrics: the default copy threshold is a factor times the median leave-one-out spacing", "[core][metrics]") {
  // Points on a line at 0, 1, 3, 7: nearest other point at 1, 1, 2, 4; median (1 + 2) / 2.
  auto even = torch::tensor({{0.0}, {1.0}, {3.0}, {7.0}});
  CHECK(ef::copy_threshold(even, 1.0) == Approx(1.5).epsilon(1e-12));
  CHECK(ef::copy_threshold(even) == Approx(0.75).epsilon(1e-12));
  // 0, 1, 3: spacings 1, 1, 2; median 1. A duplicate counts as distance 0 for both copies.
  CHECK(ef::copy_threshold(torch::tensor({{0.0}, {1.0}, {3.0}}), 1.0) == Approx(1.0).epsilon(1e-12));
  CHECK(ef::copy_threshold(torch::tensor({{0.0}, {0.0}, {5.0}}), 1.0) == 0.0);
  CHECK_THROWS_AS(ef::copy_threshold(torch::ones({1, 3})), std::invalid_argument);
}
