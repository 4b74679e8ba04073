// CUDA rasterizer kernels: one thread block per tile, one thread per pixel. Forward passes stage
// each tile's splats through shared memory in batches of one block; backward passes walk the same
// lists per pixel and accumulate per-Gaussian gradients with atomics (so their sums are not
// bit-reproducible run to run; the CPU backend is).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "splatting/cuda/rasterize_launch.h"
#include "splatting/splat_math.h"

namespace ef::splat::cuda {

namespace {

constexpr int kMaxC = 16;
constexpr int kMaxBlock = 1024;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("splat CUDA ") + what + ": " + cudaGetErrorString(e));
}

struct Staged {
  int id;
  float mx, my, ca, cb, cc, o;
};

template <bool kAlpha>
__global__ void forward_kernel(RasterShape s, const float* __restrict__ means, const float* __restrict__ conics,
                               const float* __restrict__ colors, const float* __restrict__ per_gaussian, const float* __restrict__ bg,
                               const int32_t* __restrict__ ranges, const int32_t* __restrict__ ids, float* __restrict__ out,
                               float* __restrict__ out_scalar, int32_t* __restrict__ n_contrib) {
  extern __shared__ Staged staged[];
  const int tile = blockIdx.y * s.tiles_x + blockIdx.x;
  const int px = blockIdx.x * s.tile + threadIdx.x, py = blockIdx.y * s.tile + threadIdx.y;
  const int thread = threadIdx.y * blockDim.x + threadIdx.x, block = blockDim.x * blockDim.y;
  const bool inside = px < s.width && py < s.height;
  bool done = !inside;
  const int start = ranges[2 * tile], end = ranges[2 * tile + 1];
  const float fx = px + 0.5f, fy = py + 0.5f;
  float acc[kMaxC];
  for (int c = 0; c < kMaxC; ++c) acc[c] = 0.f;
  float trans = 1.f, den = 0.f;
  int last = 0;
  for (int base = start; base < end; base += block) {
    if (__syncthreads_count(done) == block) break;
    const int k = base + thread;
    if (k < end) {
      const int g = ids[k];
      staged[thread] = {g, means[2 * g], means[2 * g + 1], conics[3 * g], conics[3 * g + 1], conics[3 * g + 2], per_gaussian[g]};
    }
    __syncthreads();
    const int count = min(block, end - base);
    for (int j = 0; !done && j < count; ++j) {
      const Staged& e = staged[j];
      const float mean[2] = {e.mx, e.my}, con[3] = {e.ca, e.cb, e.cc};
      const auto sp = splat_at<float>(mean, con, fx, fy);
      if (sp.power > 0.f) continue;
      if (kAlpha) {
        const float alpha = fminf(kMaxAlpha, e.o * __expf(sp.power));
        if (alpha < kMinAlpha) continue;
        const float next = trans * (1.f - alpha);
        if (next < kMinTransmittance) {
          done = true;
          break;
        }
        for (int c = 0; c < s.channels; ++c) acc[c] += colors[e.id * s.channels + c] * alpha * trans;
        trans = next;
        last = base + j + 1 - start;
      } else {
        const float a = e.o * __expf(sp.power);
        if (a < kMinAlpha) continue;
        for (int c = 0; c < s.channels; ++c) acc[c] += a * colors[e.id * s.channels + c];
        den += a;
      }
    }
    __syncthreads();
  }
  if (!inside) return;
  const int p = py * s.width + px;
  if (kAlpha) {
    for (int c = 0; c < s.channels; ++c) out[p * s.channels + c] = acc[c] + trans * bg[c];
    out_scalar[p] = trans;
    n_contrib[p] = last;
  } else {
    for (int c = 0; c < s.channels; ++c) out[p * s.channels + c] = acc[c];
    out_scalar[p] = den;
  }
}

__device__ void add_entry_grads(const SplatPixel<float>& sp, const float* con, float g_power, int g, float* g_means, float* g_conics) {
  float g5[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
  add_power_grad<float>(sp, con, g_power, g5);
  atomicAdd(g_means + 2 * g, g5[0]);
  atomicAdd(g_means + 2 * g + 1, g5[1]);
  atomicAdd(g_conics + 3 * g, g5[2]);
  atomicAdd(g_conics + 3 * g + 1, g5[3]);
  atomicAdd(g_conics + 3 * g + 2, g5[4]);
}

__global__ void alpha_backward_kernel(RasterShape s, const float* __restrict__ means, const float* __restrict__ conics,
                                      const float* __restrict__ colors, const float* __restrict__ opac, const float* __restrict__ bg,
                                      const int32_t* __restrict__ ranges, const int32_t* __restrict__ ids, const float* __restrict__ final_T,
                                      const int32_t* __restrict__ n_contrib, const float* __restrict__ grad_image, float* g_means,
                                      float* g_conics, float* g_colors, float* g_opac) {
  const int tile = blockIdx.y * s.tiles_x + blockIdx.x;
  const int px = blockIdx.x * s.tile + threadIdx.x, py = blockIdx.y * s.tile + threadIdx.y;
  if (px >= s.width || py >= s.height) return;
  const int p = py * s.width + px, start = ranges[2 * tile];
  const float fx = px + 0.5f, fy = py + 0.5f;
  const float* gp = grad_image + p * s.channels;
  float g_bg = 0.f, behind[kMaxC];
  for (int c = 0; c < s.channels; ++c) {
    g_bg += bg[c] * gp[c];
    behind[c] = 0.f;
  }
  const float fT = final_T[p];
  float trans = fT;
  for (int k = start + n_contrib[p] - 1; k >= start; --k) {
    const int g = ids[k];
    const float* con = conics + 3 * g;
    const auto sp = splat_at<float>(means + 2 * g, con, fx, fy);
    if (sp.power > 0.f) continue;
    const float G = __expf(sp.power), raw = opac[g] * G, alpha = fminf(kMaxAlpha, raw);
    if (alpha < kMinAlpha) continue;
    trans /= (1.f - alpha);
    float g_alpha = 0.f;
    for (int c = 0; c < s.channels; ++c) {
      const float col = colors[g * s.channels + c];
      atomicAdd(g_colors + g * s.channels + c, alpha * trans * gp[c]);
      g_alpha += (col - behind[c]) * gp[c];
      behind[c] = alpha * col + (1.f - alpha) * behind[c];
    }
    g_alpha = trans * g_alpha - fT / (1.f - alpha) * g_bg;
    if (raw < kMaxAlpha) {
      atomicAdd(g_opac + g, G * g_alpha);
      add_entry_grads(sp, con, g_alpha * raw, g, g_means, g_conics);
    }
  }
}

__global__ void wsr_backward_kernel(RasterShape s, const float* __restrict__ means, const float* __restrict__ conics,
                                    const float* __restrict__ colors, const float* __restrict__ weights, const int32_t* __restrict__ ranges,
                                    const int32_t* __restrict__ ids, const float* __restrict__ grad_numer, const float* __restrict__ grad_denom,
                                    float* g_means, float* g_conics, float* g_colors, float* g_weights) {
  const int tile = blockIdx.y * s.tiles_x + blockIdx.x;
  const int px = blockIdx.x * s.tile + threadIdx.x, py = blockIdx.y * s.tile + threadIdx.y;
  if (px >= s.width || py >= s.height) return;
  const int p = py * s.width + px, start = ranges[2 * tile], end = ranges[2 * tile + 1];
  const float fx = px + 0.5f, fy = py + 0.5f;
  const float* gn = grad_numer + p * s.channels;
  const float gd = grad_denom[p];
  for (int k = start; k < end; ++k) {
    const int g = ids[k];
    const float* con = conics + 3 * g;
    const auto sp = splat_at<float>(means + 2 * g, con, fx, fy);
    if (sp.power > 0.f) continue;
    const float G = __expf(sp.power), a = weights[g] * G;
    if (a < kMinAlpha) continue;
    float g_a = gd;
    for (int c = 0; c < s.channels; ++c) {
      atomicAdd(g_colors + g * s.channels + c, a * gn[c]);
      g_a += colors[g * s.channels + c] * gn[c];
    }
    atomicAdd(g_weights + g, G * g_a);
    add_entry_grads(sp, con, g_a * a, g, g_means, g_conics);
  }
}

void check_shape(const RasterShape& s) {
  if (s.channels > kMaxC) throw std::invalid_argument("splat CUDA: at most " + std::to_string(kMaxC) + " channels, got " + std::to_string(s.channels));
  if (s.tile * s.tile > kMaxBlock) throw std::invalid_argument("splat CUDA: tile size " + std::to_string(s.tile) + " is too large");
}

}  // namespace

void alpha_fwd(const RasterShape& s, const float* means2d, const float* conics, const float* colors, const float* opacities,
               const float* background, const int32_t* ranges, const int32_t* ids, float* image, float* final_T, int32_t* n_contrib,
               void* stream) {
  check_shape(s);
  const dim3 grid(s.tiles_x, s.tiles_y), block(s.tile, s.tile);
  forward_kernel<true><<<grid, block, sizeof(Staged) * s.tile * s.tile, static_cast<cudaStream_t>(stream)>>>(
      s, means2d, conics, colors, opacities, background, ranges, ids, image, final_T, n_contrib);
  check(cudaGetLastError(), "alpha forward");
}

void alpha_bwd(const RasterShape& s, const float* means2d, const float* conics, const float* colors, const float* opacities,
               const float* background, const int32_t* ranges, const int32_t* ids, const float* final_T, const int32_t* n_contrib,
               const float* grad_image, float* g_means2d, float* g_conics, float* g_colors, float* g_opacities, void* stream) {
  check_shape(s);
  const dim3 grid(s.tiles_x, s.tiles_y), block(s.tile, s.tile);
  alpha_backward_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(s, means2d, conics, colors, opacities, background, ranges, ids,
                                                                              final_T, n_contrib, grad_image, g_means2d, g_conics, g_colors,
                                                                              g_opacities);
  check(cudaGetLastError(), "alpha backward");
}

void wsr_fwd(const RasterShape& s, const float* means2d, const float* conics, const float* colors, const float* weights, const int32_t* ranges,
             const int32_t* ids, float* numer, float* denom, void* stream) {
  check_shape(s);
  const dim3 grid(s.tiles_x, s.tiles_y), block(s.tile, s.tile);
  forward_kernel<false><<<grid, block, sizeof(Staged) * s.tile * s.tile, static_cast<cudaStream_t>(stream)>>>(
      s, means2d, conics, colors, weights, nullptr, ranges, ids, numer, denom, nullptr);
  check(cudaGetLastError(), "weighted-sum forward");
}

void wsr_bwd(const RasterShape& s, const float* means2d, const float* conics, const float* colors, const float* weights, const int32_t* ranges,
             const int32_t* ids, const float* grad_numer, const float* grad_denom, float* g_means2d, float* g_conics, float* g_colors,
             float* g_weights, void* stream) {
  check_shape(s);
  const dim3 grid(s.tiles_x, s.tiles_y), block(s.tile, s.tile);
  wsr_backward_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(s, means2d, conics, colors, weights, ranges, ids, grad_numer,
                                                                            grad_denom, g_means2d, g_conics, g_colors, g_weights);
  check(cudaGetLastError(), "weighted-sum backward");
}

}  // namespace ef::splat::cuda
