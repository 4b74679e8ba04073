#include "core/recipe.h"

#include <cmath>

namespace ef {

RecipeRegistry& recipes() {
  static RecipeRegistry registry("recipe");
  return registry;
}

StepStats optimize_step(ScheduledOptimizer& opt, const std::vector<torch::Tensor>& params, int64_t accumulate,
                        double grad_clip, const std::function<torch::Tensor(int64_t)>& loss_of) {
  opt.get().zero_grad();
  StepStats stats;
  for (int64_t micro = 0; micro < accumulate; ++micro) {
    torch::Tensor loss = loss_of(micro);
    double value = loss.item<double>();
    if (!std::isfinite(value)) throw NonFiniteLoss("loss is " + std::to_string(value));
    (loss / static_cast<double>(accumulate)).backward();
    stats.loss += value / static_cast<double>(accumulate);
  }
  stats.grad_norm = clip_grad_norm(params, grad_clip);
  if (!std::isfinite(stats.grad_norm)) throw NonFiniteLoss("gradient norm is " + std::to_string(stats.grad_norm));
  opt.get().step();
  return stats;
}

}  // namespace ef
