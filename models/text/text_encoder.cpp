#include "models/text/text_encoder.h"

namespace ef {

TextEncoderOptions TextEncoderOptions::from(const Config& c) {
  TextEncoderOptions o;
  o.max_length = c.get<int64_t>("max_length", o.max_length);
  o.dim = c.get<int64_t>("dim", o.dim);
  o.layers = c.get<int64_t>("layers", o.layers);
  o.heads = c.get<int64_t>("heads", o.heads);
  o.mlp_dim = c.get<int64_t>("mlp_dim", 4 * o.dim);
  o.activation = c.get<std::string>("activation", o.activation);
  if (o.activation != "quick_gelu" && o.activation != "gelu") c.invalid("activation", "expected quick_gelu or gelu");
  if (o.dim % o.heads != 0) c.invalid("heads", "dim " + std::to_string(o.dim) + " is not divisible by " + std::to_string(o.heads) + " heads");
  if (o.max_length < 2) c.invalid("max_length", "must be at least 2");
  return o;
}

ClipTextLayerImpl::ClipTextLayerImpl(const TextEncoderOptions& o) : heads_(o.heads), quick_gelu_(o.activation == "quick_gelu") {
  layer_norm1 = register_module("layer_norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim}).eps(1e-5)));
  // CLIP's attention lives under "self_attn" and the MLP under "mlp": small holder modules keep those names.
  auto attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
  q_proj = attn->register_module("q_proj", ef::nn::Linear(o.dim, o.dim));
  k_proj = attn->register_module("k_proj", ef::nn::Linear(o.dim, o.dim));
  v_proj = attn->register_module("v_proj", ef::nn::Linear(o.dim, o.dim));
  out_proj = attn->register_module("out_proj", ef::nn::Linear(o.dim, o.dim));
  layer_norm2 = register_module("layer_norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim}).eps(1e-5)));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1 = mlp->register_module("fc1", ef::nn::Linear(o.dim, o.mlp_dim));
  fc2 = mlp->register_module("fc2", ef::nn::Linear(o.mlp_dim, o.dim));
}

torch::Tensor ClipTextLayerImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), l = x.size(1), d = x.size(2);
  auto heads = [&](const torch::Tensor& t) { return t.view({b, l, heads_, d / heads_}).transpose(1, 2); };
  torch::Tensor h = layer_norm1(x);
  torch::Tensor a = at::scaled_dot_product_attention(heads(q_proj(h)), heads(k_proj(h)), heads(v_proj(h)), {}, 0.0, /*is_causal=*/true);
  torch::Tensor y = x + out_proj(a.transpose(1, 2).reshape({b, l, d}));
  torch::Tensor m = fc1(layer_norm2(y));
  m = quick_gelu_ ? m * torch::sigmoid(1.702 * m) : torch::gelu(m);
  return y + fc2(m);
}

TextEncoderImpl::TextEncoderImpl(TextEncoderOptions o) : opt_(std::move(o)), tokenizer_(opt_.max_length) {
  auto text_model = register_module("text_model", std::make_shared<torch::nn::Module>());
  auto embeddings = text_model->register_module("embeddings", std::make_shared<torch::nn::Module>());
  token_embedding = embeddings->register_module("token_embedding", torch::nn::Embedding(opt_.vocab_size, opt_.dim));
  position_embedding = embeddings->register_module("position_embedding", torch::nn::Embedding(opt_.max_length, opt_.dim));
  // CLIP's initialisation: embeddings N(0, 0.02)
  torch::NoGradGuard no_grad;
  token_embedding->weight.normal_(0, 0.02);
  position_embedding->weight.normal_(0, 0.01);
  auto encoder = text_model->register_module("encoder", std::make_shared<torch::nn::Module>());
  layers = encoder->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < opt_.layers; ++i) layers->push_back(ClipTextLayer(opt_));
  final_layer_norm = text_model->register_module("final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({opt_.dim}).eps(1e-5)));
}

torch::Tensor TextEncoderImpl::forward(const torch::Tensor& ids) {
  TORCH_CHECK(ids.dim() == 2, "text encoder: expected token ids [B, L], got ", ids.sizes());
  TORCH_CHECK(ids.size(1) <= opt_.max_length, "text encoder: ", ids.size(1), " tokens but only ", opt_.max_length, " positions");
  torch::Tensor positions = torch::arange(ids.size(1), ids.options().dtype(torch::kLong));
  torch::Tensor x = token_embedding(ids) + position_embedding(positions).unsqueeze(0);
  for (const auto& layer : *layers) x = layer->as<ClipTextLayer>()->forward(x);
  return final_layer_norm(x);
}

torch::Tensor TextEncoderImpl::encode(const std::vector<std::string>& texts) {
  return forward(tokenizer_.encode(texts).to(token_embedding->weight.device()));
}

}  // namespace ef
