#include "export/capture.h"
#include "export/lowering.h"

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <unordered_map>

namespace ef::exporter {

const LoweringTable& lowering_table() {
  static const LoweringTable t = [] {
    LoweringTable m;
    add_core_lowerings(m);
    add_vision_lowerings(m);
    return m;
  }();
  return t;
}

std::vector<std::string> supported_aten_ops() {
  std::vector<std::string> ops;
  for (const auto& [k, _] : lowering_table()) ops.push_back(k);
  return ops;
}

Captured capture(const CaptureSpec& spec) {
  if (!spec.module || !spec.forward || spec.examples.empty()) throw std::runtime_error("export: capture needs a module, a forward and example inputs");
  if (spec.examples.size() != spec.input_names.size())
    throw std::runtime_error("export: " + std::to_string(spec.examples.size()) + " example inputs but " + std::to_string(spec.input_names.size()) + " input names");
  torch::NoGradGuard no_grad;
  spec.module->eval();
  // Parameters and buffers enter the trace as inputs, so the graph names them; they must not
  // require grad or the tracer records autograd-specific ops.
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& p : spec.module->named_parameters()) named.emplace_back(p.key(), p.value());
  for (const auto& b : spec.module->named_buffers()) named.emplace_back(b.key(), b.value());
  std::vector<bool> grads;
  for (auto& [_, t] : named) grads.push_back(t.requires_grad());
  for (auto& [_, t] : named) t.set_requires_grad(false);
  const size_t n_in = spec.examples.size();
  torch::jit::Stack inputs(spec.examples.begin(), spec.examples.end());
  for (auto& [_, t] : named) inputs.emplace_back(t);

  std::shared_ptr<torch::jit::Graph> g;
  torch::Tensor reference;
  // (1 - z) traces as empty_like + in-place fill_, which the tracer warns about; the lowering
  // reads only that tensor's shape, so the warning is dropped. Other warnings pass through.
  struct TracerNoiseFilter : c10::WarningHandler {
    c10::WarningHandler* next = c10::WarningUtils::get_warning_handler();
    void process(const c10::Warning& w) override {
      if (w.msg().find("live references to the data region") == std::string::npos) next->process(w);
    }
  } filter;
  c10::WarningUtils::WarningHandlerGuard quiet_tracer(&filter);
  try {
    auto traced = torch::jit::tracer::trace(
        inputs,
        [&](torch::jit::Stack s) -> torch::jit::Stack {
          Inputs x;
          for (size_t k = 0; k < n_in; ++k) x.push_back(s.at(k).toTensor());
          return {spec.forward(x)};
        },
        [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/false,
        /*force_outplace=*/true);  // in-place ops (x += y) are recorded as their out-of-place forms
    g = traced.first->graph;
    reference = traced.second.at(0).toTensor();
  } catch (...) {
    for (size_t k = 0; k < named.size(); ++k) named[k].second.set_requires_grad(grads[k]);
    throw;
  }
  for (size_t k = 0; k < named.size(); ++k) named[k].second.set_requires_grad(grads[k]);
  torch::jit::Inline(*g);
  torch::jit::ConstantPropagation(g);
  torch::jit::EliminateDeadCode(g);

  Lowering L;
  L.out.aten_graph = g->toString();
  if (std::getenv("EDGEFORGE_EXPORT_DUMP")) std::cerr << L.out.aten_graph << std::endl;  // for adding ops to the table
  std::set<const Value*> float_only;  // computed from spec.unquantized_inputs alone: no activation quantizers
  for (size_t k = 0; k < n_in; ++k) {
    const std::string& name = spec.input_names[k];
    const torch::Tensor& x = spec.examples[k];
    L.out.graph.inputs.push_back({name, to_dtype(x.scalar_type(), "example input '" + name + "'"), x.sizes().vec()});
    L.bind(g->inputs().at(k), name);
    if (spec.unquantized_inputs.count(name)) float_only.insert(g->inputs().at(k));
    else if (x.scalar_type() == at::kFloat) L.mark(name);
  }
  for (size_t k = 0; k < named.size(); ++k) L.bind_param(g->inputs().at(k + n_in), named[k].first, named[k].second);

  for (const JitNode* n : g->nodes()) {
    const std::string kind = n->kind().toQualString();
    if (kind == "prim::Constant") continue;
    // Values computed from unquantized inputs alone (and parameters, constants) stay float.
    bool from_float_only = false, from_data = false;
    for (const Value* v : n->inputs()) {
      if (float_only.count(v)) from_float_only = true;
      else if (!L.is_const(v) && !L.is_param(v)) from_data = true;
    }
    if (from_float_only && !from_data)
      for (const Value* o : n->outputs()) float_only.insert(o);
    if (kind == "prim::ListConstruct") {
      bool tensors = n->output()->type()->cast<c10::ListType>() && n->output()->type()->cast<c10::ListType>()->getElementType()->kind() == c10::TypeKind::TensorType;
      if (tensors) {
        std::vector<std::string> names;
        for (const Value* v : n->inputs()) names.push_back(L.tensor(v));
        L.bind_list(n->output(), names);
      } else {
        std::vector<c10::IValue> items;
        for (const Value* v : n->inputs()) {
          if (!L.is_const(v)) throw std::runtime_error("export: a shape or list argument depends on the data (prim::ListConstruct of " + v->debugName() + ")");
          items.push_back(L.ivalue(v));
        }
        auto elem = n->output()->type()->cast<c10::ListType>()->getElementType();
        if (elem->kind() == c10::TypeKind::IntType) {
          std::vector<int64_t> v;
          for (auto& i : items) v.push_back(i.toInt());
          L.bind_const(n->output(), c10::IValue(v));
        } else if (elem->kind() == c10::TypeKind::FloatType) {
          std::vector<double> v;
          for (auto& i : items) v.push_back(i.toDouble());
          L.bind_const(n->output(), c10::IValue(v));
        } else if (elem->kind() == c10::TypeKind::BoolType) {
          c10::List<bool> v;
          for (auto& i : items) v.push_back(i.toBool());
          L.bind_const(n->output(), c10::IValue(v));
        } else {
          throw std::runtime_error("export: unsupported list type " + n->output()->type()->str() + " in prim::ListConstruct");
        }
      }
      continue;
    }
    if (kind == "prim::ListUnpack") {
      const auto& names = L.list(n->input(0));
      for (size_t k = 0; k < n->outputs().size(); ++k) L.bind(n->outputs()[k], names.at(k));
      continue;
    }
    if (kind == "prim::TupleConstruct" || kind == "prim::TupleUnpack")
      throw std::runtime_error("export: the forward returns a tuple; export one tensor output");
    auto it = lowering_table().find(kind);
    if (it == lowering_table().end())
      throw std::runtime_error("export: unsupported op " + kind + " (no ONNX lowering; the supported ops are listed in export/README.md)");
    bool computes = it->second(L, n);
    if (computes && !(from_float_only && !from_data))
      for (const Value* o : n->outputs())
        if (o->type()->cast<c10::TensorType>() && Lowering::scalar_type(o) == at::kFloat) L.mark(L.tensor(o));
  }

  // The output: an Identity gives it a stable name.
  const Value* ret = g->outputs().at(0);
  std::string last = L.tensor(ret);
  Node id;
  id.op = "Identity";
  id.name = "output_identity";
  id.inputs = {last};
  id.outputs = {spec.output_name};
  L.out.graph.nodes.push_back(id);
  L.out.graph.outputs.push_back({spec.output_name, to_dtype(reference.scalar_type(), "the output"), reference.sizes().vec()});
  for (const auto& [name, _] : named)
    if (L.out.graph.has_initializer(name)) L.out.parameters.insert(name);
  // a weight initializer the lowering replaced (transposed) is no longer a plain parameter
  for (auto it = L.out.weight_axes.begin(); it != L.out.weight_axes.end();)
    it = L.out.graph.has_initializer(it->first) ? std::next(it) : L.out.weight_axes.erase(it);
  L.out.param_quant = quant_plan(*spec.module);
  return std::move(L.out);
}

}  // namespace ef::exporter