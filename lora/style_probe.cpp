#include "lora/style_probe.h"

namespace ef::lora {

StyleProbe StyleProbe::fit(const torch::Tensor& styled, const torch::Tensor& plain, int64_t iterations, double l2) {
  TORCH_CHECK(styled.dim() == 2 && plain.dim() == 2 && styled.size(1) == plain.size(1) && styled.size(0) > 0 && plain.size(0) > 0,
              "StyleProbe::fit: expected features [N, D] and [M, D], got ", styled.sizes(), " and ", plain.sizes());
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::cat({styled, plain}).to(torch::kFloat64).cpu();
  torch::Tensor y = torch::cat({torch::ones({styled.size(0)}), torch::zeros({plain.size(0)})}).to(torch::kFloat64);
  StyleProbe p;
  p.mean_ = x.mean(0);
  p.scale_ = x.std(0, /*unbiased=*/false).clamp_min(1e-6);
  torch::Tensor z = (x - p.mean_) / p.scale_;
  torch::Tensor w = torch::zeros({x.size(1)}, torch::kFloat64);
  double b = 0.0;
  // Standardised features make the logistic loss's curvature at most 1/4 per unit feature, so a
  // fixed step converges without a line search.
  const double step = 1.0;
  for (int64_t i = 0; i < iterations; ++i) {
    torch::Tensor err = torch::sigmoid(z.matmul(w) + b) - y;  // dLoss/dlogit
    w -= step * (z.t().matmul(err) / static_cast<double>(x.size(0)) + l2 * w);
    b -= step * err.mean().item<double>();
  }
  p.weight_ = w;
  p.bias_ = b;
  return p;
}

torch::Tensor StyleProbe::probability(const torch::Tensor& features) const {
  torch::Tensor z = (features.to(torch::kFloat64).cpu() - mean_) / scale_;
  return torch::sigmoid(z.matmul(weight_) + bias_).to(torch::kFloat32);
}

double StyleProbe::accuracy(const torch::Tensor& styled, const torch::Tensor& plain) const {
  const double hits = (probability(styled) >= 0.5).sum().item<double>() + (probability(plain) < 0.5).sum().item<double>();
  return hits / static_cast<double>(styled.size(0) + plain.size(0));
}

}  // namespace ef::lora
