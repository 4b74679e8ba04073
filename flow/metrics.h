#pragma once
// Flow metrics as the KITTI 2015 devkit and the RAFT evaluation define them, and flow images.
//
//  EPE(x)  = || f(x) - f_gt(x) ||_2 over valid pixels.
//  Fl      : a valid pixel is an outlier iff EPE > 3 px AND EPE > 0.05 * ||f_gt||  (devkit rule);
//            Fl-all = 100 * #outliers / #valid, pooled over the whole set.
//  1/3/5px : 100 * fraction of valid pixels with EPE < 1, 3, 5 px (pooled).
//  epe     : pooled mean over all valid pixels of all images (Sintel convention);
//  epe_image: mean over images of each image's mean EPE (KITTI convention in RAFT's evaluate.py).
#include <torch/torch.h>

#include "core/metrics.h"

namespace ef::flow {

// Running sums over a set; add() any number of batches, then means().
struct FlowMetricSums {
  double epe_sum = 0, valid = 0, outliers = 0, px1 = 0, px3 = 0, px5 = 0;
  double image_epe_sum = 0, images = 0;
  // Extra pooled EPE sums for named pixel groups (e.g. "occ", "flat"): sum and count.
  std::map<std::string, std::pair<double, double>> groups;

  // pred, gt: [B,2,H,W]; valid: [B,H,W] (bool or 0/1). Images without valid pixels add nothing.
  void add(const torch::Tensor& pred, const torch::Tensor& gt, const torch::Tensor& valid);
  // Pooled EPE of the valid pixels where `mask` [B,H,W] holds, under `name`.
  void add_group(const std::string& name, const torch::Tensor& pred, const torch::Tensor& gt, const torch::Tensor& mask);
  // epe, epe_image, fl_all (%), 1px, 3px, 5px (%), and epe_<group> for each group (prefix before each key).
  Scalars means(const std::string& prefix = "") const;
};

// Per-pixel end-point error [B,H,W] and the devkit outlier mask [B,H,W] (bool).
torch::Tensor end_point_error(const torch::Tensor& pred, const torch::Tensor& gt);
torch::Tensor fl_outliers(const torch::Tensor& pred, const torch::Tensor& gt);

// Middlebury colour-wheel image (Baker et al. 2011, the code of flow_vis / RAFT's flow_viz):
// hue = direction, saturation = magnitude / max_magnitude (max over the image when <= 0).
// flow [2,H,W] -> float [3,H,W] in [0,1].
torch::Tensor flow_to_color(const torch::Tensor& flow, double max_magnitude = 0);
// KITTI devkit error image: colour bins of min(EPE/3, 20*EPE/||gt||) (blue = good, red = bad),
// black where the ground truth is invalid. pred, gt [2,H,W], valid [H,W] -> float [3,H,W].
torch::Tensor flow_error_image(const torch::Tensor& pred, const torch::Tensor& gt, const torch::Tensor& valid);

}  // namespace ef::flow
