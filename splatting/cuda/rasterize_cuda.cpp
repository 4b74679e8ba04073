// CUDA implementations of the rasterizer ops: checks, float32 contiguous inputs, launches on the
// current stream. Double inputs are refused (the CPU kernels handle double for gradient checks).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "splatting/cuda/rasterize_launch.h"
#include "splatting/rasterize_kernels.h"

namespace ef::splat::kernels {

namespace {

using T = torch::Tensor;

cuda::RasterShape shape_of(const T& means2d, const T& colors, int64_t w, int64_t h, int64_t tile) {
  TORCH_CHECK(colors.scalar_type() == torch::kFloat32, "splat CUDA kernels take float32, got ", colors.scalar_type());
  return {int(means2d.size(0)), int(colors.size(1)), int(w), int(h), int(tile), int((w + tile - 1) / tile), int((h + tile - 1) / tile)};
}
float* f(const T& t) { return t.data_ptr<float>(); }
const int32_t* i(const T& t) { return t.data_ptr<int32_t>(); }
void* stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

AlphaFwdResult alpha_fwd_cuda(const T& means2d, const T& conics, const T& colors, const T& opacities, const T& background, const T& ranges,
                              const T& ids, int64_t w, int64_t h, int64_t tile) {
  c10::cuda::CUDAGuard guard(means2d.device());
  auto s = shape_of(means2d, colors, w, h, tile);
  auto m = means2d.contiguous(), c = conics.contiguous(), col = colors.contiguous(), o = opacities.contiguous();
  auto bg = background.to(colors.options()).contiguous(), r = ranges.contiguous(), id = ids.contiguous();
  auto image = torch::empty({h, w, colors.size(1)}, colors.options());
  auto final_T = torch::empty({h, w}, colors.options());
  auto n_contrib = torch::empty({h, w}, ranges.options());
  cuda::alpha_fwd(s, f(m), f(c), f(col), f(o), f(bg), i(r), i(id), f(image), f(final_T), n_contrib.data_ptr<int32_t>(), stream());
  return {image, final_T, n_contrib};
}

Grads4 alpha_bwd_cuda(const T& means2d, const T& conics, const T& colors, const T& opacities, const T& background, const T& ranges, const T& ids,
                      int64_t w, int64_t h, int64_t tile, const T& final_T, const T& n_contrib, const T& grad_image) {
  c10::cuda::CUDAGuard guard(means2d.device());
  auto s = shape_of(means2d, colors, w, h, tile);
  auto m = means2d.contiguous(), c = conics.contiguous(), col = colors.contiguous(), o = opacities.contiguous();
  auto bg = background.to(colors.options()).contiguous(), r = ranges.contiguous(), id = ids.contiguous();
  auto fT = final_T.contiguous(), nc = n_contrib.contiguous(), g = grad_image.to(colors.options()).contiguous();
  auto gm = torch::zeros_like(m), gc = torch::zeros_like(c), gcol = torch::zeros_like(col), go = torch::zeros_like(o);
  cuda::alpha_bwd(s, f(m), f(c), f(col), f(o), f(bg), i(r), i(id), f(fT), i(nc), f(g), f(gm), f(gc), f(gcol), f(go), stream());
  return {gm, gc, gcol, go};
}

std::tuple<T, T> wsr_fwd_cuda(const T& means2d, const T& conics, const T& colors, const T& weights, const T& ranges, const T& ids, int64_t w,
                              int64_t h, int64_t tile) {
  c10::cuda::CUDAGuard guard(means2d.device());
  auto s = shape_of(means2d, colors, w, h, tile);
  auto m = means2d.contiguous(), c = conics.contiguous(), col = colors.contiguous(), wt = weights.contiguous();
  auto r = ranges.contiguous(), id = ids.contiguous();
  auto numer = torch::empty({h, w, colors.size(1)}, colors.options());
  auto denom = torch::empty({h, w}, colors.options());
  cuda::wsr_fwd(s, f(m), f(c), f(col), f(wt), i(r), i(id), f(numer), f(denom), stream());
  return {numer, denom};
}

Grads4 wsr_bwd_cuda(const T& means2d, const T& conics, const T& colors, const T& weights, const T& ranges, const T& ids, int64_t w, int64_t h,
                    int64_t tile, const T& grad_numer, const T& grad_denom) {
  c10::cuda::CUDAGuard guard(means2d.device());
  auto s = shape_of(means2d, colors, w, h, tile);
  auto m = means2d.contiguous(), c = conics.contiguous(), col = colors.contiguous(), wt = weights.contiguous();
  auto r = ranges.contiguous(), id = ids.contiguous();
  auto gn = grad_numer.to(colors.options()).contiguous(), gd = grad_denom.to(colors.options()).contiguous();
  auto gm = torch::zeros_like(m), gc = torch::zeros_like(c), gcol = torch::zeros_like(col), gw = torch::zeros_like(wt);
  cuda::wsr_bwd(s, f(m), f(c), f(col), f(wt), i(r), i(id), f(gn), f(gd), f(gm), f(gc), f(gcol), f(gw), stream());
  return {gm, gc, gcol, gw};
}

}  // namespace

}  // namespace ef::splat::kernels

TORCH_LIBRARY_IMPL(edgeforge, CUDA, m) {
  m.impl("splat_alpha_fwd", &ef::splat::kernels::alpha_fwd_cuda);
  m.impl("splat_alpha_bwd", &ef::splat::kernels::alpha_bwd_cuda);
  m.impl("splat_wsr_fwd", &ef::splat::kernels::wsr_fwd_cuda);
  m.impl("splat_wsr_bwd", &ef::splat::kernels::wsr_bwd_cuda);
}
