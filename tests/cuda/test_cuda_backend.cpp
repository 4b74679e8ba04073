// CUDA backend agreement: every attention kind gives the CPU result on the GPU, and a recipe trains
// on CUDA in fp32 and bf16 through the CLI. These cases check nothing without a GPU and say so.
#include <catch2/catch.hpp>

#include "core/metrics.h"
#include "models/attention/attention.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

namespace {
bool have_cuda() {
  if (torch::cuda::is_available()) return true;
  WARN("no CUDA device: CUDA agreement not checked here");
  return false;
}
}  // namespace

TEST_CASE("cuda: every attention kind matches its CPU result", "[cuda][attention]") {
  if (!have_cuda()) return;
  for (const auto& kind : ef::attention_kinds().names()) {
    INFO(kind);
    ef::AttentionShape shape{64, 4};
    shape.grid_h = 8;
    shape.grid_w = 8;
    shape.prefix = 1;
    torch::manual_seed(3);
    auto cpu = ef::make_attention(shape, ef::Config::from_json({{"kind", kind}}));
    auto gpu = ef::make_attention(shape, ef::Config::from_json({{"kind", kind}}));
    torch::NoGradGuard no_grad;
    auto src = cpu->named_parameters(), dst = gpu->named_parameters();
    for (const auto& p : src) dst[p.key()].copy_(p.value());
    gpu->to(torch::kCUDA);
    auto x = torch::randn({2, 65, 64});
    auto y_cpu = cpu->forward(x);
    auto y_gpu = gpu->forward(x.cuda()).cpu();
    CHECK(torch::allclose(y_cpu, y_gpu, 1e-3, 1e-4));
  }
}

TEST_CASE("cuda: classify trains on the GPU in fp32 and bf16 with falling loss", "[cuda][cli]") {
  if (!have_cuda()) return;
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  const fs::path configs = fs::path(ef::test::source_dir()) / "configs";
  ef::test::ScratchDir dir("cuda-cli");
  for (std::string precision : {"fp32", "bf16"}) {
    INFO(precision);
    const fs::path run = dir.path / precision;
    auto r = ef::test::run_command(cli + " train " + (configs / "quickstart.json").string() + " --set device=\"cuda\"" +
                                   " --set train.precision=\"" + precision + "\" --set train.steps=60 --set train.log_every=10" +
                                   " --set train.eval_every=0 --set train.ckpt_every=0 --set data.generate.n=1000" +
                                   " --set data.path=\"" + (dir.path / "shapes.h5").string() + "\" --run-dir " + run.string() +
                                   " --quiet");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    std::vector<double> losses;
    for (const auto& m : ef::read_metrics_jsonl(run / "metrics.jsonl"))
      if (m.count("train/loss")) losses.push_back(m.at("train/loss"));
    REQUIRE(losses.size() == 6);
    CHECK(losses[4] + losses[5] < losses[0] + losses[1]);
  }
}
