// Export targets of the latent-diffusion recipes:
//  - `autoencoder`: the tiny autoencoder's "decoder" (latent -> image) and "encoder" (image -> latent);
//  - `diffusion` and `edit`: the "unet" (x_t [+ the source image's latent when editing],
//    timestep, text embeddings -> the schedule's prediction), the "text_encoder" (token ids ->
//    hidden states) and the autoencoder's two halves.
// Metrics, on the run's own validation split:
//  - decoder: PSNR of decode(float encoder's latent) against the image;
//  - encoder: PSNR of the float decoder applied to the exported encoder's latent;
//  - unet: the denoising MSE against the schedule's target at fixed (seeded) t and noise;
//  - text_encoder: the hidden states' squared error relative to the float module's (0 for fp32).
// The timestep path (the sinusoids and the time MLP, a function of the timestep alone) is kept in
// float: 8-bit codes of t * frequency would scramble the high-frequency sinusoids.
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "core/data_gen.h"
#include "core/image_metrics.h"
#include "core/export_target.h"
#include "models/diffusion/latent_diffusion.h"
#include "tasks/caption_data.h"

namespace ef {
namespace {

class LatentDiffusionTarget : public ExportTarget {
 public:
  explicit LatentDiffusionTarget(OpenedRun& run) : recipe_(RunSettings::from(run.config).recipe) {
    if (recipe_ == "autoencoder") {
      ae_ = recipe_module<TinyAutoencoderImpl>(run, "autoencoder", "tiny autoencoder");
    } else {
      auto* has = dynamic_cast<HasLatentDiffusion*>(run.recipe.get());
      if (!has) throw std::runtime_error("export: the " + recipe_ + " recipe holds no latent diffusion model");
      ld_ = &has->diffusion();
      ae_ = ld_->autoencoder.get();
    }
    editing_ = recipe_ == "edit";
    path_ = prepare_dataset(run.config.section("data"), editing_ ? "edits" : "captions");
  }
  std::vector<std::string> models() const override {
    if (ld_) return {"unet", "text_encoder", "decoder", "encoder"};
    return {"decoder", "encoder"};
  }
  CaptureSpec spec(const std::string& model, int64_t batch) override {
    check(model);
    CaptureSpec s;
    if (model == "unet") {
      s.module = ld_->unet.get();
      s.forward = [this](const Inputs& x) { return ld_->unet->forward(x.at(0), x.at(1), x.at(2)); };
      s.input_names = {"sample", "timestep", "encoder_hidden_states"};
      s.unquantized_inputs = {"timestep"};
      s.output_name = "prediction";
    } else if (model == "text_encoder") {
      s.module = ld_->text.get();
      s.forward = [this](const Inputs& x) { return ld_->text->forward(x.at(0)); };
      s.input_names = {"input_ids"};
      s.output_name = "last_hidden_state";
    } else if (model == "decoder") {
      s.module = ae_;
      s.forward = [this](const Inputs& x) { return ae_->decode(x.at(0)); };
      s.input_names = {"latent"};
      s.output_name = "image";
    } else {
      s.module = ae_;
      s.forward = [this](const Inputs& x) { return ae_->encode(x.at(0)); };
      s.input_names = {"image"};
      s.output_name = "latent";
    }
    Heldout first = make(model, "val", batch, batch);
    if (first.inputs.empty()) throw InputError("export: the validation split of " + path_.string() + " holds fewer than " + std::to_string(batch) + " samples");
    s.examples = first.inputs.front();
    return s;
  }
  std::vector<Inputs> calibration(const std::string& model, int64_t n, int64_t batch) override { return make(model, "train", n, batch).inputs; }
  Heldout heldout(const std::string& model, int64_t n, int64_t batch) override { return make(model, "val", n, batch); }
  std::string metric_name(const std::string& model) const override {
    return model == "unet" ? "denoise_mse" : model == "text_encoder" ? "hidden_rel_mse" : "psnr";
  }
  bool higher_is_better(const std::string& model) const override { return model != "unet" && model != "text_encoder"; }
  double metric(const std::string& model, const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& targets) const override {
    torch::NoGradGuard ng;
    double sum = 0, count = 0;
    for (size_t i = 0; i < outputs.size(); ++i) {
      torch::Tensor out = outputs[i].view_as(model == "encoder" ? outputs[i] : targets[i]);
      if (model == "unet" || model == "text_encoder") {
        sum += (out - targets[i]).square().sum().item<double>();
        count += model == "unet" ? static_cast<double>(targets[i].numel()) : targets[i].square().sum().item<double>();
        continue;
      }
      torch::Tensor image = model == "encoder" ? ae_->decode(out) : out;
      const double b = static_cast<double>(targets[i].size(0));
      sum += psnr((image.clamp(-1, 1) + 1) / 2, (targets[i] + 1) / 2).item<double>() * b;
      count += b;
    }
    return count > 0 ? sum / count : 0.0;
  }

 private:
  void check(const std::string& model) const {
    auto m = models();
    if (std::find(m.begin(), m.end(), model) == m.end()) no_model(model);
  }

  // Inputs and targets of `model` from n samples of `split`. The UNet's t and noise come from a
  // generator seeded per split, so every export sees the same held-out problems.
  Heldout make(const std::string& model, const std::string& split, int64_t n, int64_t batch) {
    check(model);
    torch::NoGradGuard ng;
    std::unique_ptr<Dataset> data;
    if (editing_) data = std::make_unique<EditsDataset>(path_, split);
    else data = std::make_unique<CaptionsDataset>(path_, split);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(split == "val" ? 1234 : 4321);
    Heldout h;
    for_each_batch(*data, n, batch, [&](const Batch& b) {
      torch::Tensor image = b.at(editing_ ? "target" : "image");
      if (model == "decoder") {
        h.inputs.push_back({ae_->encode(image)});
        h.targets.push_back(image);
      } else if (model == "encoder") {
        h.inputs.push_back({image});
        h.targets.push_back(image);
      } else if (model == "text_encoder") {
        torch::Tensor ids = ld_->text->tokenizer().encode_bytes(b.at("text"));
        h.inputs.push_back({ids});
        h.targets.push_back(ld_->text->forward(ids));
      } else {
        torch::Tensor z0 = ld_->encode(image) * ld_->latent_scale();
        torch::Tensor eps = torch::randn(z0.sizes(), gen);
        torch::Tensor t = torch::randint(0, ld_->schedule.steps(), {z0.size(0)}, gen, torch::kLong);
        torch::Tensor x = ld_->schedule.add_noise(z0, eps, t);
        if (editing_) x = torch::cat({x, ld_->encode(b.at("source"))}, 1);
        torch::Tensor context = ld_->embed_text(ld_->text->tokenizer().encode_bytes(b.at("text")));
        h.inputs.push_back({x, t.to(torch::kFloat), context});
        h.targets.push_back(ld_->schedule.target(z0, eps, t));
      }
    });
    return h;
  }

  std::string recipe_;
  LatentDiffusion* ld_ = nullptr;
  TinyAutoencoderImpl* ae_ = nullptr;
  bool editing_ = false;
  std::filesystem::path path_;
};

std::unique_ptr<ExportTarget> make_target(OpenedRun& run) { return std::make_unique<LatentDiffusionTarget>(run); }

}  // namespace

EF_REGISTER(export_targets(), "autoencoder", make_target, "the tiny autoencoder: decoder and encoder, PSNR");
EF_REGISTER(export_targets(), "diffusion", make_target, "the UNet (denoising MSE) and the autoencoder's halves (PSNR)");
EF_REGISTER(export_targets(), "edit", make_target, "the editing UNet (denoising MSE) and the autoencoder's halves (PSNR)");

}  // namespace ef
