#include "export/interpreter.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <stdexcept>

namespace ef::exporter {

namespace {

at::ScalarType scalar(DType t) {
  switch (t) {
    case DType::Float: return at::kFloat;
    case DType::UInt8: return at::kByte;
    case DType::Int8: return at::kChar;
    case DType::Int16: return at::kShort;
    case DType::Int32: return at::kInt;
    case DType::Int64: return at::kLong;
    case DType::Bool: return at::kBool;
    case DType::Float16: return at::kHalf;
    case DType::UInt16: return at::kUInt16;
  }
  throw std::runtime_error("export: no LibTorch type for " + std::string(dtype_name(t)));
}

int64_t attr_i(const Node& n, const std::string& k, int64_t fallback) {
  auto it = n.attrs.find(k);
  return it == n.attrs.end() ? fallback : it->second.i;
}
float attr_f(const Node& n, const std::string& k, float fallback) {
  auto it = n.attrs.find(k);
  return it == n.attrs.end() ? fallback : it->second.f;
}
std::string attr_s(const Node& n, const std::string& k) {
  auto it = n.attrs.find(k);
  return it == n.attrs.end() ? std::string() : it->second.s;
}
std::vector<int64_t> attr_ints(const Node& n, const std::string& k) {
  auto it = n.attrs.find(k);
  if (it == n.attrs.end()) throw std::runtime_error("export interpreter: node " + n.name + " lacks attribute " + k);
  return it->second.ints;
}
int64_t norm_axis(int64_t a, int64_t r) { return a < 0 ? a + r : a; }

// ONNX QuantizeLinear / DequantizeLinear, per tensor (scalar scale) or per channel along `axis`.
torch::Tensor broadcast_param(const torch::Tensor& p, const torch::Tensor& x, int64_t axis) {
  if (p.dim() == 0) return p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[norm_axis(axis, x.dim())] = p.numel();
  return p.view(shape);
}
std::pair<double, double> int_range(at::ScalarType t) {
  switch (t) {
    case at::kByte: return {0, 255};
    case at::kChar: return {-128, 127};
    case at::kUInt16: return {0, 65535};
    case at::kInt: return {0, 65535};  // uint16 codes, widened by to_tensor
    case at::kShort: return {-32768, 32767};
    default: throw std::runtime_error("export interpreter: unsupported quantized type");
  }
}

}  // namespace

torch::Tensor to_tensor(const Initializer& init) {
  if (init.dtype == DType::UInt16) {  // LibTorch's uint16 has few kernels: widen to int32
    std::vector<int32_t> v(static_cast<size_t>(init.numel()));
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = static_cast<uint8_t>(init.bytes[2 * i]) | (static_cast<uint8_t>(init.bytes[2 * i + 1]) << 8);
    return torch::tensor(v, torch::kInt).view(init.dims);
  }
  auto t = torch::empty(init.dims, torch::TensorOptions().dtype(scalar(init.dtype)));
  if (static_cast<size_t>(t.nbytes()) != init.bytes.size()) throw std::runtime_error("export: initializer '" + init.name + "' has the wrong size");
  std::memcpy(t.data_ptr(), init.bytes.data(), init.bytes.size());
  return t;
}

Initializer from_tensor(const std::string& name, const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  Initializer init;
  init.name = name;
  switch (c.scalar_type()) {
    case at::kFloat: init.dtype = DType::Float; break;
    case at::kByte: init.dtype = DType::UInt8; break;
    case at::kChar: init.dtype = DType::Int8; break;
    case at::kUInt16: init.dtype = DType::UInt16; break;
    case at::kShort: init.dtype = DType::Int16; break;
    case at::kInt: init.dtype = DType::Int32; break;
    case at::kLong: init.dtype = DType::Int64; break;
    case at::kHalf: init.dtype = DType::Float16; break;
    default: throw std::runtime_error("export: tensor '" + name + "' has an unsupported element type");
  }
  init.dims = c.sizes().vec();
  init.bytes.assign(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.nbytes()));
  return init;
}

Interpreter::Interpreter(const Graph& graph) : graph_(graph) {
  for (const auto& [name, init] : graph.initializers) {
    constants_[name] = to_tensor(init);
    if (init.dtype == DType::Float16) half_storage_ = true;
  }
  if (half_storage_)  // fp16 graphs: half-precision values, float arithmetic (see run)
    for (auto& [name, t] : constants_)
      if (t.scalar_type() == at::kHalf) t = t.to(torch::kFloat);
}

torch::Tensor Interpreter::run1(const std::vector<torch::Tensor>& inputs, const Observer& observe) const {
  if (inputs.size() != graph_.inputs.size())
    throw std::runtime_error("export interpreter: the graph has " + std::to_string(graph_.inputs.size()) + " inputs, given " + std::to_string(inputs.size()));
  std::map<std::string, torch::Tensor> named;
  for (size_t k = 0; k < inputs.size(); ++k) named[graph_.inputs[k].name] = inputs[k];
  auto out = run(named, observe);
  return out.at(graph_.outputs.at(0).name);
}

std::map<std::string, torch::Tensor> Interpreter::run(const std::map<std::string, torch::Tensor>& inputs, const Observer& observe) const {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> env = constants_;
  for (const auto& v : graph_.inputs) {
    auto it = inputs.find(v.name);
    if (it == inputs.end()) throw std::runtime_error("export interpreter: missing input '" + v.name + "'");
    env[v.name] = it->second;
  }
  auto get = [&](const Node& n, size_t k) -> torch::Tensor {
    if (k >= n.inputs.size() || n.inputs[k].empty()) return {};
    auto it = env.find(n.inputs[k]);
    if (it == env.end()) throw std::runtime_error("export interpreter: node " + n.name + " reads unknown tensor '" + n.inputs[k] + "'");
    return it->second;
  };
  for (const Node& n : graph_.nodes) {
    const std::string& op = n.op;
    std::vector<torch::Tensor> out;
    auto x = get(n, 0);
    if (op == "MatMul") out = {torch::matmul(x, get(n, 1))};
    else if (op == "Gemm") {
      auto b = get(n, 1);
      if (attr_i(n, "transB", 0)) b = b.t();
      auto y = torch::matmul(x, b);
      if (get(n, 2).defined()) y = y + get(n, 2);
      out = {y};
    } else if (op == "Conv") {
      auto w = get(n, 1);
      auto pads = attr_ints(n, "pads");
      std::vector<int64_t> pad(pads.begin(), pads.begin() + static_cast<long>(pads.size() / 2));
      if (w.dim() == 3) out = {torch::conv1d(x, w, get(n, 2), attr_ints(n, "strides"), pad, attr_ints(n, "dilations"), attr_i(n, "group", 1))};
      else out = {torch::conv2d(x, w, get(n, 2), attr_ints(n, "strides"), pad, attr_ints(n, "dilations"), attr_i(n, "group", 1))};
    } else if (op == "Add") out = {x + get(n, 1)};
    else if (op == "Sub") out = {x - get(n, 1)};
    else if (op == "Mul") out = {x * get(n, 1)};
    else if (op == "Div") out = {x.is_floating_point() ? x / get(n, 1) : torch::div(x, get(n, 1), "trunc")};
    else if (op == "Pow") out = {torch::pow(x, get(n, 1))};
    else if (op == "Max") out = {torch::maximum(x, get(n, 1))};
    else if (op == "Relu") out = {torch::relu(x)};
    else if (op == "Exp") out = {torch::exp(x)};
    else if (op == "Log") out = {torch::log(x)};
    else if (op == "Sqrt") out = {torch::sqrt(x)};
    else if (op == "Erf") out = {torch::erf(x)};
    else if (op == "Tanh") out = {torch::tanh(x)};
    else if (op == "Sigmoid") out = {torch::sigmoid(x)};
    else if (op == "Neg") out = {-x};
    else if (op == "Abs") out = {x.abs()};
    else if (op == "Reciprocal") out = {x.reciprocal()};
    else if (op == "Softmax") out = {torch::softmax(x, attr_i(n, "axis", -1))};
    else if (op == "LogSoftmax") out = {torch::log_softmax(x, attr_i(n, "axis", -1))};
    else if (op == "LayerNormalization") {
      const int64_t a = norm_axis(attr_i(n, "axis", -1), x.dim());
      std::vector<int64_t> shape(x.sizes().begin() + a, x.sizes().end());
      out = {torch::layer_norm(x, shape, get(n, 1), get(n, 2), attr_f(n, "epsilon", 1e-5f))};
    } else if (op == "ReduceMean") out = {x.mean(attr_ints(n, "axes"), attr_i(n, "keepdims", 1) != 0)};
    else if (op == "ReduceSum") {
      auto axes = get(n, 1);
      std::vector<int64_t> a(axes.data_ptr<int64_t>(), axes.data_ptr<int64_t>() + axes.numel());
      out = {x.sum(a, attr_i(n, "keepdims", 1) != 0)};
    } else if (op == "Reshape") {
      auto s = get(n, 1);
      out = {x.reshape(std::vector<int64_t>(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel()))};
    } else if (op == "Expand") {
      auto s = get(n, 1);
      out = {x.expand(std::vector<int64_t>(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel())).contiguous()};
    } else if (op == "Transpose") out = {x.permute(attr_ints(n, "perm")).contiguous()};
    else if (op == "Gather") {
      const int64_t a = norm_axis(attr_i(n, "axis", 0), x.dim());
      auto idx = get(n, 1);
      out = {idx.dim() == 0 ? x.select(a, idx.item<int64_t>()).contiguous() : x.index_select(a, idx.flatten()).reshape([&] {
        auto s = x.sizes().vec();
        std::vector<int64_t> r(s.begin(), s.begin() + a);
        for (auto d : idx.sizes()) r.push_back(d);
        r.insert(r.end(), s.begin() + a + 1, s.end());
        return r;
      }())};
    } else if (op == "Slice") {
      const int64_t start = get(n, 1).item<int64_t>(), end = get(n, 2).item<int64_t>();
      const int64_t a = norm_axis(get(n, 3).item<int64_t>(), x.dim());
      const int64_t step = get(n, 4).defined() ? get(n, 4).item<int64_t>() : 1;
      out = {x.slice(a, start, std::min(end, x.size(a)), step).contiguous()};
    } else if (op == "Concat") {
      std::vector<torch::Tensor> parts;
      for (size_t k = 0; k < n.inputs.size(); ++k) parts.push_back(get(n, k));
      out = {torch::cat(parts, attr_i(n, "axis", 0))};
    } else if (op == "TopK") {
      auto r = x.topk(get(n, 1).item<int64_t>(), attr_i(n, "axis", -1), attr_i(n, "largest", 1) != 0, true);
      out = {std::get<0>(r), std::get<1>(r)};
    } else if (op == "GatherElements") out = {x.gather(attr_i(n, "axis", 0), get(n, 1))};
    else if (op == "ScatterElements") out = {x.scatter(attr_i(n, "axis", 0), get(n, 1), get(n, 2))};
    else if (op == "Sin") out = {torch::sin(x)};
    else if (op == "Cos") out = {torch::cos(x)};
    else if (op == "Clip") {
      auto lo = get(n, 1), hi = get(n, 2);
      out = {torch::clamp(x, lo.defined() ? std::optional<at::Scalar>(lo.item()) : std::nullopt,
                          hi.defined() ? std::optional<at::Scalar>(hi.item()) : std::nullopt)};
    } else if (op == "AveragePool") {
      auto pads = attr_ints(n, "pads");
      out = {torch::avg_pool2d(x, attr_ints(n, "kernel_shape"), attr_ints(n, "strides"), {pads[0], pads[1]}, attr_i(n, "ceil_mode", 0) != 0,
                               attr_i(n, "count_include_pad", 0) != 0)};
    } else if (op == "Resize") {
      auto s = get(n, 3);
      std::vector<int64_t> size(s.data_ptr<int64_t>() + 2, s.data_ptr<int64_t>() + s.numel());
      const std::string mode = attr_s(n, "mode"), ctm = attr_s(n, "coordinate_transformation_mode");
      if (mode == "linear" && (ctm == "align_corners" || ctm == "pytorch_half_pixel"))
        out = {torch::upsample_bilinear2d(x, size, ctm == "align_corners")};
      else if (mode == "nearest" && ctm == "asymmetric" && attr_s(n, "nearest_mode") == "floor")
        out = {torch::upsample_nearest2d(x, size)};
      else
        throw std::runtime_error("export interpreter: Resize " + mode + "/" + ctm +
                                 " (the lowering writes linear align_corners or pytorch_half_pixel, and nearest asymmetric floor)");
    } else if (op == "GridSample") {
      static const std::vector<std::string> modes = {"bilinear", "nearest", "bicubic"}, pads = {"zeros", "border", "reflection"};
      const auto mode = std::find(modes.begin(), modes.end(), attr_s(n, "mode")) - modes.begin();
      const auto pad = std::find(pads.begin(), pads.end(), attr_s(n, "padding_mode")) - pads.begin();
      out = {torch::grid_sampler(x, get(n, 1), mode, pad, attr_i(n, "align_corners", 0) != 0)};
    } else if (op == "InstanceNormalization") {
      out = {torch::instance_norm(x, get(n, 1), get(n, 2), {}, {}, true, 0.0, attr_f(n, "epsilon", 1e-5f), false)};
    } else if (op == "Pad") {
      auto p = get(n, 1);
      std::vector<int64_t> pads(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
      const int64_t r = x.dim();
      std::vector<int64_t> torch_pads;  // last dim first: (begin, end) pairs
      for (int64_t d = r - 1; d >= 0; --d) {
        torch_pads.push_back(pads[d]);
        torch_pads.push_back(pads[r + d]);
      }
      auto v = get(n, 2);
      out = {torch::constant_pad_nd(x, torch_pads, v.defined() ? v.item<double>() : 0.0)};
    }
    else if (op == "Identity") out = {x};
    else if (op == "Cast") {
      at::ScalarType to = scalar(static_cast<DType>(attr_i(n, "to", 1)));
      out = {x.to(half_storage_ && to == at::kHalf ? at::kFloat : to)};  // rounded to half below
    }
    else if (op == "QuantizeLinear") {
      auto scale = broadcast_param(get(n, 1), x, attr_i(n, "axis", 1));
      auto zp_t = get(n, 2);
      auto [lo, hi] = int_range(zp_t.scalar_type());
      auto zp = broadcast_param(zp_t.to(torch::kFloat), x, attr_i(n, "axis", 1));
      // round half to even, as ONNX specifies (torch.round does)
      out = {torch::clamp(torch::round(x / scale) + zp, lo, hi).to(zp_t.scalar_type())};
    } else if (op == "DequantizeLinear") {
      auto scale = broadcast_param(get(n, 1), x, attr_i(n, "axis", 1));
      auto zp = broadcast_param(get(n, 2).to(torch::kFloat), x, attr_i(n, "axis", 1));
      out = {(x.to(torch::kFloat) - zp) * scale};
    } else
      throw std::runtime_error("export interpreter: no implementation of ONNX op " + op + " (node " + n.name + ")");
    for (size_t k = 0; k < n.outputs.size() && k < out.size(); ++k) {
      if (half_storage_ && out[k].scalar_type() == at::kFloat) out[k] = out[k].to(torch::kHalf).to(torch::kFloat);
      env[n.outputs[k]] = out[k];
      if (observe) observe(n.outputs[k], out[k]);
    }
  }
  std::map<std::string, torch::Tensor> result;
  for (const auto& v : graph_.outputs) result[v.name] = env.at(v.name);
  return result;
}

}  // namespace ef::exporter
