#pragma once
// The export stage: a run's checkpoint -> model.onnx (QDQ for quantized schemes), the AIMET
// encodings JSON, report.md / report.json. Everything is written into a temporary folder and
// renamed onto the output folder at the end, so a failure leaves no partial export behind.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace ef::exporter {

struct ExportOptions {
  std::filesystem::path run_dir, out_dir;   // out_dir default: <run_dir>/export/<quant>
  std::filesystem::path checkpoint;         // default: the run's latest
  std::string model;                        // default: the target's first exportable module
  std::string format = "onnx";             // onnx, or a format the target writes itself (ply: Gaussian scenes)
  std::string quant;                        // fp32 | w8a8 | w8a16 | w4a8 (fp16: not yet); "": the run's export.quant, else w8a8
  std::string observer = "minmax";          // minmax | percentile | mse
  std::vector<std::string> float_layers;    // parameter-name prefixes kept in float; added to the run's export.float_layers
  int64_t calib = -1;                       // calibration samples from the training split; < 0: export.calib, else 64
  int64_t eval_samples = 256;               // held-out samples for the report (0: all)
  int64_t batch = 1;                        // the exported graph's fixed batch size
  std::vector<std::string> overrides;       // --set on the run's config
  std::string python;                       // for ONNX Runtime; default $EDGEFORGE_PYTHON or the build's venv
  bool run_onnxruntime = true;
};

// Returns report.json's content. Throws (InputError for bad options or input) without writing.
// --format other than onnx: files the run's export target writes itself (a splat run's .ply scenes).
nlohmann::json run_export(const ExportOptions& options);

}  // namespace ef::exporter
