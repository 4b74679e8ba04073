// `edgeforge sample` (text -> images) and `edgeforge edit` (image or a folder of frames +
// instruction -> edited frames) with a diffusion or edit run's model.
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/image_io.h"
#include "core/run.h"
#include "models/diffusion/latent_diffusion.h"

namespace ef::cli {
namespace {

namespace fs = std::filesystem;

struct DiffusionArgs {
  std::string run_dir, ckpt, out, sampler = "ddim";
  int64_t steps = 20;
  uint64_t seed = 0;
  bool no_ema = false;
};

void add_common(CLI::App* cmd, DiffusionArgs& a, const std::string& default_sampler) {
  a.sampler = default_sampler;
  cmd->add_option("run_dir", a.run_dir, "run folder (or runs/<name>/ for its newest run)")->required();
  cmd->add_option("--out", a.out, "output folder")->required();
  cmd->add_option("--steps", a.steps, "sampling steps")->check(CLI::Range(1, 1000));
  cmd->add_option("--sampler", a.sampler, "ddpm, ddim, euler, euler_ancestral or dpmpp_2m")
      ->check(CLI::IsMember({"ddpm", "ddim", "euler", "euler_ancestral", "dpmpp_2m"}));
  cmd->add_option("--seed", a.seed, "noise seed");
  cmd->add_option("--ckpt", a.ckpt, "checkpoint folder (default: the run's latest)")->check(CLI::ExistingDirectory);
  cmd->add_flag("--no-ema", a.no_ema, "use the raw weights even when EMA weights exist");
}

// The run's recipe, which must hold a LatentDiffusion conditioned (or not) on images.
LatentDiffusion& open_model(const DiffusionArgs& a, OpenedRun& run, bool want_image_conditioned) {
  fs::path dir = resolve_run_folder(a.run_dir, "run_dir");
  run = open_run(dir, {}, a.ckpt, !a.no_ema);
  auto* owner = dynamic_cast<HasLatentDiffusion*>(run.recipe.get());
  if (owner == nullptr || owner->diffusion().image_conditioned() != want_image_conditioned)
    throw ConfigError(dir.string() + " is a \"" + run.config.root().value("recipe", "?") + "\" run; this command needs a \"" +
                      (want_image_conditioned ? "edit" : "diffusion") + "\" run");
  return owner->diffusion();
}

SamplerOptions sampler_options(const DiffusionArgs& a) {
  SamplerOptions o;
  o.kind = a.sampler;
  o.steps = a.steps;
  return o;
}

// uint8 [H,W,C] (C = 1..4) -> float [3,H,W] in [-1,1]
torch::Tensor to_model_image(const torch::Tensor& hwc) {
  torch::Tensor x = hwc.to(torch::kFloat32).div(255).permute({2, 0, 1});
  if (x.size(0) == 1 || x.size(0) == 2) x = x.narrow(0, 0, 1).expand({3, x.size(1), x.size(2)});
  return x.narrow(0, 0, 3).mul(2).sub(1).contiguous();
}

std::vector<fs::path> input_frames(const fs::path& input) {
  if (fs::is_regular_file(input)) return {input};
  if (!fs::is_directory(input)) throw ConfigError("--input: " + input.string() + " does not exist");
  std::vector<fs::path> frames;
  for (const auto& e : fs::directory_iterator(input)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) frames.push_back(e.path());
  }
  std::sort(frames.begin(), frames.end());
  if (frames.empty()) throw ConfigError("--input: " + input.string() + " holds no .png or .jpg frames");
  return frames;
}

}  // namespace

void add_sample_and_edit(CLI::App& app, Action& action) {
  {
    auto* cmd = app.add_subcommand("sample", "Generate images from text prompts with a diffusion run's model");
    auto a = std::make_shared<DiffusionArgs>();
    auto prompts = std::make_shared<std::vector<std::string>>();
    auto per_prompt = std::make_shared<int64_t>(1);
    auto size = std::make_shared<int64_t>(0);
    auto guidance = std::make_shared<double>(3.0);
    add_common(cmd, *a, "ddim");
    cmd->add_option("--prompt", *prompts, "a text prompt (repeatable)")->required();
    cmd->add_option("--n", *per_prompt, "images per prompt")->check(CLI::Range(1, 1024));
    cmd->add_option("--size", *size, "image size in pixels (default: the run's training images)");
    cmd->add_option("--guidance", *guidance, "classifier-free guidance scale (1: none)");
    cmd->callback([=, &action] {
      action = [=] {
        OpenedRun run;
        LatentDiffusion& model = open_model(*a, run, false);
        int64_t s = *size;
        if (s == 0) s = run.config.root()["data"].value("generate", nlohmann::json::object()).value("image_size", int64_t{32});
        std::vector<std::string> all;
        for (const auto& p : *prompts)
          for (int64_t i = 0; i < *per_prompt; ++i) all.push_back(p);
        auto t0 = std::chrono::steady_clock::now();
        torch::Tensor images = model.generate(all, s, sampler_options(*a), *guidance, a->seed).to(torch::kCPU);
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        fs::create_directories(a->out);
        nlohmann::json listing = nlohmann::json::array();
        for (int64_t i = 0; i < images.size(0); ++i) {
          std::string name = "sample_" + std::to_string(i) + ".png";
          write_png(fs::path(a->out) / name, to_uint8_hwc((images[i] + 1) / 2));
          listing.push_back({{"file", name}, {"prompt", all[static_cast<size_t>(i)]}});
        }
        write_file_atomically(fs::path(a->out) / "prompts.json", listing.dump(1));
        std::cout << nlohmann::json({{"images", images.size(0)}, {"seconds", seconds}, {"out", a->out}}).dump() << "\n";
        return kOk;
      };
    });
  }
  {
    auto* cmd = app.add_subcommand("edit", "Edit an image or a folder of video frames by an instruction with an edit run's model");
    auto a = std::make_shared<DiffusionArgs>();
    auto input = std::make_shared<std::string>();
    auto instruction = std::make_shared<std::string>();
    auto guidance = std::make_shared<EditGuidance>();
    auto batch = std::make_shared<int64_t>(1);
    add_common(cmd, *a, "euler_ancestral");
    a->steps = 10;
    cmd->add_option("--input", *input, "an image (PNG/JPEG) or a folder of frames, edited in name order")->required();
    cmd->add_option("--instruction", *instruction, "the edit, e.g. \"make the circles blue\"")->required();
    cmd->add_option("--image-guidance", guidance->image, "image guidance scale s_I (larger: closer to the input)");
    cmd->add_option("--text-guidance", guidance->text, "text guidance scale s_T");
    cmd->add_option("--batch", *batch, "frames per network call")->check(CLI::Range(1, 1024));
    cmd->callback([=, &action] {
      action = [=] {
        std::vector<fs::path> frames = input_frames(*input);
        OpenedRun run;
        LatentDiffusion& model = open_model(*a, run, true);
        fs::create_directories(a->out);
        double seconds = 0;
        for (size_t begin = 0; begin < frames.size(); begin += static_cast<size_t>(*batch)) {
          std::vector<torch::Tensor> images;
          const size_t end = std::min(frames.size(), begin + static_cast<size_t>(*batch));
          for (size_t i = begin; i < end; ++i) {
            torch::Tensor img = to_model_image(read_image(frames[i]));
            if (!images.empty() && img.sizes() != images.front().sizes())
              throw ConfigError("--input: " + frames[i].string() + " differs in size from " + frames[begin].string());
            images.push_back(img);
          }
          auto t0 = std::chrono::steady_clock::now();
          torch::Tensor edited = model.edit(torch::stack(images).to(model.device()), {*instruction}, sampler_options(*a), *guidance, a->seed).to(torch::kCPU);
          seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          for (size_t i = begin; i < end; ++i)
            write_png(fs::path(a->out) / (frames[i].stem().string() + ".png"), to_uint8_hwc((edited[static_cast<int64_t>(i - begin)] + 1) / 2));
        }
        const double fps = static_cast<double>(frames.size()) / std::max(seconds, 1e-9);
        spdlog::info("edited {} frames in {:.2f} s: {:.2f} frames per second", frames.size(), seconds, fps);
        std::cout << nlohmann::json({{"frames", frames.size()}, {"seconds", seconds}, {"fps", fps}, {"out", a->out}}).dump() << "\n";
        return kOk;
      };
    });
  }
}

}  // namespace ef::cli
