// Recipe "flow": RAFT-S or the MobileFlow stand-in, optionally with SciFlow's Self-Cleaning
// Iteration (flow.sci) and Regression Focal Loss (loss.kind = "rfl"), trained on a generated flow
// set. Evaluation: in-domain on the training set's val split (eval/epe, eval/fl_all, eval/1px..5px,
// eval/epe_occ, eval/epe_flat, eval/epe_other) and, when data.cross is given, cross-domain on
// another generated domain (eval/cross_*). With eval.data set (`edgeforge eval RUN --data DIR`) it
// evaluates a Sintel or KITTI 2015 folder instead (eval/clean_*, eval/final_*, eval/kitti_*).
// Samples: rows of [image 1 | ground truth | prediction | error] as flow colour images.
// With an `adapter` block (lora/finetune.h) the network is frozen from adapter.base, a flow run of
// the same architecture, and only adapters train (default targets: the update block's convolutions,
// i.e. motion encoder, ConvGRU and flow head; the feature and context encoders stay as they are).
#include <spdlog/spdlog.h>

#include "core/data_gen.h"
#include "core/image_io.h"
#include "core/recipe.h"
#include "flow/flow_data.h"
#include "flow/losses.h"
#include "flow/metrics.h"
#include "flow/models.h"
#include "lora/finetune.h"

namespace ef::flow {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

namespace {

// RAFT's InputPadder: replicate-pad to multiples of 8 (Sintel: split top/bottom; KITTI: bottom only).
struct Padder {
  int64_t left = 0, right = 0, top = 0, bottom = 0;
  Padder(int64_t h, int64_t w, bool kitti) {
    const int64_t ph = (8 - h % 8) % 8, pw = (8 - w % 8) % 8;
    left = pw / 2, right = pw - pw / 2;
    top = kitti ? 0 : ph / 2, bottom = kitti ? ph : ph - ph / 2;
  }
  torch::Tensor pad(const torch::Tensor& x) const {
    return F::pad(x, F::PadFuncOptions({left, right, top, bottom}).mode(torch::kReplicate));
  }
  torch::Tensor unpad(const torch::Tensor& x) const {
    return x.narrow(-2, top, x.size(-2) - top - bottom).narrow(-1, left, x.size(-1) - left - right);
  }
};

class FlowRecipe : public Recipe {
 public:
  FlowRecipe(const Config& cfg, const RunContext& ctx) : ctx_(ctx) {
    Config data = cfg.section("data");
    const std::string kind = data.get<std::string>("kind", "flow-chairs");
    if (kind != "flow-chairs" && kind != "flow-cross") data.invalid("kind", "expected \"flow-chairs\" or \"flow-cross\", got \"" + kind + "\"");
    const fs::path path = prepare_dataset(data, kind);
    auto train = std::make_shared<FlowScenesDataset>(path, "train");
    val_ = std::make_shared<FlowScenesDataset>(path, "val");
    if (data.has("cross")) {
      Config cross = data.section("cross");
      cross_ = std::make_shared<FlowScenesDataset>(prepare_dataset(cross, cross.get<std::string>("kind", "flow-cross")), "val");
    }
    train_loader_ = std::make_unique<Loader>(train, LoaderOptions::from(data, ctx.seed, 8));

    model_ = FlowModelOptions::from(cfg.section("model"));
    const int64_t coarse = std::min(train->height(), train->width()) / 8;
    if (model_.kind == "raft-small" && (coarse >> (model_.levels - 1)) < 1)
      throw ConfigError(cfg.source() + ": model.levels: " + std::to_string(model_.levels) + " levels need a 1/8 grid of at least " +
                        std::to_string(1 << (model_.levels - 1)) + " pixels; the images of " + path.string() + " give " + std::to_string(coarse));
    net_ = FlowNet(model_, SciOptions::from(cfg.section("flow")));
    net_->to(ctx.device);
    trained_ = std::make_unique<lora::TrainedNetwork>(
        cfg, *net_,
        lora::TrainedNetworkSpec{"flow", "model", {"convc1", "convf1", "convf2", "conv", "convz", "convr", "convq", "head1", "head2"}, {"model", "flow"}});
    loss_ = LossOptions::from(cfg.section("loss"));

    Config ev = cfg.section("eval");
    eval_batches_ = ev.get<int64_t>("batches", 0);
    eval_batch_size_ = ev.get<int64_t>("batch_size", 16);
    n_samples_ = ev.get_at_least<int64_t>("samples", 4, 0);
    if (eval_batches_ < 0) ev.invalid("batches", "must be >= 0 (0: the whole validation set)");
    if (eval_batch_size_ < 1) ev.invalid("batch_size", "must be at least 1");
    eval_iters_ = ev.get<int64_t>("iters", model_.iters);
    per_iteration_ = ev.get<bool>("per_iteration", false);
    folder_ = ev.get<std::string>("data", "");
    folder_format_ = ev.get<std::string>("format", "auto");
    sintel_pass_ = ev.get<std::string>("sintel_pass", "both");
    folder_limit_ = ev.get<int64_t>("limit", 0);
    if (eval_iters_ < 1) ev.invalid("iters", "at least one iteration");
    if (folder_format_ != "auto" && folder_format_ != "sintel" && folder_format_ != "kitti")
      ev.invalid("format", "expected \"auto\", \"sintel\" or \"kitti\", got \"" + folder_format_ + "\"");
    if (sintel_pass_ != "both" && sintel_pass_ != "clean" && sintel_pass_ != "final")
      ev.invalid("sintel_pass", "expected \"both\", \"clean\" or \"final\", got \"" + sintel_pass_ + "\"");

    optim_ = make_optimizer(cfg.section("optim"), trained_->param_groups(), ctx.total_steps);
    params_ = trained_->parameters();
    n_params_ = static_cast<double>(count_parameters(*net_));
    spdlog::info("flow: {} {}{}, {:.3f} M parameters, loss {}, {} train / {} val pairs of {}x{}{}", model_.kind, net_->sci().enabled ? "+SCI" : "",
                 loss_.kind == "rfl" ? " +RFL" : "", n_params_ / 1e6, loss_.kind, train->size(), val_->size(), train->height(),
                 train->width(), cross_ ? ", cross-domain val " + std::to_string(cross_->size()) : std::string());
  }

  std::map<std::string, torch::nn::Module*> modules() override { return trained_->modules(); }
  std::map<std::string, FrozenNetwork> frozen() override { return trained_->frozen(); }
  std::map<std::string, ScheduledOptimizer*> optimizers() override { return {{"optim", optim_.get()}}; }
  std::vector<std::string> ema_modules() const override { return trained_->ema_modules(); }

  Scalars train_step(int64_t) override {
    trained_->train(true);
    double epe = 0;
    StepStats s = optimize_step(*optim_, params_, ctx_.grad_accum, ctx_.grad_clip, [&](int64_t) {
      Batch b = to_device(train_loader_->next(), ctx_.device);
      FlowOutput out = net_->forward(b["image1"], b["image2"], model_.iters);
      std::vector<torch::Tensor> preds;
      for (const auto& f : out.flows) preds.push_back(f.to(torch::kFloat32));
      epe += end_point_error(preds.back(), b["flow"]).mean().item<double>() / static_cast<double>(ctx_.grad_accum);  // detaches
      return flow_sequence_loss(preds, b["flow"], b["valid"], loss_);
    });
    return {{"loss", s.loss}, {"grad_norm", s.grad_norm}, {"epe", epe}};
  }

  Scalars evaluate() override {
    torch::NoGradGuard no_grad;
    trained_->train(false);
    if (!folder_.empty()) return evaluate_folder();
    Scalars out = evaluate_generated(*val_, "", true);
    if (cross_) {
      Scalars c = evaluate_generated(*cross_, "cross_", false);
      out.insert(c.begin(), c.end());
    }
    out["params"] = n_params_;
    return out;
  }

  void write_samples(const fs::path& dir, int64_t step, MetricLogger& log) override {
    torch::NoGradGuard no_grad;
    trained_->train(false);
    const int64_t k = std::min(n_samples_, val_->size());
    if (k == 0) return;
    std::vector<Sample> samples;
    for (int64_t i = 0; i < k; ++i) samples.push_back(val_->get(i));
    Batch b = collate(samples);
    torch::Tensor pred = net_->forward(b["image1"].to(ctx_.device), b["image2"].to(ctx_.device), eval_iters_).flows.back().to(torch::kCPU, torch::kFloat32);
    std::vector<torch::Tensor> tiles;
    for (int64_t i = 0; i < k; ++i) {
      torch::Tensor gt = b["flow"][i];
      const double scale = std::max(gt.square().sum(0).sqrt().max().item<double>(), 1.0);  // one colour scale for both
      tiles.push_back(b["image1"][i]);
      tiles.push_back(flow_to_color(gt, scale));
      tiles.push_back(flow_to_color(pred[i], scale));
      tiles.push_back(flow_error_image(pred[i], gt, b["valid"][i]));
    }
    torch::Tensor grid = make_grid(torch::stack(tiles), 4);
    fs::create_directories(dir);
    write_png(dir / ("flow_step_" + std::to_string(step) + ".png"), to_uint8_hwc(grid));
    log.image("samples/flow", step, grid);
  }

  void save_state(torch::serialize::OutputArchive& a) const override { save_loader_position(a, *train_loader_); }
  void load_state(torch::serialize::InputArchive& a) override { load_loader_position(a, *train_loader_); }

 private:
  // EPE / Fl over a generated split; groups: occluded, textureless (flat, not occluded), other.
  Scalars evaluate_generated(const FlowScenesDataset& ds, const std::string& prefix, bool with_loss) {
    const int64_t n = ds.size();
    const int64_t limit = eval_batches_ > 0 ? std::min(n, eval_batches_ * eval_batch_size_) : n;
    FlowMetricSums sums;
    std::vector<FlowMetricSums> per_iter;
    double loss = 0;
    for (int64_t begin = 0; begin < limit; begin += eval_batch_size_) {
      std::vector<Sample> samples;
      for (int64_t i = begin; i < std::min(limit, begin + eval_batch_size_); ++i) samples.push_back(ds.get(i));
      Batch b = collate(samples);
      FlowOutput out = net_->forward(b["image1"].to(ctx_.device), b["image2"].to(ctx_.device), eval_iters_);
      torch::Tensor pred = out.flows.back().to(torch::kCPU, torch::kFloat32);
      sums.add(pred, b["flow"], b["valid"]);
      const torch::Tensor occ = b["occ"] > 0.5, flat = (b["flat"] > 0.5) & occ.logical_not();
      sums.add_group("occ", pred, b["flow"], occ);
      sums.add_group("flat", pred, b["flow"], flat);
      sums.add_group("other", pred, b["flow"], occ.logical_not() & flat.logical_not());
      if (per_iteration_) {
        per_iter.resize(out.flows.size());
        for (size_t i = 0; i < out.flows.size(); ++i) per_iter[i].add(out.flows[i].to(torch::kCPU, torch::kFloat32), b["flow"], b["valid"]);
      }
      if (with_loss) {
        std::vector<torch::Tensor> preds;
        for (const auto& f : out.flows) preds.push_back(f.to(torch::kCPU, torch::kFloat32));
        LossOptions plain = loss_;
        plain.kind = "sequence_l1";  // comparable across loss kinds
        loss += flow_sequence_loss(preds, b["flow"], b["valid"], plain).item<double>() * static_cast<double>(samples.size());
      }
    }
    Scalars s = sums.means(prefix);
    for (size_t i = 0; i < per_iter.size(); ++i) s[prefix + "epe_iter" + std::to_string(i + 1)] = per_iter[i].means().at("epe");
    if (with_loss) s["loss"] = loss / static_cast<double>(limit);
    return s;
  }

  // A Sintel or KITTI folder, one pair at a time (sizes differ), padded to multiples of 8.
  Scalars evaluate_folder() {
    const std::string layout = folder_format_ == "auto" ? detect_flow_layout(folder_) : folder_format_;
    std::vector<FlowPairFiles> files = layout == "sintel" ? list_sintel(folder_, sintel_pass_) : list_kitti(folder_);
    std::map<std::string, FlowMetricSums> sums;
    std::map<std::string, int64_t> counts;
    for (const auto& f : files) {
      if (folder_limit_ > 0 && counts[f.group] >= folder_limit_) continue;
      ++counts[f.group];
      Sample s = load_flow_pair(f);
      Padder pad(s["image1"].size(1), s["image1"].size(2), layout == "kitti");
      torch::Tensor a = pad.pad(s["image1"].unsqueeze(0)).to(ctx_.device), b = pad.pad(s["image2"].unsqueeze(0)).to(ctx_.device);
      torch::Tensor pred = pad.unpad(net_->forward(a, b, eval_iters_).flows.back()).to(torch::kCPU, torch::kFloat32);
      sums[f.group].add(pred, s["flow"].unsqueeze(0), s["valid"].unsqueeze(0));
    }
    Scalars out;
    for (const auto& [group, m] : sums) {
      Scalars g = m.means(group + "_");
      out.insert(g.begin(), g.end());
      out[group + "_pairs"] = static_cast<double>(counts[group]);
    }
    spdlog::info("flow: evaluated {} ({}) with {} iterations", folder_, layout, eval_iters_);
    return out;
  }

  RunContext ctx_;
  std::shared_ptr<FlowScenesDataset> val_, cross_;
  std::unique_ptr<Loader> train_loader_;
  FlowModelOptions model_;
  FlowNet net_{nullptr};
  std::unique_ptr<lora::TrainedNetwork> trained_;  // the network, or adapters on it
  LossOptions loss_;
  std::unique_ptr<ScheduledOptimizer> optim_;
  std::vector<torch::Tensor> params_;
  double n_params_ = 0;
  int64_t eval_batches_ = 0, eval_batch_size_ = 16, n_samples_ = 4, eval_iters_ = 12, folder_limit_ = 0;
  bool per_iteration_ = false;
  std::string folder_, folder_format_, sintel_pass_;
};

EF_REGISTER(recipes(), "flow", [](const Config& c, const RunContext& ctx) { return std::make_unique<FlowRecipe>(c, ctx); },
            "optical flow: RAFT-S or MobileFlow stand-in, with SciFlow's Self-Cleaning Iteration and Regression Focal Loss");

}  // namespace
}  // namespace ef::flow
