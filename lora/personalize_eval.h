#pragma once
// The personalize recipe's evaluation (hollowed-net brief §4-5 "metrics"): DreamBooth's protocol in
// small, every score from the project's own frozen networks, always on the FULL UNet (brief §6: the
// hollowed network is a training device, never what is evaluated).
//
// Prompts: eval.prompts prompts naming the subject by its token at places and backgrounds of the
// scene vocabulary ("one large sks star at the bottom right on checker"), eval.seeds samples each.
// Features: position-invariant, as the subject appears anywhere: a chroma-weighted hue histogram of
// 12 Gaussian-smoothed bins (the scenes' backgrounds are grey tones, their objects saturated colours;
// the subject is told from its class by its two colours).
//   subj      subject fidelity: mean probability of the subject probe (lora/style_probe.h, the same
//             logistic probe, fitted on those features of the held-out subject images against class
//             scenes of the same shape in vocabulary colours) that a sample shows the subject;
//   sim       subject fidelity, DINO's stand-in: mean cosine similarity between the samples' features
//             and the held-out subject images' (0 for a sample without colour);
//   acc       prompt fidelity: accuracy of eval.attribute_classifier (a `classify` run on the captions
//             scenes) on the attribute it classifies, as the prompt names it (position, background);
//   div       diversity: mean pairwise feature distance between one prompt's samples;
//   subj_loss subject fidelity without sampling: the denoising loss on the held-out subject images
//             with their token captions (fixed timesteps and noise, 4 draws): how well the model has
//             learned what the subject looks like where it was never shown it;
//   class_loss forgetting (DreamBooth's "language drift"): the same on the class scenes with their
//             own captions; it rises when fine-tuning overwrites what the base knew.
// Reference rows, computed once: sim_real (held-out subject images to the training ones: the
// "real images" row of DreamBooth's table), sim_class (class scenes to the subject images: what a
// model that ignores the subject scores) and subj_probe_acc (the probe on data it was not fitted on).
// A subject from a user's folder has no held-out images: sim is then to the training images, and
// subj and the reference rows are not reported.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "core/config.h"
#include "core/metrics.h"
#include "lora/style_probe.h"
#include "lora/subject_data.h"
#include "models/diffusion/latent_diffusion.h"
#include "tasks/attribute_classifier.h"

namespace ef::lora {

struct PersonalizeEvalOptions {
  int64_t prompts = 4;
  int64_t seeds = 4;
  SamplerOptions sampler;  // eval.sampler (ddim, 10 steps)
  double guidance = 3.0;
  std::filesystem::path attribute_classifier;  // a classify run; empty: no acc
  static PersonalizeEvalOptions from(const Config& eval);
};

class PersonalizeEvaluator {
 public:
  // `val`, `klass`: null for a user's folder.
  PersonalizeEvaluator(PersonalizeEvalOptions options, const SubjectDataset& train, const SubjectDataset* val, const SubjectDataset* klass,
                       torch::Device device, uint64_t seed);
  // `model`: the full model with whatever the run trained on it.
  Scalars evaluate(LatentDiffusion& model);
  // Rows: the prompts; columns: their seeds.
  void write_samples(LatentDiffusion& model, const std::filesystem::path& dir, int64_t step, MetricLogger& log);
  const std::vector<std::string>& prompts() const { return prompts_; }

 private:
  torch::Tensor generate(LatentDiffusion& model);  // [P*K, 3, H, W], prompt-major, CPU
  void prepare(LatentDiffusion& model);

  PersonalizeEvalOptions opt_;
  const SubjectDataset& train_;
  const SubjectDataset* val_;
  const SubjectDataset* class_;
  uint64_t seed_;
  std::optional<AttributeClassifier> classifier_;
  std::vector<std::string> prompts_;
  std::vector<int64_t> labels_;  // per prompt, the classifier's attribute (-1: none)
  bool prepared_ = false;
  std::optional<StyleProbe> probe_;
  torch::Tensor reference_;  // unit-norm features of the subject's reference images
  Scalars references_;
};

}  // namespace ef::lora
