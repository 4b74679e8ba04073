// Dispatcher schemas of the rasterizer ops, their CPU implementations, and the autograd functions
// that call forward and backward through the dispatcher (so CUDA tensors reach the CUDA kernels and
// a tracer sees the ops).
#include "splatting/rasterize.h"

#include <torch/library.h>

#include "splatting/rasterize_kernels.h"

TORCH_LIBRARY_FRAGMENT(edgeforge, m) {
  m.def("splat_alpha_fwd(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities, Tensor background, Tensor tile_ranges, "
        "Tensor gaussian_ids, int width, int height, int tile) -> (Tensor, Tensor, Tensor)");
  m.def("splat_alpha_bwd(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities, Tensor background, Tensor tile_ranges, "
        "Tensor gaussian_ids, int width, int height, int tile, Tensor final_T, Tensor n_contrib, Tensor grad_image) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("splat_wsr_fwd(Tensor means2d, Tensor conics, Tensor colors, Tensor weights, Tensor tile_ranges, Tensor gaussian_ids, "
        "int width, int height, int tile) -> (Tensor, Tensor)");
  m.def("splat_wsr_bwd(Tensor means2d, Tensor conics, Tensor colors, Tensor weights, Tensor tile_ranges, Tensor gaussian_ids, "
        "int width, int height, int tile, Tensor grad_numer, Tensor grad_denom) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(edgeforge, CPU, m) {
  m.impl("splat_alpha_fwd", &ef::splat::kernels::alpha_fwd_cpu);
  m.impl("splat_alpha_bwd", &ef::splat::kernels::alpha_bwd_cpu);
  m.impl("splat_wsr_fwd", &ef::splat::kernels::wsr_fwd_cpu);
  m.impl("splat_wsr_bwd", &ef::splat::kernels::wsr_bwd_cpu);
}

namespace ef::splat {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
using T = torch::Tensor;

template <typename Sig>
auto op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

struct AlphaFn : torch::autograd::Function<AlphaFn> {
  static T forward(AutogradContext* ctx, T means2d, T conics, T colors, T opacities, T background, T ranges, T ids, int64_t w, int64_t h,
                   int64_t tile) {
    static auto fwd = op<std::tuple<T, T, T>(const T&, const T&, const T&, const T&, const T&, const T&, const T&, int64_t, int64_t,
                                             int64_t)>("edgeforge::splat_alpha_fwd");
    auto [image, final_T, n_contrib] = fwd.call(means2d, conics, colors, opacities, background, ranges, ids, w, h, tile);
    ctx->save_for_backward({means2d, conics, colors, opacities, background, ranges, ids, final_T, n_contrib});
    ctx->saved_data["size"] = std::vector<int64_t>{w, h, tile};
    return image;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static auto bwd = op<std::tuple<T, T, T, T>(const T&, const T&, const T&, const T&, const T&, const T&, const T&, int64_t, int64_t,
                                                int64_t, const T&, const T&, const T&)>("edgeforge::splat_alpha_bwd");
    auto s = ctx->get_saved_variables();
    auto size = ctx->saved_data["size"].toIntVector();
    auto [gm, gc, gcol, gop] = bwd.call(s[0], s[1], s[2], s[3], s[4], s[5], s[6], size[0], size[1], size[2], s[7], s[8], grads[0].contiguous());
    return {gm, gc, gcol, gop, T(), T(), T(), T(), T(), T()};
  }
};

struct WeightedSumFn : torch::autograd::Function<WeightedSumFn> {
  static tensor_list forward(AutogradContext* ctx, T means2d, T conics, T colors, T weights, T ranges, T ids, int64_t w, int64_t h,
                             int64_t tile) {
    static auto fwd = op<std::tuple<T, T>(const T&, const T&, const T&, const T&, const T&, const T&, int64_t, int64_t, int64_t)>(
        "edgeforge::splat_wsr_fwd");
    auto [numer, denom] = fwd.call(means2d, conics, colors, weights, ranges, ids, w, h, tile);
    ctx->save_for_backward({means2d, conics, colors, weights, ranges, ids});
    ctx->saved_data["size"] = std::vector<int64_t>{w, h, tile};
    return {numer, denom};
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static auto bwd = op<std::tuple<T, T, T, T>(const T&, const T&, const T&, const T&, const T&, const T&, int64_t, int64_t, int64_t,
                                                const T&, const T&)>("edgeforge::splat_wsr_bwd");
    auto s = ctx->get_saved_variables();
    auto size = ctx->saved_data["size"].toIntVector();
    auto g_num = grads[0].defined() ? grads[0].contiguous() : torch::zeros({size[1], size[0], s[2].size(1)}, s[2].options());
    auto g_den = grads[1].defined() ? grads[1].contiguous() : torch::zeros({size[1], size[0]}, s[2].options());
    auto [gm, gc, gcol, gw] = bwd.call(s[0], s[1], s[2], s[3], s[4], s[5], size[0], size[1], size[2], g_num, g_den);
    return {gm, gc, gcol, gw, T(), T(), T(), T(), T()};
  }
};

}  // namespace

torch::Tensor rasterize_alpha(const SplatInputs& in, const torch::Tensor& opacities, const torch::Tensor& background, const TileBins& bins,
                              const TileGrid& grid) {
  return AlphaFn::apply(in.means2d, in.conics, in.colors, opacities, background.to(in.colors.options()), bins.tile_ranges,
                        bins.gaussian_ids, grid.width, grid.height, grid.tile);
}

std::pair<torch::Tensor, torch::Tensor> rasterize_weighted_sum(const SplatInputs& in, const torch::Tensor& weights, const TileBins& bins,
                                                               const TileGrid& grid) {
  auto out = WeightedSumFn::apply(in.means2d, in.conics, in.colors, weights, bins.tile_ranges, bins.gaussian_ids, grid.width, grid.height,
                                  grid.tile);
  return {out[0], out[1]};
}

}  // namespace ef::splat
