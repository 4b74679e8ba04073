#pragma once
// CUDA kernels of the correlation lookup (see flow/corr.h for the op). Raw pointers and sizes only:
// this header is included by nvcc-compiled code and must not pull in torch.
#include <cuda_runtime.h>

#include <cstdint>

namespace ef::flow::cuda {

// level [N,h,w], coords [N,2] (x,y), out [N,(2r+1)^2]
template <class T>
void corr_lookup_forward(const T* level, const T* coords, T* out, int64_t N, int64_t h, int64_t w, int64_t radius, cudaStream_t stream);
// grad [N,(2r+1)^2], coords [N,2]; grad_level [N,h,w] must be zero-filled (accumulated with atomics)
template <class T>
void corr_lookup_backward(const T* grad, const T* coords, T* grad_level, int64_t N, int64_t h, int64_t w, int64_t radius,
                          cudaStream_t stream);

}  // namespace ef::flow::cuda
