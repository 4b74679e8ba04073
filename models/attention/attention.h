#pragma once
// The attention seam: every token mixer maps tokens [B, N, C] -> [B, N, C] and is built by kind
// from `model.attention` ({"kind": "softmax", ...its own options}). New kinds register themselves
// in `attention_kinds()`; the ViT, the tests and the FLOP counter loop over the registry.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/config.h"
#include "core/registry.h"
#include "models/adaptable.h"

namespace ef {

struct AttentionShape {
  int64_t dim = 192;   // C
  int64_t heads = 3;
  // Where the mixer sits and what its tokens are (the ViT fills these in; 0 means unknown).
  int64_t layer = 0;                // block index, 0-based
  int64_t depth = 1;                // number of blocks of the network
  int64_t grid_h = 0, grid_w = 0;   // patch grid: tokens = prefix + grid_h * grid_w
  int64_t prefix = 0;               // tokens before the grid (the class token)
};

// State that one forward pass of a network shares between its blocks, for attention kinds that
// read other layers (ToSA: the previous layer's attention logits). A fresh one per forward pass.
struct AttentionContext {
  std::map<std::string, torch::Tensor> tensors;
};

// What a block hands its mixer in `run_block`.
struct BlockFunctions {
  std::function<torch::Tensor(const torch::Tensor&)> pre_norm;  // the mixer's input norm (norm1)
  std::function<torch::Tensor(const torch::Tensor&)> body;      // the whole block on tokens [B, M, C] -> [B, M, C]
};

class TokenMixerImpl : public torch::nn::Module {
 public:
  // x: [B, N, C] -> [B, N, C]
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // Analytic forward FLOPs (2 per multiply-add) for one sequence of `tokens` tokens.
  virtual double flops(int64_t tokens) const = 0;
  // Auxiliary losses the kind wants added to the task loss during training (name -> scalar);
  // cleared by the caller after each step.
  virtual std::map<std::string, torch::Tensor> take_aux_losses() { return {}; }

  // ---- hooks for kinds that look beyond their own block (defaults: plain behaviour) ----
  // The mixer inside a network pass: may read and write `ctx`.
  virtual torch::Tensor forward_ctx(const torch::Tensor& x, AttentionContext& ctx) { return forward(x); }
  // Runs the block around this mixer on x [B, N, C]: by default block.body(x). Token-selective
  // kinds run the body on a subset of tokens and pass the others through unchanged, in place.
  virtual torch::Tensor run_block(const torch::Tensor& x, AttentionContext& ctx, const BlockFunctions& block) {
    return block.body(x);
  }
  // Tokens the block body processes for a sequence of `tokens` tokens (for the MLP's FLOPs).
  virtual int64_t block_tokens(int64_t tokens) const { return tokens; }
  // True while a training stage trains only the kind's own auxiliary parts: the network then
  // runs without gradients (the kind re-enables them for its own parts).
  virtual bool backbone_frozen() const { return false; }
};

using AttentionRegistry = Registry<TokenMixerImpl, const AttentionShape&, const Config&>;
AttentionRegistry& attention_kinds();

std::shared_ptr<TokenMixerImpl> make_attention(const AttentionShape& shape, const Config& section);

// Plain multi-head softmax attention (through LibTorch's fused scaled_dot_product_attention).
class SoftmaxAttentionImpl : public TokenMixerImpl {
 public:
  SoftmaxAttentionImpl(const AttentionShape& shape, const Config& options);
  torch::Tensor forward(const torch::Tensor& x) override;
  double flops(int64_t tokens) const override;
  // Explicit attention probabilities [B, heads, N, N] (for analyses and tests; not the fast path).
  torch::Tensor attention_map(const torch::Tensor& x);

  ef::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t dim_, heads_;
};

}  // namespace ef
