#pragma once
// "captions" and "edits": generated data for text-to-image and instruction-based image editing
// (InstructPix2Pix-style), made of scenes described by attributes.
//
// A scene is 1-3 identical shapes (colour, shape, size, count) placed at one of the positions of a
// 3x3 grid over a textured background; every attribute has a label, an index into its values:
//   colour      red green blue yellow purple orange white
//   shape       circle square triangle star ring cross
//   position    top left, top, top right, left, centre, right, bottom left, bottom, bottom right
//   size        small large
//   count       one two three
//   background  plain stripes checker noise
// ("basic" vocabulary: red green blue yellow; circle square triangle; left centre right; small large;
// one two three; plain stripes.) A scene also has a seed for everything the attributes leave open
// (colour shade, jitter of size, place and rotation, background tones, stripe/checker period and
// noise), so two scenes that differ in one attribute differ only in what that attribute draws.
//
// "captions": an image and its English caption, built from the attributes
//   "two large red circles at the top left on stripes", "one small blue star in the centre".
// "edits": a source image, an instruction that changes one attribute, and the target image rendered
// from the edited attributes with the same scene seed:
//   "make the circles blue", "turn the squares into triangles", "move it to the right",
//   "make them bigger", "add another circle", "remove one of the circles",
//   "change the background to checker".
//
// Both are deterministic from their seed (the same parameters give a byte-identical file; each
// sample has its own generator, so generation is parallel and order-free) and cached as HDF5 with
// train/val splits. Layout of a file (N samples per split, T = max_text_bytes):
//   captions:  <split>/images uint8 [N,H,W,3], <split>/text uint8 [N,T], <split>/attr/<name> int64 [N]
//   edits:     <split>/source, <split>/target uint8 [N,H,W,3], <split>/text uint8 [N,T] (instruction),
//              <split>/source_attr/<name>, <split>/target_attr/<name> int64 [N],
//              <split>/edited_attribute int64 [N] (index of the attribute the instruction changes)
// Texts are UTF-8 zero-padded to T bytes; a text longer than T is refused. Root attributes:
// schema_version, generator ("captions"/"edits"), params (JSON), attributes (JSON: [{"name",
// "values"}, ...] in attribute order, so that readers can name classes).
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/data.h"
#include "core/hdf5_file.h"

namespace ef {

// The "schema_version" root attribute of every scene dataset (captions, edits, and the styled sets
// other domains derive from the scenes).
constexpr int64_t kSceneSchemaVersion = 1;

// One attribute of a scene and the names of its values (a label is an index into `values`).
struct SceneAttribute {
  std::string name;
  std::vector<std::string> values;
};

// "full" or "basic"; the attributes are always colour, shape, position, size, count, background.
const std::vector<SceneAttribute>& scene_attributes(const std::string& vocab);

struct SceneDataParams {
  int64_t n_train = 20000, n_val = 2000;  // samples per split
  int64_t image_size = 32;                // square images
  uint64_t seed = 0;
  int64_t max_text_bytes = 64;            // text storage width; longer texts are refused
  std::string vocab = "full";             // full | basic
  // `default_train`/`default_val`: the split sizes when not given (captions and edits differ).
  static SceneDataParams from(const Config& generate, int64_t default_train, int64_t default_val);
  nlohmann::json to_json() const;
};

// The caption of a scene with these labels (one per attribute of `attributes`).
std::string scene_caption(const std::vector<SceneAttribute>& attributes, const std::vector<int64_t>& labels);
// Renders a scene: uint8 [size, size, 3].
torch::Tensor render_scene(const std::vector<SceneAttribute>& attributes, const std::vector<int64_t>& labels,
                           uint64_t scene_seed, int64_t size);

// The root attributes every scene file carries: schema_version, generator, params (JSON) and
// attributes (the vocabulary as JSON, so that readers can name classes).
void write_scene_root(H5File& f, const std::string& generator, const nlohmann::json& params, const std::vector<SceneAttribute>& attributes);
// uint8 [n, H, H, 3] dataset `name` of a scene file, checked (the error names the file and dataset).
torch::Tensor read_scene_images(const H5File& f, const std::string& name, int64_t n);
// uint8 [H, W, 3] -> float [3, H, W] in [-1, 1], as every scene dataset hands images out; and the
// same for a stack, uint8 [N, H, W, 3] -> float [N, 3, H, W].
torch::Tensor signed_scene_image(const torch::Tensor& hwc);
torch::Tensor signed_scene_images(const torch::Tensor& nhwc);
// Texts as a scene file stores them: uint8 [N, max_text_bytes], UTF-8, zero-padded. ConfigError for a
// text longer than max_text_bytes, naming it (`what`: "caption", "instruction").
torch::Tensor scene_texts(const std::vector<std::string>& texts, int64_t max_text_bytes, const std::string& what);

// Writes the whole set into `path` atomically; throws before writing anything when a text does not
// fit in max_text_bytes.
void generate_captions(const SceneDataParams& p, const std::filesystem::path& path);
void generate_edits(const SceneDataParams& p, const std::filesystem::path& path);

// What both datasets share: the texts and the attribute vocabulary of one split held in memory.
// Errors (std::runtime_error) name the file: missing, not HDF5, another generator's data, no such
// split.
class SceneTextDataset : public Dataset {
 public:
  int64_t size() const override { return text_.size(0); }
  // Text i (caption or instruction) without its zero padding.
  std::string text_at(int64_t i) const;
  const std::vector<SceneAttribute>& attributes() const { return attributes_; }
  std::vector<std::string> attribute_names() const;
  // Index of `name` among attributes(); throws listing the names when unknown.
  int64_t attribute_index(const std::string& name) const;
  const std::vector<std::string>& attribute_values(const std::string& name) const;
  int64_t image_size() const { return image_size_; }
  int64_t max_text_bytes() const { return text_.size(1); }

 protected:
  // Opens `path`, checks it holds `generator` data with `split`, reads the texts and vocabulary.
  H5File open(const std::filesystem::path& path, const std::string& split, const std::string& generator);
  torch::Tensor labels_of(const H5File& f, const std::string& group) const;  // int64 [N, A]

  std::filesystem::path path_;
  std::string split_;
  torch::Tensor text_;  // uint8 [N, T]
  std::vector<SceneAttribute> attributes_;
  int64_t image_size_ = 0;
};

// sample: "image" float [3,H,W] in [-1,1], "text" uint8 [T], "attr_<name>" int64 scalar per attribute.
class CaptionsDataset : public SceneTextDataset {
 public:
  CaptionsDataset(const std::filesystem::path& path, const std::string& split);
  Sample get(int64_t index) const override;
  torch::Tensor images() const { return images_; }  // uint8 [N,H,W,3]
  torch::Tensor labels() const { return labels_; }  // int64 [N, A], columns in attributes() order

 private:
  torch::Tensor images_;  // uint8 [N, H, W, 3]
  torch::Tensor labels_;  // int64 [N, A]
};

// sample: "source", "target" float [3,H,W] in [-1,1], "text" uint8 [T] (the instruction),
// "attr_<name>" int64 scalars: the target's labels, "source_attr_<name>": the source's,
// "edited_attribute" int64 scalar: index in attributes() of the attribute the instruction changes.
class EditsDataset : public SceneTextDataset {
 public:
  EditsDataset(const std::filesystem::path& path, const std::string& split);
  Sample get(int64_t index) const override;
  torch::Tensor source_images() const { return source_; }     // uint8 [N,H,W,3]
  torch::Tensor target_images() const { return target_; }     // uint8 [N,H,W,3]
  torch::Tensor source_labels() const { return source_labels_; }  // int64 [N, A]
  torch::Tensor target_labels() const { return target_labels_; }  // int64 [N, A]
  torch::Tensor edited_attributes() const { return edited_; }     // int64 [N]

 private:
  torch::Tensor source_, target_, source_labels_, target_labels_, edited_;
};

}  // namespace ef
