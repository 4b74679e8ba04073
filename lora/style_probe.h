#pragma once
// The style classifier of the style recipe's metrics: a logistic-regression probe on image features
// (the frozen autoencoder's pooled latent and colour/gradient statistics, lora/style_features.h),
// fitted to tell the styled images of a style set from the same scenes unfiltered. "Style strength"
// of a generated image is the probe's probability that it is styled.
//
// Fitted in closed loop on the run's own data at the start of every evaluation, deterministically
// (full-batch gradient descent from zero weights on standardised features, fixed iterations), so the
// same run always scores with the same probe and no extra network has to be trained or stored.
#include <torch/torch.h>

namespace ef::lora {

class StyleProbe {
 public:
  // styled, plain: features [N, D] and [M, D] of styled and unstyled images.
  static StyleProbe fit(const torch::Tensor& styled, const torch::Tensor& plain, int64_t iterations = 500, double l2 = 1e-3);
  // features [N, D] -> P(styled) [N]
  torch::Tensor probability(const torch::Tensor& features) const;
  // Fraction of both sets classified correctly at 0.5 (the probe's held-out check).
  double accuracy(const torch::Tensor& styled, const torch::Tensor& plain) const;

 private:
  torch::Tensor mean_, scale_, weight_;  // [D], [D], [D]
  double bias_ = 0.0;
};

}  // namespace ef::lora
