#include "export/export.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/atomic_file.h"
#include "core/export_target.h"
#include "core/run.h"
#include "export/interpreter.h"
#include "export/onnx_writer.h"
#include "export/quantize.h"

#ifndef EDGEFORGE_DEFAULT_PYTHON
#define EDGEFORGE_DEFAULT_PYTHON ""
#endif

namespace ef::exporter {

namespace fs = std::filesystem;

namespace {

// Runs the ONNX file in ONNX Runtime (CPU) on every batch; outputs in order, plus median latency.
const char* kOrtScript = R"PY(
import json, sys, time
import numpy as np
import onnxruntime as ort
model, inputs, outputs, meta = sys.argv[1:5]
m = json.load(open(meta))
shapes, dtypes = m["shapes"], [np.dtype(d) for d in m["dtypes"]]
sizes = [int(np.prod(s)) * d.itemsize for s, d in zip(shapes, dtypes)]
raw = open(inputs, "rb").read()
opts = ort.SessionOptions()
opts.intra_op_num_threads = m.get("threads", 0)
if not m.get("optimize", True):  # execute the graph as written (QDQ pairs stay QDQ pairs)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]
ys, times = [], []
for start in range(0, len(raw), sum(sizes)):
    feed, pos = {}, start
    for n, shape, d, size in zip(names, shapes, dtypes, sizes):
        feed[n] = np.frombuffer(raw, dtype=d, count=size // d.itemsize, offset=pos).reshape(shape)
        pos += size
    t0 = time.perf_counter()
    ys.append(s.run(None, feed)[0])
    times.append(time.perf_counter() - t0)
np.stack(ys).astype(np.float32).tofile(outputs)
print(json.dumps({"latency_ms": 1000 * float(np.median(times)), "shape": list(ys[0].shape)}))
)PY";

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct OrtResult {
  std::vector<torch::Tensor> outputs;
  double latency_ms = 0;
};

OrtResult run_onnxruntime(const std::string& python, const std::string& model_bytes, const std::vector<Inputs>& inputs, bool optimize) {
  const fs::path dir = fs::temp_directory_path() / ("edgeforge-ort-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
  fs::create_directories(dir);
  struct Cleanup {
    fs::path d;
    ~Cleanup() { std::error_code ec; fs::remove_all(d, ec); }
  } cleanup{dir};
  {
    std::ofstream(dir / "model.onnx", std::ios::binary) << model_bytes;
    std::ofstream(dir / "run.py") << kOrtScript;
    std::ofstream in(dir / "inputs.bin", std::ios::binary);
    // integer inputs (token ids) as int64, everything else as float32
    auto as_written = [](const torch::Tensor& x) { return (x.is_floating_point() ? x.to(torch::kFloat) : x.to(torch::kLong)).contiguous(); };
    for (const auto& call : inputs)
      for (const auto& x : call) {
        torch::Tensor c = as_written(x);
        in.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
      }
    nlohmann::json shapes = nlohmann::json::array(), dtypes = nlohmann::json::array();
    for (const auto& x : inputs.at(0)) {
      shapes.push_back(x.sizes().vec());
      dtypes.push_back(x.is_floating_point() ? "float32" : "int64");
    }
    std::ofstream(dir / "meta.json") << nlohmann::json({{"shapes", shapes}, {"dtypes", dtypes}, {"optimize", optimize}}).dump();
  }
  std::string cmd = shell_quote(python) + " " + shell_quote((dir / "run.py").string()) + " " + shell_quote((dir / "model.onnx").string()) + " " +
                    shell_quote((dir / "inputs.bin").string()) + " " + shell_quote((dir / "outputs.bin").string()) + " " +
                    shell_quote((dir / "meta.json").string()) + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("export: cannot start " + python);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  if (status != 0) throw std::runtime_error("export: ONNX Runtime (" + python + ") failed: " + out);
  nlohmann::json info = nlohmann::json::parse(out.substr(out.rfind('{')));
  std::vector<int64_t> shape = info.at("shape").get<std::vector<int64_t>>();
  std::string bytes = read_file(dir / "outputs.bin");
  torch::Tensor all = torch::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size() / 4)}, torch::kFloat).clone();
  OrtResult r;
  r.latency_ms = info.at("latency_ms").get<double>();
  std::vector<int64_t> full = {static_cast<int64_t>(inputs.size())};
  full.insert(full.end(), shape.begin(), shape.end());
  all = all.view(full);
  for (int64_t i = 0; i < all.size(0); ++i) r.outputs.push_back(all[i]);
  return r;
}

std::string default_python(const std::string& given) {
  if (!given.empty()) return given;
  const char* env = std::getenv("EDGEFORGE_PYTHON");
  if (env && *env) return env;
  return EDGEFORGE_DEFAULT_PYTHON;
}

double max_rel(const torch::Tensor& a, const torch::Tensor& ref) {
  return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item<double>();
}

std::string fmt(double v, int digits = 4) {
  std::ostringstream s;
  s.precision(digits);
  s << v;
  return s.str();
}

std::string report_markdown(const nlohmann::json& r) {
  std::ostringstream md;
  md << "# Export report\n\n";
  md << "| | |\n|---|---|\n";
  for (const char* k : {"run", "checkpoint", "recipe", "model", "quant", "observer", "float_layers", "calib_samples", "eval_samples", "batch", "opset"})
    if (r.contains(k)) md << "| " << k << " | " << (r[k].is_string() ? r[k].get<std::string>() : r[k].dump()) << " |\n";
  md << "\n## Size\n\n| | bytes |\n|---|---|\n";
  md << "| fp32 ONNX | " << r["size"]["fp32_bytes"] << " |\n| this ONNX | " << r["size"]["onnx_bytes"] << " |\n| ratio | "
     << fmt(r["size"]["ratio"].get<double>(), 3) << " |\n| tensors only (weights, scales, constants), ratio | "
     << fmt(r["size"]["tensor_ratio"].get<double>(), 3) << " |\n";
  const std::string m = r["metric"]["name"];
  md << "\n## " << m << " on held-out data\n\n| float (LibTorch) | simulated quantized (LibTorch) | ONNX Runtime |\n|---|---|---|\n";
  md << "| " << r["metric"]["float"].dump() << " | " << r["metric"]["simulated"].dump() << " | " << r["metric"]["onnxruntime"].dump() << " |\n";
  if (r["metric"].contains("onnxruntime_unfused"))
    md << "\nONNX Runtime with graph optimizations off (QDQ executed as written): " << r["metric"]["onnxruntime_unfused"].dump() << "\n";
  md << "\n## Agreement\n\n";
  md << "- traced graph vs module (max relative error): " << r["agreement"]["graph_vs_module"].dump() << "\n";
  md << "- ONNX Runtime vs simulation (max relative error): " << r["agreement"]["onnxruntime_vs_simulated"].dump() << "\n";
  md << "- ONNX Runtime vs the float module (max relative error): " << r["agreement"]["onnxruntime_vs_float"].dump() << "\n";
  if (r.contains("onnxruntime_latency_ms")) md << "- ONNX Runtime CPU latency per batch: " << r["onnxruntime_latency_ms"].dump() << " ms\n";
  if (!r["layer_errors"].empty()) {
    md << "\n## Largest per-layer errors (quantized vs float activations)\n\n| tensor | relative L2 error | SQNR dB |\n|---|---|---|\n";
    for (const auto& e : r["layer_errors"]) md << "| " << e["tensor"].get<std::string>() << " | " << fmt(e["rel_error"].get<double>()) << " | " << fmt(e["sqnr_db"].get<double>(), 3) << " |\n";
  }
  return md.str();
}

// A format the target writes itself (a scene's .ply): into a temporary folder renamed into place.
nlohmann::json export_files(ExportTarget& target, const ExportOptions& o, const std::string& recipe) {
  const auto formats = target.file_formats();
  if (std::find(formats.begin(), formats.end(), o.format) == formats.end()) {
    std::string known = "onnx";
    for (const auto& f : formats) known += ", " + f;
    throw InputError("export: a '" + recipe + "' run cannot be written as --format " + o.format + " (it offers " + known + ")");
  }
  const fs::path out_dir = o.out_dir.empty() ? o.run_dir / "export" / o.format : o.out_dir;
  nlohmann::json report;
  write_folder_atomically(out_dir, [&](const fs::path& tmp) { report = target.write_files(o.format, tmp); });
  spdlog::info("export: wrote {}", out_dir.string());
  return report;
}

}  // namespace

nlohmann::json run_export(const ExportOptions& o) {
  if (o.format.empty()) throw InputError("export: --format is empty");
  if (o.format == "onnx" && !o.quant.empty()) QuantScheme::parse(o.quant, o.observer);  // bad options fail before anything is read
  if (o.batch < 1) throw InputError("export: --batch must be >= 1");

  OpenedRun run = open_run(o.run_dir, o.overrides, o.checkpoint);
  const std::string recipe = RunSettings::from(run.config).recipe;
  if (!export_targets().contains(recipe))
    throw InputError("export: recipe '" + recipe + "' registers no export target (README: Extending, an export target)");
  std::unique_ptr<ExportTarget> target = export_targets().create(recipe, run);
  if (o.format != "onnx") return export_files(*target, o, recipe);
  if (target->models().empty()) {
    std::string formats;
    for (const auto& f : target->file_formats()) formats += (formats.empty() ? "" : ", ") + f;
    throw InputError("export: a '" + recipe + "' run has no network to export as ONNX: use --format " + formats);
  }
  // the run's own `export` section gives the defaults the command line did not
  const ExportSettings defaults = ExportSettings::from(run.config.section("export"));
  QuantScheme scheme = QuantScheme::parse(o.quant.empty() ? defaults.quant : o.quant, o.observer);
  scheme.float_layers = defaults.float_layers;
  scheme.float_layers.insert(scheme.float_layers.end(), o.float_layers.begin(), o.float_layers.end());
  const int64_t calib_n = o.calib < 0 ? defaults.calib : o.calib;
  const fs::path out_dir = o.out_dir.empty() ? o.run_dir / "export" / scheme.name : o.out_dir;
  const std::string model = o.model.empty() ? target->models().at(0) : o.model;
  CaptureSpec spec = target->spec(model, o.batch);
  torch::manual_seed(0);

  Captured cap = capture(spec);
  Interpreter float_graph(cap.graph);
  torch::Tensor module_out;
  {
    torch::NoGradGuard ng;
    module_out = spec.forward(spec.examples);
  }
  const double graph_vs_module = max_rel(float_graph.run1(spec.examples), module_out);
  if (!(graph_vs_module < 1e-3))
    throw std::runtime_error("export: the lowered graph disagrees with the module (max relative error " + fmt(graph_vs_module) + ")");
  const std::string fp32_bytes = onnx_model_bytes(cap.graph);

  QuantizedGraph qg;
  int64_t calib_count = 0;
  if (scheme.quantized()) {
    std::vector<Inputs> calib = target->calibration(model, calib_n, o.batch);
    if (calib.empty()) throw InputError("export: --calib " + std::to_string(calib_n) + " gives no full batch of " + std::to_string(o.batch));
    calib_count = static_cast<int64_t>(calib.size()) * o.batch;
    qg = insert_qdq(cap, calibrate(cap, calib, scheme), scheme);
  } else if (scheme.half) {
    qg.graph = to_half(cap.graph);
    for (const auto& t : cap.activation_points) qg.dequantized[t] = t;  // per-layer errors: the same tensors in half precision
  } else {
    qg.graph = cap.graph;
  }
  qg.graph.metadata["edgeforge.recipe"] = recipe;
  qg.graph.metadata["edgeforge.model"] = model;
  const std::string bytes = onnx_model_bytes(qg.graph);

  // held-out metric: the module, the simulation (the exported graph in LibTorch), ONNX Runtime
  Heldout held = target->heldout(model, o.eval_samples, o.batch);
  Interpreter sim(qg.graph);
  std::vector<torch::Tensor> float_out, sim_out;
  {
    torch::NoGradGuard ng;
    for (const auto& x : held.inputs) {
      float_out.push_back(spec.forward(x));
      sim_out.push_back(sim.run1(x));
    }
  }
  nlohmann::json report = {{"run", o.run_dir.string()}, {"checkpoint", run.checkpoint.string()}, {"recipe", recipe}, {"model", model},
                           {"quant", scheme.name}, {"observer", scheme.quantized() ? scheme.observer : "none"}, {"calib_samples", calib_count},
                           {"float_layers", scheme.float_layers},
                           {"eval_samples", static_cast<int64_t>(held.inputs.size()) * o.batch}, {"batch", o.batch}, {"opset", kOnnxOpset}};
  // the file, and its tensors alone (weights, scales, constants: what the graph's structure does not add)
  report["size"] = {{"fp32_bytes", fp32_bytes.size()}, {"onnx_bytes", bytes.size()},
                    {"ratio", static_cast<double>(bytes.size()) / static_cast<double>(fp32_bytes.size())},
                    {"fp32_tensor_bytes", cap.graph.initializer_bytes()}, {"tensor_bytes", qg.graph.initializer_bytes()},
                    {"tensor_ratio", static_cast<double>(qg.graph.initializer_bytes()) / static_cast<double>(std::max<int64_t>(cap.graph.initializer_bytes(), 1))}};
  report["metric"] = {{"name", target->metric_name(model)}, {"higher_is_better", target->higher_is_better(model)},
                      {"float", target->metric(model, float_out, held.targets)}, {"simulated", target->metric(model, sim_out, held.targets)},
                      {"onnxruntime", nullptr}};
  report["agreement"] = {{"graph_vs_module", graph_vs_module}, {"onnxruntime_vs_simulated", nullptr}, {"onnxruntime_vs_float", nullptr}};
  const std::string python = default_python(o.python);
  if (o.run_onnxruntime && !python.empty() && !held.inputs.empty()) {
    OrtResult ort = run_onnxruntime(python, bytes, held.inputs, /*optimize=*/true);
    report["metric"]["onnxruntime"] = target->metric(model, ort.outputs, held.targets);
    double worst = 0, worst_float = 0;
    for (size_t i = 0; i < ort.outputs.size(); ++i) {
      worst = std::max(worst, max_rel(ort.outputs[i], sim_out[i]));
      worst_float = std::max(worst_float, max_rel(ort.outputs[i].view_as(float_out[i]), float_out[i]));
    }
    report["agreement"]["onnxruntime_vs_simulated"] = worst;
    report["agreement"]["onnxruntime_vs_float"] = worst_float;
    report["onnxruntime_latency_ms"] = ort.latency_ms;
    if (scheme.quantized()) {
      // The same file with ONNX Runtime's graph optimizations off: QDQ pairs run as written instead
      // of being fused into its integer kernels, which round intermediates their own way (and on
      // x86 without VNNI, its u8s8 kernels can saturate).
      OrtResult unfused = run_onnxruntime(python, bytes, held.inputs, /*optimize=*/false);
      report["metric"]["onnxruntime_unfused"] = target->metric(model, unfused.outputs, held.targets);
      double w = 0;
      for (size_t i = 0; i < unfused.outputs.size(); ++i) w = std::max(w, max_rel(unfused.outputs[i], sim_out[i]));
      report["agreement"]["onnxruntime_unfused_vs_simulated"] = w;
    }
  }

  // per-layer errors: each quantized activation against the same tensor of the float graph
  nlohmann::json layers = nlohmann::json::array();
  if ((scheme.quantized() || scheme.half) && !held.inputs.empty()) {
    std::map<std::string, torch::Tensor> ref, got;
    std::map<std::string, std::string> back;
    for (const auto& [t, dq] : qg.dequantized) back[dq] = t;
    const size_t nb = std::min<size_t>(held.inputs.size(), 8);
    for (size_t i = 0; i < nb; ++i) {
      auto keep = [](std::map<std::string, torch::Tensor>& m, const std::string& k, const torch::Tensor& v) {
        m[k] = m.count(k) ? torch::cat({m[k], v.flatten()}) : v.flatten();
      };
      float_graph.run1(held.inputs[i], [&](const std::string& n, const torch::Tensor& v) {
        if (qg.dequantized.count(n)) keep(ref, n, v);
      });
      sim.run1(held.inputs[i], [&](const std::string& n, const torch::Tensor& v) {
        auto it = back.find(n);
        if (it != back.end()) keep(got, it->second, v);
      });
    }
    std::vector<std::pair<double, std::string>> errs;
    for (const auto& [t, r] : ref)
      if (got.count(t)) errs.push_back({((got[t] - r).norm() / r.norm().clamp_min(1e-12)).item<double>(), t});
    std::sort(errs.rbegin(), errs.rend());
    for (size_t i = 0; i < std::min<size_t>(errs.size(), 10); ++i)
      layers.push_back({{"tensor", errs[i].second}, {"rel_error", errs[i].first}, {"sqnr_db", -20 * std::log10(std::max(errs[i].first, 1e-12))}});
  }
  report["layer_errors"] = layers;

  write_folder_atomically(out_dir, [&](const fs::path& tmp) {
    std::ofstream(tmp / "model.onnx", std::ios::binary) << bytes;
    if (scheme.quantized()) std::ofstream(tmp / "encodings.json") << qg.encodings.dump(1);
    std::ofstream(tmp / "report.json") << report.dump(2);
    std::ofstream(tmp / "report.md") << report_markdown(report);
  });
  spdlog::info("export: wrote {} ({} bytes, {} {:.4f} float / {:.4f} simulated)", (out_dir / "model.onnx").string(), bytes.size(),
               target->metric_name(model), report["metric"]["float"].get<double>(), report["metric"]["simulated"].get<double>());
  return report;
}

}  // namespace ef::exporter
