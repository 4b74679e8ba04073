// One transformer block (pre-norm token mixer + MLP) with softmax, PADRe and ToSA attention:
// forward and forward+backward time, and the mixer's analytic FLOPs, at several token counts,
// side by side with the ratio to softmax. Softmax runs through LibTorch's fused
// scaled_dot_product_attention. The ToSA block is a selective layer: its selector reads the logits
// the layer before it handed on (computed once, outside the timing, as the feeding standard layer
// produces them anyway), keeps ceil(rho * N) tokens, and the rest bypass the block.
//
//   build/bench/bench_attention [--tokens 256,1024,4096,16384] [--dim 256] [--heads 4] [--threads 2]
//                               [--device cpu|cuda] [--keep 0.5] [--tosa-queries 256] [--csv out.csv]
#include <CLI/CLI.hpp>

#include "bench/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/config.h"
#include "models/attention/padre.h"
#include "models/attention/tosa.h"
#include "models/vit.h"

namespace {


struct Timing {
  double fwd_ms = 0, fwdbwd_ms = 0;
};

using ef::bench::sync;
using ef::bench::time_ms;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"one transformer block: softmax vs PADRe vs ToSA (forward, forward+backward, FLOPs)"};
  std::vector<int64_t> tokens = {256, 1024, 4096, 16384};
  int64_t dim = 256, heads = 4, batch = 1, queries = 256, degree = 3, kernel = 11;
  int threads = 2, min_reps = 3;
  double keep = 0.5, budget = 1.0;
  std::string device = "cpu", csv;
  std::vector<std::string> kinds = {"softmax", "padre", "tosa"};
  app.add_option("--tokens", tokens, "token counts (square grids)")->delimiter(',')->capture_default_str();
  app.add_option("--dim", dim)->capture_default_str();
  app.add_option("--heads", heads)->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--device", device)->capture_default_str();
  app.add_option("--keep", keep, "ToSA keep ratio")->capture_default_str();
  app.add_option("--tosa-queries", queries, "query rows the ToSA selector reads (0: all)")->capture_default_str();
  app.add_option("--degree", degree, "PADRe degree")->capture_default_str();
  app.add_option("--kernel", kernel, "PADRe kernel")->capture_default_str();
  app.add_option("--kinds", kinds)->delimiter(',')->capture_default_str();
  app.add_option("--min-reps", min_reps)->capture_default_str();
  app.add_option("--budget", budget, "seconds per measurement (at least min-reps runs)")->capture_default_str();
  app.add_option("--csv", csv, "also write the table as CSV");
  CLI11_PARSE(app, argc, argv);

  at::set_num_threads(threads);
  torch::Device dev(device);
  std::printf("block = pre-norm mixer + MLP(4x), C=%lld, heads=%lld, batch=%lld, device %s, %d threads; "
              "PADRe d=%lld k=%lld; ToSA rho=%.2f, selector queries %lld\n",
              (long long)dim, (long long)heads, (long long)batch, device.c_str(), threads, (long long)degree, (long long)kernel, keep,
              (long long)queries);
  std::printf("%7s %-8s %12s %10s %12s %14s %9s %9s\n", "N", "kind", "mixer GFLOP", "vs soft", "fwd ms", "fwd+bwd ms", "fwd x", "f+b x");
  std::ofstream out;
  if (!csv.empty()) {
    out.open(csv);
    out << "tokens,kind,mixer_gflops,fwd_ms,fwdbwd_ms\n";
  }

  for (int64_t n : tokens) {
    const int64_t g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
    if (g * g != n) {
      std::fprintf(stderr, "skipping N=%lld: not a square grid\n", (long long)n);
      continue;
    }
    ef::ViTOptions vo;
    vo.image_size = g, vo.patch = 1, vo.dim = dim, vo.heads = heads, vo.depth = 2, vo.pool = "mean", vo.mlp_ratio = 4.0;
    double soft_fwd = 0, soft_fb = 0, soft_flops = 0;
    for (const auto& kind : kinds) {
      torch::manual_seed(0);
      nlohmann::json opt = {{"kind", kind}};
      if (kind == "padre") opt["degree"] = degree, opt["kernel"] = kernel;
      if (kind == "tosa") opt["keep_ratio"] = keep, opt["start_layer"] = 1, opt["queries"] = queries, opt["sel_weight"] = 0.0;
      // layer 1 of a 2-block network: a ToSA selective layer; softmax/PADRe don't care
      ef::Block block(vo, ef::Config::from_json(opt), 1);
      block->to(dev);
      torch::Tensor x = torch::randn({batch, n, dim}, torch::TensorOptions().device(dev)).requires_grad_(true);
      torch::Tensor logits;
      if (kind == "tosa") {  // what the feeding standard layer hands on
        torch::NoGradGuard no_grad;
        ef::ToSAAttentionImpl feeder([&] { ef::AttentionShape s{dim, heads}; s.layer = 0; s.depth = 2; s.grid_h = s.grid_w = g; return s; }(),
                                     ef::Config::from_json(opt));
        feeder.to(dev);
        ef::AttentionContext ctx;
        feeder.forward_ctx(x.detach(), ctx);
        logits = ctx.tensors.at("tosa/logits");
      }
      auto run = [&](bool backward) {
        ef::AttentionContext ctx;
        if (logits.defined()) {
          ctx.tensors["tosa/logits"] = logits;
          if (queries > 0 && queries < n)
            ctx.tensors["tosa/rows"] = (torch::arange(queries, torch::TensorOptions().dtype(torch::kInt64).device(dev)) * n).div(queries, "floor");
        }
        if (backward) {
          block->zero_grad();
          block->forward(x, ctx).square().mean().backward();
        } else {
          torch::NoGradGuard no_grad;
          block->forward(x, ctx);
        }
      };
      block->eval();  // routing on, no training-only selector supervision
      double fwd = time_ms([&] { run(false); }, dev, min_reps, budget);
      double fb = time_ms([&] { run(true); }, dev, min_reps, budget);
      double flops = block->attn->flops(n) * batch;
      if (kind == "softmax") soft_fwd = fwd, soft_fb = fb, soft_flops = flops;
      std::printf("%7lld %-8s %12.3f %10.3f %12.2f %14.2f %9.2f %9.2f\n", (long long)n, kind.c_str(), flops / 1e9,
                  soft_flops > 0 ? flops / soft_flops : 0.0, fwd, fb, soft_fwd > 0 ? soft_fwd / fwd : 0.0, soft_fb > 0 ? soft_fb / fb : 0.0);
      std::fflush(stdout);
      if (out) out << n << "," << kind << "," << flops / 1e9 << "," << fwd << "," << fb << "\n";
    }
  }
  std::printf("fwd x / f+b x: softmax time divided by this kind's time (>1: faster than softmax)\n");
  return 0;
}
