#pragma once
// A trained classify run on one attribute of the "captions" scenes (data.kind "captions",
// data.attribute), loaded as a scorer: e.g. "attribute accuracy" of generated edits, the fraction of
// edited images whose predicted attribute equals the target's.
//
// The network is rebuilt from the run's resolved config.json (model section) and given the weights
// of its latest checkpoint (the EMA weights when the run kept them, as eval and export do); the class
// names come from the run's classes.json. The captions data the run trained on is not needed.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace ef {

class ViTImpl;

class AttributeClassifier {
 public:
  // Errors name the run folder: not a run, not a classify run on captions, no checkpoint yet.
  static AttributeClassifier load(const std::filesystem::path& run_dir, torch::Device device);

  std::string attribute() const;                     // "colour"
  const std::vector<std::string>& classes() const;   // value names, by label
  int64_t image_size() const;
  const std::filesystem::path& checkpoint() const;   // the checkpoint folder the weights came from

  // images float [B, 3, H, W] in [-1, 1] (any device) -> logits float [B, classes] on the images' device
  torch::Tensor logits(const torch::Tensor& images) const;
  // images float [B, 3, H, W] in [-1, 1] -> predicted labels int64 [B] on the images' device
  torch::Tensor predict(const torch::Tensor& images) const;
  // Fraction of `images` whose predicted label equals `labels` (int64 [B]), in batches of `batch_size`.
  double accuracy(const torch::Tensor& images, const torch::Tensor& labels, int64_t batch_size = 256) const;

 private:
  AttributeClassifier() = default;
  std::string attribute_;
  std::vector<std::string> classes_;
  std::filesystem::path checkpoint_;
  torch::Device device_{torch::kCPU};
  std::shared_ptr<ViTImpl> model_;
};

}  // namespace ef
