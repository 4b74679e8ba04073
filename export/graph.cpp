#include "export/graph.h"

#include <stdexcept>

namespace ef::exporter {

int64_t dtype_size(DType t) {
  switch (t) {
    case DType::Float: case DType::Int32: return 4;
    case DType::UInt8: case DType::Int8: case DType::Bool: return 1;
    case DType::UInt16: case DType::Int16: case DType::Float16: return 2;
    case DType::Int64: return 8;
  }
  throw std::runtime_error("export: unknown dtype " + std::to_string(static_cast<int>(t)));
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float: return "float32";
    case DType::UInt8: return "uint8";
    case DType::Int8: return "int8";
    case DType::UInt16: return "uint16";
    case DType::Int16: return "int16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::Bool: return "bool";
    case DType::Float16: return "float16";
  }
  return "?";
}

int64_t Initializer::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::vector<std::string> Graph::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& v : inputs) names.push_back(v.name);
  for (const auto& [n, _] : initializers) names.push_back(n);
  for (const auto& node : nodes)
    for (const auto& o : node.outputs) names.push_back(o);
  return names;
}

int64_t Graph::initializer_bytes() const {
  int64_t n = 0;
  for (const auto& [_, t] : initializers) n += static_cast<int64_t>(t.bytes.size());
  return n;
}

}  // namespace ef::exporter
