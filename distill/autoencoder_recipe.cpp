// Recipe "autoencoder": trains the tiny autoencoder (TAESD layout) on generated captioned images.
// Loss: MSE(decode(encode(x)), x) + loss.latent_weight * mean(z^2). TAESD itself is trained to match
// the SD-VAE's latents, which we do not have: the small L2 term on the latents stands in for the
// VAE's KL term and keeps them in the range the decoder's 3 tanh(z/3) clamp expects. eval reports
// the latents' standard deviation: set a diffusion model's `latent_scale` to its inverse.
// Metrics: eval/psnr, eval/ssim, eval/loss, eval/latent_std; samples: originals above reconstructions.
#include <spdlog/spdlog.h>

#include "core/data_gen.h"
#include "core/image_io.h"
#include "core/image_metrics.h"
#include "core/recipe.h"
#include "models/autoencoder/taesd.h"
#include "tasks/caption_data.h"

namespace ef {
namespace {

namespace fs = std::filesystem;

class AutoencoderRecipe : public Recipe {
 public:
  AutoencoderRecipe(const Config& cfg, const RunContext& ctx) : ctx_(ctx) {
    Config data = cfg.section("data");
    const fs::path path = prepare_dataset(data, "captions");
    auto train = std::make_shared<CaptionsDataset>(path, "train");
    val_ = std::make_shared<CaptionsDataset>(path, "val");
    loader_ = std::make_unique<Loader>(train, LoaderOptions::from(data, ctx.seed, 32));
    model_ = TinyAutoencoder(TinyAutoencoderOptions::from(cfg.section("model")));
    model_->to(ctx.device);
    latent_weight_ = cfg.section("loss").get<double>("latent_weight", 1e-4);
    Config ev = cfg.section("eval");
    eval_images_ = ev.get_at_least<int64_t>("images", 256, 1);
    n_samples_ = ev.get_at_least<int64_t>("samples", 8, 0);
    for (const auto& p : model_->parameters()) params_.push_back(p);
    optim_ = make_optimizer(cfg.section("optim"), decay_groups(*model_), ctx.total_steps);
    double n = 0;
    for (const auto& p : params_) n += static_cast<double>(p.numel());
    spdlog::info("autoencoder: {:.2f} M parameters, {} train / {} val images", n / 1e6, train->size(), val_->size());
  }

  std::map<std::string, torch::nn::Module*> modules() override { return {{"autoencoder", model_.get()}}; }
  std::map<std::string, ScheduledOptimizer*> optimizers() override { return {{"optim", optim_.get()}}; }
  std::vector<std::string> ema_modules() const override { return {"autoencoder"}; }

  Scalars train_step(int64_t) override {
    model_->train();
    StepStats s = optimize_step(*optim_, params_, ctx_.grad_accum, ctx_.grad_clip, [&](int64_t) {
      torch::Tensor x = loader_->next().at("image").to(ctx_.device);
      torch::Tensor z = model_->encode(x);
      return torch::mse_loss(model_->decode(z), x) + latent_weight_ * z.pow(2).mean();
    });
    return {{"loss", s.loss}, {"grad_norm", s.grad_norm}};
  }

  Scalars evaluate() override {
    torch::NoGradGuard no_grad;
    model_->eval();
    const int64_t n = std::min(eval_images_, val_->size());
    double loss = 0, psnr_sum = 0, ssim_sum = 0, z2 = 0, zn = 0;
    for (int64_t begin = 0; begin < n; begin += 64) {
      std::vector<Sample> samples;
      for (int64_t i = begin; i < std::min(n, begin + 64); ++i) samples.push_back(val_->get(i));
      torch::Tensor x = collate(samples).at("image").to(ctx_.device);
      torch::Tensor z = model_->encode(x), y = model_->decode(z).clamp(-1, 1);
      const double k = static_cast<double>(x.size(0));
      loss += torch::mse_loss(y, x).item<double>() * k;
      psnr_sum += psnr((y + 1) / 2, (x + 1) / 2).item<double>() * k;
      ssim_sum += ssim((y + 1) / 2, (x + 1) / 2).item<double>() * k;
      z2 += z.pow(2).sum().item<double>();
      zn += static_cast<double>(z.numel());
    }
    const double m = static_cast<double>(n);
    return {{"loss", loss / m}, {"psnr", psnr_sum / m}, {"ssim", ssim_sum / m}, {"latent_std", std::sqrt(z2 / zn)}};
  }

  void write_samples(const fs::path& dir, int64_t step, MetricLogger& log) override {
    torch::NoGradGuard no_grad;
    model_->eval();
    const int64_t k = std::min(n_samples_, val_->size());
    if (k == 0) return;
    std::vector<Sample> samples;
    for (int64_t i = 0; i < k; ++i) samples.push_back(val_->get(i));
    torch::Tensor x = collate(samples).at("image").to(ctx_.device);
    torch::Tensor y = model_->decode(model_->encode(x)).clamp(-1, 1);
    torch::Tensor grid = make_grid((torch::cat({x, y}).to(torch::kCPU) + 1) / 2, k);
    fs::create_directories(dir);
    write_png(dir / ("reconstructions_step_" + std::to_string(step) + ".png"), to_uint8_hwc(grid));
    log.image("samples/reconstructions", step, grid);
  }

  void save_state(torch::serialize::OutputArchive& a) const override { save_loader_position(a, *loader_); }
  void load_state(torch::serialize::InputArchive& a) override { load_loader_position(a, *loader_); }

 private:
  RunContext ctx_;
  std::shared_ptr<CaptionsDataset> val_;
  std::unique_ptr<Loader> loader_;
  TinyAutoencoder model_{nullptr};
  std::unique_ptr<ScheduledOptimizer> optim_;
  std::vector<torch::Tensor> params_;
  double latent_weight_ = 1e-4;
  int64_t eval_images_ = 256, n_samples_ = 8;
};

EF_REGISTER(recipes(), "autoencoder",
            [](const Config& c, const RunContext& ctx) { return std::make_unique<AutoencoderRecipe>(c, ctx); },
            "the tiny autoencoder (TAESD layout) on generated captioned images");

}  // namespace
}  // namespace ef
