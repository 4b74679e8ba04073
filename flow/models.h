#pragma once
// Lightweight iterative-refinement flow networks (RAFT family) with the optional Self-Cleaning
// Iteration (SCI). Two architectures, chosen by model.kind:
//  - "raft-small": RAFT-S exactly (Teed & Deng 2020): bottleneck feature/context encoders to 1/8
//    resolution (instance norm / no norm), 4-level all-pairs correlation pyramid with radius-3 lookup,
//    small motion encoder, one 3x3 ConvGRU (hidden 96), bilinear x8 upsampling. 990,162 parameters.
//  - "mobileflow": the stand-in for Qualcomm's (unpublished) MobileFlow: inverted-residual
//    (MobileNetV2-style) encoders to 1/8, *local* correlation computed on the fly at the current
//    estimate (no all-pairs volume: memory linear in H*W), the RAFT-S update block, convex upsampling.
// Inputs are RGB in [0,1], [B,3,H,W] with H, W multiples of 8; the network maps them to [-1,1].
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/config.h"
#include "models/adaptable.h"

namespace ef::flow {

struct FlowModelOptions {
  std::string kind = "raft-small";  // "raft-small" | "mobileflow"
  int64_t feature_dim = 128;        // feature-encoder output channels
  int64_t hidden = 96;              // ConvGRU hidden state
  int64_t context = 64;             // context features fed to every iteration
  int64_t radius = 3;               // lookup radius r: (2r+1)^2 samples per level
  int64_t levels = 4;               // correlation pyramid levels
  int64_t iters = 12;               // refinement iterations in training
  std::string upsample = "bilinear";  // "bilinear" (RAFT-S) | "convex" (RAFT's learned 3x3 convex combination)
  // model section; defaults depend on kind (mobileflow: feature_dim 96, levels 2, iters 6, convex)
  static FlowModelOptions from(const Config& model);
};

// SCI (SciFlow §3.1), in every iteration before the update:
//   W(x) = F2(x + f(x)) (bilinear, align_corners, zeros; f = current coarse flow, detached),
//   M(x) = exp(-||F1^(x) - W^(x)||^2 / sigma^2) * inside(x),
// with ^ = per-pixel L2 normalisation (or, with normalize = false, the raw squared distance / C),
// inside = the warp of a ones map (0 out of frame). M is one extra input channel of the ConvGRU
// (input = "gru": [context, motion features, M]) or of the motion encoder ("motion": [corr, M]).
struct SciOptions {
  bool enabled = false;
  double sigma2 = 1.0;
  bool normalize = true;
  bool learn_sigma = false;  // learnable log sigma^2, initialised at log(sigma2)
  std::string input = "gru";  // "gru" | "motion"
  static SciOptions from(const Config& flow);  // the `flow` section: sci, sci_sigma2, sci_normalize, ...
};

// Backward warp of features by a flow in their own pixels: out(x) = feat(x + flow(x)).
// feat [B,C,h,w], flow [B,2,h,w] -> ([B,C,h,w], inside mask [B,1,h,w] in [0,1]).
std::pair<torch::Tensor, torch::Tensor> warp(const torch::Tensor& feat, const torch::Tensor& flow);
// What the SCI map needs of an image pair, prepared once before the iterations: F1 (L2-normalised
// when `normalize`) and F2 with a ones channel appended, so that one warp gives both W(F2) and the
// in-frame mask.
struct SciFeatures {
  torch::Tensor f1, f2_ones;
  bool normalize = true;
};
SciFeatures sci_features(const torch::Tensor& f1, const torch::Tensor& f2, bool normalize);
// The SCI map [B,1,h,w] in [0,1] at this flow (detached inside).
torch::Tensor sci_map(const SciFeatures& features, const torch::Tensor& flow, const torch::Tensor& sigma2);
// The same in one call, from the raw features.
torch::Tensor sci_map(const torch::Tensor& f1, const torch::Tensor& f2, const torch::Tensor& flow, const torch::Tensor& sigma2,
                      bool normalize);

// Convex upsampling (RAFT): flow [B,2,h,w] at 1/8, mask logits [B,9*64,h,w] -> [B,2,8h,8w] in full-res pixels.
torch::Tensor convex_upsample(const torch::Tensor& flow, const torch::Tensor& mask);
// 8 * bilinear(x8, align_corners) of the flow (RAFT-S's upflow8).
torch::Tensor bilinear_upsample8(const torch::Tensor& flow);

struct FlowOutput {
  std::vector<torch::Tensor> flows;     // full-resolution prediction after each iteration [B,2,H,W]
  std::vector<torch::Tensor> sci_maps;  // [B,1,H/8,W/8] per iteration, when SCI is on
};

class FlowNetImpl : public torch::nn::Module {
 public:
  FlowNetImpl(const FlowModelOptions& model, const SciOptions& sci);
  // image1, image2: [B,3,H,W] in [0,1]; iters <= 0: options().iters.
  FlowOutput forward(const torch::Tensor& image1, const torch::Tensor& image2, int64_t iters = 0);
  const FlowModelOptions& options() const { return opt_; }
  const SciOptions& sci() const { return sci_; }
  int64_t corr_channels() const { return opt_.levels * (2 * opt_.radius + 1) * (2 * opt_.radius + 1); }

  torch::nn::Sequential fnet{nullptr}, cnet{nullptr};
  ef::nn::Conv2d convc1{nullptr}, convf1{nullptr}, convf2{nullptr}, conv{nullptr};  // motion encoder
  ef::nn::Conv2d convz{nullptr}, convr{nullptr}, convq{nullptr};                     // ConvGRU
  ef::nn::Conv2d head1{nullptr}, head2{nullptr};                                     // flow head
  torch::nn::Sequential mask{nullptr};                                                  // convex upsampling
  torch::Tensor log_sigma2;                                                             // SCI, learn_sigma

 private:
  FlowModelOptions opt_;
  SciOptions sci_;
};
TORCH_MODULE(FlowNet);

int64_t count_parameters(torch::nn::Module& m);

}  // namespace ef::flow
