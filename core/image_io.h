#pragma once
// Image files in and out of tensors: PNG (libpng) and JPEG (libjpeg / libjpeg-turbo).
//
// Images are HWC tensors on the CPU: uint8 for 8-bit data, and int32 holding 0..65535 for 16-bit
// data (LibTorch has few uint16 kernels, so 16-bit samples are widened on read).
// Every error is a std::runtime_error whose message names the file (or "<memory>") and what is
// wrong with it.
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace ef {

// PNG, gray / gray+alpha / RGB / RGBA, 8 or 16 bit. Palette images become RGB (RGBA when the palette
// has transparency) and 1/2/4-bit gray becomes 8-bit gray; otherwise C = 1, 2, 3 or 4 as stored.
torch::Tensor read_png(const std::filesystem::path& path);
torch::Tensor decode_png(const std::string& bytes);

// [H,W,C] or [H,W] (C = 1), C in {1,2,3,4}. uint8 -> 8-bit PNG; int32/int16/uint16 -> 16-bit PNG,
// whose values must lie in 0..65535 (otherwise it throws).
std::string encode_png(const torch::Tensor& hwc);
// Atomic: writes `path` + ".tmp", fsyncs it and renames it over `path`.
void write_png(const std::filesystem::path& path, const torch::Tensor& hwc);

// uint8 [H,W,3]. Grayscale JPEGs are expanded to 3 channels; CMYK/YCCK JPEGs are converted to RGB.
torch::Tensor read_jpeg(const std::filesystem::path& path);
torch::Tensor decode_jpeg(const std::string& bytes);

// The most pixels (width x height) an image read here may have: a larger one is refused, naming the
// file and its size, before its pixels are allocated (a corrupt or hostile header can announce
// billions). Default 2^28 (16384 x 16384); the environment variable EDGEFORGE_MAX_IMAGE_PIXELS sets
// another (InputError when it is not a positive integer).
int64_t max_image_pixels();

// PNG or JPEG, chosen by the file's signature (PNG magic / JPEG SOI), not by its extension.
torch::Tensor read_image(const std::filesystem::path& path);

// Float image [C,H,W] (or [H,W]) with values in [0,1] -> uint8 [H,W,C], clamped and rounded.
torch::Tensor to_uint8_hwc(const torch::Tensor& chw01);

// Tiles a batch [B,C,H,W] of float images into one image [C, rows*(H+pad)+pad, cols*(W+pad)+pad],
// rows = ceil(B / cols), row-major; the gaps (and unused cells) hold `pad_value`.
torch::Tensor make_grid(const torch::Tensor& bchw, int64_t cols, int64_t pad = 2, double pad_value = 1.0);

}  // namespace ef
