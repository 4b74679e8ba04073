#pragma once
// PEFT's LoRA file layout (huggingface/peft, `save_pretrained`): a folder holding
//   adapter_config.json          {"peft_type": "LORA", "r", "lora_alpha", "use_rslora",
//                                 "lora_dropout", "target_modules", "rank_pattern", "alpha_pattern", ...}
//   adapter_model.safetensors    base_model.model.<path>.lora_A.weight / .lora_B.weight
// <path> is the layer's dotted module path in the base network; target_modules lists the full
// paths, which PEFT matches exactly. Only the `lora` kind has this layout (FouRA's tensors have no
// PEFT counterpart). Diffusers' prefixed files ("unet.", kohya's "lora_unet_") are not read yet.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lora/inject.h"

namespace ef::lora {

inline const char* const kPeftConfigFile = "adapter_config.json";
inline const char* const kPeftWeightsFile = "adapter_model.safetensors";
inline const char* const kPeftPrefix = "base_model.model.";

// Writes the folder (created when missing; each file atomically). Throws ef::InputError when an
// adapter is not a `lora` one. Layers whose rank or alpha differ from the first one's are written
// to rank_pattern / alpha_pattern, as PEFT does.
void save_peft(const AdaptersImpl& adapters, const std::filesystem::path& dir);

// Copies the folder's tensors into `adapters` (then refresh()es them). ef::InputError, naming the
// file and the key: a missing key, a key with no adapter here, or a shape that differs (both
// shapes in the message).
void load_peft(AdaptersImpl& adapters, const std::filesystem::path& dir);

// What a PEFT folder describes, to build the adapters before loading: the `adapter` section
// ({"kind": "lora", "rank", "alpha", "rslora"} from r, lora_alpha, use_rslora; dropout 0 whatever
// lora_dropout says, a training option injection cannot apply) and the adapted layer paths (from
// the weight file's keys). rank_pattern and
// alpha_pattern are not applied: a file using them loads only if its shapes agree.
struct PeftFolder {
  nlohmann::json adapter;
  std::vector<std::string> paths;
  static PeftFolder read(const std::filesystem::path& dir);
};

}  // namespace ef::lora
