#include "core/image_metrics.h"

namespace ef {

namespace {

torch::Tensor as_bchw(const torch::Tensor& t) {
  if (t.dim() == 3) return t.permute({2, 0, 1}).unsqueeze(0);  // [H, W, C]
  TORCH_CHECK(t.dim() == 4, "image metrics: expected [H, W, C] or [B, C, H, W], got ", t.sizes());
  return t;
}

torch::Tensor gaussian_window(int64_t size, double sigma, const torch::TensorOptions& opts) {
  auto x = torch::arange(size, opts) - double(size / 2);
  auto g = torch::exp(-(x * x) / (2 * sigma * sigma));
  g = g / g.sum();
  return torch::outer(g, g);
}

}  // namespace

torch::Tensor psnr(const torch::Tensor& image, const torch::Tensor& target) {
  TORCH_CHECK(image.sizes() == target.sizes(), "psnr: shapes differ: ", image.sizes(), " vs ", target.sizes());
  return -10 * torch::log10(torch::mean((image - target).pow(2)).clamp_min(1e-20));
}

torch::Tensor ssim(const torch::Tensor& image, const torch::Tensor& target) {
  TORCH_CHECK(image.sizes() == target.sizes(), "ssim: shapes differ: ", image.sizes(), " vs ", target.sizes());
  auto x = as_bchw(image), y = as_bchw(target);
  const int64_t C = x.size(1), k = 11;
  auto w = gaussian_window(k, 1.5, x.options()).expand({C, 1, k, k}).contiguous();
  auto conv = [&](const torch::Tensor& t) {
    return torch::nn::functional::conv2d(t, w, torch::nn::functional::Conv2dFuncOptions().padding(k / 2).groups(C));
  };
  auto mx = conv(x), my = conv(y);
  auto sxx = conv(x * x) - mx * mx, syy = conv(y * y) - my * my, sxy = conv(x * y) - mx * my;
  const double C1 = 0.01 * 0.01, C2 = 0.03 * 0.03;
  auto map = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx * mx + my * my + C1) * (sxx + syy + C2));
  return map.mean();
}

}  // namespace ef
