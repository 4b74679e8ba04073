#pragma once
// Graph capture: trace a module's forward with LibTorch's C++ tracer (parameters and buffers enter
// as named graph inputs), fold constant subgraphs, and lower every aten op through one generic
// table to ONNX nodes (lowering.cpp). No network needs exporter code of its own: an op outside the
// table fails the export with its name.
#include <torch/torch.h>

#include <functional>
#include <set>
#include <string>

#include "core/export_target.h"  // CaptureSpec, Inputs
#include "core/quant_rule.h"
#include "export/graph.h"

namespace ef::exporter {

struct Captured {
  Graph graph;
  // Float tensors whose values a per-tensor activation quantizer covers (outputs of compute ops;
  // pure data movement such as reshape/transpose keeps its input's quantization).
  std::set<std::string> activation_points;
  // The output-channel axis of each weight initializer as the graph holds it (a Linear weight is
  // MatMul's transposed [in, out]: axis 1).
  std::map<std::string, int64_t> weight_axes;
  // The quantization rule for every module parameter (core/quant_rule.h, without float layers).
  std::map<std::string, ParamQuant> param_quant;
  // Every initializer that holds a module parameter or buffer (the rest are lowering constants).
  std::set<std::string> parameters;
  std::string aten_graph;  // the traced graph, for diagnostics
};

Captured capture(const CaptureSpec& spec);

// The aten ops the lowering table knows (for docs and error messages).
std::vector<std::string> supported_aten_ops();

}  // namespace ef::exporter
