#pragma once
// Graph -> ONNX ModelProto bytes (opset 17, IR version 8), built with the official generated
// schema (Debian's libonnx) and validated by onnx::checker::check_model before it is returned.
// Torch-free: this file and its library never include LibTorch.
#include <string>

#include "export/graph.h"

namespace ef::exporter {

constexpr int64_t kOnnxOpset = 17;

// Throws std::runtime_error with the checker's message when the model is invalid.
std::string onnx_model_bytes(const Graph& graph);

}  // namespace ef::exporter
