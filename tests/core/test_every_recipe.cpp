// Every registered recipe, tested by registering it (tiny-cuda-nn's habit): each recipe keeps a tiny
// config beside its source (<domain>/<recipe>.tiny.json) and this test, for each one, through the
// same launcher as `edgeforge train`:
//  - trains a few steps; every logged loss is finite;
//  - its checkpoints hold exactly the trained networks (frozen ones are recorded in the resolved
//    config instead);
//  - a run resumed from its midway checkpoint ends with the same weights, bit for bit, and logs
//    the same losses as the uninterrupted run (CPU);
//  - `eval` runs and reports finite metrics;
//  - `export` runs for every network (and file format) the recipe's export target names.
// A tiny config naming another tiny run ("runs/<name>", e.g. a frozen autoencoder) gets it trained first.
// Everything runs inside a scratch folder, so that the configs' relative paths (data/, runs/) land there.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/export_target.h"
#include "core/metrics.h"
#include "core/run.h"
#include "export/export.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

namespace {

// The tiny config of `recipe`: <source>/<domain>/<recipe>.tiny.json, for any domain folder.
fs::path tiny_config_of(const std::string& recipe) {
  for (const auto& e : fs::directory_iterator(ef::test::source_dir())) {
    fs::path f = e.path() / (recipe + ".tiny.json");
    if (e.is_directory() && fs::exists(f)) return f;
  }
  return {};
}

// The run folders ("runs/<name>") a config names: tiny runs of other recipes it needs first.
void collect_run_names(const nlohmann::json& j, std::set<std::string>& out) {
  static const std::regex run_ref("^runs/([^/]+)/?$");
  std::smatch m;
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    if (std::regex_match(s, m, run_ref)) out.insert(m[1]);
  } else if (j.is_structured()) {
    for (const auto& v : j) collect_run_names(v, out);
  }
}

std::vector<double> logged(const fs::path& run, const std::string& key) {
  std::vector<double> out;
  for (const auto& row : ef::read_metrics_jsonl(run / "metrics.jsonl"))
    if (row.count(key)) out.push_back(row.at(key));
  return out;
}

// Trains each recipe's tiny config once (and what it names first); returns the finished run folders.
class TinyRuns {
 public:
  fs::path train(const std::string& recipe) {
    if (runs_.count(recipe)) return runs_.at(recipe);
    const fs::path config = tiny_config_of(recipe);
    INFO("recipe " << recipe);
    if (config.empty())
      FAIL("recipe '" << recipe << "' is registered without a tiny config: add <domain>/" << recipe
                      << ".tiny.json beside its source (a few steps on tiny generated data, checkpointing midway)");
    const nlohmann::json j = ef::Config::load(config).root();
    std::set<std::string> needs;
    collect_run_names(j, needs);
    for (const auto& name : needs) train(recipe_named(name));
    const std::string name = j.at("name").get<std::string>();
    ef::LaunchOptions o;
    o.run_dir = fs::path("runs") / name / "0-full";  // runs/<name> resolves to it (the newest name sorts last)
    o.quiet = true;
    ef::LaunchResult r = ef::launch_training(config, o);
    REQUIRE(r.outcome.status == ef::TrainStatus::Finished);
    runs_[recipe] = r.run_dir;
    return r.run_dir;
  }

 private:
  // The recipe whose tiny config is named `name`.
  std::string recipe_named(const std::string& name) {
    for (const auto& recipe : ef::recipes().names()) {
      const fs::path c = tiny_config_of(recipe);
      if (!c.empty() && ef::Config::load(c).root().value("name", "") == name) return recipe;
    }
    FAIL("a tiny config names runs/" << name << ", but no recipe's tiny config has that name");
    return {};
  }
  std::map<std::string, fs::path> runs_;
};

using ef::test::weight_files;

}  // namespace

std::vector<std::string> registered_recipes() {
  std::vector<std::string> out;
  for (const auto& name : ef::recipes().names())
    if (name.rfind("test_", 0) != 0) out.push_back(name);  // not the recipes tests register for themselves
  return out;
}

TEST_CASE("every registered recipe trains, resumes bit for bit, evaluates and exports", "[recipes]") {
  // one run of this test case per recipe; the scratch folder and the tiny runs are shared by them
  static ef::test::InScratch scratch("every-recipe");
  static TinyRuns runs;
  const std::string recipe = GENERATE(from_range(registered_recipes()));
  {
    INFO("recipe " << recipe);
    const fs::path full = runs.train(recipe);

    // the loss is finite at every logged step
    const std::vector<double> losses = logged(full, "train/loss");
    REQUIRE(!losses.empty());
    for (double l : losses) CHECK(std::isfinite(l));

    // checkpoints hold the trained networks only; frozen ones are recorded in the resolved config
    ef::OpenedRun opened = ef::open_run(full, {});
    std::set<std::string> expected;
    for (const auto& [name, m] : opened.recipe->modules()) expected.insert(name + ".safetensors");
    std::set<std::string> stored;
    for (const auto& f : weight_files(opened.checkpoint))
      if (f.find(".ema.") == std::string::npos) stored.insert(f);
    CHECK(stored == expected);
    const nlohmann::json resolved = ef::Config::load(full / "config.json").root();
    for (const auto& [name, net] : opened.recipe->frozen()) {
      INFO("frozen network " << name);
      CHECK(!net.module->is_training());
      for (const auto& p : net.module->parameters()) CHECK(!p.requires_grad());
      CHECK(resolved["frozen"].contains(name));
    }

    // resume from the midway checkpoint: the same final weights and logged losses
    ef::CheckpointStore store(full / "ckpt", 0);
    const std::vector<int64_t> steps = store.steps();
    INFO("checkpoints at steps " << nlohmann::json(steps).dump());
    REQUIRE(steps.size() >= 2);  // the tiny config must checkpoint midway (train.ckpt_every)
    const int64_t mid = steps[steps.size() - 2], last = steps.back();
    const fs::path resumed = full.parent_path() / "1-resumed";
    fs::copy(full, resumed, fs::copy_options::recursive);
    fs::remove_all(resumed / "ckpt" / ("step_" + std::to_string(last)));
    fs::remove(resumed / "final.json");
    ef::write_file_atomically(resumed / "ckpt" / "latest", "step_" + std::to_string(mid) + "\n");
    ef::LaunchOptions again;
    again.run_dir = resumed;
    again.resume = true;
    again.quiet = true;
    REQUIRE(ef::launch_training("", again).outcome.step == last);
    const fs::path a = full / "ckpt" / ("step_" + std::to_string(last)), b = resumed / "ckpt" / ("step_" + std::to_string(last));
    REQUIRE(weight_files(a) == weight_files(b));
    for (const auto& f : weight_files(a)) {
      INFO(f);
      CHECK(ef::read_file(a / f) == ef::read_file(b / f));
    }
    CHECK(logged(resumed, "train/loss") == losses);

    // eval, as `edgeforge eval` does it
    ef::OpenedRun evaluated = ef::open_run(resumed, {});
    const ef::Scalars metrics = evaluated.recipe->evaluate();
    CHECK(!metrics.empty());
    for (const auto& [k, v] : metrics) {
      INFO("eval/" << k);
      CHECK(std::isfinite(v));
    }

    // export every network and file format its target names
    INFO("export target of " << recipe);
    REQUIRE(ef::export_targets().contains(recipe));  // register one beside the recipe (README: Extending)
    auto target = ef::export_targets().create(recipe, evaluated);
    std::vector<std::pair<std::string, std::string>> jobs;  // (format, model)
    for (const auto& m : target->models()) jobs.push_back({"onnx", m});
    for (const auto& f : target->file_formats()) jobs.push_back({f, ""});
    CHECK(!jobs.empty());
    for (const auto& [format, model] : jobs) {
      INFO("export --format " << format << " --model " << model);
      ef::exporter::ExportOptions eo;
      eo.run_dir = full;
      eo.format = format;
      eo.model = model;
      eo.quant = "w8a8";
      eo.eval_samples = 2;
      eo.run_onnxruntime = false;  // ONNX Runtime agreement: tests/export
      eo.out_dir = fs::path("exports") / recipe / (format + "-" + model);
      const nlohmann::json report = ef::exporter::run_export(eo);
      CHECK(fs::exists(eo.out_dir / "report.json"));
      if (format == "onnx") {
        CHECK(fs::exists(eo.out_dir / "model.onnx"));
        CHECK(std::isfinite(report["metric"]["simulated"].get<double>()));
      }
    }
  }
}

TEST_CASE("a shared trainer option a recipe cannot honour is refused, naming the key", "[recipes][config]") {
  ef::test::ScratchDir dir("declined-options");
  const fs::path splat = tiny_config_of("splat");
  REQUIRE(!splat.empty());
  for (const std::string& set : {"train.grad_accum=2", "train.grad_clip=1.0", "train.ema=0.9"}) {
    INFO(set);
    ef::LaunchOptions o;
    o.runs_root = dir.path / "runs";
    o.overrides = {set, "data.path=\"" + (dir.path / "scene").string() + "\""};
    o.quiet = true;
    const std::string key = set.substr(0, set.find('='));
    try {
      ef::launch_training(splat, o);
      FAIL("accepted");
    } catch (const ef::ConfigError& e) {
      CHECK_THAT(e.what(), Catch::Matchers::Contains(key) && Catch::Matchers::Contains("splat"));
    }
  }
}

TEST_CASE("a classify run on the captions data exports with its own data", "[recipes][export]") {
  ef::test::InScratch scratch("every-recipe");
  const fs::path classify = tiny_config_of("classify");
  ef::LaunchOptions o;
  o.run_dir = "runs/colour";
  o.quiet = true;
  o.overrides = {"data.kind=\"captions\"", "data.attribute=\"colour\"", "data.path=\"data/captions.h5\"", "data.generate={\"n_train\": 32, \"n_val\": 8, \"image_size\": 16, \"seed\": 0}"};
  ef::launch_training(classify, o);
  ef::exporter::ExportOptions eo;
  eo.run_dir = o.run_dir;
  eo.quant = "fp32";
  eo.eval_samples = 0;
  eo.run_onnxruntime = false;
  const nlohmann::json report = ef::exporter::run_export(eo);
  CHECK(report["eval_samples"] == 8);  // the captions' validation split, not a shapes file
  const double acc = report["metric"]["float"].get<double>();
  CHECK((acc >= 0 && acc <= 1));
  CHECK(report["metric"]["simulated"].get<double>() == acc);  // fp32: the graph is the module
}

TEST_CASE("a frozen network's recorded weights are checked: a changed or pruned file is refused by name", "[recipes][frozen]") {
  ef::test::InScratch scratch("every-recipe");
  for (const char* recipe : {"autoencoder", "diffusion"}) {
    ef::LaunchOptions o;
    o.quiet = true;
    ef::launch_training(tiny_config_of(recipe), o);
  }
  const fs::path diffusion = ef::resolve_run_folder("runs/diffusion-tiny", "test");
  const nlohmann::json rec = ef::Config::load(diffusion / "config.json").root()["frozen"]["autoencoder"];
  const fs::path file = fs::path(rec["run"].get<std::string>()) / "ckpt" / rec["checkpoint"].get<std::string>() / "autoencoder.safetensors";
  REQUIRE(fs::exists(file));
  CHECK_NOTHROW(ef::open_run(diffusion, {}));

  std::string bytes = ef::read_file(file);
  bytes[bytes.size() - 1] ^= 0x01;  // one bit of the last weight
  ef::write_file_atomically(file, bytes);
  CHECK_THROWS_AS(ef::open_run(diffusion, {}), ef::InputError);
  CHECK_THROWS_WITH(ef::open_run(diffusion, {}), Catch::Matchers::Contains("autoencoder.safetensors") && Catch::Matchers::Contains("changed"));

  fs::remove(file);
  CHECK_THROWS_WITH(ef::open_run(diffusion, {}), Catch::Matchers::Contains("no longer exists"));
}
