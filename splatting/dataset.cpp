#include "splatting/dataset.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "core/data_gen.h"
#include "core/hdf5_file.h"
#include "core/image_io.h"
#include "splatting/colmap.h"
#include "splatting/scene_gen.h"

namespace ef::splat {

namespace fs = std::filesystem;

namespace {

fs::path colmap_sparse_dir(const fs::path& root) {
  for (const fs::path& d : {root / "sparse" / "0", root / "sparse"})
    if (fs::exists(d / "cameras.bin") || fs::exists(d / "cameras.txt")) return d;
  return {};
}

// Per-view ground truth from geometry.h5, matched to views by image name and resized (nearest) to
// the loaded image size, so images_N folders and `downscale` keep it aligned.
void attach_geometry(const fs::path& file, std::vector<SceneView*>& views, SceneData& scene) {
  H5File f(file, H5File::Mode::Read);
  require_schema(f, kSplatSceneSchema);
  const auto names = nlohmann::json::parse(f.attr_string("image_names")).get<std::vector<std::string>>();
  std::map<std::string, int64_t> row;
  for (size_t i = 0; i < names.size(); ++i) row[names[i]] = static_cast<int64_t>(i);
  const torch::Tensor depth = f.read("depth"), normals = f.read("normals"), ids = f.read("plane_ids").to(torch::kInt32);
  scene.planes = f.read("planes").to(torch::kFloat64);
  for (SceneView* v : views) {
    auto it = row.find(v->camera.name);
    if (it == row.end()) throw std::runtime_error(file.string() + " has no ground truth for image '" + v->camera.name + "'");
    torch::Tensor d = depth[it->second], n = normals[it->second], k = ids[it->second];
    const int64_t H = v->camera.height, W = v->camera.width;
    if (d.size(0) != H || d.size(1) != W) {
      namespace F = torch::nn::functional;
      const auto nearest = F::InterpolateFuncOptions().size(std::vector<int64_t>{H, W}).mode(torch::kNearest);
      d = F::interpolate(d.unsqueeze(0).unsqueeze(0), nearest).squeeze(0).squeeze(0);
      n = F::interpolate(n.permute({2, 0, 1}).unsqueeze(0), nearest).squeeze(0).permute({1, 2, 0});
      k = F::interpolate(k.to(torch::kFloat32).unsqueeze(0).unsqueeze(0), nearest).squeeze(0).squeeze(0).to(torch::kInt32);
    }
    v->depth = d.contiguous();
    v->normals = n.contiguous();
    v->plane_ids = k.contiguous();
  }
}

}  // namespace

std::string detect_scene_format(const fs::path& root) {
  if (!fs::is_directory(root)) throw std::runtime_error("scene folder not found: " + root.string());
  if (!colmap_sparse_dir(root).empty()) return "colmap";
  if (fs::exists(root / "transforms_train.json")) return "nerf-synthetic";
  throw std::runtime_error(root.string() + " is not a scene folder: expected sparse/0/cameras.{bin,txt} (COLMAP) or "
                           "transforms_train.json (NeRF-synthetic)");
}

SceneOptions SceneOptions::from(const Config& c, const fs::path& path) {
  SceneOptions o;
  o.path = path;
  o.format = c.get<std::string>("format", o.format);
  if (o.format != "auto" && o.format != "colmap" && o.format != "nerf-synthetic")
    c.invalid("format", "expected \"auto\", \"colmap\" or \"nerf-synthetic\", got \"" + o.format + "\"");
  const std::string format = o.format == "auto" ? detect_scene_format(path) : o.format;
  o.images = c.get<std::string>("images", o.images);
  if (o.images.empty() || o.images.find('/') != std::string::npos) c.invalid("images", "expected a folder name such as \"images_4\"");
  o.downscale = c.get<double>("downscale", o.downscale);
  if (!(o.downscale >= 1)) c.invalid("downscale", "expected a factor >= 1");
  o.test_every = c.get<int64_t>("test_every", o.test_every);
  if (o.test_every < 0) c.invalid("test_every", "expected 0 (no test split) or a positive period");
  o.background = c.get<std::vector<double>>("background", format == "nerf-synthetic" ? std::vector<double>{1, 1, 1}
                                                                                       : std::vector<double>{0, 0, 0});
  if (o.background.size() != 3 || std::any_of(o.background.begin(), o.background.end(), [](double v) { return v < 0 || v > 1; }))
    c.invalid("background", "expected [r, g, b] with values in [0, 1]");
  o.init_points = c.get<int64_t>("init_points", o.init_points);
  if (o.init_points < 1) c.invalid("init_points", "expected at least 1");
  o.init_seed = c.get<int64_t>("init_seed", o.init_seed);
  o.geometry = c.get<bool>("geometry", o.geometry);
  return o;
}

SceneData load_scene(const Config& data) {
  const fs::path path = data.has("generate") || data.has("kind") ? prepare_dataset(data, "splat-scene")
                                                                  : fs::path(data.require<std::string>("path"));
  return load_scene(SceneOptions::from(data, path));
}

SceneData load_scene(const SceneOptions& options) {
  const std::string format = options.format == "auto" ? detect_scene_format(options.path) : options.format;
  if (format == "colmap") return load_colmap_scene(options);
  if (format == "nerf-synthetic") return load_nerf_synthetic_scene(options);
  throw std::invalid_argument("unknown scene format '" + format + "'");
}

double camera_extent(const std::vector<Camera>& cameras) {
  if (cameras.empty()) return 1.0;
  std::vector<torch::Tensor> centres;
  for (const auto& c : cameras) centres.push_back(c.center());
  const torch::Tensor C = torch::stack(centres);  // [V, 3]
  const double diagonal = (C - C.mean(0, true)).norm(2, 1).max().item<double>();
  return 1.1 * diagonal;
}

torch::Tensor image_to_rgb(const torch::Tensor& decoded, const torch::Tensor& background) {
  torch::Tensor img = decoded.dim() == 2 ? decoded.unsqueeze(2) : decoded;
  img = decoded.scalar_type() == torch::kUInt8 ? img.to(torch::kFloat32).div_(255.0f) : img.to(torch::kFloat32).div_(65535.0f);
  const int64_t C = img.size(2);
  torch::Tensor rgb = C <= 2 ? img.narrow(2, 0, 1).expand({-1, -1, 3}) : img.narrow(2, 0, 3);
  if (C == 2 || C == 4) {
    const torch::Tensor a = img.narrow(2, C - 1, 1);
    rgb = rgb * a + background.to(torch::kFloat32).view({1, 1, 3}) * (1 - a);
  }
  return rgb.contiguous();
}

torch::Tensor resize_image(const torch::Tensor& hwc, int64_t height, int64_t width) {
  namespace F = torch::nn::functional;
  return F::interpolate(hwc.permute({2, 0, 1}).unsqueeze(0),
                        F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width}).mode(torch::kArea))
      .squeeze(0)
      .permute({1, 2, 0})
      .contiguous();
}

SceneData load_colmap_scene(const SceneOptions& o) {
  const fs::path sparse = colmap_sparse_dir(o.path);
  if (sparse.empty()) throw std::runtime_error("COLMAP model not found: " + (o.path / "sparse" / "0").string() + "/cameras.{bin,txt}");
  const ColmapModel model = read_colmap_model(sparse);
  const fs::path image_dir = o.path / o.images;
  if (!fs::is_directory(image_dir)) {
    std::string hint;
    if (o.images != "images" && fs::is_directory(o.path / "images"))
      hint = "; to downscale on load use data.images = \"images\" with data.downscale = " + o.images.substr(o.images.rfind('_') + 1);
    throw std::runtime_error("image folder not found: " + image_dir.string() + hint);
  }
  const std::string cameras_file = (sparse / (fs::exists(sparse / "cameras.bin") ? "cameras.bin" : "cameras.txt")).string();

  SceneData scene;
  scene.root = o.path;
  scene.format = "colmap";
  scene.background = torch::tensor(o.background, torch::kFloat64).to(torch::kFloat32);

  std::vector<const ColmapImage*> order;
  for (const auto& im : model.images) order.push_back(&im);
  std::sort(order.begin(), order.end(), [](const ColmapImage* a, const ColmapImage* b) { return a->name < b->name; });
  std::vector<SceneView> views(order.size());
  // Cameras convert (and reject distorted models) before any image is decoded.
  for (size_t i = 0; i < order.size(); ++i) views[i].camera = to_camera(model.cameras.at(order[i]->camera_id), *order[i], cameras_file);
  at::parallel_for(0, static_cast<int64_t>(views.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      SceneView& v = views[i];
      const fs::path file = image_dir / v.camera.name;
      if (!fs::exists(file)) throw std::runtime_error("image not found: " + file.string() + " (named in " + sparse.string() + ")");
      torch::Tensor img = image_to_rgb(read_image(file), scene.background);
      const int64_t H = img.size(0), W = img.size(1);
      if (H != v.camera.height || W != v.camera.width) {
        // A pre-scaled folder (images_N): its sizes were rounded, so scale by the realised ratios.
        const double sx = double(W) / v.camera.width, sy = double(H) / v.camera.height;
        if (std::abs(sx - sy) > 0.02 * std::max(sx, sy))
          throw std::runtime_error(file.string() + " is " + std::to_string(W) + "x" + std::to_string(H) + ", which does not match the " +
                                   std::to_string(v.camera.width) + "x" + std::to_string(v.camera.height) + " camera in " + cameras_file);
        v.camera = v.camera.resized(W, H);
      }
      if (o.downscale != 1) {
        const int64_t w = std::max<int64_t>(1, std::lround(W / o.downscale)), h = std::max<int64_t>(1, std::lround(H / o.downscale));
        img = resize_image(img, h, w);
        v.camera = v.camera.resized(w, h);
      }
      v.image = img;
    }
  });

  std::vector<SceneView*> all;
  for (size_t i = 0; i < views.size(); ++i) {
    const bool test = o.test_every > 0 && i % static_cast<size_t>(o.test_every) == 0;
    (test ? scene.test : scene.train).push_back(std::move(views[i]));
  }
  for (auto* split : {&scene.train, &scene.test})
    for (auto& v : *split) all.push_back(&v);
  if (o.geometry && fs::exists(o.path / "geometry.h5")) attach_geometry(o.path / "geometry.h5", all, scene);

  const int64_t P = static_cast<int64_t>(model.points.size());
  scene.points = torch::empty({P, 3}, torch::kFloat32);
  scene.colors = torch::empty({P, 3}, torch::kFloat32);
  auto pts = scene.points.accessor<float, 2>();
  auto cols = scene.colors.accessor<float, 2>();
  for (int64_t i = 0; i < P; ++i)
    for (int k = 0; k < 3; ++k) {
      pts[i][k] = static_cast<float>(model.points[i].xyz[k]);
      cols[i][k] = model.points[i].rgb[k] / 255.0f;
    }

  std::vector<Camera> cams;
  for (const auto& v : scene.train.empty() ? scene.test : scene.train) cams.push_back(v.camera);
  scene.extent = camera_extent(cams);
  return scene;
}

}  // namespace ef::splat
