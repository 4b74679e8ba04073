#include "models/diffusion/unet_blocks.h"

#include <cmath>

namespace ef {

namespace {
ef::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return ef::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}
torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps));
}
}  // namespace

torch::Tensor timestep_features(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift, double max_period) {
  TORCH_CHECK(timesteps.dim() == 1, "timestep_features expects timesteps [B], got ", timesteps.sizes());
  const int64_t half = dim / 2;
  torch::Tensor exponent = torch::arange(half, torch::TensorOptions().dtype(torch::kFloat).device(timesteps.device())) * (-std::log(max_period));
  torch::Tensor freqs = torch::exp(exponent / (static_cast<double>(half) - freq_shift));
  torch::Tensor args = timesteps.to(torch::kFloat).unsqueeze(1) * freqs.unsqueeze(0);  // [B, half]
  torch::Tensor emb = flip_sin_to_cos ? torch::cat({torch::cos(args), torch::sin(args)}, -1) : torch::cat({torch::sin(args), torch::cos(args)}, -1);
  if (dim % 2 == 1) emb = torch::constant_pad_nd(emb, {0, 1});
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_features, int64_t dim) {
  linear_1 = register_module("linear_1", ef::nn::Linear(in_features, dim));
  linear_2 = register_module("linear_2", ef::nn::Linear(dim, dim));
}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& features) { return linear_2->forward(torch::silu(linear_1->forward(features))); }

// ---- ResnetBlock2D ------------------------------------------------------------------------------

ResnetBlock2DImpl::ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t temb_channels, int64_t groups, double eps) {
  norm1 = register_module("norm1", group_norm(groups, in_channels, eps));
  conv1 = register_module("conv1", conv3x3(in_channels, out_channels));
  time_emb_proj = register_module("time_emb_proj", ef::nn::Linear(temb_channels, out_channels));
  norm2 = register_module("norm2", group_norm(groups, out_channels, eps));
  conv2 = register_module("conv2", conv3x3(out_channels, out_channels));
  if (in_channels != out_channels)
    conv_shortcut = register_module("conv_shortcut", ef::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 1)));
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  torch::Tensor h = conv1->forward(torch::silu(norm1->forward(x)));
  torch::Tensor e = time_emb_proj->forward(torch::silu(temb));
  if (extra_embedding) e = e + extra_embedding(temb);
  h = h + e.unsqueeze(-1).unsqueeze(-1);
  h = conv2->forward(torch::silu(norm2->forward(h)));
  return (conv_shortcut ? conv_shortcut->forward(x) : x) + h;
}

// ---- attention ----------------------------------------------------------------------------------

AttentionImpl::AttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads_, int64_t head_dim_) : heads(heads_), head_dim(head_dim_) {
  const int64_t inner = heads * head_dim, kv_dim = context_dim > 0 ? context_dim : query_dim;
  to_q = register_module("to_q", ef::nn::Linear(torch::nn::LinearOptions(query_dim, inner).bias(false)));
  to_k = register_module("to_k", ef::nn::Linear(torch::nn::LinearOptions(kv_dim, inner).bias(false)));
  to_v = register_module("to_v", ef::nn::Linear(torch::nn::LinearOptions(kv_dim, inner).bias(false)));
  to_out = register_module("to_out", torch::nn::ModuleList());
  to_out->push_back(ef::nn::Linear(inner, query_dim));
  to_out->push_back(torch::nn::Dropout(0.0));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const int64_t B = x.size(0), N = x.size(1);
  const torch::Tensor& source = context.defined() ? context : (key_value_source ? key_value_source(x) : x);
  TORCH_CHECK(source.dim() == 3 && source.size(0) == B && source.size(2) == to_k->options.in_features(), "Attention: keys/values from [", B,
              ", L, ", to_k->options.in_features(), "] expected, got ", source.sizes());
  auto heads_first = [&](const torch::Tensor& t) { return t.view({B, t.size(1), heads, head_dim}).transpose(1, 2); };
  torch::Tensor q = heads_first(to_q->forward(x)), k = heads_first(to_k->forward(source)), v = heads_first(to_v->forward(source));
  torch::Tensor o = at::scaled_dot_product_attention(q, k, v);  // [B, heads, N, head_dim]
  return to_out[0]->as<ef::nn::Linear>()->forward(o.transpose(1, 2).reshape({B, N, heads * head_dim}));
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t mult) {
  const int64_t inner = dim * mult;
  // net.0 is diffusers' GEGLU module, which holds the projection as "proj"
  auto geglu = std::make_shared<torch::nn::Module>();
  proj = geglu->register_module("proj", ef::nn::Linear(dim, 2 * inner));
  net = register_module("net", torch::nn::ModuleList());
  net->push_back(geglu);
  net->push_back(torch::nn::Dropout(0.0));
  out = ef::nn::Linear(inner, dim);
  net->push_back(out);
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  auto parts = proj->forward(x).chunk(2, -1);
  return out->forward(parts[0] * torch::gelu(parts[1]));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim, int64_t cross_attention_dim) {
  auto layer_norm = [dim] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5)); };
  norm1 = register_module("norm1", layer_norm());
  attn1 = register_module("attn1", Attention(dim, 0, heads, head_dim));
  norm2 = register_module("norm2", layer_norm());
  attn2 = register_module("attn2", Attention(dim, cross_attention_dim, heads, head_dim));
  norm3 = register_module("norm3", layer_norm());
  ff = register_module("ff", FeedForward(dim));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  torch::Tensor h = attn1->forward(norm1->forward(x)) + x;
  h = attn2->forward(norm2->forward(h), context) + h;
  return ff->forward(norm3->forward(h)) + h;
}

Transformer2DImpl::Transformer2DImpl(int64_t channels, const TransformerShape& s) : linear_projection(s.linear_projection) {
  TORCH_CHECK(s.heads > 0 && channels % s.heads == 0, "Transformer2D: ", channels, " channels do not split into ", s.heads, " heads");
  norm = register_module("norm", group_norm(s.groups, channels, 1e-6));
  if (linear_projection) proj_in_linear = register_module("proj_in", ef::nn::Linear(channels, channels));
  else proj_in_conv = register_module("proj_in", ef::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 1)));
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t k = 0; k < s.layers; ++k)
    transformer_blocks->push_back(BasicTransformerBlock(channels, s.heads, channels / s.heads, s.cross_attention_dim));
  if (linear_projection) proj_out_linear = register_module("proj_out", ef::nn::Linear(channels, channels));
  else proj_out_conv = register_module("proj_out", ef::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 1)));
}

torch::Tensor Transformer2DImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  torch::Tensor h = norm->forward(x);
  if (linear_projection) h = proj_in_linear->forward(h.permute({0, 2, 3, 1}).reshape({B, H * W, C}));
  else h = proj_in_conv->forward(h).permute({0, 2, 3, 1}).reshape({B, H * W, C});
  for (const auto& block : *transformer_blocks) h = block->as<BasicTransformerBlock>()->forward(h, context);
  if (linear_projection) h = proj_out_linear->forward(h).reshape({B, H, W, C}).permute({0, 3, 1, 2}).contiguous();
  else h = proj_out_conv->forward(h.reshape({B, H, W, C}).permute({0, 3, 1, 2}).contiguous());
  return h + x;
}

Downsample2DImpl::Downsample2DImpl(int64_t channels) { conv = register_module("conv", conv3x3(channels, channels, 2)); }

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) { return conv->forward(x); }

Upsample2DImpl::Upsample2DImpl(int64_t channels) { conv = register_module("conv", conv3x3(channels, channels)); }

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x) {
  return conv->forward(torch::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
}

// ---- UNet blocks --------------------------------------------------------------------------------

UNetDownBlockImpl::UNetDownBlockImpl(const UNetBlockShape& s) : shape(s) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (s.attention) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t j = 0; j < s.layers; ++j) {
    resnets->push_back(ResnetBlock2D(j == 0 ? s.in_channels : s.out_channels, s.out_channels, s.temb_channels, s.groups, s.eps));
    if (s.attention) attentions->push_back(Transformer2D(s.out_channels, s.transformer));
  }
  if (s.resample) {
    downsamplers = register_module("downsamplers", torch::nn::ModuleList());
    downsamplers->push_back(Downsample2D(s.out_channels));
  }
}

torch::Tensor UNetDownBlockImpl::forward_unit(int64_t u, const torch::Tensor& x, const UNetBlockInputs& in) {
  TORCH_CHECK(u >= 0 && u < units(), "UNet down block: unit ", u, " of ", units());
  if (u == shape.layers) return downsamplers[0]->as<Downsample2D>()->forward(x);
  torch::Tensor h = resnets[u]->as<ResnetBlock2D>()->forward(x, in.temb);
  if (attentions) h = attentions[u]->as<Transformer2D>()->forward(h, in.context);
  return h;
}

torch::Tensor UNetDownBlockImpl::forward(torch::Tensor x, const UNetBlockInputs& in, std::vector<torch::Tensor>& skips) {
  for (int64_t u = 0; u < units(); ++u) {
    x = forward_unit(u, x, in);
    skips.push_back(x);
  }
  return x;
}

UNetMidBlockImpl::UNetMidBlockImpl(const UNetBlockShape& s) : shape(s) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnets->push_back(ResnetBlock2D(s.in_channels, s.in_channels, s.temb_channels, s.groups, s.eps));
  if (!s.attention) return;
  attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t j = 0; j < s.layers; ++j) {
    attentions->push_back(Transformer2D(s.in_channels, s.transformer));
    resnets->push_back(ResnetBlock2D(s.in_channels, s.in_channels, s.temb_channels, s.groups, s.eps));
  }
}

torch::Tensor UNetMidBlockImpl::forward(torch::Tensor x, const UNetBlockInputs& in) {
  x = resnets[0]->as<ResnetBlock2D>()->forward(x, in.temb);
  if (attentions)
    for (size_t j = 0; j < attentions->size(); ++j) {
      x = attentions[j]->as<Transformer2D>()->forward(x, in.context);
      x = resnets[j + 1]->as<ResnetBlock2D>()->forward(x, in.temb);
    }
  return x;
}

UNetUpBlockImpl::UNetUpBlockImpl(const UNetBlockShape& s) : shape(s) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (s.attention) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t j = 0; j < s.layers; ++j) {
    // the last resnet takes the skip that entered the matching down block (in_channels)
    const int64_t skip = j == s.layers - 1 ? s.in_channels : s.out_channels;
    const int64_t from_below = j == 0 ? s.prev_output_channels : s.out_channels;
    resnets->push_back(ResnetBlock2D(from_below + skip, s.out_channels, s.temb_channels, s.groups, s.eps));
    if (s.attention) attentions->push_back(Transformer2D(s.out_channels, s.transformer));
  }
  if (s.resample) {
    upsamplers = register_module("upsamplers", torch::nn::ModuleList());
    upsamplers->push_back(Upsample2D(s.out_channels));
  }
}

torch::Tensor UNetUpBlockImpl::forward_unit(int64_t u, const torch::Tensor& x, const UNetBlockInputs& in, const torch::Tensor& skip) {
  TORCH_CHECK(u >= 0 && u < units(), "UNet up block: unit ", u, " of ", units());
  if (u == shape.layers) return upsamplers[0]->as<Upsample2D>()->forward(x);
  TORCH_CHECK(skip.defined(), "UNet up block: no skip connection for resnet ", u);
  torch::Tensor h = resnets[u]->as<ResnetBlock2D>()->forward(torch::cat({x, skip}, 1), in.temb);
  if (attentions) h = attentions[u]->as<Transformer2D>()->forward(h, in.context);
  return h;
}

torch::Tensor UNetUpBlockImpl::forward(torch::Tensor x, const UNetBlockInputs& in, std::vector<torch::Tensor>& skips) {
  for (int64_t u = 0; u < units(); ++u) {
    torch::Tensor skip;
    if (takes_skip(u)) {
      TORCH_CHECK(!skips.empty(), "UNet up block: no skip connection left for resnet ", u);
      skip = skips.back();
      skips.pop_back();
    }
    x = forward_unit(u, x, in, skip);
  }
  return x;
}

}  // namespace ef
