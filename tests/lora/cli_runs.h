#pragma once
// The CLI driven as a user drives it, from a scratch folder (the configs' relative data/ and runs/
// land there): what the style and personalize CLI tests share.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/image_io.h"
#include "tests/test_support.h"

namespace ef::lora::test {

struct CliScratch {
  ef::test::ScratchDir dir;
  std::string exe = ef::test::env_or_fail("EDGEFORGE_CLI");
  explicit CliScratch(const std::string& name) : dir(name) {}

  ef::test::CommandResult cli(const std::string& args) const {
    return ef::test::run_command("cd " + ef::test::quote(dir.path.string()) + " && " + exe + " " + args);
  }
  // Trains each config of the source tree (paths relative to it), requiring success.
  void train_sources(const std::vector<std::string>& configs) const {
    for (const auto& config : configs) {
      auto r = cli("train " + ef::test::quote((std::filesystem::path(ef::test::source_dir()) / config).string()) + " --quiet");
      INFO(r.output);
      REQUIRE(r.exit_code == 0);
    }
  }
  // `edgeforge sample RUN --prompt PROMPT --n 2 --steps 2 --seed 3 --out OUT EXTRA`: both images,
  // int32 [2, H, W, 3].
  torch::Tensor sample(const std::string& run, const std::string& prompt, const std::string& extra, const std::string& out) const {
    auto r = cli("sample " + run + " --prompt \"" + prompt + "\" --n 2 --steps 2 --seed 3 --out " + out + " " + extra);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    return torch::stack({ef::read_image(dir.path / out / "sample_0.png"), ef::read_image(dir.path / out / "sample_1.png")}).to(torch::kInt32);
  }
};

}  // namespace ef::lora::test
