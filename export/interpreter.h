#pragma once
// Runs an exporter Graph with LibTorch ops, node by node. It is the reference the ONNX file is
// checked against (fp32: against the module itself), and with QuantizeLinear/DequantizeLinear
// nodes it is the quantization simulation: calibration and per-layer errors observe its tensors.
// A graph with float16 initializers (an fp16 export) runs with every float value rounded to half
// precision after each node and float32 arithmetic inside it: fp16 storage, the way GPU and NPU
// kernels accumulate.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>

#include "export/graph.h"

namespace ef::exporter {

torch::Tensor to_tensor(const Initializer& init);
Initializer from_tensor(const std::string& name, const torch::Tensor& t);

class Interpreter {
 public:
  explicit Interpreter(const Graph& graph);
  // Called with every node output as it is computed.
  using Observer = std::function<void(const std::string& name, const torch::Tensor& value)>;
  // inputs by graph input name -> the graph outputs by name
  std::map<std::string, torch::Tensor> run(const std::map<std::string, torch::Tensor>& inputs, const Observer& observe = {}) const;
  // inputs in the graph's input order -> its (first) output
  torch::Tensor run1(const std::vector<torch::Tensor>& inputs, const Observer& observe = {}) const;
  torch::Tensor run1(const torch::Tensor& input, const Observer& observe = {}) const { return run1(std::vector<torch::Tensor>{input}, observe); }

 private:
  const Graph& graph_;
  std::map<std::string, torch::Tensor> constants_;
  bool half_storage_ = false;
};

}  // namespace ef::exporter
