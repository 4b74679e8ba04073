#pragma once
// Launching runs: config + overrides -> run folder -> recipe -> trainer. Shared by the CLI's
// train/eval/sweep and by the tests, so that what the tests run is what users run.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/recipe.h"
#include "core/trainer.h"

namespace ef {

struct LaunchOptions {
  std::vector<std::string> overrides;           // "a.b=<json>"
  std::filesystem::path runs_root = "runs";     // runs/<name>/<stamp>/
  std::filesystem::path run_dir;                // explicit run folder (sweeps); resumed when it holds a checkpoint
  bool resume = false;                          // continue `run_dir` from its config.json and latest checkpoint
  bool allow_config_change = false;             // resume even when the resolved config differs
  bool quiet = false;                           // no console metrics/progress (tests, sweeps)
};

struct LaunchResult {
  std::filesystem::path run_dir;
  TrainOutcome outcome;
};

LaunchResult launch_training(const std::filesystem::path& config_file, const LaunchOptions& options);

// Validates a config as `launch_training` would (builds the recipe, loads the networks it names,
// refuses unknown keys and bad values) and writes no run folder; returns the resolved config.
// Datasets a recipe generates are still cached under their data paths. Throws ConfigError/InputError.
Config check_config(const std::filesystem::path& config_file, const std::vector<std::string>& overrides);

// A built recipe for an existing run (eval, export), weights loaded from its latest checkpoint
// (or `checkpoint` when given).
struct OpenedRun {
  Config config;
  RunContext ctx;
  std::unique_ptr<Recipe> recipe;
  std::filesystem::path checkpoint;
};
OpenedRun open_run(const std::filesystem::path& run_dir, const std::vector<std::string>& overrides,
                   const std::filesystem::path& checkpoint = {}, bool prefer_ema = true);

// A run folder named by the user: `path` itself when it holds config.json, else its newest
// sub-folder that does (runs/<name>/ -> runs/<name>/<latest stamp>/). Throws naming `path` and `what`
// (the config key or option that named it) when neither exists.
std::filesystem::path resolve_run_folder(const std::filesystem::path& path, const std::string& what);

// One network's weights from a run's latest checkpoint (`<module>.ema.safetensors` when present and
// asked for, else `<module>.safetensors`), for a recipe that starts from another run's model.
void load_module_from_run(const std::filesystem::path& run_dir, const std::string& module_name, torch::nn::Module& module,
                          bool prefer_ema = true);

// The config's `export` section: the defaults `edgeforge export` uses where its command line is
// silent. Read (and so validated) when the run is trained too, so that a typo there is refused
// before training rather than found at export time.
struct ExportSettings {
  std::string quant = "w8a8";             // one of quant_names()
  std::vector<std::string> float_layers;  // parameter-name prefixes kept in float
  int64_t calib = 64;                     // calibration samples (>= 1)
  static const std::vector<std::string>& quant_names();  // fp32, fp16, w8a8, w8a16, w4a8
  static ExportSettings from(const Config& section);
};

// Root keys every config may carry, read here: recipe, name, seed, device, deterministic, threads,
// and the sections other stages read (export, description).
struct RunSettings {
  std::string recipe, name, device;
  uint64_t seed = 0;
  bool deterministic = true;
  int threads = 0;  // 0: LibTorch's default
  ExportSettings exported;
  static RunSettings from(const Config& root);
};

std::string resolved_config_hash(const Config& root);
void setup_logging(const std::filesystem::path& log_file, bool quiet);

}  // namespace ef
