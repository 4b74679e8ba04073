#pragma once
// Post-training quantization of a captured graph: observers calibrate one range per activation
// point (min-max, percentile or MSE-optimal clipping), weights get per-channel symmetric scales,
// and QuantizeLinear/DequantizeLinear pairs are inserted (QDQ format). The result runs in the
// Interpreter (the LibTorch simulation) and in ONNX Runtime alike, and yields the AIMET encodings.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "export/capture.h"

namespace ef::exporter {

struct QuantScheme {
  std::string name = "fp32";   // fp32 | fp16 | w8a8 | w8a16 | w4a8
  bool half = false;           // fp16: every float tensor in half precision
  int weight_bits = 0;         // 0: float weights
  int act_bits = 0;            // 0: float activations
  std::string observer = "minmax";  // minmax | percentile | mse
  double percentile = 99.99;
  // Layers kept in float (mixed precision): parameter-name prefixes ("head", "blocks.0.attn"). Their
  // weights are not quantized, nor the outputs of the nodes that read them.
  std::vector<std::string> float_layers;
  bool keeps_float(const std::string& parameter) const;
  static QuantScheme parse(const std::string& quant, const std::string& observer);
  bool quantized() const { return weight_bits > 0; }
};

struct ActRange {
  double min = 0, max = 0;
};

// Runs the float graph on the calibration inputs and returns a range per activation point.
// Each element of `inputs` is one call's graph inputs.
std::map<std::string, ActRange> calibrate(const Captured& captured, const std::vector<Inputs>& inputs, const QuantScheme& scheme);

struct QuantizedGraph {
  Graph graph;
  nlohmann::json encodings;  // AIMET layout, keyed by tensor names of `graph`
  // activation point -> the dequantized tensor that replaced it downstream
  std::map<std::string, std::string> dequantized;
};

// fp16: float initializers and activations in half precision; the graph's inputs and outputs stay
// float32, with a Cast after each input and before each output (half.cpp).
Graph to_half(const Graph& graph);

// Weights are quantized by captured.param_quant (core/quant_rule.h, as QAT trains them), less the
// scheme's float layers; activations at the calibrated ranges.
QuantizedGraph insert_qdq(const Captured& captured, const std::map<std::string, ActRange>& ranges, const QuantScheme& scheme);

}  // namespace ef::exporter
