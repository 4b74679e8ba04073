#pragma once
// Quantization-aware training of the weights (`quant.qat`): every step runs its forward and
// backward at the fake-quantized weights the export stage will write, by the one rule of
// core/quant_rule.h (per output channel for Linear/Conv weights, one scale for other parameters of
// rank >= 2, float for the rest and for export.float_layers), and the update lands on float master
// weights, as the straight-through estimator prescribes:
//
//   w  <- w + (w_q' - w_q)   where w_q' is w_q after the optimizer step (its gradient taken at w_q)
//
// so any optimizer (its moments included) sees the quantized network. Activations are not fake-
// quantized while training; their ranges are calibrated at export.
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "core/config.h"
#include "core/quant_rule.h"

namespace ef {

struct QatOptions {
  bool enabled = false;
  int bits = 8;  // weight bits: 8 for w8a8/w8a16 exports, 4 for w4a8
  // The `quant` section (absent: off): qat (false), bits (8).
  static QatOptions from(const Config& config);
};

// Symmetric per-channel fake quantization along axis 0 (the rule's Linear/Conv weights).
inline torch::Tensor fake_quantize_weight(const torch::Tensor& w, int bits) { return fake_quantize(w, {ParamQuant::Kind::PerChannel, 0}, bits); }

class WeightFakeQuant {
 public:
  // `modules`: the networks whose weights train quantized (asked at every step: a recipe may
  // replace tensors between steps).
  using Modules = std::function<std::vector<torch::nn::Module*>()>;
  WeightFakeQuant(Modules modules, int bits, std::vector<std::string> float_layers = {})
      : modules_(std::move(modules)), bits_(bits), float_layers_(std::move(float_layers)) {}
  // Before a training step: keep the float masters, put their fake-quantized values in place.
  void enter();
  // After it: apply the step's change to the masters (straight-through); the weights are float again.
  void leave();

 private:
  Modules modules_;
  int bits_;
  std::vector<std::string> float_layers_;  // export.float_layers: trained (and exported) in float
  std::vector<torch::Tensor> weights_, masters_, quantized_;
};

}  // namespace ef
