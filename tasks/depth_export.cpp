// Export target of the `depth` recipe: the ViT encoder + dense decoder ("model"), an image in,
// metric depth out. Calibrated on the training split, measured by AbsRel on the validation split
// with the recipe's NYU protocol (depth.min / depth.max).
#include "core/export_target.h"
#include "core/data_gen.h"
#include "tasks/depth.h"
#include "tasks/depth_scenes.h"

namespace ef {
namespace {

class DepthTarget : public ExportTarget {
 public:
  explicit DepthTarget(OpenedRun& run) : net_(recipe_module<DepthNetImpl>(run, "model", "depth network")) {
    path_ = prepare_dataset(run.config.section("data"), "depth-scenes");
    DepthScenesDataset val(path_, "val");
    size_ = val.image_size();
    Config d = run.config.section("depth");
    min_depth_ = d.get<double>("min", 1e-3);
    max_depth_ = d.get<double>("max", val.max_depth());
  }
  std::vector<std::string> models() const override { return {"model"}; }
  CaptureSpec spec(const std::string& model, int64_t batch) override {
    if (model != "model") no_model(model);
    CaptureSpec s;
    s.module = net_;
    s.forward = [this](const Inputs& x) { return net_->forward(x.at(0)); };
    s.examples = {torch::rand({batch, 3, size_, size_})};
    s.input_names = {"image"};
    s.output_name = "depth";
    return s;
  }
  std::vector<Inputs> calibration(const std::string&, int64_t n, int64_t batch) override {
    return collect_batches(DepthScenesDataset(path_, "train"), n, batch, {"image"}).inputs;
  }
  Heldout heldout(const std::string&, int64_t n, int64_t batch) override {
    return collect_batches(DepthScenesDataset(path_, "val"), n, batch, {"image"}, "depth");
  }
  std::string metric_name(const std::string&) const override { return "abs_rel"; }
  bool higher_is_better(const std::string&) const override { return false; }
  double metric(const std::string&, const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& targets) const override {
    double sum = 0, images = 0;
    for (size_t i = 0; i < outputs.size(); ++i) {
      sum += depth_metric_sums(outputs[i].view_as(targets[i]), targets[i], min_depth_, max_depth_).at("abs_rel");
      images += static_cast<double>(targets[i].size(0));
    }
    return images > 0 ? sum / images : 0.0;
  }

 private:
  DepthNetImpl* net_ = nullptr;
  std::filesystem::path path_;
  int64_t size_ = 0;
  double min_depth_ = 1e-3, max_depth_ = 10;
};

}  // namespace

EF_REGISTER(export_targets(), "depth", [](OpenedRun& run) { return std::make_unique<DepthTarget>(run); },
            "the depth network: an image -> metric depth, AbsRel");

}  // namespace ef
