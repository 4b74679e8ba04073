// Export target of the `classify` recipe: its ViT ("model"), images in, logits out; calibrated on
// the run's training split, measured by top-1 accuracy on its validation split.
#include "export/target.h"
#include "models/vit.h"
#include "tasks/shapes_dataset.h"

namespace ef::exporter {
namespace {

class ClassifyTarget : public ExportTarget {
 public:
  explicit ClassifyTarget(OpenedRun& run) : vit_(recipe_module<ViTImpl>(run, "model", "ViT")) {
    data_path_ = run.config.section("data").get<std::string>("path", "data/shapes.h5");
  }
  std::vector<std::string> models() const override { return {"model"}; }
  CaptureSpec spec(const std::string& model, int64_t batch) override {
    if (model != "model") throw std::invalid_argument("export: classify has no model '" + model + "' (exportable: model)");
    CaptureSpec s;
    s.module = vit_;
    s.forward = [this](const Inputs& x) { return vit_->forward(x.at(0)); };
    const auto& o = vit_->options();
    s.examples = {torch::rand({batch, o.in_channels, o.image_size, o.image_size})};
    s.input_names = {"image"};
    s.output_name = "logits";
    return s;
  }
  std::vector<Inputs> calibration(const std::string&, int64_t n, int64_t batch) override {
    return collect_batches(ShapesDataset(data_path_, "train"), n, batch, {"image"}).inputs;
  }
  Heldout heldout(const std::string&, int64_t n, int64_t batch) override {
    return collect_batches(ShapesDataset(data_path_, "val"), n, batch, {"image"}, "label");
  }
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
  ViTImpl* vit_ = nullptr;
  std::string data_path_;
};

}  // namespace

EF_REGISTER(export_targets(), "classify", [](OpenedRun& run) { return std::make_unique<ClassifyTarget>(run); },
            "the ViT: images -> logits, top-1 accuracy");

}  // namespace ef::exporter
