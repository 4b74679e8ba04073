#include "core/feature_metrics.h"

#include <algorithm>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "core/image_metrics.h"

namespace ef {

namespace {

[[noreturn]] void fail(const std::string& what, const torch::Tensor& t, const std::string& need) {
  std::ostringstream msg;
  msg << what << ": expected " << need << ", got " << t.sizes();
  throw std::invalid_argument(msg.str());
}

// features [N, D] -> float64 CPU, with N >= min_rows.
torch::Tensor rows64(const char* what, const torch::Tensor& features, int64_t min_rows) {
  if (features.dim() != 2) fail(what, features, "features [N, D]");
  if (features.size(0) < min_rows) fail(what, features, "at least " + std::to_string(min_rows) + " rows");
  return features.detach().to(torch::kCPU, torch::kFloat64).contiguous();
}

// Square root of a symmetric positive semi-definite matrix [D, D]: Q diag(√max(λ, 0)) Qᵀ.
torch::Tensor sqrt_psd(const torch::Tensor& m) {
  auto [lambda, q] = torch::linalg_eigh(m);
  return (q * lambda.clamp_min(0).sqrt().unsqueeze(0)).matmul(q.transpose(0, 1));
}

// Euclidean distances [B, M] between rows of a [B, D] and b [M, D], computed directly rather than
// from ‖a‖² + ‖b‖² − 2 a·b (cdist compute_mode 2): that expansion cancels, and an exact copy of a
// training feature must come out at distance 0, not 1e-7.
torch::Tensor distances(const torch::Tensor& a, const torch::Tensor& b) { return torch::cdist(a, b, 2.0, 2); }

constexpr int64_t kBlock = 1024;  // sample rows per distance block

}  // namespace

FeatureMoments feature_moments(const torch::Tensor& features) {
  auto x = rows64("feature_moments", features, 2);
  FeatureMoments m;
  m.count = x.size(0);
  m.mean = x.mean(0);
  auto centred = x - m.mean.unsqueeze(0);
  m.cov = centred.transpose(0, 1).matmul(centred) / double(m.count - 1);
  return m;
}

double frechet_distance(const FeatureMoments& a, const FeatureMoments& b) {
  if (a.mean.sizes() != b.mean.sizes() || a.cov.sizes() != b.cov.sizes()) {
    std::ostringstream msg;
    msg << "frechet_distance: feature sizes differ: mean " << a.mean.sizes() << " vs " << b.mean.sizes() << ", cov "
        << a.cov.sizes() << " vs " << b.cov.sizes();
    throw std::invalid_argument(msg.str());
  }
  auto s1 = a.cov.to(torch::kFloat64), s2 = b.cov.to(torch::kFloat64);
  auto r1 = sqrt_psd(s1);
  auto inner = r1.matmul(s2).matmul(r1);
  inner = (inner + inner.transpose(0, 1)) / 2;  // symmetric in exact arithmetic; remove the rounding asymmetry
  // tr((Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}) = Σ √μ_i over its eigenvalues μ_i; no need to rebuild the matrix.
  auto mu = std::get<0>(torch::linalg_eigh(inner));
  const double cross = mu.clamp_min(0).sqrt().sum().item<double>();
  const double mean_term = (a.mean.to(torch::kFloat64) - b.mean.to(torch::kFloat64)).pow(2).sum().item<double>();
  const double d = mean_term + s1.trace().item<double>() + s2.trace().item<double>() - 2 * cross;
  return std::max(0.0, d);
}

double frechet_distance(const torch::Tensor& a, const torch::Tensor& b) {
  return frechet_distance(feature_moments(a), feature_moments(b));
}

double mean_pairwise_distance(const torch::Tensor& features) {
  auto x = rows64("mean_pairwise_distance", features, 2);
  return torch::pdist(x).mean().item<double>();  // the N(N−1)/2 distances of i < j
}

double mean_pairwise_dissimilarity(const torch::Tensor& images, int64_t pairs_per_batch) {
  if (images.dim() != 4 || images.size(1) != 3) fail("mean_pairwise_dissimilarity", images, "images [N, 3, H, W]");
  if (images.size(0) < 2) fail("mean_pairwise_dissimilarity", images, "at least 2 images");
  if (pairs_per_batch < 1) throw std::invalid_argument("mean_pairwise_dissimilarity: pairs_per_batch must be >= 1");
  torch::NoGradGuard no_grad;
  auto x = ((images.detach().to(torch::kFloat64) + 1) / 2);  // [-1, 1] -> [0, 1]
  auto pairs = torch::triu_indices(x.size(0), x.size(0), 1, torch::TensorOptions().dtype(torch::kLong));  // [2, P]
  const int64_t P = pairs.size(1);
  // ef::ssim averages over the whole batch; every pair has the same number of pixels, so the mean
  // over a batch of pairs weighted by its size is the mean over pairs.
  double total = 0;
  for (int64_t start = 0; start < P; start += pairs_per_batch) {
    const int64_t end = std::min(P, start + pairs_per_batch);
    auto i = pairs[0].slice(0, start, end).to(x.device()), j = pairs[1].slice(0, start, end).to(x.device());
    total += double(end - start) * ssim(x.index_select(0, i), x.index_select(0, j)).item<double>();
  }
  return 1.0 - total / double(P);
}

torch::Tensor nearest_distances(const torch::Tensor& samples, const torch::Tensor& train) {
  auto s = rows64("nearest_distances (samples)", samples, 0);
  auto t = rows64("nearest_distances (train)", train, 1);
  if (s.size(1) != t.size(1)) {
    std::ostringstream msg;
    msg << "nearest_distances: feature sizes differ: samples " << s.sizes() << ", train " << t.sizes();
    throw std::invalid_argument(msg.str());
  }
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < s.size(0); start += kBlock)
    parts.push_back(std::get<0>(distances(s.slice(0, start, start + kBlock), t).min(1)));
  return parts.empty() ? torch::zeros({0}, torch::kFloat64) : torch::cat(parts);
}

double copy_fraction(const torch::Tensor& samples, const torch::Tensor& train, double threshold) {
  auto d = nearest_distances(samples, train);
  if (d.numel() == 0) throw std::invalid_argument("copy_fraction: no samples");
  return (d < threshold).to(torch::kFloat64).mean().item<double>();
}

double copy_threshold(const torch::Tensor& train, double factor) {
  auto t = rows64("copy_threshold", train, 2);
  const int64_t M = t.size(0);
  std::vector<double> nearest;
  nearest.reserve(size_t(M));
  for (int64_t start = 0; start < M; start += kBlock) {
    auto d = distances(t.slice(0, start, start + kBlock), t);  // [B, M]
    // Leave one out: a feature's distance to itself is not its nearest neighbour.
    const int64_t B = d.size(0);
    auto rows = torch::arange(B, torch::kLong), cols = rows + start;
    d.index_put_({rows, cols}, std::numeric_limits<double>::infinity());
    auto m = std::get<0>(d.min(1)).contiguous();
    nearest.insert(nearest.end(), m.data_ptr<double>(), m.data_ptr<double>() + B);
  }
  std::sort(nearest.begin(), nearest.end());
  const size_t n = nearest.size();
  const double median = n % 2 ? nearest[n / 2] : (nearest[n / 2 - 1] + nearest[n / 2]) / 2;
  return factor * median;
}

}  // namespace ef
