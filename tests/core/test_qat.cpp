// Quantization-aware training of weights (core/qat.h): the fake-quantized weights lie on the
// export's per-channel grid, a training step takes its gradient at them and lands on the float
// masters (straight-through), and `quant.qat` trains through the CLI.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/metrics.h"
#include "core/qat.h"
#include "core/run.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

TEST_CASE("qat: fake-quantized weights lie on the symmetric per-channel grid", "[qat]") {
  torch::manual_seed(0);
  for (int bits : {8, 4}) {
    torch::Tensor w = torch::randn({6, 3, 3, 3});
    torch::Tensor q = ef::fake_quantize_weight(w, bits);
    const double Q = std::pow(2.0, bits - 1) - 1;
    torch::Tensor scale = w.abs().reshape({6, -1}).amax(1) / Q;
    torch::Tensor codes = q.reshape({6, -1}) / scale.unsqueeze(1);
    CHECK((codes - codes.round()).abs().max().item<double>() < 1e-4);  // integer codes
    CHECK(codes.abs().max().item<double>() <= Q + 1e-4);
    // each channel's largest magnitude is kept, every value moves by at most half a step
    CHECK(torch::allclose(q.abs().reshape({6, -1}).amax(1), w.abs().reshape({6, -1}).amax(1), 1e-6, 1e-6));
    CHECK(((q - w).abs().reshape({6, -1}) <= scale.unsqueeze(1) * 0.5 + 1e-6).all().item<bool>());
  }
}

TEST_CASE("qat: a step takes its gradient at the quantized weights and updates the float masters", "[qat]") {
  torch::manual_seed(1);
  torch::nn::Linear fc(torch::nn::LinearOptions(5, 3));
  torch::Tensor x = torch::randn({8, 5}), y = torch::randn({8, 3});
  const torch::Tensor master = fc->weight.detach().clone(), bias = fc->bias.detach().clone();
  const double lr = 0.1;
  // the expected step: the gradient of the loss at W_q = q(master), applied to master
  torch::Tensor wq = ef::fake_quantize_weight(master, 4).requires_grad_(true);
  torch::mse_loss(torch::nn::functional::linear(x, wq, bias), y).backward();
  const torch::Tensor expected = master - lr * wq.grad();

  ef::WeightFakeQuant qat([&] { return std::vector<torch::nn::Module*>{fc.get()}; }, 4);
  torch::optim::SGD sgd(fc->parameters(), lr);
  qat.enter();
  CHECK(torch::equal(fc->weight.detach(), ef::fake_quantize_weight(master, 4)));
  CHECK(torch::equal(fc->bias.detach(), bias));  // rank 1: stays float
  sgd.zero_grad();
  torch::mse_loss(fc->forward(x), y).backward();
  sgd.step();
  qat.leave();
  CHECK(torch::allclose(fc->weight.detach(), expected, 1e-6, 1e-6));
  // a step that changes nothing gives the masters back exactly
  const torch::Tensor now = fc->weight.detach().clone();
  qat.enter();
  qat.leave();
  CHECK(torch::equal(fc->weight.detach(), now));
}

TEST_CASE("qat: quant.qat trains a classify run through the CLI and bad bits are refused", "[qat][cli]") {
  ef::test::ScratchDir dir("qat-cli");
  nlohmann::json c = {
      {"recipe", "classify"}, {"name", "qat"}, {"seed", 3}, {"device", "cpu"}, {"threads", 1},
      {"data", {{"path", (dir.path / "shapes.h5").string()}, {"generate", {{"n", 320}, {"size", 16}, {"seed", 1}}}, {"batch_size", 32}, {"workers", 1}}},
      {"model", {{"image_size", 16}, {"patch", 4}, {"dim", 32}, {"depth", 2}, {"heads", 2}}},
      {"optim", {{"lr", 3e-3}}},
      {"quant", {{"qat", true}, {"bits", 4}}},
      {"train", {{"steps", 40}, {"log_every", 10}, {"eval_every", 0}, {"ckpt_every", 0}, {"tensorboard", false}}},
      {"eval", {{"batches", 1}, {"batch_size", 32}, {"samples", 0}}}};
  ef::write_file_atomically(dir.path / "qat.json", c.dump(2));
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  auto r = ef::test::run_command(ef::test::quote(cli) + " train " + ef::test::quote((dir.path / "qat.json").string()) + " --run-dir " +
                                 ef::test::quote((dir.path / "run").string()) + " --quiet");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::vector<double> losses;
  for (const auto& m : ef::read_metrics_jsonl(dir.path / "run" / "metrics.jsonl"))
    if (m.count("train/loss")) losses.push_back(m.at("train/loss"));
  REQUIRE(losses.size() == 4);
  CHECK(losses.back() < losses.front());
  auto resolved = nlohmann::json::parse(ef::read_file(dir.path / "run" / "config.json"));
  CHECK(resolved["quant"]["bits"] == 4);

  c["quant"]["bits"] = 1;
  ef::write_file_atomically(dir.path / "bad.json", c.dump(2));
  auto bad = ef::test::run_command(ef::test::quote(cli) + " train " + ef::test::quote((dir.path / "bad.json").string()) + " --run-dir " +
                                   ef::test::quote((dir.path / "bad").string()) + " --quiet");
  CHECK(bad.exit_code != 0);
  CHECK(bad.output.find("quant.bits") != std::string::npos);
}
