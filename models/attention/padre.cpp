#include "models/attention/padre.h"

#include <cmath>

namespace ef {

namespace {
bool one_of(const std::string& v, std::initializer_list<const char*> options) {
  for (const char* o : options)
    if (v == o) return true;
  return false;
}
}  // namespace

PADReOptions PADReOptions::from(const Config& c) {
  PADReOptions o;
  o.degree = c.get<int64_t>("degree", o.degree);
  o.kernel = c.get<int64_t>("kernel", o.kernel);
  o.mixing = c.get<std::string>("mixing", o.mixing);
  o.norm = c.get<std::string>("norm", o.norm);
  o.combine = c.get<std::string>("combine", o.combine);
  o.prefix_mixing = c.get<std::string>("prefix_mixing", o.prefix_mixing);
  o.bias = c.get<bool>("bias", o.bias);
  if (o.degree < 1 || o.degree > 8) c.invalid("degree", "expected 1..8, got " + std::to_string(o.degree));
  if (o.kernel < 1 || o.kernel % 2 == 0) c.invalid("kernel", "expected an odd size >= 1, got " + std::to_string(o.kernel));
  if (!one_of(o.mixing, {"auto", "conv2d", "conv1d"})) c.invalid("mixing", "expected auto, conv2d or conv1d, got \"" + o.mixing + "\"");
  if (!one_of(o.norm, {"none", "layernorm", "l2"})) c.invalid("norm", "expected none, layernorm or l2, got \"" + o.norm + "\"");
  if (!one_of(o.combine, {"sum", "last"})) c.invalid("combine", "expected sum or last, got \"" + o.combine + "\"");
  if (!one_of(o.prefix_mixing, {"mean", "pointwise"}))
    c.invalid("prefix_mixing", "expected mean or pointwise, got \"" + o.prefix_mixing + "\"");
  return o;
}

PADReImpl::PADReImpl(const AttentionShape& shape, const Config& options) : PADReImpl(shape, PADReOptions::from(options)) {
  if (opt_.mixing == "conv2d" && (shape.grid_h <= 0 || shape.grid_w <= 0))
    options.invalid("mixing", "conv2d needs the token grid, which this network does not give");
}

PADReImpl::PADReImpl(const AttentionShape& shape, const PADReOptions& options) : shape_(shape), opt_(options) {
  const int64_t C = shape.dim, d = opt_.degree, k = opt_.kernel;
  two_d_ = opt_.mixing == "conv2d" || (opt_.mixing == "auto" && shape.grid_h > 0 && shape.grid_w > 0);
  std::vector<int64_t> kshape = two_d_ ? std::vector<int64_t>{1, k, k} : std::vector<int64_t>{1, k};
  const double fan_in = two_d_ ? static_cast<double>(k * k) : static_cast<double>(k);
  const double bound = 1.0 / std::sqrt(fan_in);  // PyTorch's default conv init
  auto dw = [&](int64_t channels) {
    std::vector<int64_t> s = {channels};
    s.insert(s.end(), kshape.begin(), kshape.end());
    return torch::empty(s).uniform_(-bound, bound);
  };

  y_proj = register_module("y_proj", ef::nn::Linear(torch::nn::LinearOptions(C, d * C).bias(opt_.bias)));
  y_mix_weight = register_parameter("y_mix_weight", dw(d * C));
  if (opt_.bias) y_mix_bias = register_parameter("y_mix_bias", torch::empty({d * C}).uniform_(-bound, bound));
  z_proj = register_module("z_proj", torch::nn::ModuleList());
  for (int64_t i = 0; i + 1 < d; ++i) {
    z_proj->push_back(ef::nn::Linear(torch::nn::LinearOptions(C, C).bias(opt_.bias)));
    z_mix_weight.push_back(register_parameter("z_mix" + std::to_string(i) + "_weight", dw(C)));
    if (opt_.bias) z_mix_bias.push_back(register_parameter("z_mix" + std::to_string(i) + "_bias", torch::empty({C}).uniform_(-bound, bound)));
    else z_mix_bias.emplace_back();
  }
  coeff = register_parameter("coeff", torch::ones({d, C}));
  proj = register_module("proj", ef::nn::Linear(torch::nn::LinearOptions(C, C).bias(opt_.bias)));
}

torch::Tensor PADReImpl::token_mix(const torch::Tensor& u, const torch::Tensor& weight, const torch::Tensor& bias) const {
  const int64_t B = u.size(0), N = u.size(1), Ch = u.size(2);
  const int64_t prefix = std::min<int64_t>(shape_.prefix, N), P = N - prefix;
  const int64_t pad = opt_.kernel / 2;
  // The depthwise convolution runs on a channels-last view of the tokens ([B, N, Ch] already is
  // NHWC): no transposes, and LibTorch's channels-last depthwise kernels are far faster on CPU than
  // NCHW ones (backward especially). 1-D mixing is a 1 x P image with a 1 x k kernel.
  const int64_t h = two_d_ ? shape_.grid_h : 1, w = two_d_ ? shape_.grid_w : P;
  TORCH_CHECK(!two_d_ || P == h * w, "PADRe: ", N, " tokens do not fit the ", shape_.prefix, " prefix + ", shape_.grid_h, "x",
              shape_.grid_w, " grid it was built for");
  torch::Tensor g = u.narrow(1, prefix, P).reshape({B, h, w, Ch}).permute({0, 3, 1, 2}).contiguous(at::MemoryFormat::ChannelsLast);
  torch::Tensor k2 = two_d_ ? weight : weight.unsqueeze(2);  // [Ch, 1, kh, kw]
  std::vector<int64_t> padding = two_d_ ? std::vector<int64_t>{pad, pad} : std::vector<int64_t>{0, pad};
  torch::Tensor mixed = torch::conv2d(g, k2, bias, 1, padding, 1, Ch).permute({0, 2, 3, 1}).reshape({B, P, Ch});
  if (prefix == 0) return mixed;
  // prefix tokens have no grid position: the centre tap on their own value (a 1x1 image with zero
  // padding), plus the mean of the patch tokens when prefix_mixing = mean (a linear token mixer too).
  torch::Tensor centre = two_d_ ? weight.select(1, 0).select(1, pad).select(1, pad) : weight.select(1, 0).select(1, pad);  // [Ch]
  torch::Tensor head = u.narrow(1, 0, prefix) * centre;
  if (bias.defined()) head = head + bias;
  if (opt_.prefix_mixing == "mean" && P > 0) head = head + u.narrow(1, prefix, P).mean(1, /*keepdim=*/true);
  return torch::cat({head, mixed}, 1);
}

torch::Tensor PADReImpl::normalize(const torch::Tensor& z) const {
  if (opt_.norm == "layernorm") return torch::layer_norm(z, {z.size(-1)}, {}, {}, 1e-6);
  if (opt_.norm == "l2")  // unit RMS over channels (L2 norm scaled by sqrt(C))
    return z * torch::rsqrt(z.square().mean(-1, /*keepdim=*/true) + 1e-6);
  return z;
}

torch::Tensor PADReImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == shape_.dim, "PADRe expects [B, N, ", shape_.dim, "], got ", x.sizes());
  const int64_t d = opt_.degree;
  std::vector<torch::Tensor> y = token_mix(y_proj->forward(x), y_mix_weight, y_mix_bias).chunk(d, -1);
  torch::Tensor z = y[0];
  torch::Tensor p = opt_.combine == "sum" ? z * coeff[0] : torch::Tensor();
  for (int64_t i = 1; i < d; ++i) {
    torch::Tensor t = z_proj[i - 1]->as<ef::nn::Linear>()->forward(normalize(z));
    z = token_mix(t, z_mix_weight[i - 1], z_mix_bias[i - 1]) * y[i];
    if (opt_.combine == "sum") p = p + z * coeff[i];
  }
  if (opt_.combine == "last") p = z;
  return proj->forward(p);
}

double PADReImpl::flops(int64_t tokens) const {
  const double N = static_cast<double>(tokens), C = static_cast<double>(shape_.dim), d = static_cast<double>(opt_.degree);
  const double taps = two_d_ ? static_cast<double>(opt_.kernel * opt_.kernel) : static_cast<double>(opt_.kernel);
  double per_token = 2 * C * d * C          // y_proj (B_k)
                     + 2 * taps * d * C     // y_mix (A_k), depthwise
                     + (d - 1) * (2 * C * C + 2 * taps * C + C)  // D_k, C_k, Hadamard product
                     + (opt_.combine == "sum" ? 2 * d * C : 0)   // a_k z_k summed
                     + 2 * C * C;           // proj (V)
  return N * per_token;
}

EF_REGISTER(attention_kinds(), "padre",
            [](const AttentionShape& s, const Config& c) { return std::make_unique<PADReImpl>(s, c); },
            "PADRe polynomial attention replacement (degree-d Hadamard products of conv token mixers; linear in N)");

}  // namespace ef
