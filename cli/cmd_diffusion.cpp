// `edgeforge sample` and `edgeforge edit`: parse into the distill/ jobs.
#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/commands.h"
#include "distill/sample_job.h"

namespace ef::cli {
namespace {

void add_common(CLI::App* cmd, DiffusionRunJob& job) {
  cmd->add_option("run_dir", job.run_dir, "run folder (or runs/<name>/ for its newest run)")->required();
  cmd->add_option("--out", job.out, "output folder")->required();
  cmd->add_option("--steps", job.steps, "sampling steps")->check(CLI::Range(1, 1000));
  std::string kinds;
  for (const auto& k : sampler_kinds()) kinds += (kinds.empty() ? "" : ", ") + k;
  cmd->add_option("--sampler", job.sampler, "sampler kind: " + kinds + " (unknown kinds exit 2)");
  cmd->add_option("--seed", job.seed, "noise seed");
  cmd->add_option("--ckpt", job.ckpt, "checkpoint folder (default: the run's latest)")->check(CLI::ExistingDirectory);
  cmd->add_flag("--no-ema", job.no_ema, "use the raw weights even when EMA weights exist");
}

void print(const GenerationReport& r, const char* count_name) {
  nlohmann::json out = {{count_name, r.images}, {"seconds", r.seconds}, {"out", r.out.string()}};
  if (std::string(count_name) == "frames") out["fps"] = static_cast<double>(r.images) / std::max(r.seconds, 1e-9);
  std::cout << out.dump() << "\n";
}

}  // namespace

void add_sample_and_edit(CLI::App& app, Action& action) {
  {
    auto* cmd = app.add_subcommand("sample", "Generate images from text prompts with a diffusion run's model");
    auto job = std::make_shared<SampleJob>();
    add_common(cmd, *job);
    cmd->add_option("--prompt", job->prompts, "a text prompt (repeatable)")->required();
    cmd->add_option("--n", job->per_prompt, "images per prompt")->check(CLI::Range(1, 1024));
    cmd->add_option("--size", job->image_size, "image size in pixels (default: the run's training images)");
    cmd->add_option("--guidance", job->guidance, "classifier-free guidance scale (1: none)");
    cmd->add_option("--adapter", job->adapters,
                    "an adapter run to attach, RUN or RUN:STRENGTH (repeatable: adapters compose at the output, each at its strength)");
    cmd->callback([job, &action] {
      action = [job] {
        print(run_sample_job(*job), "images");
        return kOk;
      };
    });
  }
  {
    auto* cmd = app.add_subcommand("edit", "Edit an image or a folder of video frames by an instruction with an edit run's model");
    auto job = std::make_shared<EditJob>();
    add_common(cmd, *job);
    cmd->add_option("--input", job->input, "an image (PNG/JPEG) or a folder of frames, edited in name order")->required();
    cmd->add_option("--instruction", job->instruction, "the edit, e.g. \"make the circles blue\"")->required();
    cmd->add_option("--image-guidance", job->guidance.image, "image guidance scale s_I (larger: closer to the input)");
    cmd->add_option("--text-guidance", job->guidance.text, "text guidance scale s_T");
    cmd->add_option("--batch", job->batch, "frames per network call")->check(CLI::Range(1, 1024));
    cmd->callback([job, &action] {
      action = [job] {
        print(run_edit_job(*job), "frames");
        return kOk;
      };
    });
  }
}

}  // namespace ef::cli
