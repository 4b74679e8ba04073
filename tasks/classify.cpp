// Recipe "classify": image classification with a ViT (attention chosen by model.attention) on a
// generated or HDF5 dataset: the "shapes" classes (data.kind "shapes", the default), or one attribute
// of the "captions" scenes (data.kind "captions", data.attribute "colour", ...; images in [-1, 1]).
// Metrics: eval/acc, eval/loss; samples: a prediction grid PNG. The run folder gets classes.json
// ({"kind", "attribute", "classes"}): what a label means, for tools that read the run
// (tasks/attribute_classifier.h).
// With an `adapter` block (lora/finetune.h) the ViT is frozen from adapter.base, a classify run of
// the same architecture, and only adapters train (default targets: every attention and MLP linear).
// Export target "classify": the ViT ("model"), images in, logits out; calibrated on the run's own
// training split and measured by top-1 accuracy on its validation split, whichever data.kind it has.
// An adapter run exports the ViT with its adapters merged into the weights.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/atomic_file.h"
#include "core/image_io.h"
#include "core/data_gen.h"
#include "core/export_target.h"
#include "core/recipe.h"
#include "lora/finetune.h"
#include "models/vit.h"
#include "tasks/caption_data.h"
#include "tasks/shapes_dataset.h"

namespace ef {
namespace {

namespace fs = std::filesystem;

// One attribute of a captions split as {"image", "label"}.
class AttributeLabels : public Dataset {
 public:
  AttributeLabels(std::shared_ptr<const CaptionsDataset> data, const std::string& attribute)
      : data_(std::move(data)), key_("attr_" + attribute) {}
  int64_t size() const override { return data_->size(); }
  Sample get(int64_t index) const override {
    Sample s = data_->get(index);
    return {{"image", s.at("image")}, {"label", s.at(key_)}};
  }

 private:
  std::shared_ptr<const CaptionsDataset> data_;
  std::string key_;
};

// The data of a classify run: data.kind "shapes" or "captions".
struct ClassifyData {
  std::shared_ptr<const Dataset> train, val;
  int64_t image_size = 0;
  std::vector<std::string> classes;
  std::string kind, attribute;  // attribute: captions only
  bool signed_images = false;   // images in [-1, 1] rather than [0, 1]
  fs::path path;

  static ClassifyData from(const Config& data) {
    ClassifyData d;
    d.kind = data.get<std::string>("kind", "shapes");
    if (d.kind == "shapes") {
      d.path = prepare_dataset(data, "shapes");
      auto train = std::make_shared<ShapesDataset>(d.path, "train");
      d.image_size = train->image_size();
      d.train = train;
      d.val = std::make_shared<ShapesDataset>(d.path, "val");
      d.classes = shape_class_names();
    } else if (d.kind == "captions") {
      d.attribute = data.get<std::string>("attribute", "colour");
      d.path = prepare_dataset(data, "captions");
      auto train = std::make_shared<const CaptionsDataset>(d.path, "train");
      auto val = std::make_shared<const CaptionsDataset>(d.path, "val");
      const auto names = train->attribute_names();
      if (std::find(names.begin(), names.end(), d.attribute) == names.end()) {
        std::string known;
        for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
        data.invalid("attribute", "\"" + d.attribute + "\" is not an attribute of " + d.path.string() + " (it has " + known + ")");
      }
      d.classes = train->attribute_values(d.attribute);
      d.image_size = train->image_size();
      d.signed_images = true;
      d.train = std::make_shared<AttributeLabels>(train, d.attribute);
      d.val = std::make_shared<AttributeLabels>(val, d.attribute);
    } else {
      data.invalid("kind", "expected \"shapes\" or \"captions\", got \"" + d.kind + "\"");
    }
    return d;
  }
};

class ClassifyRecipe : public Recipe {
 public:
  ClassifyRecipe(const Config& cfg, const RunContext& ctx) : ctx_(ctx) {
    Config data = cfg.section("data");
    data_ = ClassifyData::from(data);
    val_ = data_.val;
    train_loader_ = std::make_unique<Loader>(data_.train, LoaderOptions::from(data, ctx.seed, 64));

    Config m = cfg.section("model");
    const std::string model_kind = m.get<std::string>("kind", "vit");
    if (model_kind != "vit") throw ConfigError(cfg.source() + ": model.kind: expected \"vit\", got \"" + model_kind + "\"");
    // one output per class unless asked otherwise (the resolved config records the number)
    const int64_t n_classes = static_cast<int64_t>(data_.classes.size());
    if (m.get<int64_t>("num_classes", n_classes) < n_classes)
      m.invalid("num_classes", "the data has " + std::to_string(n_classes) + " classes");
    ViTOptions vo = ViTOptions::from(m);
    if (vo.image_size != data_.image_size)
      throw ConfigError(cfg.source() + ": model.image_size is " + std::to_string(vo.image_size) + " but the images of " + data_.path.string() +
                        " are " + std::to_string(data_.image_size) + " pixels");
    model_ = ViT(vo, m.section("attention"));
    model_->to(ctx.device);
    trained_ = std::make_unique<lora::TrainedNetwork>(
        cfg, *model_,
        lora::TrainedNetworkSpec{"classify", "model", {"blocks.*.attn.qkv", "blocks.*.attn.proj", "blocks.*.mlp.fc1", "blocks.*.mlp.fc2"}, {"model"}});

    Config loss = cfg.section("loss");
    label_smoothing_ = loss.get<double>("label_smoothing", 0.0);
    aux_weight_ = loss.get<double>("aux_weight", 1.0);

    Config ev = cfg.section("eval");
    eval_batches_ = ev.get<int64_t>("batches", 0);
    eval_batch_size_ = ev.get<int64_t>("batch_size", 256);
    n_samples_ = ev.get_at_least<int64_t>("samples", 16, 0);
    if (eval_batches_ < 0) ev.invalid("batches", "must be >= 0 (0: the whole validation set)");
    if (eval_batch_size_ < 1) ev.invalid("batch_size", "must be at least 1");

    optim_ = make_optimizer(cfg.section("optim"), trained_->param_groups(), ctx.total_steps);
    params_ = trained_->parameters();
    spdlog::info("classify: ViT {:.2f} M parameters, {:.1f} MFLOPs per image, {} train / {} val images{}",
                 parameter_count() / 1e6, model_->flops() / 1e6, data_.train->size(), val_->size(),
                 data_.attribute.empty() ? "" : ", attribute " + data_.attribute);
    if (!ctx.run_dir.empty()) {
      nlohmann::json classes = {{"kind", data_.kind}, {"attribute", data_.attribute.empty() ? nlohmann::json() : nlohmann::json(data_.attribute)},
                                {"classes", data_.classes}};
      write_file_if_changed(ctx.run_dir / "classes.json", classes.dump(2) + "\n");
    }
  }

  std::map<std::string, torch::nn::Module*> modules() override { return trained_->modules(); }
  std::map<std::string, FrozenNetwork> frozen() override { return trained_->frozen(); }
  std::map<std::string, ScheduledOptimizer*> optimizers() override { return {{"optim", optim_.get()}}; }
  std::vector<std::string> ema_modules() const override { return trained_->ema_modules(); }
  const ClassifyData& data() const { return data_; }
  ViTImpl& model() { return *model_; }

  Scalars train_step(int64_t) override {
    trained_->train(true);
    double acc = 0;
    Scalars aux_values;
    StepStats s = optimize_step(*optim_, params_, ctx_.grad_accum, ctx_.grad_clip, [&](int64_t) {
      Batch b = to_device(train_loader_->next(), ctx_.device);
      torch::Tensor logits = model_->forward(b["image"]);
      torch::Tensor loss = torch::nn::functional::cross_entropy(
          logits.to(torch::kFloat32), b["label"], torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing_));
      for (auto& [name, value] : model_->take_aux_losses()) {
        loss = loss + aux_weight_ * value;
        aux_values["aux_" + name] += value.item<double>() / static_cast<double>(ctx_.grad_accum);
      }
      acc += (logits.argmax(1) == b["label"]).to(torch::kFloat32).mean().item<double>() / static_cast<double>(ctx_.grad_accum);
      return loss;
    });
    Scalars out = {{"loss", s.loss}, {"acc", acc}, {"grad_norm", s.grad_norm}};
    out.insert(aux_values.begin(), aux_values.end());
    return out;
  }

  Scalars evaluate() override {
    torch::NoGradGuard no_grad;
    trained_->train(false);
    const int64_t n = val_->size();
    int64_t limit = eval_batches_ > 0 ? std::min(n, eval_batches_ * eval_batch_size_) : n;
    double correct = 0, loss = 0;
    for (int64_t begin = 0; begin < limit; begin += eval_batch_size_) {
      std::vector<Sample> samples;
      for (int64_t i = begin; i < std::min(limit, begin + eval_batch_size_); ++i) samples.push_back(val_->get(i));
      Batch b = to_device(collate(samples), ctx_.device);
      torch::Tensor logits = model_->forward(b["image"]).to(torch::kFloat32);
      model_->take_aux_losses();
      loss += torch::nn::functional::cross_entropy(logits, b["label"], torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)).item<double>();
      correct += (logits.argmax(1) == b["label"]).sum().item<double>();
    }
    // model size and cost beside the accuracy, so sweeps over attention kinds compare all three
    return {{"acc", correct / static_cast<double>(limit)}, {"loss", loss / static_cast<double>(limit)},
            {"params", parameter_count()}, {"mflops", model_->flops() / 1e6}};
  }

  // A grid of validation images, each framed green (right) or red (wrong); the predicted and true
  // class names go beside it in JSON.
  void write_samples(const fs::path& dir, int64_t step, MetricLogger& log) override {
    torch::NoGradGuard no_grad;
    trained_->train(false);
    const int64_t k = std::min(n_samples_, val_->size());
    if (k == 0) return;
    std::vector<Sample> samples;
    for (int64_t i = 0; i < k; ++i) samples.push_back(val_->get(i));
    Batch b = collate(samples);
    torch::Tensor pred = model_->forward(b["image"].to(ctx_.device)).argmax(1).to(torch::kCPU);
    model_->take_aux_losses();
    torch::Tensor shown = data_.signed_images ? (b["image"] + 1) * 0.5 : b["image"];
    torch::Tensor images = torch::nn::functional::interpolate(
        shown, torch::nn::functional::InterpolateFuncOptions().scale_factor(std::vector<double>{2, 2}).mode(torch::kNearest));
    nlohmann::json listing = nlohmann::json::array();
    const auto& names = data_.classes;
    for (int64_t i = 0; i < k; ++i) {
      bool ok = pred[i].item<int64_t>() == b["label"][i].item<int64_t>();
      torch::Tensor colour = ok ? torch::tensor({0.1f, 0.8f, 0.1f}) : torch::tensor({0.9f, 0.1f, 0.1f});
      torch::Tensor img = images[i];
      for (auto edge : {img.narrow(1, 0, 2), img.narrow(1, img.size(1) - 2, 2), img.narrow(2, 0, 2), img.narrow(2, img.size(2) - 2, 2)})
        edge.copy_(colour.view({3, 1, 1}).expand_as(edge));
      listing.push_back({{"index", i}, {"predicted", names.at(pred[i].item<int64_t>())}, {"true", names.at(b["label"][i].item<int64_t>())}});
    }
    torch::Tensor grid = make_grid(images, 8);
    fs::create_directories(dir);
    write_png(dir / ("predictions_step_" + std::to_string(step) + ".png"), to_uint8_hwc(grid));
    write_file_atomically(dir / ("predictions_step_" + std::to_string(step) + ".json"), listing.dump(1));
    log.image("samples/predictions", step, grid);
  }

  void save_state(torch::serialize::OutputArchive& a) const override { save_loader_position(a, *train_loader_); }
  void load_state(torch::serialize::InputArchive& a) override { load_loader_position(a, *train_loader_); }

 private:
  double parameter_count() const {
    double n = 0;
    for (const auto& p : model_->parameters()) n += static_cast<double>(p.numel());
    return n;
  }

  RunContext ctx_;
  ClassifyData data_;
  std::shared_ptr<const Dataset> val_;
  std::unique_ptr<Loader> train_loader_;
  ViT model_{nullptr};
  std::unique_ptr<lora::TrainedNetwork> trained_;  // the ViT, or adapters on it
  std::unique_ptr<ScheduledOptimizer> optim_;
  std::vector<torch::Tensor> params_;
  double label_smoothing_ = 0, aux_weight_ = 1;
  int64_t eval_batches_ = 0, eval_batch_size_ = 256, n_samples_ = 16;
};

EF_REGISTER(recipes(), "classify",
            [](const Config& c, const RunContext& ctx) { return std::make_unique<ClassifyRecipe>(c, ctx); },
            "image classification with a ViT (attention from model.attention) on generated shapes or one captions attribute");

class ClassifyTarget : public ExportTarget {
 public:
  explicit ClassifyTarget(OpenedRun& run) : recipe_(dynamic_cast<ClassifyRecipe&>(*run.recipe)) { lora::merge_adapters_for_export(run); }
  std::vector<std::string> models() const override { return {"model"}; }
  CaptureSpec spec(const std::string& model, int64_t batch) override {
    if (model != "model") no_model(model);
    ViTImpl* vit = &recipe_.model();
    CaptureSpec s;
    s.module = vit;
    s.forward = [vit](const Inputs& x) { return vit->forward(x.at(0)); };
    Heldout first = collect_batches(*recipe_.data().val, batch, batch, {"image"});
    if (first.inputs.empty()) throw InputError("export: the validation split holds fewer than " + std::to_string(batch) + " images");
    s.examples = first.inputs.front();
    s.input_names = {"image"};
    s.output_name = "logits";
    return s;
  }
  std::vector<Inputs> calibration(const std::string&, int64_t n, int64_t batch) override {
    return collect_batches(*recipe_.data().train, n, batch, {"image"}).inputs;
  }
  Heldout heldout(const std::string&, int64_t n, int64_t batch) override { return collect_batches(*recipe_.data().val, n, batch, {"image"}, "label"); }
  std::string metric_name(const std::string&) const override { return "acc"; }
  bool higher_is_better(const std::string&) const override { return true; }
  double metric(const std::string&, const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& targets) const override {
    double correct = 0, total = 0;
    for (size_t i = 0; i < outputs.size(); ++i) {
      correct += (outputs[i].argmax(-1) == targets[i]).sum().item<double>();
      total += static_cast<double>(targets[i].numel());
    }
    return total > 0 ? correct / total : 0.0;
  }

 private:
  ClassifyRecipe& recipe_;
};

EF_REGISTER(export_targets(), "classify", [](OpenedRun& run) { return std::make_unique<ClassifyTarget>(run); },
            "the ViT: images -> logits, top-1 accuracy on the run's own validation split");

}  // namespace
}  // namespace ef
