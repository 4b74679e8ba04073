#pragma once
// Frozen networks (Recipe::frozen()): resolving their sources, loading them, and recording what was
// loaded in the run's resolved config, so that a resumed, evaluated or exported run uses the very
// weights it was trained against even after the source run trained on or a newer run appeared.
//
// The record, under the config's root key "frozen" (written by the launcher, not by users):
//   "frozen": {"<name>": {"run": "<absolute run folder>", "checkpoint": "step_<N>", "module": "<name there>",
//                         "crc32c": "<hex of the weight file>"}}     a network from another run
//             {"<name>": {"file": "<absolute path>", "crc32c": "<hex>"}}  a network from a file
// A run whose own checkpoint does not hold the network (it was frozen there too) is followed to the
// source that run recorded.
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "core/config.h"
#include "core/recipe.h"

namespace ef {

// Loads every network of recipe.frozen() on `device`, frozen. Uses root's "frozen" record when it
// holds one for a name (a resume, eval, export), else resolves the declared source and writes the
// record into root. Throws InputError naming the network and the source when a file is missing,
// unreadable, or its checksum differs from the record.
void load_frozen_networks(Recipe& recipe, const Config& root, torch::Device device);

// The weight file of network `module` of the run `run_dir` (a run folder or runs/<name>/): its latest
// checkpoint's <module>.safetensors (<module>.ema.safetensors when present and prefer_ema), else the
// file its config records for a frozen network of that name. Throws InputError naming what is missing.
std::filesystem::path network_file_of_run(const std::filesystem::path& run_dir, const std::string& module, bool prefer_ema);

}  // namespace ef
