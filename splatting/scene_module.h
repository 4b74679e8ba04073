#pragma once
// The trainable Gaussian scene as a module: every per-Gaussian field of GaussianParams is a
// registered parameter (so checkpoints, eval and export treat it like any network), and the
// scene can change its number of Gaussians (densification) by replacing the parameters' data.
#include <torch/torch.h>

#include "core/safetensors.h"
#include "splatting/gaussians.h"

namespace ef::splat {

class GaussianSceneImpl : public torch::nn::Module, public ShapeAdaptingModule {
 public:
  GaussianSceneImpl() = default;
  explicit GaussianSceneImpl(GaussianParams initial) { set(std::move(initial)); }

  // The live parameters (the same tensors the module has registered).
  GaussianParams& params() { return params_; }
  const GaussianParams& params() const { return params_; }
  int64_t size() const { return params_.size(); }

  // Takes `p`'s values: registers new fields, replaces the data of existing ones (sizes may change).
  void set(GaussianParams p);
  // Re-creates every field with the shapes stored in a checkpoint, before its values are copied in.
  void adopt_shapes(const TensorMap& state) override;

 private:
  GaussianParams params_;
};
TORCH_MODULE(GaussianScene);

}  // namespace ef::splat
