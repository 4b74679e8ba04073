#include "lora/adapter.h"

#include <cmath>

namespace ef::lora {

LayerShape LayerShape::linear(int64_t in, int64_t out) {
  LayerShape s;
  s.kind = Kind::linear;
  s.in = in;
  s.out = out;
  return s;
}

LayerShape LayerShape::conv2d(const torch::nn::detail::ConvNdOptions<2>& base) {
  if (base.groups() != 1)
    throw InputError("adapters support Conv2d layers with groups = 1 only (this one has groups = " + std::to_string(base.groups()) + ")");
  if (base.transposed()) throw InputError("adapters do not support transposed convolutions");
  LayerShape s;
  s.kind = Kind::conv2d;
  s.in = base.in_channels();
  s.out = base.out_channels();
  s.kernel = {(*base.kernel_size())[0], (*base.kernel_size())[1]};
  s.conv_options = torch::nn::Conv2dOptions(s.in, s.out, base.kernel_size())
                       .stride(base.stride())
                       .padding(base.padding())
                       .dilation(base.dilation())
                       .padding_mode(base.padding_mode())
                       .bias(false);
  return s;
}

LayerShape LayerShape::conv2d(const torch::nn::Conv2dOptions& o) {
  torch::nn::detail::ConvNdOptions<2> nd(o.in_channels(), o.out_channels(), o.kernel_size());
  nd.stride(o.stride()).padding(o.padding()).dilation(o.dilation()).groups(o.groups()).bias(o.bias()).padding_mode(o.padding_mode());
  return conv2d(nd);
}

std::vector<int64_t> LayerShape::weight_shape() const {
  if (conv()) return {out, in, kernel[0], kernel[1]};
  return {out, in};
}

std::string LayerShape::describe() const {
  if (conv())
    return "Conv2d(" + std::to_string(in) + " -> " + std::to_string(out) + ", " + std::to_string(kernel[0]) + "x" +
           std::to_string(kernel[1]) + ")";
  return "Linear(" + std::to_string(in) + " -> " + std::to_string(out) + ")";
}

AdapterRegistry& adapter_kinds() {
  static AdapterRegistry registry("adapter kind");
  return registry;
}

std::shared_ptr<AdapterImpl> make_adapter(const LayerShape& shape, const Config& section) {
  return std::shared_ptr<AdapterImpl>(adapter_kinds().create(section.kind(), shape, section).release());
}

void kaiming_uniform_default(torch::Tensor& weight) {
  torch::NoGradGuard no_grad;
  const int64_t fan_in = weight.numel() / weight.size(0);
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight.uniform_(-bound, bound);
}

}  // namespace ef::lora
