#include "lora/foura.h"

#include <cmath>

namespace ef::lora {

FouraOptions FouraOptions::from(const Config& c) {
  FouraOptions o;
  o.rank = c.get<int64_t>("rank", o.rank);
  o.alpha = c.get<double>("alpha", o.alpha);
  o.lora_alpha = c.get<double>("lora_alpha", static_cast<double>(o.rank));
  o.rslora = c.get<bool>("rslora", o.rslora);
  o.transform = c.get<std::string>("transform", o.transform);
  o.axis = c.get<std::string>("axis", o.axis);
  o.gate = c.get<std::string>("gate", o.gate);
  o.alpha_before_gate = c.get<bool>("alpha_before_gate", o.alpha_before_gate);
  o.gate_hard = c.get<bool>("gate_hard", o.gate_hard);
  o.gate_slope = c.get<double>("gate_slope", o.gate_slope);
  o.gate_shift = c.get<double>("gate_shift", o.gate_shift);
  o.gate_hidden = c.get<int64_t>("gate_hidden", o.gate_hidden);
  o.gate_entropy = c.get<std::string>("gate_entropy", o.gate_entropy);
  if (o.rank < 1) c.invalid("rank", "must be >= 1");
  if (o.transform != "dct" && o.transform != "dft") c.invalid("transform", "must be dct or dft");
  if (o.axis != "feature" && o.axis != "token") c.invalid("axis", "must be feature or token");
  if (o.gate != "none" && o.gate != "adaptive" && o.gate != "frozen") c.invalid("gate", "must be none, adaptive or frozen");
  if (o.gate_slope <= 0) c.invalid("gate_slope", "must be > 0");
  if (o.gate_hidden < 0) c.invalid("gate_hidden", "must be >= 0");
  if (o.gate_entropy != "tokens" && o.gate_entropy != "rank") c.invalid("gate_entropy", "must be tokens or rank");
  return o;
}

double FouraOptions::scale() const {
  return alpha * lora_alpha / (rslora ? std::sqrt(static_cast<double>(rank)) : static_cast<double>(rank));
}

FouraImpl::FouraImpl(const LayerShape& shape, const FouraOptions& options)
    : AdapterImpl(shape), opt_(options), kind_(parse_transform(options.transform)) {
  const int64_t r = opt_.rank;
  const bool token = opt_.axis == "token";
  if (token && shape_.conv())
    throw ConfigError("foura: axis = token applies to Linear layers on [B, N, C] tokens only, not to " + shape_.describe());
  // Pitfall (brief §2.1): along the token axis the transform commutes with the channel-wise A and B
  // and with a per-rank-channel mask, so F⁻¹ B G A F = B G A: the output is plain LoRA's. The axis
  // then only changes what the gate's entropy is measured over (frequency bins instead of tokens).
  int64_t bins_in = shape_.in, bins_out = shape_.out;
  if (!token) {
    transform_in_ = std::make_unique<SpectralTransform>(kind_, shape_.in);
    transform_out_ = std::make_unique<SpectralTransform>(kind_, shape_.out);
    bins_in = transform_in_->bins();
    bins_out = transform_out_->bins();
  }
  if (shape_.conv()) {
    auto a = *shape_.conv_options;
    a.in_channels(bins_in).out_channels(r);
    lora_A_conv = register_module("lora_A", torch::nn::Conv2d(a));
    lora_B_conv = register_module("lora_B", torch::nn::Conv2d(torch::nn::Conv2dOptions(r, bins_out, 1).bias(false)));
  } else {
    lora_A_linear = register_module("lora_A", torch::nn::Linear(torch::nn::LinearOptions(bins_in, r).bias(false)));
    lora_B_linear = register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(r, bins_out).bias(false)));
  }
  kaiming_uniform_default(A());
  {
    torch::NoGradGuard no_grad;
    B().zero_();
  }
  if (opt_.gate == "adaptive") {
    if (opt_.gate_hidden > 0) {
      gate_fc1 = register_module("gate_fc1", torch::nn::Linear(r, opt_.gate_hidden));
      gate_fc2 = register_module("gate_fc2", torch::nn::Linear(opt_.gate_hidden, r));
    } else {
      gate_fc1 = register_module("gate_fc1", torch::nn::Linear(r, r));
    }
    gate_shift = register_parameter("gate_shift", torch::full({r}, opt_.gate_shift));
  }
  if (opt_.gate != "none") gate_mask = register_buffer("gate_mask", torch::ones({r}));
  reset_gate_stats();
}

torch::Tensor& FouraImpl::A() { return shape_.conv() ? lora_A_conv->weight : lora_A_linear->weight; }
torch::Tensor& FouraImpl::B() { return shape_.conv() ? lora_B_conv->weight : lora_B_linear->weight; }

SpectralTransform& FouraImpl::token_transform(int64_t n) {
  auto it = token_transforms_.find(n);
  if (it == token_transforms_.end()) it = token_transforms_.emplace(n, SpectralTransform(kind_, n)).first;
  return it->second;
}

// m [rows, r] (rows = 1 or the batch) -> broadcastable against a code of `ndim` dimensions whose
// rank axis is the last (Linear) or dim 1 (Conv2d).
torch::Tensor FouraImpl::rank_axis_view(const torch::Tensor& m, int64_t rows, int64_t ndim) const {
  std::vector<int64_t> shape(static_cast<size_t>(ndim), 1);
  shape[0] = rows;
  shape[shape_.conv() ? 1 : static_cast<size_t>(ndim - 1)] = opt_.rank;
  return m.reshape(shape);
}

torch::Tensor FouraImpl::gate(const torch::Tensor& z, int64_t parts) {
  if (opt_.gate == "frozen") return rank_axis_view(gate_mask.to(z.dtype()), 1, z.dim());
  // Per-sample statistics: for the DFT the two halves of the batch are the real and imaginary
  // parts of the same samples; the gate reads their magnitude (eps keeps its gradient finite at 0).
  torch::Tensor m = z;
  if (parts == 2) {
    auto halves = z.chunk(2, 0);
    m = torch::sqrt(halves[0] * halves[0] + halves[1] * halves[1] + 1e-12);
  }
  const int64_t batch = m.size(0), r = opt_.rank;
  // tokens of one sample [B, T, r]: every axis but the batch and the rank axis
  torch::Tensor tokens = shape_.conv() ? m.flatten(2).transpose(1, 2) : m.reshape({batch, -1, r});
  const int64_t T = tokens.size(1);
  torch::Tensor u = gate_fc1->forward(tokens);
  if (gate_fc2) u = gate_fc2->forward(torch::gelu(u));
  const bool per_token = opt_.gate_entropy == "rank";
  // normalised entropy: over the tokens per rank channel [B, 1, r], or over the rank axis per token [B, T, 1]
  const int64_t axis = per_token ? 2 : 1, count = per_token ? r : T;
  torch::Tensor H;
  if (count > 1) {
    torch::Tensor logp = torch::log_softmax(u, axis);
    H = -(logp.exp() * logp).sum(axis, /*keepdim=*/true) / std::log(static_cast<double>(count));
  } else {
    H = torch::ones(per_token ? std::vector<int64_t>{batch, T, 1} : std::vector<int64_t>{batch, 1, r}, u.options());  // no distribution: read as maximal entropy
  }
  torch::Tensor s = torch::sigmoid(opt_.gate_slope * (H - gate_shift));  // [B, 1, r] or [B, T, r]
  torch::Tensor g = opt_.gate_hard ? s + (torch::round(s) - s).detach() : s;  // straight-through
  {
    torch::NoGradGuard no_grad;
    last_gate_ = per_token ? g.detach() : g.detach().squeeze(1);
    gate_sum_ = gate_sum_.to(g.device()) + g.mean(1).sum(0).to(torch::kFloat64);
    gate_count_ += batch;
    last_rank_ = g.sum(-1).mean().item<double>();
  }
  torch::Tensor view;
  if (!per_token) view = rank_axis_view(g, batch, z.dim());
  else if (shape_.conv()) view = g.transpose(1, 2).reshape(m.sizes());  // [B, T, r] -> [B, r, H, W]
  else view = g.reshape(m.sizes());                                      // [B, T, r] -> [B, ..., r]
  return parts == 2 ? torch::cat({view, view}, 0) : view;
}

torch::Tensor FouraImpl::forward(const torch::Tensor& x) {
  const bool token = opt_.axis == "token";
  if (token && x.dim() != 3) throw InputError("foura: axis = token needs tokens [B, N, C], got " + std::to_string(x.dim()) + " dimensions");
  const int64_t dim = token ? 1 : (shape_.conv() ? 1 : -1);
  SpectralTransform& fin = token ? token_transform(x.size(1)) : *transform_in_;
  SpectralTransform& fout = token ? fin : *transform_out_;
  torch::Tensor z = fin.forward(x, dim);  // [P·B, ..., bins_in]
  z = shape_.conv() ? lora_A_conv->forward(z) : lora_A_linear->forward(z);
  const double c = opt_.scale() * strength_;  // the strength multiplies α (brief §2.4)
  if (opt_.gate != "none") {
    if (opt_.alpha_before_gate) {
      z = z * c;
      z = gate(z, fin.parts()) * z;
    } else {
      z = gate(z, fin.parts()) * z * c;
    }
  } else {
    z = z * c;
  }
  z = shape_.conv() ? lora_B_conv->forward(z) : lora_B_linear->forward(z);
  return fout.inverse(z, dim);
}

torch::Tensor FouraImpl::delta_weight() {
  if (!weight_equivalent()) throw std::logic_error("foura: delta_weight() with an input-adaptive gate");
  const int64_t r = opt_.rank;
  auto like = A().options();
  torch::Tensor scale = torch::full({r}, opt_.scale() * strength_, like);
  if (opt_.gate == "frozen") scale = scale * gate_mask.to(like);
  torch::Tensor a = A().reshape({r, A().size(1), -1});                   // [r, bins_in, kh·kw]
  torch::Tensor b = B().reshape({B().size(0), r}) * scale.unsqueeze(0);  // [bins_out, r] · diag(c m)
  if (opt_.axis == "token")  // the transform cancels (see the constructor)
    return torch::einsum("oj,jis->ois", {b, a}).reshape(shape_.weight_shape());
  auto fin = transform_in_->forward_matrices(like), fout = transform_out_->inverse_matrices(like);
  torch::Tensor dw;
  for (size_t p = 0; p < fin.size(); ++p) {
    torch::Tensor m = torch::matmul(fout[p], b);                    // [d_out, r]
    torch::Tensor ap = torch::einsum("jcs,ci->jis", {a, fin[p]});  // [r, d_in, kh·kw]
    torch::Tensor term = torch::einsum("oj,jis->ois", {m, ap});
    dw = dw.defined() ? dw + term : term;
  }
  return dw.reshape(shape_.weight_shape());
}

void FouraImpl::freeze_gate() {
  if (opt_.gate != "adaptive") throw std::logic_error("foura: freeze_gate() needs gate = adaptive (it is " + opt_.gate + ")");
  if (gate_count_ == 0) throw std::logic_error("foura: freeze_gate() before any forward pass: no gate statistics");
  torch::NoGradGuard no_grad;
  gate_mask.copy_((gate_sum_ / static_cast<double>(gate_count_) >= 0.5).to(gate_mask.dtype()).to(gate_mask.device()));
  opt_.gate = "frozen";
}

void FouraImpl::use_gate_mask() {
  if (opt_.gate != "adaptive" && opt_.gate != "frozen") throw std::logic_error("foura: use_gate_mask() needs a gate (it is " + opt_.gate + ")");
  opt_.gate = "frozen";
}

void FouraImpl::reset_gate_stats() {
  gate_sum_ = torch::zeros({opt_.rank}, torch::kFloat64);
  gate_count_ = 0;
}

nlohmann::json FouraImpl::options_json() const {
  return {{"kind", "foura"},
          {"rank", opt_.rank},
          {"alpha", opt_.alpha},
          {"lora_alpha", opt_.lora_alpha},
          {"rslora", opt_.rslora},
          {"transform", opt_.transform},
          {"axis", opt_.axis},
          {"gate", opt_.gate},
          {"alpha_before_gate", opt_.alpha_before_gate},
          {"gate_hard", opt_.gate_hard},
          {"gate_slope", opt_.gate_slope},
          {"gate_shift", opt_.gate_shift},
          {"gate_hidden", opt_.gate_hidden},
          {"gate_entropy", opt_.gate_entropy}};
}

EF_REGISTER(adapter_kinds(), "foura",
            [](const LayerShape& s, const Config& c) { return std::make_unique<FouraImpl>(s, FouraOptions::from(c)); },
            "FouRA: low-rank adaptation in the frequency domain (DCT/DFT) with an entropy-gated adaptive rank");

}  // namespace ef::lora
