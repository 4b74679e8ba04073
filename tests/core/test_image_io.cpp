#include <catch2/catch.hpp>

#include "core/config.h"
#include "core/image_io.h"
#include "tests/core/jpeg_writer.h"
#include "tests/test_support.h"

#include <cstdio>  // before jpeglib.h, which needs FILE
#include <jpeglib.h>
#include <png.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Catch::Contains;
using ef::test::write_test_jpeg;

namespace {

void truncate_file(const fs::path& path, double keep_fraction) {
  const auto size = fs::file_size(path);
  fs::resize_file(path, static_cast<uintmax_t>(static_cast<double>(size) * keep_fraction));
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Smooth RGB gradient: JPEG at quality 100 keeps it within a few levels.
unsigned char gradient(int v, int extent) { return static_cast<unsigned char>(v * 255 / (extent - 1)); }

void write_gradient_jpeg(const fs::path& path, int width, int height) {
  write_test_jpeg(path, width, height, 3, JCS_RGB, [&](int x, int y, unsigned char* out) {
    out[0] = gradient(x, width);
    out[1] = gradient(y, height);
    out[2] = 128;
  });
}

torch::Tensor expected_gradient(int width, int height) {
  auto image = torch::empty({height, width, 3}, torch::kInt32);
  auto a = image.accessor<int32_t, 3>();
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      a[y][x][0] = gradient(x, width);
      a[y][x][1] = gradient(y, height);
      a[y][x][2] = 128;
    }
  }
  return image;
}

int64_t max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kInt32) - b.to(torch::kInt32)).abs().max().item<int32_t>();
}

// JPEG at quality 100 is close but not exact: libjpeg's own 8-bit RGB -> YCbCr -> RGB round trip
// is off by up to 4 at a handful of pixels of these gradients (measured with plain libjpeg), so
// allow 4 at worst and require the typical error to be well under one level.
void check_close_to_gradient(const torch::Tensor& image, int width, int height) {
  const auto error = (image.to(torch::kInt32) - expected_gradient(width, height)).abs();
  CHECK(error.max().item<int32_t>() <= 4);
  CHECK(error.to(torch::kFloat).mean().item<float>() < 1.0f);
}

// A PNG in a format encode_png never produces (palette, 1-bit gray), written with libpng directly.
std::string libpng_encode(int width, int height, int bit_depth, int color_type,
                          const std::vector<png_color>& palette, const std::vector<png_byte>& alpha,
                          const std::vector<std::vector<png_byte>>& packed_rows) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), n);
      },
      [](png_structp) {});
  png_set_IHDR(png, info, width, height, bit_depth, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  if (!alpha.empty()) png_set_tRNS(png, info, alpha.data(), static_cast<int>(alpha.size()), nullptr);
  png_write_info(png, info);
  for (const auto& row : packed_rows) png_write_row(png, row.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace

TEST_CASE("image_io: 8-bit PNG files round-trip exactly for 1 to 4 channels", "[image_io][png]") {
  ef::test::ScratchDir dir("image_io");
  for (int64_t channels : {1, 2, 3, 4}) {
    CAPTURE(channels);
    const auto image = torch::randint(0, 256, {7, 5, channels}, torch::kUInt8);
    const auto path = dir.path / "img.png";
    ef::write_png(path, image);
    CHECK_FALSE(fs::exists(dir.path / "img.png.tmp"));
    const auto back = ef::read_png(path);
    CHECK(back.scalar_type() == torch::kUInt8);
    CHECK(back.sizes() == image.sizes());
    CHECK(torch::equal(back, image));
  }
}

TEST_CASE("image_io: a 2-D tensor is a one-channel PNG", "[image_io][png]") {
  const auto image = torch::randint(0, 256, {3, 9}, torch::kUInt8);
  const auto back = ef::decode_png(ef::encode_png(image));
  REQUIRE(back.sizes() == torch::IntArrayRef({3, 9, 1}));
  CHECK(torch::equal(back.squeeze(2), image));
}

TEST_CASE("image_io: 16-bit PNG keeps every value up to 65535", "[image_io][png]") {
  ef::test::ScratchDir dir("image_io");
  for (int64_t channels : {1, 3, 4}) {
    CAPTURE(channels);
    auto image = torch::randint(0, 65536, {6, 4, channels}, torch::kInt32);
    image.view(-1).slice(0, 0, 6).copy_(torch::tensor({0, 1, 255, 256, 65534, 65535}, torch::kInt32));
    ef::write_png(dir.path / "deep.png", image);
    const auto back = ef::read_png(dir.path / "deep.png");
    CHECK(back.scalar_type() == torch::kInt32);
    CHECK(torch::equal(back, image));
    CHECK(back.max().item<int32_t>() <= 65535);
  }
}

TEST_CASE("image_io: int16 and uint16 tensors encode as 16-bit PNG", "[image_io][png]") {
  const auto values = torch::tensor({0, 1000, 40000, 65535}, torch::kInt32).reshape({2, 2});
  CHECK(torch::equal(ef::decode_png(ef::encode_png(values.to(torch::kUInt16))).squeeze(2), values));
  const auto small = torch::tensor({0, 7, 32767, 12}, torch::kInt16).reshape({2, 2});
  CHECK(torch::equal(ef::decode_png(ef::encode_png(small)).squeeze(2), small.to(torch::kInt32)));
}

TEST_CASE("image_io: encode_png refuses what a PNG cannot hold", "[image_io][png]") {
  CHECK_THROWS_WITH(ef::encode_png(torch::full({2, 2, 1}, 70000, torch::kInt32)), Contains("0..65535"));
  CHECK_THROWS_WITH(ef::encode_png(torch::full({2, 2, 1}, -1, torch::kInt32)), Contains("0..65535"));
  CHECK_THROWS_WITH(ef::encode_png(torch::zeros({2, 2, 3})), Contains("to_uint8_hwc"));
  CHECK_THROWS_WITH(ef::encode_png(torch::zeros({2, 2, 5}, torch::kUInt8)), Contains("C must be 1..4"));
  CHECK_THROWS_WITH(ef::encode_png(torch::zeros({0, 2, 3}, torch::kUInt8)), Contains("empty image"));
  ef::test::ScratchDir dir("image_io");
  const auto path = dir.path / "bad.png";
  CHECK_THROWS_WITH(ef::write_png(path, torch::zeros({2, 2, 5}, torch::kUInt8)), Contains(path.string()));
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("image_io: PNG encode and decode in memory", "[image_io][png]") {
  const auto image = torch::randint(0, 256, {11, 13, 3}, torch::kUInt8);
  const std::string bytes = ef::encode_png(image);
  REQUIRE(bytes.size() > 8);
  CHECK(bytes.substr(1, 3) == "PNG");
  CHECK(torch::equal(ef::decode_png(bytes), image));
  // Non-contiguous input (a crop) is encoded as what it shows.
  const auto crop = image.slice(1, 2, 9);
  CHECK(torch::equal(ef::decode_png(ef::encode_png(crop)), crop));
}

TEST_CASE("image_io: palette and 1-bit gray PNGs are expanded to 8 bits", "[image_io][png]") {
  // 2x2 palette image, palette entry 1 half transparent: RGBA out.
  const std::vector<png_color> palette = {{10, 20, 30}, {200, 100, 0}};
  const std::string paletted = libpng_encode(2, 2, 8, PNG_COLOR_TYPE_PALETTE, palette, {255, 128}, {{0, 1}, {1, 0}});
  const auto rgba = ef::decode_png(paletted);
  REQUIRE(rgba.sizes() == torch::IntArrayRef({2, 2, 4}));
  CHECK(torch::equal(rgba[0][0], torch::tensor({10, 20, 30, 255}, torch::kUInt8)));
  CHECK(torch::equal(rgba[0][1], torch::tensor({200, 100, 0, 128}, torch::kUInt8)));

  // 1-bit gray, 3 pixels wide: bits 1,0,1 packed into one byte.
  const auto gray = ef::decode_png(libpng_encode(3, 1, 1, PNG_COLOR_TYPE_GRAY, {}, {}, {{0xA0}}));
  REQUIRE(gray.sizes() == torch::IntArrayRef({1, 3, 1}));
  CHECK(torch::equal(gray.flatten(), torch::tensor({255, 0, 255}, torch::kUInt8)));
}

TEST_CASE("image_io: a truncated or foreign PNG file gives an error naming the file", "[image_io][png]") {
  ef::test::ScratchDir dir("image_io");
  const auto path = dir.path / "cut.png";
  ef::write_png(path, torch::randint(0, 256, {64, 64, 3}, torch::kUInt8));  // noise: barely compressible
  truncate_file(path, 0.5);
  CHECK_THROWS_WITH(ef::read_png(path), Contains(path.string()) && Contains("truncated"));

  const auto text = dir.path / "notes.png";
  write_bytes(text, "just some text, not an image");
  CHECK_THROWS_WITH(ef::read_png(text), Contains(text.string()) && Contains("not a PNG file"));

  const auto missing = dir.path / "missing.png";
  CHECK_THROWS_WITH(ef::read_png(missing), Contains(missing.string()));
  CHECK_THROWS_WITH(ef::decode_png(std::string("\x89PNG\r\n\x1a\n", 8)), Contains("<memory>"));
}

TEST_CASE("image_io: JPEG written by libjpeg reads back as RGB", "[image_io][jpeg]") {
  ef::test::ScratchDir dir("image_io");
  const auto path = dir.path / "gradient.jpg";
  write_gradient_jpeg(path, 64, 48);
  const auto image = ef::read_jpeg(path);
  REQUIRE(image.scalar_type() == torch::kUInt8);
  REQUIRE(image.sizes() == torch::IntArrayRef({48, 64, 3}));
  check_close_to_gradient(image, 64, 48);
  CHECK(torch::equal(ef::decode_jpeg(read_bytes(path)), image));
}

TEST_CASE("image_io: grayscale JPEG is expanded to three equal channels", "[image_io][jpeg]") {
  ef::test::ScratchDir dir("image_io");
  const auto path = dir.path / "gray.jpg";
  write_test_jpeg(path, 32, 16, 1, JCS_GRAYSCALE, [](int x, int, unsigned char* out) { *out = gradient(x, 32); });
  const auto image = ef::read_jpeg(path);
  REQUIRE(image.sizes() == torch::IntArrayRef({16, 32, 3}));
  CHECK(torch::equal(image.select(2, 0), image.select(2, 1)));
  CHECK(torch::equal(image.select(2, 0), image.select(2, 2)));
  CHECK(std::abs(image[5][31][0].item<int>() - 255) <= 3);
  CHECK(image[5][0][0].item<int>() <= 3);
}

TEST_CASE("image_io: Adobe CMYK JPEG is converted to RGB", "[image_io][jpeg]") {
  ef::test::ScratchDir dir("image_io");
  const auto path = dir.path / "cmyk.jpg";
  // libjpeg writes an Adobe marker for CMYK; the stored (inverted) values are 200,100,50,128.
  write_test_jpeg(path, 16, 16, 4, JCS_CMYK, [](int, int, unsigned char* out) {
    out[0] = 200;
    out[1] = 100;
    out[2] = 50;
    out[3] = 128;
  });
  const auto image = ef::read_jpeg(path);
  REQUIRE(image.sizes() == torch::IntArrayRef({16, 16, 3}));
  const auto expected = torch::tensor({100, 50, 25}, torch::kInt32).expand({16, 16, 3});  // stored * K / 255
  CHECK(max_abs_diff(image, expected) <= 3);
}

TEST_CASE("image_io: a truncated JPEG file gives an error naming the file", "[image_io][jpeg]") {
  ef::test::ScratchDir dir("image_io");
  const auto path = dir.path / "cut.jpg";
  write_gradient_jpeg(path, 64, 64);
  truncate_file(path, 0.5);
  CHECK_THROWS_WITH(ef::read_jpeg(path), Contains(path.string()) && Contains("truncated"));
  const auto png = dir.path / "really.png";
  ef::write_png(png, torch::zeros({2, 2, 3}, torch::kUInt8));
  CHECK_THROWS_WITH(ef::read_jpeg(png), Contains(png.string()) && Contains("not a JPEG file"));
}

TEST_CASE("image_io: read_image goes by content not by extension", "[image_io]") {
  ef::test::ScratchDir dir("image_io");
  const auto png_content = torch::randint(0, 256, {5, 6, 3}, torch::kUInt8);
  const auto misnamed_png = dir.path / "photo.jpg";
  ef::write_png(misnamed_png, png_content);
  CHECK(torch::equal(ef::read_image(misnamed_png), png_content));

  const auto misnamed_jpeg = dir.path / "picture.png";
  write_gradient_jpeg(misnamed_jpeg, 40, 24);
  const auto jpeg = ef::read_image(misnamed_jpeg);
  REQUIRE(jpeg.sizes() == torch::IntArrayRef({24, 40, 3}));
  check_close_to_gradient(jpeg, 40, 24);

  const auto other = dir.path / "image.gif";
  write_bytes(other, "GIF89a......");
  CHECK_THROWS_WITH(ef::read_image(other), Contains(other.string()) && Contains("unrecognized image format"));
}

TEST_CASE("image_io: to_uint8_hwc clamps and rounds and moves channels last", "[image_io]") {
  auto chw = torch::zeros({3, 1, 2});
  chw[0][0][0] = -0.5;  // clamped to 0
  chw[0][0][1] = 2.0;   // clamped to 255
  chw[1][0][0] = 0.2;   // 51
  chw[1][0][1] = 0.5;   // 127.5 -> 128
  chw[2][0][0] = 1.0;
  chw[2][0][1] = std::nan("");  // NaN -> 0
  const auto hwc = ef::to_uint8_hwc(chw);
  REQUIRE(hwc.scalar_type() == torch::kUInt8);
  REQUIRE(hwc.sizes() == torch::IntArrayRef({1, 2, 3}));
  CHECK(torch::equal(hwc[0][0], torch::tensor({0, 51, 255}, torch::kUInt8)));
  CHECK(torch::equal(hwc[0][1], torch::tensor({255, 128, 0}, torch::kUInt8)));
  CHECK(ef::to_uint8_hwc(torch::ones({4, 5})).sizes() == torch::IntArrayRef({4, 5, 1}));
  CHECK_THROWS(ef::to_uint8_hwc(torch::zeros({3, 4, 4}, torch::kUInt8)));
}

TEST_CASE("image_io: make_grid tiles a batch with padding", "[image_io]") {
  const auto batch = torch::rand({5, 3, 4, 6});
  const auto grid = ef::make_grid(batch, /*cols=*/3, /*pad=*/2, /*pad_value=*/0.25);
  // 2 rows of 3: height 2*(4+2)+2, width 3*(6+2)+2.
  REQUIRE(grid.sizes() == torch::IntArrayRef({3, 14, 26}));
  CHECK(torch::equal(grid.slice(1, 2, 6).slice(2, 2, 8), batch[0]));
  CHECK(torch::equal(grid.slice(1, 8, 12).slice(2, 10, 16), batch[4]));  // row 1, column 1
  CHECK(grid[0][0][0].item<float>() == 0.25f);
  CHECK((grid.slice(1, 8, 12).slice(2, 18, 24) == 0.25).all().item<bool>());  // unused last cell
  CHECK(ef::make_grid(batch, 5, 0).sizes() == torch::IntArrayRef({3, 4, 30}));
  CHECK_THROWS(ef::make_grid(batch, 0));
  CHECK_THROWS(ef::make_grid(batch[0], 2));
}

TEST_CASE("image_io: an image above the pixel limit is refused before its pixels are read", "[image_io][errors]") {
  ef::test::ScratchDir dir("image-limit");
  const fs::path png = dir.path / "a.png", jpg = dir.path / "a.jpg";
  ef::write_png(png, torch::zeros({6, 5, 3}, torch::kUInt8));
  write_test_jpeg(jpg, 5, 6, 3, JCS_RGB, [](int, int, unsigned char* out) { out[0] = out[1] = out[2] = 9; });
  ::setenv("EDGEFORGE_MAX_IMAGE_PIXELS", "29", 1);
  CHECK_THROWS_AS(ef::read_image(png), ef::InputError);
  CHECK_THROWS_WITH(ef::read_image(png), Catch::Matchers::Contains("a.png: 5 x 6 pixels is more than the limit of 29"));
  CHECK_THROWS_WITH(ef::read_image(jpg), Catch::Matchers::Contains("a.jpg: 5 x 6 pixels is more than the limit of 29"));
  ::setenv("EDGEFORGE_MAX_IMAGE_PIXELS", "30", 1);
  CHECK(ef::read_image(png).sizes() == torch::IntArrayRef({6, 5, 3}));
  CHECK(ef::read_image(jpg).sizes() == torch::IntArrayRef({6, 5, 3}));
  ::setenv("EDGEFORGE_MAX_IMAGE_PIXELS", "lots", 1);
  CHECK_THROWS_WITH(ef::read_image(png), Catch::Matchers::Contains("EDGEFORGE_MAX_IMAGE_PIXELS"));
  ::unsetenv("EDGEFORGE_MAX_IMAGE_PIXELS");
  CHECK(ef::max_image_pixels() == (int64_t{1} << 28));
}
