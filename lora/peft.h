#pragma once
// PEFT's LoRA file layout (huggingface/peft, `save_pretrained`): a folder holding
//   adapter_config.json          {"peft_type": "LORA", "r", "lora_alpha", "use_rslora",
//                                 "lora_dropout", "target_modules", "rank_pattern", "alpha_pattern", ...}
//   adapter_model.safetensors    base_model.model.<path>.lora_A.weight / .lora_B.weight
// <path> is the layer's dotted module path in the base network; target_modules lists the full
// paths, which PEFT matches exactly. Only the `lora` kind has this layout (FouRA's tensors have no
// PEFT counterpart). Diffusers' and kohya's single files are in lora/diffusers_files.h; they share
// the LoraConfig dictionary below (diffusers stores it in the file's metadata) and the checks of
// lora/lora_state.h.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lora/inject.h"
#include "lora/lora.h"

namespace ef::lora {

inline const char* const kPeftConfigFile = "adapter_config.json";
inline const char* const kPeftWeightsFile = "adapter_model.safetensors";
inline const char* const kPeftPrefix = "base_model.model.";

// PEFT's LoraConfig dictionary for `adapters` (what adapter_config.json holds): r and lora_alpha of
// the first layer, rank_pattern / alpha_pattern for the layers that differ (keyed by full path),
// target_modules as full paths. ef::InputError when an adapter is not a `lora` one or the layers
// disagree on use_rslora (PEFT has one). `what` names the caller in messages.
nlohmann::json peft_lora_config(const AdaptersImpl& adapters, const std::string& what);

// The LoRA options a LoraConfig dictionary gives the layer at `path`, as PEFT resolves them: rank
// from the first rank_pattern key that matches the path, else r (default 8); alpha likewise from
// alpha_pattern, else lora_alpha (default 8, PEFT's); use_rslora; dropout 0 (lora_dropout is a
// training option that injection cannot apply, lora/inject.h). A pattern key K matches when the
// regular expression `(.*\.)?(K)` matches the whole path (PEFT's get_pattern_key); an empty path
// gives the options without patterns. ef::InputError naming `source` for a malformed dictionary.
LoraOptions peft_layer_options(const nlohmann::json& config, const std::string& path, const std::string& source);

// Writes the folder (created when missing; each file atomically). Throws ef::InputError when an
// adapter is not a `lora` one. Layers whose rank or alpha differ from the first one's are written
// to rank_pattern / alpha_pattern, as PEFT does.
void save_peft(const AdaptersImpl& adapters, const std::filesystem::path& dir);

// Copies the folder's tensors into `adapters` (then refresh()es them). ef::InputError, naming the
// file and the key: a missing key, a key with no adapter here, or a shape that differs (both
// shapes in the message).
void load_peft(AdaptersImpl& adapters, const std::filesystem::path& dir);

// What a PEFT folder describes, to build the adapters before loading: the `adapter` section
// ({"kind": "lora", "rank", "alpha", "rslora", "dropout": 0} from peft_layer_options without a path)
// and the adapted layer paths (from the weight file's keys). rank_pattern and alpha_pattern are not
// applied here: a file using them loads only if its shapes agree.
struct PeftFolder {
  nlohmann::json adapter;
  std::vector<std::string> paths;
  static PeftFolder read(const std::filesystem::path& dir);
};

}  // namespace ef::lora
