#include "lora/style_data.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "core/checkpoint.h"
#include "core/data_gen.h"
#include "core/hdf5_file.h"
#include "tasks/shape_drawing.h"

namespace ef::lora {
namespace {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;
constexpr double kPi = 3.14159265358979323846;

double unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

torch::Tensor luminance(const torch::Tensor& img) {  // [3,H,W] -> [H,W]
  return img[0] * 0.299 + img[1] * 0.587 + img[2] * 0.114;
}

// Pixel coordinates [H,W] (x along columns, y along rows).
std::pair<torch::Tensor, torch::Tensor> pixel_grid(int64_t h, int64_t w) {
  auto ys = torch::arange(h, torch::kFloat32).view({h, 1}).expand({h, w});
  auto xs = torch::arange(w, torch::kFloat32).view({1, w}).expand({h, w});
  return {xs, ys};
}

torch::Tensor bluefire(const torch::Tensor& img, std::mt19937_64& rng) {
  const int64_t H = img.size(1), W = img.size(2);
  auto [x, y] = pixel_grid(H, W);
  const double phase1 = 2 * kPi * unit(rng), phase2 = 2 * kPi * unit(rng);
  const double band = std::max<double>(W / 4.0, 2.0);
  // Flames: vertical bands whose x wobbles with height.
  torch::Tensor flame = 0.5 + 0.5 * torch::sin(2 * kPi * (x / band + 0.3 * torch::sin(2 * kPi * y / (H / 2.0) + phase1)) + phase2);
  torch::Tensor v = (luminance(img) * (0.8 + 0.35 * flame) + 0.1 * flame).clamp(0, 1);
  return torch::stack({v.pow(3), v.pow(1.5) * 0.8, (0.3 + 1.2 * v).clamp_max(1)});
}

torch::Tensor origami(const torch::Tensor& img) {
  const int64_t H = img.size(1), W = img.size(2), c = std::max<int64_t>(H / 8, 2);
  auto [x, y] = pixel_grid(H, W);
  // Facet id: the cell, and which side of its diagonal the pixel lies on.
  torch::Tensor cx = (x / c).floor(), cy = (y / c).floor();
  torch::Tensor upper = ((x - cx * c) > (y - cy * c)).to(torch::kFloat32);
  const int64_t cells_x = (W + c - 1) / c;
  torch::Tensor facet = ((cy * cells_x + cx) * 2 + upper).to(torch::kInt64).view({-1});
  const int64_t n = facet.max().item<int64_t>() + 1;
  torch::Tensor flat = img.reshape({3, -1});
  torch::Tensor sums = torch::zeros({3, n}).index_add_(1, facet, flat);
  torch::Tensor counts = torch::zeros({n}).index_add_(0, facet, torch::ones({H * W}));
  torch::Tensor mean = (sums / counts.clamp_min(1)).index_select(1, facet).view({3, H, W});
  torch::Tensor light = 1.0 + 0.12 * (upper * 2 - 1);  // the fold: one triangle lit, the other shaded
  return (mean * light * 3).round().div(3).clamp(0, 1);  // four levels per channel
}

torch::Tensor paintings(const torch::Tensor& img, std::mt19937_64& rng) {
  const int64_t H = img.size(1), W = img.size(2), block = 4;
  const int64_t bh = (H + block - 1) / block, bw = (W + block - 1) / block;
  std::vector<float> angles(static_cast<size_t>(bh * bw));
  for (auto& a : angles) a = static_cast<float>(kPi * unit(rng));
  torch::Tensor theta = torch::from_blob(angles.data(), {bh, bw}).clone().repeat_interleave(block, 0).repeat_interleave(block, 1).narrow(0, 0, H).narrow(1, 0, W);
  auto [x, y] = pixel_grid(H, W);
  torch::Tensor acc = torch::zeros_like(img);
  const int taps = 5;
  for (int k = -taps / 2; k <= taps / 2; ++k) {  // smear along the stroke direction
    torch::Tensor sx = x + k * torch::cos(theta), sy = y + k * torch::sin(theta);
    torch::Tensor grid = torch::stack({(2 * sx + 1) / W - 1, (2 * sy + 1) / H - 1}, -1).unsqueeze(0);
    acc += F::grid_sample(img.unsqueeze(0), grid, F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(false))[0];
  }
  acc /= taps;
  torch::Tensor grey = luminance(acc).unsqueeze(0);
  return (grey + (acc - grey) * 1.6).clamp(0, 1);  // saturated paint
}

torch::Tensor relief(const torch::Tensor& img) {  // "3d"
  torch::Tensor l = luminance(img).unsqueeze(0).unsqueeze(0);
  torch::Tensor padded = F::pad(l, F::PadFuncOptions({1, 1, 1, 1}).mode(torch::kReplicate));
  const int64_t H = img.size(1), W = img.size(2);
  torch::Tensor ahead = padded.narrow(2, 2, H).narrow(3, 2, W), behind = padded.narrow(2, 0, H).narrow(3, 0, W);
  torch::Tensor light = (0.5 + 2.0 * (ahead - behind))[0][0];
  return (0.6 * light.unsqueeze(0) + 0.4 * img).clamp(0, 1);
}

uint64_t style_sample_seed(const StyleDataParams& p, const std::string& split, int64_t index) {
  return splitmix64(splitmix64(p.scenes.seed ^ fnv1a64("styles/" + p.style + "/" + split)) + static_cast<uint64_t>(index));
}

// The index of the scenes' `shape` attribute: the content class of a style set.
size_t shape_attribute(const std::vector<SceneAttribute>& attrs) {
  for (size_t a = 0; a < attrs.size(); ++a)
    if (attrs[a].name == "shape") return a;
  throw std::logic_error("scene attributes without a shape");
}

std::vector<std::string> string_list(const Config& c, const std::string& key, const std::vector<std::string>& fallback) {
  return c.get<std::vector<std::string>>(key, fallback);
}

}  // namespace

const std::vector<std::string>& style_names() {
  static const std::vector<std::string> names = {"bluefire", "origami", "paintings", "3d"};
  return names;
}

torch::Tensor apply_style(const torch::Tensor& image, const std::string& style, uint64_t seed) {
  TORCH_CHECK(image.dim() == 3 && image.size(0) == 3, "apply_style: expected an image [3, H, W], got ", image.sizes());
  torch::NoGradGuard no_grad;
  torch::Tensor img = image.to(torch::kFloat32).contiguous();
  std::mt19937_64 rng(splitmix64(seed));
  if (style == "bluefire") return bluefire(img, rng);
  if (style == "origami") return origami(img);
  if (style == "paintings") return paintings(img, rng);
  if (style == "3d") return relief(img);
  throw std::invalid_argument("unknown style \"" + style + "\" (bluefire, origami, paintings, 3d)");
}

StyleDataParams StyleDataParams::from(const Config& c) {
  StyleDataParams p;
  p.style = c.get<std::string>("style", p.style);
  if (std::find(style_names().begin(), style_names().end(), p.style) == style_names().end())
    c.invalid("style", "unknown style \"" + p.style + "\" (bluefire, origami, paintings, 3d)");
  p.scenes = SceneDataParams::from(c, 32, 16);
  p.n_unseen = c.get<int64_t>("n_unseen", p.n_unseen);
  if (p.n_unseen < 1) c.invalid("n_unseen", "need at least 1 sample");
  p.classes = string_list(c, "classes", p.classes);
  p.unseen_classes = string_list(c, "unseen_classes", p.unseen_classes);
  const auto& vocab = scene_attributes(p.scenes.vocab);
  const auto& shapes = vocab[shape_attribute(vocab)].values;
  for (const char* key : {"classes", "unseen_classes"}) {
    const auto& list = std::string(key) == "classes" ? p.classes : p.unseen_classes;
    if (list.empty()) c.invalid(key, "name at least one shape");
    for (const auto& s : list)
      if (std::find(shapes.begin(), shapes.end(), s) == shapes.end()) {
        std::string known;
        for (const auto& v : shapes) known += (known.empty() ? "" : ", ") + v;
        c.invalid(key, "\"" + s + "\" is not a shape of the " + p.scenes.vocab + " vocabulary (" + known + ")");
      }
  }
  for (const auto& s : p.unseen_classes)
    if (std::find(p.classes.begin(), p.classes.end(), s) != p.classes.end())
      c.invalid("unseen_classes", "\"" + s + "\" is also a training class");
  return p;
}

nlohmann::json StyleDataParams::to_json() const {
  nlohmann::json j = scenes.to_json();
  j["style"] = style;
  j["n_unseen"] = n_unseen;
  j["classes"] = classes;
  j["unseen_classes"] = unseen_classes;
  return j;
}

void generate_styles(const StyleDataParams& p, const fs::path& path) {
  const auto& attrs = scene_attributes(p.scenes.vocab);
  const int64_t A = static_cast<int64_t>(attrs.size()), S = p.scenes.image_size, T = p.scenes.max_text_bytes;
  const size_t shape = shape_attribute(attrs);
  const auto& shapes = attrs[shape].values;
  auto shape_label = [&](const std::string& s) { return static_cast<int64_t>(std::find(shapes.begin(), shapes.end(), s) - shapes.begin()); };
  struct Split {
    std::string name;
    int64_t n;
    const std::vector<std::string>* classes;
    torch::Tensor images, plain, text, labels;
  };
  std::vector<Split> splits = {{"train", p.scenes.n_train, &p.classes, {}, {}, {}, {}},
                               {"val", p.scenes.n_val, &p.classes, {}, {}, {}, {}},
                               {"unseen", p.n_unseen, &p.unseen_classes, {}, {}, {}, {}}};
  for (auto& s : splits) {
    s.images = torch::empty({s.n, S, S, 3}, torch::kUInt8);
    s.plain = torch::empty({s.n, S, S, 3}, torch::kUInt8);
    s.labels = torch::empty({s.n, A}, torch::kInt64);
    std::vector<std::string> captions(static_cast<size_t>(s.n));
    at::parallel_for(0, s.n, 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        std::mt19937_64 rng(style_sample_seed(p, s.name, i));
        std::vector<int64_t> l;
        for (const auto& a : attrs) l.push_back(static_cast<int64_t>(rng() % a.values.size()));
        l[shape] = shape_label((*s.classes)[rng() % s.classes->size()]);
        const uint64_t scene_seed = rng(), style_seed = rng();
        torch::Tensor plain = render_scene(attrs, l, scene_seed, S);
        torch::Tensor styled = apply_style(plain.permute({2, 0, 1}).to(torch::kFloat32).div(255), p.style, style_seed);
        s.plain[i].copy_(plain);
        s.images[i].copy_(styled.mul(255).round().clamp(0, 255).to(torch::kUInt8).permute({1, 2, 0}));
        s.labels[i].copy_(torch::tensor(l));
        captions[static_cast<size_t>(i)] = scene_caption(attrs, l);
      }
    });
    s.text = scene_texts(captions, T, "caption");
  }
  write_h5_atomically(path, [&](H5File& f) {
    write_scene_root(f, "styles", p.to_json(), attrs);
    for (const auto& s : splits) {
      f.write(s.name + "/images", s.images);
      f.write(s.name + "/plain", s.plain);
      f.write(s.name + "/text", s.text);
      for (int64_t a = 0; a < A; ++a) f.write(s.name + "/attr/" + attrs[static_cast<size_t>(a)].name, s.labels.select(1, a).contiguous());
    }
  });
}

StyleDataset::StyleDataset(const fs::path& path, const std::string& split) {
  H5File f = open(path, split, "styles");
  images_ = read_scene_images(f, split + "/images", size());
  plain_ = read_scene_images(f, split + "/plain", size());
  image_size_ = images_.size(1);
  labels_ = labels_of(f, "attr");
  try {
    style_ = nlohmann::json::parse(f.attr_string("params")).at("style").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": the root attribute 'params' names no style: " + e.what());
  }
}

Sample StyleDataset::get(int64_t index) const {
  Sample s = {{"image", signed_scene_image(images_[index])}, {"plain", signed_scene_image(plain_[index])}, {"text", text_[index]}};
  for (size_t a = 0; a < attributes_.size(); ++a) s["attr_" + attributes_[a].name] = labels_[index][static_cast<int64_t>(a)];
  return s;
}

namespace {
class StyleGenerator : public DataGenerator {
 public:
  std::string default_path() const override { return "data/styles.h5"; }
  void generate(const Config& params, const fs::path& out) override { generate_styles(StyleDataParams::from(params), out); }
  nlohmann::json resolved_params(const Config& params) const override { return StyleDataParams::from(params).to_json(); }
};
EF_REGISTER(data_generators(), "styles", [] { return std::make_unique<StyleGenerator>(); },
            "captions scenes of few shape classes (plus held-out ones) in one of four filter styles (adapter fine-tuning)");
}  // namespace

}  // namespace ef::lora
