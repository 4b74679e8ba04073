// The classify recipe through the shared launcher (what `edgeforge train` runs): exact resume,
// NaN handling, interrupt handling.
#include <catch2/catch.hpp>

#include <fstream>

#include "core/atomic_file.h"
#include "core/metrics.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
// A tiny classify config: 16x16 images, a 1-block ViT; seconds on a CPU.
fs::path tiny_config(const fs::path& dir) {
  nlohmann::json c = {
      {"recipe", "classify"}, {"name", "tiny"}, {"seed", 7}, {"device", "cpu"},
      {"data", {{"path", (dir / "shapes.h5").string()}, {"generate", {{"n", 240}, {"size", 16}, {"seed", 1}}}, {"batch_size", 16}, {"workers", 2}}},
      {"model", {{"image_size", 16}, {"patch", 4}, {"dim", 16}, {"depth", 1}, {"heads", 2}, {"dropout", 0.1}}},
      {"optim", {{"lr", 3e-3}, {"schedule", {{"kind", "cosine"}, {"warmup", 2}}}}},
      {"train", {{"steps", 12}, {"log_every", 2}, {"eval_every", 4}, {"ckpt_every", 4}, {"keep_last", 5}, {"ema", 0.9}, {"tensorboard", false}}},
      {"eval", {{"batches", 1}, {"batch_size", 16}, {"samples", 4}}}};
  ef::write_file_atomically(dir / "tiny.json", c.dump(2));
  return dir / "tiny.json";
}

ef::TensorMap weights(const fs::path& run, int64_t step) {
  return ef::load_safetensors(run / "ckpt" / ("step_" + std::to_string(step)) / "model.safetensors");
}

void require_equal(const ef::TensorMap& a, const ef::TensorMap& b) {
  REQUIRE(a.size() == b.size());
  for (const auto& [k, v] : a) {
    INFO(k);
    CHECK(torch::equal(v, b.at(k)));
  }
}
}  // namespace

TEST_CASE("classify: a resumed run equals the uninterrupted run exactly (CPU)", "[classify][resume]") {
  ef::test::ScratchDir dir("resume");
  fs::path cfg = tiny_config(dir.path);
  ef::LaunchOptions full;
  full.quiet = true;
  full.run_dir = dir.path / "full";
  full.overrides = {"optim.schedule.kind=\"constant\""};
  auto r1 = ef::launch_training(cfg, full);
  REQUIRE(r1.outcome.step == 12);

  // the same run stopped after 8 steps, then continued with --resume (a constant schedule, so that
  // the shorter first leg trains with the same learning rates)
  ef::LaunchOptions part = full;
  part.run_dir = dir.path / "part";
  part.overrides = {"optim.schedule.kind=\"constant\"", "train.steps=8"};
  ef::launch_training(cfg, part);
  ef::LaunchOptions cont;
  cont.quiet = true;
  cont.run_dir = dir.path / "part";
  cont.resume = true;
  cont.overrides = {"train.steps=12"};
  REQUIRE_THROWS_WITH(ef::launch_training({}, cont), Contains("refusing to resume"));  // steps changed the config
  cont.allow_config_change = true;
  auto r2 = ef::launch_training({}, cont);
  REQUIRE(r2.outcome.step == 12);

  require_equal(weights(dir.path / "full", 12), weights(dir.path / "part", 12));
  require_equal(ef::load_safetensors(dir.path / "full/ckpt/step_12/model.ema.safetensors"),
                ef::load_safetensors(dir.path / "part/ckpt/step_12/model.ema.safetensors"));
  // the metrics of both runs agree step by step
  auto m1 = ef::read_metrics_jsonl(dir.path / "full/metrics.jsonl"), m2 = ef::read_metrics_jsonl(dir.path / "part/metrics.jsonl");
  REQUIRE(m1.size() == m2.size());
  for (size_t i = 0; i < m1.size(); ++i)
    if (m1[i].count("train/loss")) CHECK(m1[i].at("train/loss") == m2[i].at("train/loss"));
}

TEST_CASE("classify: same config and seed give the same result", "[classify][determinism]") {
  ef::test::ScratchDir dir("det");
  fs::path cfg = tiny_config(dir.path);
  ef::LaunchOptions o;
  o.quiet = true;
  o.overrides = {"train.steps=4"};
  o.run_dir = dir.path / "a";
  ef::launch_training(cfg, o);
  o.run_dir = dir.path / "b";
  ef::launch_training(cfg, o);
  require_equal(weights(dir.path / "a", 4), weights(dir.path / "b", 4));
}

TEST_CASE("classify: a stop signal writes a final checkpoint that resumes", "[classify][signal]") {
  ef::test::ScratchDir dir("sig");
  fs::path cfg = tiny_config(dir.path);
  ef::LaunchOptions o;
  o.quiet = true;
  o.run_dir = dir.path / "run";
  ef::StopSignalGuard::request();  // as if SIGTERM arrived before the first step
  auto r = ef::launch_training(cfg, o);
  ef::StopSignalGuard::clear();
  CHECK(r.outcome.status == ef::TrainStatus::Interrupted);
  CHECK(fs::exists(dir.path / "run/ckpt/step_0/model.safetensors"));
  CHECK_FALSE(fs::exists(dir.path / "run/final.json"));
  o.resume = true;
  auto r2 = ef::launch_training({}, o);
  CHECK(r2.outcome.status == ef::TrainStatus::Finished);
  CHECK(fs::exists(dir.path / "run/final.json"));
}

TEST_CASE("classify: unknown config keys and bad values are refused before training", "[classify][config]") {
  ef::test::ScratchDir dir("badcfg");
  fs::path cfg = tiny_config(dir.path);
  ef::LaunchOptions o;
  o.quiet = true;
  o.run_dir = dir.path / "run";
  o.overrides = {"optim.lrr=0.1"};
  REQUIRE_THROWS_WITH(ef::launch_training(cfg, o), Contains("unknown key 'optim.lrr' (did you mean 'optim.lr'?)"));
  o.overrides = {"model.patch=5"};
  REQUIRE_THROWS_WITH(ef::launch_training(cfg, o), Contains("model.patch"));
  o.overrides = {"data.generate=null", "data.path=\"" + (dir.path / "nope.h5").string() + "\""};
  REQUIRE_THROWS_WITH(ef::launch_training(cfg, o), Contains("dataset not found"));
}

// A recipe whose loss turns NaN at step 7: training must stop there, naming the step, with the
// step-4 checkpoint kept as the latest.
namespace {
class NanAtSeven : public ef::Recipe {
 public:
  NanAtSeven(const ef::Config&, const ef::RunContext& ctx) {
    opt_ = ef::make_optimizer(ef::Config::from_json({{"kind", "sgd"}, {"lr", 0.1}}), {{"all", {lin_->weight, lin_->bias}}}, ctx.total_steps);
  }
  std::map<std::string, torch::nn::Module*> modules() override { return {{"model", lin_.get()}}; }
  std::map<std::string, ef::ScheduledOptimizer*> optimizers() override { return {{"optim", opt_.get()}}; }
  ef::Scalars train_step(int64_t step) override {
    auto s = ef::optimize_step(*opt_, lin_->parameters(), 1, 0.0, [&](int64_t) {
      torch::Tensor y = lin_->forward(torch::ones({1, 2})).sum();
      return step == 7 ? y * std::nan("") : y.square();
    });
    return {{"loss", s.loss}};
  }
  ef::Scalars evaluate() override { return {{"loss", 0.0}}; }

 private:
  torch::nn::Linear lin_{2, 1};
  std::unique_ptr<ef::ScheduledOptimizer> opt_;
};
EF_REGISTER(ef::recipes(), "test_nan_at_7", [](const ef::Config& c, const ef::RunContext& x) { return std::make_unique<NanAtSeven>(c, x); });
}  // namespace

TEST_CASE("trainer: a NaN loss stops training with the last good checkpoint kept", "[trainer][nan]") {
  ef::test::ScratchDir dir("nan");
  ef::write_file_atomically(dir.path / "nan.json", R"({"recipe": "test_nan_at_7", "device": "cpu",
      "train": {"steps": 20, "ckpt_every": 4, "eval_every": 0, "log_every": 1, "tensorboard": false}})");
  ef::LaunchOptions o;
  o.quiet = true;
  o.run_dir = dir.path / "run";
  REQUIRE_THROWS_WITH(ef::launch_training(dir.path / "nan.json", o), Contains("training stopped at step 7: loss is nan") && Contains("step_4"));
  auto w = weights(dir.path / "run", 4);
  CHECK(torch::isfinite(w.at("weight")).all().item<bool>());
  CHECK_FALSE(fs::exists(dir.path / "run/ckpt/step_8"));
}
