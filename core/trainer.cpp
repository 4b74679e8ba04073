#include "core/config.h"
#include "core/trainer.h"

#include <ATen/autocast_mode.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <sstream>

#include "core/atomic_file.h"
#include "core/progress.h"
#include "core/qat.h"

namespace ef {

namespace fs = std::filesystem;

// ---- signals -----------------------------------------------------------------------------------
namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }
struct sigaction g_old_int, g_old_term;
}  // namespace

StopSignalGuard::StopSignalGuard() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}
StopSignalGuard::~StopSignalGuard() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}
bool StopSignalGuard::requested() { return g_stop.load(); }
void StopSignalGuard::request() { g_stop.store(true); }
void StopSignalGuard::clear() { g_stop.store(false); }

// bf16 autocast for the span of one training step (also on an exception).
struct BF16Autocast {
  c10::DeviceType dev;
  bool on;
  BF16Autocast(c10::DeviceType d, bool enable) : dev(d), on(enable) {
    if (!on) return;
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::set_autocast_dtype(dev, at::kBFloat16);
  }
  ~BF16Autocast() {
    if (!on) return;
    at::autocast::set_autocast_enabled(dev, false);
    at::autocast::clear_cache();
  }
};

// ---- options -----------------------------------------------------------------------------------
TrainOptions TrainOptions::from(const Config& c) {
  TrainOptions o;
  o.steps = c.get<int64_t>("steps", o.steps);
  o.log_every = c.get<int64_t>("log_every", o.log_every);
  o.eval_every = c.get<int64_t>("eval_every", o.eval_every);
  o.ckpt_every = c.get<int64_t>("ckpt_every", o.ckpt_every);
  o.sample_every = c.get<int64_t>("sample_every", o.sample_every);
  o.keep_last = c.get<int>("keep_last", o.keep_last);
  o.ema = c.get<double>("ema", o.ema);
  o.precision = c.get<std::string>("precision", o.precision);
  o.grad_accum = c.get<int64_t>("grad_accum", o.grad_accum);
  o.grad_clip = c.get<double>("grad_clip", o.grad_clip);
  if (o.grad_accum < 1) c.invalid("grad_accum", "must be at least 1");
  if (o.grad_clip < 0) c.invalid("grad_clip", "must be >= 0 (0: no clipping)");
  o.tensorboard = c.get<bool>("tensorboard", o.tensorboard);
  if (o.steps <= 0) c.invalid("steps", "must be positive");
  if (o.log_every <= 0) c.invalid("log_every", "must be positive");
  if (o.eval_every < 0) c.invalid("eval_every", "must be >= 0 (0: only at the end)");
  if (o.ckpt_every < 0) c.invalid("ckpt_every", "must be >= 0 (0: only at the end)");
  if (o.sample_every < 0) c.invalid("sample_every", "must be >= 0 (0: with every eval)");
  if (o.keep_last < 0) c.invalid("keep_last", "must be >= 0 (0: keep every checkpoint)");
  if (o.precision != "fp32" && o.precision != "bf16")
    c.invalid("precision", "expected \"fp32\" or \"bf16\", got \"" + o.precision + "\"");
  if (o.ema < 0 || o.ema >= 1) c.invalid("ema", "expected 0 <= ema < 1");
  return o;
}

bool TrainOptions::is_default(const std::string& key) const {
  const TrainOptions d;
  if (key == "grad_accum") return grad_accum == d.grad_accum;
  if (key == "grad_clip") return grad_clip == d.grad_clip;
  if (key == "ema") return ema == d.ema;
  if (key == "precision") return precision == d.precision;
  if (key == "sample_every") return sample_every == d.sample_every;
  throw std::logic_error("TrainOptions::is_default: '" + key + "' is not a shared option a recipe may decline");
}

// ---- trainer -----------------------------------------------------------------------------------
Trainer::Trainer(Recipe& recipe, TrainOptions options, RunContext ctx, std::string config_hash)
    : recipe_(recipe), opt_(options), ctx_(std::move(ctx)), config_hash_(std::move(config_hash)),
      store_(ctx_.run_dir / "ckpt", options.keep_last) {
  if (opt_.qat_bits > 0)
    qat_ = std::make_unique<WeightFakeQuant>(
        [this] {
          std::vector<torch::nn::Module*> mods;
          for (const auto& [name, m] : recipe_.modules()) mods.push_back(m);
          return mods;
        },
        opt_.qat_bits, opt_.qat_float_layers);
  if (opt_.ema > 0) {
    auto mods = recipe_.modules();
    for (const auto& name : recipe_.ema_modules()) {
      TensorMap shadow;
      for (const auto& p : mods.at(name)->named_parameters(true)) shadow[p.key()] = p.value().detach().clone();
      ema_[name] = std::move(shadow);
    }
  }
}

Trainer::~Trainer() = default;

void Trainer::update_ema() {
  if (ema_.empty()) return;
  torch::NoGradGuard no_grad;
  auto mods = recipe_.modules();
  for (auto& [name, shadow] : ema_)
    for (const auto& p : mods.at(name)->named_parameters(true)) shadow.at(p.key()).lerp_(p.value(), 1.0 - opt_.ema);
}

void Trainer::swap_ema() {
  torch::NoGradGuard no_grad;
  auto mods = recipe_.modules();
  for (auto& [name, shadow] : ema_)
    for (const auto& p : mods.at(name)->named_parameters(true)) {
      torch::Tensor tmp = p.value().detach().clone();
      p.value().copy_(shadow.at(p.key()));
      shadow.at(p.key()).copy_(tmp);
    }
  ema_swapped_ = !ema_swapped_;
}

Scalars Trainer::evaluate_with_ema() {
  if (!ema_.empty()) swap_ema();
  Scalars m;
  try {
    m = recipe_.evaluate();
  } catch (...) {
    if (ema_swapped_) swap_ema();
    throw;
  }
  if (ema_swapped_) swap_ema();
  Scalars out;
  for (const auto& [k, v] : m) out["eval/" + k] = v;
  return out;
}

void Trainer::save_checkpoint(int64_t step, const Scalars& metrics) {
  nlohmann::json meta = {{"step", step}, {"config_hash", config_hash_}, {"metrics", metrics}};
  store_.save(step, [&](const fs::path& dir) {
    for (const auto& [name, module] : recipe_.modules())
      save_safetensors(dir / (name + ".safetensors"), module_state(*module), {{"format", "pt"}, {"step", std::to_string(step)}});
    for (const auto& [name, shadow] : ema_) save_safetensors(dir / (name + ".ema.safetensors"), shadow, {{"format", "pt"}});
    torch::serialize::OutputArchive archive;
    archive.write("step", torch::tensor(step));
    for (const auto& [name, opt] : recipe_.optimizers()) {
      torch::serialize::OutputArchive sub;
      opt->get().save(sub);
      archive.write("optim/" + name, sub);
    }
    archive.write("rng/cpu", at::detail::getDefaultCPUGenerator().get_state());
    torch::serialize::OutputArchive extra;
    recipe_.save_state(extra);
    archive.write("recipe", extra);
    // Serialised in memory, then written by the project's file writer: LibTorch's own file writer
    // throws from its destructor when the disk is full, which terminates the process instead of
    // failing the save (the checkpoint store then removes the partial folder and reports it).
    std::ostringstream bytes;
    archive.save_to(bytes);
    write_file_atomically(dir / "trainer.pt", bytes.str());
  }, meta);
}

int64_t Trainer::load_checkpoint(const fs::path& folder) {
  nlohmann::json meta = CheckpointStore::read_meta(folder);
  load_weights(recipe_, folder, /*prefer_ema=*/false);
  for (auto& [name, shadow] : ema_) {
    fs::path f = folder / (name + ".ema.safetensors");
    if (!fs::exists(f)) continue;
    CheckpointStore::verify_file(f);
    shadow = load_safetensors(f);
  }
  torch::serialize::InputArchive archive;
  fs::path state = folder / "trainer.pt";
  CheckpointStore::verify_file(state);
  try {
    archive.load_from(state.string());
  } catch (const c10::Error& e) {
    throw InputError(state.string() + ": corrupt or unreadable trainer state: " + e.what_without_backtrace());
  }
  torch::Tensor step;
  archive.read("step", step);
  for (const auto& [name, opt] : recipe_.optimizers()) {
    torch::serialize::InputArchive sub;
    archive.read("optim/" + name, sub);
    opt->get().load(sub);
  }
  torch::Tensor rng;
  archive.read("rng/cpu", rng);
  at::Generator cpu_generator = at::detail::getDefaultCPUGenerator();  // shares the global generator
  cpu_generator.set_state(rng);
  torch::serialize::InputArchive extra;
  archive.read("recipe", extra);
  recipe_.load_state(extra);
  return step.item<int64_t>();
}

void load_module_weights(torch::nn::Module& module, const fs::path& folder, const std::string& name, bool prefer_ema) {
  fs::path ema = folder / (name + ".ema.safetensors");
  fs::path plain = folder / (name + ".safetensors");
  fs::path f = prefer_ema && fs::exists(ema) ? ema : plain;
  CheckpointStore::verify_file(f);
  TensorMap state = load_safetensors(f);
  if (f == ema) {  // EMA files hold parameters only; buffers come from the live weights
    TensorMap live;  // read (and checked) once, when the EMA file lacks a buffer
    for (const auto& b : module.named_buffers(true))
      if (!state.count(b.key())) {
        if (live.empty()) {
          CheckpointStore::verify_file(plain);
          live = load_safetensors(plain);
        }
        state[b.key()] = live.at(b.key());
      }
  }
  load_module_state(module, state, f.string());
}

void load_weights(Recipe& recipe, const fs::path& folder, bool prefer_ema) {
  for (const auto& [name, module] : recipe.modules()) load_module_weights(*module, folder, name, prefer_ema);
}

TrainOutcome Trainer::run(bool resume) {
  TrainOutcome outcome;
  step_ = 0;
  store_.recover();  // this process writes the run: undo what a killed writer left behind
  if (resume) {
    if (auto latest = store_.latest()) {
      nlohmann::json meta = CheckpointStore::read_meta(*latest);
      step_ = load_checkpoint(*latest);
      spdlog::info("resumed from {} (step {})", latest->string(), step_);
    }
  }

  MetricLogger log;
  if (!ctx_.quiet) log.add(std::make_unique<ConsoleSink>());
  log.add(std::make_unique<JsonlSink>(ctx_.run_dir / "metrics.jsonl", resume ? step_ : -1));
  if (opt_.tensorboard) log.add(std::make_unique<TensorBoardSink>(ctx_.run_dir));

  const bool bf16 = opt_.precision == "bf16";
  const c10::DeviceType dev = ctx_.device.type();
  StopSignalGuard signals;
  ProgressBar bar(step_, opt_.steps, !ctx_.quiet);
  Scalars window;  // running sums since the last log line
  int64_t window_n = 0;
  auto t_window = std::chrono::steady_clock::now();
  std::map<std::string, ScheduledOptimizer*> optims = recipe_.optimizers();

  auto do_eval = [&](int64_t step) {
    Scalars m = evaluate_with_ema();
    log.scalars(step, m);
    outcome.final_metrics = m;
    if (opt_.sample_every == 0 || step % opt_.sample_every == 0 || step == opt_.steps)
      recipe_.write_samples(ctx_.run_dir / "samples", step, log);
    return m;
  };

  while (step_ < opt_.steps) {
    if (StopSignalGuard::requested()) {
      bar.finish();
      spdlog::warn("stop requested at step {}: writing a final checkpoint", step_);
      save_checkpoint(step_, outcome.final_metrics);
      log.flush();
      outcome.status = TrainStatus::Interrupted;
      outcome.step = step_;
      return outcome;
    }
    for (auto& [name, o] : optims) o->set_step(step_);
    Scalars m;
    try {
      BF16Autocast autocast(dev, bf16);
      // quant.qat: the step runs at the fake-quantized weights and updates the float masters
      struct QatStep {
        WeightFakeQuant* q;
        explicit QatStep(WeightFakeQuant* w) : q(w) { if (q) q->enter(); }
        ~QatStep() { if (q) q->leave(); }
      } qat_step(qat_.get());
      m = recipe_.train_step(step_);
    } catch (const NonFiniteLoss& e) {
      bar.finish();
      auto latest = store_.latest();
      log.flush();
      throw std::runtime_error("training stopped at step " + std::to_string(step_) + ": " + e.what() +
                               (latest ? "; the last good checkpoint is " + latest->string() : "; no checkpoint was written yet"));
    }
    auto loss = m.find("loss");
    if (loss != m.end() && !std::isfinite(loss->second)) {
      bar.finish();
      auto latest = store_.latest();
      throw std::runtime_error("training stopped at step " + std::to_string(step_) + ": loss is " + std::to_string(loss->second) +
                               (latest ? "; the last good checkpoint is " + latest->string() : ""));
    }
    update_ema();
    ++step_;
    for (const auto& [k, v] : m) window[k] += v;
    ++window_n;
    bar.update(step_, loss != m.end() ? fmt::format("loss {:.4f}", loss->second) : "");

    if (step_ % opt_.log_every == 0 || step_ == opt_.steps) {
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_window).count();
      Scalars out;
      for (const auto& [k, v] : window) out["train/" + k] = v / static_cast<double>(window_n);
      out["train/lr"] = optims.empty() ? 0.0 : optims.begin()->second->lr();
      out["train/steps_per_sec"] = dt > 0 ? static_cast<double>(window_n) / dt : 0.0;
      log.scalars(step_, out);
      window.clear();
      window_n = 0;
      t_window = std::chrono::steady_clock::now();
    }
    bool eval_now = step_ == opt_.steps || (opt_.eval_every > 0 && step_ % opt_.eval_every == 0);
    if (eval_now) do_eval(step_);
    bool ckpt_now = step_ == opt_.steps || (opt_.ckpt_every > 0 && step_ % opt_.ckpt_every == 0);
    if (ckpt_now) save_checkpoint(step_, outcome.final_metrics);
    if (eval_now || ckpt_now) log.flush();
  }
  bar.finish();
  if (outcome.final_metrics.empty()) outcome.final_metrics = do_eval(step_);  // resumed at the very end
  log.flush();
  outcome.step = step_;
  return outcome;
}

}  // namespace ef
