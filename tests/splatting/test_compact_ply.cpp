// The compressed 3DGS layout (splatting/compact_ply.h): the documented header and byte count, every
// field back within its quantization step, the rotation's smallest-three code for each position of
// the largest component, extras kept exactly, Morton order, and clear errors for damaged files.
#include <catch2/catch.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "splatting/compact_ply.h"
#include "splatting/ply.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace ef::splat;

namespace {

// Gaussians on a line along x (y = z = 0, x increasing): their Morton order is the given order, so
// the decoded Gaussian i is the written Gaussian i.
GaussianParams line_scene(int64_t n) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  GaussianParams g;
  g.means = torch::zeros({n, 3});
  g.means.select(1, 0).copy_(torch::linspace(-2, 3, n));
  g.scales = torch::rand({n, 3}, gen) * 3 - 5;
  g.quats = torch::randn({n, 4}, gen);
  g.opacities = torch::randn({n}, gen) * 2;
  g.sh = torch::randn({n, 16, 3}, gen) * 0.5;
  g.extras["opacity_sh"] = torch::randn({n, 4}, gen);
  return g;
}

}  // namespace

TEST_CASE("compact ply: the documented layout and byte count", "[splatting][ply]") {
  ef::test::ScratchDir dir("compact-layout");
  GaussianParams g = line_scene(600);  // 3 chunks, the last one partial
  g.extras.clear();
  const int64_t bytes = write_compact_ply(dir.path / "s.ply", g);
  const std::string file = ef::read_file(dir.path / "s.ply");
  CHECK(bytes == static_cast<int64_t>(file.size()));
  const size_t body = file.find("end_header\n") + 11;
  CHECK(file.size() - body == 3 * 18 * 4 + 600 * 16 + 600 * 45);  // chunk floats, 4 uints, 45 uchar SH
  const std::string header = file.substr(0, body);
  for (const char* line : {"element chunk 3\n", "property float min_x\n", "property float max_scale_z\n", "property float max_b\n", "element vertex 600\n",
                           "property uint packed_position\n", "property uint packed_rotation\n", "property uint packed_scale\n",
                           "property uint packed_color\n", "element sh 600\n", "property uchar f_rest_44\n"})
    CHECK(header.find(line) != std::string::npos);
  // about a quarter of the standard file at SH degree 3 (16 + 45 bytes against 248 per Gaussian)
  write_ply(dir.path / "standard.ply", g);
  CHECK(static_cast<double>(bytes) / static_cast<double>(fs::file_size(dir.path / "standard.ply")) < 0.26);
}

TEST_CASE("compact ply: every field comes back within its quantization step", "[splatting][ply]") {
  ef::test::ScratchDir dir("compact-roundtrip");
  const int64_t n = 600;
  GaussianParams g = line_scene(n);
  write_compact_ply(dir.path / "s.ply", g);
  GaussianParams d = read_ply(dir.path / "s.ply");
  REQUIRE(d.size() == n);
  REQUIRE(d.sh.sizes() == g.sh.sizes());
  // positions: 11 bits over each chunk's x range (about 5 * 256 / 600 wide), y = z = 0 exactly
  CHECK((d.means.select(1, 0) - g.means.select(1, 0)).abs().max().item<double>() <= 2.2 / 2047 * 0.5 + 1e-6);
  CHECK(d.means.slice(1, 1).abs().max().item<double>() == 0);
  // log scales: 11/10/11 bits over the chunk's range (< 3)
  CHECK((d.scales - g.scales).abs().max().item<double>() <= 3.0 / 1023 * 0.5 + 1e-5);
  // rotations: the same unit quaternion up to sign, 10 bits per component
  torch::Tensor qg = g.quats / g.quats.norm(2, 1, true), qd = d.quats;
  CHECK((qd.norm(2, 1) - 1).abs().max().item<double>() < 1e-5);
  torch::Tensor dot = (qg * qd).sum(1).abs();
  CHECK(dot.min().item<double>() > 1 - 1e-5);
  // every position of the largest component occurs, and each decodes
  torch::Tensor largest = qg.abs().argmax(1);
  for (int64_t k = 0; k < 4; ++k) CHECK((largest == k).sum().item<int64_t>() > 0);
  // opacity: 8 bits of sigmoid(opacity)
  CHECK((torch::sigmoid(d.opacities) - torch::sigmoid(g.opacities)).abs().max().item<double>() <= 0.5 / 255 + 1e-6);
  // DC colour 0.5 + C0 f_dc: 8 bits over the chunk's colour range
  torch::Tensor rgb_g = 0.5 + kShC0 * g.sh.select(1, 0), rgb_d = 0.5 + kShC0 * d.sh.select(1, 0);
  const double colour_range = (std::get<0>(rgb_g.max(0)) - std::get<0>(rgb_g.min(0))).max().item<double>();
  CHECK((rgb_d - rgb_g).abs().max().item<double>() <= colour_range / 255 * 0.5 + 1e-5);
  // higher SH: 8 bits over [-4, 4]
  CHECK((d.sh.slice(1, 1) - g.sh.slice(1, 1)).abs().max().item<double>() <= 4.0 / 255 + 1e-5);
  // extras: float32, exact
  REQUIRE(d.extras.count("opacity_sh"));
  CHECK(torch::equal(d.extras.at("opacity_sh"), g.extras.at("opacity_sh")));
}

TEST_CASE("compact ply: Gaussians are written in Morton order of their centres", "[splatting][ply]") {
  ef::test::ScratchDir dir("compact-morton");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  GaussianParams g = line_scene(512);
  g.means = torch::rand({512, 3}, gen);
  write_compact_ply(dir.path / "s.ply", g);
  GaussianParams d = read_ply(dir.path / "s.ply");
  // the same set of centres (each decoded centre lies next to one written centre)
  torch::Tensor dist = std::get<0>(torch::cdist(d.means, g.means).min(1));
  CHECK(dist.max().item<double>() < 1e-3);
  // a chunk spans a fraction of the scene: Morton order keeps its Gaussians together
  torch::Tensor first = d.means.slice(0, 0, 256), second = d.means.slice(0, 256, 512);
  auto extent = [](const torch::Tensor& m) { return (std::get<0>(m.max(0)) - std::get<0>(m.min(0))).prod().item<double>(); };
  CHECK(extent(first) < 0.6);
  CHECK(extent(second) < 0.6);
}

TEST_CASE("compact ply: damaged files fail naming the file and what is wrong", "[splatting][ply]") {
  ef::test::ScratchDir dir("compact-errors");
  GaussianParams g = line_scene(300);
  write_compact_ply(dir.path / "s.ply", g);
  const std::string file = ef::read_file(dir.path / "s.ply");
  ef::write_file_atomically(dir.path / "short.ply", file.substr(0, file.size() - 100));
  REQUIRE_THROWS_WITH(read_ply(dir.path / "short.ply"), Catch::Matchers::Contains("short.ply") && Catch::Matchers::Contains("truncated"));
  std::string wrong = file;
  wrong.replace(wrong.find("element chunk 2"), 15, "element chunk 5");
  ef::write_file_atomically(dir.path / "chunks.ply", wrong);
  REQUIRE_THROWS_WITH(read_ply(dir.path / "chunks.ply"), Catch::Matchers::Contains("chunks.ply"));
  std::string renamed = file;
  renamed.replace(renamed.find("packed_rotation"), 15, "packed_rotatio_");
  ef::write_file_atomically(dir.path / "prop.ply", renamed);
  REQUIRE_THROWS_WITH(read_ply(dir.path / "prop.ply"), Catch::Matchers::Contains("packed_rotation"));
}

TEST_CASE("compact ply: an independent numpy decoder reads what read_ply reads", "[splatting][ply][interop]") {
  ef::test::ScratchDir dir("compact-interop");
  GaussianParams g = line_scene(300);
  g.extras.clear();  // the decoder knows the standard elements only
  write_compact_ply(dir.path / "s.ply", g);
  const std::string python = ef::test::env_or_fail("EDGEFORGE_PYTHON");
  const std::string script = ef::test::source_dir() + "/tests/interop/decode_compressed_ply.py";
  const auto r = ef::test::run_command(ef::test::quote(python) + " " + ef::test::quote(script) + " " + ef::test::quote((dir.path / "s.ply").string()));
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.output);
  REQUIRE(j["count"] == 300);
  auto tensor = [](const nlohmann::json& v) {
    std::vector<double> flat;
    for (const auto& row : v) {
      if (row.is_array())
        for (double x : row) flat.push_back(x);
      else
        flat.push_back(row.get<double>());
    }
    return torch::tensor(flat, torch::kDouble).to(torch::kFloat);
  };
  GaussianParams d = read_ply(dir.path / "s.ply");
  CHECK(torch::allclose(tensor(j["means"]).view({300, 3}), d.means, 1e-5, 1e-5));
  CHECK(torch::allclose(tensor(j["scales"]).view({300, 3}), d.scales, 1e-5, 1e-5));
  CHECK(torch::allclose(tensor(j["quats"]).view({300, 4}), d.quats, 1e-5, 1e-5));
  CHECK(torch::allclose(tensor(j["opacities"]), d.opacities, 1e-4, 1e-4));
  CHECK(torch::allclose(tensor(j["f_dc"]).view({300, 3}), d.sh.select(1, 0), 1e-5, 1e-5));
  // f_rest in the standard channel-major order: f_rest_[15c + k - 1] = sh[:, k, c]
  CHECK(torch::allclose(tensor(j["f_rest"]).view({300, 3, 15}).permute({0, 2, 1}), d.sh.slice(1, 1), 1e-5, 1e-5));
}
