// Adapter fine-tuning of other recipes through the `adapter` block (lora/finetune.h), on their tiny
// configs: a base run, then an adapter run from it. The checkpoints hold the adapters alone, the
// base's weight file is the one the run recorded and is unchanged, the adapters moved, a resume from
// midway ends bit for bit where the uninterrupted run did, eval runs, and export folds the adapters
// into the network. A base of another recipe, or of another architecture, is refused by name.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <set>

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/crc32c.h"
#include "core/frozen.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "export/export.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

using ef::test::InScratch;
using ef::test::weight_files;

std::string crc_hex(const fs::path& file) {
  const std::string bytes = ef::read_file(file);
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08x", ef::crc32c(bytes.data(), bytes.size()));
  return hex;
}

ef::LaunchResult train(const fs::path& config, const fs::path& run_dir, std::vector<std::string> overrides = {}) {
  ef::LaunchOptions o;
  o.run_dir = run_dir;
  o.quiet = true;
  o.overrides = std::move(overrides);
  ef::LaunchResult r = ef::launch_training(config, o);
  REQUIRE(r.outcome.status == ef::TrainStatus::Finished);
  return r;
}

// Trains the tiny base of `config` and an adapter run from it, and checks everything the header
// promises. `layer` is one path the default targets adapt.
void check_adapter_run(const std::string& config_rel, const std::string& base_name, const std::string& layer) {
  const fs::path config = fs::path(ef::test::source_dir()) / config_rel;
  const fs::path base = train(config, fs::path("runs") / base_name / "0-full").run_dir;
  const fs::path base_file = ef::network_file_of_run(base, "model", true);
  const std::string base_bytes = ef::read_file(base_file);

  const std::string block = "adapter={\"base\": \"runs/" + base_name + "\", \"kind\": \"lora\", \"rank\": 2}";
  const fs::path run = train(config, "runs/adapted/0-full", {block, "name=\"adapted\""}).run_dir;

  // the checkpoints hold the adapters alone, under their layer paths
  ef::CheckpointStore store(run / "ckpt", 0);
  const std::vector<int64_t> steps = store.steps();
  REQUIRE(steps.size() >= 2);
  const fs::path last = run / "ckpt" / ("step_" + std::to_string(steps.back()));
  for (const auto& f : weight_files(last)) CHECK((f == "adapter.safetensors" || f == "adapter.ema.safetensors"));
  const auto adapter = ef::load_safetensors(last / "adapter.safetensors");
  REQUIRE(adapter.count(layer + ".lora_B.weight"));
  for (const auto& [key, w] : adapter) CHECK(key.find(".lora_") != std::string::npos);
  // B starts at zero: training moved it
  CHECK(adapter.at(layer + ".lora_B.weight").abs().max().item<double>() > 0);

  // the base is a frozen network recorded by its checksum, and its weights did not change
  const nlohmann::json resolved = ef::Config::load(run / "config.json").root();
  REQUIRE(resolved["frozen"].contains("model"));
  CHECK(resolved["frozen"]["model"]["crc32c"].get<std::string>() == crc_hex(base_file));
  CHECK(ef::read_file(base_file) == base_bytes);

  // resumed from midway: the same adapters, bit for bit
  const int64_t mid = steps[steps.size() - 2];
  const fs::path resumed = run.parent_path() / "1-resumed";
  fs::copy(run, resumed, fs::copy_options::recursive);
  fs::remove_all(resumed / "ckpt" / last.filename());
  fs::remove(resumed / "final.json");
  ef::write_file_atomically(resumed / "ckpt" / "latest", "step_" + std::to_string(mid) + "\n");
  ef::LaunchOptions again;
  again.run_dir = resumed;
  again.resume = true;
  again.quiet = true;
  REQUIRE(ef::launch_training("", again).outcome.step == steps.back());
  for (const auto& f : weight_files(last)) {
    INFO(f);
    CHECK(ef::read_file(last / f) == ef::read_file(resumed / "ckpt" / last.filename() / f));
  }

  // eval, as `edgeforge eval` does it: finite, and not the base's own result
  ef::OpenedRun opened = ef::open_run(run, {});
  const ef::Scalars metrics = opened.recipe->evaluate();
  REQUIRE(metrics.count("loss"));
  for (const auto& [k, v] : metrics) {
    INFO("eval/" << k);
    CHECK(std::isfinite(v));
  }
  CHECK(metrics.at("loss") != ef::open_run(base, {}).recipe->evaluate().at("loss"));

  // export folds the adapters into the network
  ef::exporter::ExportOptions eo;
  eo.run_dir = run;
  eo.quant = "fp32";
  eo.eval_samples = 4;
  eo.run_onnxruntime = false;
  eo.out_dir = "exports/adapted";
  const nlohmann::json report = ef::exporter::run_export(eo);
  CHECK(fs::exists(eo.out_dir / "model.onnx"));
  CHECK(std::isfinite(report["metric"]["float"].get<double>()));
}

}  // namespace

TEST_CASE("a classify run fine-tunes a classify run's ViT with LoRA adapters", "[lora][classify]") {
  InScratch scratch("adapter-classify");
  check_adapter_run("tasks/classify.tiny.json", "classify-tiny", "blocks.0.mlp.fc1");

  {  // a base of another recipe or another architecture is refused by name
    const fs::path config = fs::path(ef::test::source_dir()) / "tasks/classify.tiny.json";
    fs::create_directories("runs/other");
    ef::write_file_atomically("runs/other/config.json", R"({"recipe": "flow", "name": "other"})");
    ef::LaunchOptions o;
    o.quiet = true;
    o.overrides = {"adapter={\"base\": \"runs/other\"}", "name=\"refused\""};  // a refused run must not become runs/classify-tiny's newest
    CHECK_THROWS_AS(ef::launch_training(config, o), ef::InputError);
    CHECK_THROWS_WITH(ef::launch_training(config, o), Contains("adapter.base") && Contains("\"flow\" run"));
    o.overrides = {"adapter={\"base\": \"runs/classify-tiny\"}", "model.heads=1", "name=\"refused\""};
    CHECK_THROWS_WITH(ef::launch_training(config, o), Contains("model.heads"));
    o.overrides = {"adapter={\"base\": \"runs/adapted\"}", "name=\"refused\""};
    CHECK_THROWS_WITH(ef::launch_training(config, o), Contains("itself an adapter run"));

    // the CLI reports it as bad input
    const auto r = ef::test::run_command(ef::test::env_or_fail("EDGEFORGE_CLI") + " train " + ef::test::quote(config.string()) +
                                         " --quiet --set name=refused --set 'adapter={\"base\": \"runs/other\"}'");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("adapter.base"));
  }
}

TEST_CASE("a flow run fine-tunes a flow run's update block with LoRA adapters", "[lora][flow]") {
  InScratch scratch("adapter-flow");
  check_adapter_run("flow/flow.tiny.json", "flow-tiny", "convz");
}
