#pragma once
// Launchers of the CUDA rasterizer kernels (rasterize.cu). Raw device pointers, float32, contiguous,
// shapes as in splatting/rasterize.h; `stream` is a cudaStream_t. No torch here: nvcc compiles it.
#include <cstdint>

namespace ef::splat::cuda {

struct RasterShape {
  int n_gaussians, channels, width, height, tile, tiles_x, tiles_y;
};

void alpha_fwd(const RasterShape& s, const float* means2d, const float* conics, const float* colors, const float* opacities,
               const float* background, const int32_t* ranges, const int32_t* ids, float* image, float* final_T, int32_t* n_contrib,
               void* stream);
// Gradients are accumulated (atomics) into zero-initialised buffers.
void alpha_bwd(const RasterShape& s, const float* means2d, const float* conics, const float* colors, const float* opacities,
               const float* background, const int32_t* ranges, const int32_t* ids, const float* final_T, const int32_t* n_contrib,
               const float* grad_image, float* g_means2d, float* g_conics, float* g_colors, float* g_opacities, void* stream);
void wsr_fwd(const RasterShape& s, const float* means2d, const float* conics, const float* colors, const float* weights, const int32_t* ranges,
             const int32_t* ids, float* numer, float* denom, void* stream);
void wsr_bwd(const RasterShape& s, const float* means2d, const float* conics, const float* colors, const float* weights, const int32_t* ranges,
             const int32_t* ids, const float* grad_numer, const float* grad_denom, float* g_means2d, float* g_conics, float* g_colors,
             float* g_weights, void* stream);

}  // namespace ef::splat::cuda
