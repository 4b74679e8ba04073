#include "export/onnx_writer.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <stdexcept>

namespace ef::exporter {

namespace {

void set_type(onnx::ValueInfoProto* v, const ValueInfo& info) {
  v->set_name(info.name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(static_cast<int32_t>(info.dtype));
  auto* shape = t->mutable_shape();
  for (int64_t d : info.dims) shape->add_dim()->set_dim_value(d);
}

void set_attr(onnx::AttributeProto* a, const std::string& name, const Attr& v) {
  a->set_name(name);
  switch (v.kind) {
    case Attr::Int: a->set_type(onnx::AttributeProto::INT); a->set_i(v.i); break;
    case Attr::Float: a->set_type(onnx::AttributeProto::FLOAT); a->set_f(v.f); break;
    case Attr::Ints:
      a->set_type(onnx::AttributeProto::INTS);
      for (int64_t x : v.ints) a->add_ints(x);
      break;
    case Attr::Floats:
      a->set_type(onnx::AttributeProto::FLOATS);
      for (float x : v.floats) a->add_floats(x);
      break;
    case Attr::String: a->set_type(onnx::AttributeProto::STRING); a->set_s(v.s); break;
  }
}

}  // namespace

std::string onnx_model_bytes(const Graph& graph) {
  onnx::ModelProto model;
  model.set_ir_version(8);  // what opset 17 pairs with
  model.set_producer_name("edgeforge");
  model.set_producer_version("0.1");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  bool microsoft = false;
  for (const auto& n : graph.nodes) microsoft = microsoft || n.domain == "com.microsoft";
  if (microsoft) {  // ONNX Runtime's contrib ops (16-bit QuantizeLinear/DequantizeLinear before opset 21)
    auto* ms = model.add_opset_import();
    ms->set_domain("com.microsoft");
    ms->set_version(1);
  }
  for (const auto& [k, v] : graph.metadata) {
    auto* p = model.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }
  auto* g = model.mutable_graph();
  g->set_name(graph.name);
  for (const auto& v : graph.inputs) set_type(g->add_input(), v);
  for (const auto& v : graph.outputs) set_type(g->add_output(), v);
  for (const auto& [name, init] : graph.initializers) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(static_cast<int32_t>(init.dtype));
    for (int64_t d : init.dims) t->add_dims(d);
    if (static_cast<int64_t>(init.bytes.size()) != init.numel() * dtype_size(init.dtype))
      throw std::runtime_error("export: initializer '" + name + "' holds " + std::to_string(init.bytes.size()) + " bytes, its shape needs " +
                               std::to_string(init.numel() * dtype_size(init.dtype)));
    t->set_raw_data(init.bytes);
  }
  for (const auto& n : graph.nodes) {
    auto* p = g->add_node();
    p->set_op_type(n.op);
    if (!n.domain.empty()) p->set_domain(n.domain);
    p->set_name(n.name);
    for (const auto& i : n.inputs) p->add_input(i);
    for (const auto& o : n.outputs) p->add_output(o);
    for (const auto& [k, a] : n.attrs) set_attr(p->add_attribute(), k, a);
  }
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("export: the ONNX checker rejects the graph: ") + e.what());
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw std::runtime_error("export: serialising the ONNX model failed");
  return bytes;
}

}  // namespace ef::exporter
