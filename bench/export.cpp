// The export stage on any exportable run, side by side: fp32, fp16 and w8a8 ONNX (or the schemes
// given): file size and size of the tensors alone, ONNX Runtime CPU latency (median per batch, the
// venv's Python) and the held-out metric of the float module, the LibTorch simulation and ONNX
// Runtime, with the change against fp32. Targets: w8a8 size <= 0.26x; classify top-1 within 1
// point; flow EPE within 5 %.
//
//   build/bench/bench_export --run RUN_DIR [--model NAME] [--quant fp32,fp16,w8a8] [--calib 64] [--eval-samples 500]
//   build/bench/bench_export --train-steps 800     # trains configs/quickstart.json for that many steps first
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>

#include "core/run.h"
#include "export/export.h"

int main(int argc, char** argv) {
  CLI::App app("export: fp32 vs fp16 vs w8a8 ONNX (size, ONNX Runtime latency, held-out metric)");
  std::string run, model, observer = "minmax";
  std::vector<std::string> schemes = {"fp32", "fp16", "w8a8"};
  int64_t calib = 64, eval_samples = 500, train_steps = 0;
  app.add_option("--run", run, "an exportable run folder");
  app.add_option("--model", model, "which of the recipe's networks (default: its first)");
  app.add_option("--quant", schemes, "schemes, the first is the reference")->delimiter(',');
  app.add_option("--train-steps", train_steps, "train configs/quickstart.json for this many steps first (when no --run)");
  app.add_option("--calib", calib, "calibration samples");
  app.add_option("--eval-samples", eval_samples, "held-out samples");
  app.add_option("--observer", observer, "minmax, percentile or mse");
  CLI11_PARSE(app, argc, argv);
  try {
    if (run.empty()) {
      if (train_steps <= 0) throw std::invalid_argument("give --run or --train-steps");
      ef::LaunchOptions o;
      o.quiet = true;
      o.runs_root = "runs/bench-export";
      o.overrides = {"train.steps=" + std::to_string(train_steps), "device=\"cpu\""};
      run = ef::launch_training(std::string(EDGEFORGE_SOURCE_DIR) + "/configs/quickstart.json", o).run_dir.string();
    }
    std::vector<nlohmann::json> r;
    for (const auto& q : schemes) {
      ef::exporter::ExportOptions o;
      o.run_dir = run;
      o.model = model;
      o.quant = q;
      o.observer = observer;
      o.calib = calib;
      o.eval_samples = eval_samples;
      o.out_dir = std::filesystem::path(run) / "export" / ("bench-" + q);
      r.push_back(ef::exporter::run_export(o));
    }
    auto num = [](const nlohmann::json& j) { return j.is_number() ? j.get<double>() : NAN; };
    const std::string metric = r[0]["metric"]["name"];
    const bool higher = r[0]["metric"]["higher_is_better"];
    std::printf("run: %s  model %s (%s), %lld held-out samples, calib %lld, observer %s\n", run.c_str(), r[0]["model"].get<std::string>().c_str(),
                r[0]["recipe"].get<std::string>().c_str(), static_cast<long long>(r[0]["eval_samples"].get<int64_t>()), static_cast<long long>(calib),
                observer.c_str());
    std::printf("%-36s", "");
    for (const auto& q : schemes) std::printf(" %12s", q.c_str());
    std::printf("\n");
    auto row = [&](const char* name, const std::function<double(const nlohmann::json&)>& f, const char* format) {
      std::printf("%-36s", name);
      for (const auto& x : r) std::printf(format, f(x));
      std::printf("\n");
    };
    row("ONNX file (bytes)", [&](const nlohmann::json& x) { return num(x["size"]["onnx_bytes"]); }, " %12.0f");
    row("  ratio to fp32", [&](const nlohmann::json& x) { return num(x["size"]["onnx_bytes"]) / num(r[0]["size"]["onnx_bytes"]); }, " %12.3f");
    row("  tensors only, ratio to fp32", [&](const nlohmann::json& x) { return num(x["size"]["tensor_ratio"]); }, " %12.3f");
    row("ONNX Runtime CPU latency (ms)", [&](const nlohmann::json& x) { return num(x["onnxruntime_latency_ms"]); }, " %12.3f");
    row("  ratio to fp32", [&](const nlohmann::json& x) { return num(x["onnxruntime_latency_ms"]) / num(r[0]["onnxruntime_latency_ms"]); }, " %12.3f");
    const std::string m = metric + (higher ? " (higher is better)" : " (lower is better)");
    std::printf("%s\n", m.c_str());
    row("  LibTorch float module", [&](const nlohmann::json& x) { return num(x["metric"]["float"]); }, " %12.4f");
    row("  LibTorch simulation", [&](const nlohmann::json& x) { return num(x["metric"]["simulated"]); }, " %12.4f");
    row("  ONNX Runtime", [&](const nlohmann::json& x) { return num(x["metric"]["onnxruntime"]); }, " %12.4f");
    row("  ONNX Runtime, QDQ as written", [&](const nlohmann::json& x) { return x["metric"].contains("onnxruntime_unfused") ? num(x["metric"]["onnxruntime_unfused"]) : num(x["metric"]["onnxruntime"]); }, " %12.4f");
    const double ref = num(r[0]["metric"]["float"]);
    row("  simulation vs float, change", [&](const nlohmann::json& x) { return num(x["metric"]["simulated"]) - ref; }, " %+12.4f");
    row("  ONNX Runtime vs float, change", [&](const nlohmann::json& x) { return num(x["metric"]["onnxruntime"]) - ref; }, " %+12.4f");
    row("  ONNX Runtime vs float, change %", [&](const nlohmann::json& x) { return 100 * (num(x["metric"]["onnxruntime"]) - ref) / std::abs(ref); }, " %+12.2f");
    std::printf("targets: w8a8 size <= 0.26x; classify top-1 drop <= 0.01; flow EPE within +5 %%\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
