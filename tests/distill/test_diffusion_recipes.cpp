// The autoencoder -> diffusion -> edit chain through the CLI on tiny generated data: each recipe's
// loss falls, `sample` writes its images, `edit` writes one output per input frame and reports fps.
#include <catch2/catch.hpp>

#include <fstream>

#include "core/atomic_file.h"
#include "core/image_io.h"
#include "core/metrics.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using ef::test::quote;
using ef::test::run_command;

namespace {

struct Cli {
  std::string exe = ef::test::env_or_fail("EDGEFORGE_CLI");
  ef::test::CommandResult operator()(const std::string& args) const { return run_command(exe + " " + args); }
};

std::string sets(const std::vector<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += " --set " + quote(x);
  return out;
}

// Train `config` (a file under configs/) with tiny overrides; returns the logged training losses.
std::vector<double> train(const Cli& cli, const std::string& config, const fs::path& run, std::vector<std::string> overrides) {
  for (std::string s : {"train.log_every=10", "train.eval_every=0", "train.ckpt_every=0", "train.tensorboard=false", "data.batch_size=8",
                        "data.workers=1", "data.generate.n_train=64", "data.generate.n_val=8", "data.generate.image_size=16",
                        "eval.images=8", "eval.samples=2", "threads=1"})
    overrides.push_back(s);
  auto r = cli("train " + quote((fs::path(ef::test::source_dir()) / "configs" / config).string()) + sets(overrides) + " --run-dir " +
               quote(run.string()) + " --quiet");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::vector<double> losses;
  for (const auto& m : ef::read_metrics_jsonl(run / "metrics.jsonl"))
    if (m.count("train/loss")) losses.push_back(m.at("train/loss"));
  return losses;
}

const std::vector<std::string> kTinyDiffusion = {
    "model.unet.block_out_channels=[16,32]", "model.unet.norm_num_groups=8", "model.unet.attention_heads=2",
    "model.unet.cross_attention_dim=32", "model.text.dim=32", "model.text.layers=1", "model.text.heads=2",
    "eval.sampler.steps=2", "optim.lr=0.002", "optim.schedule.warmup=2"};

}  // namespace

TEST_CASE("diffusion recipes: autoencoder then text-to-image then editing through the CLI", "[diffusion][cli]") {
  Cli cli;
  ef::test::ScratchDir dir("diffusion-cli");
  const fs::path captions = dir.path / "captions.h5", edits = dir.path / "edits.h5";
  const fs::path ae = dir.path / "ae", t2i = dir.path / "t2i", editor = dir.path / "edit";

  auto ae_losses = train(cli, "autoencoder-quick.json", ae,
                         {"train.steps=40", "data.path=\"" + captions.string() + "\"", "model.encoder_block_out_channels=[16,16,16]",
                          "model.decoder_block_out_channels=[16,16,16]", "optim.lr=0.003", "optim.schedule.warmup=2"});
  REQUIRE(ae_losses.size() == 4);
  INFO("autoencoder loss " << ae_losses.front() << " -> " << ae_losses.back());
  CHECK(ae_losses[2] + ae_losses[3] < ae_losses[0] + ae_losses[1]);
  auto ae_final = nlohmann::json::parse(std::ifstream(ae / "final.json"));
  CHECK(ae_final["metrics"].contains("eval/psnr"));

  std::vector<std::string> t2i_sets = kTinyDiffusion;
  for (std::string s : std::vector<std::string>{"train.steps=40", "model.autoencoder.from_run=\"" + ae.string() + "\"", "data.path=\"" + captions.string() + "\""})
    t2i_sets.push_back(s);
  auto t2i_losses = train(cli, "diffusion-quick.json", t2i, t2i_sets);
  REQUIRE(t2i_losses.size() == 4);
  INFO("diffusion loss " << t2i_losses.front() << " -> " << t2i_losses.back());
  CHECK(t2i_losses[2] + t2i_losses[3] < t2i_losses[0] + t2i_losses[1]);
  CHECK(fs::exists(t2i / "samples" / "samples_step_40.png"));
  // the run copied the autoencoder's options; its weights are a frozen network: recorded in the
  // resolved config (the autoencoder run's checkpoint and checksum), never saved in this run's checkpoints
  auto resolved = nlohmann::json::parse(std::ifstream(t2i / "config.json"));
  CHECK(resolved["model"]["autoencoder"]["options"]["encoder_block_out_channels"] == nlohmann::json({16, 16, 16}));
  CHECK(resolved["frozen"]["autoencoder"]["run"] == fs::absolute(ae).lexically_normal().string());
  CHECK(resolved["frozen"]["autoencoder"]["checkpoint"] == "step_40");
  CHECK(fs::exists(t2i / "ckpt" / "step_40" / "unet.safetensors"));
  CHECK(!fs::exists(t2i / "ckpt" / "step_40" / "autoencoder.safetensors"));

  // text -> images
  const fs::path samples = dir.path / "samples";
  auto r = cli("sample " + quote(t2i.string()) + " --prompt 'a red circle' --prompt 'two blue squares' --n 2 --steps 3 --sampler dpmpp_2m --out " +
               quote(samples.string()));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (int i = 0; i < 4; ++i) CHECK(ef::read_png(samples / ("sample_" + std::to_string(i) + ".png")).sizes() == torch::IntArrayRef({16, 16, 3}));
  CHECK(nlohmann::json::parse(std::ifstream(samples / "prompts.json")).size() == 4);

  // a colour classifier on the same captions scores the edits (eval/attr_acc)
  const fs::path colour = dir.path / "colour";
  nlohmann::json classify = {
      {"recipe", "classify"}, {"name", "colour"}, {"seed", 1}, {"device", "cpu"}, {"threads", 1},
      {"data", {{"kind", "captions"}, {"attribute", "colour"}, {"path", captions.string()},
                {"generate", {{"n_train", 64}, {"n_val", 8}, {"image_size", 16}, {"seed", 0}}}, {"batch_size", 16}, {"workers", 0}}},
      {"model", {{"image_size", 16}, {"patch", 4}, {"dim", 16}, {"depth", 1}, {"heads", 2}}},
      {"train", {{"steps", 8}, {"log_every", 4}, {"eval_every", 0}, {"ckpt_every", 0}, {"tensorboard", false}}},
      {"eval", {{"batches", 1}, {"batch_size", 8}, {"samples", 2}}}};
  ef::write_file_atomically(dir.path / "colour.json", classify.dump());
  r = cli("train " + quote((dir.path / "colour.json").string()) + " --run-dir " + quote(colour.string()) + " --quiet");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);

  // the editing model starts from the text-to-image run
  std::vector<std::string> edit_sets = kTinyDiffusion;
  for (std::string s : std::vector<std::string>{"train.steps=30", "model.init_from=\"" + t2i.string() + "\"", "data.path=\"" + edits.string() + "\"",
                                                "eval.attribute_classifier=\"" + colour.string() + "\""})
    edit_sets.push_back(s);
  auto edit_losses = train(cli, "edit-quick.json", editor, edit_sets);
  REQUIRE(edit_losses.size() == 3);
  INFO("edit loss " << edit_losses.front() << " -> " << edit_losses.back());
  CHECK(edit_losses[2] < edit_losses[0]);
  auto edit_final = nlohmann::json::parse(std::ifstream(editor / "final.json"));
  for (const char* k : {"eval/psnr", "eval/ssim", "eval/loss", "eval/attr_acc"}) CHECK(edit_final["metrics"].contains(k));
  const double attr_acc = edit_final["metrics"]["eval/attr_acc"].get<double>();
  CHECK((attr_acc >= 0 && attr_acc <= 1));

  // a folder of video frames -> one edited frame per input, named after it
  const fs::path frames = dir.path / "frames", out = dir.path / "edited";
  fs::create_directories(frames);
  for (int i = 0; i < 3; ++i)
    ef::write_png(frames / ("frame_" + std::to_string(i) + ".png"), torch::randint(0, 255, {16, 16, 3}, torch::kUInt8));
  r = cli("edit " + quote(editor.string()) + " --input " + quote(frames.string()) + " --instruction 'make the circles blue' --steps 2 --batch 2 --out " +
          quote(out.string()));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("\"fps\"") != std::string::npos);
  for (int i = 0; i < 3; ++i) CHECK(ef::read_png(out / ("frame_" + std::to_string(i) + ".png")).sizes() == torch::IntArrayRef({16, 16, 3}));

  // the wrong kind of run, and a diffusion run without an autoencoder, are refused by name
  r = cli("edit " + quote(t2i.string()) + " --input " + quote(frames.string()) + " --instruction x --out " + quote((dir.path / "x").string()));
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("needs a \"edit\" run"));
  r = cli("train " + quote((fs::path(ef::test::source_dir()) / "configs" / "diffusion-quick.json").string()) +
          sets({"model.autoencoder.from_run=\"\"", "data.path=\"" + captions.string() + "\"", "threads=1"}) + " --run-dir " +
          quote((dir.path / "no-ae").string()) + " --quiet");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("model.autoencoder.from_run"));
}
