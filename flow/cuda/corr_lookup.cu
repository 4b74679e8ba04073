// One thread per (query, tap): each bilinearly samples its query's row of the correlation volume.
// The backward scatters the same four weights; taps of one query can share a cell, so it adds
// with atomics.
#include "flow/cuda/corr_lookup.h"

namespace ef::flow::cuda {

namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void lookup_forward_kernel(const T* __restrict__ level, const T* __restrict__ coords, T* __restrict__ out, int64_t N,
                                      int64_t h, int64_t w, int64_t r) {
  const int64_t side = 2 * r + 1, K = side * side;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * K) return;
  const int64_t n = idx / K, k = idx % K, i = k / side, j = k % side;
  const T x = coords[2 * n] + static_cast<T>(i - r), y = coords[2 * n + 1] + static_cast<T>(j - r);
  const T xf = floor(x), yf = floor(y);
  const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
  const T ax = x - xf, ay = y - yf;
  const T* L = level + n * h * w;
  T acc = 0;
  if (y0 >= 0 && y0 < h) {
    if (x0 >= 0 && x0 < w) acc += (1 - ax) * (1 - ay) * L[y0 * w + x0];
    if (x0 + 1 >= 0 && x0 + 1 < w) acc += ax * (1 - ay) * L[y0 * w + x0 + 1];
  }
  if (y0 + 1 >= 0 && y0 + 1 < h) {
    if (x0 >= 0 && x0 < w) acc += (1 - ax) * ay * L[(y0 + 1) * w + x0];
    if (x0 + 1 >= 0 && x0 + 1 < w) acc += ax * ay * L[(y0 + 1) * w + x0 + 1];
  }
  out[idx] = acc;
}

template <class T>
__global__ void lookup_backward_kernel(const T* __restrict__ grad, const T* __restrict__ coords, T* __restrict__ gl, int64_t N,
                                       int64_t h, int64_t w, int64_t r) {
  const int64_t side = 2 * r + 1, K = side * side;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * K) return;
  const int64_t n = idx / K, k = idx % K, i = k / side, j = k % side;
  const T x = coords[2 * n] + static_cast<T>(i - r), y = coords[2 * n + 1] + static_cast<T>(j - r);
  const T xf = floor(x), yf = floor(y);
  const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
  const T ax = x - xf, ay = y - yf, g = grad[idx];
  T* G = gl + n * h * w;
  if (y0 >= 0 && y0 < h) {
    if (x0 >= 0 && x0 < w) atomicAdd(G + y0 * w + x0, (1 - ax) * (1 - ay) * g);
    if (x0 + 1 >= 0 && x0 + 1 < w) atomicAdd(G + y0 * w + x0 + 1, ax * (1 - ay) * g);
  }
  if (y0 + 1 >= 0 && y0 + 1 < h) {
    if (x0 >= 0 && x0 < w) atomicAdd(G + (y0 + 1) * w + x0, (1 - ax) * ay * g);
    if (x0 + 1 >= 0 && x0 + 1 < w) atomicAdd(G + (y0 + 1) * w + x0 + 1, ax * ay * g);
  }
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

template <class T>
void corr_lookup_forward(const T* level, const T* coords, T* out, int64_t N, int64_t h, int64_t w, int64_t radius, cudaStream_t stream) {
  const int64_t total = N * (2 * radius + 1) * (2 * radius + 1);
  if (total == 0) return;
  lookup_forward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(level, coords, out, N, h, w, radius);
}

template <class T>
void corr_lookup_backward(const T* grad, const T* coords, T* grad_level, int64_t N, int64_t h, int64_t w, int64_t radius,
                          cudaStream_t stream) {
  const int64_t total = N * (2 * radius + 1) * (2 * radius + 1);
  if (total == 0) return;
  lookup_backward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(grad, coords, grad_level, N, h, w, radius);
}

template void corr_lookup_forward<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
template void corr_lookup_forward<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
template void corr_lookup_backward<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
template void corr_lookup_backward<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace ef::flow::cuda
