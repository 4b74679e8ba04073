// NeRF-synthetic (Blender) scenes: transforms_{train,test}.json with OpenGL/Blender camera-to-world
// matrices (x right, y up, z backward), converted to the OpenCV world-to-camera our cameras use.
// The val split is not read (3DGS trains on train and evaluates on test).
#include <ATen/Parallel.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/image_io.h"
#include "splatting/dataset.h"

namespace ef::splat {

namespace fs = std::filesystem;

namespace {

// splitmix64: a tiny counter-based generator, identical on every platform (std:: distributions are not).
uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
double unit(uint64_t x) { return static_cast<double>(splitmix(x) >> 11) * 0x1.0p-53; }

std::vector<SceneView> read_split(const fs::path& root, const std::string& split, const SceneOptions& o, const torch::Tensor& bg) {
  const fs::path file = root / ("transforms_" + split + ".json");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ef::read_file(file));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(file.string() + ": not valid JSON: " + e.what());
  }
  if (!j.contains("camera_angle_x") || !j["camera_angle_x"].is_number())
    throw std::runtime_error(file.string() + ": camera_angle_x (horizontal field of view, radians) is missing");
  if (!j.contains("frames") || !j["frames"].is_array()) throw std::runtime_error(file.string() + ": frames[] is missing");
  const double fov_x = j["camera_angle_x"].get<double>();
  const auto& frames = j["frames"];
  std::vector<SceneView> views(frames.size());
  at::parallel_for(0, static_cast<int64_t>(frames.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto& f = frames[i];
      const std::string where = file.string() + ": frames[" + std::to_string(i) + "]";
      if (!f.contains("file_path") || !f["file_path"].is_string()) throw std::runtime_error(where + ".file_path is missing");
      const auto& m = f.contains("transform_matrix") ? f["transform_matrix"] : nlohmann::json();
      if (!m.is_array() || m.size() != 4) throw std::runtime_error(where + ".transform_matrix is not a 4x4 matrix");
      fs::path image = root / f["file_path"].get<std::string>();
      if (!image.has_extension()) image += ".png";
      if (!fs::exists(image)) throw std::runtime_error("image not found: " + image.string() + " (named in " + where + ")");

      torch::Tensor c2w = torch::empty({4, 4}, torch::kFloat64);
      auto a = c2w.accessor<double, 2>();
      for (int r = 0; r < 4; ++r) {
        if (!m[r].is_array() || m[r].size() != 4) throw std::runtime_error(where + ".transform_matrix is not a 4x4 matrix");
        for (int c = 0; c < 4; ++c) a[r][c] = m[r][c].get<double>();
      }
      // OpenGL (y up, z backward) -> OpenCV (y down, z forward): negate the camera's y and z axes.
      for (int r = 0; r < 3; ++r) a[r][1] = -a[r][1], a[r][2] = -a[r][2];

      torch::Tensor img = image_to_rgb(read_image(image), bg);
      const int64_t H = img.size(0), W = img.size(1);
      Camera cam;
      cam.width = W, cam.height = H;
      cam.fx = cam.fy = 0.5 * W / std::tan(0.5 * fov_x);
      cam.cx = 0.5 * W, cam.cy = 0.5 * H;
      cam.world_to_camera = torch::linalg_inv(c2w);
      cam.name = fs::relative(image, root).string();
      if (o.downscale != 1) {
        const int64_t w = std::max<int64_t>(1, std::lround(W / o.downscale)), h = std::max<int64_t>(1, std::lround(H / o.downscale));
        img = resize_image(img, h, w);
        cam = cam.resized(w, h);
      }
      views[i] = SceneView{cam, img, {}, {}, {}};
    }
  });
  return views;
}

}  // namespace

SceneData load_nerf_synthetic_scene(const SceneOptions& o) {
  SceneData scene;
  scene.root = o.path;
  scene.format = "nerf-synthetic";
  scene.background = torch::tensor(o.background, torch::kFloat64).to(torch::kFloat32);
  if (!fs::exists(o.path / "transforms_train.json"))
    throw std::runtime_error("NeRF-synthetic scene incomplete: " + (o.path / "transforms_train.json").string() + " not found");
  scene.train = read_split(o.path, "train", o, scene.background);
  if (fs::exists(o.path / "transforms_test.json")) scene.test = read_split(o.path, "test", o, scene.background);

  // No SfM points: 3DGS starts from random points in [-1.3, 1.3]^3 with random colours.
  const int64_t P = o.init_points;
  scene.points = torch::empty({P, 3}, torch::kFloat32);
  scene.colors = torch::empty({P, 3}, torch::kFloat32);
  float* pts = scene.points.data_ptr<float>();
  float* cols = scene.colors.data_ptr<float>();
  const uint64_t base = splitmix(static_cast<uint64_t>(o.init_seed) ^ 0x6e657266ULL) ;
  for (int64_t i = 0; i < P * 3; ++i) {
    pts[i] = static_cast<float>(2.6 * unit(base + 2 * static_cast<uint64_t>(i)) - 1.3);
    cols[i] = static_cast<float>(unit(base + 2 * static_cast<uint64_t>(i) + 1));
  }

  std::vector<Camera> cams;
  for (const auto& v : scene.train) cams.push_back(v.camera);
  scene.extent = camera_extent(cams);
  return scene;
}

}  // namespace ef::splat
