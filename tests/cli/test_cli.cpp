// The `edgeforge` executable as users run it.
#include <catch2/catch.hpp>

#include <fstream>

#include "core/atomic_file.h"
#include "core/metrics.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using ef::test::quote;
using ef::test::run_command;
using Catch::Matchers::Contains;

namespace {
std::string cli() { return ef::test::env_or_fail("EDGEFORGE_CLI"); }
std::string quickstart() { return ef::test::source_dir() + "/configs/quickstart.json"; }
// quickstart.json shrunk to seconds: smaller images, model and data
std::string tiny_overrides(const fs::path& dir) {
  return " --set data.path=" + quote("\"" + (dir / "shapes.h5").string() + "\"") +
         " --set data.generate.n=1200 --set data.generate.size=16 --set model.image_size=16 --set model.patch=2"
         " --set model.dim=32 --set model.depth=2 --set optim.lr=3e-3 --set optim.schedule.warmup=10"
         " --set train.steps=300 --set train.log_every=50 --set train.eval_every=150 --set train.ckpt_every=150 --set eval.batches=1";
}
}  // namespace

TEST_CASE("cli: quickstart in a tiny mode trains / its loss falls / outputs are written", "[cli][e2e]") {
  ef::test::ScratchDir dir("cli-qs");
  auto r = run_command(cli() + " train " + quickstart() + tiny_overrides(dir.path) + " --run-dir " + quote((dir.path / "run").string()) + " --quiet");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  fs::path run = dir.path / "run";
  auto metrics = ef::read_metrics_jsonl(run / "metrics.jsonl");
  std::vector<double> losses;
  for (const auto& m : metrics)
    if (m.count("train/loss")) losses.push_back(m.at("train/loss"));
  REQUIRE(losses.size() == 6);
  // untrained: ln(10) = 2.30; a working step gets clearly below it within 300 steps
  double first = (losses[0] + losses[1]) / 2, last = (losses[4] + losses[5]) / 2;
  CHECK(last < 0.9 * first);
  CHECK(fs::exists(run / "config.json"));
  CHECK(fs::exists(run / "log.txt"));
  CHECK(fs::exists(run / "final.json"));
  CHECK(fs::exists(run / "samples/predictions_step_300.png"));
  CHECK(fs::exists(run / "ckpt/step_300/model.safetensors"));
  CHECK(ef::read_file(run / "ckpt/latest") == "step_300\n");
  bool has_events = false;
  for (const auto& e : fs::directory_iterator(run)) has_events |= e.path().filename().string().rfind("events.out.tfevents", 0) == 0;
  CHECK(has_events);

  // the resolved config reproduces the run, and eval reads the checkpoint back
  auto e = run_command(cli() + " eval " + quote(run.string()));
  INFO(e.output);
  CHECK(e.exit_code == 0);
  CHECK_THAT(e.output, Contains("eval/acc"));
  // stdout is the metrics' JSON alone (logs go to stderr), so that scripts can parse it
  e = run_command("(" + cli() + " eval " + quote(run.string()) + " 2>/dev/null)");  // run_command adds 2>&1 outside
  REQUIRE(e.exit_code == 0);
  CHECK(nlohmann::json::parse(e.output).contains("eval/acc"));
}

TEST_CASE("cli: bad input gets a clear message and exit code 2", "[cli][errors]") {
  ef::test::ScratchDir dir("cli-bad");
  auto r = run_command(cli() + " train " + quickstart() + " --set optim.lrr=0.1 --run-dir " + quote((dir.path / "r").string()));
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("unknown key 'optim.lrr' (did you mean 'optim.lr'?)"));
  CHECK(!fs::exists(dir.path / "r"));  // a refused config leaves no run folder behind
  r = run_command("cd " + quote(dir.path.string()) + " && " + cli() + " train " + quickstart() + " --set name=../../escaped");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("name") && Contains("inside the runs folder"));
  CHECK(!fs::exists(dir.path.parent_path() / "escaped"));

  r = run_command(cli() + " train " + quickstart() + " --set optim.lr='\"fast\"' --run-dir " + quote((dir.path / "r2").string()));
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("optim.lr: expected number, got \"fast\""));

  // a corrupt dataset file
  ef::write_file_atomically(dir.path / "corrupt.h5", "this is not HDF5");
  r = run_command(cli() + " train " + quickstart() + " --set data.path=" + quote("\"" + (dir.path / "corrupt.h5").string() + "\"") +
                  " --run-dir " + quote((dir.path / "r3").string()));
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("corrupt.h5") && Contains("HDF5"));

  r = run_command(cli() + " train /nonexistent.json");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("/nonexistent.json"));
  // the command line itself: an unknown flag, a missing value, a folder that does not exist
  r = run_command(cli() + " train " + quickstart() + " --no-such-flag");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("--no-such-flag"));
  r = run_command(cli() + " train " + quickstart() + " --set");
  CHECK(r.exit_code == 2);
  r = run_command(cli() + " eval " + quote((dir.path / "nowhere").string()));
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("nowhere"));
  r = run_command(cli() + " data gen nosuch");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("unknown data generator 'nosuch'"));
}

TEST_CASE("cli: a corrupt checkpoint or a bad export option exits 2 naming the file or option", "[cli][errors]") {
  ef::test::ScratchDir dir("cli-bad-files");
  const std::string in_dir = "cd " + quote(dir.path.string()) + " && ";
  const std::string tiny = quote(ef::test::source_dir() + "/tasks/classify.tiny.json");
  auto r = run_command(in_dir + cli() + " train " + tiny + " --run-dir run --quiet");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  r = run_command(cli() + " export " + quote((dir.path / "run").string()) + " --quant w9a9 --no-onnxruntime");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("w9a9"));
  r = run_command(cli() + " export " + quote((dir.path / "run").string()) + " --format gif --no-onnxruntime");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("--format gif"));
  // truncate the weights of the latest checkpoint (the raw ones and their moving average)
  for (const char* name : {"model.safetensors", "model.ema.safetensors"}) {
    const fs::path weights = dir.path / "run" / "ckpt" / "step_4" / name;
    REQUIRE(fs::exists(weights));
    const std::string bytes = ef::read_file(weights);
    ef::write_file_atomically(weights, bytes.substr(0, bytes.size() / 2));
  }
  r = run_command(cli() + " eval " + quote((dir.path / "run").string()));
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("step_4/model.") && Contains("is corrupt"));  // caught by the checksum meta.json records
}

TEST_CASE("cli: list / info / --help and data gen", "[cli]") {
  auto r = run_command(cli() + " list");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("classify") && Contains("softmax") && Contains("shapes"));
  r = run_command(cli() + " info");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("libtorch"));
  for (const char* sub : {"train", "eval", "sweep", "list", "info", "data gen"}) {
    r = run_command(cli() + " " + sub + " --help");
    INFO(sub);
    CHECK(r.exit_code == 0);
  }
  ef::test::ScratchDir dir("cli-gen");
  r = run_command(cli() + " data gen shapes --out " + quote((dir.path / "a.h5").string()) + " --set n=100 --set seed=3");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  r = run_command(cli() + " data gen shapes --out " + quote((dir.path / "b.h5").string()) + " --set n=100 --set seed=3");
  CHECK(ef::read_file(dir.path / "a.h5").size() > 0);
  r = run_command(cli() + " data gen shapes --out " + quote((dir.path / "c.h5").string()) + " --set nn=100");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("did you mean 'n'"));
}

TEST_CASE("cli: a sweep runs its points / skips finished ones and writes the summary", "[cli][sweep]") {
  ef::test::ScratchDir dir("cli-sweep");
  ef::write_file_atomically(dir.path / "sweep.json", nlohmann::json{
      {"base", quickstart()}, {"out", (dir.path / "out").string()},
      {"set", {{"data.path", (dir.path / "shapes.h5").string()}, {"data.generate.n", 300}, {"data.generate.size", 16},
               {"model.image_size", 16}, {"model.dim", 16}, {"model.depth", 1}, {"train.steps", 6}, {"train.log_every", 2},
               {"eval.batches", 1}, {"data.workers", 0}}},
      {"grid", {{"optim.lr", {0.001, 0.003}}}},
      {"metrics", {"eval/acc", "eval/loss"}}, {"sort", "eval/loss"}}.dump());
  auto r = run_command(cli() + " sweep " + quote((dir.path / "sweep.json").string()) + " --jobs 2");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(fs::exists(dir.path / "out/lr=0.001/final.json"));
  CHECK(fs::exists(dir.path / "out/lr=0.003/final.json"));
  std::string csv = ef::read_file(dir.path / "out/summary.csv");
  CHECK_THAT(csv, Contains("point,finished,optim.lr,eval/acc,eval/loss"));
  // a second run skips both points
  auto again = run_command(cli() + " sweep " + quote((dir.path / "sweep.json").string()) + " --dry-run");
  CHECK_THAT(again.output, Contains("[done] lr=0.001") && Contains("[done] lr=0.003"));
}
