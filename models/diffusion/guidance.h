#pragma once
// Classifier-free guidance in the "scale" form used by diffusers' pipelines and InstructPix2Pix
// (s = 1: no guidance). Meng et al.'s "weight" form (1 + w) e_c - w e_u is the same with s = 1 + w.
#include <torch/torch.h>

namespace ef {

// e = e_u + s (e_c - e_u)
inline torch::Tensor classifier_free_guidance(const torch::Tensor& uncond, const torch::Tensor& cond, double scale) {
  return uncond + scale * (cond - uncond);
}

// InstructPix2Pix's two-condition guidance, three network passes per step:
//   e = e(z, 0, 0) + s_I [e(z, c_I, 0) - e(z, 0, 0)] + s_T [e(z, c_I, c_T) - e(z, c_I, 0)]
// full = e(z, c_I, c_T), image_only = e(z, c_I, 0), uncond = e(z, 0, 0). Larger s_I stays closer to the input.
inline torch::Tensor dual_guidance(const torch::Tensor& full, const torch::Tensor& image_only, const torch::Tensor& uncond,
                                   double image_scale, double text_scale) {
  return uncond + image_scale * (image_only - uncond) + text_scale * (full - image_only);
}

}  // namespace ef
