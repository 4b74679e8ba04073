#include "flow/metrics.h"

#include <limits>

#include <array>
#include <cmath>

namespace ef::flow {

namespace {
torch::Tensor f64(const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat64); }
void check_pair(const torch::Tensor& pred, const torch::Tensor& gt) {
  TORCH_CHECK(pred.dim() == 4 && pred.size(1) == 2, "flow metrics: prediction must be [B,2,H,W], got ", pred.sizes());
  TORCH_CHECK(pred.sizes() == gt.sizes(), "flow metrics: prediction ", pred.sizes(), " vs ground truth ", gt.sizes());
}
}  // namespace

torch::Tensor end_point_error(const torch::Tensor& pred, const torch::Tensor& gt) {
  check_pair(pred, gt);
  return (f64(pred) - f64(gt)).square().sum(1).sqrt();
}

torch::Tensor fl_outliers(const torch::Tensor& pred, const torch::Tensor& gt) {
  torch::Tensor epe = end_point_error(pred, gt);
  torch::Tensor mag = f64(gt).square().sum(1).sqrt();
  return (epe > 3.0) & (epe > 0.05 * mag);
}

void FlowMetricSums::add(const torch::Tensor& pred, const torch::Tensor& gt, const torch::Tensor& valid_in) {
  torch::Tensor epe = end_point_error(pred, gt);
  TORCH_CHECK(valid_in.sizes() == epe.sizes(), "flow metrics: valid mask ", valid_in.sizes(), " vs flow ", pred.sizes());
  torch::Tensor v = valid_in.to(torch::kCPU).to(torch::kBool).to(torch::kFloat64);
  torch::Tensor n = v.flatten(1).sum(1);  // valid pixels per image
  torch::Tensor e = (epe * v).flatten(1).sum(1);
  epe_sum += e.sum().item<double>();
  valid += n.sum().item<double>();
  outliers += (fl_outliers(pred, gt).to(torch::kFloat64) * v).sum().item<double>();
  px1 += ((epe < 1.0).to(torch::kFloat64) * v).sum().item<double>();
  px3 += ((epe < 3.0).to(torch::kFloat64) * v).sum().item<double>();
  px5 += ((epe < 5.0).to(torch::kFloat64) * v).sum().item<double>();
  torch::Tensor has = n > 0;
  image_epe_sum += (e / n.clamp_min(1)).masked_select(has).sum().item<double>();
  images += has.sum().item<double>();
}

void FlowMetricSums::add_group(const std::string& name, const torch::Tensor& pred, const torch::Tensor& gt, const torch::Tensor& mask) {
  torch::Tensor epe = end_point_error(pred, gt);
  torch::Tensor m = mask.to(torch::kCPU).to(torch::kFloat64);
  auto& g = groups[name];
  g.first += (epe * m).sum().item<double>();
  g.second += m.sum().item<double>();
}

Scalars FlowMetricSums::means(const std::string& prefix) const {
  Scalars s;
  // No valid ground-truth pixel measures nothing: NaN, never a perfect 0.
  const double n = valid > 0 ? valid : std::numeric_limits<double>::quiet_NaN();
  s[prefix + "epe"] = epe_sum / n;
  s[prefix + "epe_image"] = images > 0 ? image_epe_sum / images : std::numeric_limits<double>::quiet_NaN();
  s[prefix + "fl_all"] = 100.0 * outliers / n;
  s[prefix + "1px"] = 100.0 * px1 / n;
  s[prefix + "3px"] = 100.0 * px3 / n;
  s[prefix + "5px"] = 100.0 * px5 / n;
  for (const auto& [name, g] : groups)
    if (g.second > 0) s[prefix + "epe_" + name] = g.first / g.second;
  return s;
}

namespace {
// Middlebury colour wheel: RY, YG, GC, CB, BM, MR segments of 15, 6, 4, 11, 13, 6 hues.
std::vector<std::array<double, 3>> color_wheel() {
  std::vector<std::array<double, 3>> w;
  const int seg[6] = {15, 6, 4, 11, 13, 6};
  for (int i = 0; i < seg[0]; ++i) w.push_back({255, std::floor(255.0 * i / seg[0]), 0});
  for (int i = 0; i < seg[1]; ++i) w.push_back({255 - std::floor(255.0 * i / seg[1]), 255, 0});
  for (int i = 0; i < seg[2]; ++i) w.push_back({0, 255, std::floor(255.0 * i / seg[2])});
  for (int i = 0; i < seg[3]; ++i) w.push_back({0, 255 - std::floor(255.0 * i / seg[3]), 255});
  for (int i = 0; i < seg[4]; ++i) w.push_back({std::floor(255.0 * i / seg[4]), 0, 255});
  for (int i = 0; i < seg[5]; ++i) w.push_back({255, 0, 255 - std::floor(255.0 * i / seg[5])});
  return w;
}
}  // namespace

torch::Tensor flow_to_color(const torch::Tensor& flow_in, double max_magnitude) {
  TORCH_CHECK(flow_in.dim() == 3 && flow_in.size(0) == 2, "flow_to_color: flow must be [2,H,W], got ", flow_in.sizes());
  static const std::vector<std::array<double, 3>> wheel = color_wheel();
  const int ncols = static_cast<int>(wheel.size());
  torch::Tensor flow = f64(flow_in).contiguous();
  const int64_t H = flow.size(1), W = flow.size(2);
  if (max_magnitude <= 0) max_magnitude = flow.square().sum(0).sqrt().max().item<double>();
  const double scale = 1.0 / std::max(max_magnitude, 1e-5);
  torch::Tensor out = torch::empty({3, H, W}, torch::kFloat32);
  const double* u = flow.data_ptr<double>();
  const double* v = u + H * W;
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < H * W; ++i) {
    const double fu = u[i] * scale, fv = v[i] * scale, rad = std::sqrt(fu * fu + fv * fv);
    const double a = std::atan2(-fv, -fu) / M_PI;
    const double fk = (a + 1) / 2 * (ncols - 1);
    const int k0 = static_cast<int>(std::floor(fk)), k1 = (k0 + 1) % ncols;
    const double f = fk - k0;
    for (int c = 0; c < 3; ++c) {
      double col = ((1 - f) * wheel[k0][c] + f * wheel[k1][c]) / 255.0;
      col = rad <= 1 ? 1 - rad * (1 - col) : col * 0.75;  // out of range: darker
      o[c * H * W + i] = static_cast<float>(col);
    }
  }
  return out;
}

torch::Tensor flow_error_image(const torch::Tensor& pred, const torch::Tensor& gt, const torch::Tensor& valid) {
  TORCH_CHECK(pred.dim() == 3 && pred.size(0) == 2 && pred.sizes() == gt.sizes(), "flow_error_image: pred ", pred.sizes(), " and gt ",
              gt.sizes(), " must both be [2,H,W]");
  // the devkit's log colour map: bins of the normalised error, with their RGB colours
  static const double LC[10][5] = {{0, 0.0625, 49, 54, 149},     {0.0625, 0.125, 69, 117, 180}, {0.125, 0.25, 116, 173, 209},
                                   {0.25, 0.5, 171, 217, 233},   {0.5, 1, 224, 243, 248},       {1, 2, 254, 224, 144},
                                   {2, 4, 253, 174, 97},         {4, 8, 244, 109, 67},          {8, 16, 215, 48, 39},
                                   {16, 1e9, 165, 0, 38}};
  torch::Tensor epe = end_point_error(pred.unsqueeze(0), gt.unsqueeze(0))[0];
  torch::Tensor mag = f64(gt).square().sum(0).sqrt();
  torch::Tensor n = torch::minimum(epe / 3.0, 20.0 * epe / mag.clamp_min(1e-9)).contiguous();
  torch::Tensor ok = valid.to(torch::kCPU, torch::kBool).contiguous();
  const int64_t H = epe.size(0), W = epe.size(1);
  torch::Tensor out = torch::zeros({3, H, W}, torch::kFloat32);
  const double* e = n.data_ptr<double>();
  const bool* m = ok.data_ptr<bool>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < H * W; ++i) {
    if (!m[i]) continue;
    for (const auto& bin : LC)
      if (e[i] >= bin[0] && e[i] < bin[1])
        for (int c = 0; c < 3; ++c) o[c * H * W + i] = static_cast<float>(bin[2 + c] / 255.0);
  }
  return out;
}

}  // namespace ef::flow
