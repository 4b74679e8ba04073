#pragma once
// RAFT's all-pairs correlation volume, its pyramid, and the radius lookup (the hot op).
//
// The lookup is a dispatcher op, `edgeforge::corr_lookup` (+ `edgeforge::corr_lookup_backward`),
// with a CPU kernel (corr.cpp) and a CUDA kernel (cuda/corr_lookup.cu, when built with CUDA), and
// an autograd function around both, so the exporter's tracer sees one op and both backends share
// one gradient definition.
#include <torch/torch.h>

#include <vector>

namespace ef::flow {

// <f1(x), f2(y)> / sqrt(C) over all pairs of pixels.
// f1, f2: [B,C,H,W] -> [B*H*W, H, W] (row n = query pixel (b, y, x) in row-major order)
torch::Tensor corr_volume(const torch::Tensor& f1, const torch::Tensor& f2);
// Average-pools the last two dims by 2, `levels` levels in all (level 0 = the volume itself).
std::vector<torch::Tensor> corr_pyramid(const torch::Tensor& volume, int64_t levels);

// Bilinear lookup of a (2r+1)^2 square around each query's coordinates, zeros outside the level
// (grid_sample with align_corners=True and zero padding, in pixel units).
// level:  [N, h, w], N = B*H*W
// coords: [B, H, W, 2] as (x, y) in this level's pixels
// return: [B, H, W, (2r+1)^2]; channel c = i*(2r+1) + j samples (x + i - r, y + j - r): RAFT's
//         order (the x offset on the slow index), so weights move between implementations.
// Differentiable w.r.t. `level`; coords get no gradient (RAFT detaches them before every lookup).
torch::Tensor corr_lookup(const torch::Tensor& level, const torch::Tensor& coords, int64_t radius);

// Lookup on every level at coords / 2^k, concatenated: [B, L*(2r+1)^2, H, W].
// coords: [B, 2, H, W] (x, y) in level-0 pixels.
torch::Tensor lookup_pyramid(const std::vector<torch::Tensor>& pyramid, const torch::Tensor& coords, int64_t radius);

// Local correlation computed on the fly (no all-pairs volume, memory linear in H*W): for every
// pixel x and offset d, <f1(x), f2_k(coords(x)/2^k + d)> / sqrt(C), where f2_k is f2 average-pooled
// k times and sampled bilinearly. Same channel order as lookup_pyramid, and equal to it
// on level 0 (bilinear sampling is linear). f1, f2: [B,C,H,W]; coords [B,2,H,W].
torch::Tensor local_correlation(const torch::Tensor& f1, const torch::Tensor& f2, const torch::Tensor& coords, int64_t radius,
                                int64_t levels);

}  // namespace ef::flow
