#pragma once
// Training losses over the sequence of per-iteration predictions f_1..f_N (full resolution, pixels).
//
//  sequence_l1 (RAFT):  L = sum_i gamma^(N-i) * mean( valid * |f_gt - f_i| )
//  rfl (SciFlow §3.2):  M_conf = exp(-||f_gt - f_N||^2)            (final prediction, detached)
//                       w      = 1 + alpha * (1 - M_conf)^beta
//                       L = sum_i gamma^(N-i) * mean( valid * w * |f_gt - f_i| )
// valid = the ground truth's valid mask and ||f_gt|| < max_flow. reduction "all" averages over all
// B*2*H*W entries with invalid ones zeroed (RAFT's code); "valid" divides by 2 * #valid pixels.
// With alpha = 0, rfl is exactly sequence_l1.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/config.h"

namespace ef::flow {

struct LossOptions {
  std::string kind = "sequence_l1";  // "sequence_l1" | "rfl"
  double gamma = 0.8;
  double max_flow = 400;
  double alpha = 1.0, beta = 2.0;    // rfl
  std::string reduction = "all";     // "all" | "valid"
  static LossOptions from(const Config& loss);
};

// exp(-||gt - pred||^2) per pixel, [B,1,H,W], no gradient.
torch::Tensor rfl_confidence(const torch::Tensor& final_pred, const torch::Tensor& gt);

// preds: N tensors [B,2,H,W]; gt [B,2,H,W]; valid [B,H,W] (bool or 0/1).
torch::Tensor flow_sequence_loss(const std::vector<torch::Tensor>& preds, const torch::Tensor& gt, const torch::Tensor& valid,
                                 const LossOptions& o);

}  // namespace ef::flow
