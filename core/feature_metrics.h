#pragma once
// Distribution metrics on feature vectors, for scoring generated samples without pretrained
// networks: features come from whatever frozen encoder a study chooses (rows of [N, D]). Quality
// (Fréchet distance, the FID recipe on our own features), diversity (mean pairwise distance; 1−SSIM
// on images) and data copying (distance to the nearest training feature). Knows no method.
//
// Everything accumulates in float64 on the CPU, whatever the inputs' dtype and device: covariances
// and their square roots lose too much in float32 at D in the hundreds.
#include <torch/torch.h>

namespace ef {

// --- quality: Fréchet distance ---------------------------------------------------------------------
// Mean and covariance of the rows of `features` [N, D]: mean [D], cov [D, D] with the unbiased
// estimator (X − μ)ᵀ(X − μ) / (N − 1), so N > 1 is required (std::invalid_argument otherwise).
struct FeatureMoments {
  torch::Tensor mean;  // [D] float64
  torch::Tensor cov;   // [D, D] float64, symmetric
  int64_t count = 0;   // N
};
FeatureMoments feature_moments(const torch::Tensor& features);

// The Fréchet (2-Wasserstein) distance between the Gaussians fitted to two feature sets:
//   ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2})
// (a squared distance, in squared feature units, as FID reports it). Both square roots go through
// symmetric eigendecompositions (linalg_eigh) with tiny negative eigenvalues, rounding noise of
// covariances that are only positive semi-definite (N ≤ D, collinear features), clamped to 0;
// unlike scipy's sqrtm on Σ1Σ2 this never yields complex parts. The result is clamped at 0 (it
// can round to −1e-15 for identical sets). The estimate is biased upwards for small N: compare
// values computed with equal sample counts.
double frechet_distance(const FeatureMoments& a, const FeatureMoments& b);
double frechet_distance(const torch::Tensor& a, const torch::Tensor& b);  // [N, D], [M, D]

// --- diversity within one group (e.g. the samples of one prompt across seeds) ----------------------
// Mean Euclidean distance over the N(N−1)/2 unordered pairs of rows of `features` [N, D], N > 1.
double mean_pairwise_distance(const torch::Tensor& features);

// Mean of 1 − SSIM over the unordered pairs of `images` [N, 3, H, W] with values in [−1, 1] (the
// diffusion models' range), N > 1. Images are mapped to [0, 1] first, the range whose SSIM constants
// (C1 = 0.01², C2 = 0.03²) ef::ssim uses (core/image_metrics.h). 0 for identical images; larger is
// more diverse. Pairs go through SSIM in batches of `pairs_per_batch` to bound memory.
double mean_pairwise_dissimilarity(const torch::Tensor& images, int64_t pairs_per_batch = 64);

// --- data copying --------------------------------------------------------------------------------
// For each row of `samples` [N, D], the Euclidean distance to its nearest row of `train` [M, D]:
// [N] float64. Computed in blocks of samples so that memory stays O(block · M).
torch::Tensor nearest_distances(const torch::Tensor& samples, const torch::Tensor& train);

// Fraction of samples whose nearest training feature is closer than `threshold` (strictly): the
// share of likely copies, in [0, 1]. (The brief's §5 wording counts the complement, the fraction
// at or above the threshold: 1 − this.)
double copy_fraction(const torch::Tensor& samples, const torch::Tensor& train, double threshold);

// A default threshold from the training set itself: `factor` × the median, over training features,
// of the distance to their nearest *other* training feature (leave-one-out; M > 1). The median
// nearest-neighbour spacing is the scale at which two distinct training images sit apart, so a
// sample much closer than that to one training feature (factor 0.5 by default) is nearer to it than
// typical training images are to each other: a copy rather than a new sample of the same class.
// The median is robust to the duplicates and outliers a small set has; for an even M it is the mean
// of the two middle values. Exact duplicates in `train` count as distance 0 for each other.
double copy_threshold(const torch::Tensor& train, double factor = 0.5);

}  // namespace ef
