// Recipe "personalize": DreamBooth-style subject-driven fine-tuning of a trained text-to-image model
// (a `diffusion` run, model.base) on a few images of a new subject bound to a new token
// (lora/subject_data.h), by one of three methods, chosen by the config's blocks:
//   no `adapter` block            full fine-tuning: the whole UNet trains (checkpoints: `unet`);
//   `adapter`                     LoRA (or any adapter kind) on the full UNet (`unet_adapter`);
//   `adapter` + `hollow`          Hollowed Net (hollowed-net brief §2): the adapters train on the UNet
//                                 without its deepest units, fed from a cache of the boundary the
//                                 full frozen UNet computed beforehand (`unet_adapter`, the same names).
// The text encoder and autoencoder are frozen networks of the base run in every method.
//
// Every method trains on the same TrainingSchedule (lora/hollow_cache.h): the images, timesteps,
// noise and dropped captions of each step are drawn from the seed before training, so runs of the
// three methods at one seed see identical inputs. Loss: the base's prediction target (ε) on the
// subject's images with their token captions (brief §3); captions are dropped with probability
// train.text_dropout (default 0) for classifier-free guidance. Prior preservation (train.prior_weight
// λ > 0, default off): each step also takes as many class scenes with their own captions, on a second
// schedule, and adds λ times their loss.
//
// Hollowed Net, step by step (brief §2.3):
//   1. pre-compute (the first training step, when hollow.cache does not exist yet): the full UNet is
//      built, loaded from the base run and checked against the retained weights the run holds; its
//      boundary for every row of the schedule is written to the cache; the full UNet is released;
//   2. fine-tune: each step reads its rows from the cache; the retained encoder runs live on x_t; the
//      retained decoder takes the cached h_in and cached skips and the live ones;
//   3. transfer: evaluation, sampling and export build the full UNet again and attach the trained
//      adapters to its same-named layers (key for key: the hollowed UNet keeps the full names).
// A cache is reused only for exactly its inputs: its identity (schedule, images, weights, plan)
// must match the run's, else the run stops with exit code 2 naming what differs.
//
// Options: hollow.units (m: the mid block and m innermost units per side) or hollow.fraction (the m
// whose parameter fraction is nearest), hollow.cache (default <run>/hollow_cache.h5).
// Evaluation (lora/personalize_eval.h) always runs the full UNet; it also reports the trained
// parameter count and, for Hollowed Net, the fractions of parameters and units left out. With adapters on the full UNet
// (LoRA) it also prints the layer-significance analysis (mean |ΔW| per unit, brief §2.1); with
// Hollowed Net it measures the stale cache: how far the boundary the trained adapters produce in the
// full UNet drifts from the cached one (stale_h_in: relative L2 on the first cached step) and the
// loss the full UNet reaches on the cached rows against the hollowed network's (stale_loss_gap).
#include <spdlog/spdlog.h>

#include <chrono>

#include "core/data_gen.h"
#include "core/recipe.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "lora/hollow.h"
#include "lora/hollow_cache.h"
#include "lora/inject.h"
#include "lora/text_to_image_base.h"
#include "lora/personalize_eval.h"
#include "lora/subject_data.h"
#include "models/diffusion/latent_diffusion.h"

namespace ef::lora {
namespace {

namespace fs = std::filesystem;

class PersonalizeRecipe : public Recipe, public HasLatentDiffusion {
 public:
  PersonalizeRecipe(const Config& cfg, const RunContext& ctx) : ctx_(ctx) {
    Config m = cfg.section("model");
    base_ = resolve_run_folder(m.require<std::string>("base"), cfg.source() + ": model.base");
    const Config base_cfg = text_to_image_base(base_, cfg.source() + ": model.base", "personalize");
    net_ = std::make_unique<LatentDiffusion>(base_cfg.section("model"), false, ctx.device);
    unet_options_ = net_->unet->options();

    Config data = cfg.section("data");
    if (data.has("images")) {
      if (!data.has("prompt")) data.invalid("prompt", "a folder of subject images needs the prompt that names the subject (\"one large sks circle\")");
      train_ = std::make_unique<SubjectDataset>(SubjectDataset::from_folder(data.require<std::string>("images"), data.require<std::string>("prompt"),
                                                                           data.get<int64_t>("image_size", 32)));
    } else {
      const fs::path path = prepare_dataset(data, "subjects");
      train_ = std::make_unique<SubjectDataset>(path, "train");
      val_ = std::make_unique<SubjectDataset>(path, "val");
      class_ = std::make_unique<SubjectDataset>(path, "class");
    }
    const int64_t batch = data.get<int64_t>("batch_size", 4);
    if (batch < 1) data.invalid("batch_size", "at least 1");
    Config train = cfg.section("train");
    const double text_dropout = train.get<double>("text_dropout", 0.0);
    prior_weight_ = train.get<double>("prior_weight", 0.0);
    if (!(prior_weight_ >= 0)) train.invalid("prior_weight", "must be 0 (off) or positive");
    if (prior_weight_ > 0 && !class_)
      train.invalid("prior_weight", "prior preservation needs class images: use a generated subject (data.generate), whose class split has them");
    const int64_t latent = train_->image_size() / net_->downscale();
    const std::vector<int64_t> latent_shape = {net_->latent_channels(), latent, latent};
    const int64_t steps = std::max<int64_t>(ctx.total_steps, 1);
    const uint64_t seed = ctx.seed * 0x9E3779B97F4A7C15ull + 1;
    schedule_ = TrainingSchedule::make(steps, batch, train_->size(), latent_shape, net_->schedule.steps(), text_dropout, seed);
    if (prior_weight_ > 0)
      prior_schedule_ = TrainingSchedule::make(steps, batch, class_->size(), latent_shape, net_->schedule.steps(), text_dropout, seed + 1);
    add_prompts(*train_, prompt_of_);
    if (prior_weight_ > 0) add_prompts(*class_, class_prompt_of_);

    std::vector<ParamGroup> groups;
    if (cfg.has("adapter")) {
      Config a = cfg.section("adapter");
      const auto patterns = a.get<std::vector<std::string>>("targets", default_attention_targets());
      if (cfg.has("hollow")) {
        Config h = cfg.section("hollow");
        try {
          if (h.has("units") == h.has("fraction")) h.invalid("units", "give either hollow.units or hollow.fraction");
          plan_.emplace(h.has("units") ? HollowPlan(unet_options_, h.require<int64_t>("units"))
                                       : HollowPlan::for_fraction(unet_options_, h.require<double>("fraction")));
        } catch (const std::invalid_argument& e) {
          h.invalid(h.has("units") ? "units" : "fraction", e.what());
        }
        cache_path_ = h.get<std::string>("cache", (ctx.run_dir / "hollow_cache.h5").string());
        hollow_ = HollowedUNet(*plan_);
        hollow_->to(ctx.device);
        net_->unet = UNet2DCondition(nullptr);  // the full UNet is built only to pre-compute and evaluate
        const auto targets = hollow_->adaptable_layers(patterns);
        if (targets.empty()) a.invalid("targets", "no retained layer of the hollowed UNet matches (" + plan_->describe() + ")");
        adapters_ = inject(*hollow_, targets, a);
        hollow_->eval();
        spdlog::info("personalize: Hollowed Net, {}", plan_->describe());
      } else {
        adapters_ = inject(*net_->unet, patterns, a);
        net_->unet->eval();
      }
      adapter_config_ = a;
      groups = decay_groups(*adapters_, "unet_adapter.");
    } else {
      if (cfg.has("hollow")) cfg.section("hollow").invalid("units", "Hollowed Net trains adapters: add an adapter block");
      load_module_from_run(base_, "unet", *net_->unet);  // a resumed run then loads its checkpoint over it
      groups = decay_groups(*net_->unet, "unet.");
    }
    for (const auto& [name, module] : modules())
      for (const auto& p : module->parameters())
        if (p.requires_grad()) params_.push_back(p);
    optim_ = make_optimizer(cfg.section("optim"), groups, ctx.total_steps);
    evaluator_ = std::make_unique<PersonalizeEvaluator>(PersonalizeEvalOptions::from(cfg.section("eval")), *train_, val_.get(), class_.get(),
                                                        ctx.device, ctx.seed);
    double n = 0;
    for (const auto& p : params_) n += static_cast<double>(p.numel());
    spdlog::info("personalize: {} on the base {}, {:.1f} k trainable parameters; {} training images (\"{}\")", method(), base_.string(), n / 1e3,
                 train_->size(), prompts_.front());
  }

  // Each image's caption, as an index into prompts_ (new captions are added).
  void add_prompts(const SubjectDataset& data, std::vector<int64_t>& prompt_of) {
    for (int64_t i = 0; i < data.size(); ++i) {
      const std::string t = data.text_at(i);
      auto it = std::find(prompts_.begin(), prompts_.end(), t);
      prompt_of.push_back(it - prompts_.begin());
      if (it == prompts_.end()) prompts_.push_back(t);
    }
  }

  std::vector<std::string> unsupported_train_options() const override { return {"grad_accum"}; }  // one schedule row per step

  LatentDiffusion& diffusion() override {
    ensure_full_unet();
    return *net_;
  }
  std::map<std::string, torch::nn::Module*> modules() override {
    if (!adapters_) return {{"unet", net_->unet.get()}};
    return {{"unet_adapter", adapters_.get()}};
  }
  std::map<std::string, FrozenNetwork> frozen() override {
    std::map<std::string, FrozenNetwork> f = {{"text_encoder", {net_->text.get(), {base_, "text_encoder", {}}}},
                                              {"autoencoder", {net_->autoencoder.get(), {base_, "autoencoder", {}}}}};
    if (hollow_) f["unet"] = {hollow_.get(), {base_, "unet", {}}};  // the retained tensors of the base's UNet
    else if (adapters_) f["unet"] = {net_->unet.get(), {base_, "unet", {}}};
    return f;
  }
  std::map<std::string, ScheduledOptimizer*> optimizers() override { return {{"optim", optim_.get()}}; }
  std::vector<std::string> ema_modules() const override { return {adapters_ ? "unet_adapter" : "unet"}; }

  Scalars train_step(int64_t step) override {
    release_full_unet();
    if (adapters_) adapters_->train();
    else net_->unet->train();
    StepStats s = optimize_step(*optim_, params_, 1, ctx_.grad_clip, [&](int64_t) {
      if (!hollow_) {
        const CachedBatch b = live_batch(step % schedule_.steps());
        return loss(net_->predict(b.x_t, b.t, b.context), b.target);
      }
      const CachedBatch b = to_device(cache().step(step % schedule_.steps()));
      return loss(hollow_->forward(b.x_t, b.t, b.context, b.boundary), b.target);
    });
    return {{"loss", s.loss}, {"grad_norm", s.grad_norm}};
  }

  Scalars evaluate() override {
    ensure_full_unet();
    set_eval();
    Scalars out = evaluator_->evaluate(*net_);
    double trained = 0;
    for (const auto& p : params_) trained += static_cast<double>(p.numel());
    out["trained_params"] = trained;
    if (plan_) out["hollow_param_frac"] = plan_->parameter_fraction(), out["hollow_unit_frac"] = plan_->unit_fraction();
    if (adapters_ && !hollow_) {
      bool linear = true;
      for (const auto& l : adapters_->layers()) linear = linear && l.adapter->weight_equivalent();
      if (linear) spdlog::info("layer significance (mean |ΔW| per unit, largest first):\n{}", format_significance(unit_significance(*adapters_, unet_options_)));
    }
    if (hollow_) for (auto& [k, v] : stale_cache()) out[k] = v;
    release_full_unet();
    return out;
  }

  void write_samples(const fs::path& dir, int64_t step, MetricLogger& log) override {
    ensure_full_unet();
    set_eval();
    evaluator_->write_samples(*net_, dir, step, log);
    release_full_unet();
  }

 private:
  std::string method() const {
    if (hollow_) return "Hollowed Net (" + adapters_->layers().front().adapter->kind() + ")";
    return adapters_ ? adapters_->layers().front().adapter->kind() + " on the full UNet" : "full fine-tuning";
  }
  void set_eval() {
    if (adapters_) adapters_->eval();
    if (net_->unet) net_->unet->eval();
  }

  // The text embeddings of the training prompts and, last, of the empty prompt.
  const torch::Tensor& contexts() {
    if (!contexts_.defined()) {
      torch::NoGradGuard no_grad;
      std::vector<std::string> all = prompts_;
      all.push_back("");
      contexts_ = net_->embed_text(all).detach();
    }
    return contexts_;
  }

  // The loss of a batch: the prediction target's MSE on the subject's rows, plus prior_weight times
  // that on the class rows after them (DreamBooth's prior preservation, brief §3).
  torch::Tensor loss(const torch::Tensor& prediction, const torch::Tensor& target) const {
    if (prior_weight_ <= 0) return torch::mse_loss(prediction, target);
    const int64_t b = schedule_.batch();
    return torch::mse_loss(prediction.narrow(0, 0, b), target.narrow(0, 0, b)) +
           prior_weight_ * torch::mse_loss(prediction.narrow(0, b, b), target.narrow(0, b, b));
  }

  // Schedule row `step`, computed from the images: x_t, target, t and the text (no boundary); with
  // prior preservation the class rows follow the subject's.
  CachedBatch live_batch(int64_t step) {
    CachedBatch b;
    std::vector<torch::Tensor> rows, noise, t;
    std::vector<int64_t> ci;
    auto take = [&](const TrainingSchedule& s, const SubjectDataset& data, const std::vector<int64_t>& prompt_of) {
      const torch::Tensor index = s.index[step];
      for (int64_t j = 0; j < index.size(0); ++j) {
        const int64_t i = index[j].item<int64_t>();
        rows.push_back(data.get(i).at("image"));
        ci.push_back(s.drop[step][j].item<bool>() ? static_cast<int64_t>(prompts_.size()) : prompt_of[static_cast<size_t>(i)]);
      }
      noise.push_back(s.noise[step]);
      t.push_back(s.t[step]);
    };
    take(schedule_, *train_, prompt_of_);
    if (prior_weight_ > 0) take(prior_schedule_, *class_, class_prompt_of_);
    torch::NoGradGuard no_grad;
    const torch::Tensor z0 = net_->encode(torch::stack(rows).to(ctx_.device)) * net_->latent_scale();
    const torch::Tensor eps = torch::cat(noise).to(ctx_.device);
    b.t = torch::cat(t).to(ctx_.device);
    b.x_t = net_->schedule.add_noise(z0, eps, b.t);
    b.target = net_->schedule.target(z0, eps, b.t);
    b.context_index = torch::tensor(ci);
    b.context = contexts().index_select(0, b.context_index.to(contexts().device()));
    return b;
  }

  CachedBatch to_device(CachedBatch b) const {
    for (torch::Tensor* t : {&b.x_t, &b.target, &b.t, &b.context}) *t = t->to(ctx_.device);
    b.boundary.h_in = b.boundary.h_in.to(ctx_.device);
    for (auto& [k, v] : b.boundary.skips) v = v.to(ctx_.device);
    return b;
  }

  // What a cache must have been computed from to serve this run.
  nlohmann::json cache_identity() {
    return {{"schedule", schedule_.checksum()},
            {"prior_schedule", prior_weight_ > 0 ? prior_schedule_.checksum() : ""},
            {"images", state_checksum_of(train_->images())},
            {"class_images", prior_weight_ > 0 ? state_checksum_of(class_->images()) : ""},
            {"unet_retained", state_checksum(*hollow_)},
            {"text_encoder", state_checksum(*net_->text)},
            {"autoencoder", state_checksum(*net_->autoencoder)},
            {"latent_scale", net_->latent_scale()},
            {"hollow_units", plan_->removed_per_side()},
            {"unet", unet_options_.diffusers_config()}};
  }
  static std::string state_checksum_of(const torch::Tensor& t) {
    torch::nn::Module holder;
    holder.register_buffer("t", t);
    return state_checksum(holder);
  }

  HollowCache& cache() {
    if (cache_) return *cache_;
    const nlohmann::json identity = cache_identity();
    if (!fs::exists(cache_path_)) precompute(identity);
    cache_ = std::make_unique<HollowCache>(cache_path_, identity, *plan_);
    if (cache_->steps() < schedule_.steps())
      throw InputError("hollow.cache " + cache_path_.string() + " holds " + std::to_string(cache_->steps()) + " steps; this run needs " +
                       std::to_string(schedule_.steps()));
    return *cache_;
  }

  // Stage 1: the full frozen UNet's boundary for every row of the schedule.
  void precompute(const nlohmann::json& identity) {
    const auto start = std::chrono::steady_clock::now();
    UNet2DCondition full = load_full_unet();
    torch::NoGradGuard no_grad;
    HollowCache::write(cache_path_, identity, *plan_, schedule_.steps(), contexts(), [&](int64_t step) {
      CachedBatch b = live_batch(step);
      b.boundary = compute_boundary(*full, *plan_, b.x_t, b.t, b.context);
      return b;
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    spdlog::info("personalize: pre-computed the boundary of {} steps x {} in {:.1f} s into {} ({:.2f} MB)", schedule_.steps(), schedule_.batch(),
                 seconds, cache_path_.string(), static_cast<double>(fs::file_size(cache_path_)) / 1e6);
  }

  // The base run's full UNet, checked against the retained weights this run holds.
  UNet2DCondition load_full_unet() {
    UNet2DCondition full(unet_options_);
    load_module_from_run(base_, "unet", *full);
    full->to(ctx_.device);
    full->eval();
    for (auto& p : full->parameters()) p.set_requires_grad(false);
    const TensorMap all = module_state(*full);
    for (const auto& [name, t] : module_state(*hollow_)) {
      if (plan_->leaves_out(name)) continue;
      if (!torch::equal(all.at(name).to(t.device()), t))
        throw InputError("model.base " + base_.string() + ": its UNet's '" + name + "' differs from the weights this run recorded (the base trained on?)");
    }
    return full;
  }

  // Hollowed Net: the full UNet with the trained adapters transferred to its same-named layers.
  void ensure_full_unet() {
    if (!hollow_ || net_->unet) return;
    net_->unet = load_full_unet();
    transferred_ = inject(*net_->unet, adapters_->paths(), adapter_config_);
    load_module_state(*transferred_, module_state(*adapters_), "the hollowed UNet's adapters");
    transferred_->to(ctx_.device);
    transferred_->eval();
  }
  void release_full_unet() {
    if (!hollow_ || !net_->unet) return;
    transferred_->detach();
    transferred_ = Adapters(nullptr);
    net_->unet = UNet2DCondition(nullptr);
  }

  // The stale-cache effect (brief §2.3): the cache holds the base's boundary, the full UNet with
  // the adapters computes another.
  Scalars stale_cache() {
    torch::NoGradGuard no_grad;
    const CachedBatch b = to_device(cache().step(0));
    const UNetBoundary live = compute_boundary(*net_->unet, *plan_, b.x_t, b.t, b.context);
    const double drift = ((live.h_in - b.boundary.h_in).norm() / b.boundary.h_in.norm().clamp_min(1e-12)).item<double>();
    double full_loss = 0, hollow_loss = 0;
    const int64_t n = std::min<int64_t>(schedule_.steps(), 8);
    for (int64_t s = 0; s < n; ++s) {
      const CachedBatch c = to_device(cache().step(s));
      full_loss += loss(net_->unet->forward(c.x_t, c.t, c.context), c.target).item<double>();
      hollow_loss += loss(hollow_->forward(c.x_t, c.t, c.context, c.boundary), c.target).item<double>();
    }
    return {{"stale_h_in", drift}, {"stale_loss_gap", (full_loss - hollow_loss) / static_cast<double>(n)}};
  }

  RunContext ctx_;
  fs::path base_;
  std::unique_ptr<LatentDiffusion> net_;
  UNetOptions unet_options_;
  std::unique_ptr<SubjectDataset> train_, val_, class_;
  TrainingSchedule schedule_, prior_schedule_;  // the subject's rows; the class rows (prior preservation)
  double prior_weight_ = 0;
  std::vector<std::string> prompts_;              // every caption, subject's then class scenes'
  std::vector<int64_t> prompt_of_, class_prompt_of_;  // per training (class) image, its caption in prompts_
  torch::Tensor contexts_;
  Adapters adapters_{nullptr}, transferred_{nullptr};
  Config adapter_config_;
  std::optional<HollowPlan> plan_;
  HollowedUNet hollow_{nullptr};
  fs::path cache_path_;
  std::unique_ptr<HollowCache> cache_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<ScheduledOptimizer> optim_;
  std::unique_ptr<PersonalizeEvaluator> evaluator_;
};

EF_REGISTER(recipes(), "personalize", [](const Config& c, const RunContext& ctx) { return std::make_unique<PersonalizeRecipe>(c, ctx); },
            "subject-driven fine-tuning of a text-to-image run: full, LoRA, or Hollowed Net (LoRA on the UNet without its deepest units)");

}  // namespace
}  // namespace ef::lora
