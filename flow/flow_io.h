#pragma once
// Optical-flow files of the public benchmarks.
//
// Flow is float [H,W,2] on the CPU, channel 0 = u (column / x offset), channel 1 = v (row / y).
//  - Middlebury / MPI-Sintel `.flo`: little-endian; float32 tag 202021.25 ("PIEH"), int32 width,
//    int32 height, then H*W*(u,v) float32 row-major. Values with |.| > 1e9 mean "unknown".
//  - KITTI 2015 flow PNG: 16-bit RGB, R = u*64 + 2^15, G = v*64 + 2^15, B = 1 where valid else 0
//    (libpng gives R,G,B in file order; OpenCV users must reverse its BGR).
// Errors name the file and what is wrong with it.
#include <torch/torch.h>

#include <filesystem>

namespace ef::flow {

constexpr float kFloTag = 202021.25f;
constexpr double kFloUnknown = 1e9;

torch::Tensor read_flo(const std::filesystem::path& path);                     // float [H,W,2]
void write_flo(const std::filesystem::path& path, const torch::Tensor& flow);   // atomic
torch::Tensor flo_valid(const torch::Tensor& flow);                             // bool [H,W]: both |u|,|v| <= 1e9

struct KittiFlow {
  torch::Tensor flow;   // float [H,W,2], 0 where invalid
  torch::Tensor valid;  // bool [H,W]
};
KittiFlow read_kitti_flow(const std::filesystem::path& path);
// Quantised to 1/64 px (round to nearest), clamped to the encodable range [-512, 512); atomic.
void write_kitti_flow(const std::filesystem::path& path, const torch::Tensor& flow, const torch::Tensor& valid);

}  // namespace ef::flow
