#pragma once
// The style recipe's evaluation (FouRA brief §4 "anchor rule" and §5.4 "metric substitutes"): every
// score comes from the project's own frozen networks, never from a hub model.
//
// Samples: eval.prompts held-out captions of the training classes ("seen") and as many of the
// held-out classes ("unseen"), eval.seeds samples each, at every strength of eval.strengths
// (0 = the base model alone). Per strength s and set (metric suffix "@s", "_unseen@s"):
//   style     mean probability of the style probe (lora/style_probe.h) that a sample is styled;
//   acc       prompt fidelity: accuracy of eval.attribute_classifier (a `classify` run on the
//             captions scenes, e.g. data.attribute "shape") on the attribute each prompt names;
//   div       diversity: mean pairwise L2 distance between the features of one prompt's samples;
//   div_ssim  diversity: mean pairwise 1 - SSIM between one prompt's samples;
//   copy      data copying: fraction of samples whose nearest training image (in feature space) is
//             closer than the copy threshold: eval.copy_factor (1) x the median distance from a
//             training image to its nearest other training image;
//   nn_train  copying as a continuous measure: the samples' mean distance to their nearest training
//             image, in units of that median training-set spacing (1: as close as the training
//             images are to one another; 0: copies);
//   fd        Fréchet distance between the samples' features and the held-out styled images' of the
//             same classes.
// Features: the frozen autoencoder's latent of an image, average-pooled to 4x4 and flattened
// (64 numbers for a 4-channel latent); the probe adds the image's per-channel mean and standard
// deviation and its mean absolute horizontal and vertical gradients.
// Also: style_probe_acc (the probe on the unseen split's styled/plain pairs: how far its style score
// can be trusted), r_eff_t<T> (FouRA with an adaptive gate: the mean effective rank over layers at
// timestep T on held-out latents; the per-layer table is printed), and the ΔW analyses of every
// weight-equivalent adapted layer (lora/analysis.h: printed, plus their means as sv_erank and amp).
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/metrics.h"
#include "lora/inject.h"
#include "lora/style_data.h"
#include "lora/style_probe.h"
#include "models/diffusion/latent_diffusion.h"
#include "tasks/attribute_classifier.h"

namespace ef::lora {

struct StyleEvalOptions {
  int64_t prompts = 4;                  // per set (seen, unseen)
  int64_t seeds = 4;                    // samples per prompt
  std::vector<double> strengths{1.0};   // adapter strengths to sample at
  SamplerOptions sampler;               // eval.sampler (ddim, 10 steps)
  double guidance = 3.0;
  std::filesystem::path attribute_classifier;  // a classify run; empty: no acc
  double copy_factor = 1.0;
  std::vector<int64_t> timesteps{100, 500, 900};  // r_eff is reported at these
  static StyleEvalOptions from(const Config& eval);
};

class StyleEvaluator {
 public:
  StyleEvaluator(StyleEvalOptions options, LatentDiffusion& model, const StyleDataset& train, const StyleDataset& val,
                 const StyleDataset& unseen, uint64_t seed);

  // `adapters`: every adapter set on the model (their strength is changed and put back to 1).
  Scalars evaluate(const std::vector<Adapters>& adapters);
  // A grid: rows are the seen then the unseen prompts, columns their seeds, at the largest strength.
  void write_samples(const std::filesystem::path& dir, int64_t step, MetricLogger& log, const std::vector<Adapters>& adapters);

  // features [B, 64] (latent pooled) and probe features [B, 70] of images [B,3,H,W] in [-1,1].
  torch::Tensor features(const torch::Tensor& images);
  torch::Tensor probe_features(const torch::Tensor& images);

 private:
  struct PromptSet {
    std::vector<std::string> prompts;  // one per prompt
    std::vector<int64_t> labels;       // the classifier's attribute, per prompt
  };
  PromptSet prompt_set(const StyleDataset& data) const;
  torch::Tensor generate(const PromptSet& set, uint64_t seed);  // [P*K, 3, H, W], prompt-major
  void prepare();  // the reference features, probe and threshold (after the frozen weights are loaded)
  Scalars score(const PromptSet& set, const torch::Tensor& images, const torch::Tensor& reference, const std::string& suffix);
  Scalars effective_ranks(const std::vector<Adapters>& adapters);

  StyleEvalOptions opt_;
  LatentDiffusion& model_;
  const StyleDataset &train_, &val_, &unseen_;
  uint64_t seed_;
  std::optional<AttributeClassifier> classifier_;
  bool prepared_ = false;
  std::optional<StyleProbe> probe_;
  double probe_accuracy_ = 0, copy_threshold_ = 0, train_spacing_ = 1;
  torch::Tensor train_features_, val_features_, unseen_features_;
};

// The evaluation features of images [B,3,H,W] in [-1,1]: the frozen autoencoder's latent pooled to
// 4x4 and flattened ([B, 64] for 4 latent channels), and for probes that plus the per-channel mean
// and standard deviation and the mean absolute horizontal and vertical gradients ([B, 72]). CPU.
torch::Tensor latent_features(LatentDiffusion& model, const torch::Tensor& images);
torch::Tensor probe_features(LatentDiffusion& model, const torch::Tensor& images);

// Sets every adapter set's strength to `s` for the life of the guard, then back to 1.
class StrengthGuard {
 public:
  StrengthGuard(const std::vector<Adapters>& adapters, double s);
  ~StrengthGuard();
  StrengthGuard(const StrengthGuard&) = delete;
  StrengthGuard& operator=(const StrengthGuard&) = delete;

 private:
  std::vector<Adapters> adapters_;
};

}  // namespace ef::lora
