// Export target of the `classify` recipe: its ViT ("model"), images in, logits out; calibrated on
// the run's training split, measured by top-1 accuracy on its validation split.
#include "export/target.h"
#include "models/vit.h"
#include "tasks/shapes_dataset.h"

namespace ef::exporter {
namespace {

class ClassifyTarget : public ExportTarget {
 public:
  explicit ClassifyTarget(OpenedRun& run) : run_(run) {
    auto mods = run.recipe->modules();
    auto it = mods.find("model");
    vit_ = it == mods.end() ? nullptr : dynamic_cast<ViTImpl*>(it->second);
    if (!vit_) throw std::runtime_error("export: the classify recipe holds no ViT named 'model'");
    data_path_ = run.config.section("data").get<std::string>("path", "data/shapes.h5");
  }
  std::vector<std::string> models() const override { return {"model"}; }
  CaptureSpec spec(const std::string& model, int64_t batch) override {
    if (model != "model") throw std::invalid_argument("export: classify has no model '" + model + "' (exportable: model)");
    CaptureSpec s;
    s.module = vit_;
    s.forward = [this](const torch::Tensor& x) { return vit_->forward(x); };
    const auto& o = vit_->options();
    s.example = torch::rand({batch, o.in_channels, o.image_size, o.image_size});
    s.input_name = "image";
    s.output_name = "logits";
    return s;
  }
  std::vector<torch::Tensor> calibration(int64_t n, int64_t batch) override {
    return batches(ShapesDataset(data_path_, "train"), n, batch, nullptr);
  }
  Heldout heldout(int64_t n, int64_t batch) override {
    Heldout h;
    h.inputs = batches(ShapesDataset(data_path_, "val"), n, batch, &h.targets);
    return h;
  }
  std::string metric_name() const override { return "acc"; }
  double metric(const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& targets) const override {
    double correct = 0, total = 0;
    for (size_t i = 0; i < outputs.size(); ++i) {
      correct += (outputs[i].argmax(-1) == targets[i]).sum().item<double>();
      total += static_cast<double>(targets[i].numel());
    }
    return total > 0 ? correct / total : 0.0;
  }

 private:
  static std::vector<torch::Tensor> batches(const ShapesDataset& d, int64_t n, int64_t batch, std::vector<torch::Tensor>* labels) {
    const int64_t count = n <= 0 ? d.size() : std::min(n, d.size());
    std::vector<torch::Tensor> out;
    for (int64_t b = 0; b + batch <= count; b += batch) {
      std::vector<Sample> samples;
      for (int64_t i = b; i < b + batch; ++i) samples.push_back(d.get(i));
      Batch x = collate(samples);
      out.push_back(x["image"]);
      if (labels) labels->push_back(x["label"]);
    }
    return out;
  }

  OpenedRun& run_;
  ViTImpl* vit_ = nullptr;
  std::string data_path_;
};

}  // namespace

EF_REGISTER(export_targets(), "classify", [](OpenedRun& run) { return std::make_unique<ClassifyTarget>(run); },
            "the ViT: images -> logits, top-1 accuracy");

}  // namespace ef::exporter
