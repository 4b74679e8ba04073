// SciFlow's cost claim, measured: both flow networks (RAFT-S, MobileFlow stand-in) with and without
// the Self-Cleaning Iteration, side by side: parameters, inference latency for one image pair
// (default 384x512, each model's own iteration count) and training iterations per second
// (forward + sequence loss + backward + AdamW step). RFL changes only the loss, so it has no
// inference cost; its training cost is in the "rfl" column.
//
//   build/bench/bench_flow [--size 384,512] [--train-size 384,512] [--batch 1] [--threads 2]
//                          [--device cpu|cuda] [--iters 0] [--budget 2] [--min-reps 2]
#include <CLI/CLI.hpp>

#include "bench/timing.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "flow/losses.h"
#include "flow/models.h"

namespace {

using namespace ef::flow;

using ef::bench::sync;
using ef::bench::time_ms;

struct Row {
  std::string model;
  bool sci = false;
  int64_t params = 0, iters = 0;
  double infer_ms = 0, train_ips = 0, train_rfl_ips = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flow networks with and without SCI: parameters, inference latency, training speed"};
  std::vector<int64_t> size = {384, 512}, train_size = {384, 512};
  int64_t batch = 1, iters = 0;
  int threads = 2, min_reps = 2;
  double budget = 2.0;
  std::string device = "cpu";
  std::vector<std::string> models = {"raft-small", "mobileflow"};
  app.add_option("--size", size, "inference H,W (multiples of 8)")->delimiter(',')->capture_default_str();
  app.add_option("--train-size", train_size, "training crop H,W")->delimiter(',')->capture_default_str();
  app.add_option("--batch", batch, "training batch")->capture_default_str();
  app.add_option("--iters", iters, "refinement iterations (0: each model's default: RAFT-S 12, MobileFlow 6)")->capture_default_str();
  app.add_option("--models", models)->delimiter(',')->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--device", device)->capture_default_str();
  app.add_option("--min-reps", min_reps)->capture_default_str();
  app.add_option("--budget", budget, "seconds per measurement (at least min-reps runs)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (size.size() != 2 || train_size.size() != 2) {
    std::fprintf(stderr, "--size and --train-size take H,W\n");
    return 2;
  }

  at::set_num_threads(threads);
  torch::Device dev(device);
  std::printf("device %s, %d threads; inference 1 pair %lldx%lld; training batch %lld at %lldx%lld\n", device.c_str(), threads,
              static_cast<long long>(size[0]), static_cast<long long>(size[1]), static_cast<long long>(batch),
              static_cast<long long>(train_size[0]), static_cast<long long>(train_size[1]));
  std::vector<Row> rows;
  for (const auto& kind : models) {
    for (bool sci_on : {false, true}) {
      FlowModelOptions o = FlowModelOptions::from(ef::Config::from_json({{"kind", kind}}));
      if (kind == "raft-small") o.iters = 12;  // RAFT-S's training / Sintel-style count
      if (iters > 0) o.iters = iters;
      SciOptions sci;
      sci.enabled = sci_on;
      torch::manual_seed(0);
      FlowNet net(o, sci);
      net->to(dev);
      Row r{kind, sci_on, count_parameters(*net), o.iters};
      {
        torch::NoGradGuard no_grad;
        net->eval();
        torch::Tensor a = torch::rand({1, 3, size[0], size[1]}, dev), b = torch::rand({1, 3, size[0], size[1]}, dev);
        r.infer_ms = time_ms([&] { net->forward(a, b, o.iters); }, dev, min_reps, budget, 30);
      }
      net->train();
      torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(4e-4).weight_decay(1e-4).eps(1e-8));
      torch::Tensor a = torch::rand({batch, 3, train_size[0], train_size[1]}, dev), b = torch::rand({batch, 3, train_size[0], train_size[1]}, dev);
      torch::Tensor gt = torch::randn({batch, 2, train_size[0], train_size[1]}, dev) * 4, valid = torch::ones({batch, train_size[0], train_size[1]}, dev);
      for (std::string loss_kind : {"sequence_l1", "rfl"}) {
        LossOptions lo;
        lo.kind = loss_kind;
        const double ms = time_ms(
            [&] {
              opt.zero_grad();
              flow_sequence_loss(net->forward(a, b, o.iters).flows, gt, valid, lo).backward();
              torch::nn::utils::clip_grad_norm_(net->parameters(), 1.0);
              opt.step();
            },
            dev, min_reps, budget, 30);
        (loss_kind == "rfl" ? r.train_rfl_ips : r.train_ips) = 1000.0 / ms;
      }
      rows.push_back(r);
      std::fflush(stdout);
    }
  }
  std::printf("\n%-11s %-4s %6s %10s %8s %11s %8s %11s %8s %12s\n", "model", "SCI", "iters", "params", "+params", "infer ms", "ratio",
              "train it/s", "ratio", "+RFL it/s");
  for (const auto& r : rows) {
    const Row* base = nullptr;
    for (const auto& q : rows)
      if (q.model == r.model && !q.sci) base = &q;
    std::printf("%-11s %-4s %6lld %10lld %8lld %11.1f %8.3f %11.3f %8.3f %12.3f\n", r.model.c_str(), r.sci ? "yes" : "no",
                static_cast<long long>(r.iters), static_cast<long long>(r.params), static_cast<long long>(r.params - base->params),
                r.infer_ms, r.infer_ms / base->infer_ms, r.train_ips, r.train_ips / base->train_ips, r.train_rfl_ips);
  }
  return 0;
}
