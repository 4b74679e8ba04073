#pragma once
// One adapter file's LoRA tensors, by layer path, and the one place they are checked and copied
// into injected adapters. Every file layout (PEFT folders, diffusers' and kohya's single files:
// lora/peft.h, lora/diffusers_files.h) parses its keys into this form, so the checks and their
// messages are the same whatever the layout.
#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>

#include "lora/inject.h"
#include "lora/lora.h"

namespace ef::lora {

struct LoraLayerTensors {
  std::string a_key, b_key;  // the file's own key names, for messages
  torch::Tensor A;           // [r, d_in] or [r, d_in, kh, kw]
  torch::Tensor B;           // [d_out, r] or [d_out, r, 1, 1]
  // The scale s the file states for this layer (kohya's `.alpha`, diffusers' adapter metadata),
  // with where it comes from; unset when the file states none (then the adapters' own is kept).
  std::optional<double> scaling;
  std::string scaling_source;
  int64_t rank() const { return A.size(0); }
};
using LoraLayers = std::map<std::string, LoraLayerTensors>;  // by layer path

// "[4, 16, 3, 3]"
std::string shape_string(torch::IntArrayRef sizes);

// The LoRA adapter of an adapted layer; ef::InputError when it is another kind (`layout` names the
// file layout in the message: "PEFT", "diffusers").
LoraImpl& lora_of(const AdaptedLayer& layer, const std::string& layout);

// ef::InputError naming `file` and both keys when A and B do not make a rank-r pair
// (A [r, ...], B [d_out, r, ...]).
void check_pair(const LoraLayerTensors& t, const std::string& file);

// Checks every layer of `adapters` against `layers` (each has both tensors, with the adapter's
// shapes and, when the file states one, its scale) and every entry of `layers` against an adapter,
// then copies and refresh()es. Nothing is copied unless everything checks; ef::InputError naming
// `file`, the key and both shapes (or both scales).
void load_lora_layers(AdaptersImpl& adapters, const LoraLayers& layers, const std::string& file, const std::string& layout);
// The checks of load_lora_layers alone (to check several networks' adapters before loading any).
void check_lora_layers(AdaptersImpl& adapters, const LoraLayers& layers, const std::string& file, const std::string& layout);

}  // namespace ef::lora
