#include "splatting/gaussians.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace ef::splat {

int64_t GaussianParams::sh_degree() const {
  if (!sh.defined()) return 0;
  const auto k = sh.size(1);
  const auto degree = static_cast<int64_t>(std::lround(std::sqrt(double(k)))) - 1;
  if (sh_coeffs(degree) != k) throw std::invalid_argument("gaussians: sh has " + std::to_string(k) + " coefficients, not (L+1)^2");
  return degree;
}

std::map<std::string, torch::Tensor*> GaussianParams::fields() {
  std::map<std::string, torch::Tensor*> f{{"means", &means}, {"scales", &scales}, {"quats", &quats}, {"opacities", &opacities}, {"sh", &sh}};
  for (auto& [name, t] : extras) f.emplace(name, &t);
  return f;
}

void GaussianParams::check() const {
  const int64_t n = size();
  auto expect = [n](const torch::Tensor& t, const std::string& name, std::vector<int64_t> tail) {
    std::vector<int64_t> want{n};
    want.insert(want.end(), tail.begin(), tail.end());
    if (!t.defined() || t.sizes().vec() != want) {
      std::ostringstream s;
      s << "gaussians: " << name << " should be " << c10::IntArrayRef(want) << ", got " << (t.defined() ? t.sizes() : c10::IntArrayRef{});
      throw std::invalid_argument(s.str());
    }
  };
  expect(means, "means", {3});
  expect(scales, "scales", {3});
  expect(quats, "quats", {4});
  expect(opacities, "opacities", {});
  if (!sh.defined() || sh.dim() != 3 || sh.size(0) != n || sh.size(2) != 3)
    throw std::invalid_argument("gaussians: sh should be [N, K, 3]");
  sh_degree();
  for (const auto& [name, t] : extras)
    if (!t.defined() || t.size(0) != n) throw std::invalid_argument("gaussians: extra '" + name + "' does not have N rows");
}

}  // namespace ef::splat
