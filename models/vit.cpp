#include "models/vit.h"

namespace ef {

namespace {
// Truncated normal by inverting the CDF (as torch.nn.init.trunc_normal_ does in Python; LibTorch's
// C++ API has no such initialiser).
void trunc_normal(torch::Tensor t, double std, double bound) {
  auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  const double lo = cdf(-bound / std), hi = cdf(bound / std);
  t.uniform_(2 * lo - 1, 2 * hi - 1).erfinv_().mul_(std * std::sqrt(2.0)).clamp_(-bound, bound);
}
}  // namespace

ViTOptions ViTOptions::from(const Config& c) {
  ViTOptions o;
  o.image_size = c.get<int64_t>("image_size", o.image_size);
  o.in_channels = c.get<int64_t>("in_channels", o.in_channels);
  o.patch = c.get<int64_t>("patch", o.patch);
  o.dim = c.get<int64_t>("dim", o.dim);
  o.depth = c.get<int64_t>("depth", o.depth);
  o.heads = c.get<int64_t>("heads", o.heads);
  o.mlp_ratio = c.get<double>("mlp_ratio", o.mlp_ratio);
  o.num_classes = c.get<int64_t>("num_classes", o.num_classes);
  o.pool = c.get<std::string>("pool", o.pool);
  o.dropout = c.get<double>("dropout", o.dropout);
  // checked before they divide anything: a zero would be a division by zero (SIGFPE), not an error
  for (const auto& [key, v] : {std::pair<const char*, int64_t>{"image_size", o.image_size}, {"in_channels", o.in_channels}, {"patch", o.patch},
                               {"dim", o.dim}, {"depth", o.depth}, {"heads", o.heads}})
    if (v < 1) c.invalid(key, "must be at least 1, got " + std::to_string(v));
  if (o.num_classes < 0) c.invalid("num_classes", "must be >= 0 (0: no head), got " + std::to_string(o.num_classes));
  if (o.mlp_ratio <= 0) c.invalid("mlp_ratio", "must be positive");
  if (o.image_size % o.patch != 0) c.invalid("patch", "image_size " + std::to_string(o.image_size) + " is not a multiple of patch " + std::to_string(o.patch));
  if (o.dim % o.heads != 0) c.invalid("heads", "dim " + std::to_string(o.dim) + " is not divisible by heads " + std::to_string(o.heads));
  if (o.pool != "cls" && o.pool != "mean") c.invalid("pool", "expected \"cls\" or \"mean\", got \"" + o.pool + "\"");
  return o;
}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, double p) : dropout(p) {
  fc1 = register_module("fc1", ef::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", ef::nn::Linear(hidden, dim));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = torch::gelu(fc1->forward(x));
  h = torch::dropout(h, dropout, is_training());
  return torch::dropout(fc2->forward(h), dropout, is_training());
}

PatchEmbedImpl::PatchEmbedImpl(int64_t in_channels, int64_t dim, int64_t patch) {
  proj = register_module("proj", ef::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, dim, patch).stride(patch)));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& images) { return proj->forward(images).flatten(2).transpose(1, 2); }

BlockImpl::BlockImpl(const ViTOptions& o, const Config& attention, int64_t layer) {
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim}).eps(1e-6)));
  AttentionShape shape{o.dim, o.heads};
  shape.layer = layer;
  shape.depth = o.depth;
  shape.grid_h = shape.grid_w = o.grid();
  shape.prefix = o.pool == "cls" ? 1 : 0;
  attn = register_module("attn", make_attention(shape, attention));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim}).eps(1e-6)));
  mlp = register_module("mlp", Mlp(o.dim, static_cast<int64_t>(o.dim * o.mlp_ratio), o.dropout));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  AttentionContext ctx;
  return forward(x, ctx);
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, AttentionContext& ctx) {
  BlockFunctions fns;
  fns.pre_norm = [this](const torch::Tensor& t) { return norm1->forward(t); };
  fns.body = [this, &ctx](const torch::Tensor& t) {
    torch::Tensor h = t + attn->forward_ctx(norm1->forward(t), ctx);
    return h + mlp->forward(norm2->forward(h));
  };
  return attn->run_block(x, ctx, fns);
}

ViTImpl::ViTImpl(const ViTOptions& o, const Config& attention) : opt_(o) {
  patch_embed = register_module("patch_embed", PatchEmbed(o.in_channels, o.dim, o.patch));
  if (o.pool == "cls") cls_token = register_parameter("cls_token", torch::zeros({1, 1, o.dim}));
  pos_embed = register_parameter("pos_embed", torch::randn({1, o.tokens(), o.dim}) * 0.02);
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth; ++i) blocks->push_back(Block(o, attention, i));
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim}).eps(1e-6)));
  if (o.num_classes > 0) head = register_module("head", ef::nn::Linear(o.dim, o.num_classes));
  // timm-style init: truncated-normal(0.02) linear weights, zero biases
  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false))
    if (auto* lin = m->as<torch::nn::Linear>()) {
      trunc_normal(lin->weight, 0.02, 0.04);
      if (lin->bias.defined()) lin->bias.zero_();
    }
  if (cls_token.defined()) trunc_normal(cls_token, 0.02, 0.04);
}

bool ViTImpl::backbone_frozen() const {
  if (!is_training()) return false;
  for (const auto& b : *blocks)
    if (b->as<Block>()->attn->backbone_frozen()) return true;
  return false;
}

torch::Tensor ViTImpl::forward_features(const torch::Tensor& images) { return run_blocks(images, {}, nullptr); }

std::vector<torch::Tensor> ViTImpl::forward_intermediates(const torch::Tensor& images, const std::vector<int64_t>& layers) {
  for (int64_t l : layers)
    TORCH_CHECK(l >= -1 && l < opt_.depth, "ViT: intermediate layer ", l, " out of range for depth ", opt_.depth);
  std::vector<torch::Tensor> taps(layers.size());
  torch::Tensor out = run_blocks(images, layers, &taps);
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i] == -1) taps[i] = out;
  return taps;
}

torch::Tensor ViTImpl::run_blocks(const torch::Tensor& images, const std::vector<int64_t>& layers, std::vector<torch::Tensor>* taps) {
  const int64_t B = images.size(0);
  std::unique_ptr<torch::NoGradGuard> frozen;
  if (backbone_frozen()) frozen = std::make_unique<torch::NoGradGuard>();
  TORCH_CHECK(images.dim() == 4 && images.size(1) == opt_.in_channels && images.size(2) == opt_.image_size &&
                  images.size(3) == opt_.image_size,
              "ViT expects images [B, ", opt_.in_channels, ", ", opt_.image_size, ", ", opt_.image_size, "], got ", images.sizes());
  torch::Tensor x = patch_embed->forward(images);  // [B, N, C]
  if (cls_token.defined()) x = torch::cat({cls_token.expand({B, 1, opt_.dim}), x}, 1);
  x = x + pos_embed;
  AttentionContext ctx;
  for (int64_t i = 0; i < static_cast<int64_t>(blocks->size()); ++i) {
    x = (*blocks)[i]->as<Block>()->forward(x, ctx);
    if (taps)
      for (size_t j = 0; j < layers.size(); ++j)
        if (layers[j] == i) (*taps)[j] = x;
  }
  return norm->forward(x);
}

torch::Tensor ViTImpl::forward(const torch::Tensor& images) {
  std::unique_ptr<torch::NoGradGuard> frozen;
  if (backbone_frozen()) frozen = std::make_unique<torch::NoGradGuard>();
  torch::Tensor x = forward_features(images);
  torch::Tensor pooled = opt_.pool == "cls" ? x.select(1, 0) : x.mean(1);
  return head ? head->forward(pooled) : pooled;
}

std::map<std::string, torch::Tensor> ViTImpl::take_aux_losses() {
  std::map<std::string, torch::Tensor> total;
  for (const auto& b : *blocks)
    for (auto& [k, v] : b->as<Block>()->attn->take_aux_losses()) total[k] = total.count(k) ? total[k] + v : v;
  return total;
}

double ViTImpl::flops() const {
  const double P = static_cast<double>(opt_.grid() * opt_.grid());
  const double C = static_cast<double>(opt_.dim), H = C * opt_.mlp_ratio;
  double f = 2 * P * C * opt_.in_channels * opt_.patch * opt_.patch;  // patch embedding
  for (const auto& b : *blocks) {
    const auto& attn = b->as<Block>()->attn;
    f += attn->flops(opt_.tokens()) + 2 * 2 * static_cast<double>(attn->block_tokens(opt_.tokens())) * C * H;
  }
  if (opt_.num_classes > 0) f += 2 * C * opt_.num_classes;
  return f;
}

}  // namespace ef
