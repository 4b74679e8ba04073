#include "flow/models.h"

#include <cmath>

#include "flow/corr.h"

namespace ef::flow {

namespace F = torch::nn::functional;
using ef::nn::Conv2d;
using torch::nn::Conv2dOptions;
using torch::nn::Sequential;

FlowModelOptions FlowModelOptions::from(const Config& m) {
  FlowModelOptions o;
  o.kind = m.get<std::string>("kind", o.kind);
  if (o.kind != "raft-small" && o.kind != "mobileflow") m.invalid("kind", "expected \"raft-small\" or \"mobileflow\", got \"" + o.kind + "\"");
  const bool mobile = o.kind == "mobileflow";
  o.feature_dim = m.get<int64_t>("feature_dim", mobile ? 96 : 128);
  o.hidden = m.get<int64_t>("hidden", 96);
  o.context = m.get<int64_t>("context", 64);
  o.radius = m.get<int64_t>("radius", 3);
  o.levels = m.get<int64_t>("levels", mobile ? 2 : 4);
  o.iters = m.get<int64_t>("iters", mobile ? 6 : 12);
  o.upsample = m.get<std::string>("upsample", mobile ? "convex" : "bilinear");
  if (o.feature_dim < 1 || o.hidden < 1 || o.context < 1) m.invalid("feature_dim", "feature_dim, hidden and context must be positive");
  if (o.radius < 1 || o.radius > 8) m.invalid("radius", "expected 1..8, got " + std::to_string(o.radius));
  if (o.levels < 1 || o.levels > 5) m.invalid("levels", "expected 1..5, got " + std::to_string(o.levels));
  if (o.iters < 1) m.invalid("iters", "at least one iteration");
  if (o.upsample != "bilinear" && o.upsample != "convex") m.invalid("upsample", "expected \"bilinear\" or \"convex\", got \"" + o.upsample + "\"");
  return o;
}

SciOptions SciOptions::from(const Config& f) {
  SciOptions s;
  s.enabled = f.get<bool>("sci", s.enabled);
  s.sigma2 = f.get<double>("sci_sigma2", s.sigma2);
  s.normalize = f.get<bool>("sci_normalize", s.normalize);
  s.learn_sigma = f.get<bool>("sci_learn_sigma", s.learn_sigma);
  s.input = f.get<std::string>("sci_input", s.input);
  if (!(s.sigma2 > 0)) f.invalid("sci_sigma2", "must be positive");
  if (s.input != "gru" && s.input != "motion") f.invalid("sci_input", "expected \"gru\" or \"motion\", got \"" + s.input + "\"");
  return s;
}

// ---- encoders ------------------------------------------------------------------------------------
namespace {

enum class Norm { Instance, None };

void add_norm(Sequential& s, Norm norm, int64_t c) {
  if (norm == Norm::Instance) s->push_back(torch::nn::InstanceNorm2d(torch::nn::InstanceNorm2dOptions(c)));
}

// RAFT's BottleneckBlock: 1x1 (planes/4) -> 3x3 stride s -> 1x1 (planes), each normed + ReLU; a
// strided 1x1 projection on the skip when s != 1.
struct BottleneckImpl : torch::nn::Module {
  Sequential body{nullptr}, down{nullptr};
  BottleneckImpl(int64_t in, int64_t planes, int64_t stride, Norm norm) {
    body = Sequential();
    body->push_back(Conv2d(Conv2dOptions(in, planes / 4, 1)));
    add_norm(body, norm, planes / 4);
    body->push_back(torch::nn::ReLU());
    body->push_back(Conv2d(Conv2dOptions(planes / 4, planes / 4, 3).stride(stride).padding(1)));
    add_norm(body, norm, planes / 4);
    body->push_back(torch::nn::ReLU());
    body->push_back(Conv2d(Conv2dOptions(planes / 4, planes, 1)));
    add_norm(body, norm, planes);
    body->push_back(torch::nn::ReLU());
    register_module("body", body);
    if (stride != 1) {
      down = Sequential(Conv2d(Conv2dOptions(in, planes, 1).stride(stride)));
      add_norm(down, norm, planes);
      register_module("down", down);
    }
  }
  torch::Tensor forward(const torch::Tensor& x) { return torch::relu((down ? down->forward(x) : x) + body->forward(x)); }
};
TORCH_MODULE(Bottleneck);

// RAFT's SmallEncoder: 7x7/2 conv (32) + 3 stages of 2 bottleneck blocks (32, 64, 96; strides 1, 2, 2)
// + 1x1 to `out`: 1/8 resolution.
Sequential small_encoder(int64_t out, Norm norm) {
  Sequential s;
  s->push_back(Conv2d(Conv2dOptions(3, 32, 7).stride(2).padding(3)));
  add_norm(s, norm, 32);
  s->push_back(torch::nn::ReLU());
  int64_t in = 32;
  for (auto [planes, stride] : std::vector<std::pair<int64_t, int64_t>>{{32, 1}, {64, 2}, {96, 2}}) {
    s->push_back(Bottleneck(in, planes, stride, norm));
    s->push_back(Bottleneck(planes, planes, 1, norm));
    in = planes;
  }
  s->push_back(Conv2d(Conv2dOptions(in, out, 1)));
  return s;
}

// MobileNetV2 inverted residual: 1x1 expand (t) -> 3x3 depthwise stride s -> 1x1 project; skip
// when the shape is kept.
struct InvertedResidualImpl : torch::nn::Module {
  Sequential body{nullptr};
  bool skip;
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t t, Norm norm) : skip(stride == 1 && in == out) {
    const int64_t mid = in * t;
    body = Sequential();
    body->push_back(Conv2d(Conv2dOptions(in, mid, 1)));
    add_norm(body, norm, mid);
    body->push_back(torch::nn::ReLU6());
    body->push_back(Conv2d(Conv2dOptions(mid, mid, 3).stride(stride).padding(1).groups(mid)));
    add_norm(body, norm, mid);
    body->push_back(torch::nn::ReLU6());
    body->push_back(Conv2d(Conv2dOptions(mid, out, 1)));
    add_norm(body, norm, out);
    register_module("body", body);
  }
  torch::Tensor forward(const torch::Tensor& x) { return skip ? x + body->forward(x) : body->forward(x); }
};
TORCH_MODULE(InvertedResidual);

// 3x3/2 stem (16) + inverted residuals 24 (/4), 32 (/8), 48, expansion 4, + 1x1 to `out`.
Sequential mobile_encoder(int64_t out, Norm norm) {
  Sequential s;
  s->push_back(Conv2d(Conv2dOptions(3, 16, 3).stride(2).padding(1)));
  add_norm(s, norm, 16);
  s->push_back(torch::nn::ReLU6());
  s->push_back(InvertedResidual(16, 24, 2, 4, norm));
  s->push_back(InvertedResidual(24, 24, 1, 4, norm));
  s->push_back(InvertedResidual(24, 32, 2, 4, norm));
  s->push_back(InvertedResidual(32, 32, 1, 4, norm));
  s->push_back(InvertedResidual(32, 48, 1, 4, norm));
  s->push_back(InvertedResidual(48, 48, 1, 4, norm));
  s->push_back(Conv2d(Conv2dOptions(48, out, 1)));
  return s;
}

torch::Tensor coords_grid(int64_t B, int64_t h, int64_t w, const torch::TensorOptions& o) {
  auto yx = torch::meshgrid({torch::arange(h, o), torch::arange(w, o)}, "ij");
  return torch::stack({yx[1], yx[0]}, 0).unsqueeze(0).expand({B, 2, h, w}).contiguous();  // (x, y)
}

}  // namespace

// ---- SCI, warping, upsampling ---------------------------------------------------------------------
namespace {

// grid_sample of feat at x + flow(x) (bilinear, align_corners, zeros outside).
torch::Tensor sample_at_flow(const torch::Tensor& feat, const torch::Tensor& flow) {
  TORCH_CHECK(feat.dim() == 4 && flow.dim() == 4 && flow.size(1) == 2 && feat.size(0) == flow.size(0) && feat.size(2) == flow.size(2) &&
                  feat.size(3) == flow.size(3),
              "warp: features [B,C,h,w] and flow [B,2,h,w] must agree, got ", feat.sizes(), " and ", flow.sizes());
  const int64_t B = feat.size(0), h = feat.size(2), w = feat.size(3);
  torch::Tensor p = coords_grid(B, h, w, flow.options()) + flow;  // (x, y) sample positions
  torch::Tensor gx = p.select(1, 0) * (2.0 / std::max<int64_t>(w - 1, 1)) - 1;
  torch::Tensor gy = p.select(1, 1) * (2.0 / std::max<int64_t>(h - 1, 1)) - 1;
  torch::Tensor grid = torch::stack({gx, gy}, -1).to(feat.scalar_type());
  return F::grid_sample(feat, grid, F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(true));
}

torch::Tensor with_ones_channel(const torch::Tensor& feat) {
  return torch::cat({feat, torch::ones({feat.size(0), 1, feat.size(2), feat.size(3)}, feat.options())}, 1);
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> warp(const torch::Tensor& feat, const torch::Tensor& flow) {
  const int64_t C = feat.size(1);
  torch::Tensor s = sample_at_flow(with_ones_channel(feat), flow);  // the ones channel becomes the in-frame mask
  return {s.narrow(1, 0, C), s.narrow(1, C, 1)};
}

SciFeatures sci_features(const torch::Tensor& f1, const torch::Tensor& f2, bool normalize) {
  TORCH_CHECK(f1.dim() == 4 && f1.sizes() == f2.sizes(), "sci_features: F1 and F2 must be equal [B,C,h,w], got ", f1.sizes(), " and ",
              f2.sizes());
  SciFeatures s;
  s.f1 = normalize ? F::normalize(f1, F::NormalizeFuncOptions().dim(1).eps(1e-6)) : f1;
  s.f2_ones = with_ones_channel(f2);
  s.normalize = normalize;
  return s;
}

torch::Tensor sci_map(const SciFeatures& features, const torch::Tensor& flow, const torch::Tensor& sigma2) {
  const int64_t C = features.f1.size(1);
  torch::Tensor s = sample_at_flow(features.f2_ones, flow.detach());
  torch::Tensor w2 = s.narrow(1, 0, C), inside = s.narrow(1, C, 1);
  // normalised: ||F1^ - W^||^2 = 2 - 2 cos in [0, 4]; raw: the squared distance per channel
  torch::Tensor d2 = features.normalize ? (features.f1 - F::normalize(w2, F::NormalizeFuncOptions().dim(1).eps(1e-6))).square().sum(1, true)
                                        : (features.f1 - w2).square().sum(1, true) / static_cast<double>(C);
  return torch::exp(-d2 / sigma2) * inside;
}

torch::Tensor sci_map(const torch::Tensor& f1, const torch::Tensor& f2, const torch::Tensor& flow, const torch::Tensor& sigma2, bool normalize) {
  return sci_map(sci_features(f1, f2, normalize), flow, sigma2);
}

torch::Tensor convex_upsample(const torch::Tensor& flow, const torch::Tensor& mask) {
  const int64_t B = flow.size(0), h = flow.size(2), w = flow.size(3);
  TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, 9 * 64, h, w}), "convex_upsample: mask must be [B,576,h,w] for flow ", flow.sizes(),
              ", got ", mask.sizes());
  torch::Tensor m = torch::softmax(mask.view({B, 1, 9, 8, 8, h, w}), 2);
  torch::Tensor up = F::unfold(8 * flow, F::UnfoldFuncOptions({3, 3}).padding(1)).view({B, 2, 9, 1, 1, h, w});
  up = (m * up).sum(2);                                            // [B,2,8,8,h,w]
  return up.permute({0, 1, 4, 2, 5, 3}).reshape({B, 2, 8 * h, 8 * w});
}

torch::Tensor bilinear_upsample8(const torch::Tensor& flow) {
  return 8 * F::interpolate(flow, F::InterpolateFuncOptions()
                                      .size(std::vector<int64_t>{8 * flow.size(2), 8 * flow.size(3)})
                                      .mode(torch::kBilinear)
                                      .align_corners(true));
}

// ---- the network ---------------------------------------------------------------------------------
FlowNetImpl::FlowNetImpl(const FlowModelOptions& o, const SciOptions& sci) : opt_(o), sci_(sci) {
  const bool mobile = o.kind == "mobileflow";
  fnet = register_module("fnet", mobile ? mobile_encoder(o.feature_dim, Norm::Instance) : small_encoder(o.feature_dim, Norm::Instance));
  cnet = register_module("cnet", mobile ? mobile_encoder(o.hidden + o.context, Norm::None) : small_encoder(o.hidden + o.context, Norm::None));
  const int64_t sci_motion = sci.enabled && sci.input == "motion" ? 1 : 0, sci_gru = sci.enabled && sci.input == "gru" ? 1 : 0;
  // RAFT's SmallMotionEncoder: corr 1x1 (96); flow 7x7 (64), 3x3 (32); fused 3x3 to 80 + raw flow = 82
  convc1 = register_module("convc1", Conv2d(Conv2dOptions(corr_channels() + sci_motion, 96, 1)));
  convf1 = register_module("convf1", Conv2d(Conv2dOptions(2, 64, 7).padding(3)));
  convf2 = register_module("convf2", Conv2d(Conv2dOptions(64, 32, 3).padding(1)));
  conv = register_module("conv", Conv2d(Conv2dOptions(128, 80, 3).padding(1)));
  const int64_t in = 82 + o.context + sci_gru, hd = o.hidden;
  convz = register_module("convz", Conv2d(Conv2dOptions(hd + in, hd, 3).padding(1)));
  convr = register_module("convr", Conv2d(Conv2dOptions(hd + in, hd, 3).padding(1)));
  convq = register_module("convq", Conv2d(Conv2dOptions(hd + in, hd, 3).padding(1)));
  head1 = register_module("head1", Conv2d(Conv2dOptions(hd, 128, 3).padding(1)));
  head2 = register_module("head2", Conv2d(Conv2dOptions(128, 2, 3).padding(1)));
  if (o.upsample == "convex")
    mask = register_module("mask", Sequential(Conv2d(Conv2dOptions(hd, 256, 3).padding(1)), torch::nn::ReLU(),
                                              Conv2d(Conv2dOptions(256, 64 * 9, 1))));
  if (sci.enabled && sci.learn_sigma) log_sigma2 = register_parameter("log_sigma2", torch::full({1}, std::log(sci.sigma2)));
}

FlowOutput FlowNetImpl::forward(const torch::Tensor& image1, const torch::Tensor& image2, int64_t iters) {
  TORCH_CHECK(image1.dim() == 4 && image1.size(1) == 3 && image1.sizes() == image2.sizes(), "FlowNet: images must be equal [B,3,H,W], got ",
              image1.sizes(), " and ", image2.sizes());
  TORCH_CHECK(image1.size(2) % 8 == 0 && image1.size(3) % 8 == 0, "FlowNet: H and W must be multiples of 8 (pad first), got ",
              image1.size(2), "x", image1.size(3));
  if (iters <= 0) iters = opt_.iters;
  const int64_t B = image1.size(0);
  torch::Tensor x1 = 2 * image1 - 1, x2 = 2 * image2 - 1;
  torch::Tensor fm = fnet->forward(torch::cat({x1, x2}, 0)).to(torch::kFloat32);  // shared weights, one pass
  torch::Tensor f1 = fm.narrow(0, 0, B), f2 = fm.narrow(0, B, B);
  const int64_t h = f1.size(2), w = f1.size(3);

  std::vector<torch::Tensor> pyramid;
  if (opt_.kind == "raft-small") pyramid = corr_pyramid(corr_volume(f1, f2), opt_.levels);

  torch::Tensor c = cnet->forward(x1);
  torch::Tensor net = torch::tanh(c.narrow(1, 0, opt_.hidden)), inp = torch::relu(c.narrow(1, opt_.hidden, opt_.context));
  torch::Tensor coords0 = coords_grid(B, h, w, f1.options()), coords1 = coords0.clone();
  torch::Tensor sigma2 = sci_.learn_sigma && log_sigma2.defined() ? torch::exp(log_sigma2) : torch::full({1}, sci_.sigma2, f1.options());

  // F1's normalisation and F2's ones channel do not change over the iterations: prepared once
  const SciFeatures sci_feats = sci_.enabled ? sci_features(f1, f2, sci_.normalize) : SciFeatures{};

  FlowOutput out;
  for (int64_t it = 0; it < iters; ++it) {
    coords1 = coords1.detach();
    torch::Tensor corr = pyramid.empty() ? local_correlation(f1, f2, coords1, opt_.radius, opt_.levels)
                                         : lookup_pyramid(pyramid, coords1, opt_.radius);
    torch::Tensor flow = coords1 - coords0;
    torch::Tensor m;
    if (sci_.enabled) {
      m = sci_map(sci_feats, flow, sigma2);
      out.sci_maps.push_back(m);
      if (sci_.input == "motion") corr = torch::cat({corr, m}, 1);
    }
    // motion encoder
    torch::Tensor cor = torch::relu(convc1->forward(corr));
    torch::Tensor flo = torch::relu(convf2->forward(torch::relu(convf1->forward(flow))));
    torch::Tensor motion = torch::cat({torch::relu(conv->forward(torch::cat({cor, flo}, 1))), flow}, 1);
    torch::Tensor x = sci_.enabled && sci_.input == "gru" ? torch::cat({inp, motion, m}, 1) : torch::cat({inp, motion}, 1);
    // ConvGRU
    torch::Tensor hx = torch::cat({net, x}, 1);
    torch::Tensor z = torch::sigmoid(convz->forward(hx)), r = torch::sigmoid(convr->forward(hx));
    torch::Tensor q = torch::tanh(convq->forward(torch::cat({r * net, x}, 1)));
    net = (1 - z) * net + z * q;
    coords1 = coords1 + head2->forward(torch::relu(head1->forward(net)));
    torch::Tensor coarse = coords1 - coords0;
    out.flows.push_back(mask ? convex_upsample(coarse, 0.25 * mask->forward(net)) : bilinear_upsample8(coarse));
  }
  return out;
}

int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace ef::flow
