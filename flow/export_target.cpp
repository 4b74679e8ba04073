// Export target of the `flow` recipe: RAFT-S or the MobileFlow stand-in ("model"), an image pair
// in, the final full-resolution flow out, unrolled over the run's evaluation iterations
// (eval.iters). Calibrated on the training split, measured by the pooled EPE on the validation
// split (the recipe's eval/epe). An adapter run exports the network with its adapters merged.
#include "core/export_target.h"
#include "core/data_gen.h"
#include "flow/flow_data.h"
#include "flow/metrics.h"
#include "flow/models.h"
#include "lora/finetune.h"

namespace ef {
namespace {

class FlowTarget : public ExportTarget {
 public:
  explicit FlowTarget(OpenedRun& run) : net_(recipe_module<flow::FlowNetImpl>(run, "model", "flow network")) {
    lora::merge_adapters_for_export(run);
    Config data = run.config.section("data");
    path_ = prepare_dataset(data, data.get<std::string>("kind", "flow-chairs"));
    iters_ = run.config.section("eval").get<int64_t>("iters", net_->options().iters);
  }
  std::vector<std::string> models() const override { return {"model"}; }
  CaptureSpec spec(const std::string& model, int64_t batch) override {
    if (model != "model") no_model(model);
    flow::FlowScenesDataset val(path_, "val");
    CaptureSpec s;
    s.module = net_;
    s.forward = [this](const Inputs& x) { return net_->forward(x.at(0), x.at(1), iters_).flows.back(); };
    s.examples = {torch::rand({batch, 3, val.height(), val.width()}), torch::rand({batch, 3, val.height(), val.width()})};
    s.input_names = {"image1", "image2"};
    s.output_name = "flow";
    return s;
  }
  std::vector<Inputs> calibration(const std::string&, int64_t n, int64_t batch) override {
    return collect_batches(flow::FlowScenesDataset(path_, "train"), n, batch, {"image1", "image2"}).inputs;
  }
  Heldout heldout(const std::string&, int64_t n, int64_t batch) override {
    Heldout h;
    for_each_batch(flow::FlowScenesDataset(path_, "val"), n, batch, [&](const Batch& b) {
      h.inputs.push_back({b.at("image1"), b.at("image2")});
      h.targets.push_back(torch::cat({b.at("flow"), b.at("valid").unsqueeze(1)}, 1));  // [B,3,H,W]: u, v, valid
    });
    return h;
  }
  std::string metric_name(const std::string&) const override { return "epe"; }
  bool higher_is_better(const std::string&) const override { return false; }
  double metric(const std::string&, const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& targets) const override {
    flow::FlowMetricSums sums;
    for (size_t i = 0; i < outputs.size(); ++i)
      sums.add(outputs[i].view_as(targets[i].narrow(1, 0, 2)), targets[i].narrow(1, 0, 2), targets[i].select(1, 2));
    return sums.means().at("epe");
  }

 private:
  flow::FlowNetImpl* net_ = nullptr;
  std::filesystem::path path_;
  int64_t iters_ = 12;
};

}  // namespace

EF_REGISTER(export_targets(), "flow", [](OpenedRun& run) { return std::make_unique<FlowTarget>(run); },
            "the flow network: an image pair -> the final flow, end-point error");

}  // namespace ef
