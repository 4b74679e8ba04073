#include "export/quantize.h"

#include <algorithm>
#include <cmath>

#include "export/interpreter.h"

namespace ef::exporter {

namespace {

constexpr int64_t kSamplesPerTensor = 1 << 18;  // values an observer keeps per activation point

struct Observer {
  double min = INFINITY, max = -INFINITY;
  std::vector<torch::Tensor> samples;
  int64_t kept = 0;
  void add(const torch::Tensor& t) {
    torch::Tensor f = t.detach().flatten().to(torch::kFloat);
    min = std::min(min, f.min().item<double>());
    max = std::max(max, f.max().item<double>());
    if (kept < kSamplesPerTensor) {
      const int64_t stride = std::max<int64_t>(1, f.numel() / 4096);  // a strided subsample per batch
      torch::Tensor s = f.slice(0, 0, f.numel(), stride).clone();
      kept += s.numel();
      samples.push_back(s);
    }
  }
};

double quant_mse(const torch::Tensor& x, double lo, double hi, int bits) {
  const double levels = std::pow(2.0, bits) - 1;
  const double scale = std::max((hi - lo) / levels, 1e-12);
  const double zp = std::round(-lo / scale);
  torch::Tensor q = (torch::clamp(torch::round(x / scale) + zp, 0, levels) - zp) * scale;
  return (q - x).square().mean().item<double>();
}

ActRange range_of(const Observer& o, const QuantScheme& s) {
  ActRange r{o.min, o.max};
  if (s.observer == "minmax" || o.samples.empty()) return r;
  torch::Tensor x = torch::cat(o.samples);
  if (s.observer == "percentile") {
    const double p = s.percentile / 100.0;
    torch::Tensor sorted = std::get<0>(x.sort());
    auto pick = [&](double q) { return sorted[std::min<int64_t>(x.numel() - 1, static_cast<int64_t>(q * static_cast<double>(x.numel() - 1)))].item<double>(); };
    return {std::min(0.0, pick(1 - p)), std::max(0.0, pick(p))};
  }
  // mse: shrink the min-max range by a factor, keep the one with the least quantization error
  double best = INFINITY;
  for (double a = 1.0; a >= 0.3; a -= 0.05) {
    double e = quant_mse(x, std::min(0.0, o.min) * a, std::max(0.0, o.max) * a, s.act_bits);
    if (e < best) {
      best = e;
      r = {std::min(0.0, o.min) * a, std::max(0.0, o.max) * a};
    }
  }
  return r;
}

nlohmann::json aimet_entry(int bits, bool symmetric, double scale, int64_t offset) {
  // AIMET's convention: real = (q + offset) * scale over the unsigned grid [0, 2^bits - 1].
  const double levels = std::pow(2.0, bits) - 1;
  return {{"bitwidth", bits}, {"dtype", "int"}, {"is_symmetric", symmetric ? "True" : "False"},
          {"max", (levels + static_cast<double>(offset)) * scale}, {"min", static_cast<double>(offset) * scale},
          {"offset", offset}, {"scale", scale}};
}

}  // namespace

QuantScheme QuantScheme::parse(const std::string& quant, const std::string& observer) {
  QuantScheme s;
  s.name = quant;
  s.observer = observer;
  if (quant == "fp32") {
  } else if (quant == "w8a8") s.weight_bits = 8, s.act_bits = 8;
  else if (quant == "w4a8") s.weight_bits = 4, s.act_bits = 8;
  else if (quant == "w8a16") s.weight_bits = 8, s.act_bits = 16;
  else if (quant == "fp16") s.half = true;
  else
    throw InputError("export: unknown --quant \"" + quant + "\" (expected fp32, w8a8, w4a8, w8a16 or fp16)");
  if (observer != "minmax" && observer != "percentile" && observer != "mse")
    throw InputError("export: unknown observer \"" + observer + "\" (expected minmax, percentile or mse)");
  return s;
}

bool QuantScheme::keeps_float(const std::string& parameter) const { return in_float_layers(parameter, float_layers); }

std::map<std::string, ActRange> calibrate(const Captured& captured, const std::vector<Inputs>& inputs, const QuantScheme& scheme) {
  std::map<std::string, Observer> obs;
  for (const auto& p : captured.activation_points) obs[p];
  Interpreter interp(captured.graph);
  for (const auto& x : inputs) {
    for (size_t k = 0; k < x.size() && k < captured.graph.inputs.size(); ++k)
      if (obs.count(captured.graph.inputs[k].name)) obs[captured.graph.inputs[k].name].add(x[k]);
    interp.run1(x, [&](const std::string& name, const torch::Tensor& v) {
      auto it = obs.find(name);
      if (it != obs.end()) it->second.add(v);
    });
  }
  std::map<std::string, ActRange> ranges;
  for (const auto& [name, o] : obs)
    if (std::isfinite(o.min)) ranges[name] = range_of(o, scheme);
  return ranges;
}

QuantizedGraph insert_qdq(const Captured& captured, const std::map<std::string, ActRange>& ranges, const QuantScheme& scheme) {
  QuantizedGraph out;
  out.graph = captured.graph;
  out.graph.nodes.clear();
  out.encodings = {{"version", "0.6.1"}, {"activation_encodings", nlohmann::json::object()}, {"param_encodings", nlohmann::json::object()}};
  Graph& g = out.graph;

  // Weights, by the one rule (core/quant_rule.h) that QAT trained them with: an int initializer
  // and its scale -> DequantizeLinear whose output keeps the parameter's name, so the encodings and
  // every consumer still refer to it. The graph may hold a parameter transposed (a Linear weight as
  // MatMul's [in, out]): its output-channel axis there is the one the lowering recorded.
  const int64_t offset = -static_cast<int64_t>(std::pow(2.0, scheme.weight_bits - 1));
  for (const auto& [name, rule] : captured.param_quant) {
    if (!rule.quantized() || !g.initializers.count(name) || scheme.keeps_float(name)) continue;
    ParamQuant q = rule;
    if (q.kind == ParamQuant::Kind::PerChannel) {
      auto axis = captured.weight_axes.find(name);
      if (axis == captured.weight_axes.end())
        throw std::runtime_error("export: " + name + " is quantized per output channel, but the graph uses it in an op whose channel axis the exporter does not know");
      q.axis = axis->second;
    }
    torch::Tensor w = to_tensor(g.initializers.at(name));
    torch::Tensor scale = quant_scale(w, q, scheme.weight_bits);
    torch::Tensor codes = quant_codes(w, scale, q, scheme.weight_bits).to(torch::kChar);
    g.initializers.erase(name);
    g.initializers[name + "_quantized"] = from_tensor(name + "_quantized", codes);
    g.initializers[name + "_scale"] = from_tensor(name + "_scale", scale.to(torch::kFloat));
    const bool per_channel = q.kind == ParamQuant::Kind::PerChannel;
    g.initializers[name + "_zero_point"] =
        from_tensor(name + "_zero_point", per_channel ? torch::zeros({w.size(q.axis)}, torch::kChar) : torch::zeros({}, torch::kChar));
    std::map<std::string, Attr> attrs;
    if (per_channel) attrs["axis"] = Attr::of(q.axis);
    g.nodes.push_back({"DequantizeLinear", name + "_dq", {name + "_quantized", name + "_scale", name + "_zero_point"}, {name}, attrs});
    nlohmann::json entries = nlohmann::json::array();
    torch::Tensor flat = scale.reshape({-1});
    for (int64_t c = 0; c < flat.numel(); ++c) entries.push_back(aimet_entry(scheme.weight_bits, true, flat[c].item<double>(), offset));
    out.encodings["param_encodings"][name] = entries;
  }

  std::map<std::string, std::string> rename;
  const double levels = std::pow(2.0, scheme.act_bits) - 1;
  auto quantize_point = [&](const std::string& t) {
    auto r = ranges.find(t);
    if (!captured.activation_points.count(t) || r == ranges.end()) return;
    const double lo = std::min(0.0, r->second.min), hi = std::max(0.0, r->second.max);
    const double scale = std::max((hi - lo) / levels, 1e-12);
    const int64_t zp = std::clamp<int64_t>(static_cast<int64_t>(std::round(-lo / scale)), 0, static_cast<int64_t>(levels));
    g.initializers[t + "_scale"] = from_tensor(t + "_scale", torch::scalar_tensor(static_cast<float>(scale)));
    // 8-bit: ONNX's own QuantizeLinear (uint8). 16-bit: opset 17 has no uint16 QDQ, ONNX Runtime's
    // com.microsoft QuantizeLinear/DequantizeLinear do (QNN reads the bitwidth from the encodings).
    const bool wide = scheme.act_bits > 8;
    Initializer zp_init;
    zp_init.name = t + "_zero_point";
    zp_init.dtype = wide ? DType::UInt16 : DType::UInt8;
    if (wide) {
      const uint16_t v = static_cast<uint16_t>(zp);
      zp_init.bytes.assign(reinterpret_cast<const char*>(&v), 2);  // little-endian hosts
    } else {
      zp_init.bytes.assign(1, static_cast<char>(static_cast<uint8_t>(zp)));
    }
    g.initializers[zp_init.name] = zp_init;
    const std::string domain = wide ? "com.microsoft" : "";
    g.nodes.push_back({"QuantizeLinear", t + "_q", {t, t + "_scale", t + "_zero_point"}, {t + "_quantized"}, {}, domain});
    g.nodes.push_back({"DequantizeLinear", t + "_dq", {t + "_quantized", t + "_scale", t + "_zero_point"}, {t + "_dequantized"}, {}, domain});
    rename[t] = t + "_dequantized";
    out.dequantized[t] = t + "_dequantized";
    // the stored scale is float32: the encodings give the same number ONNX Runtime uses
    out.encodings["activation_encodings"][t] = nlohmann::json::array({aimet_entry(scheme.act_bits, false, static_cast<float>(scale), -zp)});
  };
  for (const auto& in : g.inputs) quantize_point(in.name);
  for (const Node& n0 : captured.graph.nodes) {
    Node n = n0;
    // a node that reads a float layer's parameter computes in float: no quantizer on its outputs
    const bool float_layer = std::any_of(n.inputs.begin(), n.inputs.end(),
                                         [&](const std::string& i) { return captured.parameters.count(i) && scheme.keeps_float(i); });
    for (auto& i : n.inputs) {
      auto it = rename.find(i);
      if (it != rename.end()) i = it->second;
    }
    g.nodes.push_back(n);
    if (!float_layer)
      for (const auto& o : n.outputs) quantize_point(o);
  }
  g.metadata["edgeforge.quant"] = scheme.name;
  return out;
}

}  // namespace ef::exporter
