#pragma once
// The exporter's graph: ONNX's node/initializer/value model in plain C++ (no LibTorch, no protobuf),
// so that capture, quantization and the interpreter share one representation and the ONNX writer
// can live in a library that never sees LibTorch's bundled protobuf/ONNX symbols.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ef::exporter {

// ONNX TensorProto.DataType values for the element types we write.
enum class DType : int32_t { Float = 1, UInt8 = 2, Int8 = 3, UInt16 = 4, Int16 = 5, Int32 = 6, Int64 = 7, Bool = 9, Float16 = 10 };
int64_t dtype_size(DType t);
const char* dtype_name(DType t);

// A node attribute: exactly one of the fields is used, named by `kind`.
struct Attr {
  enum Kind { Int, Float, Ints, Floats, String } kind = Int;
  int64_t i = 0;
  float f = 0;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::string s;
  static Attr of(int64_t v) { Attr a; a.kind = Int; a.i = v; return a; }
  static Attr of(float v) { Attr a; a.kind = Float; a.f = v; return a; }
  static Attr of(std::vector<int64_t> v) { Attr a; a.kind = Ints; a.ints = std::move(v); return a; }
  static Attr of(std::vector<float> v) { Attr a; a.kind = Floats; a.floats = std::move(v); return a; }
  static Attr of(std::string v) { Attr a; a.kind = String; a.s = std::move(v); return a; }
};

struct Node {
  std::string op;                    // ONNX op type ("MatMul")
  std::string name;                  // unique node name
  std::vector<std::string> inputs;   // tensor names ("" = optional input left out)
  std::vector<std::string> outputs;
  std::map<std::string, Attr> attrs;
  std::string domain;                // "" = the default ONNX domain; "com.microsoft" for ORT's 16-bit QDQ
};

// A constant tensor: little-endian raw bytes in row-major order.
struct Initializer {
  std::string name;
  DType dtype = DType::Float;
  std::vector<int64_t> dims;
  std::string bytes;
  int64_t numel() const;
};

struct ValueInfo {
  std::string name;
  DType dtype = DType::Float;
  std::vector<int64_t> dims;  // static shapes
};

struct Graph {
  std::string name = "edgeforge";
  std::vector<ValueInfo> inputs, outputs;
  std::vector<Node> nodes;                          // topological order
  std::map<std::string, Initializer> initializers;  // by name
  std::map<std::string, std::string> metadata;      // model metadata_props

  bool has_initializer(const std::string& n) const { return initializers.count(n) > 0; }
  // Every tensor name the graph holds: inputs, initializers and node outputs.
  std::vector<std::string> tensor_names() const;
  int64_t initializer_bytes() const;
};

}  // namespace ef::exporter
