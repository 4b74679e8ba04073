#pragma once
// A small CLIP-text-like transformer: token + learned position embeddings, pre-norm causal
// self-attention blocks, final LayerNorm; the output is the last hidden state [B, L, dim] that
// diffusion UNets cross-attend to (Stable Diffusion uses the same tensor of CLIP ViT-L/14).
// Parameter names and shapes follow transformers' CLIPTextModel ("text_model.embeddings.
// token_embedding", "text_model.encoder.layers.N.self_attn.q_proj", "...mlp.fc1",
// "text_model.final_layer_norm"), so weights map across by name.
#include <torch/torch.h>

#include "core/config.h"
#include "models/adaptable.h"
#include "models/text/tokenizer.h"

namespace ef {

struct TextEncoderOptions {
  int64_t vocab_size = ByteTokenizer::kVocabSize;
  int64_t max_length = 66;  // positions; the tokenizer pads to it
  int64_t dim = 64;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t mlp_dim = 256;
  std::string activation = "quick_gelu";  // quick_gelu (CLIP: x sigmoid(1.702 x)) | gelu
  static TextEncoderOptions from(const Config& text);
};

class ClipTextLayerImpl : public torch::nn::Module {
 public:
  explicit ClipTextLayerImpl(const TextEncoderOptions& o);
  torch::Tensor forward(const torch::Tensor& x);  // [B, L, D], causal
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  ef::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr}, fc1{nullptr}, fc2{nullptr};

 private:
  int64_t heads_;
  bool quick_gelu_;
};
TORCH_MODULE(ClipTextLayer);

class TextEncoderImpl : public torch::nn::Module {
 public:
  explicit TextEncoderImpl(TextEncoderOptions o);
  torch::Tensor forward(const torch::Tensor& ids);  // [B, L] int64 -> [B, L, dim]
  // Tokenizes and encodes on the module's device.
  torch::Tensor encode(const std::vector<std::string>& texts);
  const TextEncoderOptions& options() const { return opt_; }
  const ByteTokenizer& tokenizer() const { return tokenizer_; }

 private:
  TextEncoderOptions opt_;
  ByteTokenizer tokenizer_;
  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(TextEncoder);

}  // namespace ef
