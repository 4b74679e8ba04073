#include "models/diffusion/unet.h"

#include <stdexcept>

namespace ef {

namespace {

// The first inconsistent option as {key, why}; {"", ""} when the options describe a network.
std::pair<std::string, std::string> first_problem(const UNetOptions& o) {
  auto s = [](int64_t v) { return std::to_string(v); };
  if (o.block_out_channels.empty()) return {"block_out_channels", "needs at least one level"};
  if (o.cross_attention.size() != o.block_out_channels.size())
    return {"cross_attention", "has " + s(static_cast<int64_t>(o.cross_attention.size())) + " entries for " + s(o.levels()) + " levels (block_out_channels)"};
  for (auto [key, v] : {std::pair<const char*, int64_t>{"in_channels", o.in_channels}, {"out_channels", o.out_channels},
                        {"layers_per_block", o.layers_per_block}, {"transformer_layers_per_block", o.transformer_layers_per_block},
                        {"cross_attention_dim", o.cross_attention_dim}, {"attention_heads", o.attention_heads}, {"norm_num_groups", o.norm_num_groups}})
    if (v <= 0) return {key, "must be positive, got " + s(v)};
  for (int64_t i = 0; i < o.levels(); ++i) {
    const int64_t c = o.block_out_channels[i];
    if (c <= 0 || c % o.norm_num_groups != 0)
      return {"block_out_channels", "level " + s(i) + " has " + s(c) + " channels, not a positive multiple of norm_num_groups " + s(o.norm_num_groups)};
    const bool attends = o.cross_attention[i] || (o.mid_block_attention && i == o.levels() - 1);
    if (attends && c % o.attention_heads != 0)
      return {"attention_heads", s(c) + " channels at level " + s(i) + " do not split into " + s(o.attention_heads) + " heads"};
  }
  return {"", ""};
}

}  // namespace

bool UNetOptions::attends() const {
  if (mid_block_attention) return true;
  for (bool c : cross_attention)
    if (c) return true;
  return false;
}

void UNetOptions::validate() const {
  auto [key, why] = first_problem(*this);
  if (!key.empty()) throw std::invalid_argument("UNet options: " + key + ": " + why);
}

UNetOptions UNetOptions::from(const Config& c) {
  UNetOptions o;
  o.in_channels = c.get<int64_t>("in_channels", o.in_channels);
  o.out_channels = c.get<int64_t>("out_channels", o.out_channels);
  o.block_out_channels = c.get<std::vector<int64_t>>("block_out_channels", o.block_out_channels);
  const nlohmann::json cross = c.get<nlohmann::json>("cross_attention", nlohmann::json(o.cross_attention));
  bool all_bool = cross.is_array();
  if (all_bool)
    for (const auto& e : cross) all_bool = all_bool && e.is_boolean();
  if (!all_bool) c.invalid("cross_attention", "expected an array of booleans (one per level), got " + describe_json(cross));
  o.cross_attention.assign(cross.begin(), cross.end());
  o.layers_per_block = c.get<int64_t>("layers_per_block", o.layers_per_block);
  o.transformer_layers_per_block = c.get<int64_t>("transformer_layers_per_block", o.transformer_layers_per_block);
  o.cross_attention_dim = c.get<int64_t>("cross_attention_dim", o.cross_attention_dim);
  o.attention_heads = c.get<int64_t>("attention_heads", o.attention_heads);
  o.norm_num_groups = c.get<int64_t>("norm_num_groups", o.norm_num_groups);
  o.use_linear_projection = c.get<bool>("use_linear_projection", o.use_linear_projection);
  o.mid_block_attention = c.get<bool>("mid_block_attention", o.mid_block_attention);
  auto [key, why] = first_problem(o);
  if (!key.empty()) c.invalid(key, why);
  return o;
}

nlohmann::json UNetOptions::diffusers_config() const {
  nlohmann::json down = nlohmann::json::array(), up = nlohmann::json::array();
  for (int64_t i = 0; i < levels(); ++i) {
    down.push_back(cross_attention[i] ? "CrossAttnDownBlock2D" : "DownBlock2D");
    up.push_back(cross_attention[levels() - 1 - i] ? "CrossAttnUpBlock2D" : "UpBlock2D");
  }
  // Everything our network fixes is written out, so that a change of diffusers' defaults cannot
  // silently build another network.
  return {{"_class_name", "UNet2DConditionModel"},
          {"in_channels", in_channels},
          {"out_channels", out_channels},
          {"center_input_sample", false},
          {"flip_sin_to_cos", true},
          {"freq_shift", 0},
          {"down_block_types", down},
          {"mid_block_type", mid_block_attention ? "UNetMidBlock2DCrossAttn" : "UNetMidBlock2D"},
          {"up_block_types", up},
          {"only_cross_attention", false},
          {"block_out_channels", block_out_channels},
          {"layers_per_block", layers_per_block},
          {"downsample_padding", 1},
          {"mid_block_scale_factor", 1},
          {"dropout", 0.0},
          {"act_fn", "silu"},
          {"norm_num_groups", norm_num_groups},
          {"norm_eps", 1e-5},
          {"cross_attention_dim", cross_attention_dim},
          {"transformer_layers_per_block", transformer_layers_per_block},
          {"attention_head_dim", attention_heads},
          {"use_linear_projection", use_linear_projection},
          {"upcast_attention", false},
          {"resnet_time_scale_shift", "default"},
          {"time_embedding_type", "positional"},
          {"conv_in_kernel", 3},
          {"conv_out_kernel", 3}};
}

UNetBlockShape UNetOptions::block_shape(int64_t in, int64_t out, int64_t layers, bool attention, bool resample) const {
  UNetBlockShape s;
  s.in_channels = in;
  s.out_channels = out;
  s.temb_channels = temb_channels();
  s.layers = layers;
  s.groups = norm_num_groups;
  s.attention = attention;
  s.resample = resample;
  s.transformer.heads = attention_heads;
  s.transformer.layers = transformer_layers_per_block;
  s.transformer.cross_attention_dim = cross_attention_dim;
  s.transformer.groups = norm_num_groups;
  s.transformer.linear_projection = use_linear_projection;
  return s;
}

UNetBlockShape UNetOptions::down_block_shape(int64_t i) const {
  const auto& ch = block_out_channels;
  return block_shape(i == 0 ? ch[0] : ch[i - 1], ch[i], layers_per_block, cross_attention[i], i < levels() - 1);
}

UNetBlockShape UNetOptions::mid_block_shape() const {
  return block_shape(block_out_channels.back(), block_out_channels.back(), 1, mid_block_attention, false);
}

// Up block r mirrors level L-1-r; its last resnet takes the skip that entered that level.
UNetBlockShape UNetOptions::up_block_shape(int64_t r) const {
  const auto& ch = block_out_channels;
  const int64_t level = levels() - 1 - r;
  UNetBlockShape s = block_shape(ch[std::max<int64_t>(level - 1, 0)], ch[level], layers_per_block + 1, cross_attention[level], r < levels() - 1);
  s.prev_output_channels = r == 0 ? ch.back() : ch[level + 1];
  return s;
}

UNet2DConditionImpl::UNet2DConditionImpl(UNetOptions o) : opt_(std::move(o)) {
  opt_.validate();
  const auto& ch = opt_.block_out_channels;
  const int64_t L = opt_.levels(), temb = opt_.temb_channels();
  conv_in = register_module("conv_in", ef::nn::Conv2d(torch::nn::Conv2dOptions(opt_.in_channels, ch.front(), 3).padding(1)));
  time_embedding = register_module("time_embedding", TimestepEmbedding(ch.front(), temb));

  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < L; ++i) down_blocks->push_back(UNetDownBlock(opt_.down_block_shape(i)));
  mid_block = register_module("mid_block", UNetMidBlock(opt_.mid_block_shape()));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  for (int64_t r = 0; r < L; ++r) up_blocks->push_back(UNetUpBlock(opt_.up_block_shape(r)));

  conv_norm_out = register_module("conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(opt_.norm_num_groups, ch.front()).eps(1e-5)));
  conv_out = register_module("conv_out", ef::nn::Conv2d(torch::nn::Conv2dOptions(ch.front(), opt_.out_channels, 3).padding(1)));
}

const UNetOptions& UNet2DConditionImpl::options() const { return opt_; }

torch::Tensor UNet2DConditionImpl::time_embed(const torch::Tensor& timesteps, torch::ScalarType dtype) {
  return time_embedding->forward(timestep_features(timesteps, opt_.block_out_channels.front()).to(dtype));
}

torch::Tensor UNet2DConditionImpl::forward(const torch::Tensor& x, const torch::Tensor& timesteps, const torch::Tensor& context) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == opt_.in_channels, "UNet2DCondition: x must be [B, ", opt_.in_channels, ", H, W], got ", x.sizes());
  const int64_t B = x.size(0), f = opt_.downsampling();
  TORCH_CHECK(x.size(2) % f == 0 && x.size(3) % f == 0, "UNet2DCondition: H and W must be multiples of ", f, " (", opt_.levels(),
              " levels), got ", x.size(2), "x", x.size(3));
  TORCH_CHECK(timesteps.defined() && timesteps.dim() <= 1 && (timesteps.numel() == B || timesteps.numel() == 1),
              "UNet2DCondition: timesteps must be [B] (B = ", B, ") or a single value, got ", timesteps.defined() ? timesteps.sizes() : torch::IntArrayRef{});
  if (opt_.attends())
    TORCH_CHECK(context.defined() && context.dim() == 3 && context.size(0) == B && context.size(2) == opt_.cross_attention_dim,
                "UNet2DCondition: context must be [B, L, cross_attention_dim] = [", B, ", L, ", opt_.cross_attention_dim, "], got ",
                context.defined() ? context.sizes() : torch::IntArrayRef{});

  UNetBlockInputs in;
  in.temb = time_embed(timesteps.reshape({-1}).to(x.device()).expand({B}), x.scalar_type());
  in.context = context;
  torch::Tensor h = conv_in->forward(x);
  std::vector<torch::Tensor> skips{h};
  for (const auto& b : *down_blocks) h = b->as<UNetDownBlock>()->forward(h, in, skips);
  h = mid_block->forward(h, in);
  for (const auto& b : *up_blocks) h = b->as<UNetUpBlock>()->forward(h, in, skips);
  return conv_out->forward(torch::silu(conv_norm_out->forward(h)));
}

void UNet2DConditionImpl::widen_input(int64_t in_channels) {
  const int64_t old = opt_.in_channels;
  TORCH_CHECK(in_channels >= old, "UNet2DCondition::widen_input: cannot narrow conv_in from ", old, " to ", in_channels, " input channels");
  if (in_channels == old) return;
  ef::nn::Conv2d wider(torch::nn::Conv2dOptions(in_channels, opt_.block_out_channels.front(), 3).padding(1));
  {
    torch::NoGradGuard no_grad;
    wider->to(conv_in->weight.device(), conv_in->weight.scalar_type());
    wider->weight.zero_();
    wider->weight.narrow(1, 0, old).copy_(conv_in->weight);
    wider->bias.copy_(conv_in->bias);
  }
  conv_in = replace_module("conv_in", wider);
  opt_.in_channels = in_channels;
}

}  // namespace ef
