#pragma once
// "styles": a small styled image set for adapter fine-tuning (FouRA brief §5.2), generated from
// the captions scenes (tasks/caption_data.h) by one of four deterministic filters:
//   bluefire   luminance remapped to a blue-white flame palette, with wavy vertical flame bands;
//   origami    triangular facets (each the mean colour of its triangle, lit by its fold) and
//              posterised colours;
//   paintings  brush strokes (each 4x4 block smeared along its own direction) and boosted saturation;
//   3d         embossed relief (the luminance's diagonal derivative as light) over the colours.
// Few content classes (the scene's `shape`, data.generate.classes) provoke copying; held-out
// classes (unseen_classes) test generalisation. Captions are the scenes' own ("two small red
// circles at the top left on stripes"): the style is what the adapter adds, not a word.
//
// Splits: train and val (styled scenes of `classes`), unseen (styled scenes of `unseen_classes`).
// Each holds images (styled) and plain (the same scenes unfiltered): the pairs are what the style
// classifier of the style recipe learns to tell apart. Layout, N per split:
//   <split>/images, <split>/plain uint8 [N,H,W,3], <split>/text uint8 [N,T], <split>/attr/<name> int64 [N]
// Root attributes as every scene file (schema_version, generator "styles", params, attributes).
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "tasks/caption_data.h"

namespace ef::lora {

// The filter names, in a fixed order (a style's label is its index).
const std::vector<std::string>& style_names();

// Applies `style` to an image float [3, H, W] in [0, 1]; `seed` draws what the style leaves open
// (flame phase, stroke directions). Deterministic; throws std::invalid_argument for an unknown style.
torch::Tensor apply_style(const torch::Tensor& image, const std::string& style, uint64_t seed);

struct StyleDataParams {
  std::string style = "bluefire";
  SceneDataParams scenes;                                  // n_train, n_val, image_size, seed, vocab, max_text_bytes
  int64_t n_unseen = 16;                                   // samples of the held-out classes
  std::vector<std::string> classes{"circle", "square"};    // shapes of train and val
  std::vector<std::string> unseen_classes{"triangle"};     // shapes of the unseen split
  static StyleDataParams from(const Config& generate);     // ConfigError for unknown styles/classes, overlaps
  nlohmann::json to_json() const;
};

void generate_styles(const StyleDataParams& p, const std::filesystem::path& path);

// sample: "image" (styled) and "plain" float [3,H,W] in [-1,1], "text" uint8 [T], "attr_<name>".
class StyleDataset : public SceneTextDataset {
 public:
  StyleDataset(const std::filesystem::path& path, const std::string& split);  // train | val | unseen
  Sample get(int64_t index) const override;
  torch::Tensor images() const { return images_; }  // uint8 [N,H,W,3], styled
  torch::Tensor plain() const { return plain_; }    // uint8 [N,H,W,3]
  torch::Tensor labels() const { return labels_; }  // int64 [N, A]
  std::string style() const { return style_; }

 private:
  torch::Tensor images_, plain_, labels_;
  std::string style_;
};

}  // namespace ef::lora
