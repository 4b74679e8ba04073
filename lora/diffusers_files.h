#pragma once
// A text-to-image pipeline's LoRA in one safetensors file, as diffusers and kohya's sd-scripts
// (and the A1111/ComfyUI tools that read its files) store it. One file holds the adapters of
// several networks, told apart by a key prefix:
//
//   diffusers (what `save_lora_weights` writes today; read and written here)
//     unet.<module path>.lora_A.weight   [r, d_in(, kh, kw)]      text_encoder.<path>.lora_A.weight
//     unet.<module path>.lora_B.weight   [d_out, r(, 1, 1)]       text_encoder.<path>.lora_B.weight
//     __metadata__["lora_adapter_metadata"]: JSON {"unet.r": 4, "unet.lora_alpha": 8,
//       "unet.rank_pattern": {...}, "unet.alpha_pattern": {...}, "unet.use_rslora": false, ...}:
//       each network's PEFT LoraConfig with its keys prefixed by the network's name.
//   older diffusers keys (read)
//     unet.<path>.lora.down.weight / .lora.up.weight
//     unet.<attention>.processor.to_q_lora.down.weight / .up.weight   (attention processors;
//       to_k, to_v, to_out -> <attention>.to_out.0; text encoders: q_proj ... out_proj)
//     text_encoder.<path>.lora_linear_layer.down.weight / .up.weight
//     <network>.<path>.alpha   (a scalar: diffusers' `network_alphas` naming)
//   kohya / A1111 (read and written)
//     lora_unet_<path with '.' -> '_'>.lora_down.weight / .lora_up.weight / .alpha
//     lora_te_ (or lora_te1_) for the text encoder, lora_te2_ for a second one (SDXL)
//
// The module paths are those of the project's networks, which have diffusers' names
// (models/diffusion/unet.h: UNet2DConditionModel; models/text/text_encoder.h: CLIPTextModel).
// kohya's names lose the dots, so they are mapped back by matching against the network's
// Linear/Conv2d paths (ef::lora::adaptable_paths) with their dots made underscores. kohya's SDXL
// files name the UNet's layers in the original Stability code's terms (input_blocks...); those are
// not mapped (an unmatched key, refused).
//
// Alpha (the scale s = alpha / r of each layer, alpha / sqrt(r) with rsLoRA):
//   - kohya: the layer's `.alpha` tensor; a layer without one has alpha = r (s = 1), kohya's rule.
//   - diffusers with adapter metadata: the LoraConfig in it, resolved per layer as PEFT does
//     (alpha_pattern, then lora_alpha; use_rslora), which is exactly what diffusers' loader passes
//     to PEFT. Files written here carry it.
//   - diffusers without metadata (files from older diffusers versions, and most on model hubs):
//     alpha = r for every layer (s = 1), which is what diffusers' loader does when a file states no
//     alpha (get_peft_kwargs: lora_alpha = r, alpha_pattern mirroring rank_pattern), unless the
//     file has `<network>.<path>.alpha` tensors, which then give it.
//   A file that states an alpha is loaded into existing adapters only when their scale agrees
//   (within 1e-3, relative): tensors trained at another scale would change the layer silently.
//   Writing kohya's layout with rsLoRA stores alpha * sqrt(r) so that alpha' / r is the same scale.
//
// Only LoRA: FouRA, LoHa, LoKr, DoRA magnitudes and LoRA biases have no keys here, and a file with
// them is refused naming the key (FouRA's tensors save through the Adapters module's own names,
// lora/foura.h). Every check (unknown or unmatched key, a missing A or B, A and B of different
// ranks, a shape that does not fit the layer or the adapter) runs before anything is copied, and
// fails with ef::InputError naming the file, the key and both shapes.
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lora/inject.h"
#include "lora/lora.h"
#include "lora/lora_state.h"

namespace ef::lora {

// The networks of a pipeline by their name in the file ("unet", "text_encoder", "text_encoder_2").
using Networks = std::map<std::string, std::reference_wrapper<torch::nn::Module>>;
// Their adapters, by the same names.
using NetworkAdapters = std::map<std::string, Adapters>;

inline const char* const kDiffusersLoraFile = "pytorch_lora_weights.safetensors";  // diffusers' file name
inline const char* const kDiffusersLoraMetadata = "lora_adapter_metadata";         // its __metadata__ key

enum class LoraFileLayout { diffusers, kohya };

// Writes one file (atomically) holding the adapters of every network. diffusers: keys
// "<network>.<path>.lora_A/B.weight" and the adapter metadata. kohya: the network names unet,
// text_encoder and text_encoder_2 become lora_unet_, lora_te_ and lora_te2_ (others are refused),
// with one `.alpha` per layer. ef::InputError for a non-LoRA adapter, for a network name with a
// dot, and (kohya) for two paths that read the same once their dots are underscores.
void save_lora_file(const std::filesystem::path& file, const NetworkAdapters& adapters,
                    LoraFileLayout layout = LoraFileLayout::diffusers);

// One adapted layer as a file describes it: its path and the options to inject it with (rank from
// the tensors, alpha and rslora as described above, dropout 0).
struct LoraFileLayer {
  std::string path;
  LoraOptions options;
};

// A file read against the networks it adapts: every key parsed, mapped to a layer and checked
// against that layer's shape. Then either inject() builds matching adapters and load() fills them,
// or load() fills adapters the caller injected (their paths and shapes must be the file's).
struct LoraFile {
  std::string file;
  std::string layout;  // "diffusers", "diffusers (older keys)", "kohya", or several joined by " + "
  std::map<std::string, std::vector<LoraFileLayer>> layers;  // per network, in the network's module order
  std::map<std::string, LoraLayers> tensors;                 // per network, by layer path

  static LoraFile read(const std::filesystem::path& file, const Networks& networks);

  std::vector<std::string> paths(const std::string& network) const;
  // Injects LoRA adapters on every layer of the file (inject() once per distinct rank/alpha, the
  // layers then gathered in one Adapters module per network) and loads the tensors.
  NetworkAdapters inject(const Networks& networks) const;
  // Copies the tensors into `adapters` (every network of the file must be there, and every
  // adapter must have its tensors); nothing is copied unless every network checks.
  void load(const NetworkAdapters& adapters) const;
};

// LoraFile::read(file, networks).inject(networks).
NetworkAdapters load_lora_file(const std::filesystem::path& file, const Networks& networks);

}  // namespace ef::lora
