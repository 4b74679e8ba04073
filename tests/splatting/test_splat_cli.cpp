// The splat recipe end to end through the CLI on a tiny generated scene: both renderers train past
// a PSNR floor that a renderer drawing nothing (or a flat colour) cannot reach; a resumed run equals
// the uninterrupted one; `edgeforge render` writes frames and a .ply that renders the same views.
#include <catch2/catch.hpp>

#include <fstream>

#include "core/image_io.h"
#include "core/image_metrics.h"
#include "core/metrics.h"
#include "core/safetensors.h"
#include "splatting/dataset.h"
#include "splatting/ply.h"
#include "splatting/renderer.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using ef::test::quote;
using ef::test::run_command;

namespace {

std::string tiny_sets(const fs::path& data, int64_t steps) {
  std::string s;
  for (const std::string& kv :
       {"data.path=" + nlohmann::json(data.string()).dump(), std::string("threads=1"), std::string("data.generate.views=16"), std::string("data.generate.size=32"),
        std::string("data.generate.points=600"), "train.steps=" + std::to_string(steps), std::string("train.log_every=25"),
        std::string("train.eval_every=0"), std::string("train.ckpt_every=0"), std::string("train.tensorboard=false"),
        std::string("densify.start=50"), std::string("densify.every=50"), std::string("densify.stop=250"),
        std::string("densify.opacity_reset_every=0"), std::string("model.sh_increase_every=100")})
    s += " --set " + quote(kv);
  return s;
}

double final_metric(const fs::path& run, const std::string& key) {
  auto j = nlohmann::json::parse(std::ifstream(run / "final.json"));
  return j["metrics"].at(key).get<double>();
}

// PSNR of the best flat image (per-channel mean of the held-out views): what a renderer that draws
// no structure at all scores.
double flat_colour_psnr(const fs::path& data) {
  auto scene = ef::splat::load_scene(ef::Config::from_json({{"path", data.string()}}));
  double sum = 0;
  for (const auto& v : scene.test) {
    auto flat = v.image.mean(torch::IntArrayRef{0, 1}, true).expand_as(v.image);
    sum += ef::psnr(flat, v.image).item<double>();
  }
  return sum / double(scene.test.size());
}

}  // namespace

TEST_CASE("splat: both renderers train through the CLI past a PSNR floor", "[splatting][cli][e2e]") {
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  const fs::path configs = fs::path(ef::test::source_dir()) / "configs";
  ef::test::ScratchDir dir("splat-cli");
  const fs::path data = dir.path / "scene";
  for (std::string kind : {"alpha", "wsr"}) {
    INFO(kind);
    const fs::path run = dir.path / kind;
    auto r = run_command(cli + " train " + quote((configs / ("splat-" + kind + "-quick.json")).string()) + tiny_sets(data, 300) +
                         " --run-dir " + quote(run.string()) + " --quiet");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    const double floor = flat_colour_psnr(data) + 3.0, psnr = final_metric(run, "eval/psnr");
    INFO("eval/psnr " << psnr << ", flat-colour floor + 3 dB " << floor);
    CHECK(psnr > floor);
    std::vector<double> losses;
    for (const auto& m : ef::read_metrics_jsonl(run / "metrics.jsonl"))
      if (m.count("train/loss")) losses.push_back(m.at("train/loss"));
    REQUIRE(losses.size() >= 4);
    CHECK(losses.back() < losses.front());
    CHECK(fs::exists(run / "ckpt" / "latest"));
  }

  // render the alpha run: dataset test views and an orbit, and export the scene as .ply
  const fs::path run = dir.path / "alpha";
  auto r = run_command(cli + " render " + quote(run.string()) + " --orbit 3 --export-ply " + quote((dir.path / "scene.ply").string()) +
                       " --out " + quote((dir.path / "frames").string()));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  int pngs = 0;
  for (const auto& e : fs::directory_iterator(dir.path / "frames")) pngs += e.path().extension() == ".png";
  CHECK(pngs == 2 + 3);  // 16 views, every 8th held out
  CHECK(fs::exists(dir.path / "frames" / "orbit_0002.png"));
  // the exported .ply holds the checkpoint's scene, and rendering it gives the same frames
  auto ply = ef::splat::read_ply(dir.path / "scene.ply");
  std::string latest;
  std::ifstream(run / "ckpt" / "latest") >> latest;  // names the newest checkpoint folder
  auto ckpt = ef::load_safetensors(run / "ckpt" / latest / "scene.safetensors");
  CHECK(torch::equal(ply.means, ckpt.at("means")));
  CHECK(torch::equal(ply.sh, ckpt.at("sh")));
  auto r2 = run_command(cli + " render --ply " + quote((dir.path / "scene.ply").string()) + " --data " + quote(data.string()) +
                        " --out " + quote((dir.path / "frames-ply").string()));
  INFO(r2.output);
  REQUIRE(r2.exit_code == 0);
  for (const auto& e : fs::directory_iterator(dir.path / "frames-ply")) {
    auto a = ef::read_image(e.path()), b = ef::read_image(dir.path / "frames" / e.path().filename());
    CHECK(torch::equal(a, b));
  }

  // the export stage: the standard .ply and the compressed layout, each rendered on the test views
  auto r3 = run_command(cli + " export " + quote(run.string()) + " --format ply --out " + quote((dir.path / "export").string()));
  INFO(r3.output);
  REQUIRE(r3.exit_code == 0);
  auto report = nlohmann::json::parse(std::ifstream(dir.path / "export" / "report.json"));
  INFO(report.dump(1));
  CHECK(report["size"]["ratio"].get<double>() < 0.3);
  CHECK(std::abs(report["psnr"]["float"].get<double>() - final_metric(run, "eval/psnr")) < 1e-3);
  CHECK(report["psnr"]["compact"].get<double>() > report["psnr"]["float"].get<double>() - 0.5);
  auto r5 = run_command(cli + " export " + quote(run.string()) + " --quant w8a8");  // a scene is not a network
  CHECK(r5.exit_code == 2);
  CHECK(r5.output.find("--format ply") != std::string::npos);
  auto r4 = run_command(cli + " render --ply " + quote((dir.path / "export" / "scene.compact.ply").string()) + " --data " + quote(data.string()) +
                        " --views test --out " + quote((dir.path / "frames-compact").string()));
  INFO(r4.output);
  CHECK(r4.exit_code == 0);
}

TEST_CASE("splat: render takes its renderer kinds from the registry", "[splatting][cli]") {
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  ef::test::ScratchDir dir("splat-render-kind");
  // checked before the run folder is opened: the error names the registry's kinds
  auto r = run_command(cli + " render " + quote(dir.path.string()) + " --renderer alhpa");
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("unknown renderer 'alhpa' (did you mean 'alpha'?)") != std::string::npos);
  for (const auto& kind : ef::splat::renderers().names()) CHECK(r.output.find(kind) != std::string::npos);
  auto help = run_command(cli + " render --help");
  for (const auto& kind : ef::splat::renderers().names()) CHECK(help.output.find(kind) != std::string::npos);
}

TEST_CASE("splat: a resumed run equals the uninterrupted run", "[splatting][resume]") {
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  const fs::path cfg = fs::path(ef::test::source_dir()) / "configs" / "splat-wsr-quick.json";
  ef::test::ScratchDir dir("splat-resume");
  const fs::path data = dir.path / "scene";
  // constant position rate: the shorter first leg must train with the same rates
  const std::string common = tiny_sets(data, 160) + " --set optim.position_lr_final=0.00016 --set train.ckpt_every=80 --quiet";
  auto full = run_command(cli + " train " + quote(cfg.string()) + common + " --run-dir " + quote((dir.path / "full").string()));
  REQUIRE(full.exit_code == 0);
  auto part = run_command(cli + " train " + quote(cfg.string()) + common + " --set train.steps=80 --run-dir " +
                          quote((dir.path / "part").string()));
  REQUIRE(part.exit_code == 0);
  auto cont = run_command(cli + " train " + quote(cfg.string()) + common + " --run-dir " + quote((dir.path / "part").string()) +
                          " --resume " + quote((dir.path / "part").string()) + " --allow-config-change");
  INFO(cont.output);
  REQUIRE(cont.exit_code == 0);
  auto a = ef::load_safetensors(dir.path / "full" / "ckpt" / "step_160" / "scene.safetensors");
  auto b = ef::load_safetensors(dir.path / "part" / "ckpt" / "step_160" / "scene.safetensors");
  REQUIRE(a.size() == b.size());
  for (const auto& [k, v] : a) {
    INFO(k);
    CHECK(torch::equal(v, b.at(k)));
  }
}
