#include "flow/losses.h"

#include <cmath>

namespace ef::flow {

LossOptions LossOptions::from(const Config& c) {
  LossOptions o;
  o.kind = c.get<std::string>("kind", o.kind);
  o.gamma = c.get<double>("gamma", o.gamma);
  o.max_flow = c.get<double>("max_flow", o.max_flow);
  o.alpha = c.get<double>("alpha", o.alpha);
  o.beta = c.get<double>("beta", o.beta);
  o.reduction = c.get<std::string>("reduction", o.reduction);
  if (o.kind != "sequence_l1" && o.kind != "rfl") c.invalid("kind", "expected \"sequence_l1\" or \"rfl\", got \"" + o.kind + "\"");
  if (!(o.gamma > 0 && o.gamma <= 1)) c.invalid("gamma", "expected 0 < gamma <= 1");
  if (!(o.max_flow > 0)) c.invalid("max_flow", "must be positive");
  if (o.alpha < 0 || o.beta < 0) c.invalid("alpha", "alpha and beta must be >= 0");
  if (o.reduction != "all" && o.reduction != "valid") c.invalid("reduction", "expected \"all\" or \"valid\", got \"" + o.reduction + "\"");
  return o;
}

torch::Tensor rfl_confidence(const torch::Tensor& final_pred, const torch::Tensor& gt) {
  return torch::exp(-(gt - final_pred.detach()).square().sum(1, true));
}

torch::Tensor flow_sequence_loss(const std::vector<torch::Tensor>& preds, const torch::Tensor& gt, const torch::Tensor& valid_in,
                                 const LossOptions& o) {
  TORCH_CHECK(!preds.empty(), "flow loss: no predictions");
  TORCH_CHECK(gt.dim() == 4 && gt.size(1) == 2, "flow loss: ground truth must be [B,2,H,W], got ", gt.sizes());
  TORCH_CHECK(valid_in.dim() == 3 && valid_in.size(0) == gt.size(0) && valid_in.size(1) == gt.size(2) && valid_in.size(2) == gt.size(3),
              "flow loss: valid must be [B,H,W] for ground truth ", gt.sizes(), ", got ", valid_in.sizes());
  const torch::Tensor mag = gt.square().sum(1).sqrt();
  const torch::Tensor valid = ((valid_in.to(gt.scalar_type()) >= 0.5) & (mag < o.max_flow)).to(gt.scalar_type()).unsqueeze(1);  // [B,1,H,W]
  torch::Tensor weight = valid;
  if (o.kind == "rfl" && o.alpha != 0) {
    const torch::Tensor m = rfl_confidence(preds.back(), gt);
    weight = valid * (1 + o.alpha * torch::pow(1 - m, o.beta));
  }
  const double denom = o.reduction == "all" ? static_cast<double>(gt.numel()) : 0.0;
  const torch::Tensor n_valid = (2 * valid.sum()).clamp_min(1);
  const int64_t N = static_cast<int64_t>(preds.size());
  torch::Tensor loss = torch::zeros({}, gt.options());
  for (int64_t i = 0; i < N; ++i) {
    TORCH_CHECK(preds[i].sizes() == gt.sizes(), "flow loss: prediction ", i, " is ", preds[i].sizes(), ", ground truth ", gt.sizes());
    const torch::Tensor s = (weight * (gt - preds[i]).abs()).sum();
    loss = loss + std::pow(o.gamma, static_cast<double>(N - 1 - i)) * (denom > 0 ? s / denom : s / n_valid);
  }
  return loss;
}

}  // namespace ef::flow
