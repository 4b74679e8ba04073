#pragma once
// The loop every recipe shares: schedules, autocast, EMA, periodic eval and samples, atomic
// checkpoints with retention, exact resume, SIGINT/SIGTERM -> final checkpoint, NaN/Inf -> stop
// with the last good checkpoint kept.
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "core/checkpoint.h"
#include "core/config.h"
#include "core/metrics.h"
#include "core/recipe.h"
#include "core/safetensors.h"

namespace ef {

class WeightFakeQuant;  // core/qat.h

struct TrainOptions {
  int64_t steps = 1000;
  int64_t log_every = 20;
  int64_t eval_every = 500;   // 0: only at the end
  int64_t ckpt_every = 500;   // 0: only at the end
  int64_t sample_every = 0;   // 0: with every eval
  int keep_last = 3;
  double ema = 0.0;           // EMA decay; 0 disables
  int64_t grad_accum = 1;     // handed to the recipe (RunContext)
  double grad_clip = 0.0;     // handed to the recipe (RunContext)
  std::string precision = "fp32";  // fp32 | bf16 (autocast)
  bool tensorboard = true;
  std::vector<std::string> qat_float_layers;  // export.float_layers: kept float in QAT as in export
  int qat_bits = 0;           // quant.qat: fake-quantized weights of this many bits in every step (core/qat.h); 0: off
  static TrainOptions from(const Config& train);
  // Whether the shared option `key` (grad_accum, grad_clip, ema, precision, sample_every) has its default value.
  bool is_default(const std::string& key) const;
};

enum class TrainStatus { Finished, Interrupted };

struct TrainOutcome {
  TrainStatus status = TrainStatus::Finished;
  int64_t step = 0;
  Scalars final_metrics;  // last eval
};

class Trainer {
 public:
  Trainer(Recipe& recipe, TrainOptions options, RunContext ctx, std::string config_hash);
  ~Trainer();
  // Continues from the run's latest checkpoint when there is one.
  TrainOutcome run(bool resume);

  // Checkpoint I/O, public for `edgeforge eval` and tests.
  void save_checkpoint(int64_t step, const Scalars& metrics);
  int64_t load_checkpoint(const std::filesystem::path& folder);  // returns its step

 private:
  Scalars evaluate_with_ema();
  void update_ema();
  void swap_ema();

  Recipe& recipe_;
  TrainOptions opt_;
  RunContext ctx_;
  std::string config_hash_;
  CheckpointStore store_;
  std::map<std::string, TensorMap> ema_;  // module -> shadow parameters
  std::unique_ptr<WeightFakeQuant> qat_;  // quant.qat
  bool ema_swapped_ = false;
  int64_t step_ = 0;
};

// Loads module weights (the EMA ones when present and asked for) from a checkpoint folder.
void load_weights(Recipe& recipe, const std::filesystem::path& folder, bool prefer_ema);
// The same for one network stored as <name>.safetensors (<name>.ema.safetensors): for tools that
// rebuild a single network of a run without its recipe (and so without its data).
void load_module_weights(torch::nn::Module& module, const std::filesystem::path& folder, const std::string& name, bool prefer_ema);

// SIGINT/SIGTERM set a flag the loop polls; installed for the lifetime of the guard.
class StopSignalGuard {
 public:
  StopSignalGuard();
  ~StopSignalGuard();
  static bool requested();
  static void request();  // for tests
  static void clear();
};

}  // namespace ef
