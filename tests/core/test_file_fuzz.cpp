// File fuzzer (ggml test-backend-ops style: one table of cases): every format the project reads is
// written small and valid by our own writer, then truncated at many points and bit-flipped at
// many places (seeded), and read back. A mutated file must give either a result (a flipped pixel
// is still a picture) or an exception whose message names the file; never a crash, a hang or an
// exception without a name. The readers run in this process: a crash fails the suite.
#include <catch2/catch.hpp>

#include <functional>
#include <random>

#include "core/atomic_file.h"
#include "core/hdf5_file.h"
#include "core/image_io.h"
#include "core/safetensors.h"
#include "flow/flow_io.h"
#include "splatting/colmap.h"
#include "splatting/ply.h"
#include "tests/core/jpeg_writer.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

namespace {

struct Format {
  std::string name;
  std::string file;                                   // the file the mutations are applied to
  std::function<void(const fs::path& dir)> write;     // writes a valid file (and its companions) into dir
  std::function<void(const fs::path& dir)> read;      // reads it back
};

ef::splat::GaussianParams small_scene() {
  torch::manual_seed(0);
  ef::splat::GaussianParams g;
  const int64_t n = 5;
  g.means = torch::randn({n, 3});
  g.scales = torch::randn({n, 3});
  g.quats = torch::randn({n, 4});
  g.opacities = torch::randn({n});
  g.sh = torch::randn({n, 4, 3});
  return g;
}

ef::splat::ColmapModel small_colmap() {
  ef::splat::ColmapModel m;
  ef::splat::ColmapCamera c;
  c.id = 1;
  c.model = ef::splat::colmap_model_from_name("PINHOLE");
  c.width = 8;
  c.height = 6;
  c.params = {10, 10, 4, 3};
  m.cameras[1] = c;
  ef::splat::ColmapImage im;
  im.id = 1;
  im.camera_id = 1;
  im.name = "a.png";
  im.points2d = {{1.5, 2.5, 1}};
  m.images.push_back(im);
  ef::splat::ColmapPoint3D p;
  p.id = 1;
  p.xyz = {0, 0, 1};
  p.track = {{1, 0}};
  m.points.push_back(p);
  return m;
}

const std::vector<Format>& formats() {
  static const std::vector<Format> all = {
      {"png", "a.png", [](const fs::path& d) { ef::write_png(d / "a.png", torch::randint(0, 255, {6, 5, 3}).to(torch::kUInt8)); },
       [](const fs::path& d) { (void)ef::read_image(d / "a.png"); }},
      {"jpeg", "a.jpg",
       [](const fs::path& d) {
         ef::test::write_test_jpeg(d / "a.jpg", 9, 7, 3, JCS_RGB, [](int x, int y, unsigned char* out) {
           out[0] = static_cast<unsigned char>(20 * x), out[1] = static_cast<unsigned char>(30 * y), out[2] = 90;
         });
       },
       [](const fs::path& d) { (void)ef::read_image(d / "a.jpg"); }},
      {"safetensors", "w.safetensors",
       [](const fs::path& d) { ef::save_safetensors(d / "w.safetensors", {{"a.weight", torch::randn({3, 4})}, {"b", torch::arange(6)}}, {{"k", "v"}}); },
       [](const fs::path& d) { (void)ef::load_safetensors(d / "w.safetensors"); }},
      {"hdf5", "d.h5",
       [](const fs::path& d) {
         ef::write_h5_atomically(d / "d.h5", [](ef::H5File& f) {
           f.write("train/images", torch::randint(0, 255, {4, 6, 6, 3}).to(torch::kUInt8));
           f.set_attr("params", std::string("{}"));
         });
       },
       [](const fs::path& d) {
         ef::H5File f(d / "d.h5", ef::H5File::Mode::Read);
         (void)f.read("train/images");
         (void)f.attr_string("params");
       }},
      {"ply", "s.ply", [](const fs::path& d) { ef::splat::write_ply(d / "s.ply", small_scene()); },
       [](const fs::path& d) { (void)ef::splat::read_ply(d / "s.ply"); }},
      {"flo", "f.flo", [](const fs::path& d) { ef::flow::write_flo(d / "f.flo", torch::randn({4, 5, 2})); },
       [](const fs::path& d) { (void)ef::flow::read_flo(d / "f.flo"); }},
      {"kitti flow png", "k.png",
       [](const fs::path& d) { ef::flow::write_kitti_flow(d / "k.png", torch::randn({4, 5, 2}), torch::ones({4, 5}, torch::kBool)); },
       [](const fs::path& d) { (void)ef::flow::read_kitti_flow(d / "k.png"); }},
      {"colmap images.bin", "images.bin",
       [](const fs::path& d) { ef::splat::write_colmap_model(d, small_colmap(), ef::splat::ColmapEncoding::Binary); },
       [](const fs::path& d) { (void)ef::splat::read_colmap_model(d); }},
      {"colmap cameras.txt", "cameras.txt",
       [](const fs::path& d) { ef::splat::write_colmap_model(d, small_colmap(), ef::splat::ColmapEncoding::Text); },
       [](const fs::path& d) { (void)ef::splat::read_colmap_model(d); }},
  };
  return all;
}

// Reads the mutated file: a result, or an exception that names it. Returns "" when fine, else
// what went wrong.
std::string check_read(const Format& f, const fs::path& dir) {
  try {
    f.read(dir);
    return "";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    if (what.find(f.file) == std::string::npos) return "an error that does not name " + f.file + ": " + what;
    return "";
  }
}

}  // namespace

TEST_CASE("file fuzzer: truncated and bit-flipped files give a result or an error naming the file, never a crash", "[fuzz][errors]") {
  ef::test::ScratchDir scratch("file-fuzz");
  std::mt19937_64 rng(12345);
  for (const auto& f : formats()) {
    INFO("format " << f.name);
    const fs::path dir = scratch.path / f.name;
    fs::create_directories(dir);
    f.write(dir);
    const std::string valid = ef::read_file(dir / f.file);
    REQUIRE(check_read(f, dir).empty());
    auto mutate = [&](const std::string& bytes, const std::string& how) {
      INFO(how << " of " << valid.size() << " bytes");
      ef::write_file_atomically(dir / f.file, bytes);
      CHECK(check_read(f, dir) == "");
    };
    // truncations: every length in the first 64 bytes (headers), then 24 spread over the rest
    for (size_t n = 0; n < std::min<size_t>(valid.size(), 64); ++n) mutate(valid.substr(0, n), "truncated to " + std::to_string(n));
    for (int k = 0; k < 24 && valid.size() > 64; ++k) {
      const size_t n = 64 + rng() % (valid.size() - 64);
      mutate(valid.substr(0, n), "truncated to " + std::to_string(n));
    }
    // bit flips: 48 single flips anywhere, 32 in the first 64 bytes, and 8 files with 8 flips each
    for (int k = 0; k < 88; ++k) {
      std::string bytes = valid;
      const size_t span = k < 48 ? bytes.size() : std::min<size_t>(bytes.size(), 64);
      const int flips = k < 80 ? 1 : 8;
      std::string where;
      for (int j = 0; j < flips; ++j) {
        const size_t at = rng() % span;
        bytes[at] = static_cast<char>(bytes[at] ^ (1 << (rng() % 8)));
        where += std::to_string(at) + " ";
      }
      mutate(bytes, "bits flipped at " + where);
    }
    ef::write_file_atomically(dir / f.file, valid);
  }
}

TEST_CASE("safetensors: a header announcing a huge or negative shape is refused before allocating it", "[fuzz][errors][safetensors]") {
  auto file = [](const std::string& shape) {
    const std::string header = R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,16]}})";
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return bytes + header + std::string(16, '\0');
  };
  CHECK(ef::decode_safetensors(file("[2,2]"), "x.safetensors").at("w").sizes() == torch::IntArrayRef({2, 2}));
  CHECK_THROWS_WITH(ef::decode_safetensors(file("[1099511627776,1099511627776]"), "x.safetensors"),
                    Catch::Matchers::Contains("x.safetensors: corrupt safetensors entry 'w'"));
  CHECK_THROWS_WITH(ef::decode_safetensors(file("[-4,-1]"), "x.safetensors"), Catch::Matchers::Contains("negative dimension"));
  CHECK_THROWS_WITH(ef::decode_safetensors(file("\"two\""), "x.safetensors"), Catch::Matchers::Contains("x.safetensors: corrupt safetensors entry 'w'"));
}
