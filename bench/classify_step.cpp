// The classify training step (ViT forward + backward + clipping + AdamW) in EdgeForge against the
// same model in Python PyTorch eager (bench/classify_step.py), interleaved round by round on the
// same machine and thread count, printing both and their ratio.
//
//   build/bench/bench_classify_step [--rounds 5] [--steps 20] [--threads 2] [--dim 64 --depth 4 ...]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "core/config.h"
#include "core/optim.h"
#include "models/vit.h"

namespace {
std::string run_python(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run: " + cmd);
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out = buf;  // last line
  if (::pclose(p) != 0) throw std::runtime_error("python benchmark failed: " + cmd);
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"classify training step: EdgeForge (C++) vs Python PyTorch eager"};
  int rounds = 5, steps = 20, warmup = 3, threads = 2;
  int64_t image_size = 32, patch = 4, dim = 64, depth = 4, heads = 2, batch = 64;
  double mlp_ratio = 2.0;
  std::string pool = "mean";
  std::string python = std::getenv("EDGEFORGE_PYTHON") ? std::getenv("EDGEFORGE_PYTHON") : std::string(EDGEFORGE_DEFAULT_PYTHON);
  std::string script = std::string(EDGEFORGE_SOURCE_DIR) + "/bench/classify_step.py";
  app.add_option("--rounds", rounds)->capture_default_str();
  app.add_option("--steps", steps)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--image-size", image_size)->capture_default_str();
  app.add_option("--patch", patch)->capture_default_str();
  app.add_option("--dim", dim)->capture_default_str();
  app.add_option("--depth", depth)->capture_default_str();
  app.add_option("--heads", heads)->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--python", python, "Python with torch")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  at::set_num_threads(threads);
  torch::manual_seed(0);
  ef::Config model_cfg = ef::Config::from_json({{"image_size", image_size}, {"patch", patch}, {"dim", dim}, {"depth", depth},
                                                {"heads", heads}, {"mlp_ratio", mlp_ratio}, {"pool", pool}});
  ef::ViT model(ef::ViTOptions::from(model_cfg), ef::Config::from_json({{"kind", "softmax"}}));
  auto opt = ef::make_optimizer(ef::Config::from_json({{"kind", "adamw"}, {"lr", 1e-3}, {"weight_decay", 0.05}}),
                                {{"all", model->parameters()}}, 1000);
  std::vector<torch::Tensor> params = model->parameters();
  torch::Tensor images = torch::rand({batch, 3, image_size, image_size});
  torch::Tensor labels = torch::randint(0, 10, {batch});
  auto step = [&] {
    opt->get().zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(images), labels);
    loss.backward();
    ef::clip_grad_norm(params, 1.0);
    opt->get().step();
  };
  for (int i = 0; i < warmup; ++i) step();

  char py_args[512];
  std::snprintf(py_args, sizeof py_args,
                " --image_size %lld --patch %lld --dim %lld --depth %lld --heads %lld --batch %lld --steps %d --warmup %d --threads %d --mlp_ratio %g --pool %s",
                (long long)image_size, (long long)patch, (long long)dim, (long long)depth, (long long)heads, (long long)batch, steps, warmup,
                threads, mlp_ratio, pool.c_str());
  std::printf("ViT dim=%lld depth=%lld heads=%lld patch=%lld image=%lld batch=%lld, %d threads, %d steps per round\n",
              (long long)dim, (long long)depth, (long long)heads, (long long)patch, (long long)image_size, (long long)batch, threads, steps);
  std::printf("%-6s %14s %14s %10s\n", "round", "edgeforge ms", "python ms", "py/ef");
  std::vector<double> ratios;
  double sum_ef = 0, sum_py = 0;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) step();
    double ef_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / steps;
    double py_ms = nlohmann::json::parse(run_python(python + " " + script + py_args)).at("ms_per_step").get<double>();
    ratios.push_back(py_ms / ef_ms);
    sum_ef += ef_ms, sum_py += py_ms;
    std::printf("%-6d %14.2f %14.2f %10.3f\n", r, ef_ms, py_ms, py_ms / ef_ms);
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf("mean: edgeforge %.2f ms/step, python %.2f ms/step; median ratio python/edgeforge = %.3f (>1: EdgeForge faster)\n",
              sum_ef / rounds, sum_py / rounds, ratios[ratios.size() / 2]);
  return 0;
}
