#pragma once
// Adam over the scene's per-Gaussian fields (and the renderer's few global parameters), one
// learning rate per field, whose moment rows follow the Gaussians when densification clones,
// splits, prunes or resets them. (LibTorch's Adam keys its state by tensor and cannot do row
// surgery; the update itself is the standard bias-corrected Adam.)
#include <torch/torch.h>

#include <map>
#include <string>

namespace ef::splat {

class SplatAdam {
 public:
  explicit SplatAdam(double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-15) : beta1_(beta1), beta2_(beta2), eps_(eps) {}

  // `per_gaussian`: the field's first dimension is the Gaussian index (rows follow densification).
  // `lr_scale` (optional, broadcastable to the parameter without its first dimension) gives parts
  // of a field their own rate: the SH rest coefficients learn at 1/20 of the DC rate.
  void add(const std::string& name, torch::Tensor param, double lr, bool per_gaussian, torch::Tensor lr_scale = {});
  void set_lr(const std::string& name, double lr);
  double lr(const std::string& name) const;
  // One update of every parameter that has a gradient; gradients are cleared afterwards.
  void step();
  void zero_grad();

  // Row surgery on every per-Gaussian field's moments: keep rows where `keep` [N] is true,
  // append `n` zero rows, zero the rows of one field where `rows` is true.
  void keep_rows(const torch::Tensor& keep);
  void append_zero_rows(int64_t n);
  void zero_rows(const std::string& name, const torch::Tensor& rows);

  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  struct Slot {
    torch::Tensor param, m, v, lr_scale;
    double lr = 0;
    int64_t steps = 0;
    bool per_gaussian = true;
  };
  std::map<std::string, Slot> slots_;
  double beta1_, beta2_, eps_;
};

}  // namespace ef::splat
