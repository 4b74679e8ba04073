#include "flow/corr.h"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>

#include "flow/corr_kernels.h"

namespace ef::flow {

// ---- CPU kernels --------------------------------------------------------------------------------
namespace {

// Query n owns row n of the level, so the forward and the backward scatter parallelise over
// queries without races.
template <class T>
void lookup_forward_cpu(const T* level, const T* coords, T* out, int64_t N, int64_t h, int64_t w, int64_t r) {
  const int64_t side = 2 * r + 1, K = side * side;
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const T* L = level + n * h * w;
      const T cx = coords[2 * n], cy = coords[2 * n + 1];
      T* o = out + n * K;
      for (int64_t i = 0; i < side; ++i)
        for (int64_t j = 0; j < side; ++j) {
          const T x = cx + static_cast<T>(i - r), y = cy + static_cast<T>(j - r);
          const T xf = std::floor(x), yf = std::floor(y);
          const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
          const T ax = x - xf, ay = y - yf;
          T acc = 0;
          auto tap = [&](int64_t yy, int64_t xx, T wgt) {
            if (xx >= 0 && xx < w && yy >= 0 && yy < h) acc += wgt * L[yy * w + xx];
          };
          tap(y0, x0, (1 - ax) * (1 - ay));
          tap(y0, x0 + 1, ax * (1 - ay));
          tap(y0 + 1, x0, (1 - ax) * ay);
          tap(y0 + 1, x0 + 1, ax * ay);
          o[i * side + j] = acc;
        }
    }
  });
}

template <class T>
void lookup_backward_cpu(const T* grad, const T* coords, T* out, int64_t N, int64_t h, int64_t w, int64_t r) {
  const int64_t side = 2 * r + 1, K = side * side;
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      T* G = out + n * h * w;
      const T cx = coords[2 * n], cy = coords[2 * n + 1];
      const T* g = grad + n * K;
      for (int64_t i = 0; i < side; ++i)
        for (int64_t j = 0; j < side; ++j) {
          const T x = cx + static_cast<T>(i - r), y = cy + static_cast<T>(j - r);
          const T xf = std::floor(x), yf = std::floor(y);
          const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
          const T ax = x - xf, ay = y - yf, gv = g[i * side + j];
          auto tap = [&](int64_t yy, int64_t xx, T wgt) {
            if (xx >= 0 && xx < w && yy >= 0 && yy < h) G[yy * w + xx] += wgt * gv;
          };
          tap(y0, x0, (1 - ax) * (1 - ay));
          tap(y0, x0 + 1, ax * (1 - ay));
          tap(y0 + 1, x0, (1 - ax) * ay);
          tap(y0 + 1, x0 + 1, ax * ay);
        }
    }
  });
}

torch::Tensor corr_lookup_cpu(const torch::Tensor& level_in, const torch::Tensor& coords_in, int64_t radius) {
  check_corr_lookup_inputs(level_in, coords_in, radius);
  torch::Tensor level = level_in.contiguous(), coords = coords_in.to(level_in.scalar_type()).contiguous();
  const int64_t side = 2 * radius + 1;
  torch::Tensor out = torch::empty({coords.size(0), coords.size(1), coords.size(2), side * side}, level.options());
  AT_DISPATCH_FLOATING_TYPES(level.scalar_type(), "corr_lookup_cpu", [&] {
    lookup_forward_cpu<scalar_t>(level.data_ptr<scalar_t>(), coords.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), level.size(0),
                                 level.size(1), level.size(2), radius);
  });
  return out;
}

torch::Tensor corr_lookup_backward_cpu(const torch::Tensor& grad_in, const torch::Tensor& coords_in, int64_t h, int64_t w, int64_t radius) {
  check_corr_lookup_backward_inputs(grad_in, coords_in, h, w, radius);
  torch::Tensor grad = grad_in.contiguous(), coords = coords_in.to(grad_in.scalar_type()).contiguous();
  const int64_t N = coords.size(0) * coords.size(1) * coords.size(2);
  torch::Tensor out = torch::zeros({N, h, w}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "corr_lookup_backward_cpu", [&] {
    lookup_backward_cpu<scalar_t>(grad.data_ptr<scalar_t>(), coords.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, h, w, radius);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(edgeforge, m) {
  // level [N,h,w], coords [B,H,W,2] (x,y) -> [B,H,W,(2r+1)^2]
  m.def("corr_lookup(Tensor level, Tensor coords, int radius) -> Tensor");
  // grad [B,H,W,(2r+1)^2] -> grad of level [N,height,width]
  m.def("corr_lookup_backward(Tensor grad, Tensor coords, int height, int width, int radius) -> Tensor");
}

TORCH_LIBRARY_IMPL(edgeforge, CPU, m) {
  m.impl("corr_lookup", &corr_lookup_cpu);
  m.impl("corr_lookup_backward", &corr_lookup_backward_cpu);
}

// ---- autograd ------------------------------------------------------------------------------------
namespace {

torch::Tensor call_lookup(const torch::Tensor& level, const torch::Tensor& coords, int64_t radius) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("edgeforge::corr_lookup", "")
                       .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&, int64_t)>();
  return op.call(level, coords, radius);
}

torch::Tensor call_lookup_backward(const torch::Tensor& grad, const torch::Tensor& coords, int64_t h, int64_t w, int64_t radius) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("edgeforge::corr_lookup_backward", "")
                       .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&, int64_t, int64_t, int64_t)>();
  return op.call(grad, coords, h, w, radius);
}

struct CorrLookupFunction : torch::autograd::Function<CorrLookupFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& level, const torch::Tensor& coords, int64_t radius) {
    ctx->save_for_backward({coords});
    ctx->saved_data["h"] = level.size(1);
    ctx->saved_data["w"] = level.size(2);
    ctx->saved_data["r"] = radius;
    return call_lookup(level, coords, radius);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const torch::Tensor coords = ctx->get_saved_variables()[0];
    torch::Tensor g = call_lookup_backward(grads[0].contiguous(), coords, ctx->saved_data["h"].toInt(), ctx->saved_data["w"].toInt(),
                                           ctx->saved_data["r"].toInt());
    return {g, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor corr_lookup(const torch::Tensor& level, const torch::Tensor& coords, int64_t radius) {
  // coords never carry a gradient (RAFT detaches them); they stay at least float32 so that a
  // bf16/fp16 volume does not round the sampling positions
  const auto ct = level.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  return CorrLookupFunction::apply(level, coords.detach().to(ct), radius);
}

torch::Tensor corr_volume(const torch::Tensor& f1, const torch::Tensor& f2) {
  TORCH_CHECK(f1.dim() == 4 && f1.sizes() == f2.sizes(), "corr_volume: features must be equal [B,C,H,W], got ", f1.sizes(), " and ",
              f2.sizes());
  const int64_t B = f1.size(0), C = f1.size(1), H = f1.size(2), W = f1.size(3);
  torch::Tensor c = torch::matmul(f1.reshape({B, C, H * W}).transpose(1, 2), f2.reshape({B, C, H * W}));
  return (c / std::sqrt(static_cast<double>(C))).reshape({B * H * W, H, W});
}

std::vector<torch::Tensor> corr_pyramid(const torch::Tensor& volume, int64_t levels) {
  TORCH_CHECK(levels >= 1, "corr_pyramid: levels must be >= 1, got ", levels);
  std::vector<torch::Tensor> out{volume};
  for (int64_t k = 1; k < levels; ++k) {
    const torch::Tensor& prev = out.back();
    TORCH_CHECK(prev.size(1) >= 2 && prev.size(2) >= 2, "corr_pyramid: level ", k - 1, " is ", prev.size(1), "x", prev.size(2),
                ", too small for ", levels, " levels");
    out.push_back(torch::avg_pool2d(prev.unsqueeze(1), 2, 2).squeeze(1));
  }
  return out;
}

torch::Tensor lookup_pyramid(const std::vector<torch::Tensor>& pyramid, const torch::Tensor& coords, int64_t radius) {
  torch::Tensor c = coords.permute({0, 2, 3, 1}).contiguous();  // [B,H,W,2]
  std::vector<torch::Tensor> outs;
  for (size_t k = 0; k < pyramid.size(); ++k)
    outs.push_back(corr_lookup(pyramid[k], c / static_cast<double>(1 << k), radius));
  return torch::cat(outs, -1).permute({0, 3, 1, 2}).contiguous();
}

torch::Tensor local_correlation(const torch::Tensor& f1, const torch::Tensor& f2, const torch::Tensor& coords, int64_t radius,
                                int64_t levels) {
  TORCH_CHECK(f1.dim() == 4 && f1.sizes() == f2.sizes(), "local_correlation: features must be equal [B,C,H,W], got ", f1.sizes(),
              " and ", f2.sizes());
  const int64_t B = f1.size(0), C = f1.size(1), H = f1.size(2), W = f1.size(3), side = 2 * radius + 1, K = side * side;
  // offsets in RAFT's order: channel i*side + j -> (dx, dy) = (i - r, j - r)
  torch::Tensor d = torch::arange(-radius, radius + 1, f1.options());
  torch::Tensor delta = torch::stack(torch::meshgrid({d, d}, "ij"), -1).reshape({1, 1, 1, K, 2});
  torch::Tensor c = coords.detach().permute({0, 2, 3, 1}).unsqueeze(3);  // [B,H,W,1,2]
  torch::Tensor f2k = f2;
  std::vector<torch::Tensor> outs;
  for (int64_t k = 0; k < levels; ++k) {
    if (k > 0) f2k = torch::avg_pool2d(f2k, 2, 2);
    const int64_t h = f2k.size(2), w = f2k.size(3);
    torch::Tensor p = c / static_cast<double>(1 << k) + delta;  // [B,H,W,K,2] in level pixels
    torch::Tensor scale = torch::tensor({2.0 / std::max<int64_t>(w - 1, 1), 2.0 / std::max<int64_t>(h - 1, 1)}, f1.options());
    torch::Tensor grid = (p * scale - 1).reshape({B, H, W * K, 2});
    torch::Tensor s = torch::nn::functional::grid_sample(
        f2k, grid, torch::nn::functional::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(true));
    s = s.view({B, C, H, W, K});
    outs.push_back((s * f1.unsqueeze(-1)).sum(1) / std::sqrt(static_cast<double>(C)));  // [B,H,W,K]
  }
  return torch::cat(outs, -1).permute({0, 3, 1, 2}).contiguous();
}

}  // namespace ef::flow
