// COLMAP sparse models: exact round trips through our writer and reader in both encodings, the
// pose convention (world -> camera, centre = -R^T t), refusal of distorted camera models, and
// clear errors for truncated or missing files.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include "core/atomic_file.h"
#include "core/config.h"
#include "splatting/colmap.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace ef::splat;

namespace {

// Awkward values on purpose (thirds, tiny and huge magnitudes), so that text round trips are exact
// only if every digit is kept.
ColmapModel fixture() {
  ColmapModel m;
  m.cameras[1] = ColmapCamera{1, static_cast<int32_t>(ColmapModelId::Pinhole), 640, 480, {500.0 + 1.0 / 3, 501.25, 320.1, 239.7}};
  m.cameras[7] = ColmapCamera{7, static_cast<int32_t>(ColmapModelId::SimplePinhole), 33, 17, {12.0 / 7, 16.5, 8.5}};
  for (int i = 0; i < 3; ++i) {
    ColmapImage im;
    im.id = 10 + i;
    const double a = 0.3 + i, n = std::sqrt(1 + a * a + 0.01 + 1e-6);
    im.qvec = {1 / n, a / n, 0.1 / n, 1e-3 / n};
    im.tvec = {1.0 / 3 * i, -2.5e-7, 1e5 + i};
    im.camera_id = i == 2 ? 7 : 1;
    im.name = "frame_" + std::to_string(2 - i) + ".jpg";
    for (int k = 0; k < i + 1; ++k) im.points2d.push_back({k + 0.25, 1.0 / (k + 3), k == 1 ? -1 : int64_t(k + 100)});
    m.images.push_back(im);
  }
  for (int i = 0; i < 4; ++i) {
    ColmapPoint3D p;
    p.id = 100 + static_cast<uint64_t>(i);
    p.xyz = {i / 3.0, -i * 1e-9, 7.0e3 / (i + 1)};
    p.rgb = {static_cast<uint8_t>(i * 60), 255, 0};
    p.error = 0.1 * i;
    for (int k = 0; k < i; ++k) p.track.emplace_back(10 + k, k);
    m.points.push_back(p);
  }
  return m;
}

void check_equal(const ColmapModel& a, const ColmapModel& b) {
  const bool same_cameras = a.cameras == b.cameras;
  CHECK(same_cameras);
  REQUIRE(a.images.size() == b.images.size());
  for (size_t i = 0; i < a.images.size(); ++i) CHECK((a.images[i] == b.images[i]));
  REQUIRE(a.points.size() == b.points.size());
  for (size_t i = 0; i < a.points.size(); ++i) CHECK((a.points[i] == b.points[i]));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("colmap: binary and text models round trip exactly", "[splatting][colmap]") {
  ef::test::ScratchDir dir("colmap-roundtrip");
  const ColmapModel m = fixture();
  write_colmap_model(dir.path / "bin", m, ColmapEncoding::Binary);
  write_colmap_model(dir.path / "txt", m, ColmapEncoding::Text);
  CHECK(fs::exists(dir.path / "bin" / "images.bin"));
  CHECK(fs::exists(dir.path / "txt" / "points3D.txt"));
  SECTION("binary") { check_equal(read_colmap_model(dir.path / "bin"), m); }
  SECTION("text") { check_equal(read_colmap_model(dir.path / "txt"), m); }
  SECTION("binary is preferred when both exist") {
    write_colmap_model(dir.path / "txt", m, ColmapEncoding::Binary);
    fs::remove(dir.path / "txt" / "points3D.bin");  // falls back per file
    check_equal(read_colmap_model(dir.path / "txt"), m);
  }
  SECTION("cameras.bin has the documented byte layout") {
    const std::string b = ef::read_file(dir.path / "bin" / "cameras.bin");
    // u64 n, then per camera i32 id, i32 model, u64 w, u64 h, f64 params[k]
    CHECK(b.size() == 8 + (4 + 4 + 8 + 8 + 4 * 8) + (4 + 4 + 8 + 8 + 3 * 8));
  }
}

TEST_CASE("colmap: poses map world to camera and the centre is -R^T t", "[splatting][colmap]") {
  ColmapCamera cam{1, static_cast<int32_t>(ColmapModelId::Pinhole), 100, 80, {90, 95, 50, 40}};
  ColmapImage im;
  const double h = std::sqrt(0.5);
  im.qvec = {h, 0, 0, h};  // 90 degrees about z: R = [[0,-1,0],[1,0,0],[0,0,1]]
  im.tvec = {1, 2, 3};
  im.name = "a.png";
  const Camera c = to_camera(cam, im, "cameras.bin");
  CHECK(c.fx == 90);
  CHECK(c.fy == 95);
  CHECK(c.cx == 50);
  CHECK(c.cy == 40);
  CHECK(c.name == "a.png");
  const torch::Tensor want_R = torch::tensor({0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0}, torch::kFloat64).view({3, 3});
  CHECK(torch::allclose(c.rotation(), want_R, 0, 1e-15));
  // -R^T t = -([0,1,0],[-1,0,0],[0,0,1]) (1,2,3) = (-2, 1, -3)
  CHECK(torch::allclose(c.center(), torch::tensor({-2.0, 1.0, -3.0}, torch::kFloat64), 0, 1e-12));
  // the centre maps to the camera origin
  const torch::Tensor p = torch::matmul(c.world_to_camera, torch::cat({c.center(), torch::ones({1}, torch::kFloat64)}));
  CHECK(p.slice(0, 0, 3).abs().max().item<double>() < 1e-12);
  // quaternion <-> rotation agree both ways
  const auto q = colmap_rotation_to_quat(colmap_quat_to_rotation({0.3, -0.5, 0.2, 0.7}));
  const double n = std::sqrt(0.09 + 0.25 + 0.04 + 0.49);
  CHECK(q[0] == Approx(0.3 / n).margin(1e-14));
  CHECK(q[1] == Approx(-0.5 / n).margin(1e-14));
  CHECK(q[3] == Approx(0.7 / n).margin(1e-14));
}

TEST_CASE("colmap: distorted camera models are refused with a pointer to image_undistorter", "[splatting][colmap]") {
  ColmapImage im;
  im.name = "a.png";
  ColmapCamera cam{3, static_cast<int32_t>(ColmapModelId::OpenCV), 100, 80, {90, 95, 50, 40, 0.1, -0.02, 0, 0}};
  const std::string msg = error_of([&] { to_camera(cam, im, "scene/sparse/0/cameras.bin"); });
  CHECK_THAT(msg, Catch::Contains("OPENCV"));
  CHECK_THAT(msg, Catch::Contains("image_undistorter"));
  CHECK_THAT(msg, Catch::Contains("scene/sparse/0/cameras.bin"));
  SECTION("the same model with all distortion exactly zero is a pinhole") {
    cam.params = {90, 95, 50, 40, 0, 0, 0, 0};
    CHECK(to_camera(cam, im, "c").fy == 95);
    ColmapCamera radial{4, static_cast<int32_t>(ColmapModelId::SimpleRadial), 100, 80, {90, 50, 40, 0}};
    CHECK(to_camera(radial, im, "c").fy == 90);
  }
  SECTION("fisheye models are refused even without distortion") {
    ColmapCamera fisheye{5, static_cast<int32_t>(ColmapModelId::OpenCVFisheye), 100, 80, {90, 95, 50, 40, 0, 0, 0, 0}};
    CHECK_THAT(error_of([&] { to_camera(fisheye, im, "c"); }), Catch::Contains("OPENCV_FISHEYE"));
  }
}

TEST_CASE("colmap: cameras with no size or a zero, negative or non-finite focal length are refused", "[splatting][colmap]") {
  ColmapImage im;
  im.name = "a.png";
  const auto pinhole = static_cast<int32_t>(ColmapModelId::Pinhole);
  CHECK(to_camera(ColmapCamera{1, pinhole, 100, 80, {90, 95, 50, 40}}, im, "c").fx == 90);
  for (const ColmapCamera& bad : {ColmapCamera{2, pinhole, 0, 80, {90, 95, 50, 40}}, ColmapCamera{3, pinhole, 100, 0, {90, 95, 50, 40}},
                                  ColmapCamera{4, pinhole, 100, 80, {0, 95, 50, 40}}, ColmapCamera{5, pinhole, 100, 80, {90, -95, 50, 40}},
                                  ColmapCamera{6, pinhole, 100, 80, {NAN, 95, 50, 40}}, ColmapCamera{7, pinhole, 100, 80, {90, 95, INFINITY, 40}}}) {
    INFO("camera " << bad.id);
    CHECK_THROWS_AS(to_camera(bad, im, "scene/sparse/0/cameras.txt"), ef::InputError);
    CHECK_THAT(error_of([&] { to_camera(bad, im, "scene/sparse/0/cameras.txt"); }),
               Catch::Contains("cameras.txt") && Catch::Contains("camera " + std::to_string(bad.id)));
  }
}

TEST_CASE("colmap: truncated and missing files give errors naming the file", "[splatting][colmap]") {
  ef::test::ScratchDir dir("colmap-errors");
  write_colmap_model(dir.path, fixture(), ColmapEncoding::Binary);
  SECTION("truncated images.bin") {
    const std::string b = ef::read_file(dir.path / "images.bin");
    ef::write_file_atomically(dir.path / "images.bin", b.substr(0, b.size() - 9));
    const std::string msg = error_of([&] { read_colmap_model(dir.path); });
    CHECK_THAT(msg, Catch::Contains("images.bin"));
    CHECK_THAT(msg, Catch::Contains("truncated"));
  }
  SECTION("truncated points3D.bin with a huge count") {
    ef::write_file_atomically(dir.path / "points3D.bin", std::string("\xff\xff\xff\xff\xff\xff\xff\x0f", 8));
    const std::string msg = error_of([&] { read_colmap_model(dir.path); });
    CHECK_THAT(msg, Catch::Contains("points3D.bin"));
    CHECK_THAT(msg, Catch::Contains("truncated"));
  }
  SECTION("missing points3D") {
    fs::remove(dir.path / "points3D.bin");
    CHECK_THAT(error_of([&] { read_colmap_model(dir.path); }), Catch::Contains("points3D.bin"));
  }
  SECTION("a bad text line names the file and line") {
    write_colmap_model(dir.path / "t", fixture(), ColmapEncoding::Text);
    std::ofstream(dir.path / "t" / "cameras.txt") << "# c\n1 PINHOLE 10 10 5 5 5\n";
    const std::string msg = error_of([&] { read_colmap_model(dir.path / "t"); });
    CHECK_THAT(msg, Catch::Contains("cameras.txt:2"));
  }
  SECTION("an unknown model name in text") {
    write_colmap_model(dir.path / "t", fixture(), ColmapEncoding::Text);
    std::ofstream(dir.path / "t" / "cameras.txt") << "1 PINHOLEX 10 10 5 5 5 5\n";
    CHECK_THAT(error_of([&] { read_colmap_model(dir.path / "t"); }), Catch::Contains("PINHOLEX"));
  }
}
