// The generated flow domains (exact flow: frame 2 warped back by it matches frame 1 where nothing
// is occluded), the "flow" recipe trained through the CLI (loss and EPE fall), `edgeforge eval
// --data` on Sintel- and KITTI-layout folders.
#include <catch2/catch.hpp>

#include <fstream>

#include "core/atomic_file.h"
#include "core/image_io.h"
#include "core/metrics.h"
#include "flow/flow_data.h"
#include "flow/flow_io.h"
#include "flow/models.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using ef::test::quote;
using ef::test::run_command;
using namespace ef::flow;

TEST_CASE("flow data: generated pairs are deterministic and their flow is exact", "[flow]") {
  for (std::string domain : {"chairs", "cross"}) {
    INFO(domain);
    FlowScenesParams p = FlowScenesParams::defaults(domain);
    p.height = 48;
    p.width = 64;
    p.noise = 0;
    p.blur = 0;
    p.brightness = 0;
    FlowScene a = render_flow_scene(p, 3), b = render_flow_scene(p, 3);
    CHECK(torch::equal(a.img1, b.img1));
    CHECK(torch::equal(a.flow, b.flow));
    CHECK(a.flow.sizes() == std::vector<int64_t>{48, 64, 2});
    CHECK_FALSE(torch::equal(a.flow, render_flow_scene(p, 4).flow));
    // frame 2 sampled at x + flow(x) reproduces frame 1 at visible pixels, far better than at x
    double good = 0, zero = 0;
    int64_t visible = 0;
    for (int i = 0; i < 4; ++i) {
      FlowScene s = render_flow_scene(p, i);
      torch::Tensor im1 = s.img1.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32);
      torch::Tensor im2 = s.img2.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32);
      torch::Tensor w = warp(im2, s.flow.permute({2, 0, 1}).unsqueeze(0)).first;
      torch::Tensor vis = (s.occ == 0).unsqueeze(0).unsqueeze(0).to(torch::kFloat32);
      good += ((w - im1).abs() * vis).sum().item<double>();
      zero += ((im2 - im1).abs() * vis).sum().item<double>();
      visible += vis.sum().item<int64_t>() * 3;
    }
    INFO("mean |warp - frame1| " << good / visible << ", without the flow " << zero / visible);
    CHECK(good / visible < 0.4 * zero / visible);
    CHECK(visible > 4 * 48 * 64 * 3 / 2);  // most pixels are visible in both frames
  }
}

namespace {

// The JSON object `edgeforge eval` prints (log lines may surround it).
nlohmann::json eval_json(const std::string& output) {
  const size_t begin = output.find("{\n"), end = output.find("\n}", begin);
  REQUIRE(begin != std::string::npos);
  REQUIRE(end != std::string::npos);
  return nlohmann::json::parse(output.substr(begin, end + 2 - begin));
}

// A Sintel-layout and a KITTI-layout folder from generated pairs (cropped to an odd size so the
// evaluation pads).
void write_benchmark_folders(const fs::path& h5, const fs::path& sintel, const fs::path& kitti) {
  FlowScenesDataset val(h5, "val");
  auto u8 = [](const torch::Tensor& chw) { return ef::to_uint8_hwc(chw); };
  for (int i = 0; i < 3; ++i) {
    ef::Sample s = val.get(i);
    auto crop = [](const torch::Tensor& t) { return t.narrow(-2, 0, 30).narrow(-1, 0, 45); };
    for (std::string pass : {"clean", "final"}) {
      fs::create_directories(sintel / "training" / pass / "scene_a");
      char name[32];
      std::snprintf(name, sizeof name, "frame_%04d.png", 2 * i + 1);
      ef::write_png(sintel / "training" / pass / "scene_a" / name, u8(crop(s["image1"])));
    }
    fs::create_directories(sintel / "training" / "flow" / "scene_a");
    char flo[32];
    std::snprintf(flo, sizeof flo, "frame_%04d.flo", 2 * i + 1);
    write_flo(sintel / "training" / "flow" / "scene_a" / flo, crop(s["flow"]).permute({1, 2, 0}));
    fs::create_directories(kitti / "training" / "image_2");
    fs::create_directories(kitti / "training" / "flow_occ");
    char id[16];
    std::snprintf(id, sizeof id, "%06d", i);
    ef::write_png(kitti / "training" / "image_2" / (std::string(id) + "_10.png"), u8(crop(s["image1"])));
    ef::write_png(kitti / "training" / "image_2" / (std::string(id) + "_11.png"), u8(crop(s["image2"])));
    write_kitti_flow(kitti / "training" / "flow_occ" / (std::string(id) + "_10.png"), crop(s["flow"]).permute({1, 2, 0}),
                     crop(s["occ"]) < 0.5);
  }
  // Sintel pairs are consecutive frames: make frames 1..6 of one scene (pairs 1-2, ..., 5-6)
  for (std::string pass : {"clean", "final"})
    for (int i = 0; i < 3; ++i) {
      char a[32], b[32];
      std::snprintf(a, sizeof a, "frame_%04d.png", 2 * i + 1);
      std::snprintf(b, sizeof b, "frame_%04d.png", 2 * i + 2);
      fs::copy_file(sintel / "training" / pass / "scene_a" / a, sintel / "training" / pass / "scene_a" / b);
    }
  for (int i = 0; i < 3; ++i) {  // flows of the even frames (pairs 2-3, 4-5)
    char a[32], b[32];
    std::snprintf(a, sizeof a, "frame_%04d.flo", 2 * i + 1);
    std::snprintf(b, sizeof b, "frame_%04d.flo", 2 * i + 2);
    fs::copy_file(sintel / "training" / "flow" / "scene_a" / a, sintel / "training" / "flow" / "scene_a" / b);
  }
}

}  // namespace

TEST_CASE("flow recipe: both models train through the CLI with falling loss and EPE and evaluate Sintel and KITTI folders", "[flow][cli]") {
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  const fs::path configs = fs::path(ef::test::source_dir()) / "configs";
  ef::test::ScratchDir dir("flow-cli");
  const fs::path h5 = dir.path / "chairs.h5";
  for (std::string config : {"flow-raft-small.json", "flow-mobileflow-sci-rfl.json"}) {
    INFO(config);
    const fs::path run = dir.path / config;
    std::vector<std::string> sets = {"train.steps=60", "train.log_every=10", "train.eval_every=0", "train.ckpt_every=0",
                                     "train.tensorboard=false", "data.batch_size=4", "data.workers=1", "data.generate.n=60",
                                     "data.generate.height=32", "data.generate.width=48", "data.cross.generate.n=24",
                                     "data.cross.generate.height=32", "data.cross.generate.width=48", "model.iters=3", "model.levels=2",
                                     "eval.batch_size=8", "eval.samples=2", "optim.lr=0.001", "optim.schedule.warmup=5",
                                     "threads=1"};  // one thread: OpenMP spinning is slow on a shared machine
    sets.push_back("data.path=\"" + h5.string() + "\"");
    sets.push_back("data.cross.path=\"" + (dir.path / "cross.h5").string() + "\"");
    std::string args;
    for (const auto& s : sets) args += " --set " + quote(s);
    auto r = run_command(cli + " train " + quote((configs / config).string()) + args + " --run-dir " + quote(run.string()) + " --quiet");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    std::vector<double> losses, epes;
    for (const auto& m : ef::read_metrics_jsonl(run / "metrics.jsonl")) {
      if (m.count("train/loss")) losses.push_back(m.at("train/loss"));
      if (m.count("train/epe")) epes.push_back(m.at("train/epe"));
    }
    REQUIRE(losses.size() == 6);
    REQUIRE(epes.size() == 6);
    INFO("loss " << losses[0] << " " << losses[1] << " -> " << losses[4] << " " << losses[5] << "; epe " << epes[0] << " " << epes[1]
                 << " -> " << epes[4] << " " << epes[5]);
    CHECK(losses[4] + losses[5] < losses[0] + losses[1]);
    CHECK(epes[4] + epes[5] < epes[0] + epes[1]);
    auto final = nlohmann::json::parse(std::ifstream(run / "final.json"));
    for (const char* k : {"eval/epe", "eval/fl_all", "eval/1px", "eval/epe_occ", "eval/cross_epe", "eval/cross_fl_all", "eval/params",
                          "eval/epe_iter3"})
      CHECK(final["metrics"].contains(k));
    CHECK(fs::exists(run / "samples/flow_step_60.png"));
  }

  // the real-benchmark layouts, through `edgeforge eval --data`
  const fs::path sintel = dir.path / "Sintel", kitti = dir.path / "KITTI";
  write_benchmark_folders(h5, sintel, kitti);
  const fs::path run = dir.path / "flow-raft-small.json";
  auto r = run_command(cli + " eval " + quote(run.string()) + " --set threads=1 --data " + quote(sintel.string()));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto out = eval_json(r.output);
  CHECK(out["eval/clean_pairs"] == 5);
  CHECK(out["eval/final_pairs"] == 5);
  CHECK(std::isfinite(out["eval/clean_epe"].get<double>()));
  r = run_command(cli + " eval " + quote(run.string()) + " --set threads=1 --data " + quote(kitti.string()) + " --format kitti");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  out = eval_json(r.output);
  CHECK(out["eval/kitti_pairs"] == 3);
  for (const char* k : {"eval/kitti_epe", "eval/kitti_epe_image", "eval/kitti_fl_all"}) CHECK(std::isfinite(out[k].get<double>()));
  r = run_command(cli + " eval " + quote(run.string()) + " --data " + quote(dir.path.string()));
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("neither a Sintel folder") != std::string::npos);
}
