// Recipe "style": fine-tune a trained text-to-image model (a `diffusion` run) to a style with
// adapters (LoRA or FouRA, lora/adapter.h), on a generated style set (lora/style_data.h). FouRA
// brief §3 (loss) and §5 (small-scale plan).
//
// The base model's UNet, text encoder and autoencoder are frozen networks from the run named by
// model.base (core/frozen.h: loaded, checksummed and recorded, never saved here). Adapters are
// injected by module-path patterns (adapter.targets over the UNet, adapter.text_targets over the
// text encoder, default none) and are the only trained weights: checkpoints hold
// `unet_adapter` (and `text_encoder_adapter`).
//
// Loss: the base's ε-prediction (denoising) loss on the styled images with their captions, the
// caption dropped with probability train.text_dropout (default 0.1) so that classifier-free
// guidance keeps working.
//
// FouRA's frozen-mask variant (b): with adapter.gate = "adaptive" and adapter.freeze_gate_at = N
// the gates are learned for N steps, then every FouRA adapter's mask is frozen to the mean gate it
// saw over the last adapter.gate_stats_steps steps (default 50), after which the adapters are
// linear maps again and merge into the weights.
//
// Evaluation (lora/style_eval.h): the held-out denoising loss; samples of held-out prompts of the
// training classes and of unseen classes, several seeds each, at every strength of eval.strengths,
// scored for style, prompt fidelity, diversity, copying and Fréchet distance; FouRA's effective rank
// per layer at several timesteps; the ΔW analyses of every adapted layer.
#include <spdlog/spdlog.h>

#include "core/data_gen.h"
#include "core/export_target.h"
#include "core/image_io.h"
#include "core/recipe.h"
#include "core/run.h"
#include "lora/foura.h"
#include "lora/inject.h"
#include "lora/text_to_image_base.h"
#include "lora/style_data.h"
#include "lora/style_eval.h"
#include "models/diffusion/latent_diffusion.h"

namespace ef::lora {
namespace {

namespace fs = std::filesystem;

class StyleRecipe : public Recipe, public HasLatentDiffusion {
 public:
  StyleRecipe(const Config& cfg, const RunContext& ctx) : ctx_(ctx) {
    Config m = cfg.section("model");
    base_ = resolve_run_folder(m.require<std::string>("base"), cfg.source() + ": model.base");
    Config base_cfg = text_to_image_base(base_, cfg.source() + ": model.base", "style");
    net_ = std::make_unique<LatentDiffusion>(base_cfg.section("model"), false, ctx.device);

    Config a = cfg.section("adapter");
    const auto targets = a.get<std::vector<std::string>>("targets", default_attention_targets());
    const auto text_targets = a.get<std::vector<std::string>>("text_targets", {});
    unet_adapter_ = inject(*net_->unet, targets, a);  // the kind reads its options from the same section
    if (!text_targets.empty()) text_adapter_ = inject(*net_->text, text_targets, a);
    std::vector<ParamGroup> groups = decay_groups(*unet_adapter_, "unet_adapter.");
    if (text_adapter_) for (auto& g : decay_groups(*text_adapter_, "text_encoder_adapter.")) groups.push_back(g);
    for (const auto& [name, module] : modules())
      for (const auto& p : module->parameters()) params_.push_back(p);
    optim_ = make_optimizer(cfg.section("optim"), groups, ctx.total_steps);

    Config data = cfg.section("data");
    const fs::path path = prepare_dataset(data, "styles");
    train_ = std::make_shared<StyleDataset>(path, "train");
    val_ = std::make_shared<StyleDataset>(path, "val");
    unseen_ = std::make_shared<StyleDataset>(path, "unseen");
    loader_ = std::make_unique<Loader>(train_, LoaderOptions::from(data, ctx.seed, 8));

    text_dropout_ = cfg.section("train").get<double>("text_dropout", 0.1);
    freeze_gate_at_ = a.get<int64_t>("freeze_gate_at", -1);
    gate_stats_steps_ = a.get<int64_t>("gate_stats_steps", 50);
    if (freeze_gate_at_ >= 0 && (a.get<std::string>("kind", "") != "foura" || a.get<std::string>("gate", "adaptive") != "adaptive"))
      a.invalid("freeze_gate_at", "only FouRA adapters with gate \"adaptive\" have a gate to freeze");
    if (gate_stats_steps_ < 1) a.invalid("gate_stats_steps", "at least 1 step");
    evaluator_ = std::make_unique<StyleEvaluator>(StyleEvalOptions::from(cfg.section("eval")), *net_, *train_, *val_, *unseen_, ctx.seed);

    double n = 0;
    for (const auto& p : params_) n += static_cast<double>(p.numel());
    spdlog::info("style: {} adapters ({}) on {} layers of the base {}, {:.1f} k trainable parameters; style {}, {} training images",
                 a.get<std::string>("kind", ""), unet_adapter_->layers().empty() ? "none" : unet_adapter_->layers().front().adapter->kind(),
                 unet_adapter_->layers().size() + (text_adapter_ ? text_adapter_->layers().size() : 0), base_.string(), n / 1e3,
                 train_->style(), train_->size());
  }

  LatentDiffusion& diffusion() override {
    refresh();
    return *net_;
  }
  std::map<std::string, torch::nn::Module*> modules() override {
    std::map<std::string, torch::nn::Module*> m = {{"unet_adapter", unet_adapter_.get()}};
    if (text_adapter_) m["text_encoder_adapter"] = text_adapter_.get();
    return m;
  }
  std::map<std::string, FrozenNetwork> frozen() override {
    return {{"unet", {net_->unet.get(), {base_, "unet", {}}}},
            {"text_encoder", {net_->text.get(), {base_, "text_encoder", {}}}},
            {"autoencoder", {net_->autoencoder.get(), {base_, "autoencoder", {}}}}};
  }
  std::map<std::string, ScheduledOptimizer*> optimizers() override { return {{"optim", optim_.get()}}; }
  std::vector<std::string> ema_modules() const override {
    std::vector<std::string> m = {"unet_adapter"};
    if (text_adapter_) m.push_back("text_encoder_adapter");
    return m;
  }

  Scalars train_step(int64_t step) override {
    if (step == freeze_gate_at_ - gate_stats_steps_ || (step == 0 && freeze_gate_at_ >= 0 && freeze_gate_at_ < gate_stats_steps_))
      for_each_foura([](FouraImpl& f) { f.reset_gate_stats(); });
    if (step == freeze_gate_at_) freeze_gates();
    set_mode(true);
    StepStats s = optimize_step(*optim_, params_, ctx_.grad_accum, ctx_.grad_clip, [&](int64_t) {
      refresh();
      return batch_loss(to_device(loader_->next(), ctx_.device), std::nullopt);
    });
    Scalars out = {{"loss", s.loss}, {"grad_norm", s.grad_norm}};
    if (double r = mean_effective_rank(); r >= 0) out["r_eff"] = r;
    return out;
  }

  Scalars evaluate() override {
    set_mode(false);
    refresh();
    Scalars out = {{"loss", heldout_loss()}};
    for (auto& [k, v] : evaluator_->evaluate(adapters())) out[k] = v;
    return out;
  }

  void write_samples(const fs::path& dir, int64_t step, MetricLogger& log) override {
    set_mode(false);
    refresh();
    evaluator_->write_samples(dir, step, log, adapters());
  }

  void save_state(torch::serialize::OutputArchive& a) const override {
    save_loader_position(a, *loader_);
    a.write("gates_frozen", torch::tensor(gates_frozen_));
  }
  void load_state(torch::serialize::InputArchive& a) override {
    load_loader_position(a, *loader_);
    // A run resumed (or evaluated) after its gates were frozen: the masks came back with the
    // checkpoint's buffers; the adapters must use them again rather than their adaptive gates.
    torch::Tensor frozen;
    if (a.try_read("gates_frozen", frozen) && frozen.item<bool>()) {
      for_each_foura([](FouraImpl& f) { f.use_gate_mask(); });
      gates_frozen_ = true;
    }
  }

 private:
  std::vector<Adapters> adapters() const {
    std::vector<Adapters> all = {unet_adapter_};
    if (text_adapter_) all.push_back(text_adapter_);
    return all;
  }
  void refresh() {
    for (auto& a : adapters()) a->refresh();
  }
  void set_mode(bool training) {
    for (auto& a : adapters()) a->train(training);
  }
  void for_each_foura(const std::function<void(FouraImpl&)>& fn) {
    for (auto& a : adapters())
      for (const auto& l : a->layers())
        if (auto* f = dynamic_cast<FouraImpl*>(l.adapter.get())) fn(*f);
  }
  void freeze_gates() {
    double before = 0, after = 0;
    int64_t n = 0;
    for_each_foura([&](FouraImpl& f) {
      before += static_cast<double>(f.options().rank);
      f.freeze_gate();
      after += f.gate_mask.sum().item<double>();
      ++n;
    });
    gates_frozen_ = true;
    spdlog::info("style: FouRA gates frozen at step {}: mean rank {:.2f} of {:.0f} kept", freeze_gate_at_, n ? after / n : 0.0, n ? before / n : 0.0);
  }
  // Mean r_eff over the FouRA layers of the last pass; -1 when there are none with an adaptive gate.
  double mean_effective_rank() {
    double sum = 0;
    int64_t n = 0;
    for_each_foura([&](FouraImpl& f) {
      if (f.options().gate == "adaptive") sum += f.effective_rank(), ++n;
    });
    return n ? sum / static_cast<double>(n) : -1.0;
  }

  torch::Tensor batch_loss(const Batch& b, std::optional<at::Generator> generator) {
    torch::Tensor z = net_->encode(b.at("image")) * net_->latent_scale();
    torch::Tensor ids = net_->text->tokenizer().encode_bytes(b.at("text")).to(ctx_.device);
    if (!generator && text_dropout_ > 0) {
      torch::Tensor keep = torch::rand({ids.size(0)}, torch::TensorOptions().device(ctx_.device)) >= text_dropout_;
      torch::Tensor null = net_->text->tokenizer().encode(std::vector<std::string>(static_cast<size_t>(ids.size(0)), "")).to(ctx_.device);
      ids = torch::where(keep.view({-1, 1}), ids, null);
    }
    torch::Tensor context = net_->embed_text(ids);
    return denoising_loss(net_->schedule, z, [&](const torch::Tensor& x, const torch::Tensor& t) { return net_->predict(x, t, context); }, generator);
  }

  // The held-out denoising loss at a fixed seed (the same t and ε at every evaluation).
  double heldout_loss() {
    torch::NoGradGuard no_grad;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(ctx_.seed + 12345);
    double total = 0;
    int64_t n = 0;
    for_each_batch(*val_, 0, 16, [&](const Batch& b) {
      const int64_t k = b.at("image").size(0);
      total += batch_loss(to_device(b, ctx_.device), gen).item<double>() * static_cast<double>(k);
      n += k;
    });
    return total / static_cast<double>(std::max<int64_t>(n, 1));
  }

  RunContext ctx_;
  fs::path base_;
  std::unique_ptr<LatentDiffusion> net_;
  Adapters unet_adapter_{nullptr}, text_adapter_{nullptr};
  std::vector<torch::Tensor> params_;
  std::unique_ptr<ScheduledOptimizer> optim_;
  std::shared_ptr<StyleDataset> train_, val_, unseen_;
  std::unique_ptr<Loader> loader_;
  std::unique_ptr<StyleEvaluator> evaluator_;
  double text_dropout_ = 0.1;
  int64_t freeze_gate_at_ = -1, gate_stats_steps_ = 50;
  bool gates_frozen_ = false;
};

EF_REGISTER(recipes(), "style", [](const Config& c, const RunContext& ctx) { return std::make_unique<StyleRecipe>(c, ctx); },
            "style fine-tuning of a text-to-image run with LoRA/FouRA adapters on a generated style set");

}  // namespace
}  // namespace ef::lora
