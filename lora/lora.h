#pragma once
// LoRA (Hu et al., arXiv 2106.09685): y = W0 x + s · B A x with A ∈ R^{r×d_in}, B ∈ R^{d_out×r}
// and s = α/r (or α/√r with rsLoRA, Kalajdzievski, arXiv 2312.03732). A is Kaiming-uniform and B
// zero, so a fresh adapter leaves the network unchanged. Layout and names follow PEFT
// (src/peft/tuners/lora/layer.py), so files interchange (lora/peft.h):
//   Linear: lora_A = Linear(d_in -> r), lora_B = Linear(r -> d_out), both without bias;
//   Conv2d: lora_A = Conv2d(d_in -> r) with the base's kernel/stride/padding/dilation,
//           lora_B = Conv2d(r -> d_out, 1x1); ΔW[o,i,:,:] = s Σ_j B[o,j] A[j,i,:,:].
#include "lora/adapter.h"

namespace ef::lora {

struct LoraOptions {
  int64_t rank = 8;       // r >= 1
  double alpha = 8.0;     // α (PEFT's lora_alpha)
  bool rslora = false;    // s = α/√r instead of α/r
  double dropout = 0.0;   // on the branch's input while training (PEFT's lora_dropout), in [0, 1)
  static LoraOptions from(const Config& c);
  double scaling() const;
};

class LoraImpl : public AdapterImpl {
 public:
  LoraImpl(const LayerShape& shape, const LoraOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;  // strength · s · B(A(dropout(x)))
  bool weight_equivalent() const override { return opt_.dropout == 0.0 || !is_training(); }
  bool trains_as_weight() const override { return opt_.dropout == 0.0; }
  torch::Tensor delta_weight() override;                   // strength · s · B A, in the base weight's layout
  std::string kind() const override { return "lora"; }
  nlohmann::json options_json() const override;
  const LoraOptions& options() const { return opt_; }

  // Exactly one of each pair is set, by the layer kind. Parameter names: lora_A.weight, lora_B.weight.
  torch::nn::Linear lora_A_linear{nullptr}, lora_B_linear{nullptr};
  torch::nn::Conv2d lora_A_conv{nullptr}, lora_B_conv{nullptr};
  torch::Tensor& A();  // [r, d_in] or [r, d_in, kh, kw]
  torch::Tensor& B();  // [d_out, r] or [d_out, r, 1, 1]

 private:
  LoraOptions opt_;
};

}  // namespace ef::lora
