// The style recipe and adapter sampling through the CLI, on the tiny configs: `sample --adapter`
// at strength 0 is the base model, at strength 1 the style run itself; two halves compose into one
// whole; bad adapter arguments exit 2 naming what is wrong.
#include <catch2/catch.hpp>

#include "core/image_io.h"
#include "core/atomic_file.h"
#include "core/frozen.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "tests/lora/cli_runs.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using ef::test::quote;
using ef::test::run_command;

namespace {

struct TinyStyleRuns : ef::lora::test::CliScratch {
  TinyStyleRuns() : CliScratch("style-cli") {
    train_sources({"distill/autoencoder.tiny.json", "distill/diffusion.tiny.json", "lora/style.tiny.json"});
  }
  torch::Tensor sample(const std::string& run, const std::string& extra, const std::string& out) const {
    return CliScratch::sample(run, "two small red circles in the centre", extra, out);
  }
};

}  // namespace

TEST_CASE("sample --adapter: strength 0 is the base, 1 is the style run, two halves are one whole", "[lora][style][cli]") {
  TinyStyleRuns runs;
  const torch::Tensor base = runs.sample("runs/diffusion-tiny", "", "base");
  const torch::Tensor styled_run = runs.sample("runs/style-tiny", "", "style-run");
  CHECK(torch::equal(runs.sample("runs/diffusion-tiny", "--adapter runs/style-tiny:0", "zero"), base));
  CHECK(torch::equal(runs.sample("runs/diffusion-tiny", "--adapter runs/style-tiny", "one"), styled_run));
  const torch::Tensor half = runs.sample("runs/diffusion-tiny", "--adapter runs/style-tiny:0.5", "half");
  const torch::Tensor halves = runs.sample("runs/diffusion-tiny", "--adapter runs/style-tiny:0.5 --adapter runs/style-tiny:0.5", "halves");
  CHECK(!torch::equal(half, base));
  CHECK(!torch::equal(styled_run, base));
  // Σ_i s_i ΔW_i at the output: 0.5 + 0.5 of the same adapter is the whole adapter (up to float
  // rounding, which 8-bit images may show as one level)
  CHECK((halves - styled_run).abs().max().item<int>() <= 1);

  SECTION("bad adapter arguments exit 2 naming what is wrong") {
    auto r = runs.cli("sample runs/diffusion-tiny --prompt x --out bad --adapter runs/diffusion-tiny");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("no adapter block"));
    r = runs.cli("sample runs/diffusion-tiny --prompt x --out bad --adapter runs/style-tiny:9");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("outside [0, 4]"));
    r = runs.cli("sample runs/diffusion-tiny --prompt x --out bad --adapter runs/nothing-here");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("nothing-here"));
  }

  SECTION("adapters: the ΔW analyses per layer, and φ = 1 against the same run") {
    auto r = runs.cli("adapters runs/style-tiny --against runs/style-tiny --json report.json");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.output, Contains("attn1.to_q"));
    const auto rows = nlohmann::json::parse(ef::read_file(runs.dir.path / "report.json"))["layers"];
    REQUIRE(rows.size() >= 3);
    for (const auto& row : rows) {
      INFO(row.dump());
      CHECK(row["rank"] == 2);
      CHECK(row["similarity"].get<double>() == Approx(1.0).margin(1e-6));
      CHECK(row["effective_rank"].get<double>() <= 2.0 + 1e-9);
    }
    r = runs.cli("adapters runs/diffusion-tiny");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("no frozen base UNet"));
  }

  SECTION("export --format merged writes the base UNet with ΔW folded into exactly the adapted layers") {
    const fs::path style = ef::resolve_run_folder(runs.dir.path / "runs" / "style-tiny", "test");
    auto r = runs.cli("export " + quote(style.string()) + " --format merged --out merged");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    const auto merged = ef::load_safetensors(runs.dir.path / "merged" / "unet" / "diffusion_pytorch_model.safetensors");
    const auto base = ef::load_safetensors(
        ef::network_file_of_run(ef::resolve_run_folder(runs.dir.path / "runs" / "diffusion-tiny", "test"), "unet", true));
    REQUIRE(merged.size() == base.size());
    int64_t changed = 0;
    for (const auto& [key, w] : base) {
      INFO(key);
      const bool adapted = key.find("attn1.to_q.weight") != std::string::npos || key.find("attn1.to_v.weight") != std::string::npos ||
                           key.find("attn2.to_k.weight") != std::string::npos;
      if (adapted) changed += !torch::equal(merged.at(key), w);
      else CHECK(torch::equal(merged.at(key), w));
    }
    CHECK(changed >= 3);  // every adapted layer moved (B is no longer zero after training)
  }
}
