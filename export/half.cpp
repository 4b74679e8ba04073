// fp16 export: the same graph with every float tensor in half precision. Inputs and outputs stay
// float32 (a Cast after each input, one before each output), so callers feed what they fed the
// fp32 model; runtimes with fp16 kernels (GPU, NPU) run the body in half precision.
#include "export/interpreter.h"
#include "export/quantize.h"

namespace ef::exporter {

Graph to_half(const Graph& graph) {
  Graph g = graph;
  g.nodes.clear();
  for (auto& [name, init] : g.initializers)
    if (init.dtype == DType::Float) init = from_tensor(name, to_tensor(init).to(torch::kHalf));
  std::map<std::string, std::string> renamed;  // float graph input -> its half-precision copy
  for (const auto& v : graph.inputs) {
    if (v.dtype != DType::Float) continue;
    Node cast;
    cast.op = "Cast";
    cast.name = v.name + "_to_fp16";
    cast.inputs = {v.name};
    cast.outputs = {v.name + "_fp16"};
    cast.attrs["to"] = Attr::of(static_cast<int64_t>(DType::Float16));
    renamed[v.name] = cast.outputs[0];
    g.nodes.push_back(cast);
  }
  std::map<std::string, std::string> outputs;  // float graph output -> the half tensor computed for it
  for (const auto& v : graph.outputs)
    if (v.dtype == DType::Float) outputs[v.name] = v.name + "_fp16";
  for (Node n : graph.nodes) {
    for (auto& in : n.inputs)
      if (renamed.count(in)) in = renamed[in];
    for (auto& out : n.outputs)
      if (outputs.count(out)) out = outputs[out];
    auto to = n.attrs.find("to");
    if (n.op == "Cast" && to != n.attrs.end() && to->second.i == static_cast<int64_t>(DType::Float))
      to->second.i = static_cast<int64_t>(DType::Float16);
    g.nodes.push_back(std::move(n));
  }
  for (const auto& [name, half] : outputs) {
    Node cast;
    cast.op = "Cast";
    cast.name = name + "_to_fp32";
    cast.inputs = {half};
    cast.outputs = {name};
    cast.attrs["to"] = Attr::of(static_cast<int64_t>(DType::Float));
    g.nodes.push_back(cast);
  }
  return g;
}

}  // namespace ef::exporter
