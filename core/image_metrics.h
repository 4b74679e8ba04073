#pragma once
// Full-reference image metrics shared by every domain that scores images against targets
// (splatting novel views, edits, relighting). Images are float tensors in [0, 1], [H, W, C] or
// [B, C, H, W]; results are means over the batch.
#include <torch/torch.h>

namespace ef {

// 10 log10(1 / MSE); differentiable.
torch::Tensor psnr(const torch::Tensor& image, const torch::Tensor& target);
// SSIM as the 3DGS evaluation computes it: per channel, 11x11 Gaussian window (sigma 1.5),
// C1 = 0.01^2, C2 = 0.03^2, zero-padded "same" convolution, mean over pixels; differentiable.
torch::Tensor ssim(const torch::Tensor& image, const torch::Tensor& target);

}  // namespace ef
