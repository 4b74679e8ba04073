#include "models/attention/attention.h"

namespace ef {

SoftmaxAttentionImpl::SoftmaxAttentionImpl(const AttentionShape& shape, const Config& options)
    : dim_(shape.dim), heads_(shape.heads) {
  const bool bias = options.get<bool>("qkv_bias", true);
  TORCH_CHECK(heads_ > 0, "attention: heads must be at least 1, got ", heads_);
  TORCH_CHECK(dim_ % heads_ == 0, "attention: dim ", dim_, " is not divisible by heads ", heads_);
  qkv = register_module("qkv", ef::nn::Linear(torch::nn::LinearOptions(dim_, 3 * dim_).bias(bias)));
  proj = register_module("proj", ef::nn::Linear(dim_, dim_));
}

torch::Tensor SoftmaxAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), N = x.size(1);
  // [B, N, 3, H, D] -> 3 x [B, H, N, D]
  auto parts = qkv->forward(x).view({B, N, 3, heads_, dim_ / heads_}).permute({2, 0, 3, 1, 4}).unbind(0);
  torch::Tensor out = at::scaled_dot_product_attention(parts[0], parts[1], parts[2]);
  return proj->forward(out.transpose(1, 2).reshape({B, N, dim_}));
}

torch::Tensor SoftmaxAttentionImpl::attention_map(const torch::Tensor& x) {
  const int64_t B = x.size(0), N = x.size(1), D = dim_ / heads_;
  auto parts = qkv->forward(x).view({B, N, 3, heads_, D}).permute({2, 0, 3, 1, 4}).unbind(0);
  return torch::softmax(torch::matmul(parts[0], parts[1].transpose(-2, -1)) / std::sqrt(static_cast<double>(D)), -1);
}

double SoftmaxAttentionImpl::flops(int64_t n) const {
  const double N = static_cast<double>(n), C = static_cast<double>(dim_);
  return 2 * N * C * 3 * C   // qkv projection
         + 2 * 2 * N * N * C  // scores and weighted sum
         + 2 * N * C * C;     // output projection
}

EF_REGISTER(attention_kinds(), "softmax",
            [](const AttentionShape& s, const Config& c) { return std::make_unique<SoftmaxAttentionImpl>(s, c); },
            "multi-head softmax attention (fused scaled-dot-product)");

}  // namespace ef
