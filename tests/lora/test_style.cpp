// The style recipe's data and scorer (lora/style_data.h, lora/style_probe.h): the filters, the
// generated set's splits and classes, and the style probe.
#include <catch2/catch.hpp>

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "lora/style_data.h"
#include "lora/style_probe.h"
#include "tasks/caption_data.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

torch::Tensor test_scene(uint64_t seed) {
  const auto& attrs = ef::scene_attributes("full");
  return ef::render_scene(attrs, {0, 0, 4, 1, 0, 1}, seed, 32).permute({2, 0, 1}).to(torch::kFloat32).div(255);
}

ef::Config style_params(nlohmann::json j) { return ef::Config::from_json(std::move(j), "test"); }

}  // namespace

TEST_CASE("every style filter is deterministic, stays in [0, 1], and changes the image its own way", "[lora][style]") {
  const torch::Tensor img = test_scene(7);
  std::vector<torch::Tensor> outputs;
  for (const auto& style : ef::lora::style_names()) {
    INFO("style " << style);
    torch::Tensor a = ef::lora::apply_style(img, style, 3), b = ef::lora::apply_style(img, style, 3);
    CHECK(a.sizes() == img.sizes());
    CHECK(torch::equal(a, b));
    CHECK(a.min().item<float>() >= 0.0f);
    CHECK(a.max().item<float>() <= 1.0f);
    CHECK((a - img).abs().mean().item<double>() > 0.02);
    for (const auto& other : outputs) CHECK((a - other).abs().mean().item<double>() > 0.02);
    outputs.push_back(a);
  }
  // bluefire is blue: the blue channel dominates
  torch::Tensor blue = ef::lora::apply_style(img, "bluefire", 0);
  CHECK(blue[2].mean().item<double>() > blue[0].mean().item<double>() + 0.2);
  CHECK_THROWS_WITH(ef::lora::apply_style(img, "sepia", 0), Contains("sepia") && Contains("bluefire"));
}

TEST_CASE("a style set holds only its classes per split, styled and plain twins, and regenerates byte for byte", "[lora][style]") {
  ef::test::ScratchDir dir("styles");
  const auto params = ef::lora::StyleDataParams::from(style_params(
      {{"style", "origami"}, {"n_train", 12}, {"n_val", 5}, {"n_unseen", 6}, {"image_size", 16}, {"classes", nlohmann::json::array({"circle", "square"})},
       {"unseen_classes", nlohmann::json::array({"star"})}}));
  ef::lora::generate_styles(params, dir.path / "a.h5");
  ef::lora::generate_styles(params, dir.path / "b.h5");
  CHECK(ef::read_file(dir.path / "a.h5") == ef::read_file(dir.path / "b.h5"));

  const std::map<std::string, std::set<std::string>> classes = {{"train", {"circle", "square"}}, {"val", {"circle", "square"}}, {"unseen", {"star"}}};
  const std::map<std::string, int64_t> sizes = {{"train", 12}, {"val", 5}, {"unseen", 6}};
  for (const auto& [split, allowed] : classes) {
    INFO("split " << split);
    ef::lora::StyleDataset d(dir.path / "a.h5", split);
    CHECK(d.size() == sizes.at(split));
    CHECK(d.style() == "origami");
    const int64_t shape = d.attribute_index("shape");
    for (int64_t i = 0; i < d.size(); ++i) {
      CHECK(allowed.count(d.attribute_values("shape")[d.labels()[i][shape].item<int64_t>()]) == 1);
      CHECK(d.text_at(i).find(d.attribute_values("shape")[d.labels()[i][shape].item<int64_t>()]) != std::string::npos);
    }
    // the styled image is the plain scene filtered
    CHECK(!torch::equal(d.images()[0], d.plain()[0]));
    CHECK(d.get(0).at("image").sizes() == d.get(0).at("plain").sizes());
  }
}

TEST_CASE("a style set's parameters are checked by name", "[lora][style][config]") {
  CHECK_THROWS_WITH(ef::lora::StyleDataParams::from(style_params({{"style", "sepia"}})), Contains("style") && Contains("sepia"));
  CHECK_THROWS_WITH(ef::lora::StyleDataParams::from(style_params({{"classes", nlohmann::json::array({"circle", "blob"})}})),
                    Contains("classes") && Contains("blob") && Contains("triangle"));
  CHECK_THROWS_WITH(ef::lora::StyleDataParams::from(style_params({{"classes", nlohmann::json::array({"circle"})}, {"unseen_classes", nlohmann::json::array({"circle"})}})),
                    Contains("unseen_classes") && Contains("also a training class"));
  CHECK_THROWS_WITH(ef::lora::StyleDataParams::from(style_params({{"n_unseen", 0}})), Contains("n_unseen"));
}

TEST_CASE("the style probe separates styled from plain features and scores in between for a mixture", "[lora][style]") {
  torch::manual_seed(0);
  // two clouds that differ along one direction of eight, as styled and plain features do
  torch::Tensor shift = torch::zeros({8});
  shift[3] = 3.0;
  torch::Tensor styled = torch::randn({200, 8}) + shift, plain = torch::randn({200, 8});
  const auto probe = ef::lora::StyleProbe::fit(styled, plain);
  torch::Tensor styled_test = torch::randn({200, 8}) + shift, plain_test = torch::randn({200, 8});
  CHECK(probe.accuracy(styled_test, plain_test) > 0.85);
  const double p_styled = probe.probability(styled_test).mean().item<double>();
  const double p_plain = probe.probability(plain_test).mean().item<double>();
  const double p_half = probe.probability(torch::randn({200, 8}) + shift * 0.5).mean().item<double>();
  CHECK(p_styled > 0.8);
  CHECK(p_plain < 0.2);
  CHECK(p_half > p_plain);
  CHECK(p_half < p_styled);
  // deterministic: fitted twice, the same probe
  CHECK(torch::equal(probe.probability(plain_test), ef::lora::StyleProbe::fit(styled, plain).probability(plain_test)));
}
