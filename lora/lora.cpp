#include "lora/lora.h"

#include <cmath>

namespace ef::lora {

LoraOptions LoraOptions::from(const Config& c) {
  LoraOptions o;
  o.rank = c.get<int64_t>("rank", o.rank);
  o.alpha = c.get<double>("alpha", static_cast<double>(o.rank));
  o.rslora = c.get<bool>("rslora", o.rslora);
  o.dropout = c.get<double>("dropout", o.dropout);
  if (o.rank < 1) c.invalid("rank", "must be >= 1");
  if (o.dropout < 0.0 || o.dropout >= 1.0) c.invalid("dropout", "must be in [0, 1)");
  return o;
}

double LoraOptions::scaling() const {
  return alpha / (rslora ? std::sqrt(static_cast<double>(rank)) : static_cast<double>(rank));
}

LoraImpl::LoraImpl(const LayerShape& shape, const LoraOptions& options) : AdapterImpl(shape), opt_(options) {
  const int64_t r = opt_.rank;
  if (shape_.conv()) {
    auto a = *shape_.conv_options;
    a.out_channels(r);
    lora_A_conv = register_module("lora_A", torch::nn::Conv2d(a));
    lora_B_conv = register_module("lora_B", torch::nn::Conv2d(torch::nn::Conv2dOptions(r, shape_.out, 1).bias(false)));
  } else {
    lora_A_linear = register_module("lora_A", torch::nn::Linear(torch::nn::LinearOptions(shape_.in, r).bias(false)));
    lora_B_linear = register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(r, shape_.out).bias(false)));
  }
  kaiming_uniform_default(A());
  torch::NoGradGuard no_grad;
  B().zero_();
}

torch::Tensor& LoraImpl::A() { return shape_.conv() ? lora_A_conv->weight : lora_A_linear->weight; }
torch::Tensor& LoraImpl::B() { return shape_.conv() ? lora_B_conv->weight : lora_B_linear->weight; }

torch::Tensor LoraImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = opt_.dropout > 0.0 ? torch::dropout(x, opt_.dropout, is_training()) : x;
  h = shape_.conv() ? lora_B_conv->forward(lora_A_conv->forward(h)) : lora_B_linear->forward(lora_A_linear->forward(h));
  return h * (opt_.scaling() * strength_);
}

torch::Tensor LoraImpl::delta_weight() {
  if (!weight_equivalent()) throw std::logic_error("lora: delta_weight() with dropout while training");
  const int64_t r = opt_.rank;
  // [d_out, r] @ [r, d_in * kh * kw], then back to the base layout
  torch::Tensor dw = torch::matmul(B().reshape({shape_.out, r}), A().reshape({r, -1})) * (opt_.scaling() * strength_);
  return dw.reshape(shape_.weight_shape());
}

nlohmann::json LoraImpl::options_json() const {
  return {{"kind", "lora"}, {"rank", opt_.rank}, {"alpha", opt_.alpha}, {"rslora", opt_.rslora}, {"dropout", opt_.dropout}};
}

EF_REGISTER(adapter_kinds(), "lora",
            [](const LayerShape& s, const Config& c) { return std::make_unique<LoraImpl>(s, LoraOptions::from(c)); },
            "LoRA: s·B·A beside a frozen Linear/Conv2d (rank, alpha, rslora, dropout); PEFT layout");

}  // namespace ef::lora
