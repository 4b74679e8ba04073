// The 3DGS .ply: bit-exact round trips (degree 3 and 1, with extras), the standard layout as a
// numpy-only reader sees it, tolerant reading (ascii, other property orders, fewer f_rest, unknown
// properties) and clear errors for truncated or foreign files.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "splatting/ply.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace ef::splat;

namespace {

// Distinct, non-round values in every slot so that a swapped column or channel shows.
GaussianParams make_gaussians(int64_t n, int64_t degree, bool extras) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234 + degree);
  GaussianParams g;
  g.means = torch::randn({n, 3}, gen);
  g.scales = torch::randn({n, 3}, gen) - 3;
  g.quats = torch::randn({n, 4}, gen);
  g.opacities = torch::randn({n}, gen);
  g.sh = torch::randn({n, sh_coeffs(degree), 3}, gen);
  if (extras) {
    g.extras["descriptor"] = torch::randn({n, 16}, gen);
    g.extras["opacity_sh"] = torch::randn({n, 4, 2}, gen);
    g.extras["plane"] = torch::randn({n}, gen);
  }
  return g;
}

void check_same(const GaussianParams& a, const GaussianParams& b) {
  CHECK(torch::equal(a.means, b.means));
  CHECK(torch::equal(a.scales, b.scales));
  CHECK(torch::equal(a.quats, b.quats));
  CHECK(torch::equal(a.opacities, b.opacities));
  REQUIRE(a.sh.sizes() == b.sh.sizes());
  CHECK(torch::equal(a.sh, b.sh));
  REQUIRE(a.extras.size() == b.extras.size());
  for (const auto& [name, t] : a.extras) {
    INFO(name);
    REQUIRE(b.extras.count(name));
    CHECK(t.sizes() == b.extras.at(name).sizes());
    CHECK(torch::equal(t, b.extras.at(name)));
  }
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

TEST_CASE("ply: write and read back bit for bit", "[splatting][ply]") {
  ef::test::ScratchDir dir("ply-roundtrip");
  for (int64_t degree : {3, 1, 0}) {
    for (bool extras : {false, true}) {
      INFO("degree " << degree << " extras " << extras);
      const GaussianParams g = make_gaussians(37, degree, extras);
      const fs::path file = dir.path / ("g" + std::to_string(degree) + (extras ? "x" : "") + ".ply");
      write_ply(file, g);
      const GaussianParams r = read_ply(file);
      CHECK(r.sh_degree() == degree);
      check_same(g, r);
    }
  }
  SECTION("the degree-3 file is 62 float properties, 248 bytes per vertex") {
    const GaussianParams g = make_gaussians(5, 3, false);
    write_ply(dir.path / "s.ply", g);
    const std::string bytes = ef::read_file(dir.path / "s.ply");
    const size_t end = bytes.find("end_header\n") + 11;
    CHECK(bytes.size() - end == 5 * 248);
    CHECK(standard_ply_properties(3).size() == 62);
    CHECK_THAT(bytes.substr(0, end), Catch::Contains("format binary_little_endian 1.0\n"));
    CHECK_THAT(bytes.substr(0, end), Catch::Contains("element vertex 5\n"));
  }
}

TEST_CASE("ply: a numpy-only reader sees the standard 3DGS layout", "[splatting][ply][interop]") {
  ef::test::ScratchDir dir("ply-interop");
  const std::string python = ef::test::env_or_fail("EDGEFORGE_PYTHON");
  const std::string script = ef::test::source_dir() + "/tests/interop/read_splat_ply.py";
  GaussianParams g = make_gaussians(4, 3, false);
  g.extras["descriptor"] = torch::arange(8, torch::kFloat32).view({4, 2}) + 0.5;
  write_ply(dir.path / "scene.ply", g);
  const auto r = ef::test::run_command(ef::test::quote(python) + " " + ef::test::quote(script) + " --expect-degree 3 " +
                                       ef::test::quote((dir.path / "scene.ply").string()));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.output);
  CHECK(j["count"] == 4);
  CHECK(j["bytes_per_vertex"] == 248 + 2 * 4);
  const auto names = j["names"].get<std::vector<std::string>>();
  REQUIRE(names.size() == 64);
  CHECK(names[9] == "f_rest_0");
  CHECK(names[53] == "f_rest_44");
  CHECK(names[54] == "opacity");
  CHECK(names[62] == "descriptor_0");
  CHECK(names[63] == "descriptor_1");
  // values: raw parameters, f_rest channel-major (f_rest_[15c + k-1] = sh[:, k, c]), zero normals
  for (int64_t i = 0; i < 4; ++i) {
    const auto row = j["values"][i].get<std::vector<double>>();
    for (int k = 0; k < 3; ++k) {
      CHECK(static_cast<float>(row[k]) == g.means[i][k].item<float>());
      CHECK(row[3 + k] == 0.0);
      CHECK(static_cast<float>(row[6 + k]) == g.sh[i][0][k].item<float>());
      CHECK(static_cast<float>(row[55 + k]) == g.scales[i][k].item<float>());
    }
    for (int c = 0; c < 3; ++c)
      for (int k = 1; k < 16; ++k) CHECK(static_cast<float>(row[9 + 15 * c + (k - 1)]) == g.sh[i][k][c].item<float>());
    CHECK(static_cast<float>(row[54]) == g.opacities[i].item<float>());
    for (int k = 0; k < 4; ++k) CHECK(static_cast<float>(row[58 + k]) == g.quats[i][k].item<float>());
    CHECK(row[62] == 2 * i + 0.5);
  }
}

TEST_CASE("ply: reads ascii files with other property orders and unknown properties", "[splatting][ply]") {
  ef::test::ScratchDir dir("ply-ascii");
  std::ofstream(dir.path / "a.ply") << "ply\nformat ascii 1.0\ncomment from another tool\nelement vertex 2\n"
                                       "property float opacity\nproperty double rot_0\nproperty float rot_1\nproperty float rot_2\n"
                                       "property float rot_3\nproperty float scale_0\nproperty float scale_1\nproperty float scale_2\n"
                                       "property float f_dc_0\nproperty float f_dc_1\nproperty float f_dc_2\nproperty uchar red\n"
                                       "property float x\nproperty float y\nproperty float z\nelement face 0\n"
                                       "property list uchar int vertex_indices\nend_header\n"
                                       "0.5 1 0 0 0 -1 -2 -3 0.1 0.2 0.3 200 1 2 3\n"
                                       "-0.5 0 1 0 0 -4 -5 -6 0.4 0.5 0.6 7 4 5 6\n";
  const GaussianParams g = read_ply(dir.path / "a.ply");
  CHECK(g.size() == 2);
  CHECK(g.sh_degree() == 0);
  CHECK(torch::equal(g.means, torch::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}).view({2, 3})));
  CHECK(torch::equal(g.quats[1], torch::tensor({0.f, 1.f, 0.f, 0.f})));
  CHECK(g.opacities[1].item<float>() == -0.5f);
  CHECK(g.sh[1][0][2].item<float>() == 0.6f);
  REQUIRE(g.extras.count("red"));
  CHECK(g.extras.at("red").sizes() == c10::IntArrayRef{2});
  CHECK(g.extras.at("red")[0].item<float>() == 200.f);
}

TEST_CASE("ply: truncated and foreign files give clear errors", "[splatting][ply]") {
  ef::test::ScratchDir dir("ply-errors");
  write_ply(dir.path / "g.ply", make_gaussians(10, 2, true));
  const std::string bytes = ef::read_file(dir.path / "g.ply");
  SECTION("truncated data") {
    ef::write_file_atomically(dir.path / "t.ply", bytes.substr(0, bytes.size() - 3));
    const std::string msg = error_of([&] { read_ply(dir.path / "t.ply"); });
    CHECK_THAT(msg, Catch::Contains("t.ply"));
    CHECK_THAT(msg, Catch::Contains("truncated"));
  }
  SECTION("truncated header") {
    ef::write_file_atomically(dir.path / "h.ply", bytes.substr(0, 40));
    CHECK_THAT(error_of([&] { read_ply(dir.path / "h.ply"); }), Catch::Contains("end_header"));
  }
  SECTION("not a ply") {
    ef::write_file_atomically(dir.path / "n.ply", "\x89PNG\r\n\x1a\n");
    CHECK_THAT(error_of([&] { read_ply(dir.path / "n.ply"); }), Catch::Contains("not a PLY file"));
  }
  SECTION("missing file") { CHECK_THAT(error_of([&] { read_ply(dir.path / "none.ply"); }), Catch::Contains("none.ply")); }
  SECTION("an f_rest count that is no SH degree") {
    std::ofstream(dir.path / "r.ply") << "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                                         "property float z\nproperty float f_dc_0\nproperty float f_dc_1\nproperty float f_dc_2\n"
                                         "property float f_rest_0\nproperty float opacity\nproperty float scale_0\n"
                                         "property float scale_1\nproperty float scale_2\nproperty float rot_0\nproperty float rot_1\n"
                                         "property float rot_2\nproperty float rot_3\nend_header\n0 0 0 0 0 0 0 0 0 0 0 1 0 0 0\n";
    CHECK_THAT(error_of([&] { read_ply(dir.path / "r.ply"); }), Catch::Contains("f_rest"));
  }
}
