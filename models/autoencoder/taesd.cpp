#include "models/autoencoder/taesd.h"

#include <stdexcept>

namespace ef {

namespace {

ef::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1, bool bias = true) {
  return ef::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(bias));
}

std::pair<std::string, std::string> first_problem(const TinyAutoencoderOptions& o) {
  auto s = [](int64_t v) { return std::to_string(v); };
  for (auto [key, v] : {std::pair<const char*, int64_t>{"in_channels", o.in_channels}, {"out_channels", o.out_channels},
                        {"latent_channels", o.latent_channels}})
    if (v <= 0) return {key, "must be positive, got " + s(v)};
  struct Side {
    const char* channels_key;
    const char* blocks_key;
    const std::vector<int64_t>& channels;
    const std::vector<int64_t>& blocks;
  };
  for (const Side& side : {Side{"encoder_block_out_channels", "num_encoder_blocks", o.encoder_block_out_channels, o.num_encoder_blocks},
                           Side{"decoder_block_out_channels", "num_decoder_blocks", o.decoder_block_out_channels, o.num_decoder_blocks}}) {
    if (side.blocks.empty()) return {side.blocks_key, "needs at least one level"};
    if (side.channels.size() != side.blocks.size())
      return {side.channels_key, "has " + s(static_cast<int64_t>(side.channels.size())) + " entries, " + side.blocks_key + " has " +
                                     s(static_cast<int64_t>(side.blocks.size()))};
    for (size_t i = 0; i < side.blocks.size(); ++i) {
      if (side.blocks[i] < 0) return {side.blocks_key, "level " + s(static_cast<int64_t>(i)) + " has " + s(side.blocks[i]) + " blocks"};
      if (side.channels[i] <= 0) return {side.channels_key, "level " + s(static_cast<int64_t>(i)) + " has " + s(side.channels[i]) + " channels"};
      // AutoencoderTiny's stride-2 / post-upsampling convs keep the width: every level has the same one
      if (side.channels[i] != side.channels[0])
        return {side.channels_key, "AutoencoderTiny needs one width for all levels, got " + s(side.channels[0]) + " and " + s(side.channels[i])};
    }
  }
  return {"", ""};
}

}  // namespace

void TinyAutoencoderOptions::validate() const {
  auto [key, why] = first_problem(*this);
  if (!key.empty()) throw std::invalid_argument("TinyAutoencoder options: " + key + ": " + why);
}

TinyAutoencoderOptions TinyAutoencoderOptions::from(const Config& c) {
  TinyAutoencoderOptions o;
  o.in_channels = c.get<int64_t>("in_channels", o.in_channels);
  o.out_channels = c.get<int64_t>("out_channels", o.out_channels);
  o.latent_channels = c.get<int64_t>("latent_channels", o.latent_channels);
  o.encoder_block_out_channels = c.get<std::vector<int64_t>>("encoder_block_out_channels", o.encoder_block_out_channels);
  o.num_encoder_blocks = c.get<std::vector<int64_t>>("num_encoder_blocks", o.num_encoder_blocks);
  o.decoder_block_out_channels = c.get<std::vector<int64_t>>("decoder_block_out_channels", o.decoder_block_out_channels);
  o.num_decoder_blocks = c.get<std::vector<int64_t>>("num_decoder_blocks", o.num_decoder_blocks);
  auto [key, why] = first_problem(o);
  if (!key.empty()) c.invalid(key, why);
  return o;
}

nlohmann::json TinyAutoencoderOptions::diffusers_config() const {
  return {{"_class_name", "AutoencoderTiny"},
          {"in_channels", in_channels},
          {"out_channels", out_channels},
          {"encoder_block_out_channels", encoder_block_out_channels},
          {"decoder_block_out_channels", decoder_block_out_channels},
          {"act_fn", "relu"},
          {"upsample_fn", "nearest"},
          {"latent_channels", latent_channels},
          {"upsampling_scaling_factor", 2},
          {"num_encoder_blocks", num_encoder_blocks},
          {"num_decoder_blocks", num_decoder_blocks},
          {"latent_magnitude", 3},
          {"latent_shift", 0.5},
          {"scaling_factor", 1.0},
          {"shift_factor", 0.0}};
}

TinyBlockImpl::TinyBlockImpl(int64_t in_channels, int64_t out_channels) {
  conv = register_module("conv", torch::nn::Sequential(conv3x3(in_channels, out_channels), torch::nn::ReLU(), conv3x3(out_channels, out_channels),
                                                       torch::nn::ReLU(), conv3x3(out_channels, out_channels)));
  if (in_channels != out_channels)
    skip = register_module("skip", ef::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 1).bias(false)));
}

torch::Tensor TinyBlockImpl::forward(const torch::Tensor& x) { return torch::relu(conv->forward(x) + (skip ? skip->forward(x) : x)); }

TinyCoderImpl::TinyCoderImpl(torch::nn::Sequential l) { layers = register_module("layers", std::move(l)); }

TinyAutoencoderImpl::TinyAutoencoderImpl(TinyAutoencoderOptions o) : opt_(std::move(o)) {
  opt_.validate();
  torch::nn::Sequential enc;
  const auto& ec = opt_.encoder_block_out_channels;
  for (size_t i = 0; i < ec.size(); ++i) {
    enc->push_back(i == 0 ? conv3x3(opt_.in_channels, ec[0]) : conv3x3(ec[i], ec[i], 2, /*bias=*/false));
    for (int64_t b = 0; b < opt_.num_encoder_blocks[i]; ++b) enc->push_back(TinyBlock(ec[i], ec[i]));
  }
  enc->push_back(conv3x3(ec.back(), opt_.latent_channels));
  encoder = register_module("encoder", TinyCoder(enc));

  torch::nn::Sequential dec;
  const auto& dc = opt_.decoder_block_out_channels;
  dec->push_back(conv3x3(opt_.latent_channels, dc[0]));
  dec->push_back(torch::nn::ReLU());
  for (size_t i = 0; i < dc.size(); ++i) {
    const bool last = i + 1 == dc.size();
    for (int64_t b = 0; b < opt_.num_decoder_blocks[i]; ++b) dec->push_back(TinyBlock(dc[i], dc[i]));
    if (!last) dec->push_back(torch::nn::Upsample(torch::nn::UpsampleOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
    dec->push_back(conv3x3(dc[i], last ? opt_.out_channels : dc[i], 1, /*bias=*/last));
  }
  decoder = register_module("decoder", TinyCoder(dec));
}

torch::Tensor TinyAutoencoderImpl::encode(const torch::Tensor& image) {
  TORCH_CHECK(image.dim() == 4 && image.size(1) == opt_.in_channels, "TinyAutoencoder::encode: image must be [B, ", opt_.in_channels,
              ", H, W] in [-1, 1], got ", image.sizes());
  return encoder->forward(image.add(1).div(2));
}

torch::Tensor TinyAutoencoderImpl::decode(const torch::Tensor& latent) {
  TORCH_CHECK(latent.dim() == 4 && latent.size(1) == opt_.latent_channels, "TinyAutoencoder::decode: latent must be [B, ", opt_.latent_channels,
              ", h, w], got ", latent.sizes());
  return decoder->forward(torch::tanh(latent / 3) * 3).mul(2).sub(1);
}

}  // namespace ef
