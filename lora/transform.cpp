#include "lora/transform.h"

#include <cmath>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>

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

namespace {

// One copy of each matrix per (kind, size, role, device, dtype) for the whole process: the layers
// of a network share a few widths, and a 1280-wide DCT is 6.5 MB in float (13 MB in float64).
enum class Role { dct, forward_maps, inverse_maps };
const std::vector<torch::Tensor>& shared_matrices(TransformKind kind, int64_t n, Role role, torch::Device device, torch::ScalarType dtype,
                                                  const std::function<std::vector<torch::Tensor>()>& make) {
  using Key = std::tuple<int, int64_t, int, std::string, int>;
  static std::mutex mutex;
  static std::map<Key, std::vector<torch::Tensor>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  Key key{static_cast<int>(kind), n, static_cast<int>(role), device.str(), static_cast<int>(dtype)};
  auto it = cache.find(key);
  if (it == cache.end()) {
    std::vector<torch::Tensor> made = make();
    for (auto& m : made) m = m.to(device, dtype);
    it = cache.emplace(key, std::move(made)).first;
  }
  return it->second;
}

}  // namespace

SpectralTransform::SpectralTransform(TransformKind kind, int64_t n) : kind_(kind), n_(n) {
  if (n < 1) throw std::invalid_argument("transform size must be >= 1");
}

int64_t SpectralTransform::bins() const { return kind_ == TransformKind::dft ? n_ / 2 + 1 : n_; }

const torch::Tensor& SpectralTransform::matrix_like(const torch::Tensor& x) const {
  const int64_t n = n_;
  return shared_matrices(kind_, n, Role::dct, x.device(), x.scalar_type(), [n] { return std::vector<torch::Tensor>{dct_matrix(n)}; })
      .front();
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

std::vector<torch::Tensor> SpectralTransform::forward_matrices(const torch::TensorOptions& like) const {
  const int64_t n = n_;
  const TransformKind kind = kind_;
  return shared_matrices(kind_, n_, Role::forward_maps, like.device(), torch::typeMetaToScalarType(like.dtype()),
                         [kind, n] { return make_forward_matrices(kind, n); });
}

std::vector<torch::Tensor> SpectralTransform::inverse_matrices(const torch::TensorOptions& like) const {
  const int64_t n = n_;
  const TransformKind kind = kind_;
  return shared_matrices(kind_, n_, Role::inverse_maps, like.device(), torch::typeMetaToScalarType(like.dtype()),
                         [kind, n] { return make_inverse_matrices(kind, n); });
}

std::vector<torch::Tensor> SpectralTransform::make_forward_matrices(TransformKind kind, int64_t n_) {
  if (kind == TransformKind::dct) return {dct_matrix(n_)};
  // Row i of rfft(I) is the spectrum of e_i: transposed, column i of the map.
  torch::Tensor s = torch::fft::rfft(torch::eye(n_, torch::kFloat64), n_, -1, "ortho");  // [N, bins]
  return {torch::real(s).t().contiguous(), torch::imag(s).t().contiguous()};
}

std::vector<torch::Tensor> SpectralTransform::make_inverse_matrices(TransformKind kind, int64_t n_) {
  if (kind == TransformKind::dct) return {dct_matrix(n_).t().contiguous()};
  const int64_t b = n_ / 2 + 1;
  torch::Tensor eye = torch::eye(b, torch::kFloat64), zero = torch::zeros({b, b}, torch::kFloat64);
  torch::Tensor from_real = torch::fft::irfft(torch::complex(eye, zero), n_, -1, "ortho");  // [bins, N]
  torch::Tensor from_imag = torch::fft::irfft(torch::complex(zero, eye), n_, -1, "ortho");
  return {from_real.t().contiguous(), from_imag.t().contiguous()};
}

}  // namespace ef::lora
