#pragma once
// Optimizers (SGD, Adam, AdamW with parameter groups) and learning-rate schedules from config.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"

namespace ef {

struct ParamGroup {
  std::string name;
  std::vector<torch::Tensor> params;
  double lr_scale = 1.0;     // multiplies optim.lr
  bool weight_decay = true;  // false: this group gets no weight decay
};

// Biases, norms' affine parameters and embeddings/tokens (dim <= 1, or names ending in
// "_embed"/"_token") get no weight decay, the usual transformer practice.
std::vector<ParamGroup> decay_groups(const torch::nn::Module& module, const std::string& prefix = "");

// Schedule: lr(step) = lr * multiplier(step).
struct Schedule {
  std::string kind = "constant";  // constant | cosine | linear
  int64_t warmup = 0;             // linear warm-up steps from 0
  int64_t total = 1;              // steps the decay spans (train.steps)
  double min_ratio = 0.0;         // floor of the decay, as a fraction of lr
  double multiplier(int64_t step) const;
  static Schedule from(const Config& c, int64_t total_steps);
};

class ScheduledOptimizer {
 public:
  ScheduledOptimizer(std::unique_ptr<torch::optim::Optimizer> opt, std::vector<double> base_lrs, Schedule schedule);
  void set_step(int64_t step);  // applies the schedule's lr for this step
  torch::optim::Optimizer& get() { return *opt_; }
  double lr() const;            // current lr of the first group
  const Schedule& schedule() const { return schedule_; }

 private:
  std::unique_ptr<torch::optim::Optimizer> opt_;
  std::vector<double> base_lrs_;
  Schedule schedule_;
};

// optim: {kind: sgd|adam|adamw, lr, weight_decay, betas, eps, momentum, nesterov, schedule: {...}}
std::unique_ptr<ScheduledOptimizer> make_optimizer(const Config& optim, const std::vector<ParamGroup>& groups,
                                                   int64_t total_steps);

// Clips the global L2 norm of the gradients; returns the norm before clipping. max_norm <= 0: no clip.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace ef
