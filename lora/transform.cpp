#include "lora/transform.h"

#include <cmath>
#include <stdexcept>

namespace ef::lora {

TransformKind parse_transform(const std::string& name) {
  if (name == "dct") return TransformKind::dct;
  if (name == "dft") return TransformKind::dft;
  throw std::invalid_argument("unknown transform '" + name + "' (dct | dft)");
}

std::string to_string(TransformKind kind) { return kind == TransformKind::dct ? "dct" : "dft"; }

torch::Tensor dct_matrix(int64_t n) {
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor k = torch::arange(n, f64).unsqueeze(1), m = torch::arange(n, f64).unsqueeze(0);
  torch::Tensor c = torch::cos(M_PI * (2 * m + 1) * k / (2.0 * static_cast<double>(n)));
  c *= std::sqrt(2.0 / static_cast<double>(n));
  c[0] *= std::sqrt(0.5);  // s_0 = √(1/N)
  return c;
}

SpectralTransform::SpectralTransform(TransformKind kind, int64_t n) : kind_(kind), n_(n) {
  if (n < 1) throw std::invalid_argument("transform size must be >= 1");
  if (kind_ == TransformKind::dct) dct_ = dct_matrix(n).to(torch::kFloat32);
}

int64_t SpectralTransform::bins() const { return kind_ == TransformKind::dft ? n_ / 2 + 1 : n_; }

const torch::Tensor& SpectralTransform::matrix_like(const torch::Tensor& x) {
  if (dct_.device() != x.device() || dct_.scalar_type() != x.scalar_type())
    dct_ = dct_matrix(n_).to(x.device(), x.scalar_type());
  return dct_;
}

torch::Tensor SpectralTransform::forward(const torch::Tensor& x, int64_t dim) {
  TORCH_CHECK(x.size(dim) == n_, "transform of size ", n_, " applied to an axis of size ", x.size(dim));
  if (kind_ == TransformKind::dct)
    return torch::matmul(x.movedim(dim, -1), matrix_like(x).t()).movedim(-1, dim);
  torch::Tensor s = torch::fft::rfft(x, n_, dim, "ortho");
  return torch::cat({torch::real(s), torch::imag(s)}, 0);
}

torch::Tensor SpectralTransform::inverse(const torch::Tensor& u, int64_t dim) {
  TORCH_CHECK(u.size(dim) == bins(), "inverse transform expects ", bins(), " bins, got ", u.size(dim));
  if (kind_ == TransformKind::dct) return torch::matmul(u.movedim(dim, -1), matrix_like(u)).movedim(-1, dim);
  auto halves = u.chunk(2, 0);
  return torch::fft::irfft(torch::complex(halves[0].contiguous(), halves[1].contiguous()), n_, dim, "ortho");
}

std::vector<torch::Tensor> SpectralTransform::forward_matrices() const {
  if (kind_ == TransformKind::dct) return {dct_matrix(n_)};
  // Row i of rfft(I) is the spectrum of e_i: transposed, column i of the map.
  torch::Tensor s = torch::fft::rfft(torch::eye(n_, torch::kFloat64), n_, -1, "ortho");  // [N, bins]
  return {torch::real(s).t().contiguous(), torch::imag(s).t().contiguous()};
}

std::vector<torch::Tensor> SpectralTransform::inverse_matrices() const {
  if (kind_ == TransformKind::dct) return {dct_matrix(n_).t().contiguous()};
  const int64_t b = bins();
  torch::Tensor eye = torch::eye(b, torch::kFloat64), zero = torch::zeros({b, b}, torch::kFloat64);
  torch::Tensor from_real = torch::fft::irfft(torch::complex(eye, zero), n_, -1, "ortho");  // [bins, N]
  torch::Tensor from_imag = torch::fft::irfft(torch::complex(zero, eye), n_, -1, "ortho");
  return {from_real.t().contiguous(), from_imag.t().contiguous()};
}

}  // namespace ef::lora
