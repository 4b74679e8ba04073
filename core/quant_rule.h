#pragma once
// The one quantization rule: which parameters of a network are quantized, along which axis and on
// which grid. Quantization-aware training (core/qat.h) fake-quantizes by it and export
// (export/quantize.cpp) writes by it, so the network QAT trains is the network exported.
//
//   the weight of a Linear or Conv{1,2,3}d module   symmetric, one scale per output channel
//                                                    (axis 0 of the stored tensor)
//   any other parameter of rank >= 2                 symmetric, one scale for the tensor
//   (embeddings, position tables, PADRe's taps and   (its axes have no common meaning)
//   coefficient maps, raw matmul weights)
//   rank < 2 (biases, norm affines, scalars)         float
//   under an export.float_layers prefix              float (mixed precision)
//
// Grid, for b weight bits, Q = 2^(b-1) - 1:  s = max|w| / Q over the channel (or tensor),
// w_q = s * clamp(round(w / s), -Q, Q) with round half to even (ONNX QuantizeLinear's rounding).
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace ef {

struct ParamQuant {
  enum class Kind { Float, PerChannel, PerTensor };
  Kind kind = Kind::Float;
  int64_t axis = 0;  // PerChannel: the output-channel axis of the stored parameter
  bool quantized() const { return kind != Kind::Float; }
};

// True when `parameter` ("blocks.0.attn.qkv.weight") lies under one of the prefixes ("blocks.0.attn").
bool in_float_layers(const std::string& parameter, const std::vector<std::string>& float_layers);

// The rule applied to every parameter of `network` (names as its named_parameters()).
std::map<std::string, ParamQuant> quant_plan(torch::nn::Module& network, const std::vector<std::string>& float_layers = {});

// The scale of `w` under `q`: one per channel along q.axis ([C]), or a 0-d tensor for PerTensor.
torch::Tensor quant_scale(const torch::Tensor& w, const ParamQuant& q, int bits);
// The integer codes round(w / s) clamped to [-Q, Q], as float (the caller picks the storage type).
torch::Tensor quant_codes(const torch::Tensor& w, const torch::Tensor& scale, const ParamQuant& q, int bits);
// s * codes: what the exported DequantizeLinear gives back. Float parameters are returned as they are.
torch::Tensor fake_quantize(const torch::Tensor& w, const ParamQuant& q, int bits);

}  // namespace ef
