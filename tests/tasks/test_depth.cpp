// The depth task: generated scenes, NYU metrics, the colour map, and the CLI training runs of the
// depth and classify recipes for every attention kind (few steps, falling loss).
#include <catch2/catch.hpp>

#include <fstream>

#include "core/atomic_file.h"
#include "core/metrics.h"
#include "tasks/depth.h"
#include "tasks/depth_scenes.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using ef::test::quote;
using ef::test::run_command;

TEST_CASE("depth-scenes: deterministic scenes with metric depth / cached as HDF5", "[depth][data]") {
  ef::DepthScenesParams p;
  p.size = 24;
  p.seed = 3;
  auto [img_a, depth_a] = ef::render_depth_scene(p, 5);
  auto [img_b, depth_b] = ef::render_depth_scene(p, 5);
  CHECK(torch::equal(img_a, img_b));
  CHECK(torch::equal(depth_a, depth_b));
  CHECK(img_a.sizes() == std::vector<int64_t>{24, 24, 3});
  CHECK(depth_a.sizes() == std::vector<int64_t>{24, 24});
  CHECK(torch::isfinite(depth_a).all().item<bool>());
  CHECK(depth_a.min().item<double>() > 0.3);
  CHECK(depth_a.max().item<double>() <= p.max_depth);
  // perspective: the ground near the bottom row is closer than the top of the image
  CHECK(depth_a.slice(0, 20).mean().item<double>() < depth_a.slice(0, 0, 4).mean().item<double>());
  auto [img_c, depth_c] = ef::render_depth_scene(p, 6);
  CHECK_FALSE(torch::equal(depth_a, depth_c));

  ef::test::ScratchDir dir("depthgen");
  p.n = 30;
  ef::generate_depth_scenes(p, dir.path / "d.h5");
  ef::DepthScenesDataset train(dir.path / "d.h5", "train"), val(dir.path / "d.h5", "val");
  CHECK(train.size() + val.size() == 30);
  auto s = val.get(0);
  CHECK(s.at("image").sizes() == std::vector<int64_t>{3, 24, 24});
  CHECK(s.at("depth").sizes() == std::vector<int64_t>{1, 24, 24});
  CHECK(torch::equal(s.at("depth")[0], ef::render_depth_scene(p, train.size()).second));
}

TEST_CASE("depth: metrics follow the NYU Depth V2 definitions", "[depth][metrics]") {
  torch::Tensor gt = torch::rand({2, 1, 8, 8}) * 8 + 1;
  gt[0][0][0][0] = 0.0;  // invalid pixels are ignored
  gt[1][0][0][0] = 50.0;
  auto mean = [](const ef::Scalars& s, const char* k) { return s.at(k) / 2.0; };
  ef::Scalars same = ef::depth_metric_sums(gt.clamp(1e-3, 10), gt, 1e-3, 10);
  CHECK(mean(same, "abs_rel") == Approx(0).margin(1e-12));
  CHECK(mean(same, "rmse") == Approx(0).margin(1e-12));
  CHECK(mean(same, "delta1") == Approx(1));

  ef::Scalars off = ef::depth_metric_sums(gt * 1.1, gt, 1e-3, 20);  // 1.1 * 9 < 10 stays unclamped... mostly
  ef::Scalars wide = ef::depth_metric_sums(gt * 1.1, gt, 1e-3, 100);
  CHECK(mean(wide, "abs_rel") == Approx(0.1).epsilon(1e-6));
  CHECK(mean(wide, "delta1") == Approx(1));
  CHECK(mean(wide, "log10") == Approx(std::log10(1.1)).epsilon(1e-6));
  // rmse: per image, then averaged over images
  torch::Tensor valid = (gt > 1e-3) & (gt <= 100);
  double rmse = 0;
  for (int i = 0; i < 2; ++i) rmse += std::sqrt((gt[i] * 0.1).square().masked_select(valid[i]).mean().item<double>()) / 2;
  CHECK(mean(wide, "rmse") == Approx(rmse).epsilon(1e-6));
  CHECK(off.at("abs_rel") > 0);

  ef::Scalars ratio = ef::depth_metric_sums(gt * 1.5, gt, 1e-3, 100);
  CHECK(mean(ratio, "delta1") == Approx(0));
  CHECK(mean(ratio, "delta2") == Approx(1));  // 1.5 < 1.25^2
  CHECK(mean(ratio, "delta3") == Approx(1));
  // SILog of a global scale error c: 10 * sqrt(1 - lambda) * |log c|
  torch::Tensor loss = ef::silog_loss(gt * 2, gt, 0.85, 1e-3, 100);
  CHECK(loss.item<double>() == Approx(10 * std::sqrt(0.15) * std::log(2.0)).epsilon(1e-4));
}

TEST_CASE("depth: colour map is near = red and far = blue within the unit range", "[depth]") {
  torch::Tensor d = torch::linspace(1, 9, 16).view({4, 4});
  torch::Tensor c = ef::colorize_depth(d, 1, 9);
  CHECK(c.sizes() == std::vector<int64_t>{3, 4, 4});
  CHECK(c.min().item<double>() >= 0);
  CHECK(c.max().item<double>() <= 1);
  CHECK(c[0][0][0].item<double>() > c[2][0][0].item<double>());  // nearest: red
  CHECK(c[2][3][1].item<double>() > c[0][3][1].item<double>());  // far: blue
}

// Each recipe x attention kind trains a few steps through the CLI (tiny model, tiny data) and the
// training loss falls.
TEST_CASE("depth and classify: every attention kind trains through the CLI with falling loss", "[depth][classify][cli][attention]") {
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  const fs::path configs = fs::path(ef::test::source_dir()) / "configs";
  ef::test::ScratchDir dir("attn-cli");
  for (std::string recipe : {"depth", "classify"}) {
    for (std::string kind : {"softmax", "padre", "tosa"}) {
      INFO(recipe << " with " << kind);
      const fs::path run = dir.path / (recipe + "-" + kind);
      std::vector<std::string> sets = {"train.steps=40", "train.log_every=5", "train.eval_every=0", "train.ckpt_every=0",
                                       "train.tensorboard=false", "data.batch_size=16", "data.workers=1", "eval.batches=1",
                                       "eval.batch_size=32", "eval.samples=4", "model.image_size=16", "model.dim=32", "model.depth=2",
                                       "model.heads=2", "optim.lr=0.003", "optim.schedule.warmup=5"};
      if (recipe == "depth") {
        sets.push_back("data.path=\"" + (dir.path / "depth.h5").string() + "\"");
        sets.insert(sets.end(), {"data.generate.n=200", "data.generate.size=16"});
      } else {
        sets.push_back("data.path=\"" + (dir.path / "shapes.h5").string() + "\"");
        sets.insert(sets.end(), {"data.generate.n=400", "data.generate.size=16"});
      }
      if (kind == "tosa")
        sets.insert(sets.end(), {"model.attention.start_layer=1", "model.attention.schedule.dense_steps=10",
                                 "model.attention.schedule.selector_steps=5"});
      if (kind == "padre") sets.push_back("model.attention.kernel=3");
      std::string args;
      for (const auto& s : sets) args += " --set " + quote(s);
      auto r = run_command(cli + " train " + quote((configs / (recipe + "-" + kind + ".json")).string()) + args + " --run-dir " +
                           quote(run.string()) + " --quiet");
      INFO(r.output);
      REQUIRE(r.exit_code == 0);
      std::vector<double> losses;
      for (const auto& m : ef::read_metrics_jsonl(run / "metrics.jsonl"))
        if (m.count("train/loss")) losses.push_back(m.at("train/loss"));
      REQUIRE(losses.size() == 8);
      INFO("first " << losses[0] << " " << losses[1] << ", last " << losses[6] << " " << losses[7]);
      CHECK(losses[6] + losses[7] < losses[0] + losses[1]);
      CHECK(fs::exists(run / "final.json"));
      if (recipe == "depth") {
        auto final = nlohmann::json::parse(std::ifstream(run / "final.json"));
        for (const char* k : {"eval/abs_rel", "eval/rmse", "eval/delta1", "eval/params", "eval/mflops"}) CHECK(final["metrics"].contains(k));
        CHECK(fs::exists(run / "samples/depth_step_40.png"));
      }
      if (kind == "tosa") {
        bool saw_aux = false;
        for (const auto& m : ef::read_metrics_jsonl(run / "metrics.jsonl")) saw_aux |= m.count("train/aux_tosa_sel") > 0;
        CHECK(saw_aux);
      }
    }
  }
}
