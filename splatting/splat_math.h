#pragma once
// Per-pixel splat arithmetic shared by the CPU and CUDA rasterizers (no torch here: nvcc compiles
// this too). A splat is a 2D mean (pixels) and a conic (a, b, c) = inverse covariance; a pixel p
// (centre at +0.5) sees G = exp(power), power = -½(a dx² + c dy²) - b dx dy with (dx, dy) = p - mean.
#ifdef __CUDACC__
#define EF_HD __host__ __device__ __forceinline__
#else
#define EF_HD inline
#endif

namespace ef::splat {

// Constants of the 3DGS reference rasterizer.
constexpr float kMinAlpha = 1.0f / 255.0f;   // contributions below this are skipped
constexpr float kMaxAlpha = 0.99f;           // alpha blending clamps alpha here
constexpr float kMinTransmittance = 1e-4f;   // a pixel stops once T would fall below this

template <typename T>
struct SplatPixel {
  T dx, dy, power;
};

template <typename T>
EF_HD SplatPixel<T> splat_at(const T* mean, const T* conic, T px, T py) {
  SplatPixel<T> s;
  s.dx = px - mean[0];
  s.dy = py - mean[1];
  s.power = T(-0.5) * (conic[0] * s.dx * s.dx + conic[2] * s.dy * s.dy) - conic[1] * s.dx * s.dy;
  return s;
}

// Adds d(loss)/d(power) · d(power)/d(mean, conic) to the five gradient slots
// [mean_x, mean_y, conic_a, conic_b, conic_c].
template <typename T>
EF_HD void add_power_grad(const SplatPixel<T>& s, const T* conic, T g_power, T* grad5) {
  grad5[0] += g_power * (conic[0] * s.dx + conic[1] * s.dy);
  grad5[1] += g_power * (conic[2] * s.dy + conic[1] * s.dx);
  grad5[2] += g_power * T(-0.5) * s.dx * s.dx;
  grad5[3] += g_power * (-s.dx * s.dy);
  grad5[4] += g_power * T(-0.5) * s.dy * s.dy;
}

}  // namespace ef::splat
