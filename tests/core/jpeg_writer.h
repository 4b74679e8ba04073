#pragma once
// A JPEG writer for the tests, libjpeg itself, independent of the code under test (core/image_io
// only reads JPEG).
#include <catch2/catch.hpp>

#include <cstdio>  // before jpeglib.h, which needs FILE
#include <jpeglib.h>

#include <filesystem>
#include <functional>
#include <vector>

namespace ef::test {

// Writes a JPEG with libjpeg itself, independently of the code under test. `pixel(x, y, out)`
// fills `components` samples. libjpeg's default error handler exits, which is fine in a test.
inline void write_test_jpeg(const std::filesystem::path& path, int width, int height, int components, J_COLOR_SPACE space,
                     const std::function<void(int, int, unsigned char*)>& pixel) {
  FILE* file = std::fopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, file);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = components;
  cinfo.in_color_space = space;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 100, TRUE);
  // No chroma subsampling: the tests measure the decoder, not the encoder's colour averaging.
  for (int c = 0; c < cinfo.num_components; ++c) cinfo.comp_info[c].h_samp_factor = cinfo.comp_info[c].v_samp_factor = 1;
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<unsigned char> row(static_cast<size_t>(width) * components);
  while (cinfo.next_scanline < cinfo.image_height) {
    for (int x = 0; x < width; ++x) pixel(x, static_cast<int>(cinfo.next_scanline), &row[static_cast<size_t>(x) * components]);
    JSAMPROW rows[1] = {row.data()};
    jpeg_write_scanlines(&cinfo, rows, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(file);
}

}  // namespace ef::test
