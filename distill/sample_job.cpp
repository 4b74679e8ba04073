#include "distill/sample_job.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "core/atomic_file.h"
#include "core/image_io.h"
#include "core/run.h"
#include "lora/adapter_run.h"

namespace ef {
namespace {

namespace fs = std::filesystem;

// The run's recipe, which must hold a LatentDiffusion conditioned (or not) on images.
LatentDiffusion& open_model(const DiffusionRunJob& job, OpenedRun& run, bool want_image_conditioned) {
  fs::path dir = resolve_run_folder(job.run_dir, "run_dir");
  run = open_run(dir, {}, job.ckpt, !job.no_ema);
  auto* owner = dynamic_cast<HasLatentDiffusion*>(run.recipe.get());
  if (owner == nullptr || owner->diffusion().image_conditioned() != want_image_conditioned)
    throw InputError(dir.string() + " is a \"" + run.config.root().value("recipe", "?") + "\" run; this command needs a \"" +
                     (want_image_conditioned ? "edit" : "diffusion") + "\" run");
  return owner->diffusion();
}

SamplerOptions sampler_options(const DiffusionRunJob& job) {
  Config c = Config::from_json({{"kind", job.sampler}, {"steps", job.steps}}, "--sampler/--steps");
  return SamplerOptions::from(c);  // checks the kind against the sampler registry
}

// uint8 [H,W,C] (C = 1..4) -> float [3,H,W] in [-1,1]
torch::Tensor to_model_image(const torch::Tensor& hwc) {
  torch::Tensor x = hwc.to(torch::kFloat32).div(255).permute({2, 0, 1});
  if (x.size(0) == 1 || x.size(0) == 2) x = x.narrow(0, 0, 1).expand({3, x.size(1), x.size(2)});
  return x.narrow(0, 0, 3).mul(2).sub(1).contiguous();
}

std::vector<fs::path> input_frames(const fs::path& input) {
  if (fs::is_regular_file(input)) return {input};
  if (!fs::is_directory(input)) throw InputError("--input: " + input.string() + " does not exist");
  std::vector<fs::path> frames;
  for (const auto& e : fs::directory_iterator(input)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) frames.push_back(e.path());
  }
  std::sort(frames.begin(), frames.end());
  if (frames.empty()) throw InputError("--input: " + input.string() + " holds no .png or .jpg frames");
  return frames;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

GenerationReport run_sample_job(const SampleJob& job) {
  const SamplerOptions sampler = sampler_options(job);
  OpenedRun run;
  LatentDiffusion& model = open_model(job, run, false);
  std::vector<lora::Adapters> attached;
  for (const auto& a : job.adapters)
    for (auto& set : lora::attach_adapter_run(model, lora::AdapterRunSpec::parse(a), resolve_run_folder(job.run_dir, "run_dir"))) attached.push_back(set);
  int64_t size = job.image_size;
  if (size == 0) size = run.config.root()["data"].value("generate", nlohmann::json::object()).value("image_size", int64_t{32});
  std::vector<std::string> all;
  for (const auto& p : job.prompts)
    for (int64_t i = 0; i < job.per_prompt; ++i) all.push_back(p);
  auto t0 = std::chrono::steady_clock::now();
  torch::Tensor images = model.generate(all, size, sampler, job.guidance, job.seed).to(torch::kCPU);
  GenerationReport r{images.size(0), seconds_since(t0), job.out};
  fs::create_directories(job.out);
  nlohmann::json listing = nlohmann::json::array();
  for (int64_t i = 0; i < images.size(0); ++i) {
    std::string name = "sample_" + std::to_string(i) + ".png";
    write_png(job.out / name, to_uint8_hwc((images[i] + 1) / 2));
    listing.push_back({{"file", name}, {"prompt", all[static_cast<size_t>(i)]}});
  }
  write_file_atomically(job.out / "prompts.json", listing.dump(1));
  return r;
}

GenerationReport run_edit_job(const EditJob& job) {
  const SamplerOptions sampler = sampler_options(job);
  std::vector<fs::path> frames = input_frames(job.input);
  OpenedRun run;
  LatentDiffusion& model = open_model(job, run, true);
  fs::create_directories(job.out);
  GenerationReport r{static_cast<int64_t>(frames.size()), 0.0, job.out};
  const size_t batch = static_cast<size_t>(std::max<int64_t>(job.batch, 1));
  for (size_t begin = 0; begin < frames.size(); begin += batch) {
    std::vector<torch::Tensor> images;
    const size_t end = std::min(frames.size(), begin + batch);
    for (size_t i = begin; i < end; ++i) {
      torch::Tensor img = to_model_image(read_image(frames[i]));
      if (!images.empty() && img.sizes() != images.front().sizes())
        throw InputError("--input: " + frames[i].string() + " differs in size from " + frames[begin].string());
      images.push_back(img);
    }
    auto t0 = std::chrono::steady_clock::now();
    torch::Tensor edited = model.edit(torch::stack(images).to(model.device()), {job.instruction}, sampler, job.guidance, job.seed).to(torch::kCPU);
    r.seconds += seconds_since(t0);
    for (size_t i = begin; i < end; ++i)
      write_png(job.out / (frames[i].stem().string() + ".png"), to_uint8_hwc((edited[static_cast<int64_t>(i - begin)] + 1) / 2));
  }
  spdlog::info("edited {} frames in {:.2f} s: {:.2f} frames per second", frames.size(), r.seconds,
               static_cast<double>(frames.size()) / std::max(r.seconds, 1e-9));
  return r;
}

}  // namespace ef
