#pragma once
// TAESD, the tiny autoencoder for Stable Diffusion latents (madebyollin/taesd), with the names and
// shapes of diffusers' `AutoencoderTiny` (encoder.layers.N..., decoder.layers.N...) so that its
// checkpoints load key for key and `diffusers_config()` rebuilds the same network in diffusers.
//
//   Block(c):  conv.0 (3x3) -> ReLU -> conv.2 (3x3) -> ReLU -> conv.4 (3x3), + skip, ReLU
//   encoder:   conv(in, c0), Block x n0; per further level: conv(c, c, stride 2, no bias), Block x n;
//              conv(c, latent)                                   (2^(levels-1) x downsampling)
//   decoder:   3 tanh(z / 3), conv(latent, c0), ReLU; per level: Block x n, then (except the last)
//              nearest 2x upsampling and conv(c, c, no bias); the last level ends in conv(c, out)
//
// Images are in [-1, 1] on both sides (diffusers' convention): encode maps them to [0, 1] before the
// encoder, decode maps the decoder's [0, 1] back. Latents are already in SD's scaled latent space
// (scaling factor 1).
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/config.h"
#include "models/adaptable.h"

namespace ef {

struct TinyAutoencoderOptions {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  int64_t latent_channels = 4;
  std::vector<int64_t> encoder_block_out_channels{64, 64, 64, 64};
  std::vector<int64_t> num_encoder_blocks{1, 3, 3, 3};
  std::vector<int64_t> decoder_block_out_channels{64, 64, 64, 64};
  std::vector<int64_t> num_decoder_blocks{3, 3, 3, 1};
  static TinyAutoencoderOptions from(const Config& model);  // reads the keys above (model.autoencoder)
  nlohmann::json diffusers_config() const;                  // the AutoencoderTiny config of the same network
  void validate() const;  // throws std::invalid_argument naming the first inconsistent option
  int64_t encoder_downsampling() const { return int64_t{1} << (num_encoder_blocks.size() - 1); }
  int64_t decoder_upsampling() const { return int64_t{1} << (num_decoder_blocks.size() - 1); }
};

// diffusers' AutoencoderTinyBlock.
class TinyBlockImpl : public torch::nn::Module {
 public:
  TinyBlockImpl(int64_t in_channels, int64_t out_channels);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Sequential conv{nullptr};
  ef::nn::Conv2d skip{nullptr};  // 1x1, no bias; only when the channel count changes
};
TORCH_MODULE(TinyBlock);

// Holds the layer stack as "layers" (diffusers' EncoderTiny / DecoderTiny).
class TinyCoderImpl : public torch::nn::Module {
 public:
  explicit TinyCoderImpl(torch::nn::Sequential layers);
  torch::Tensor forward(const torch::Tensor& x) { return layers->forward(x); }
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(TinyCoder);

class TinyAutoencoderImpl : public torch::nn::Module {
 public:
  explicit TinyAutoencoderImpl(TinyAutoencoderOptions options = {});
  // image [B, in_channels, H, W] in [-1, 1] -> latent [B, latent_channels, H/f, W/f]
  torch::Tensor encode(const torch::Tensor& image);
  // latent [B, latent_channels, h, w] -> image [B, out_channels, h*f, w*f], nominally in [-1, 1]
  torch::Tensor decode(const torch::Tensor& latent);
  const TinyAutoencoderOptions& options() const { return opt_; }
  TinyCoder encoder{nullptr}, decoder{nullptr};

 private:
  TinyAutoencoderOptions opt_;
};
TORCH_MODULE(TinyAutoencoder);

}  // namespace ef
