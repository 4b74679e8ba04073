#pragma once
// The adapters a finished run trained (the `style` and `personalize` recipes: checkpoints hold `unet_adapter` and, with
// adapter.text_targets, `text_encoder_adapter`), attached to a fresh copy of their base model at a
// strength, for `edgeforge sample BASE --adapter RUN[:STRENGTH] ...`. Several runs attach to the same
// layers and compose at the output (FouRA brief §2.4: y = W0 x + Σ_i branch_i(x) with strength s_i).
#include <filesystem>
#include <string>
#include <vector>

#include "lora/inject.h"
#include "models/diffusion/latent_diffusion.h"

namespace ef::lora {

struct AdapterRunSpec {
  std::filesystem::path run;  // a run folder, or runs/<name>/ for its newest run
  double strength = 1.0;
  // "runs/style-a" or "runs/style-a:0.8" (the text after the last ':' when it is a number).
  // InputError for a strength that is not a finite number in [0, 4].
  static AdapterRunSpec parse(const std::string& text);
};

// Injects the run's adapters (its resolved config's adapter block: kind, options, targets) into
// model.unet (and model.text), loads their weights from the run's latest checkpoint (EMA weights
// when kept) and sets the strength. `base_run`: the run `model` came from; a run adapted from
// another base loads only if every shape agrees, with a warning naming both. Returns the attached
// sets (they stay attached while alive). InputError for a run without adapters.
std::vector<Adapters> attach_adapter_run(LatentDiffusion& model, const AdapterRunSpec& spec, const std::filesystem::path& base_run);

}  // namespace ef::lora
