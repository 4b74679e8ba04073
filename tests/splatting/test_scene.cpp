// Scene loading: NeRF-synthetic axis conversion and compositing on a fixture written here, the
// config entry point (detection, defaults, unknown keys), and the generated splat-scene through the
// CLI and the real COLMAP loader (splits, ground truth, determinism, regeneration checks).
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/hdf5_file.h"
#include "core/image_io.h"
#include "splatting/colmap.h"
#include "splatting/dataset.h"
#include "splatting/scene_gen.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace ef::splat;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// [u, v] pixel of a world point seen by `c` (OpenCV pinhole; pixel centres at +0.5).
std::pair<double, double> project(const Camera& c, const std::vector<double>& p) {
  const torch::Tensor x = torch::matmul(c.world_to_camera, torch::tensor({p[0], p[1], p[2], 1.0}, torch::kFloat64));
  const double X = x[0].item<double>(), Y = x[1].item<double>(), Z = x[2].item<double>();
  return {c.fx * X / Z + c.cx, c.fy * Y / Z + c.cy};
}

// 2 train frames + 1 test frame, 16x12 RGBA; frame r_0 is a camera at (0, 0, 4) in Blender axes
// looking down -z at the origin, with y up.
void write_nerf_fixture(const fs::path& root) {
  const double angle = 0.8;
  auto frame = [](const std::string& path, const std::vector<std::vector<double>>& m) {
    return nlohmann::json{{"file_path", path}, {"rotation", 0.0}, {"transform_matrix", m}};
  };
  const std::vector<std::vector<double>> front{{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 4}, {0, 0, 0, 1}};
  // 90 degrees about world z: the camera's x axis is world y
  const std::vector<std::vector<double>> side{{0, -1, 0, 0.5}, {1, 0, 0, -1}, {0, 0, 1, 3}, {0, 0, 0, 1}};
  nlohmann::json train{{"camera_angle_x", angle}, {"frames", {frame("./train/r_0", front), frame("./train/r_1.png", side)}}};
  nlohmann::json test{{"camera_angle_x", angle}, {"frames", {frame("./test/r_0", side)}}};
  ef::write_file_atomically(root / "transforms_train.json", train.dump());
  ef::write_file_atomically(root / "transforms_test.json", test.dump());
  ef::write_file_atomically(root / "transforms_val.json", test.dump());
  torch::Tensor rgba = torch::zeros({12, 16, 4}, torch::kUInt8);
  rgba.select(2, 0).fill_(255);     // red ...
  rgba[0][0][3] = 255;              // opaque at (0, 0)
  rgba[0][1][3] = 0;                // transparent at (0, 1)
  rgba[0][2][3] = 128;              // half at (0, 2)
  rgba.slice(0, 1).select(2, 3).fill_(255);
  fs::create_directories(root / "train");
  fs::create_directories(root / "test");
  ef::write_png(root / "train" / "r_0.png", rgba);
  ef::write_png(root / "train" / "r_1.png", rgba);
  ef::write_png(root / "test" / "r_0.png", rgba);
}

std::string cli() { return ef::test::env_or_fail("EDGEFORGE_CLI"); }

}  // namespace

TEST_CASE("nerf-synthetic: Blender cameras become OpenCV world-to-camera", "[splatting][nerf]") {
  ef::test::ScratchDir dir("nerf");
  write_nerf_fixture(dir.path);
  ef::Config data = ef::Config::from_json({{"path", dir.path.string()}, {"init_points", 500}});
  const SceneData s = load_scene(data);
  data.reject_unknown_keys();
  CHECK(s.format == "nerf-synthetic");
  REQUIRE(s.train.size() == 2);
  REQUIRE(s.test.size() == 1);
  const Camera& c = s.train[0].camera;
  CHECK(c.width == 16);
  CHECK(c.height == 12);
  CHECK(c.fx == Approx(0.5 * 16 / std::tan(0.4)));
  CHECK(c.fy == c.fx);
  CHECK(c.cx == 8);
  CHECK(c.cy == 6);
  CHECK(c.name == "train/r_0.png");
  // c2w = translate(0,0,4); flipping y and z gives R = diag(1,-1,-1), and w2c = [R | -R (0,0,4)]
  const torch::Tensor want = torch::tensor({1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 4.0, 0.0, 0.0, 0.0, 1.0}, torch::kFloat64).view({4, 4});
  CHECK(torch::allclose(c.world_to_camera, want, 0, 1e-12));
  CHECK(torch::allclose(c.center(), torch::tensor({0.0, 0.0, 4.0}, torch::kFloat64)));
  // the origin is in front (z = 4) at the principal point; world +x is right, world +y (up) is up
  auto [u0, v0] = project(c, {0, 0, 0});
  CHECK(u0 == Approx(8));
  CHECK(v0 == Approx(6));
  auto [u1, v1] = project(c, {1, 0.5, 0});
  CHECK(u1 == Approx(8 + c.fx / 4));
  CHECK(v1 == Approx(6 - 0.5 * c.fy / 4));
  // the rotated frame: camera at (0.5, -1, 3), its x axis along world y
  const Camera& r = s.train[1].camera;
  CHECK(torch::allclose(r.center(), torch::tensor({0.5, -1.0, 3.0}, torch::kFloat64), 0, 1e-12));
  auto [u2, v2] = project(r, {0.5, -0.5, 0});  // 0.5 along the camera's x, 3 in front
  CHECK(u2 == Approx(8 + 0.5 * r.fx / 3));
  CHECK(v2 == Approx(6));
  // RGBA over white
  const torch::Tensor img = s.train[0].image;
  CHECK(img.sizes() == c10::IntArrayRef{12, 16, 3});
  CHECK(torch::allclose(img[0][0], torch::tensor({1.f, 0.f, 0.f})));
  CHECK(torch::allclose(img[0][1], torch::tensor({1.f, 1.f, 1.f})));
  CHECK(img[0][2][1].item<float>() == Approx(1 - 128 / 255.0));
  CHECK(torch::equal(s.background, torch::tensor({1.f, 1.f, 1.f})));
  // random initial points: count, box, colours, deterministic
  CHECK(s.points.sizes() == c10::IntArrayRef{500, 3});
  CHECK(s.points.abs().max().item<float>() <= 1.3f);
  CHECK(s.points.abs().max().item<float>() > 1.0f);
  CHECK(s.colors.min().item<float>() >= 0);
  CHECK(s.colors.max().item<float>() <= 1);
  CHECK(torch::equal(load_scene(ef::Config::from_json({{"path", dir.path.string()}, {"init_points", 500}})).points, s.points));
  CHECK(s.extent == Approx(1.1 * 0.5 * std::sqrt(0.25 + 1 + 1)));
  SECTION("black background and downscale") {
    const SceneData b = load_scene(ef::Config::from_json({{"path", dir.path.string()}, {"background", {0, 0, 0}}, {"downscale", 2}}));
    CHECK(b.train[0].image.sizes() == c10::IntArrayRef{6, 8, 3});
    CHECK(b.train[0].camera.fx == Approx(c.fx / 2));
    CHECK(b.train[0].camera.cx == Approx(4));
  }
}

TEST_CASE("load_scene: detects the layout and records its defaults and rejects unknown keys", "[splatting]") {
  ef::test::ScratchDir dir("scene-config");
  write_nerf_fixture(dir.path);
  ef::Config data = ef::Config::from_json({{"path", dir.path.string()}, {"init_point", 10}});
  load_scene(data);
  CHECK(data.json()["format"] == "auto");
  CHECK(data.json()["test_every"] == 8);
  CHECK(data.json()["background"] == nlohmann::json({1, 1, 1}));
  CHECK_THAT(error_of([&] { data.reject_unknown_keys(); }), Catch::Contains("did you mean 'init_points'"));
  CHECK_THAT(error_of([&] { load_scene(ef::Config::from_json({{"path", (dir.path / "none").string()}})); }), Catch::Contains("none"));
  CHECK_THAT(error_of([&] { load_scene(ef::Config::from_json({{"path", dir.path.string()}, {"format", "blender"}})); }),
             Catch::Contains("format"));
  fs::create_directories(dir.path / "empty");
  CHECK_THAT(error_of([&] { load_scene(ef::Config::from_json({{"path", (dir.path / "empty").string()}})); }),
             Catch::Contains("transforms_train.json"));
}

TEST_CASE("splat-scene: generated through the CLI and read by the COLMAP loader", "[splatting][cli][data]") {
  ef::test::ScratchDir dir("splat-scene");
  const fs::path a = dir.path / "a", b = dir.path / "b";
  for (const fs::path& out : {a, b}) {
    const auto r = ef::test::run_command(ef::test::quote(cli()) + " data gen splat-scene --out " + ef::test::quote(out.string()) +
                                         " --set views=12 --set size=48 --set points=600 --set seed=3");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  // no temporary folders are left beside the scene
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) (void)e, ++entries;
  CHECK(entries == 2);
  CHECK(fs::exists(a / "sparse" / "0" / "cameras.bin"));
  CHECK(fs::exists(a / "images" / "view_011.png"));

  SECTION("the same bytes for the same seed") {
    for (const auto& e : fs::recursive_directory_iterator(a)) {
      if (!e.is_regular_file()) continue;
      const fs::path rel = fs::relative(e.path(), a);
      INFO(rel.string());
      CHECK(ef::read_file(e.path()) == ef::read_file(b / rel));
    }
  }

  SECTION("the loader reads views and ground truth that agree with the cameras") {
    const SceneData s = load_scene(ef::Config::from_json({{"path", a.string()}}));
    CHECK(s.format == "colmap");
    CHECK(s.train.size() == 10);  // sorted names, index % 8 == 0 is test: 0 and 8
    REQUIRE(s.test.size() == 2);
    CHECK(s.test[1].camera.name == "view_008.png");
    CHECK(torch::equal(s.background, torch::zeros({3})));
    CHECK(s.points.size(0) == 600);
    CHECK(s.extent > 1);
    REQUIRE(s.has_geometry());
    CHECK(s.planes.size(1) == 4);
    for (const auto& v : s.train) {
      CHECK(v.image.sizes() == c10::IntArrayRef{48, 48, 3});
      const torch::Tensor covered = v.depth > 0;
      CHECK(covered.to(torch::kFloat32).mean().item<float>() > 0.5f);  // geometry fills most of the view
      // where there is no surface the image is background (black, but for supersampled silhouettes)
      // and the normal is 0
      CHECK(v.image.index({covered.logical_not()}).mean().item<float>() < 0.05f);
      CHECK(v.normals.index({covered.logical_not()}).abs().sum().item<float>() == 0);
      const torch::Tensor n = v.normals.index({covered});
      CHECK(torch::allclose(n.norm(2, 1), torch::ones({n.size(0)}), 0, 1e-5));
      CHECK(v.plane_ids.index({covered.logical_not()}).abs().sum().item<int>() == 0);
      CHECK(v.plane_ids.max().item<int>() <= s.planes.size(0));
      CHECK(v.plane_ids.max().item<int>() >= 2);  // floor and wall at least
    }
    // a plane's pixels lie on that plane: back-project with the loaded camera and check n·x + d = 0
    const auto& v = s.train[0];
    const Camera& c = v.camera;
    const torch::Tensor R = c.rotation(), t = c.translation();
    int checked = 0;
    for (int y = 0; y < 48; y += 5)
      for (int x = 0; x < 48; x += 5) {
        const int id = v.plane_ids[y][x].item<int>();
        if (id == 0) continue;
        const double z = v.depth[y][x].item<float>();
        const torch::Tensor pc = torch::tensor({(x + 0.5 - c.cx) / c.fx * z, (y + 0.5 - c.cy) / c.fy * z, z}, torch::kFloat64);
        const torch::Tensor pw = torch::matmul(R.t(), pc - t);
        const torch::Tensor pl = s.planes[id - 1];
        CHECK(std::abs((torch::dot(pl.slice(0, 0, 3), pw) + pl[3]).item<double>()) < 1e-4);
        ++checked;
      }
    CHECK(checked > 20);
    // SfM points project near their pixel of the view whose track they carry, at about its depth
    const SceneData all = load_scene(ef::Config::from_json({{"path", a.string()}, {"test_every", 0}}));
    CHECK(all.train.size() == 12);
    CHECK(all.test.empty());
    int near = 0;
    for (int i = 0; i < 50; ++i) {  // points are written in view order, 50 per view
      const auto p = all.points[i];
      const Camera& c0 = all.train[0].camera;
      auto [u, w] = project(c0, {p[0].item<float>(), p[1].item<float>(), p[2].item<float>()});
      if (u >= 0 && u < 48 && w >= 0 && w < 48) {
        const float d = all.train[0].depth[int(w)][int(u)].item<float>();
        const torch::Tensor pc = torch::matmul(c0.world_to_camera.slice(0, 0, 3), torch::tensor({p[0].item<double>(), p[1].item<double>(), p[2].item<double>(), 1.0}, torch::kFloat64));
        near += std::abs(pc[2].item<double>() - d) < 0.15;
      }
    }
    CHECK(near > 40);
  }

  SECTION("images_2 is not shipped: a hint names downscale, and downscale resizes images, cameras and ground truth") {
    CHECK_THAT(error_of([&] { load_scene(ef::Config::from_json({{"path", a.string()}, {"images", "images_2"}})); }),
               Catch::Contains("downscale = 2"));
    const SceneData s = load_scene(ef::Config::from_json({{"path", a.string()}, {"downscale", 2}}));
    CHECK(s.train[0].image.sizes() == c10::IntArrayRef{24, 24, 3});
    CHECK(s.train[0].depth.sizes() == c10::IntArrayRef{24, 24});
    CHECK(s.train[0].camera.cx == Approx(12));
  }

  SECTION("data.generate makes the folder once and refuses one made with other parameters") {
    const fs::path c = dir.path / "c";
    auto data = [&](int views) {
      return ef::Config::from_json({{"path", c.string()}, {"generate", {{"views", views}, {"size", 16}, {"points", 40}}}});
    };
    CHECK(load_scene(data(10)).train.size() == 8);
    CHECK(fs::exists(c / "generator.json"));
    CHECK(load_scene(data(10)).test.size() == 2);
    CHECK_THAT(error_of([&] { load_scene(data(11)); }), Catch::Contains("was generated with"));
  }
}

TEST_CASE("colmap loader: shipped images_N folders and bad input", "[splatting][colmap]") {
  ef::test::ScratchDir dir("colmap-loader");
  const fs::path root = dir.path / "s";
  SplatSceneParams p;
  p.views = 4, p.size = 50, p.points = 8;
  generate_splat_scene(p, root);
  auto load = [&](nlohmann::json extra) {
    extra["path"] = root.string();
    return load_scene(ef::Config::from_json(extra));
  };
  const SceneData full = load({{"test_every", 0}});
  const Camera& c = full.train[1].camera;

  SECTION("images_4 shipped with rounded sizes: cameras scale by the realised ratio") {
    fs::create_directories(root / "images_4");
    for (const auto& v : full.train)
      ef::write_png(root / "images_4" / v.camera.name, ef::to_uint8_hwc(resize_image(v.image, 13, 13).permute({2, 0, 1})));
    const SceneData s = load({{"images", "images_4"}, {"test_every", 0}});
    const Camera& q = s.train[1].camera;
    CHECK(q.width == 13);
    CHECK(q.fx == Approx(c.fx * 13 / 50));
    CHECK(q.cy == Approx(c.cy * 13 / 50));
    CHECK(torch::equal(q.world_to_camera, c.world_to_camera));
    CHECK(s.train[1].depth.sizes() == c10::IntArrayRef{13, 13});
  }
  SECTION("a distorted camera model is refused before any image is read") {
    ColmapModel m = read_colmap_model(root / "sparse" / "0");
    m.cameras[1].model = static_cast<int32_t>(ColmapModelId::OpenCV);
    m.cameras[1].params = {c.fx, c.fy, c.cx, c.cy, 0.05, 0, 0, 0};
    write_colmap_model(root / "sparse" / "0", m, ColmapEncoding::Binary);
    const std::string msg = error_of([&] { load({}); });
    CHECK_THAT(msg, Catch::Contains("OPENCV") && Catch::Contains("image_undistorter") && Catch::Contains("cameras.bin"));
  }
  SECTION("an image that does not decode is named") {
    ef::write_file_atomically(root / "images" / "view_002.png", "not an image at all");
    CHECK_THAT(error_of([&] { load({}); }), Catch::Contains("view_002.png"));
  }
  SECTION("a missing image and a missing folder are named") {
    fs::remove(root / "images" / "view_003.png");
    CHECK_THAT(error_of([&] { load({}); }), Catch::Contains("view_003.png"));
    fs::remove_all(root / "images");
    CHECK_THAT(error_of([&] { load({}); }), Catch::Contains("image folder not found"));
  }
  SECTION("text models load the same scene") {
    write_colmap_model(root / "sparse" / "0", read_colmap_model(root / "sparse" / "0"), ColmapEncoding::Text);
    for (const char* f : {"cameras.bin", "images.bin", "points3D.bin"}) fs::remove(root / "sparse" / "0" / f);
    const SceneData t = load({{"test_every", 0}});
    CHECK(torch::equal(t.train[1].camera.world_to_camera, c.world_to_camera));
    CHECK(torch::equal(t.points, full.points));
  }
}
