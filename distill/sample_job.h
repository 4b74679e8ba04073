#pragma once
// `edgeforge sample` (text -> images) and `edgeforge edit` (an image or a folder of video frames +
// an instruction -> edited frames) with a diffusion or edit run's model. The CLI only parses into
// these jobs (cli/cmd_diffusion.cpp).
#include <filesystem>
#include <string>
#include <vector>

#include "models/diffusion/latent_diffusion.h"

namespace ef {

// What both jobs share: the run and how to sample.
struct DiffusionRunJob {
  std::filesystem::path run_dir;  // a run folder, or runs/<name>/ for its newest run
  std::filesystem::path ckpt;     // default: the run's latest checkpoint
  std::filesystem::path out;      // output folder
  std::string sampler = "ddim";   // a registered sampler kind
  int64_t steps = 20;
  uint64_t seed = 0;
  bool no_ema = false;            // the raw weights even when EMA weights exist
};

struct SampleJob : DiffusionRunJob {
  std::vector<std::string> prompts;
  int64_t per_prompt = 1;
  int64_t image_size = 0;  // 0: the run's training images
  double guidance = 3.0;   // classifier-free guidance scale (1: none)
  // Adapter runs to attach, "RUN" or "RUN:STRENGTH" (lora/adapter_run.h); several compose at the
  // output, each at its strength.
  std::vector<std::string> adapters;
};

struct EditJob : DiffusionRunJob {
  EditJob() { sampler = "euler_ancestral", steps = 10; }
  std::filesystem::path input;  // an image (PNG/JPEG) or a folder of frames, edited in name order
  std::string instruction;
  EditGuidance guidance;
  int64_t batch = 1;  // frames per network call
};

struct GenerationReport {
  int64_t images = 0;  // images written (frames, for edit)
  double seconds = 0;  // sampling time, model loading excluded
  std::filesystem::path out;
};

// Writes sample_<i>.png and prompts.json (file -> prompt) into job.out.
GenerationReport run_sample_job(const SampleJob& job);
// Writes <frame stem>.png per input frame into job.out.
GenerationReport run_edit_job(const EditJob& job);

}  // namespace ef
