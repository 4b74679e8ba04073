#include "lora/hollow.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace ef::lora {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

int64_t count(const torch::nn::Module& m, const std::string& prefix, const HollowPlan& plan, double& left_out) {
  int64_t total = 0;
  for (const auto& p : m.named_parameters(true)) {
    total += p.value().numel();
    if (plan.leaves_out(prefix + p.key())) left_out += static_cast<double>(p.value().numel());
  }
  return total;
}

}  // namespace

std::string UNetUnit::name() const {
  switch (side) {
    case Side::Mid: return "mid_block";
    case Side::Encoder: return fmt::format("down_blocks.{}.{}", block, resample ? "downsamplers.0" : "resnets." + std::to_string(unit));
    case Side::Decoder: return fmt::format("up_blocks.{}.{}", block, resample ? "upsamplers.0" : "resnets." + std::to_string(unit));
  }
  return "";
}

std::vector<std::string> UNetUnit::prefixes() const {
  if (side == Side::Mid) return {"mid_block."};
  const std::string b = fmt::format("{}.{}.", side == Side::Encoder ? "down_blocks" : "up_blocks", block);
  if (resample) return {b + (side == Side::Encoder ? "downsamplers.0." : "upsamplers.0.")};
  return {b + "resnets." + std::to_string(unit) + ".", b + "attentions." + std::to_string(unit) + "."};
}

std::vector<UNetUnit> unet_units(const UNetOptions& o) {
  std::vector<UNetUnit> units;
  int64_t skip = 0;  // conv_in's output is skip 0
  for (int64_t i = 0; i < o.levels(); ++i) {
    const UNetBlockShape s = o.down_block_shape(i);
    for (int64_t u = 0; u < s.layers + (s.resample ? 1 : 0); ++u) units.push_back({UNetUnit::Side::Encoder, i, u, u == s.layers, ++skip});
  }
  units.push_back({UNetUnit::Side::Mid, 0, 0, false, -1});
  for (int64_t r = 0; r < o.levels(); ++r) {  // resnets take the skips newest first
    const UNetBlockShape s = o.up_block_shape(r);
    for (int64_t u = 0; u < s.layers + (s.resample ? 1 : 0); ++u)
      units.push_back({UNetUnit::Side::Decoder, r, u, u == s.layers, u == s.layers ? -1 : skip--});
  }
  return units;
}

HollowPlan::HollowPlan(const UNetOptions& options, int64_t removed_per_side) : options_(options), m_(removed_per_side) {
  for (const auto& u : unet_units(options_)) {
    if (u.side == UNetUnit::Side::Encoder) encoder_.push_back(u);
    if (u.side == UNetUnit::Side::Decoder) decoder_.push_back(u);
  }
  if (m_ < 0) throw std::invalid_argument(fmt::format("{} units per side: cannot leave out a negative number of units", m_));
  if (m_ >= encoder_units())
    throw std::invalid_argument(fmt::format("{} units per side would leave out every one of the UNet's {} encoder units; at most {}", m_,
                                            encoder_units(), encoder_units() - 1));
  const int64_t kept_encoder = encoder_units() - m_;
  for (int64_t d = m_; d < decoder_units(); ++d)
    if (decoder_[d].skip > kept_encoder) cached_skips_.push_back(decoder_[d].skip);
}

HollowPlan HollowPlan::for_fraction(const UNetOptions& options, double fraction) {
  if (!(fraction > 0.0 && fraction < 1.0))
    throw std::invalid_argument(fmt::format("a fraction of {} leaves out {}; it must lie strictly between 0 and 1", fraction,
                                            fraction <= 0 ? "no unit" : "every unit"));
  HollowPlan best(options, 0);
  double best_gap = std::abs(best.parameter_fraction() - fraction);
  for (int64_t m = 1; m < best.encoder_units(); ++m) {
    HollowPlan p(options, m);
    const double gap = std::abs(p.parameter_fraction() - fraction);
    if (gap < best_gap) best = p, best_gap = gap;
  }
  return best;
}

bool HollowPlan::removed(const UNetUnit& u) const {
  if (u.side == UNetUnit::Side::Mid) return true;
  if (u.side == UNetUnit::Side::Encoder) return u.skip - 1 >= encoder_units() - m_;
  for (int64_t d = 0; d < m_; ++d)
    if (decoder_[d].block == u.block && decoder_[d].unit == u.unit) return true;
  return false;
}

std::vector<UNetUnit> HollowPlan::removed_units() const {
  std::vector<UNetUnit> out;
  for (const auto& u : unet_units(options_))
    if (removed(u)) out.push_back(u);
  return out;
}

bool HollowPlan::leaves_out(const std::string& name) const {
  if (starts_with(name, "mid_block.")) return true;
  for (int64_t e = encoder_units() - m_; e < encoder_units(); ++e)
    for (const auto& p : encoder_[e].prefixes())
      if (starts_with(name, p)) return true;
  for (int64_t d = 0; d < m_; ++d)
    for (const auto& p : decoder_[d].prefixes())
      if (starts_with(name, p)) return true;
  return false;
}

double HollowPlan::unit_fraction() const {
  return static_cast<double>(2 * m_ + 1) / static_cast<double>(encoder_units() + 1 + decoder_units());
}

double HollowPlan::parameter_fraction() const {
  torch::NoGradGuard no_grad;
  double left_out = 0;
  int64_t total = 0;
  const auto& ch = options_.block_out_channels;
  total += count(*ef::nn::Conv2d(torch::nn::Conv2dOptions(options_.in_channels, ch.front(), 3)), "conv_in.", *this, left_out);
  total += count(*TimestepEmbedding(ch.front(), options_.temb_channels()), "time_embedding.", *this, left_out);
  total += count(*ef::nn::Conv2d(torch::nn::Conv2dOptions(ch.front(), options_.out_channels, 3)), "conv_out.", *this, left_out);
  total += 2 * ch.front();  // conv_norm_out
  for (int64_t i = 0; i < options_.levels(); ++i)
    total += count(*UNetDownBlock(options_.down_block_shape(i)), fmt::format("down_blocks.{}.", i), *this, left_out);
  total += count(*UNetMidBlock(options_.mid_block_shape()), "mid_block.", *this, left_out);
  for (int64_t r = 0; r < options_.levels(); ++r)
    total += count(*UNetUpBlock(options_.up_block_shape(r)), fmt::format("up_blocks.{}.", r), *this, left_out);
  return left_out / static_cast<double>(total);
}

std::string HollowPlan::describe() const {
  std::string units, skips;
  for (const auto& u : removed_units()) units += (units.empty() ? "" : ", ") + u.name();
  for (int64_t s : cached_skips_) skips += (skips.empty() ? "" : ", ") + std::to_string(s);
  return fmt::format("mid + {} innermost unit{} per side ({} of {} units, {:.1f}% of parameters; cached skips: {}): {}", m_,
                     m_ == 1 ? "" : "s", 2 * m_ + 1, encoder_units() + 1 + decoder_units(), 100.0 * parameter_fraction(),
                     skips.empty() ? "none" : skips, units);
}

std::map<std::string, std::vector<int64_t>> boundary_shapes(const HollowPlan& plan, int64_t batch, int64_t height, int64_t width) {
  const UNetOptions& o = plan.options();
  const auto& ch = o.block_out_channels;
  const int64_t L = o.levels();
  auto at_level = [&](int64_t channels, int64_t level) { return std::vector<int64_t>{batch, channels, height >> level, width >> level}; };
  // the output of an encoder unit (skip k = encoder unit k-1; skip 0 is conv_in's)
  auto skip_shape = [&](int64_t k) {
    if (k == 0) return at_level(ch[0], 0);
    const UNetUnit& u = plan.encoder()[k - 1];
    return at_level(ch[u.block], u.block + (u.resample ? 1 : 0));
  };
  std::map<std::string, std::vector<int64_t>> out;
  const int64_t m = plan.removed_per_side();
  if (m == 0) {
    out["h_in"] = at_level(ch.back(), L - 1);
  } else {
    const UNetUnit& last = plan.decoder()[m - 1];  // the left-out decoder unit whose output enters unit m
    const int64_t level = L - 1 - last.block;
    out["h_in"] = at_level(ch[level], level - (last.resample ? 1 : 0));
  }
  for (int64_t k : plan.cached_skips()) out["skip_" + std::to_string(k)] = skip_shape(k);
  return out;
}

UNetBoundary compute_boundary(UNet2DConditionImpl& full, const HollowPlan& plan, const torch::Tensor& x, const torch::Tensor& timesteps,
                              const torch::Tensor& context) {
  TORCH_CHECK(x.dim() == 4, "compute_boundary: x must be [B, C, H, W], got ", x.sizes());
  UNetBlockInputs in;
  in.temb = full.time_embed(timesteps.reshape({-1}).to(x.device()).expand({x.size(0)}), x.scalar_type());
  in.context = context;
  torch::Tensor h = full.conv_in->forward(x);
  std::vector<torch::Tensor> skips{h};
  for (const auto& e : plan.encoder()) {
    h = full.down_blocks[e.block]->as<UNetDownBlock>()->forward_unit(e.unit, h, in);
    skips.push_back(h);
  }
  h = full.mid_block->forward(h, in);
  for (int64_t d = 0; d < plan.removed_per_side(); ++d) {
    const UNetUnit& u = plan.decoder()[d];
    h = full.up_blocks[u.block]->as<UNetUpBlock>()->forward_unit(u.unit, h, in, u.skip >= 0 ? skips[u.skip] : torch::Tensor());
  }
  UNetBoundary b;
  b.h_in = h;
  for (int64_t s : plan.cached_skips()) b.skips[s] = skips[s];
  return b;
}

HollowedUNetImpl::HollowedUNetImpl(const HollowPlan& plan) : plan_(plan) {
  const UNetOptions& o = plan_.options();
  const auto& ch = o.block_out_channels;
  conv_in = register_module("conv_in", ef::nn::Conv2d(torch::nn::Conv2dOptions(o.in_channels, ch.front(), 3).padding(1)));
  time_embedding = register_module("time_embedding", TimestepEmbedding(ch.front(), o.temb_channels()));

  // Down blocks keep a prefix of their units: a partly kept block is built with fewer layers and
  // no downsampler, so a left-out unit never holds memory.
  auto downs = register_module("down_blocks", std::make_shared<torch::nn::Module>());
  const int64_t kept = plan_.encoder_units() - plan_.removed_per_side();
  for (int64_t i = 0; i < o.levels(); ++i) {
    UNetBlockShape s = o.down_block_shape(i);
    int64_t n = 0;
    for (int64_t e = 0; e < kept; ++e) n += plan_.encoder()[e].block == i;
    if (n == 0) continue;
    if (n < s.layers + (s.resample ? 1 : 0)) s.layers = n, s.resample = false;
    down_.emplace(i, downs->register_module(std::to_string(i), UNetDownBlock(s)));
  }
  // Up blocks keep a suffix of their units: the left-out resnets of a partly kept block keep their
  // names (so the kept ones do too) but hold empty tensors, which loading skips (leaves_out).
  auto ups = register_module("up_blocks", std::make_shared<torch::nn::Module>());
  torch::NoGradGuard no_grad;
  for (int64_t r = 0; r < o.levels(); ++r) {
    int64_t kept_units = 0, units = 0;
    for (int64_t d = 0; d < plan_.decoder_units(); ++d)
      if (plan_.decoder()[d].block == r) ++units, kept_units += d >= plan_.removed_per_side();
    if (kept_units == 0) continue;
    UNetUpBlock block(o.up_block_shape(r));
    for (int64_t u = 0; u < units - kept_units; ++u) {
      for (auto& p : block->resnets[u]->parameters()) p.set_data(torch::empty({0}, p.options()));
      if (block->attentions)
        for (auto& p : block->attentions[u]->parameters()) p.set_data(torch::empty({0}, p.options()));
    }
    up_.emplace(r, ups->register_module(std::to_string(r), block));
  }
  conv_norm_out = register_module("conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.norm_num_groups, ch.front()).eps(1e-5)));
  conv_out = register_module("conv_out", ef::nn::Conv2d(torch::nn::Conv2dOptions(ch.front(), o.out_channels, 3).padding(1)));
}

torch::Tensor HollowedUNetImpl::forward(const torch::Tensor& x, const torch::Tensor& timesteps, const torch::Tensor& context,
                                        const UNetBoundary& boundary) {
  const UNetOptions& o = plan_.options();
  TORCH_CHECK(x.dim() == 4 && x.size(1) == o.in_channels, "HollowedUNet: x must be [B, ", o.in_channels, ", H, W], got ", x.sizes());
  const int64_t B = x.size(0);
  TORCH_CHECK(boundary.h_in.defined() && boundary.h_in.dim() == 4 && boundary.h_in.size(0) == B,
              "HollowedUNet: boundary h_in must be [B = ", B, ", C, h, w], got ", boundary.h_in.defined() ? boundary.h_in.sizes() : torch::IntArrayRef{});
  for (int64_t s : plan_.cached_skips())
    TORCH_CHECK(boundary.skips.count(s) && boundary.skips.at(s).size(0) == B, "HollowedUNet: the boundary lacks cached skip ", s,
                " (the plan caches ", plan_.cached_skips().size(), " skips)");
  UNetBlockInputs in;
  in.temb = time_embedding->forward(timestep_features(timesteps.reshape({-1}).to(x.device()).expand({B}), o.block_out_channels.front()).to(x.scalar_type()));
  in.context = context;
  torch::Tensor h = conv_in->forward(x);
  std::vector<torch::Tensor> skips{h};
  for (int64_t e = 0; e < plan_.encoder_units() - plan_.removed_per_side(); ++e) {
    const UNetUnit& u = plan_.encoder()[e];
    h = down_.at(u.block)->forward_unit(u.unit, h, in);
    skips.push_back(h);
  }
  h = boundary.h_in;
  for (int64_t d = plan_.removed_per_side(); d < plan_.decoder_units(); ++d) {
    const UNetUnit& u = plan_.decoder()[d];
    torch::Tensor skip;
    if (u.skip >= 0) skip = u.skip < static_cast<int64_t>(skips.size()) ? skips[u.skip] : boundary.skips.at(u.skip);
    h = up_.at(u.block)->forward_unit(u.unit, h, in, skip);
  }
  return conv_out->forward(torch::silu(conv_norm_out->forward(h)));
}

std::vector<std::string> HollowedUNetImpl::adaptable_layers(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  for (const auto& path : adaptable_paths(*this)) {
    if (plan_.leaves_out(path + ".")) continue;
    for (const auto& p : patterns)
      if (glob_match(p, path)) {
        out.push_back(path);
        break;
      }
  }
  return out;
}

std::vector<UnitSignificance> unit_significance(AdaptersImpl& adapters, const UNetOptions& options) {
  const std::vector<UNetUnit> units = unet_units(options);
  std::map<std::string, std::pair<double, double>> sums;  // unit -> (Σ|ΔW|, elements)
  std::map<std::string, int64_t> layers;
  std::vector<std::string> order;
  torch::NoGradGuard no_grad;
  for (const auto& l : adapters.layers()) {
    std::string unit = l.path.substr(0, l.path.find('.'));  // conv_in, time_embedding, conv_out
    for (const auto& u : units)
      for (const auto& p : u.prefixes())
        if (starts_with(l.path + ".", p)) unit = u.name();
    const torch::Tensor dw = l.adapter->delta_weight().to(torch::kFloat64);
    if (!sums.count(unit)) order.push_back(unit);
    sums[unit].first += dw.abs().sum().item<double>();
    sums[unit].second += static_cast<double>(dw.numel());
    ++layers[unit];
  }
  std::vector<UnitSignificance> rows;
  for (const auto& u : order) rows.push_back({u, layers[u], sums[u].first / std::max(sums[u].second, 1.0)});
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.mean_abs_delta > b.mean_abs_delta; });
  return rows;
}

std::string format_significance(const std::vector<UnitSignificance>& rows) {
  std::string out = fmt::format("{:<28} {:>6} {:>12}\n", "unit", "layers", "mean |dW|");
  for (const auto& r : rows) out += fmt::format("{:<28} {:>6} {:>12.4e}\n", r.unit, r.layers, r.mean_abs_delta);
  return out;
}

}  // namespace ef::lora
