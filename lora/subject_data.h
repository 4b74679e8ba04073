#pragma once
// "subjects": a new subject for subject-driven personalization (hollowed-net brief §5.2), made from
// the captions scenes (tasks/caption_data.h). A subject is one object the base model has never
// seen: a shape of the vocabulary painted in two colours outside it, split along an axis
// (subject k: shape k mod 6, colour pair and split from k / 6). It is bound to a new token
// (data.generate.token, "sks"), which takes the colour's place in the captions:
//   "one large sks star at the top left on stripes".
// Splits:
//   train  n_train images of the subject (jittered place and background): what the model is tuned on;
//   val    n_val more, never trained on: the reference for subject fidelity and the subject probe;
//   class  n_class scenes of the same shape in the vocabulary's colours: the probe's negatives (and
//          class images for prior preservation).
// Layout: <split>/images uint8 [N,H,W,3], <split>/text uint8 [N,T], <split>/attr/<name> int64 [N]
// (the subject's colour label is the colour it was drawn over, meaningless for the subject); root
// attributes as every scene file, params with the subject's description.
//
// A user's own subject: a folder of PNG/JPEG images (data.images) and the prompt that names it
// (data.prompt, "one large sks circle"): SubjectDataset::from_folder.
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "tasks/caption_data.h"

namespace ef::lora {

struct SubjectDataParams {
  SceneDataParams scenes;     // n_train (5), n_val (16), image_size, seed, vocab, max_text_bytes
  int64_t subject = 0;        // which subject
  std::string token = "sks";  // the new word bound to it
  int64_t n_class = 32;
  static SubjectDataParams from(const Config& generate);
  nlohmann::json to_json() const;
};

// "a star in pink and teal, split vertically" for subject k of the vocabulary (full | basic).
std::string describe_subject(int64_t subject, const std::string& vocab = "full");
void generate_subjects(const SubjectDataParams& p, const std::filesystem::path& path);

// sample: "image" float [3,H,W] in [-1,1], "text" uint8 [T], "attr_<name>" int64 scalars.
class SubjectDataset : public SceneTextDataset {
 public:
  SubjectDataset(const std::filesystem::path& path, const std::string& split);  // train | val | class
  // Every PNG/JPEG of `dir` (sorted by name), resized to `image_size`, each captioned `prompt`.
  // InputError for a missing folder or one without images, naming it.
  static SubjectDataset from_folder(const std::filesystem::path& dir, const std::string& prompt, int64_t image_size);
  Sample get(int64_t index) const override;
  torch::Tensor images() const { return images_; }  // uint8 [N,H,W,3]
  torch::Tensor labels() const { return labels_; }  // int64 [N, A] (-1 where unknown)
  const std::string& token() const { return token_; }
  int64_t subject() const { return subject_; }       // -1 for a user's folder

 private:
  SubjectDataset() = default;
  torch::Tensor images_, labels_;
  std::string token_ = "sks";
  int64_t subject_ = -1;
};

}  // namespace ef::lora
