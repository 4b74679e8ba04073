#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/commands.h"
#include "export/export.h"

namespace ef::cli {

void add_export(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("export", "Export a run's network to ONNX (QDQ quantized), with encodings and a report");
  auto o = std::make_shared<exporter::ExportOptions>();
  auto run_dir = std::make_shared<std::string>(), out = std::make_shared<std::string>(), ckpt = std::make_shared<std::string>();
  cmd->add_option("run_dir", *run_dir, "run folder (holds config.json and ckpt/)")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--model", o->model, "which of the recipe's networks (default: its first exportable one)");
  cmd->add_option("--format", o->format, "onnx (networks), or a format the run's export target writes itself (ply for a splat run: the standard 3DGS .ply and the compressed layout)");
  cmd->add_option("--quant", o->quant, "fp32, fp16 (half-precision body, float32 inputs and outputs), w8a8 (int8 weights per channel, uint8 activations per tensor), w8a16 (uint16 activations) or w4a8 (default: the run config's export.quant, else w8a8)");
  cmd->add_option("--observer", o->observer, "activation range calibration: minmax, percentile or mse");
  cmd->add_option("--float-layer", o->float_layers, "keep this layer (a parameter-name prefix, e.g. head) in float; repeatable, adds to export.float_layers");
  cmd->add_option("--calib", o->calib, "calibration samples from the run's training data (default: export.calib, else 64)");
  cmd->add_option("--eval-samples", o->eval_samples, "held-out samples for the report's metrics (0: all)");
  cmd->add_option("--batch", o->batch, "the exported graph's (fixed) batch size");
  cmd->add_option("--ckpt", *ckpt, "checkpoint folder (default: the run's latest)")->check(CLI::ExistingDirectory);
  cmd->add_option("--out", *out, "output folder (default: <run>/export/<quant>); replaced atomically");
  cmd->add_option("--python", o->python, "Python with onnxruntime (default: $EDGEFORGE_PYTHON or the build's venv)");
  cmd->add_flag_function("--no-onnxruntime", [o](int64_t) { o->run_onnxruntime = false; }, "skip the ONNX Runtime check");
  cmd->add_option("--set", o->overrides, "override a run config value")->take_all()->allow_extra_args(false);
  cmd->callback([=, &action] {
    action = [=] {
      o->run_dir = *run_dir;
      o->out_dir = *out;
      o->checkpoint = *ckpt;
      nlohmann::json report = exporter::run_export(*o);  // bad input: InputError, exit 2 (main.cpp)
      std::cout << report.dump(2) << "\n";
      return kOk;
    };
  });
}

}  // namespace ef::cli
