// The export stage on a classify run: fp32 ONNX against w8a8 QDQ ONNX, side by side: file size,
// ONNX Runtime CPU latency (median per batch, the venv's Python), and held-out top-1 accuracy of the
// float module, the LibTorch simulation and ONNX Runtime. Targets: size <= 0.26x, top-1 drop <= 1 point.
//
//   build/bench/bench_export --run RUN_DIR [--calib 64] [--eval-samples 500] [--observer minmax]
//   build/bench/bench_export --train-steps 800     # trains configs/quickstart.json for that many steps first
#include <CLI/CLI.hpp>

#include <cstdio>

#include "core/run.h"
#include "export/export.h"

int main(int argc, char** argv) {
  CLI::App app("export: fp32 vs w8a8 ONNX (size, ONNX Runtime latency, accuracy)");
  std::string run, observer = "minmax";
  int64_t calib = 64, eval_samples = 500, train_steps = 0;
  app.add_option("--run", run, "a classify run folder");
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
    nlohmann::json r[2];
    const char* schemes[2] = {"fp32", "w8a8"};
    for (int i = 0; i < 2; ++i) {
      ef::exporter::ExportOptions o;
      o.run_dir = run;
      o.quant = schemes[i];
      o.observer = observer;
      o.calib = calib;
      o.eval_samples = eval_samples;
      r[i] = ef::exporter::run_export(o);
    }
    auto num = [](const nlohmann::json& j) { return j.is_number() ? j.get<double>() : NAN; };
    std::printf("run: %s  (%lld held-out samples, calib %lld, observer %s)\n", run.c_str(), static_cast<long long>(r[1]["eval_samples"].get<int64_t>()),
                static_cast<long long>(calib), observer.c_str());
    std::printf("%-34s %14s %14s %10s\n", "", "fp32", "w8a8", "ratio");
    std::printf("%-34s %14lld %14lld %10.3f\n", "ONNX file (bytes)", static_cast<long long>(r[0]["size"]["onnx_bytes"].get<int64_t>()),
                static_cast<long long>(r[1]["size"]["onnx_bytes"].get<int64_t>()),
                num(r[1]["size"]["onnx_bytes"]) / num(r[0]["size"]["onnx_bytes"]));
    std::printf("%-34s %14.3f %14.3f %10.3f\n", "ONNX Runtime CPU latency (ms)", num(r[0]["onnxruntime_latency_ms"]), num(r[1]["onnxruntime_latency_ms"]),
                num(r[1]["onnxruntime_latency_ms"]) / num(r[0]["onnxruntime_latency_ms"]));
    std::printf("%-34s %14.4f %14.4f %+10.4f\n", "top-1, LibTorch float / simulated", num(r[0]["metric"]["float"]), num(r[1]["metric"]["simulated"]),
                num(r[1]["metric"]["simulated"]) - num(r[0]["metric"]["float"]));
    std::printf("%-34s %14.4f %14.4f %+10.4f\n", "top-1, ONNX Runtime", num(r[0]["metric"]["onnxruntime"]), num(r[1]["metric"]["onnxruntime"]),
                num(r[1]["metric"]["onnxruntime"]) - num(r[0]["metric"]["onnxruntime"]));
    std::printf("targets: size ratio <= 0.26, top-1 drop <= 0.01\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
