#pragma once
// ToSA: Token Selective Attention (Singh et al., arXiv 2406.08816). Layers come in pairs: a
// standard softmax layer hands its pre-softmax attention logits on; a token selector (two 1-D
// convolutions over the key axis, heads as channels, then log-softmax) predicts the next layer's
// attention maps from them; the next ("selective") layer runs attention + MLP on the top-K tokens
// by predicted received attention only, and the other tokens bypass the whole block and are put
// back in place, so every token reaches the output (dense heads). See README.md beside this file.
//
// Training (switchable): the selector is supervised by the real attention of its layer,
//   L_sel = sum over selective layers of mean_{b,h,q} KL(A[b,h,q,:] || Â[b,h,q,:]),
// reported through take_aux_losses() as "tosa_sel" (times sel_weight); and a staged schedule:
// `dense_steps` of dense training (no routing), then `selector_steps` with the backbone frozen
// (only the selectors learn, no routing), then routed training.
#include "models/adaptable.h"
#include "models/attention/attention.h"

namespace ef {

struct ToSAOptions {
  double keep_ratio = 0.5;      // rho: fraction of the patch tokens a selective layer keeps
  int64_t start_layer = 2;      // first selective layer (0-based); then every second layer
  int64_t queries = 0;          // query rows the selector reads (0: all N; Q > 0: Q strided rows)
  int64_t hidden = 4;           // selector hidden channels per head
  int64_t kernel = 3;           // selector conv kernel along the key axis
  double sel_weight = 1.0;      // lambda_sel of the selector loss (0: no selector supervision)
  int64_t dense_steps = 0;      // schedule: training forwards without routing (backbone + selectors)
  int64_t selector_steps = 0;   // schedule: then training forwards with the backbone frozen (stage A)
  bool qkv_bias = true;
  static ToSAOptions from(const Config& c);
};

class ToSAAttentionImpl : public TokenMixerImpl {
 public:
  enum class Role { Standard, Feeder, Selective };

  ToSAAttentionImpl(const AttentionShape& shape, const Config& options);
  ToSAAttentionImpl(const AttentionShape& shape, const ToSAOptions& options);

  // Plain multi-head softmax attention over all the given tokens (fused kernel): what a standard
  // layer computes, and what a selective layer computes on its kept tokens.
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor forward_ctx(const torch::Tensor& x, AttentionContext& ctx) override;
  torch::Tensor run_block(const torch::Tensor& x, AttentionContext& ctx, const BlockFunctions& block) override;
  double flops(int64_t tokens) const override;
  int64_t block_tokens(int64_t tokens) const override;
  bool backbone_frozen() const override;
  std::map<std::string, torch::Tensor> take_aux_losses() override;

  Role role() const { return role_; }
  int64_t kept_tokens(int64_t tokens) const;  // prefix + ceil(rho * patch tokens)
  // Selector: logits [B, H, Q, N] (pre-softmax, scaled by 1/sqrt(head dim)) -> predicted
  // log-attention [B, H, Q, N].
  torch::Tensor predict(const torch::Tensor& logits);
  // Indices [B, M] (ascending) of the tokens a selective layer keeps, from predicted log-maps.
  torch::Tensor select(const torch::Tensor& log_maps) const;
  // Attention logits [B, H, Q, N] of this layer's weights for input tokens t [B, N, C] (rows `rows`
  // [Q], or all rows when undefined).
  torch::Tensor logits(const torch::Tensor& t, const torch::Tensor& rows);
  // The query rows [Q] handed to the selector for N tokens (undefined: all).
  torch::Tensor query_rows(int64_t tokens, const torch::Device& device) const;
  int64_t stage_step() const;  // training forwards seen by this (selective) layer

  ef::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::nn::Sequential selector{nullptr};  // selective layers only
  torch::Tensor step;                        // selective layers only: int64 scalar buffer

 private:
  AttentionShape shape_;
  ToSAOptions opt_;
  Role role_ = Role::Standard;
  std::map<std::string, torch::Tensor> aux_;
};

}  // namespace ef
