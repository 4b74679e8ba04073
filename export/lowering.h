#pragma once
// The lowering machinery shared by capture.cpp and the lowering tables (lowerings_*.cpp): a walk
// over the traced graph that keeps, for each jit Value, an ONNX tensor name, a list of them or a
// compile-time constant, and emits ONNX nodes. Internal to export/.
#include <torch/torch.h>

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "export/capture.h"

namespace ef::exporter {

using torch::jit::Value;
using JitNode = torch::jit::Node;

inline DType to_dtype(at::ScalarType t, const std::string& what) {
  switch (t) {
    case at::kFloat: return DType::Float;
    case at::kLong: return DType::Int64;
    case at::kInt: return DType::Int32;
    case at::kBool: return DType::Bool;
    case at::kHalf: return DType::Float16;
    case at::kByte: return DType::UInt8;
    case at::kChar: return DType::Int8;
    default: throw std::runtime_error("export: " + what + " has element type " + std::string(c10::toString(t)) + ", which ONNX export does not cover");
  }
}

inline Initializer to_initializer(const std::string& name, const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  Initializer init;
  init.name = name;
  init.dtype = to_dtype(c.scalar_type(), "tensor '" + name + "'");
  init.dims = c.sizes().vec();
  init.bytes.assign(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.nbytes()));
  return init;
}

// Walks the traced graph, one aten node at a time, keeping for each jit Value either an ONNX tensor
// name, a list of them, or a compile-time constant.
class Lowering {
 public:
  Captured out;

  std::string fresh(const std::string& base) { return base + "_" + std::to_string(counter_++); }

  // Emits one ONNX node; returns its first output.
  std::string emit(const std::string& op, std::vector<std::string> inputs, std::map<std::string, Attr> attrs = {}, int n_out = 1,
                   std::vector<std::string>* outs = nullptr) {
    Node n;
    n.op = op;
    n.name = fresh(op);
    n.inputs = std::move(inputs);
    n.attrs = std::move(attrs);
    for (int i = 0; i < n_out; ++i) n.outputs.push_back(n.name + (n_out == 1 ? std::string(":0") : ":" + std::to_string(i)));
    for (auto& o : n.outputs) o = sanitize(o);
    if (outs) *outs = n.outputs;
    std::string first = n.outputs[0];
    out.graph.nodes.push_back(std::move(n));
    return first;
  }
  static std::string sanitize(std::string s) {
    for (char& c : s)
      if (c == ':') c = '_';
    return s;
  }

  std::string constant(const torch::Tensor& t, const std::string& base = "const") {
    std::string name = fresh(base);
    out.graph.initializers[name] = to_initializer(name, t);
    return name;
  }
  std::string ints(const std::vector<int64_t>& v) { return constant(torch::tensor(v, torch::kInt64), "shape"); }

  // --- jit value bookkeeping ---
  void bind(const Value* v, std::string name) { names_[v] = std::move(name); }
  void bind_list(const Value* v, std::vector<std::string> names) { lists_[v] = std::move(names); }
  void bind_param(const Value* v, std::string name, torch::Tensor t) {
    params_[v] = {std::move(name), std::move(t)};
  }
  bool is_param(const Value* v) const { return params_.count(v) > 0; }
  bool is_const(const Value* v) const { return v->node()->kind() == c10::prim::Constant || consts_.count(v) > 0; }
  // Lists of constants stay prim::ListConstruct nodes after constant propagation (lists are
  // mutable): the walk records their values here.
  void bind_const(const Value* v, c10::IValue iv) { consts_[v] = std::move(iv); }
  c10::IValue ivalue(const Value* v) const {
    auto c = consts_.find(v);
    if (c != consts_.end()) return c->second;
    auto iv = torch::jit::toIValue(v);
    if (!iv) throw std::runtime_error("export: expected a constant for input '" + v->debugName() + "' of " + v->node()->kind().toQualString() +
                                      " (the traced value depends on the data)");
    return *iv;
  }
  bool is_none(const Value* v) const { return is_const(v) && v->type()->kind() == c10::TypeKind::NoneType; }
  int64_t i(const Value* v) const { return ivalue(v).toInt(); }
  // A number argument: traced graphs give Scalars as int, float or bool constants, and sometimes as
  // one-element constant tensors.
  double d(const Value* v) const {
    const c10::IValue iv = ivalue(v);
    if (iv.isDouble()) return iv.toDouble();
    if (iv.isInt()) return static_cast<double>(iv.toInt());
    if (iv.isBool()) return iv.toBool() ? 1.0 : 0.0;
    if (iv.isTensor() && iv.toTensor().numel() == 1) return iv.toTensor().item<double>();
    throw std::runtime_error("export: expected a number for input '" + v->debugName() + "' of " + v->node()->kind().toQualString() +
                             ", got a " + iv.tagKind());
  }
  bool b(const Value* v) const { return ivalue(v).toBool(); }
  std::vector<int64_t> int_list(const Value* v) const { return ivalue(v).toIntVector(); }

  // A parameter or constant tensor behind v, if any (for weights that need re-layout).
  std::optional<std::pair<std::string, torch::Tensor>> param(const Value* v) const {
    auto it = params_.find(v);
    if (it != params_.end()) return it->second;
    return std::nullopt;
  }

  // The ONNX tensor name of v; parameters become initializers on first use, constant scalars
  // become initializers of `like`'s element type.
  std::string tensor(const Value* v, at::ScalarType like = at::kFloat) {
    auto n = names_.find(v);
    if (n != names_.end()) return n->second;
    auto p = params_.find(v);
    if (p != params_.end()) {
      out.graph.initializers[p->second.first] = to_initializer(p->second.first, p->second.second);
      names_[v] = p->second.first;
      return p->second.first;
    }
    if (is_const(v)) {
      c10::IValue iv = ivalue(v);
      if (iv.isTensor()) return names_[v] = constant(iv.toTensor());
      if (iv.isInt() || iv.isDouble() || iv.isBool()) return constant(torch::scalar_tensor(iv.toScalar(), torch::TensorOptions().dtype(like)));
    }
    throw std::runtime_error("export: no tensor for value '" + v->debugName() + "' (produced by " + v->node()->kind().toQualString() + ")");
  }
  const std::vector<std::string>& list(const Value* v) const {
    auto it = lists_.find(v);
    if (it == lists_.end()) throw std::runtime_error("export: expected a list of tensors for '" + v->debugName() + "'");
    return it->second;
  }

  static std::vector<int64_t> shape(const Value* v) {
    auto t = v->type()->cast<c10::TensorType>();
    if (!t) throw std::runtime_error("export: '" + v->debugName() + "' is not a tensor");
    auto s = t->sizes().concrete_sizes();
    if (!s) throw std::runtime_error("export: the tracer recorded no static shape for '" + v->debugName() + "'");
    return *s;
  }
  static at::ScalarType scalar_type(const Value* v) {
    auto t = v->type()->cast<c10::TensorType>();
    return t && t->scalarType() ? *t->scalarType() : at::kFloat;
  }
  static int64_t rank(const Value* v) { return static_cast<int64_t>(shape(v).size()); }
  static int64_t axis(int64_t a, int64_t r) { return a < 0 ? a + r : a; }

  std::string reshape_to(const std::string& x, const std::vector<int64_t>& dims) { return emit("Reshape", {x, ints(dims)}); }

  void mark(const std::string& name) { out.activation_points.insert(name); }

 private:
  int counter_ = 0;
  std::unordered_map<const Value*, std::string> names_;
  std::unordered_map<const Value*, std::vector<std::string>> lists_;
  std::unordered_map<const Value*, std::pair<std::string, torch::Tensor>> params_;
  std::unordered_map<const Value*, c10::IValue> consts_;
};

// A lowering: emits the ONNX nodes of one aten node and binds its outputs. Returns true when the
// outputs are new values computed from the data (activation quantizers go there); false for pure
// data movement, which keeps its input's quantization.
using Lower = std::function<bool(Lowering&, const JitNode*)>;

inline const Value* in(const JitNode* n, size_t k) { return n->inputs().at(k); }
inline const Value* outv(const JitNode* n, size_t k = 0) { return n->outputs().at(k); }

inline bool elementwise(Lowering& L, const JitNode* n, const std::string& op) {
  at::ScalarType t = Lowering::scalar_type(outv(n));
  L.bind(outv(n), L.emit(op, {L.tensor(in(n, 0), t), L.tensor(in(n, 1), t)}));
  return true;
}
inline bool unary(Lowering& L, const JitNode* n, const std::string& op) {
  L.bind(outv(n), L.emit(op, {L.tensor(in(n, 0))}));
  return true;
}
inline bool same_shape(Lowering& L, const JitNode* n) {  // view/reshape/flatten/squeeze/...: a Reshape to the traced shape
  L.bind(outv(n), L.reshape_to(L.tensor(in(n, 0)), Lowering::shape(outv(n))));
  return false;
}
inline bool identity(Lowering& L, const JitNode* n) {
  L.bind(outv(n), L.tensor(in(n, 0)));
  return false;
}

// aten op name -> its lowering. One table, filled by the lowerings_*.cpp files.
using LoweringTable = std::map<std::string, Lower>;
void add_core_lowerings(LoweringTable& table);    // lowerings_core.cpp: linear algebra, elementwise, data movement, indexing
void add_vision_lowerings(LoweringTable& table);  // lowerings_vision.cpp: pooling, resizing, sampling, normalisation, custom ops
const LoweringTable& lowering_table();

}  // namespace ef::exporter
