// Hollowed Net's memory claim (hollowed-net brief §2.4, §5.4): training memory down to inference
// memory. Every stage runs in a fresh process of its own (this program re-executing itself) and
// reports its peak resident memory, the kernel's VmHWM of the new process image (/proc/self/status;
// not wait4's ru_maxrss, which keeps the parent's resident size from before exec), side by side:
//   baseline        the process with LibTorch loaded and nothing built (subtracted from the others)
//   inference       one no-grad forward of the full UNet (what sampling holds, per pass)
//   full_ft         full fine-tuning: forward, backward and an AdamW step over every weight
//   lora_ft         LoRA on the full UNet's attention projections, the UNet frozen
//   hollow_pre      the pre-compute: the full UNet run to the boundary without gradients
//   hollow_ft@m     LoRA on the hollowed UNet (mid + m innermost units per side), fed with a
//                   boundary of the cache's shapes: what the fine-tuning stage holds
// Beside each: the analytic weights + optimizer term of the brief's accounting (float32: weights
// 4 B, trainable ones 4 + 4 (grad) + 8 (Adam moments) B), the cache per training row, and ms per step.
// Weights are random: memory does not depend on their values.
//
// Default network: SD-proportioned (block_out_channels 64,128,256,256; cross-attention on the first
// three levels; 2 resnets per level; 8 heads; a 77 x 256 text context) at a 32 x 32 latent, batch 1
// (on-device personalization), LoRA rank 4 on attn1/attn2 to_q, to_k, to_v, to_out.0.
//
//   build/bench/bench_hollow_memory [--channels 64,128,256,256] [--cross 1,1,1,0] [--size 32]
//                                   [--batch 1] [--rank 4] [--units 0,2,4,6] [--threads 2] [--steps 2]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "core/config.h"
#include "lora/hollow.h"
#include "lora/inject.h"
#include "models/diffusion/unet.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Setup {
  std::vector<int64_t> channels{64, 128, 256, 256};
  std::vector<int64_t> cross{1, 1, 1, 0};
  int64_t size = 32, batch = 1, rank = 4, threads = 2, steps = 2, context = 77, context_dim = 256;

  ef::UNetOptions unet() const {
    ef::UNetOptions o;
    o.block_out_channels = channels;
    o.cross_attention.assign(cross.begin(), cross.end());
    o.layers_per_block = 2;
    o.cross_attention_dim = context_dim;
    o.attention_heads = 8;
    o.norm_num_groups = 32;
    return o;
  }
  torch::Tensor x() const { return torch::randn({batch, 4, size, size}); }
  torch::Tensor t() const { return torch::randint(0, 1000, {batch}, torch::kLong); }
  torch::Tensor c() const { return torch::randn({batch, context, context_dim}); }
};

ef::Config lora_config(int64_t rank) {
  return ef::Config::from_json({{"kind", "lora"}, {"rank", rank}}, "bench_hollow_memory");
}
const std::vector<std::string> kTargets = {"*.attn1.to_q", "*.attn1.to_k", "*.attn1.to_v", "*.attn1.to_out.0",
                                           "*.attn2.to_q", "*.attn2.to_k", "*.attn2.to_v", "*.attn2.to_out.0"};

int64_t count(const std::vector<torch::Tensor>& ps) {
  int64_t n = 0;
  for (const auto& p : ps) n += p.numel();
  return n;
}

// Runs `step` s times and returns the mean ms of the steps after the first.
double run_steps(int64_t steps, const std::function<void()>& step) {
  step();
  const auto start = Clock::now();
  for (int64_t i = 1; i < steps; ++i) step();
  return steps > 1 ? std::chrono::duration<double, std::milli>(Clock::now() - start).count() / static_cast<double>(steps - 1) : 0.0;
}

// The peak resident set of this process image, MiB (VmHWM).
double peak_rss_mb() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  double kb = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %lf kB", &kb) == 1) break;
  std::fclose(f);
  return kb / 1024.0;
}

// One stage, in this (child) process; prints {"ms": ..., "peak_mb": ...} on stdout.
nlohmann::json run_stage(const Setup& s, const std::string& stage) {
  torch::manual_seed(0);
  nlohmann::json out;
  if (stage == "baseline") {
    out["ms"] = run_steps(s.steps, [] { (void)torch::ones({8}).sum(); });
    return out;
  }
  const ef::UNetOptions o = s.unet();
  const torch::Tensor x = s.x(), t = s.t(), c = s.c();
  if (stage == "hollow_ft" || stage.rfind("hollow_ft@", 0) == 0) {
    const int64_t m = std::stoll(stage.substr(stage.find('@') + 1));
    const ef::lora::HollowPlan plan(o, m);
    ef::lora::HollowedUNet hollow(plan);
    ef::lora::Adapters a = ef::lora::inject(*hollow, hollow->adaptable_layers(kTargets), lora_config(s.rank));
    hollow->eval();
    ef::lora::UNetBoundary b;  // one training step's rows of the cache
    for (const auto& [name, shape] : ef::lora::boundary_shapes(plan, s.batch, s.size, s.size)) {
      if (name == "h_in") b.h_in = torch::randn(shape);
      else b.skips[std::stoll(name.substr(5))] = torch::randn(shape);
    }
    torch::optim::AdamW opt(a->parameters(), torch::optim::AdamWOptions(1e-4));
    out["ms"] = run_steps(s.steps, [&] {
      opt.zero_grad();
      torch::mse_loss(hollow->forward(x, t, c, b), x).backward();
      opt.step();
    });
    return out;
  }
  ef::UNet2DCondition unet(o);
  if (stage == "inference" || stage == "hollow_pre") {
    unet->eval();
    torch::NoGradGuard no_grad;
    const ef::lora::HollowPlan plan(o, 0);
    out["ms"] = run_steps(s.steps, [&] {
      if (stage == "inference") (void)unet->forward(x, t, c);
      else (void)ef::lora::compute_boundary(*unet, plan, x, t, c);
    });
    return out;
  }
  std::vector<torch::Tensor> trained;
  ef::lora::Adapters a{nullptr};
  if (stage == "full_ft") {
    trained = unet->parameters();
  } else if (stage == "lora_ft") {
    a = ef::lora::inject(*unet, kTargets, lora_config(s.rank));
    unet->eval();
    trained = a->parameters();
  } else {
    throw std::invalid_argument("unknown stage " + stage);
  }
  torch::optim::AdamW opt(trained, torch::optim::AdamWOptions(1e-4));
  out["ms"] = run_steps(s.steps, [&] {
    opt.zero_grad();
    torch::mse_loss(unet->forward(x, t, c), x).backward();
    opt.step();
  });
  return out;
}

struct StageResult {
  double peak_mb = 0, ms = 0;
};

// Re-executes this program for one stage and returns the child's peak RSS and its timing.
StageResult spawn(const std::vector<std::string>& base_args, const std::string& stage) {
  int pipe_fd[2];
  if (::pipe(pipe_fd) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(pipe_fd[1], 1);
    ::close(pipe_fd[0]);
    std::vector<std::string> args = base_args;
    args.push_back("--stage");
    args.push_back(stage);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv("/proc/self/exe", argv.data());
    ::_exit(127);
  }
  ::close(pipe_fd[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipe_fd[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  ::close(pipe_fd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("stage " + stage + " failed: " + text);
  const nlohmann::json j = nlohmann::json::parse(text.substr(text.rfind('{')));
  StageResult r;
  r.peak_mb = j.at("peak_mb").get<double>();
  r.ms = j.at("ms").get<double>();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Hollowed Net: peak memory of each personalization stage, each in its own process"};
  Setup s;
  std::vector<int64_t> units{0, 2, 4, 6};
  std::string stage;
  app.add_option("--channels", s.channels, "block_out_channels")->delimiter(',');
  app.add_option("--cross", s.cross, "cross-attention per level (0/1)")->delimiter(',');
  app.add_option("--size", s.size, "latent height and width");
  app.add_option("--batch", s.batch);
  app.add_option("--rank", s.rank, "LoRA rank");
  app.add_option("--units", units, "hollow depths m to measure")->delimiter(',');
  app.add_option("--threads", s.threads);
  app.add_option("--steps", s.steps, "steps per stage (the first one allocates the optimizer state)");
  app.add_option("--stage", stage, "(internal) run one stage in this process");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(static_cast<int>(s.threads));

  if (!stage.empty()) {
    nlohmann::json out = run_stage(s, stage);
    out["peak_mb"] = peak_rss_mb();
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }

  std::vector<std::string> args = {argv[0]};
  auto list = [](const std::vector<int64_t>& v) {
    std::string out;
    for (int64_t x : v) out += (out.empty() ? "" : ",") + std::to_string(x);
    return out;
  };
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"--channels", list(s.channels)}, {"--cross", list(s.cross)}, {"--size", std::to_string(s.size)}, {"--batch", std::to_string(s.batch)},
           {"--rank", std::to_string(s.rank)}, {"--threads", std::to_string(s.threads)}, {"--steps", std::to_string(s.steps)}}) {
    args.push_back(k);
    args.push_back(v);
  }

  // the analytic terms, from parameter counts (built once here, before any stage)
  const ef::UNetOptions o = s.unet();
  double p_full = 0, p_lora_full = 0;
  {
    ef::UNet2DCondition unet(o);
    p_full = static_cast<double>(count(unet->parameters()));
    p_lora_full = static_cast<double>(count(ef::lora::inject(*unet, kTargets, lora_config(s.rank))->parameters()));
  }
  const double MB = 1024.0 * 1024.0;
  struct Row {
    std::string stage, note;
    double analytic_mb = 0, cache_mb = -1;
  };
  std::vector<Row> rows = {{"baseline", "LibTorch loaded, nothing built", 0},
                           {"inference", "full UNet, no grad", p_full * 4 / MB},
                           {"full_ft", "every weight trains (AdamW)", p_full * 16 / MB},
                           {"lora_ft", "LoRA r" + std::to_string(s.rank) + " on the full UNet", (p_full * 4 + p_lora_full * 16) / MB},
                           {"hollow_pre", "full UNet to the boundary, no grad", p_full * 4 / MB}};
  for (int64_t m : units) {
    const ef::lora::HollowPlan plan(o, m);
    ef::lora::HollowedUNet hollow(plan);
    double p_kept = static_cast<double>(count(hollow->parameters()));
    ef::lora::Adapters a = ef::lora::inject(*hollow, hollow->adaptable_layers(kTargets), lora_config(s.rank));
    const double p_lora = static_cast<double>(count(a->parameters()));
    double cache = 0;
    for (const auto& [name, shape] : ef::lora::boundary_shapes(plan, 1, s.size, s.size)) {
      double n = 1;
      for (int64_t d : shape) n *= static_cast<double>(d);
      cache += n * 4;
    }
    cache += 2.0 * 4 * static_cast<double>(s.size * s.size) * 4;  // x_t and the target
    char note[160];
    std::snprintf(note, sizeof note, "%.1f%% of units, %.1f%% of parameters left out", 100 * plan.unit_fraction(), 100 * plan.parameter_fraction());
    rows.push_back({"hollow_ft@" + std::to_string(m), note, (p_kept * 4 + p_lora * 16) / MB, cache / 1024.0});
  }

  std::printf("UNet: %.2f M parameters, channels %s, latent %lldx%lld, batch %lld, LoRA rank %lld (%.1f k on the full UNet), %lld threads\n",
              p_full / 1e6, list(s.channels).c_str(), static_cast<long long>(s.size), static_cast<long long>(s.size),
              static_cast<long long>(s.batch), static_cast<long long>(s.rank), p_lora_full / 1e3, static_cast<long long>(s.threads));
  std::map<std::string, StageResult> measured;
  for (const auto& r : rows) measured[r.stage] = spawn(args, r.stage);
  const double base = measured["baseline"].peak_mb, infer = measured["inference"].peak_mb - base;
  std::printf("\n| stage | what | peak RSS MiB | above baseline MiB | / inference | analytic weights+optimizer MiB | cache KiB per row | ms per step |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : rows) {
    const StageResult& m = measured[r.stage];
    const double above = m.peak_mb - base;
    std::printf("| %s | %s | %.1f | %.1f | %s | %.1f | %s | %.1f |\n", r.stage.c_str(), r.note.c_str(), m.peak_mb, above,
                r.stage == "baseline" ? "" : (std::to_string(above / infer).substr(0, 4)).c_str(), r.analytic_mb,
                r.cache_mb < 0 ? "" : std::to_string(r.cache_mb).substr(0, 6).c_str(), m.ms);
  }
  return 0;
}
