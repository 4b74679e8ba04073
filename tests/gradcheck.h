#pragma once
// Finite-difference gradient checks (LibTorch's C++ API has no gradcheck).
//
// `f` computes a tensor from the leaf tensors `leaves` (inputs and/or parameters, double precision,
// requires_grad). The check reduces f to L = sum(w * f()) with a fixed random w, takes dL/dleaf by
// autograd, and compares it with central differences on up to `max_entries` entries per leaf.
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

namespace ef::test {

struct GradcheckResult {
  double max_abs_error = 0;   // |autograd - numeric|, largest over checked entries
  double max_rel_error = 0;   // |autograd - numeric| / max(1, |numeric|)
  int64_t checked = 0;
  std::string worst;          // "leaf 2 entry 17: autograd .. numeric .."
};

inline GradcheckResult gradcheck(const std::function<torch::Tensor()>& f, const std::vector<torch::Tensor>& leaves,
                                 double eps = 1e-6, int64_t max_entries = 24, uint64_t seed = 0) {
  for (const auto& t : leaves)
    if (t.scalar_type() != torch::kFloat64 || !t.requires_grad())
      throw std::invalid_argument("gradcheck: leaves must be float64 tensors that require grad");
  torch::Tensor w;
  {
    torch::NoGradGuard no_grad;
    auto gen = at::detail::createCPUGenerator(seed);
    torch::Tensor out = f();
    w = torch::randn(out.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat64));
  }
  for (const auto& t : leaves)
    if (t.grad().defined()) t.mutable_grad() = torch::Tensor();
  (f() * w).sum().backward();
  std::vector<torch::Tensor> analytic;
  for (const auto& t : leaves) analytic.push_back(t.grad().defined() ? t.grad().clone() : torch::zeros_like(t));

  GradcheckResult r;
  torch::NoGradGuard no_grad;
  auto loss = [&] { return (f() * w).sum().item<double>(); };
  for (size_t li = 0; li < leaves.size(); ++li) {
    torch::Tensor flat = leaves[li].detach().view(-1);  // shares storage with the leaf
    double* data = flat.data_ptr<double>();
    const double* grad = analytic[li].contiguous().data_ptr<double>();
    const int64_t n = flat.numel(), step = std::max<int64_t>(1, n / max_entries);
    for (int64_t j = 0; j < n; j += step) {
      const double keep = data[j];
      data[j] = keep + eps;
      const double up = loss();
      data[j] = keep - eps;
      const double down = loss();
      data[j] = keep;
      const double numeric = (up - down) / (2 * eps), err = std::abs(numeric - grad[j]);
      const double rel = err / std::max(1.0, std::abs(numeric));
      ++r.checked;
      if (rel > r.max_rel_error) {
        r.max_rel_error = rel;
        r.worst = "leaf " + std::to_string(li) + " entry " + std::to_string(j) + ": autograd " + std::to_string(grad[j]) + ", numeric " +
                  std::to_string(numeric);
      }
      r.max_abs_error = std::max(r.max_abs_error, err);
    }
  }
  return r;
}

// All parameters of a module (after module->to(torch::kFloat64)).
inline std::vector<torch::Tensor> parameters_of(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p);
  return out;
}

}  // namespace ef::test
