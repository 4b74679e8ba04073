#include "models/attention/tosa.h"

#include <cmath>

namespace ef {

namespace {
const char* kLogits = "tosa/logits";  // [B, H, Q, N] pre-softmax logits of the feeding layer (detached)
const char* kRows = "tosa/rows";      // [Q] their query rows (absent: all rows)

bool is_selective(const AttentionShape& s, const ToSAOptions& o, int64_t layer) {
  return layer >= 1 && layer < s.depth && layer >= o.start_layer && (layer - o.start_layer) % 2 == 0;
}
}  // namespace

ToSAOptions ToSAOptions::from(const Config& c) {
  ToSAOptions o;
  o.keep_ratio = c.get<double>("keep_ratio", o.keep_ratio);
  o.start_layer = c.get<int64_t>("start_layer", o.start_layer);
  o.queries = c.get<int64_t>("queries", o.queries);
  o.sel_weight = c.get<double>("sel_weight", o.sel_weight);
  o.qkv_bias = c.get<bool>("qkv_bias", o.qkv_bias);
  Config sel = c.section("selector");
  o.hidden = sel.get<int64_t>("hidden", o.hidden);
  o.kernel = sel.get<int64_t>("kernel", o.kernel);
  Config sched = c.section("schedule");
  o.dense_steps = sched.get<int64_t>("dense_steps", o.dense_steps);
  o.selector_steps = sched.get<int64_t>("selector_steps", o.selector_steps);
  if (!(o.keep_ratio > 0 && o.keep_ratio <= 1)) c.invalid("keep_ratio", "expected 0 < keep_ratio <= 1, got " + std::to_string(o.keep_ratio));
  if (o.start_layer < 1) c.invalid("start_layer", "must be at least 1 (a selective layer reads the layer before it)");
  if (o.queries < 0) c.invalid("queries", "must be >= 0 (0: all query rows)");
  if (o.sel_weight < 0) c.invalid("sel_weight", "must be >= 0");
  if (o.hidden < 1) sel.invalid("hidden", "must be at least 1");
  if (o.kernel < 1 || o.kernel % 2 == 0) sel.invalid("kernel", "expected an odd size >= 1");
  if (o.dense_steps < 0) sched.invalid("dense_steps", "must be >= 0");
  if (o.selector_steps < 0) sched.invalid("selector_steps", "must be >= 0");
  if (o.selector_steps > 0 && o.sel_weight == 0) sched.invalid("selector_steps", "the selector-only stage needs sel_weight > 0");
  return o;
}

ToSAAttentionImpl::ToSAAttentionImpl(const AttentionShape& shape, const Config& options)
    : ToSAAttentionImpl(shape, ToSAOptions::from(options)) {}

ToSAAttentionImpl::ToSAAttentionImpl(const AttentionShape& shape, const ToSAOptions& options) : shape_(shape), opt_(options) {
  const int64_t C = shape.dim, H = shape.heads;
  TORCH_CHECK(H > 0, "tosa: heads must be at least 1, got ", H);
  TORCH_CHECK(C % H == 0, "tosa: dim ", C, " is not divisible by heads ", H);
  qkv = register_module("qkv", ef::nn::Linear(torch::nn::LinearOptions(C, 3 * C).bias(opt_.qkv_bias)));
  proj = register_module("proj", ef::nn::Linear(C, C));
  if (is_selective(shape, opt_, shape.layer)) role_ = Role::Selective;
  else if (is_selective(shape, opt_, shape.layer + 1)) role_ = Role::Feeder;
  if (role_ == Role::Selective) {
    const int64_t hid = opt_.hidden * H, pad = opt_.kernel / 2;
    selector = register_module("selector", torch::nn::Sequential(
                                               torch::nn::Conv1d(torch::nn::Conv1dOptions(H, hid, opt_.kernel).padding(pad)),
                                               torch::nn::ReLU(),
                                               torch::nn::Conv1d(torch::nn::Conv1dOptions(hid, H, opt_.kernel).padding(pad))));
    step = register_buffer("step", torch::zeros({}, torch::kInt64));
  }
}

int64_t ToSAAttentionImpl::kept_tokens(int64_t tokens) const {
  const int64_t prefix = std::min(shape_.prefix, tokens), P = tokens - prefix;
  if (role_ != Role::Selective) return tokens;
  const int64_t K = std::min<int64_t>(P, static_cast<int64_t>(std::ceil(opt_.keep_ratio * static_cast<double>(P) - 1e-9)));
  return prefix + std::max<int64_t>(K, P > 0 ? 1 : 0);
}

int64_t ToSAAttentionImpl::stage_step() const { return step.defined() ? step.item<int64_t>() : 0; }

bool ToSAAttentionImpl::backbone_frozen() const {
  if (role_ != Role::Selective || !is_training() || opt_.selector_steps == 0) return false;
  const int64_t s = stage_step();
  return s >= opt_.dense_steps && s < opt_.dense_steps + opt_.selector_steps;
}

torch::Tensor ToSAAttentionImpl::query_rows(int64_t tokens, const torch::Device& device) const {
  if (opt_.queries == 0 || opt_.queries >= tokens) return {};
  return (torch::arange(opt_.queries, torch::TensorOptions().dtype(torch::kInt64).device(device)) * tokens).div(opt_.queries, "floor");
}

torch::Tensor ToSAAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), N = x.size(1), C = shape_.dim, H = shape_.heads;
  TORCH_CHECK(x.dim() == 3 && x.size(2) == C, "tosa: expected [B, N, ", C, "], got ", x.sizes());
  auto parts = qkv->forward(x).view({B, N, 3, H, C / H}).permute({2, 0, 3, 1, 4}).unbind(0);
  torch::Tensor out = at::scaled_dot_product_attention(parts[0], parts[1], parts[2]);
  return proj->forward(out.transpose(1, 2).reshape({B, N, C}));
}

torch::Tensor ToSAAttentionImpl::logits(const torch::Tensor& t, const torch::Tensor& rows) {
  const int64_t B = t.size(0), N = t.size(1), C = shape_.dim, H = shape_.heads, D = C / H;
  auto parts = qkv->forward(t).view({B, N, 3, H, D}).permute({2, 0, 3, 1, 4}).unbind(0);
  torch::Tensor q = rows.defined() ? parts[0].index_select(2, rows) : parts[0];
  return torch::matmul(q, parts[1].transpose(-2, -1)) / std::sqrt(static_cast<double>(D));
}

torch::Tensor ToSAAttentionImpl::forward_ctx(const torch::Tensor& x, AttentionContext& ctx) {
  if (role_ != Role::Feeder) return forward(x);
  // A standard layer whose successor is selective: hands on its pre-softmax logits.
  const int64_t B = x.size(0), N = x.size(1), C = shape_.dim, H = shape_.heads, D = C / H;
  auto parts = qkv->forward(x).view({B, N, 3, H, D}).permute({2, 0, 3, 1, 4}).unbind(0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  torch::Tensor rows = query_rows(N, x.device()), out;
  if (!rows.defined()) {  // explicit attention: the full map is computed anyway
    torch::Tensor s = torch::matmul(parts[0], parts[1].transpose(-2, -1)) * scale;
    out = torch::matmul(torch::softmax(s, -1), parts[2]);
    ctx.tensors[kLogits] = s.detach();
    ctx.tensors.erase(kRows);
  } else {  // fused attention, plus the logits of Q strided query rows
    out = at::scaled_dot_product_attention(parts[0], parts[1], parts[2]);
    ctx.tensors[kLogits] = (torch::matmul(parts[0].index_select(2, rows), parts[1].transpose(-2, -1)) * scale).detach();
    ctx.tensors[kRows] = rows;
  }
  return proj->forward(out.transpose(1, 2).reshape({B, N, C}));
}

torch::Tensor ToSAAttentionImpl::predict(const torch::Tensor& s) {
  const int64_t B = s.size(0), H = s.size(1), Q = s.size(2), N = s.size(3);
  TORCH_CHECK(H == shape_.heads, "tosa selector: logits have ", H, " heads, layer has ", shape_.heads);
  torch::Tensor in = s.permute({0, 2, 1, 3}).reshape({B * Q, H, N});  // heads as channels, keys as the signal
  torch::Tensor out = torch::log_softmax(selector->forward(in), -1);
  return out.view({B, Q, H, N}).permute({0, 2, 1, 3});
}

torch::Tensor ToSAAttentionImpl::select(const torch::Tensor& log_maps) const {
  const int64_t B = log_maps.size(0), N = log_maps.size(3);
  const int64_t prefix = std::min(shape_.prefix, N), P = N - prefix, K = kept_tokens(N) - prefix;
  torch::Tensor importance = log_maps.exp().sum({1, 2});  // [B, N]: predicted attention each token receives
  torch::Tensor top = std::get<1>(importance.narrow(1, prefix, P).topk(K, 1)) + prefix;
  torch::Tensor idx = std::get<0>(top.sort(1));  // ascending: the kept tokens keep their order
  if (prefix > 0)
    idx = torch::cat({torch::arange(prefix, idx.options()).unsqueeze(0).expand({B, prefix}), idx}, 1);
  return idx;
}

torch::Tensor ToSAAttentionImpl::run_block(const torch::Tensor& x, AttentionContext& ctx, const BlockFunctions& block) {
  if (role_ != Role::Selective) return block.body(x);
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2);
  const bool training = is_training();
  const int64_t s = stage_step();
  const bool frozen = backbone_frozen();
  if (training) {
    torch::NoGradGuard no_grad;
    step.add_(1);
  }
  const bool routing = !training || s >= opt_.dense_steps + opt_.selector_steps;
  const int64_t M = kept_tokens(N);
  const bool supervise = training && opt_.sel_weight > 0;
  if (!supervise && (!routing || M == N)) return block.body(x);  // nothing to select, nothing to learn

  auto it = ctx.tensors.find(kLogits);
  TORCH_CHECK(it != ctx.tensors.end(), "tosa: selective layer ", shape_.layer,
              " found no attention logits of the layer before it (is that layer a tosa layer too?)");
  torch::Tensor prev = it->second;
  torch::Tensor rows = ctx.tensors.count(kRows) ? ctx.tensors.at(kRows) : torch::Tensor();
  ctx.tensors.erase(kLogits);
  ctx.tensors.erase(kRows);
  TORCH_CHECK(prev.size(3) == N, "tosa: the previous layer's logits cover ", prev.size(3), " tokens, this layer has ", N);

  torch::Tensor log_maps;
  {
    torch::AutoGradMode grad(torch::GradMode::is_enabled() || frozen);  // stage A: only the selector learns
    log_maps = predict(prev);
    if (supervise) {
      torch::Tensor target;
      {
        torch::NoGradGuard no_grad;  // the real attention of this layer on all its tokens
        target = torch::softmax(logits(block.pre_norm(x), rows), -1);
      }
      torch::Tensor kl = (target * (target.clamp_min(1e-30).log() - log_maps)).sum(-1).mean();
      torch::Tensor term = opt_.sel_weight * kl;
      aux_["tosa_sel"] = aux_.count("tosa_sel") ? aux_["tosa_sel"] + term : term;
    }
  }
  if (!routing || M == N) return block.body(x);
  torch::Tensor idx = select(log_maps.detach());                 // [B, M]
  torch::Tensor gidx = idx.unsqueeze(-1).expand({B, M, C});
  torch::Tensor kept = block.body(x.gather(1, gidx));            // attention + MLP on the kept tokens only
  return x.scatter(1, gidx, kept);                               // the others bypass the block, in place
}

std::map<std::string, torch::Tensor> ToSAAttentionImpl::take_aux_losses() {
  std::map<std::string, torch::Tensor> out;
  out.swap(aux_);
  return out;
}

int64_t ToSAAttentionImpl::block_tokens(int64_t tokens) const { return kept_tokens(tokens); }

double ToSAAttentionImpl::flops(int64_t tokens) const {
  const double C = static_cast<double>(shape_.dim), N = static_cast<double>(tokens);
  auto attention = [&](double M) { return 2 * M * 3 * C * C + 2 * 2 * M * M * C + 2 * M * C * C; };
  const double Q = (opt_.queries == 0 || opt_.queries >= tokens) ? N : static_cast<double>(opt_.queries);
  switch (role_) {
    case Role::Standard: return attention(N);
    case Role::Feeder: return attention(N) + (Q < N ? 2 * Q * N * C : 0.0);  // extra logits for the selector
    case Role::Selective: {
      const double H = static_cast<double>(shape_.heads), hid = static_cast<double>(opt_.hidden) * H, k = static_cast<double>(opt_.kernel);
      const double selector = Q * N * (2 * k * H * hid + 2 * k * hid * H);
      return attention(static_cast<double>(kept_tokens(tokens))) + selector;
    }
  }
  return attention(N);
}

EF_REGISTER(attention_kinds(), "tosa",
            [](const AttentionShape& s, const Config& c) { return std::make_unique<ToSAAttentionImpl>(s, c); },
            "ToSA token-selective attention (selector predicts the next layer's maps; top-K tokens per selective layer, the rest bypass)");

}  // namespace ef
