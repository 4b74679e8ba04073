#include "tasks/shapes_dataset.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <random>

#include "core/hdf5_file.h"
#include "tasks/shape_drawing.h"

namespace ef {

namespace fs = std::filesystem;
constexpr int64_t kShapesSchema = 1;

const std::vector<std::string>& shape_class_names() {
  static const std::vector<std::string> names = {"disk", "square", "triangle", "ring", "plus",
                                                 "x-cross", "h-stripes", "v-stripes", "checker", "dots"};
  return names;
}

ShapesParams ShapesParams::from(const Config& c) {
  ShapesParams p;
  p.n = c.get<int64_t>("n", p.n);
  p.val_fraction = c.get<double>("val_fraction", p.val_fraction);
  p.size = c.get<int64_t>("size", p.size);
  p.seed = static_cast<uint64_t>(c.get<int64_t>("seed", 0));
  p.noise = c.get<double>("noise", p.noise);
  if (p.n < 20) c.invalid("n", "need at least 20 images");
  if (p.val_fraction <= 0 || p.val_fraction >= 1) c.invalid("val_fraction", "expected 0 < v < 1");
  if (p.size < 8) c.invalid("size", "at least 8 pixels");
  return p;
}

nlohmann::json ShapesParams::to_json() const {
  return {{"n", n}, {"val_fraction", val_fraction}, {"size", size}, {"seed", seed}, {"noise", noise}};
}

std::pair<torch::Tensor, int64_t> draw_shape_image(const ShapesParams& p, int64_t index) {
  std::mt19937_64 rng(splitmix64(p.seed * 0x100000001b3ULL + static_cast<uint64_t>(index)));
  std::uniform_real_distribution<double> U(0.0, 1.0);
  const int cls = static_cast<int>(index % 10);  // balanced classes; shuffling happens in the loader
  const int S = static_cast<int>(p.size);

  double bg[3], fg[3], grad[3];
  for (int c = 0; c < 3; ++c) bg[c] = U(rng), grad[c] = (U(rng) - 0.5) * 0.3;
  // foreground far enough from the background to be visible
  do {
    for (int c = 0; c < 3; ++c) fg[c] = U(rng);
  } while (std::fabs(fg[0] - bg[0]) + std::fabs(fg[1] - bg[1]) + std::fabs(fg[2] - bg[2]) < 0.6);
  const double scale = (0.25 + 0.2 * U(rng)) * S;                 // radius in pixels
  const double cx = S * 0.5 + (U(rng) - 0.5) * (S - 2 * scale) * 0.8;
  const double cy = S * 0.5 + (U(rng) - 0.5) * (S - 2 * scale) * 0.8;
  const double angle = (U(rng) - 0.5) * 0.5;                      // +-14 degrees keeps plus vs x apart
  const double freq = 7.0 + 5.0 * U(rng);
  const double noise = p.noise * U(rng);
  std::normal_distribution<double> N(0.0, 1.0);
  const PlacedShape shape(static_cast<DrawnShape>(cls), cx, cy, scale, angle, freq);

  torch::Tensor img = torch::empty({S, S, 3}, torch::kUInt8);
  uint8_t* out = img.data_ptr<uint8_t>();
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      const double cover = shape.coverage(x, y);  // anti-aliased edges
      double gy = static_cast<double>(y) / S - 0.5;
      for (int c = 0; c < 3; ++c) {
        double b = bg[c] + grad[c] * gy;
        double val = b * (1 - cover) + fg[c] * cover + noise * N(rng);
        out[(y * S + x) * 3 + c] = static_cast<uint8_t>(std::lround(std::clamp(val, 0.0, 1.0) * 255.0));
      }
    }
  return {img, cls};
}

void generate_shapes(const ShapesParams& p, const fs::path& path) {
  const int64_t n_val = std::max<int64_t>(10, static_cast<int64_t>(std::llround(p.n * p.val_fraction)));
  const int64_t n_train = p.n - n_val;
  torch::Tensor images = torch::empty({p.n, p.size, p.size, 3}, torch::kUInt8);
  torch::Tensor labels = torch::empty({p.n}, torch::kInt64);
  at::parallel_for(0, p.n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      auto [img, label] = draw_shape_image(p, i);
      images[i].copy_(img);
      labels[i] = label;
    }
  });
  nlohmann::json classes = shape_class_names();
  write_h5_atomically(path, [&](H5File& f) {
    f.set_attr("schema_version", kShapesSchema);
    f.set_attr("generator", std::string("shapes"));
    f.set_attr("params", p.to_json().dump());
    f.set_attr("classes", classes.dump());
    f.write("train/images", images.slice(0, 0, n_train));
    f.write("train/labels", labels.slice(0, 0, n_train));
    f.write("val/images", images.slice(0, n_train));
    f.write("val/labels", labels.slice(0, n_train));
  });
}

ShapesDataset::ShapesDataset(const fs::path& path, const std::string& split) {
  H5File f(path, H5File::Mode::Read);
  require_schema(f, kShapesSchema);
  images_ = f.read(split + "/images");
  labels_ = f.read(split + "/labels");
  if (images_.dim() != 4 || images_.size(3) != 3 || images_.scalar_type() != torch::kUInt8 || labels_.size(0) != images_.size(0))
    throw std::runtime_error(path.string() + ": " + split + "/images is not uint8 [N,H,W,3] matching " + split + "/labels");
}

Sample ShapesDataset::get(int64_t index) const {
  torch::Tensor img = images_[index].permute({2, 0, 1}).to(torch::kFloat32).div_(255.0f);
  return {{"image", img}, {"label", labels_[index]}};
}

}  // namespace ef

// ---- `edgeforge data gen shapes` ---------------------------------------------------------------
#include "core/data_gen.h"

namespace ef {
namespace {
class ShapesGenerator : public DataGenerator {
 public:
  std::string default_path() const override { return "data/shapes.h5"; }
  void generate(const Config& params, const fs::path& out) override { generate_shapes(ShapesParams::from(params), out); }
  nlohmann::json resolved_params(const Config& params) const override { return ShapesParams::from(params).to_json(); }
};
EF_REGISTER(data_generators(), "shapes", [] { return std::make_unique<ShapesGenerator>(); },
            "10 classes of drawn shapes and textures (classify)");
}  // namespace
}  // namespace ef
