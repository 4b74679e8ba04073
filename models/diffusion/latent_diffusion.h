#pragma once
// The networks of a latent text-conditioned diffusion model and what is done with them: a
// conditional UNet, a CLIP-like text encoder (trained with it), a frozen tiny autoencoder whose
// latent space the UNet works in, and the noise schedule. Text-to-image sampling with classifier-free
// guidance, and InstructPix2Pix editing: the UNet sees [z_t, E(image)] (8 channels for 4-channel
// latents) and is guided by image and text with three passes per step, batched into one call.
//
// Latents: z = latent_scale * E(image). The image condition is E(image) without the scale, as in
// InstructPix2Pix (where it is the SD-VAE posterior mode without 0.18215). The null text is the
// embedding of "" and the null image an all-zero latent.
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "models/autoencoder/taesd.h"
#include "models/diffusion/sampler.h"
#include "models/diffusion/schedule.h"
#include "models/diffusion/unet.h"
#include "models/text/text_encoder.h"

namespace ef {

struct EditGuidance {
  double image = 1.5;  // s_I (diffusers' default; the original CLI uses 1.2)
  double text = 7.5;   // s_T
};

class LatentDiffusion {
 public:
  // model.{unet, text, autoencoder.{from_run, options}, schedule, latent_scale}. The autoencoder's
  // options come from the run `autoencoder.from_run` names (its weights are loaded by the launcher: the
  // recipes declare it a frozen network, see core/frozen.h). `image_conditioned`: the UNet takes the
  // image latent as extra input channels (editing); model.unet.in_channels must then be twice the
  // latent channels.
  LatentDiffusion(const Config& model, bool image_conditioned, torch::Device device);

  UNet2DCondition unet{nullptr};
  TextEncoder text{nullptr};
  TinyAutoencoder autoencoder{nullptr};  // frozen
  NoiseSchedule schedule;

  bool image_conditioned() const { return image_conditioned_; }
  int64_t latent_channels() const { return autoencoder->options().latent_channels; }
  int64_t downscale() const;  // image pixels per latent pixel
  double latent_scale() const { return latent_scale_; }
  const std::filesystem::path& autoencoder_run() const { return autoencoder_run_; }  // empty: none named
  torch::Device device() const { return device_; }

  torch::Tensor encode(const torch::Tensor& images);   // [B,3,H,W] in [-1,1] -> unscaled latent, no grad
  torch::Tensor decode(const torch::Tensor& latents);  // unscaled latent -> [B,3,H,W] in [-1,1], no grad
  torch::Tensor embed_text(const torch::Tensor& ids);  // token ids -> [B, L, D]
  torch::Tensor embed_text(const std::vector<std::string>& texts);
  torch::Tensor null_text(int64_t batch);               // embeddings of "" x batch

  // One denoiser evaluation: x_t and per-sample timesteps; `image_latent` (unscaled) for editing models.
  torch::Tensor predict(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& context,
                        const torch::Tensor& image_latent = {});

  // Text-to-image: images [B,3,size,size] in [-1,1]. guidance: scale form, 1 = none (one pass per step).
  torch::Tensor generate(const std::vector<std::string>& prompts, int64_t image_size, const SamplerOptions& sampler,
                         double guidance, uint64_t seed);
  // InstructPix2Pix editing of images [B,3,H,W] in [-1,1] by one instruction each (or one for all).
  // Every image starts from the same noise, drawn from `seed`: frames of a video share it (a cheap aid
  // to temporal consistency), in whatever groups they are edited. Stochastic samplers draw their
  // later noise from seed + 1, per batch.
  torch::Tensor edit(const torch::Tensor& images, const std::vector<std::string>& instructions, const SamplerOptions& sampler,
                     EditGuidance guidance, uint64_t seed);

 private:
  torch::Tensor start_noise(const std::vector<int64_t>& shape, uint64_t seed) const;
  torch::Device device_;
  bool image_conditioned_ = false;
  std::filesystem::path autoencoder_run_;
  double latent_scale_ = 1.0;
};

// Implemented by recipes whose networks are a LatentDiffusion (text-to-image, editing), so that
// `edgeforge sample` and `edgeforge edit` can use a run's model.
class HasLatentDiffusion {
 public:
  virtual ~HasLatentDiffusion() = default;
  virtual LatentDiffusion& diffusion() = 0;
};

// Trains a noise-prediction network: x0 -> (t ~ U{0..T-1}, eps ~ N(0,I), x_t) and the MSE between the
// prediction and the schedule's target; `predict` gets (x_t, t).
// `generator`: draws t and eps from it instead of the global generator (evaluation).
torch::Tensor denoising_loss(const NoiseSchedule& schedule, const torch::Tensor& x0,
                             const std::function<torch::Tensor(const torch::Tensor& x_t, const torch::Tensor& t)>& predict,
                             std::optional<at::Generator> generator = std::nullopt);

}  // namespace ef
