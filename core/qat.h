#pragma once
// Quantization-aware training of the weights (`quant.qat`): every step runs its forward and
// backward at the fake-quantized weights the export stage will write (symmetric, per output
// channel: the first axis of Linear/Conv weights, one scale for a [1, ...] embedding), and the
// update lands on float master weights, as the straight-through estimator prescribes:
//
//   w_q = s * clamp(round(w / s), -Q, Q),  s = max|w_c| / Q per channel c,  Q = 2^(bits-1) - 1
//   w  <- w + (w_q' - w_q)   where w_q' is w_q after the optimizer step (its gradient taken at w_q)
//
// so any optimizer (its moments included) sees the quantized network. Activations are not fake-
// quantized while training; their ranges are calibrated at export. Parameters of rank >= 2 are the
// quantized ones (Linear and Conv weights, embeddings); biases and norms stay float, as exported.
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "core/config.h"

namespace ef {

struct QatOptions {
  bool enabled = false;
  int bits = 8;  // weight bits: 8 for w8a8/w8a16 exports, 4 for w4a8
  // The `quant` section (absent: off): qat (false), bits (8).
  static QatOptions from(const Config& config);
};

// Symmetric per-channel fake quantization along axis 0 (round half to even, as ONNX's QuantizeLinear).
torch::Tensor fake_quantize_weight(const torch::Tensor& w, int bits);

class WeightFakeQuant {
 public:
  // `modules`: the networks whose weights train quantized (asked at every step: a recipe may
  // replace tensors between steps).
  using Modules = std::function<std::vector<torch::nn::Module*>()>;
  WeightFakeQuant(Modules modules, int bits) : modules_(std::move(modules)), bits_(bits) {}
  // Before a training step: keep the float masters, put their fake-quantized values in place.
  void enter();
  // After it: apply the step's change to the masters (straight-through); the weights are float again.
  void leave();

 private:
  Modules modules_;
  int bits_;
  std::vector<torch::Tensor> weights_, masters_, quantized_;
};

}  // namespace ef
