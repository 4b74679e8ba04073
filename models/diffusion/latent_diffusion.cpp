#include "models/diffusion/latent_diffusion.h"

#include <optional>

#include "core/run.h"
#include "models/diffusion/guidance.h"

namespace ef {

namespace {
// The autoencoder options a run was trained with: an `autoencoder` run's model section, or the
// autoencoder of a diffusion or edit run.
nlohmann::json autoencoder_options_of(const std::filesystem::path& run) {
  Config c = Config::load(run / "config.json");
  const nlohmann::json& root = c.root();
  if (root.value("recipe", "") == "autoencoder") return root.at("model");
  if (root.contains("model") && root["model"].contains("autoencoder") && root["model"]["autoencoder"].contains("options"))
    return root["model"]["autoencoder"]["options"];
  throw ConfigError(run.string() + " is neither an autoencoder run nor a diffusion run with an autoencoder");
}
}  // namespace

LatentDiffusion::LatentDiffusion(const Config& model, bool image_conditioned, torch::Device device)
    : schedule(NoiseSchedule::from(model.section("schedule"))), device_(device), image_conditioned_(image_conditioned) {
  Config ae = model.section("autoencoder");
  std::string from_run = ae.get<std::string>("from_run", "");
  // an edit model started from another run (model.init_from, read by the recipe) uses that run's autoencoder
  if (from_run.empty() && model.json().contains("init_from") && model.json()["init_from"].is_string())
    from_run = model.json()["init_from"].get<std::string>();
  if (!from_run.empty()) autoencoder_run_ = resolve_run_folder(from_run, ae.source() + ": " + ae.path_of("from_run"));
  // the options are copied into the resolved config, so that the run rebuilds without the other run
  ae.get<nlohmann::json>("options", autoencoder_run_.empty() ? nlohmann::json::object() : autoencoder_options_of(autoencoder_run_));
  autoencoder = TinyAutoencoder(TinyAutoencoderOptions::from(ae.section("options")));
  text = TextEncoder(TextEncoderOptions::from(model.section("text")));
  UNetOptions uo = UNetOptions::from(model.section("unet"));
  const int64_t c = autoencoder->options().latent_channels;
  const int64_t want_in = image_conditioned ? 2 * c : c;
  if (uo.in_channels != want_in)
    model.section("unet").invalid("in_channels", "must be " + std::to_string(want_in) + " (" +
                                                     (image_conditioned ? "twice the autoencoder's latent channels: noisy latent and image latent" : "the autoencoder's latent channels") +
                                                     "), got " + std::to_string(uo.in_channels));
  if (uo.out_channels != c) model.section("unet").invalid("out_channels", "must equal the autoencoder's latent channels " + std::to_string(c));
  if (uo.cross_attention_dim != text->options().dim)
    model.section("unet").invalid("cross_attention_dim", "must equal the text encoder's dim " + std::to_string(text->options().dim));
  unet = UNet2DCondition(uo);
  latent_scale_ = model.get<double>("latent_scale", 1.0);
  unet->to(device);
  text->to(device);
  autoencoder->to(device);
  autoencoder->eval();
  for (auto& p : autoencoder->parameters()) p.set_requires_grad(false);
}

int64_t LatentDiffusion::downscale() const { return autoencoder->options().encoder_downsampling(); }

torch::Tensor LatentDiffusion::encode(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  return autoencoder->encode(images.to(device_));
}

torch::Tensor LatentDiffusion::decode(const torch::Tensor& latents) {
  torch::NoGradGuard no_grad;
  return autoencoder->decode(latents).clamp(-1, 1);
}

torch::Tensor LatentDiffusion::embed_text(const torch::Tensor& ids) { return text->forward(ids.to(device_)); }
torch::Tensor LatentDiffusion::embed_text(const std::vector<std::string>& texts) { return text->encode(texts); }
torch::Tensor LatentDiffusion::null_text(int64_t batch) { return text->encode(std::vector<std::string>(static_cast<size_t>(batch), "")); }

torch::Tensor LatentDiffusion::predict(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& context,
                                       const torch::Tensor& image_latent) {
  torch::Tensor input = image_latent.defined() ? torch::cat({x_t, image_latent}, 1) : x_t;
  return unet->forward(input, t, context);
}

torch::Tensor LatentDiffusion::start_noise(const std::vector<int64_t>& shape, uint64_t seed) const {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);  // CPU draws: the same noise on every device
  return at::randn(shape, gen, torch::kFloat32).to(device_);
}

torch::Tensor LatentDiffusion::generate(const std::vector<std::string>& prompts, int64_t image_size, const SamplerOptions& so,
                                        double guidance, uint64_t seed) {
  torch::NoGradGuard no_grad;
  unet->eval();
  text->eval();
  if (image_size % downscale() != 0)
    throw std::invalid_argument("image size " + std::to_string(image_size) + " is not a multiple of the autoencoder's " + std::to_string(downscale()));
  const int64_t b = static_cast<int64_t>(prompts.size()), h = image_size / downscale();
  torch::Tensor cond = embed_text(prompts), uncond = null_text(b);
  const bool guided = guidance != 1.0;
  torch::Tensor context = guided ? torch::cat({cond, uncond}) : cond;
  Sampler sampler(schedule, so);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
  Denoiser denoiser = [&](const torch::Tensor& x, int64_t t) {
    torch::Tensor xs = guided ? torch::cat({x, x}) : x;
    torch::Tensor out = predict(xs, torch::full({xs.size(0)}, t, torch::TensorOptions().dtype(torch::kLong).device(device_)), context);
    if (!guided) return out;
    auto halves = out.chunk(2);
    return classifier_free_guidance(halves[1], halves[0], guidance);
  };
  torch::Tensor z = sampler.sample(denoiser, start_noise({b, latent_channels(), h, h}, seed), gen);
  return decode(z / latent_scale_);
}

torch::Tensor LatentDiffusion::edit(const torch::Tensor& images, const std::vector<std::string>& instructions, const SamplerOptions& so,
                                    EditGuidance g, uint64_t seed) {
  torch::NoGradGuard no_grad;
  unet->eval();
  text->eval();
  const int64_t b = images.size(0);
  if (instructions.size() != 1 && static_cast<int64_t>(instructions.size()) != b)
    throw std::invalid_argument("edit: " + std::to_string(instructions.size()) + " instructions for " + std::to_string(b) + " images");
  if (images.size(2) % downscale() != 0 || images.size(3) % downscale() != 0)
    throw std::invalid_argument("edit: image size " + std::to_string(images.size(2)) + "x" + std::to_string(images.size(3)) +
                                " is not a multiple of the autoencoder's " + std::to_string(downscale()));
  torch::Tensor image_latent = encode(images);
  torch::Tensor cond = embed_text(instructions.size() == 1 ? std::vector<std::string>(static_cast<size_t>(b), instructions[0]) : instructions);
  torch::Tensor uncond = null_text(b);
  // batch order of the three passes: (c_I, c_T), (c_I, 0), (0, 0)
  torch::Tensor context = torch::cat({cond, uncond, uncond});
  torch::Tensor images3 = torch::cat({image_latent, image_latent, torch::zeros_like(image_latent)});
  Sampler sampler(schedule, so);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
  Denoiser denoiser = [&](const torch::Tensor& x, int64_t t) {
    torch::Tensor xs = torch::cat({x, x, x});
    torch::Tensor out = predict(xs, torch::full({xs.size(0)}, t, torch::TensorOptions().dtype(torch::kLong).device(device_)), context, images3);
    auto parts = out.chunk(3);
    return dual_guidance(parts[0], parts[1], parts[2], g.image, g.text);
  };
  // one noise image for the whole batch: frames of a video edited in any grouping share it
  std::vector<int64_t> shape = image_latent.sizes().vec();
  shape[0] = 1;
  torch::Tensor z = sampler.sample(denoiser, start_noise(shape, seed).expand(image_latent.sizes()).contiguous(), gen);
  return decode(z / latent_scale_);
}

torch::Tensor denoising_loss(const NoiseSchedule& schedule, const torch::Tensor& x0,
                             const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& predict,
                             std::optional<at::Generator> generator) {
  torch::Tensor t, eps;
  if (generator) {  // drawn on the CPU, so that a seed gives the same t and eps on every device
    t = at::randint(0, schedule.steps(), {x0.size(0)}, generator, torch::TensorOptions().dtype(torch::kLong)).to(x0.device());
    eps = at::randn(x0.sizes(), generator, torch::TensorOptions().dtype(x0.scalar_type())).to(x0.device());
  } else {
    t = torch::randint(0, schedule.steps(), {x0.size(0)}, torch::TensorOptions().dtype(torch::kLong).device(x0.device()));
    eps = torch::randn_like(x0);
  }
  torch::Tensor out = predict(schedule.add_noise(x0, eps, t), t);
  return torch::mse_loss(out.to(torch::kFloat32), schedule.target(x0, eps, t).to(torch::kFloat32));
}

}  // namespace ef
