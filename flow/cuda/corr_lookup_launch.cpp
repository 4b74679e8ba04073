// CUDA implementations of edgeforge::corr_lookup(_backward): input checks, dtype dispatch and the
// current stream; the kernels are in corr_lookup.cu. Half and bfloat16 inputs (autocast) are
// computed in float and cast back: the lookup is memory-bound and fp16 atomics are slow anyway.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "flow/corr_kernels.h"
#include "flow/cuda/corr_lookup.h"

namespace ef::flow {
namespace {

torch::Tensor corr_lookup_cuda(const torch::Tensor& level_in, const torch::Tensor& coords_in, int64_t radius) {
  check_corr_lookup_inputs(level_in, coords_in, radius);
  const c10::cuda::CUDAGuard guard(level_in.device());
  const bool reduced = level_in.scalar_type() == torch::kHalf || level_in.scalar_type() == torch::kBFloat16;
  torch::Tensor level = (reduced ? level_in.to(torch::kFloat32) : level_in).contiguous();
  torch::Tensor coords = coords_in.to(level.scalar_type()).contiguous();
  const int64_t side = 2 * radius + 1, N = level.size(0);
  torch::Tensor out = torch::empty({coords.size(0), coords.size(1), coords.size(2), side * side}, level.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(level.scalar_type(), "corr_lookup_cuda", [&] {
    cuda::corr_lookup_forward<scalar_t>(level.data_ptr<scalar_t>(), coords.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N,
                                        level.size(1), level.size(2), radius, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return reduced ? out.to(level_in.scalar_type()) : out;
}

torch::Tensor corr_lookup_backward_cuda(const torch::Tensor& grad_in, const torch::Tensor& coords_in, int64_t h, int64_t w, int64_t radius) {
  check_corr_lookup_backward_inputs(grad_in, coords_in, h, w, radius);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const bool reduced = grad_in.scalar_type() == torch::kHalf || grad_in.scalar_type() == torch::kBFloat16;
  torch::Tensor grad = (reduced ? grad_in.to(torch::kFloat32) : grad_in).contiguous();
  torch::Tensor coords = coords_in.to(grad.scalar_type()).contiguous();
  const int64_t N = coords.size(0) * coords.size(1) * coords.size(2);
  torch::Tensor out = torch::zeros({N, h, w}, grad.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "corr_lookup_backward_cuda", [&] {
    cuda::corr_lookup_backward<scalar_t>(grad.data_ptr<scalar_t>(), coords.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, h, w,
                                         radius, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return reduced ? out.to(grad_in.scalar_type()) : out;
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeforge, CUDA, m) {
  m.impl("corr_lookup", &corr_lookup_cuda);
  m.impl("corr_lookup_backward", &corr_lookup_backward_cuda);
}

}  // namespace ef::flow
