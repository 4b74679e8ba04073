#include "core/config.h"
#include "core/run.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/qat.h"
#include "core/device.h"
#include "core/folder_lock.h"
#include "core/frozen.h"

namespace ef {

namespace fs = std::filesystem;

RunSettings RunSettings::from(const Config& root) {
  RunSettings s;
  s.recipe = root.require<std::string>("recipe");
  s.name = root.get<std::string>("name", s.recipe);
  s.seed = static_cast<uint64_t>(root.get<int64_t>("seed", 0));
  s.device = root.get<std::string>("device", "auto");
  s.deterministic = root.get<bool>("deterministic", true);
  s.threads = root.get<int>("threads", 0);
  if (s.threads < 0) root.invalid("threads", "must be >= 0 (0: LibTorch's default)");
  root.get<std::string>("description", "");
  s.exported = ExportSettings::from(root.section("export"));
  return s;
}

const std::vector<std::string>& ExportSettings::quant_names() {
  static const std::vector<std::string> names = {"fp32", "fp16", "w8a8", "w8a16", "w4a8"};
  return names;
}

ExportSettings ExportSettings::from(const Config& section) {
  ExportSettings e;
  e.quant = section.get<std::string>("quant", e.quant);
  const auto& names = quant_names();
  if (std::find(names.begin(), names.end(), e.quant) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    section.invalid("quant", "\"" + e.quant + "\" is not a quantization scheme (expected " + known + ")");
  }
  e.float_layers = section.get<std::vector<std::string>>("float_layers", {});
  e.calib = section.get<int64_t>("calib", e.calib);
  if (e.calib < 1) section.invalid("calib", "must be >= 1 calibration sample");
  return e;
}

std::string resolved_config_hash(const Config& root) { return hex64(fnv1a64(root.root().dump())); }

void setup_logging(const fs::path& log_file, bool quiet) {
  std::vector<spdlog::sink_ptr> sinks;
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_level(quiet ? spdlog::level::warn : spdlog::level::info);
  sinks.push_back(console);
  if (!log_file.empty()) sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_file.string()));
  auto logger = std::make_shared<spdlog::logger>("edgeforge", sinks.begin(), sinks.end());
  logger->set_pattern("[%Y-%m-%d %H:%M:%S] [%^%l%$] %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

namespace {
std::string timestamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

// runs/<name>/<stamp>: `name` must stay inside the runs folder.
fs::path fresh_run_dir(const fs::path& root, const Config& config) {
  const std::string name = config.get<std::string>("name", config.has("recipe") ? config.require<std::string>("recipe") : "run");
  const fs::path n(name);
  bool inside = !name.empty() && n.is_relative() && !n.has_root_name();
  for (const auto& part : n) inside = inside && part != ".." && part != ".";
  if (!inside) config.invalid("name", "\"" + name + "\" must be a relative folder name inside the runs folder (no '..', no absolute path)");
  fs::path base = root / n / timestamp();
  fs::path dir = base;
  for (int i = 1; fs::exists(dir); ++i) dir = base.string() + "-" + std::to_string(i);
  return dir;
}

struct Built {
  Config config;
  RunSettings settings;
  RunContext ctx;
  TrainOptions train;
  std::unique_ptr<Recipe> recipe;
};

// Every shared trainer option is honoured or refused: never silently ignored.
void check_train_options(const Recipe& recipe, const std::string& name, const TrainOptions& train, const Config& section) {
  for (const auto& key : recipe.unsupported_train_options())
    if (!train.is_default(key)) section.invalid(key, "the " + name + " recipe does not support it; remove the key (or set its default)");
  if (train.ema > 0 && recipe.ema_modules().empty())
    section.invalid("ema", "the " + name + " recipe keeps no moving average of any network; remove the key (or set 0)");
}

// Builds the recipe, which reads (and so resolves) every section; then unknown keys are errors.
Built build(Config config, const fs::path& run_dir, bool quiet) {
  Built b{config, RunSettings::from(config), {}, {}, nullptr};
  if (b.settings.threads > 0) at::set_num_threads(b.settings.threads);
  set_deterministic(b.settings.deterministic);
  seed_everything(b.settings.seed);
  b.train = TrainOptions::from(config.section("train"));
  if (QatOptions q = QatOptions::from(config); q.enabled) b.train.qat_bits = q.bits, b.train.qat_float_layers = b.settings.exported.float_layers;
  b.ctx.run_dir = run_dir;
  b.ctx.device = resolve_device(b.settings.device);
  b.ctx.seed = b.settings.seed;
  b.ctx.total_steps = b.train.steps;
  b.ctx.quiet = quiet;
  b.ctx.grad_accum = b.train.grad_accum;
  b.ctx.grad_clip = b.train.grad_clip;
  const auto& entry = recipes().at(b.settings.recipe);  // fails early with the known names
  b.recipe = entry.make(config, b.ctx);
  check_train_options(*b.recipe, b.settings.recipe, b.train, config.section("train"));
  load_frozen_networks(*b.recipe, config, b.ctx.device);
  config.reject_unknown_keys();
  return b;
}
}  // namespace

Config check_config(const fs::path& config_file, const std::vector<std::string>& overrides) {
  Config config = Config::load(config_file);
  for (const auto& s : overrides) config.apply_override(s);
  fresh_run_dir("runs", config);  // checks `name` (the folder itself is not created)
  return build(config, {}, /*quiet=*/true).config;
}

LaunchResult launch_training(const fs::path& config_file, const LaunchOptions& o) {
  fs::path run_dir = o.run_dir;
  bool resume = o.resume;
  Config config;
  if (o.resume) {
    if (run_dir.empty()) throw ConfigError("--resume needs the run folder to continue");
    if (!fs::exists(run_dir / "config.json")) throw ConfigError("cannot resume " + run_dir.string() + ": it has no config.json");
    config = Config::load(run_dir / "config.json");
  } else {
    config = Config::load(config_file);
  }
  for (const auto& s : o.overrides) config.apply_override(s);

  // A sweep point or an explicit folder that already holds this run continues it.
  if (!resume && !run_dir.empty() && (fs::exists(run_dir / "ckpt" / "latest") || !CheckpointStore(run_dir / "ckpt", 0).steps().empty()))
    resume = true;
  if (run_dir.empty()) run_dir = fresh_run_dir(o.runs_root, config);
  // A config refused while the recipe is built leaves no run folder behind (the datasets it
  // generated stay: they are caches, valid for the next run).
  const bool fresh_folder = !fs::exists(run_dir);
  // One writer per run folder, held until training returns: two processes training one folder would
  // overwrite each other's checkpoints and logs.
  FolderLock lock(run_dir, "run folder");
  setup_logging(run_dir / "log.txt", o.quiet);

  Built b;
  try {
    b = build(config, run_dir, o.quiet);
  } catch (...) {
    if (fresh_folder) {
      setup_logging({}, o.quiet);  // the console only: closes log.txt before it is removed
      std::error_code ec;
      fs::remove_all(run_dir, ec);
    }
    throw;
  }
  std::string hash = resolved_config_hash(b.config);
  if (resume) {
    CheckpointStore store(run_dir / "ckpt", b.train.keep_last);
    if (auto latest = store.latest()) {
      std::string before = CheckpointStore::read_meta(*latest).value("config_hash", "");
      if (before != hash && !o.allow_config_change)
        throw ConfigError("refusing to resume " + run_dir.string() + ": the resolved config differs from the one its checkpoint was trained with "
                          "(pass --allow-config-change to resume anyway)");
    }
  }
  write_file_atomically(run_dir / "config.json", b.config.root().dump(2) + "\n");
  spdlog::info("run folder {} (recipe {}, device {}, seed {})", run_dir.string(), b.settings.recipe, b.ctx.device.str(), b.settings.seed);

  Trainer trainer(*b.recipe, b.train, b.ctx, hash);
  LaunchResult r{run_dir, trainer.run(resume)};
  if (r.outcome.status == TrainStatus::Finished) {
    nlohmann::json done = {{"step", r.outcome.step}, {"metrics", r.outcome.final_metrics}};
    write_file_atomically(run_dir / "final.json", done.dump(2) + "\n");
  }
  return r;
}

OpenedRun open_run(const fs::path& run_dir, const std::vector<std::string>& overrides, const fs::path& checkpoint, bool prefer_ema) {
  if (!fs::exists(run_dir / "config.json")) throw ConfigError(run_dir.string() + " is not a run folder (no config.json)");
  Config config = Config::load(run_dir / "config.json");
  for (const auto& s : overrides) config.apply_override(s);
  Built b = build(config, run_dir, true);
  fs::path ckpt = checkpoint;
  if (ckpt.empty()) {
    CheckpointStore store(run_dir / "ckpt", 0);
    auto latest = store.latest();
    if (!latest) throw InputError(run_dir.string() + " has no checkpoint yet");
    ckpt = *latest;
  }
  load_weights(*b.recipe, ckpt, prefer_ema);
  return OpenedRun{b.config, b.ctx, std::move(b.recipe), ckpt};
}

fs::path resolve_run_folder(const fs::path& path, const std::string& what) {
  if (fs::exists(path / "config.json")) return path;
  if (!fs::is_directory(path)) throw ConfigError(what + ": run folder " + path.string() + " does not exist");
  std::vector<fs::path> runs;
  for (const auto& e : fs::directory_iterator(path))
    if (e.is_directory() && fs::exists(e.path() / "config.json")) runs.push_back(e.path());
  if (runs.empty()) throw ConfigError(what + ": " + path.string() + " holds no run (no config.json in it or in its sub-folders)");
  std::sort(runs.begin(), runs.end());  // stamps sort by time
  return runs.back();
}

void load_module_from_run(const fs::path& run_dir, const std::string& module_name, torch::nn::Module& module, bool prefer_ema) {
  CheckpointStore store(run_dir / "ckpt", 0);
  auto latest = store.latest();
  if (!latest) throw InputError(run_dir.string() + " has no checkpoint yet (train it first)");
  if (!fs::exists(*latest / (module_name + ".safetensors")))
    throw InputError(latest->string() + " holds no network named \"" + module_name + "\"");
  load_module_weights(module, *latest, module_name, prefer_ema);
}

}  // namespace ef
