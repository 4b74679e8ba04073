// Recipe "depth": monocular depth with a ViT encoder (attention from model.attention) and a light
// DPT-style decoder on the generated depth-scenes set. Metrics: eval/abs_rel, eval/rmse,
// eval/delta1 (+ sq_rel, rmse_log, log10, delta2, delta3, silog), eval/params, eval/mflops;
// samples: rows of [image | ground truth | prediction] with depth colour maps.
#include "tasks/depth.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "core/atomic_file.h"
#include "core/image_io.h"
#include "core/data_gen.h"
#include "core/recipe.h"
#include "tasks/depth_scenes.h"

namespace ef {

namespace fs = std::filesystem;

DepthDecoderOptions DepthDecoderOptions::from(const Config& c, int64_t depth) {
  DepthDecoderOptions o;
  o.dim = c.get<int64_t>("dim", o.dim);
  std::vector<int64_t> fallback;
  const int64_t n = std::min<int64_t>(4, depth);
  for (int64_t i = 1; i <= n; ++i) fallback.push_back((depth * i) / n - 1);
  o.layers = c.get<std::vector<int64_t>>("layers", fallback);
  if (o.dim < 1) c.invalid("dim", "must be positive");
  if (o.layers.empty()) c.invalid("layers", "at least one encoder block");
  for (int64_t l : o.layers)
    if (l < 0 || l >= depth)
      c.invalid("layers", "block " + std::to_string(l) + " is not in 0.." + std::to_string(depth - 1));
  return o;
}

DepthNetImpl::DepthNetImpl(const ViTOptions& vit, const Config& attention, const DepthDecoderOptions& dec, double max_depth)
    : vit_(vit), dec_(dec), max_depth_(max_depth) {
  encoder = register_module("encoder", ViT(vit, attention));
  const int64_t F = dec.dim;
  reassemble = register_module("reassemble", torch::nn::ModuleList());
  for (size_t i = 0; i < dec.layers.size(); ++i) reassemble->push_back(ef::nn::Conv2d(torch::nn::Conv2dOptions(vit.dim, F, 1)));
  fuse = register_module("fuse", ef::nn::Conv2d(torch::nn::Conv2dOptions(F, F, 3).padding(1)));
  up = register_module("up", torch::nn::ModuleList());
  for (int64_t s = vit.patch; s > 1; s /= 2) up->push_back(ef::nn::Conv2d(torch::nn::Conv2dOptions(F, F, 3).padding(1)));
  head = register_module("head", ef::nn::Conv2d(torch::nn::Conv2dOptions(F, 1, 3).padding(1)));
}

torch::Tensor DepthNetImpl::forward(const torch::Tensor& images) {
  const int64_t B = images.size(0), g = vit_.grid(), prefix = vit_.pool == "cls" ? 1 : 0;
  std::vector<torch::Tensor> taps = encoder->forward_intermediates(images, dec_.layers);
  torch::Tensor f;
  for (size_t i = 0; i < taps.size(); ++i) {
    torch::Tensor grid = taps[i].narrow(1, prefix, g * g).transpose(1, 2).reshape({B, vit_.dim, g, g});
    torch::Tensor r = reassemble[i]->as<ef::nn::Conv2d>()->forward(grid);
    f = f.defined() ? f + r : r;
  }
  f = torch::relu(fuse->forward(f));
  for (const auto& m : *up) {
    f = torch::nn::functional::interpolate(
        f, torch::nn::functional::InterpolateFuncOptions().scale_factor(std::vector<double>{2, 2}).mode(torch::kBilinear).align_corners(false));
    f = torch::relu(m->as<ef::nn::Conv2d>()->forward(f));
  }
  return max_depth_ * torch::sigmoid(head->forward(f));
}

double DepthNetImpl::flops() const {
  const double g = static_cast<double>(vit_.grid()), F = static_cast<double>(dec_.dim), C = static_cast<double>(vit_.dim);
  double f = encoder->flops() - (vit_.num_classes > 0 ? 2 * C * vit_.num_classes : 0.0);
  f += static_cast<double>(dec_.layers.size()) * g * g * 2 * C * F;  // reassemble
  f += g * g * 2 * 9 * F * F;                                         // fuse
  double res = g;
  for (size_t i = 0; i < up->size(); ++i) res *= 2, f += res * res * 2 * 9 * F * F;
  f += res * res * 2 * 9 * F;  // head
  return f;
}

torch::Tensor silog_loss(const torch::Tensor& pred, const torch::Tensor& gt, double lambda, double min_depth, double max_depth) {
  torch::Tensor mask = (gt > min_depth) & (gt <= max_depth);
  torch::Tensor g = torch::log(pred.clamp_min(min_depth).masked_select(mask)) - torch::log(gt.masked_select(mask));
  return 10.0 * torch::sqrt((g.square().mean() - lambda * g.mean().square()).clamp_min(1e-12));
}

Scalars depth_metric_sums(const torch::Tensor& pred_in, const torch::Tensor& gt_in, double min_depth, double max_depth) {
  TORCH_CHECK(pred_in.sizes() == gt_in.sizes(), "depth metrics: prediction ", pred_in.sizes(), " vs ground truth ", gt_in.sizes());
  torch::Tensor pred = pred_in.detach().to(torch::kCPU, torch::kFloat64).flatten(1).clamp(min_depth, max_depth);
  torch::Tensor gt = gt_in.detach().to(torch::kCPU, torch::kFloat64).flatten(1);
  torch::Tensor mask = ((gt > min_depth) & (gt <= max_depth)).to(torch::kFloat64);
  torch::Tensor n = mask.sum(1).clamp_min(1);                 // valid pixels per image
  torch::Tensor safe_gt = torch::where(mask > 0, gt, torch::ones_like(gt));
  auto mean = [&](const torch::Tensor& v) { return (v * mask).sum(1) / n; };  // per image
  torch::Tensor ratio = torch::maximum(pred / safe_gt, safe_gt / pred);
  torch::Tensor diff = pred - safe_gt, dlog = torch::log(pred) - torch::log(safe_gt);
  Scalars s;
  s["abs_rel"] = mean(diff.abs() / safe_gt).sum().item<double>();
  s["sq_rel"] = mean(diff.square() / safe_gt).sum().item<double>();
  s["rmse"] = mean(diff.square()).sqrt().sum().item<double>();
  s["rmse_log"] = mean(dlog.square()).sqrt().sum().item<double>();
  s["log10"] = mean((torch::log10(pred) - torch::log10(safe_gt)).abs()).sum().item<double>();
  s["delta1"] = mean((ratio < 1.25).to(torch::kFloat64)).sum().item<double>();
  s["delta2"] = mean((ratio < 1.25 * 1.25).to(torch::kFloat64)).sum().item<double>();
  s["delta3"] = mean((ratio < 1.25 * 1.25 * 1.25).to(torch::kFloat64)).sum().item<double>();
  return s;
}

torch::Tensor colorize_depth(const torch::Tensor& depth, double lo, double hi) {
  torch::Tensor x = (1.0 - (depth.to(torch::kFloat32) - lo) / std::max(hi - lo, 1e-6)).clamp(0, 1);  // near = 1 (red)
  auto poly = [&](std::initializer_list<double> c) {
    std::vector<double> k(c);
    torch::Tensor v = torch::full_like(x, k.back());
    for (int i = static_cast<int>(k.size()) - 2; i >= 0; --i) v = v * x + k[i];
    return v.clamp(0, 1);
  };
  // Google's polynomial approximation of the turbo colour map
  torch::Tensor r = poly({0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943});
  torch::Tensor g = poly({0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604});
  torch::Tensor b = poly({0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973});
  return torch::stack({r, g, b}, 0);
}

namespace {

class DepthRecipe : public Recipe {
 public:
  DepthRecipe(const Config& cfg, const RunContext& ctx) : ctx_(ctx) {
    Config data = cfg.section("data");
    const fs::path path = prepare_dataset(data, "depth-scenes");
    auto train = std::make_shared<DepthScenesDataset>(path, "train");
    val_ = std::make_shared<DepthScenesDataset>(path, "val");
    train_loader_ = std::make_unique<Loader>(train, LoaderOptions::from(data, ctx.seed, 32));

    Config m = cfg.section("model");
    const std::string model_kind = m.get<std::string>("kind", "vit");
    if (model_kind != "vit") throw ConfigError(cfg.source() + ": model.kind: expected \"vit\", got \"" + model_kind + "\"");
    m.get<int64_t>("num_classes", 0);       // depth defaults: no classifier head,
    m.get<std::string>("pool", "mean");     // no class token
    m.get<int64_t>("image_size", train->image_size());
    ViTOptions vo = ViTOptions::from(m);
    if (vo.num_classes != 0) throw ConfigError(cfg.source() + ": model.num_classes: must be 0 for depth (no classifier head)");
    if (vo.image_size != train->image_size())
      throw ConfigError(cfg.source() + ": model.image_size is " + std::to_string(vo.image_size) + " but the images of " + path.string() +
                        " are " + std::to_string(train->image_size()) + " pixels");
    if (vo.patch & (vo.patch - 1)) throw ConfigError(cfg.source() + ": model.patch: the depth decoder needs a power of two, got " + std::to_string(vo.patch));
    DepthDecoderOptions dec = DepthDecoderOptions::from(m.section("decoder"), vo.depth);

    Config d = cfg.section("depth");
    min_depth_ = d.get<double>("min", 1e-3);
    max_depth_ = d.get<double>("max", val_->max_depth());
    if (!(min_depth_ > 0 && max_depth_ > min_depth_)) throw ConfigError(cfg.source() + ": depth.min/depth.max: expected 0 < min < max");

    net_ = DepthNet(vo, m.section("attention"), dec, max_depth_);
    net_->to(ctx.device);

    Config loss = cfg.section("loss");
    silog_lambda_ = loss.get<double>("silog_lambda", 0.85);
    aux_weight_ = loss.get<double>("aux_weight", 1.0);

    Config ev = cfg.section("eval");
    eval_batches_ = ev.get<int64_t>("batches", 0);
    eval_batch_size_ = ev.get<int64_t>("batch_size", 64);
    n_samples_ = ev.get_at_least<int64_t>("samples", 8, 0);
    if (eval_batches_ < 0) ev.invalid("batches", "must be >= 0 (0: the whole validation set)");
    if (eval_batch_size_ < 1) ev.invalid("batch_size", "must be at least 1");

    optim_ = make_optimizer(cfg.section("optim"), decay_groups(*net_), ctx.total_steps);
    for (const auto& p : net_->parameters()) params_.push_back(p), n_params_ += static_cast<double>(p.numel());
    spdlog::info("depth: ViT + decoder {:.2f} M parameters, {:.1f} MFLOPs per image, {} train / {} val images", n_params_ / 1e6,
                 net_->flops() / 1e6, train->size(), val_->size());
  }

  std::map<std::string, torch::nn::Module*> modules() override { return {{"model", net_.get()}}; }
  std::map<std::string, ScheduledOptimizer*> optimizers() override { return {{"optim", optim_.get()}}; }
  std::vector<std::string> ema_modules() const override { return {"model"}; }

  Scalars train_step(int64_t) override {
    net_->train();
    Scalars extra;
    StepStats s = optimize_step(*optim_, params_, ctx_.grad_accum, ctx_.grad_clip, [&](int64_t) {
      Batch b = to_device(train_loader_->next(), ctx_.device);
      // stage A of ToSA's schedule: only the selectors learn (the encoder runs without gradients)
      const bool frozen = net_->encoder->backbone_frozen();
      torch::Tensor pred;
      {
        std::unique_ptr<torch::NoGradGuard> guard;
        if (frozen) guard = std::make_unique<torch::NoGradGuard>();
        pred = net_->forward(b["image"]).to(torch::kFloat32);
      }
      torch::Tensor task = silog_loss(pred, b["depth"], silog_lambda_, min_depth_, max_depth_);
      extra["silog"] += task.item<double>() / static_cast<double>(ctx_.grad_accum);
      torch::Tensor loss = frozen ? torch::zeros({}, pred.options()) : task;
      for (auto& [name, value] : net_->encoder->take_aux_losses()) {
        loss = loss + aux_weight_ * value;
        extra["aux_" + name] += value.item<double>() / static_cast<double>(ctx_.grad_accum);
      }
      return loss;
    });
    Scalars out = {{"loss", s.loss}, {"grad_norm", s.grad_norm}};
    out.insert(extra.begin(), extra.end());
    return out;
  }

  Scalars evaluate() override {
    torch::NoGradGuard no_grad;
    net_->eval();
    const int64_t n = val_->size();
    const int64_t limit = eval_batches_ > 0 ? std::min(n, eval_batches_ * eval_batch_size_) : n;
    Scalars sums;
    double silog = 0;
    for (int64_t begin = 0; begin < limit; begin += eval_batch_size_) {
      std::vector<Sample> samples;
      for (int64_t i = begin; i < std::min(limit, begin + eval_batch_size_); ++i) samples.push_back(val_->get(i));
      Batch b = to_device(collate(samples), ctx_.device);
      torch::Tensor pred = net_->forward(b["image"]).to(torch::kFloat32);
      net_->encoder->take_aux_losses();
      silog += silog_loss(pred, b["depth"], silog_lambda_, min_depth_, max_depth_).item<double>() * static_cast<double>(samples.size());
      for (const auto& [k, v] : depth_metric_sums(pred, b["depth"], min_depth_, max_depth_)) sums[k] += v;
    }
    Scalars out;
    for (const auto& [k, v] : sums) out[k] = v / static_cast<double>(limit);
    out["silog"] = silog / static_cast<double>(limit);
    out["loss"] = out["silog"];
    out["params"] = n_params_;
    out["mflops"] = net_->flops() / 1e6;
    return out;
  }

  void write_samples(const fs::path& dir, int64_t step, MetricLogger& log) override {
    torch::NoGradGuard no_grad;
    net_->eval();
    const int64_t k = std::min(n_samples_, val_->size());
    if (k == 0) return;
    std::vector<Sample> samples;
    for (int64_t i = 0; i < k; ++i) samples.push_back(val_->get(i));
    Batch b = collate(samples);
    torch::Tensor pred = net_->forward(b["image"].to(ctx_.device)).to(torch::kCPU, torch::kFloat32);
    net_->encoder->take_aux_losses();
    std::vector<torch::Tensor> tiles;
    for (int64_t i = 0; i < k; ++i) {
      torch::Tensor gt = b["depth"][i][0];
      const double lo = gt.min().item<double>(), hi = gt.max().item<double>();  // one scale for both
      tiles.push_back(b["image"][i]);
      tiles.push_back(colorize_depth(gt, lo, hi));
      tiles.push_back(colorize_depth(pred[i][0], lo, hi));
    }
    torch::Tensor grid = make_grid(torch::stack(tiles), 3);
    grid = torch::nn::functional::interpolate(
        grid.unsqueeze(0), torch::nn::functional::InterpolateFuncOptions().scale_factor(std::vector<double>{2, 2}).mode(torch::kNearest))[0];
    fs::create_directories(dir);
    write_png(dir / ("depth_step_" + std::to_string(step) + ".png"), to_uint8_hwc(grid));
    log.image("samples/depth", step, grid);
  }

  void save_state(torch::serialize::OutputArchive& a) const override { save_loader_position(a, *train_loader_); }
  void load_state(torch::serialize::InputArchive& a) override { load_loader_position(a, *train_loader_); }

 private:
  RunContext ctx_;
  std::shared_ptr<DepthScenesDataset> val_;
  std::unique_ptr<Loader> train_loader_;
  DepthNet net_{nullptr};
  std::unique_ptr<ScheduledOptimizer> optim_;
  std::vector<torch::Tensor> params_;
  double n_params_ = 0, min_depth_ = 1e-3, max_depth_ = 10, silog_lambda_ = 0.85, aux_weight_ = 1;
  int64_t eval_batches_ = 0, eval_batch_size_ = 64, n_samples_ = 8;
};

EF_REGISTER(recipes(), "depth", [](const Config& c, const RunContext& ctx) { return std::make_unique<DepthRecipe>(c, ctx); },
            "monocular depth: ViT encoder (attention from model.attention) + light DPT-style decoder on generated depth-scenes");

}  // namespace
}  // namespace ef
