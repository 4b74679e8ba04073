#pragma once
// PADRe: Polynomial Attention Drop-in Replacement (Letourneau et al., arXiv 2407.11306).
// Every output entry is a polynomial of degree `degree` in the input entries, built from
// linear maps (pointwise channel mixing B_i, D_i, V; depthwise k x k token mixing A_i, C_i) and
// Hadamard products; no softmax, linear cost in the number of tokens. See README.md beside this file.
//
//   y_k = A_k(X B_k),                       k = 1..d     (one fused pointwise + depthwise conv)
//   z_1 = y_1,  z_{k+1} = C_k(norm(z_k) D_k) * y_{k+1}   (Hadamard product)
//   p   = sum_k a_k * z_k   (per-channel a_k; or p = z_d with combine = "last")
//   out = p V
#include "models/adaptable.h"
#include "models/attention/attention.h"

namespace ef {

struct PADReOptions {
  int64_t degree = 3;               // d >= 1
  int64_t kernel = 11;              // token-mixing kernel (k x k on the patch grid, k on 1-D)
  std::string mixing = "auto";      // auto (conv2d when the grid is known, else conv1d) | conv2d | conv1d
  std::string norm = "layernorm";   // on z_k before the next product: none | layernorm | l2
  std::string combine = "sum";      // sum: p = sum_k a_k z_k | last: p = z_d
  std::string prefix_mixing = "mean";  // class token row of A_k, C_k: mean (own value + mean of the patch tokens) | pointwise
  bool bias = true;                 // biases of the linear maps (the degree-0 terms)
  static PADReOptions from(const Config& c);
};

class PADReImpl : public TokenMixerImpl {
 public:
  PADReImpl(const AttentionShape& shape, const Config& options);
  PADReImpl(const AttentionShape& shape, const PADReOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;  // [B, N, C] -> [B, N, C]
  double flops(int64_t tokens) const override;
  const PADReOptions& options() const { return opt_; }
  bool two_d() const { return two_d_; }

  // Token mixing with the depthwise kernel `weight` ([Ch, 1, k, k] or [Ch, 1, k]) and `bias` [Ch]
  // (undefined: none): u [B, N, Ch] -> [B, N, Ch]; the grid part is convolved with zero padding,
  // the prefix tokens take the kernel's centre tap (plus the patch mean with prefix_mixing = mean).
  torch::Tensor token_mix(const torch::Tensor& u, const torch::Tensor& weight, const torch::Tensor& bias) const;

  ef::nn::Linear y_proj{nullptr};        // B_1..B_d fused: C -> d*C
  torch::Tensor y_mix_weight, y_mix_bias;   // A_1..A_d: depthwise, d*C channels
  torch::nn::ModuleList z_proj{nullptr};    // D_1..D_{d-1}: C -> C
  std::vector<torch::Tensor> z_mix_weight, z_mix_bias;  // C_1..C_{d-1}: depthwise, C channels
  torch::Tensor coeff;                      // a_k: [d, C]
  ef::nn::Linear proj{nullptr};          // V

 private:
  torch::Tensor normalize(const torch::Tensor& z) const;
  AttentionShape shape_;
  PADReOptions opt_;
  bool two_d_ = false;
};

}  // namespace ef
