#include "lora/subject_data.h"

#include <algorithm>
#include <random>

#include "core/checkpoint.h"
#include "core/data_gen.h"
#include "core/hdf5_file.h"
#include "core/image_io.h"
#include "core/run.h"
#include "tasks/shape_drawing.h"

namespace ef::lora {
namespace {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

struct Colour {
  const char* name;
  uint8_t r, g, b;
};
// Colours outside the scene vocabulary (red green blue yellow purple orange white), in pairs.
const Colour kPairs[][2] = {{{"pink", 255, 120, 190}, {"teal", 0, 140, 140}},
                            {{"lime", 170, 255, 60}, {"navy", 20, 30, 120}},
                            {{"brown", 130, 75, 25}, {"cyan", 90, 230, 255}},
                            {{"magenta", 200, 0, 200}, {"olive", 120, 130, 20}}};
const char* kSplits[] = {"vertically", "horizontally", "diagonally"};
constexpr int64_t kPairCount = 4, kSplitCount = 3;

size_t index_of(const std::vector<SceneAttribute>& attrs, const std::string& name) {
  for (size_t a = 0; a < attrs.size(); ++a)
    if (attrs[a].name == name) return a;
  throw std::logic_error("scene attributes without " + name);
}

int64_t value_of(const SceneAttribute& a, const std::string& value) {
  return static_cast<int64_t>(std::find(a.values.begin(), a.values.end(), value) - a.values.begin());
}

struct SubjectLook {
  int64_t shape;  // index into the vocabulary's shapes
  Colour first, second;
  int64_t split;
};

SubjectLook look_of(int64_t subject, int64_t shapes) {
  const int64_t k = subject / shapes;
  return {subject % shapes, kPairs[k % kPairCount][0], kPairs[k % kPairCount][1], (k / kPairCount) % kSplitCount};
}

// Draws the subject: the scene is rendered twice, its shape in two vocabulary colours, and where
// they differ (the shape, anti-aliased edges in proportion) the subject's two colours are painted,
// split through the shape's centre.
torch::Tensor render_subject(const std::vector<SceneAttribute>& attrs, std::vector<int64_t> labels, const SubjectLook& look, uint64_t seed,
                             int64_t size) {
  const size_t colour = index_of(attrs, "colour");
  labels[colour] = value_of(attrs[colour], "red");
  torch::Tensor a = render_scene(attrs, labels, seed, size).to(torch::kFloat32);
  labels[colour] = value_of(attrs[colour], "green");
  torch::Tensor b = render_scene(attrs, labels, seed, size).to(torch::kFloat32);
  torch::Tensor diff = (a - b).abs().sum(-1);  // [H, W]
  torch::Tensor alpha = (diff / diff.max().clamp_min(1)).unsqueeze(-1);
  torch::Tensor where = (diff > 0.25 * diff.max()).nonzero().to(torch::kFloat32);
  const double cy = where.size(0) ? where.select(1, 0).mean().item<double>() : size / 2.0;
  const double cx = where.size(0) ? where.select(1, 1).mean().item<double>() : size / 2.0;
  torch::Tensor ys = torch::arange(size, torch::kFloat32).view({size, 1}).expand({size, size}) - cy;
  torch::Tensor xs = torch::arange(size, torch::kFloat32).view({1, size}).expand({size, size}) - cx;
  torch::Tensor side = look.split == 0 ? xs < 0 : look.split == 1 ? ys < 0 : (xs + ys) < 0;
  torch::Tensor c1 = torch::tensor({look.first.r, look.first.g, look.first.b}, torch::kFloat32);
  torch::Tensor c2 = torch::tensor({look.second.r, look.second.g, look.second.b}, torch::kFloat32);
  torch::Tensor paint = torch::where(side.unsqueeze(-1), c1, c2);
  // the background: where the two renders agree, either one
  return (a * (1 - alpha) + paint * alpha).round().clamp(0, 255).to(torch::kUInt8);
}

}  // namespace

SubjectDataParams SubjectDataParams::from(const Config& c) {
  SubjectDataParams p;
  p.scenes = SceneDataParams::from(c, 5, 16);
  p.subject = c.get<int64_t>("subject", p.subject);
  if (p.subject < 0) c.invalid("subject", "a subject index is 0 or more");
  p.token = c.get<std::string>("token", p.token);
  if (p.token.empty() || p.token.find(' ') != std::string::npos) c.invalid("token", "one word, e.g. \"sks\"");
  p.n_class = c.get<int64_t>("n_class", p.n_class);
  if (p.n_class < 1) c.invalid("n_class", "need at least 1 class image");
  return p;
}

nlohmann::json SubjectDataParams::to_json() const {
  nlohmann::json j = scenes.to_json();
  j["subject"] = subject;
  j["token"] = token;
  j["n_class"] = n_class;
  j["look"] = describe_subject(subject, scenes.vocab);
  return j;
}

std::string describe_subject(int64_t subject, const std::string& vocab) {
  const auto& attrs = scene_attributes(vocab);
  const auto& shapes = attrs[index_of(attrs, "shape")].values;
  const SubjectLook l = look_of(subject, static_cast<int64_t>(shapes.size()));
  return "a " + shapes[static_cast<size_t>(l.shape)] + " in " + l.first.name + " and " + l.second.name + ", split " + kSplits[l.split];
}

void generate_subjects(const SubjectDataParams& p, const fs::path& path) {
  const auto& attrs = scene_attributes(p.scenes.vocab);
  const int64_t A = static_cast<int64_t>(attrs.size()), S = p.scenes.image_size, T = p.scenes.max_text_bytes;
  const size_t shape = index_of(attrs, "shape"), colour = index_of(attrs, "colour"), count = index_of(attrs, "count"), size = index_of(attrs, "size");
  const SubjectLook look = look_of(p.subject, static_cast<int64_t>(attrs[shape].values.size()));
  struct Split {
    std::string name;
    int64_t n;
    bool subject;
    torch::Tensor images, text, labels;
  };
  std::vector<Split> splits = {{"train", p.scenes.n_train, true, {}, {}, {}}, {"val", p.scenes.n_val, true, {}, {}, {}},
                               {"class", p.n_class, false, {}, {}, {}}};
  for (auto& s : splits) {
    s.images = torch::empty({s.n, S, S, 3}, torch::kUInt8);
    std::vector<std::string> captions;
    s.labels = torch::empty({s.n, A}, torch::kInt64);
    for (int64_t i = 0; i < s.n; ++i) {
      std::mt19937_64 rng(splitmix64(splitmix64(p.scenes.seed ^ fnv1a64("subjects/" + std::to_string(p.subject) + "/" + s.name)) + static_cast<uint64_t>(i)));
      std::vector<int64_t> l;
      for (const auto& a : attrs) l.push_back(static_cast<int64_t>(rng() % a.values.size()));
      l[shape] = look.shape;
      l[count] = value_of(attrs[count], "one");
      l[size] = value_of(attrs[size], "large");  // the subject is what the images show: drawn large
      const uint64_t scene_seed = rng();
      std::string caption;
      if (s.subject) {
        s.images[i].copy_(render_subject(attrs, l, look, scene_seed, S));
        l[colour] = value_of(attrs[colour], "red");
        caption = scene_caption(attrs, l);
        caption.replace(caption.find(" red "), 5, " " + p.token + " ");
      } else {
        s.images[i].copy_(render_scene(attrs, l, scene_seed, S));
        caption = scene_caption(attrs, l);
      }
      s.labels[i].copy_(torch::tensor(l));
      captions.push_back(caption);
    }
    s.text = scene_texts(captions, T, "caption");
  }
  write_h5_atomically(path, [&](H5File& f) {
    write_scene_root(f, "subjects", p.to_json(), attrs);
    for (const auto& s : splits) {
      f.write(s.name + "/images", s.images);
      f.write(s.name + "/text", s.text);
      for (int64_t a = 0; a < A; ++a) f.write(s.name + "/attr/" + attrs[static_cast<size_t>(a)].name, s.labels.select(1, a).contiguous());
    }
  });
}

SubjectDataset::SubjectDataset(const fs::path& path, const std::string& split) {
  H5File f = open(path, split, "subjects");
  images_ = read_scene_images(f, split + "/images", size());
  image_size_ = images_.size(1);
  labels_ = labels_of(f, "attr");
  try {
    const nlohmann::json params = nlohmann::json::parse(f.attr_string("params"));
    token_ = params.at("token").get<std::string>();
    subject_ = params.at("subject").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": the root attribute 'params' names no subject and token: " + e.what());
  }
}

SubjectDataset SubjectDataset::from_folder(const fs::path& dir, const std::string& prompt, int64_t image_size) {
  if (!fs::is_directory(dir)) throw InputError("subject images: " + dir.string() + " is not a folder");
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) files.push_back(e.path());
  }
  if (files.empty()) throw InputError("subject images: " + dir.string() + " holds no PNG or JPEG image");
  std::sort(files.begin(), files.end());
  SubjectDataset d;
  d.path_ = dir;
  d.split_ = "train";
  d.attributes_ = scene_attributes("full");
  d.image_size_ = image_size;
  const int64_t N = static_cast<int64_t>(files.size()), T = std::max<int64_t>(64, static_cast<int64_t>(prompt.size()));
  d.images_ = torch::empty({N, image_size, image_size, 3}, torch::kUInt8);
  d.text_ = scene_texts(std::vector<std::string>(static_cast<size_t>(N), prompt), T, "prompt");
  d.labels_ = torch::full({N, static_cast<int64_t>(d.attributes_.size())}, -1, torch::kInt64);
  for (int64_t i = 0; i < N; ++i) {
    torch::Tensor img;
    try {
      img = read_image(files[static_cast<size_t>(i)]);
    } catch (const std::exception& e) {
      throw InputError("subject images: " + files[static_cast<size_t>(i)].string() + ": " + e.what());
    }
    if (img.dim() != 3 || img.size(2) < 3)
      throw InputError("subject images: " + files[static_cast<size_t>(i)].string() + " is not an RGB image (" + c10::str(img.sizes()) + ")");
    torch::Tensor chw = img.narrow(2, 0, 3).permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32);
    chw = F::interpolate(chw, F::InterpolateFuncOptions().size(std::vector<int64_t>{image_size, image_size}).mode(torch::kArea));
    d.images_[i].copy_(chw[0].permute({1, 2, 0}).round().clamp(0, 255).to(torch::kUInt8));
  }
  return d;
}

Sample SubjectDataset::get(int64_t index) const {
  Sample s = {{"image", signed_scene_image(images_[index])}, {"text", text_[index]}};
  for (size_t a = 0; a < attributes_.size(); ++a) s["attr_" + attributes_[a].name] = labels_[index][static_cast<int64_t>(a)];
  return s;
}

namespace {
class SubjectGenerator : public DataGenerator {
 public:
  std::string default_path() const override { return "data/subjects.h5"; }
  void generate(const Config& params, const fs::path& out) override { generate_subjects(SubjectDataParams::from(params), out); }
  nlohmann::json resolved_params(const Config& params) const override { return SubjectDataParams::from(params).to_json(); }
};
EF_REGISTER(data_generators(), "subjects", [] { return std::make_unique<SubjectGenerator>(); },
            "a new subject (a two-coloured shape) bound to a new token, with class scenes (subject-driven personalization)");
}  // namespace

}  // namespace ef::lora
