// CPU rasterizer kernels: parallel over tiles (at::parallel_for), each tile walking its list per
// pixel as the reference CUDA rasterizer does per thread. Backward passes write each list entry's
// gradient into its own row (an entry belongs to one tile, so tiles never collide) and reduce the
// rows per Gaussian afterwards: no atomics, and the same sums in the same order on every run.
#include <ATen/Parallel.h>

#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "splatting/rasterize_kernels.h"
#include "splatting/splat_math.h"

namespace ef::splat::kernels {

namespace {

constexpr int64_t kMaxChannels = 32;

struct TileWalk {
  int64_t tiles_x, width, height, tile;
  // Calls f(px, py, start, end) for every pixel of tile `t`.
  template <typename F>
  void pixels(int64_t t, const int32_t* ranges, F&& f) const {
    const int64_t x0 = (t % tiles_x) * tile, y0 = (t / tiles_x) * tile;
    const int32_t start = ranges[2 * t], end = ranges[2 * t + 1];
    for (int64_t py = y0; py < std::min(y0 + tile, height); ++py)
      for (int64_t px = x0; px < std::min(x0 + tile, width); ++px) f(px, py, start, end);
  }
};

void check_inputs(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors, const torch::Tensor& per_gaussian,
                  const torch::Tensor& ranges, const torch::Tensor& ids, int64_t width, int64_t height, int64_t tile) {
  const int64_t n = means2d.size(0);
  TORCH_CHECK(means2d.dim() == 2 && means2d.size(1) == 2, "rasterize: means2d must be [N, 2], got ", means2d.sizes());
  TORCH_CHECK(conics.sizes() == torch::IntArrayRef({n, 3}), "rasterize: conics must be [N, 3] with N = ", n, ", got ", conics.sizes());
  TORCH_CHECK(colors.dim() == 2 && colors.size(0) == n, "rasterize: colors must be [N, C] with N = ", n, ", got ", colors.sizes());
  TORCH_CHECK(colors.size(1) <= kMaxChannels, "rasterize: at most ", kMaxChannels, " channels, got ", colors.size(1));
  TORCH_CHECK(per_gaussian.dim() == 1 && per_gaussian.size(0) == n, "rasterize: opacities/weights must be [N], got ", per_gaussian.sizes());
  TORCH_CHECK(tile > 0 && width > 0 && height > 0, "rasterize: bad image or tile size");
  const int64_t tiles = ((width + tile - 1) / tile) * ((height + tile - 1) / tile);
  TORCH_CHECK(ranges.sizes() == torch::IntArrayRef({tiles, 2}) && ranges.scalar_type() == torch::kInt32,
              "rasterize: tile_ranges must be int32 [", tiles, ", 2], got ", ranges.sizes());
  TORCH_CHECK(ids.dim() == 1 && ids.scalar_type() == torch::kInt32, "rasterize: gaussian_ids must be int32 [M]");
}

// Per Gaussian, the power below which its weight w·exp(power) falls under kMinAlpha, minus a margin:
// most (pixel, splat) pairs of a tile lie far outside the splat, and this skips their exp(). The
// exact test after exp() still decides, so results are unchanged.
template <typename T>
std::vector<T> skip_below(const T* weight, int64_t n) {
  std::vector<T> out(n);
  for (int64_t i = 0; i < n; ++i)
    out[i] = weight[i] > 0 ? std::log(T(kMinAlpha) / weight[i]) - T(1e-3) : std::numeric_limits<T>::infinity();
  return out;
}

}  // namespace

AlphaFwdResult alpha_fwd_cpu(const torch::Tensor& means2d_, const torch::Tensor& conics_, const torch::Tensor& colors_,
                             const torch::Tensor& opacities_, const torch::Tensor& background_, const torch::Tensor& ranges_,
                             const torch::Tensor& ids_, int64_t width, int64_t height, int64_t tile) {
  check_inputs(means2d_, conics_, colors_, opacities_, ranges_, ids_, width, height, tile);
  auto means2d = means2d_.contiguous(), conics = conics_.contiguous(), colors = colors_.contiguous(), opacities = opacities_.contiguous();
  auto background = background_.to(colors.dtype()).contiguous(), ranges = ranges_.contiguous(), ids = ids_.contiguous();
  const int64_t C = colors.size(1);
  auto image = torch::empty({height, width, C}, colors.options());
  auto final_T = torch::empty({height, width}, colors.options());
  auto n_contrib = torch::empty({height, width}, ranges.options());
  const TileWalk walk{(width + tile - 1) / tile, width, height, tile};
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "splat_alpha_fwd_cpu", [&] {
    using T = scalar_t;
    const T *mean = means2d.data_ptr<T>(), *con = conics.data_ptr<T>(), *col = colors.data_ptr<T>(), *op = opacities.data_ptr<T>(),
            *bg = background.data_ptr<T>();
    const int32_t *rng = ranges.data_ptr<int32_t>(), *id = ids.data_ptr<int32_t>();
    T *img = image.data_ptr<T>(), *fT = final_T.data_ptr<T>();
    int32_t* nc = n_contrib.data_ptr<int32_t>();
    const auto cutoff = skip_below(op, means2d.size(0));
    at::parallel_for(0, ranges.size(0), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        walk.pixels(t, rng, [&](int64_t px, int64_t py, int32_t start, int32_t end) {
          std::array<T, kMaxChannels> acc{};
          T trans = 1;
          int32_t last = 0;
          for (int32_t k = start; k < end; ++k) {
            const int32_t g = id[k];
            auto s = splat_at<T>(mean + 2 * g, con + 3 * g, T(px) + T(0.5), T(py) + T(0.5));
            if (s.power > 0 || s.power < cutoff[g]) continue;
            const T alpha = std::min(T(kMaxAlpha), op[g] * std::exp(s.power));
            if (alpha < T(kMinAlpha)) continue;
            const T next = trans * (1 - alpha);
            if (next < T(kMinTransmittance)) break;
            for (int64_t c = 0; c < C; ++c) acc[c] += col[g * C + c] * alpha * trans;
            trans = next;
            last = k - start + 1;
          }
          const int64_t p = py * width + px;
          for (int64_t c = 0; c < C; ++c) img[p * C + c] = acc[c] + trans * bg[c];
          fT[p] = trans;
          nc[p] = last;
        });
    });
  });
  return {image, final_T, n_contrib};
}

Grads4 alpha_bwd_cpu(const torch::Tensor& means2d_, const torch::Tensor& conics_, const torch::Tensor& colors_, const torch::Tensor& opacities_,
                     const torch::Tensor& background_, const torch::Tensor& ranges_, const torch::Tensor& ids_, int64_t width, int64_t height,
                     int64_t tile, const torch::Tensor& final_T_, const torch::Tensor& n_contrib_, const torch::Tensor& grad_image_) {
  check_inputs(means2d_, conics_, colors_, opacities_, ranges_, ids_, width, height, tile);
  auto means2d = means2d_.contiguous(), conics = conics_.contiguous(), colors = colors_.contiguous(), opacities = opacities_.contiguous();
  auto background = background_.to(colors.dtype()).contiguous(), ranges = ranges_.contiguous(), ids = ids_.contiguous();
  auto final_T = final_T_.contiguous(), n_contrib = n_contrib_.contiguous(), grad_image = grad_image_.to(colors.dtype()).contiguous();
  const int64_t C = colors.size(1), M = ids.size(0), row = 6 + C;  // [mean 2, conic 3, opacity 1, colour C]
  auto entry_grads = torch::zeros({M, row}, colors.options());
  const TileWalk walk{(width + tile - 1) / tile, width, height, tile};
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "splat_alpha_bwd_cpu", [&] {
    using T = scalar_t;
    const T *mean = means2d.data_ptr<T>(), *con = conics.data_ptr<T>(), *col = colors.data_ptr<T>(), *op = opacities.data_ptr<T>(),
            *bg = background.data_ptr<T>(), *fT = final_T.data_ptr<T>(), *gimg = grad_image.data_ptr<T>();
    const int32_t *rng = ranges.data_ptr<int32_t>(), *id = ids.data_ptr<int32_t>(), *nc = n_contrib.data_ptr<int32_t>();
    T* eg = entry_grads.data_ptr<T>();
    const auto cutoff = skip_below(op, means2d.size(0));
    at::parallel_for(0, ranges.size(0), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        walk.pixels(t, rng, [&](int64_t px, int64_t py, int32_t start, int32_t) {
          const int64_t p = py * width + px;
          const T* g_pix = gimg + p * C;
          T g_bg = 0;
          for (int64_t c = 0; c < C; ++c) g_bg += bg[c] * g_pix[c];
          std::array<T, kMaxChannels> behind{};  // colour of everything behind, per unit transmittance
          T trans = fT[p];
          for (int32_t k = start + nc[p] - 1; k >= start; --k) {
            const int32_t g = id[k];
            auto s = splat_at<T>(mean + 2 * g, con + 3 * g, T(px) + T(0.5), T(py) + T(0.5));
            if (s.power > 0 || s.power < cutoff[g]) continue;
            const T G = std::exp(s.power), raw = op[g] * G;
            const T alpha = std::min(T(kMaxAlpha), raw);
            if (alpha < T(kMinAlpha)) continue;
            trans /= (1 - alpha);  // transmittance in front of this splat
            T* e = eg + int64_t(k) * row;
            T g_alpha = 0;
            for (int64_t c = 0; c < C; ++c) {
              e[6 + c] += alpha * trans * g_pix[c];
              g_alpha += (col[g * C + c] - behind[c]) * g_pix[c];
              behind[c] = alpha * col[g * C + c] + (1 - alpha) * behind[c];
            }
            g_alpha = trans * g_alpha - fT[p] / (1 - alpha) * g_bg;
            if (raw < T(kMaxAlpha)) {  // the clamp's derivative is zero where it binds
              e[5] += G * g_alpha;
              add_power_grad<T>(s, con + 3 * g, g_alpha * raw, e);
            }
          }
        });
    });
  });
  auto sums = torch::zeros({means2d.size(0), row}, colors.options()).index_add_(0, ids.to(torch::kLong), entry_grads);
  return {sums.slice(1, 0, 2), sums.slice(1, 2, 5), sums.slice(1, 6, 6 + C), sums.select(1, 5)};
}

std::tuple<torch::Tensor, torch::Tensor> wsr_fwd_cpu(const torch::Tensor& means2d_, const torch::Tensor& conics_, const torch::Tensor& colors_,
                                                     const torch::Tensor& weights_, const torch::Tensor& ranges_, const torch::Tensor& ids_,
                                                     int64_t width, int64_t height, int64_t tile) {
  check_inputs(means2d_, conics_, colors_, weights_, ranges_, ids_, width, height, tile);
  auto means2d = means2d_.contiguous(), conics = conics_.contiguous(), colors = colors_.contiguous(), weights = weights_.contiguous();
  auto ranges = ranges_.contiguous(), ids = ids_.contiguous();
  const int64_t C = colors.size(1);
  auto numer = torch::empty({height, width, C}, colors.options());
  auto denom = torch::empty({height, width}, colors.options());
  const TileWalk walk{(width + tile - 1) / tile, width, height, tile};
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "splat_wsr_fwd_cpu", [&] {
    using T = scalar_t;
    const T *mean = means2d.data_ptr<T>(), *con = conics.data_ptr<T>(), *col = colors.data_ptr<T>(), *w = weights.data_ptr<T>();
    const int32_t *rng = ranges.data_ptr<int32_t>(), *id = ids.data_ptr<int32_t>();
    T *num = numer.data_ptr<T>(), *den = denom.data_ptr<T>();
    const auto cutoff = skip_below(w, means2d.size(0));
    at::parallel_for(0, ranges.size(0), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        walk.pixels(t, rng, [&](int64_t px, int64_t py, int32_t start, int32_t end) {
          std::array<T, kMaxChannels> acc{};
          T d = 0;
          for (int32_t k = start; k < end; ++k) {
            const int32_t g = id[k];
            auto s = splat_at<T>(mean + 2 * g, con + 3 * g, T(px) + T(0.5), T(py) + T(0.5));
            if (s.power > 0 || s.power < cutoff[g]) continue;
            const T a = w[g] * std::exp(s.power);
            if (a < T(kMinAlpha)) continue;
            for (int64_t c = 0; c < C; ++c) acc[c] += a * col[g * C + c];
            d += a;
          }
          const int64_t p = py * width + px;
          for (int64_t c = 0; c < C; ++c) num[p * C + c] = acc[c];
          den[p] = d;
        });
    });
  });
  return {numer, denom};
}

Grads4 wsr_bwd_cpu(const torch::Tensor& means2d_, const torch::Tensor& conics_, const torch::Tensor& colors_, const torch::Tensor& weights_,
                   const torch::Tensor& ranges_, const torch::Tensor& ids_, int64_t width, int64_t height, int64_t tile,
                   const torch::Tensor& grad_numer_, const torch::Tensor& grad_denom_) {
  check_inputs(means2d_, conics_, colors_, weights_, ranges_, ids_, width, height, tile);
  auto means2d = means2d_.contiguous(), conics = conics_.contiguous(), colors = colors_.contiguous(), weights = weights_.contiguous();
  auto ranges = ranges_.contiguous(), ids = ids_.contiguous();
  auto grad_numer = grad_numer_.to(colors.dtype()).contiguous(), grad_denom = grad_denom_.to(colors.dtype()).contiguous();
  const int64_t C = colors.size(1), M = ids.size(0), row = 6 + C;  // [mean 2, conic 3, weight 1, colour C]
  auto entry_grads = torch::zeros({M, row}, colors.options());
  const TileWalk walk{(width + tile - 1) / tile, width, height, tile};
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "splat_wsr_bwd_cpu", [&] {
    using T = scalar_t;
    const T *mean = means2d.data_ptr<T>(), *con = conics.data_ptr<T>(), *col = colors.data_ptr<T>(), *w = weights.data_ptr<T>();
    const T *gnum = grad_numer.data_ptr<T>(), *gden = grad_denom.data_ptr<T>();
    const int32_t *rng = ranges.data_ptr<int32_t>(), *id = ids.data_ptr<int32_t>();
    T* eg = entry_grads.data_ptr<T>();
    const auto cutoff = skip_below(w, means2d.size(0));
    at::parallel_for(0, ranges.size(0), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        walk.pixels(t, rng, [&](int64_t px, int64_t py, int32_t start, int32_t end) {
          const int64_t p = py * width + px;
          for (int32_t k = start; k < end; ++k) {
            const int32_t g = id[k];
            auto s = splat_at<T>(mean + 2 * g, con + 3 * g, T(px) + T(0.5), T(py) + T(0.5));
            if (s.power > 0 || s.power < cutoff[g]) continue;
            const T G = std::exp(s.power), a = w[g] * G;
            if (a < T(kMinAlpha)) continue;
            T* e = eg + int64_t(k) * row;
            T g_a = gden[p];
            for (int64_t c = 0; c < C; ++c) {
              e[6 + c] += a * gnum[p * C + c];
              g_a += col[g * C + c] * gnum[p * C + c];
            }
            e[5] += G * g_a;
            add_power_grad<T>(s, con + 3 * g, g_a * a, e);
          }
        });
    });
  });
  auto sums = torch::zeros({means2d.size(0), row}, colors.options()).index_add_(0, ids.to(torch::kLong), entry_grads);
  return {sums.slice(1, 0, 2), sums.slice(1, 2, 5), sums.slice(1, 6, 6 + C), sums.select(1, 5)};
}

}  // namespace ef::splat::kernels
