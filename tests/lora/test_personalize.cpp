// The personalize recipe through the CLI on the tiny configs: Hollowed Net's first loss equals LoRA
// on the full UNet's (zero adapters: the hollowed network fed from the cache is the full UNet, on
// the same schedule); the run's own model equals the base with its adapters attached by
// `sample --adapter` (the transfer); a cache is shared by runs of the same inputs and refused, exit
// 2, naming what differs, for another schedule or plan; bad hollow fractions and an empty subject
// folder exit 2; full fine-tuning and LoRA train and evaluate, LoRA printing the significance table.
#include <catch2/catch.hpp>

#include "core/atomic_file.h"
#include "core/image_io.h"
#include "core/metrics.h"
#include "core/run.h"
#include "lora/hollow_cache.h"
#include "tests/lora/cli_runs.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using ef::test::quote;
using ef::test::run_command;

namespace {

struct TinyPersonalizeRuns : ef::lora::test::CliScratch {
  nlohmann::json tiny = nlohmann::json::parse(ef::read_file(fs::path(ef::test::source_dir()) / "lora" / "personalize.tiny.json"));
  TinyPersonalizeRuns() : CliScratch("personalize-cli") {
    train_sources({"distill/autoencoder.tiny.json", "distill/diffusion.tiny.json", "lora/personalize.tiny.json"});
  }
  // Trains a variant of the tiny config (written into the scratch folder as <name>.json).
  ef::test::CommandResult train(const std::string& name, const nlohmann::json& config, const std::string& extra = "") const {
    ef::write_file_atomically(dir.path / (name + ".json"), config.dump(2));
    return cli("train " + name + ".json --quiet " + extra);
  }
  std::vector<double> losses(const std::string& run) const {
    std::vector<double> out;
    for (const auto& row : ef::read_metrics_jsonl(latest(run) / "metrics.jsonl"))
      if (row.count("train/loss")) out.push_back(row.at("train/loss"));
    return out;
  }
  fs::path latest(const std::string& name) const { return ef::resolve_run_folder(dir.path / "runs" / name, "test"); }
  torch::Tensor sample(const std::string& run, const std::string& extra, const std::string& out) const {
    return CliScratch::sample(run, "one large sks star at the top right on noise", extra, out);
  }
};

}  // namespace

TEST_CASE("personalize: the training schedule is fixed by the seed", "[lora][personalize]") {
  using ef::lora::TrainingSchedule;
  const TrainingSchedule a = TrainingSchedule::make(6, 3, 5, {4, 2, 2}, 1000, 0.2, 7), b = TrainingSchedule::make(6, 3, 5, {4, 2, 2}, 1000, 0.2, 7);
  CHECK(a.checksum() == b.checksum());
  CHECK(TrainingSchedule::make(6, 3, 5, {4, 2, 2}, 1000, 0.2, 8).checksum() != a.checksum());
  // every image appears once per epoch
  CHECK(std::get<0>(torch::sort(a.index.flatten().narrow(0, 0, 5))).equal(torch::arange(5)));
}

TEST_CASE("personalize through the CLI: Hollowed Net, its cache and transfer, LoRA and full fine-tuning", "[lora][personalize][cli]") {
  TinyPersonalizeRuns runs;
  const std::vector<double> hollow_losses = runs.losses("personalize-tiny");
  REQUIRE(hollow_losses.size() == 4);

  SECTION("LoRA on the full UNet: the same first loss (zero adapters), the significance table, finite metrics") {
    nlohmann::json c = runs.tiny;
    c.erase("hollow");
    c["name"] = "personalize-lora";
    auto r = runs.train("lora", c);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(runs.losses("personalize-lora").front() == hollow_losses.front());
    CHECK(runs.losses("personalize-lora")[1] != hollow_losses[1]);  // the removed layers' adapters train too
    const std::string log = ef::read_file(runs.latest("personalize-lora") / "log.txt");
    CHECK_THAT(log, Contains("layer significance"));
    CHECK_THAT(log, Contains("mid_block"));
  }

  SECTION("full fine-tuning: the same first loss, and the UNet is what the checkpoint holds") {
    nlohmann::json c = runs.tiny;
    c.erase("hollow");
    c.erase("adapter");
    c["name"] = "personalize-full";
    auto r = runs.train("full", c);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(runs.losses("personalize-full").front() == hollow_losses.front());
    CHECK(fs::exists(runs.latest("personalize-full") / "ckpt" / "step_4" / "unet.safetensors"));
  }

  SECTION("the transferred adapters: the run's own model is the base with the run attached") {
    const torch::Tensor own = runs.sample("runs/personalize-tiny", "", "own");
    CHECK(torch::equal(runs.sample("runs/diffusion-tiny", "--adapter runs/personalize-tiny", "attached"), own));
    auto r = runs.cli("export " + quote(runs.latest("personalize-tiny").string()) + " --format merged --out merged");
    INFO(r.output);
    CHECK(r.exit_code == 0);
    // the per-layer analyses and the per-unit significance of the retained layers
    r = runs.cli("adapters runs/personalize-tiny");
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output, Contains("mean |ΔW| per UNet unit") && Contains("up_blocks.1.resnets.1") && !Contains("mid_block "));
  }

  SECTION("prior preservation: class rows join every step, in the cache too; off for a folder of images") {
    nlohmann::json c = runs.tiny;
    c["train"]["prior_weight"] = 1.0;
    c["name"] = "personalize-prior";
    auto r = runs.train("prior", c);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(runs.losses("personalize-prior").front() != hollow_losses.front());
    c.erase("hollow");
    c["name"] = "personalize-prior-lora";
    r = runs.train("prior-lora", c);
    REQUIRE(r.exit_code == 0);
    CHECK(runs.losses("personalize-prior-lora").front() == runs.losses("personalize-prior").front());  // zero adapters again
  }

  SECTION("a cache is shared by runs of the same inputs and refused for others, naming what differs") {
    const std::string cache = (runs.latest("personalize-tiny") / "hollow_cache.h5").string();
    nlohmann::json c = runs.tiny;
    c["hollow"]["cache"] = cache;
    c["name"] = "personalize-shared";
    auto r = runs.train("shared", c);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(ef::read_file(runs.latest("personalize-shared") / "log.txt"), !Contains("pre-computed"));
    CHECK(runs.losses("personalize-shared") == hollow_losses);

    c["seed"] = 1;
    r = runs.train("other-seed", c);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("computed for other inputs") && Contains("schedule"));
    c["seed"] = 0;
    c["hollow"]["units"] = 0;
    r = runs.train("other-plan", c);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("hollow_units") && Contains("unet_retained"));
  }

  SECTION("bad input exits 2 naming what is wrong") {
    nlohmann::json c = runs.tiny;
    c["hollow"] = {{"fraction", 1.0}};
    auto r = runs.train("all", c);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("hollow.fraction") && Contains("every unit"));
    c["hollow"] = {{"units", 3}};
    r = runs.train("every-encoder", c);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("hollow.units") && Contains("at most 2"));
    c = runs.tiny;
    fs::create_directories(runs.dir.path / "empty-subject");
    c["data"] = {{"images", "empty-subject"}, {"prompt", "one large sks star"}, {"image_size", 16}, {"batch_size", 2}};
    r = runs.train("empty", c);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("empty-subject") && Contains("no PNG or JPEG"));
  }
}
