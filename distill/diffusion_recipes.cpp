// Recipes "diffusion" (text-to-image in the tiny autoencoder's latent space, on generated captioned
// images) and "edit" (InstructPix2Pix: input image + instruction -> edited image, on generated edit
// triplets). Both train the UNet and the text encoder together with the schedule's denoising loss;
// the autoencoder is a frozen network (Recipe::frozen(), never saved in this run's checkpoints) and
// comes from an `autoencoder` run (model.autoencoder.from_run), a weight file
// (model.weights.autoencoder), or the run an edit model starts from (model.init_from).
//
// Conditioning dropout, so that sampling can use classifier-free guidance:
//   diffusion: the caption is replaced by "" with probability train.text_dropout (default 0.1);
//   edit: per sample u ~ U[0,1) and p = train.cond_dropout (default 0.05, InstructPix2Pix):
//         u < p drops the text, p <= u < 2p drops text and image, 2p <= u < 3p drops the image
//         (a dropped image is an all-zero latent, a dropped text the embedding of "").
// model.weights.{unet, text_encoder}: safetensors files to start from, model.weights.autoencoder: the frozen
// autoencoder's file (diffusers' files of the same configuration load as they are); each run writes
// the diffusers configs of its UNet and autoencoder.
// An edit run may start from a diffusion run (model.init_from): its UNet, with conv_in widened to
// the image latent's channels (new weights zero), its text encoder and its autoencoder.
//
// Evaluation: the denoising loss on held-out data at a fixed seed; generated samples (diffusion) or
// edits of held-out inputs (edit) with eval.sampler, scored by PSNR/SSIM to the known targets (edit)
// and, when eval.attribute_classifier names a `classify` run, by its attribute accuracy.
#include <spdlog/spdlog.h>

#include "core/atomic_file.h"
#include "core/data_gen.h"
#include "core/image_io.h"
#include "core/image_metrics.h"
#include "core/recipe.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "models/diffusion/latent_diffusion.h"
#include "tasks/attribute_classifier.h"
#include "tasks/caption_data.h"

namespace ef {
namespace {

namespace fs = std::filesystem;

class DiffusionRecipeBase : public Recipe, public HasLatentDiffusion {
 public:
  DiffusionRecipeBase(const Config& cfg, const RunContext& ctx, bool image_conditioned) : ctx_(ctx) {
    Config m = cfg.section("model");
    net_ = std::make_unique<LatentDiffusion>(m, image_conditioned, ctx.device);
    const bool resuming = fs::exists(ctx.run_dir / "ckpt" / "latest");  // the checkpoint brings the trained weights
    const std::string init_from = image_conditioned ? m.get<std::string>("init_from", "") : "";
    // Weights from files: diffusers' safetensors (diffusion_pytorch_model.safetensors of a UNet2DConditionModel
    // or AutoencoderTiny of the same configuration) load as they are, since the names and shapes match.
    Config files = m.section("weights");
    const std::string autoencoder_file = files.get<std::string>("autoencoder", "");
    if (!init_from.empty()) autoencoder_source_ = {resolve_run_folder(init_from, cfg.source() + ": model.init_from"), "autoencoder", {}};
    else if (!net_->autoencoder_run().empty()) autoencoder_source_ = {net_->autoencoder_run(), "autoencoder", {}};
    else if (!autoencoder_file.empty()) autoencoder_source_.file = autoencoder_file;
    else
      throw ConfigError(cfg.source() + ": model.autoencoder.from_run: name the `autoencoder` run whose latent space to use " +
                        "(train one first: edgeforge train configs/autoencoder-quick.json)");
    if (!resuming && !init_from.empty()) start_from(autoencoder_source_.run);
    for (const auto& [name, module] : modules()) {
      const std::string file = files.get<std::string>(name, "");
      if (!file.empty() && !resuming) load_module_state(*module, load_safetensors(file), file);
    }
    // The diffusers configs of this run's networks: with a checkpoint's unet.safetensors and
    // autoencoder.safetensors they make UNet2DConditionModel and AutoencoderTiny in Python.
    if (!ctx.run_dir.empty()) {
      write_file_if_changed(ctx.run_dir / "diffusers_unet_config.json", net_->unet->options().diffusers_config().dump(2));
      write_file_if_changed(ctx.run_dir / "diffusers_autoencoder_config.json", net_->autoencoder->options().diffusers_config().dump(2));
    }
    for (const auto& p : net_->unet->parameters()) params_.push_back(p);
    for (const auto& p : net_->text->parameters()) params_.push_back(p);
    std::vector<ParamGroup> groups = decay_groups(*net_->unet, "unet.");
    for (auto& g : decay_groups(*net_->text, "text.")) groups.push_back(g);
    optim_ = make_optimizer(cfg.section("optim"), groups, ctx.total_steps);

    Config ev = cfg.section("eval");
    eval_images_ = ev.get_at_least<int64_t>("images", 64, 1);
    eval_sampler_ = SamplerOptions::from(ev.section("sampler"));
    const std::string classifier = ev.get<std::string>("attribute_classifier", "");
    if (!classifier.empty())
      classifier_ = std::make_unique<AttributeClassifier>(
          AttributeClassifier::load(resolve_run_folder(classifier, cfg.source() + ": eval.attribute_classifier"), ctx.device));
    double n = 0;
    for (const auto& p : net_->unet->parameters()) n += static_cast<double>(p.numel());
    spdlog::info("{}: UNet {:.2f} M parameters, latent {}x/{} channels, schedule {} ({} prediction)", image_conditioned ? "edit" : "diffusion",
                 n / 1e6, net_->downscale(), net_->latent_channels(), net_->schedule.kind(), prediction_name(net_->schedule.prediction()));
  }

  LatentDiffusion& diffusion() override { return *net_; }
  std::map<std::string, torch::nn::Module*> modules() override { return {{"unet", net_->unet.get()}, {"text_encoder", net_->text.get()}}; }
  std::map<std::string, FrozenNetwork> frozen() override { return {{"autoencoder", {net_->autoencoder.get(), autoencoder_source_}}}; }
  std::map<std::string, ScheduledOptimizer*> optimizers() override { return {{"optim", optim_.get()}}; }
  std::vector<std::string> ema_modules() const override { return {"unet", "text_encoder"}; }

  Scalars train_step(int64_t) override {
    net_->unet->train();
    net_->text->train();
    StepStats s = optimize_step(*optim_, params_, ctx_.grad_accum, ctx_.grad_clip, [&](int64_t) {
      return batch_loss(to_device(loader_->next(), ctx_.device), std::nullopt);
    });
    return {{"loss", s.loss}, {"grad_norm", s.grad_norm}};
  }

  void save_state(torch::serialize::OutputArchive& a) const override { save_loader_position(a, *loader_); }
  void load_state(torch::serialize::InputArchive& a) override { load_loader_position(a, *loader_); }

 protected:
  // The denoising loss of one batch; with `generator` (evaluation) no conditioning is dropped.
  virtual torch::Tensor batch_loss(const Batch& b, std::optional<at::Generator> generator) = 0;

  torch::Tensor text_ids(const Batch& b) const { return net_->text->tokenizer().encode_bytes(b.at("text")).to(ctx_.device); }
  // U[0,1) per sample, from the global generator (part of the run's RNG state).
  torch::Tensor uniform(int64_t n) const { return torch::rand({n}, torch::TensorOptions().device(ctx_.device)); }
  torch::Tensor null_ids(int64_t n) const {
    return net_->text->tokenizer().encode(std::vector<std::string>(static_cast<size_t>(n), "")).to(ctx_.device);
  }
  static torch::Tensor select_rows(const torch::Tensor& keep, const torch::Tensor& a, const torch::Tensor& b) {
    std::vector<int64_t> shape(static_cast<size_t>(a.dim()), 1);
    shape[0] = a.size(0);
    return torch::where(keep.view(shape), a, b);
  }

  // A sample grid as <name>_step_<step>.png, the texts it shows as .json beside it, and in TensorBoard.
  static void write_sample_grid(const fs::path& dir, const std::string& name, int64_t step, const torch::Tensor& grid,
                                const std::vector<std::string>& texts, MetricLogger& log, const std::string& tag) {
    fs::create_directories(dir);
    const std::string stem = name + "_step_" + std::to_string(step);
    write_png(dir / (stem + ".png"), to_uint8_hwc(grid));
    write_file_atomically(dir / (stem + ".json"), nlohmann::json(texts).dump(1));
    log.image(tag, step, grid);
  }

  // The held-out denoising loss at a fixed seed (the same t and eps at every evaluation).
  double heldout_loss(const Dataset& val) {
    torch::NoGradGuard no_grad;
    net_->unet->eval();
    net_->text->eval();
    auto gen = at::make_generator<at::CPUGeneratorImpl>(ctx_.seed + 12345);
    const int64_t n = std::min(eval_images_, val.size());
    double total = 0;
    for (int64_t begin = 0; begin < n; begin += 32) {
      std::vector<Sample> samples;
      for (int64_t i = begin; i < std::min(n, begin + 32); ++i) samples.push_back(val.get(i));
      total += batch_loss(to_device(collate(samples), ctx_.device), gen).item<double>() * static_cast<double>(samples.size());
    }
    return total / static_cast<double>(std::max<int64_t>(n, 1));
  }

  RunContext ctx_;
  std::unique_ptr<LatentDiffusion> net_;
  std::unique_ptr<Loader> loader_;
  std::unique_ptr<ScheduledOptimizer> optim_;
  std::vector<torch::Tensor> params_;
  int64_t eval_images_ = 64;
  SamplerOptions eval_sampler_;
  std::unique_ptr<AttributeClassifier> classifier_;
  FrozenSource autoencoder_source_;

 private:
  // InstructPix2Pix initialisation from a text-to-image run (its autoencoder comes as a frozen network).
  void start_from(const fs::path& run) {
    UNetOptions narrow = net_->unet->options();
    narrow.in_channels = net_->latent_channels();
    UNet2DCondition source(narrow);
    load_module_from_run(run, "unet", *source);
    source->widen_input(net_->unet->options().in_channels);
    load_module_state(*net_->unet, module_state(*source), run.string() + " (unet, conv_in widened)");
    load_module_from_run(run, "text_encoder", *net_->text);
    spdlog::info("edit: starting from {}: UNet conv_in widened {} -> {} channels", run.string(), narrow.in_channels, net_->unet->options().in_channels);
  }
};

class TextToImageRecipe : public DiffusionRecipeBase {
 public:
  TextToImageRecipe(const Config& cfg, const RunContext& ctx) : DiffusionRecipeBase(cfg, ctx, false) {
    Config data = cfg.section("data");
    const fs::path path = prepare_dataset(data, "captions");
    auto train = std::make_shared<CaptionsDataset>(path, "train");
    val_ = std::make_shared<CaptionsDataset>(path, "val");
    loader_ = std::make_unique<Loader>(train, LoaderOptions::from(data, ctx.seed, 32));
    text_dropout_ = cfg.section("train").get<double>("text_dropout", 0.1);
    Config ev = cfg.section("eval");
    guidance_ = ev.get<double>("guidance", 3.0);
    n_samples_ = ev.get_at_least<int64_t>("samples", 8, 0);
    image_size_ = train->image_size();
  }

  Scalars evaluate() override {
    Scalars out = {{"loss", heldout_loss(*val_)}};
    if (classifier_) {  // generate the held-out captions and ask the classifier for the attribute they name
      const int64_t n = std::min(eval_images_, val_->size());
      double correct = 0;
      for (int64_t begin = 0; begin < n; begin += 16) {
        std::vector<std::string> prompts;
        std::vector<int64_t> labels;
        for (int64_t i = begin; i < std::min(n, begin + 16); ++i) {
          prompts.push_back(val_->text_at(i));
          labels.push_back(val_->get(i).at("attr_" + classifier_->attribute()).item<int64_t>());
        }
        torch::Tensor images = net_->generate(prompts, image_size_, eval_sampler_, guidance_, ctx_.seed + static_cast<uint64_t>(begin));
        correct += (classifier_->predict(images).to(torch::kCPU) == torch::tensor(labels)).sum().item<double>();
      }
      out["attr_acc"] = correct / static_cast<double>(std::max<int64_t>(n, 1));
    }
    return out;
  }

  void write_samples(const fs::path& dir, int64_t step, MetricLogger& log) override {
    const int64_t k = std::min(n_samples_, val_->size());
    if (k == 0) return;
    std::vector<std::string> prompts;
    for (int64_t i = 0; i < k; ++i) prompts.push_back(val_->text_at(i));
    torch::Tensor images = net_->generate(prompts, image_size_, eval_sampler_, guidance_, ctx_.seed);
    torch::Tensor grid = make_grid((images.to(torch::kCPU) + 1) / 2, std::min<int64_t>(k, 8));
    write_sample_grid(dir, "samples", step, grid, prompts, log, "samples/text_to_image");
  }

 protected:
  torch::Tensor batch_loss(const Batch& b, std::optional<at::Generator> generator) override {
    torch::Tensor z = net_->encode(b.at("image")) * net_->latent_scale();
    torch::Tensor ids = text_ids(b);
    if (!generator && text_dropout_ > 0) ids = select_rows(uniform(ids.size(0)) >= text_dropout_, ids, null_ids(ids.size(0)));
    torch::Tensor context = net_->embed_text(ids);
    return denoising_loss(net_->schedule, z, [&](const torch::Tensor& x, const torch::Tensor& t) { return net_->predict(x, t, context); }, generator);
  }

 private:
  std::shared_ptr<CaptionsDataset> val_;
  double text_dropout_ = 0.1, guidance_ = 3.0;
  int64_t n_samples_ = 8, image_size_ = 32;
};

class EditRecipe : public DiffusionRecipeBase {
 public:
  EditRecipe(const Config& cfg, const RunContext& ctx) : DiffusionRecipeBase(cfg, ctx, true) {
    Config data = cfg.section("data");
    const fs::path path = prepare_dataset(data, "edits");
    auto train = std::make_shared<EditsDataset>(path, "train");
    val_ = std::make_shared<EditsDataset>(path, "val");
    loader_ = std::make_unique<Loader>(train, LoaderOptions::from(data, ctx.seed, 32));
    cond_dropout_ = cfg.section("train").get<double>("cond_dropout", 0.05);
    if (cond_dropout_ < 0 || cond_dropout_ > 1.0 / 3) cfg.section("train").invalid("cond_dropout", "must lie in [0, 1/3]");
    Config ev = cfg.section("eval");
    guidance_.image = ev.get<double>("image_guidance", guidance_.image);
    guidance_.text = ev.get<double>("text_guidance", guidance_.text);
    n_samples_ = ev.get_at_least<int64_t>("samples", 8, 0);
  }

  Scalars evaluate() override {
    Scalars out = {{"loss", heldout_loss(*val_)}};
    const int64_t n = std::min(eval_images_, val_->size());
    double psnr_sum = 0, ssim_sum = 0, correct = 0;
    for (int64_t begin = 0; begin < n; begin += 16) {
      std::vector<Sample> samples;
      std::vector<std::string> instructions;
      for (int64_t i = begin; i < std::min(n, begin + 16); ++i) {
        samples.push_back(val_->get(i));
        instructions.push_back(val_->text_at(i));
      }
      Batch b = collate(samples);
      torch::Tensor edited = net_->edit(b.at("source").to(ctx_.device), instructions, eval_sampler_, guidance_, ctx_.seed + static_cast<uint64_t>(begin));
      torch::Tensor target = b.at("target").to(ctx_.device);
      const double k = static_cast<double>(samples.size());
      psnr_sum += psnr((edited + 1) / 2, (target + 1) / 2).item<double>() * k;
      ssim_sum += ssim((edited + 1) / 2, (target + 1) / 2).item<double>() * k;
      if (classifier_)
        correct += (classifier_->predict(edited).to(torch::kCPU) == b.at("attr_" + classifier_->attribute())).sum().item<double>();
    }
    const double m = static_cast<double>(std::max<int64_t>(n, 1));
    out["psnr"] = psnr_sum / m;
    out["ssim"] = ssim_sum / m;
    if (classifier_) out["attr_acc"] = correct / m;
    return out;
  }

  void write_samples(const fs::path& dir, int64_t step, MetricLogger& log) override {
    const int64_t k = std::min(n_samples_, val_->size());
    if (k == 0) return;
    std::vector<Sample> samples;
    std::vector<std::string> instructions;
    for (int64_t i = 0; i < k; ++i) {
      samples.push_back(val_->get(i));
      instructions.push_back(val_->text_at(i));
    }
    Batch b = collate(samples);
    torch::Tensor edited = net_->edit(b.at("source").to(ctx_.device), instructions, eval_sampler_, guidance_, ctx_.seed).to(torch::kCPU);
    // rows: inputs, edits, targets
    torch::Tensor grid = make_grid((torch::cat({b.at("source"), edited, b.at("target")}) + 1) / 2, k);
    write_sample_grid(dir, "edits", step, grid, instructions, log, "samples/edits");
  }

 protected:
  torch::Tensor batch_loss(const Batch& b, std::optional<at::Generator> generator) override {
    torch::Tensor z = net_->encode(b.at("target")) * net_->latent_scale();
    torch::Tensor image_latent = net_->encode(b.at("source"));  // unscaled, as InstructPix2Pix conditions
    torch::Tensor ids = text_ids(b);
    if (!generator && cond_dropout_ > 0) {
      torch::Tensor u = uniform(ids.size(0));
      // u < p: drop text only; p <= u < 2p: drop both; 2p <= u < 3p: drop image only
      torch::Tensor keep_text = u >= 2 * cond_dropout_, keep_image = (u < cond_dropout_) | (u >= 3 * cond_dropout_);
      ids = select_rows(keep_text, ids, null_ids(ids.size(0)));
      image_latent = select_rows(keep_image, image_latent, torch::zeros_like(image_latent));
    }
    torch::Tensor context = net_->embed_text(ids);
    return denoising_loss(net_->schedule, z, [&](const torch::Tensor& x, const torch::Tensor& t) { return net_->predict(x, t, context, image_latent); },
                          generator);
  }

 private:
  std::shared_ptr<EditsDataset> val_;
  double cond_dropout_ = 0.05;
  EditGuidance guidance_;
  int64_t n_samples_ = 8;
};

EF_REGISTER(recipes(), "diffusion",
            [](const Config& c, const RunContext& ctx) { return std::make_unique<TextToImageRecipe>(c, ctx); },
            "text-to-image latent diffusion (UNet + text encoder, frozen tiny autoencoder) on generated captions");
EF_REGISTER(recipes(), "edit",
            [](const Config& c, const RunContext& ctx) { return std::make_unique<EditRecipe>(c, ctx); },
            "InstructPix2Pix editing (image + instruction -> image) on generated edit triplets");

}  // namespace
}  // namespace ef
